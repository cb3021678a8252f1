//! Corruption sweep (issue 9, "corruption"): every object of a small
//! repository with several snapshots (plain and age-sealed content), damaged
//! in turn (one bit flipped at the start, one in the middle, truncated to half,
//! deleted), each on a fresh copy. For each damage:
//!
//! * `backup-verify --read-data` exits 6 and its problems name every
//!   snapshot the damage affects, and every affected path where the damaged
//!   object is content (a pack or an index) rather than the listing itself;
//! * restoring every snapshot into an empty target writes only bytes that
//!   snapshot really held (damaged content is reported, never written);
//! * a rollback of the home onto the oldest snapshot leaves every file with
//!   either its content before the rollback or the snapshot's content.
//!
//! The expected "affected" sets are computed independently from the intact
//! template (index locations, trees), not from the tool's own report.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use common::{dir_state, noise, TestEnv};
use dotfiles_backup::hash::Hash;
use dotfiles_backup::repo::Repository;

type State = BTreeMap<Vec<u8>, (u32, Vec<u8>)>;

/// Tracked roots (relative to home) of the sweep's repository.
const ROOTS: [&str; 4] = [".zshrc", ".gitconfig", ".config", ".ssh"];

/// Files of the tracked roots (directories and links dropped), by path relative to home.
fn tracked_files(home: &Path) -> State {
    dir_state(home)
        .into_iter()
        .filter(|(k, _)| {
            // dir_state gives dirs and links too; keep regular files only.
            let p = home.join(std::ffi::OsStr::from_bytes(k));
            std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file())
                && ROOTS.iter().any(|r| {
                    k.as_slice() == r.as_bytes() || k.starts_with(format!("{r}/").as_bytes())
                })
        })
        .collect()
}

struct Template {
    env: TestEnv,
    /// Label → expected tracked files at that snapshot.
    states: Vec<(&'static str, State)>,
    /// The home's files just before the sweep's rollbacks.
    damaged: State,
}

fn checkpoint(env: &TestEnv, label: &str) {
    let (code, v) = env.json("backup-checkpoint", &["manual", "--", label]);
    assert_eq!(code, 0, "{v:#}");
}

fn build() -> Template {
    let env = TestEnv::with_dotfiles();
    env.write(
        ".config/dotfiles-backup/config.toml",
        b"[track]\nconfig = [\"~/.zshrc\", \"~/.gitconfig\", \"~/.config\", \"~/.ssh\"]\n",
        0o644,
    );
    env.write(".ssh/config", b"Host *\n  IdentitiesOnly yes\n", 0o644);
    env.write(".ssh/id_ed25519", &noise(900, 1), 0o600);
    env.write(".config/app/big", &noise(40_000, 2), 0o644);
    let (code, v) = env.json("backup-create", &["--init-secrets"]);
    assert_eq!(code, 0, "{v:#}");
    let mut states = Vec::new();
    checkpoint(&env, "one");
    states.push(("one", tracked_files(&env.home)));
    env.write(".zshrc", b"export EDITOR=vim\n", 0o644);
    env.write(".config/app/new", &noise(3000, 3), 0o600);
    env.write(".ssh/id_ed25519", &noise(900, 4), 0o600);
    checkpoint(&env, "two");
    states.push(("two", tracked_files(&env.home)));
    env.write(".gitconfig", b"[user]\n\tname = Other\n", 0o644);
    std::fs::remove_file(env.home.join(".config/nvim/init.lua")).unwrap();
    env.write(".config/app/third", &noise(5000, 5), 0o644);
    checkpoint(&env, "three");
    states.push(("three", tracked_files(&env.home)));
    // The state a rollback starts from.
    env.write(".zshrc", b"broken by a phase\n", 0o644);
    env.write(".config/app/big", b"truncated by a phase", 0o644);
    env.write(".config/nvim/init.lua", b"rewritten", 0o644);
    let damaged = tracked_files(&env.home);
    let (code, v) = env.json("backup-verify", &["--read-data"]);
    assert_eq!(code, 0, "the template verifies clean: {v:#}");
    Template {
        env,
        states,
        damaged,
    }
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    FlipFirst,
    FlipMiddle,
    Truncate,
    Delete,
}

impl Damage {
    /// Apply; returns the byte range of the original file whose content is
    /// no longer intact.
    fn apply(self, path: &Path) -> std::ops::Range<u64> {
        let mut bytes = std::fs::read(path).unwrap();
        let len = bytes.len() as u64;
        match self {
            Damage::FlipFirst => {
                bytes[0] ^= 0x01;
                std::fs::write(path, &bytes).unwrap();
                0..1
            }
            Damage::FlipMiddle => {
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x10;
                std::fs::write(path, &bytes).unwrap();
                mid as u64..mid as u64 + 1
            }
            Damage::Truncate => {
                let half = bytes.len() / 2;
                std::fs::write(path, &bytes[..half]).unwrap();
                half as u64..len
            }
            Damage::Delete => {
                std::fs::remove_file(path).unwrap();
                0..len
            }
        }
    }
}

/// What the damage of one object must be reported as affecting.
#[derive(Debug, Default)]
struct Affected {
    snapshots: BTreeSet<String>,
    paths: BTreeSet<String>,
}

fn entry_path(root: &[u8], rel: &[u8]) -> String {
    if rel.is_empty() {
        String::from_utf8_lossy(root).into_owned()
    } else {
        format!(
            "{}/{}",
            String::from_utf8_lossy(root),
            String::from_utf8_lossy(rel)
        )
    }
}

/// Users (snapshot short id, path) of each content id, from the intact template.
fn users(repo: &Repository) -> BTreeMap<Hash, Vec<(String, String)>> {
    let mut out: BTreeMap<Hash, Vec<(String, String)>> = BTreeMap::new();
    for s in repo.snapshots().unwrap() {
        let tree = repo.tree(&s.record.tree).unwrap();
        for (root, e) in tree.entries() {
            if let Some(h) = e.content_id() {
                out.entry(h)
                    .or_default()
                    .push((s.id.short(), entry_path(&root.root.0, &e.path.0)));
            }
        }
    }
    out
}

fn expected(repo: &Repository, kind: &str, name: &str, hit: &std::ops::Range<u64>) -> Affected {
    let mut a = Affected::default();
    let users = users(repo);
    let mut blobs: Vec<Hash> = Vec::new();
    match kind {
        "packs" => {
            let index = repo.index().unwrap();
            for (id, loc) in &index.blobs {
                if loc.pack.to_hex() == name
                    && loc.offset < hit.end
                    && hit.start < loc.offset + loc.length
                {
                    blobs.push(*id);
                }
            }
        }
        "index" => {
            let path = repo.sub("index").join(name);
            let bytes = std::fs::read(path).unwrap();
            let idx =
                dotfiles_backup::repo::index::Index::from_bytes(&bytes, Path::new(name)).unwrap();
            blobs.extend(idx.blobs.keys().copied());
        }
        "trees" => {
            for s in repo.snapshots().unwrap() {
                if format!("{}.json", s.record.tree.to_hex()) == name {
                    a.snapshots.insert(s.id.short());
                }
            }
        }
        "snapshots" => {
            a.snapshots.insert(name[..8].to_string());
        }
        _ => {}
    }
    for b in blobs {
        for (s, p) in users.get(&b).cloned().unwrap_or_default() {
            a.snapshots.insert(s);
            a.paths.insert(p);
        }
    }
    a
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// The repository's objects: (subdirectory, file name).
fn objects(repo: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for sub in ["packs", "index", "trees", "snapshots", "keys"] {
        let Ok(list) = std::fs::read_dir(repo.join(sub)) else {
            continue;
        };
        for e in list {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            out.push((sub.to_string(), n));
        }
    }
    out.sort();
    out
}

/// Run one damage case; return its failures.
fn sweep_one(t: &Template, sub: &str, name: &str, damage: Damage) -> Vec<String> {
    let what = format!("{damage:?} {sub}/{name}");
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&t.env.home, &tmp.path().join("home"));
    copy_dir(&t.env.repo, &tmp.path().join("repo"));
    let env = TestEnv {
        home: tmp.path().join("home"),
        repo: tmp.path().join("repo"),
        tmp,
        run_as: None,
    };
    let template_repo = Repository::open(&t.env.repo).unwrap();
    let hit = damage.apply(&env.repo.join(sub).join(name));
    let want = expected(&template_repo, sub, name, &hit);
    let mut failures = Vec::new();

    // 1. Detection, naming affected snapshots and paths. A deleted snapshot
    // record is the one damage no check can see: the record is the commit
    // point, so without it the repository is exactly one that never had the
    // snapshot (docs/reliability.md). It must verify clean instead.
    let (code, v) = env.json("backup-verify", &["--read-data"]);
    let problems = v["problems"].as_array().cloned().unwrap_or_default();
    let undetectable = matches!(damage, Damage::Delete) && sub == "snapshots";
    if undetectable {
        if code != 0 {
            failures.push(format!("{what}: the rest must verify clean: {v}"));
        }
    } else if code != 6 || problems.is_empty() {
        failures.push(format!("{what}: verify exit {code}, not detected: {v}"));
    }
    let named_snaps: Vec<String> = problems
        .iter()
        .flat_map(|p| p["snapshots"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s.as_str().map(String::from))
        .collect();
    let named_paths: BTreeSet<String> = problems
        .iter()
        .flat_map(|p| p["paths"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s.as_str().map(String::from))
        .collect();
    for s in want.snapshots.iter().filter(|_| !undetectable) {
        if !named_snaps.iter().any(|n| n.starts_with(s.as_str())) {
            failures.push(format!(
                "{what}: affected snapshot {s} not named (named {named_snaps:?})"
            ));
        }
    }
    for p in &want.paths {
        if !named_paths.contains(p) {
            failures.push(format!(
                "{what}: affected path {p} not named (named {named_paths:?})"
            ));
        }
    }

    // 2. Restores write only what each snapshot held.
    for (label, state) in &t.states {
        let target = env.tmp.path().join(format!("restore-{label}"));
        let (code, v) = env.json(
            "backup-restore",
            &[label, "--target", target.to_str().unwrap()],
        );
        if ![0, 1, 3, 5, 6].contains(&code) {
            failures.push(format!("{what}: restore {label} exit {code}: {v}"));
        }
        if target.exists() {
            for (rel, (_, bytes)) in dir_state(&target) {
                let p = target.join(std::ffi::OsStr::from_bytes(&rel));
                if !std::fs::symlink_metadata(&p).unwrap().is_file() {
                    continue;
                }
                match state.get(&rel) {
                    Some((_, good)) if *good == bytes => {}
                    _ => failures.push(format!(
                        "{what}: restore {label} wrote {} with content the snapshot never held",
                        String::from_utf8_lossy(&rel)
                    )),
                }
            }
        }
    }

    // 3. Rollback: every file old or new, nothing else.
    let (code, v) = env.json("backup-rollback", &["one"]);
    if ![0, 1, 3, 5, 6].contains(&code) {
        failures.push(format!("{what}: rollback exit {code}: {v}"));
    }
    let one = &t.states[0].1;
    for (rel, (_, bytes)) in tracked_files(&env.home) {
        let before = t.damaged.get(&rel).map(|x| &x.1);
        let snap = one.get(&rel).map(|x| &x.1);
        if before != Some(&bytes) && snap != Some(&bytes) {
            failures.push(format!(
                "{what}: rollback left {} with content that is neither its old nor the snapshot's",
                String::from_utf8_lossy(&rel)
            ));
        }
    }
    failures
}

fn sweep(subs: &[&str]) {
    let t = build();
    let mut cases = 0;
    let mut failures = Vec::new();
    for (sub, name) in objects(&t.env.repo) {
        if !subs.contains(&sub.as_str()) {
            continue;
        }
        for d in [
            Damage::FlipFirst,
            Damage::FlipMiddle,
            Damage::Truncate,
            Damage::Delete,
        ] {
            cases += 1;
            failures.extend(sweep_one(&t, &sub, &name, d));
        }
    }
    assert!(cases >= 4, "only {cases} cases for {subs:?}");
    assert!(
        failures.is_empty(),
        "{} failure(s) in {cases} damage cases:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    eprintln!("corruption {subs:?}: {cases} cases, 0 failures");
}

#[test]
fn damaged_packs_are_detected_named_and_never_restored() {
    sweep(&["packs"]);
}

#[test]
fn damaged_index_files_are_detected_and_named() {
    sweep(&["index"]);
}

#[test]
fn damaged_trees_and_records_are_detected_and_named() {
    sweep(&["trees", "snapshots"]);
}

#[test]
fn damaged_secret_id_keys_are_detected() {
    sweep(&["keys"]);
}

/// Issue 16, finding 3: a pack or record replaced by a FIFO, or a tree or
/// record replaced by a symlink to /dev/zero, is `repository_corrupt` (exit 6)
/// naming the file within a second: no hang, no unbounded read.
#[test]
fn hostile_repository_files_are_refused_fast_and_named() {
    let base = TestEnv::new();
    base.write(".config/a", b"alpha\n", 0o644);
    let (rc, v) = base.json(
        "backup-checkpoint",
        &["manual", "c1", "--path", "~/.config"],
    );
    assert_eq!(rc, 0, "{v:#}");
    base.write(".config/a", b"changed\n", 0o644);
    type Plant = fn(&Path);
    let fifo: Plant = |p| {
        std::fs::remove_file(p).unwrap();
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo has no other preconditions.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    };
    let zero: Plant = |p| {
        std::fs::remove_file(p).unwrap();
        std::os::unix::fs::symlink("/dev/zero", p).unwrap();
    };
    let cases: [(&str, Plant, &str, &[&str]); 6] = [
        ("packs", fifo, "backup-rollback", &["c1"]),
        ("packs", fifo, "backup-verify", &["--read-data"]),
        ("snapshots", fifo, "backup-list", &[]),
        (
            "snapshots",
            fifo,
            "backup-checkpoint",
            &["manual", "c2", "--path", "~/.config"],
        ),
        ("trees", zero, "backup-verify", &[]),
        ("snapshots", zero, "backup-verify", &[]),
    ];
    // Each case starts from a pristine copy put back at the same paths:
    // records name their home, and another home's snapshots are not selected.
    let pristine = TestEnv::new();
    std::fs::remove_dir_all(&pristine.home).unwrap();
    copy_dir(&base.home, &pristine.home);
    copy_dir(&base.repo, &pristine.repo);
    for (sub, plant, bin, args) in cases {
        let e = &base;
        for (from, to) in [(&pristine.home, &e.home), (&pristine.repo, &e.repo)] {
            std::fs::remove_dir_all(to).unwrap();
            copy_dir(from, to);
        }
        let victim = common::names_in(&e.repo, sub)
            .into_iter()
            .find(|p| !p.file_name().unwrap().as_bytes().starts_with(b"."))
            .unwrap();
        plant(&victim);
        let t = std::time::Instant::now();
        let (rc, v) = e.json(bin, args);
        assert!(
            t.elapsed().as_secs_f64() < 5.0,
            "{bin} on {sub}: took {:?}",
            t.elapsed()
        );
        // A rollback restores what it can and reports the rest per path
        // (`partial`, as for any damaged blob); everything else stops.
        let want = if bin == "backup-rollback" { 3 } else { 6 };
        assert_eq!(rc, want, "{bin} on a hostile {sub} file: {v:#}");
        let text = v.to_string();
        let name = victim.file_name().unwrap().to_str().unwrap();
        assert!(text.contains(name), "{bin}: the file is named: {v:#}");
        assert!(text.contains("repository_corrupt"), "{bin}: {v:#}");
    }
}

/// Issue 16, finding 2: with one index file truncated to 0 bytes, rollback,
/// restore, checkpoint and prune of every snapshot still work (the index's
/// packs are read from their trailers), and verify names the file.
#[test]
fn a_damaged_index_blocks_nothing_it_does_not_touch() {
    let e = TestEnv::new();
    e.write(".config/a", b"alpha\n", 0o644);
    let (rc, v) = e.json(
        "backup-checkpoint",
        &["manual", "c1", "--path", "~/.config"],
    );
    assert_eq!(rc, 0, "{v:#}");
    e.write(".config/b", &noise(3000, 3), 0o644);
    let (rc, v) = e.json(
        "backup-checkpoint",
        &["manual", "c2", "--path", "~/.config"],
    );
    assert_eq!(rc, 0, "{v:#}");
    let want = tracked_files(&e.home);
    let newest = common::names_in(&e.repo, "index")
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    std::fs::write(&newest, b"").unwrap();
    let (rc, v) = e.json("backup-verify", &[]);
    assert_eq!(rc, 6, "{v:#}");
    assert!(
        v.to_string()
            .contains(newest.file_name().unwrap().to_str().unwrap()),
        "{v:#}"
    );
    for label in ["c1", "c2"] {
        let target = e.tmp.path().join(format!("restore-{label}"));
        let t = target.to_str().unwrap();
        let (rc, v) = e.json("backup-restore", &[label, "--target", t]);
        assert_eq!(rc, 0, "restore {label}: {v:#}");
    }
    assert_eq!(tracked_files(&e.tmp.path().join("restore-c2")), want);
    std::fs::remove_file(e.home.join(".config/b")).unwrap();
    let (rc, v) = e.json("backup-rollback", &["c2"]);
    assert_eq!(rc, 0, "rollback: {v:#}");
    assert_eq!(tracked_files(&e.home), want);
    e.write(".config/c", b"gamma\n", 0o644);
    let (rc, v) = e.json(
        "backup-checkpoint",
        &["manual", "c3", "--path", "~/.config"],
    );
    assert_eq!(rc, 0, "checkpoint: {v:#}");
    assert!(v.to_string().contains("damaged_index"), "{v:#}");
    let (rc, v) = e.json("backup-prune", &[]);
    assert_eq!(rc, 0, "prune: {v:#}");
}

/// `backup-verify --repair` rebuilds the index from the packs' trailers,
/// drops what no pack holds and names exactly the snapshots and paths lost;
/// everything else restores afterwards.
#[test]
fn repair_rebuilds_the_index_and_names_exactly_what_is_lost() {
    let e = TestEnv::new();
    e.write(".config/a", b"alpha\n", 0o644);
    let (rc, v) = e.json(
        "backup-checkpoint",
        &["manual", "c1", "--path", "~/.config"],
    );
    assert_eq!(rc, 0, "{v:#}");
    let first_packs = common::names_in(&e.repo, "packs");
    let first_index = common::names_in(&e.repo, "index");
    e.write(".config/b", &noise(3000, 4), 0o644);
    let (rc, v) = e.json(
        "backup-checkpoint",
        &["manual", "c2", "--path", "~/.config"],
    );
    assert_eq!(rc, 0, "{v:#}");
    let c1_files = {
        let mut s = tracked_files(&e.home);
        s.remove(b".config/b".as_slice());
        s
    };
    // The second run's pack is gone, and the first run's index is damaged.
    for p in common::names_in(&e.repo, "packs") {
        if !first_packs.contains(&p) {
            std::fs::remove_file(p).unwrap();
        }
    }
    std::fs::write(&first_index[0], b"").unwrap();
    let (rc, v) = e.json("backup-verify", &["--repair"]);
    assert_eq!(rc, 6, "what is lost stays reported: {v:#}");
    let repair = &v["repair"];
    assert_eq!(repair["packs_indexed"], 1, "{v:#}");
    // The rebuilt index holds exactly what the damaged first one did, so it
    // has its name and replaces it; the second run's (dangling) one goes.
    assert_eq!(repair["index_files_removed"], 1, "{v:#}");
    assert_eq!(common::names_in(&e.repo, "index"), first_index);
    let lost = repair["lost"].as_array().unwrap();
    assert_eq!(lost.len(), 1, "only c2 lost anything: {v:#}");
    assert!(
        lost[0]["snapshot"].as_str().unwrap().ends_with(" c2"),
        "{v:#}"
    );
    assert_eq!(
        lost[0]["paths"],
        serde_json::json!(["~/.config/b"]),
        "{v:#}"
    );
    assert_eq!(common::names_in(&e.repo, "index").len(), 1);
    let target = e.tmp.path().join("r1");
    let (rc, v) = e.json(
        "backup-restore",
        &["c1", "--target", target.to_str().unwrap()],
    );
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(tracked_files(&target), c1_files);
    // Human output lists the lost path too.
    let out = e.output("backup-verify", &["--repair"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("LOST") && text.contains("~/.config/b"),
        "{text}"
    );
}

/// Issue 16: a snapshot record that is a FIFO, a symlink to /dev/zero or cut
/// short stops every reader until `backup-verify --repair` moves it to
/// `quarantine/snapshots/` (kept, exit 6, named in `repair.quarantined` and
/// `repair.lost`); the other snapshots restore and the next repair is clean.
#[test]
fn repair_quarantines_hostile_and_truncated_records_and_keeps_the_rest() {
    use std::os::unix::fs::FileTypeExt;
    let e = TestEnv::new();
    let mut records = Vec::new();
    for i in 0..4u64 {
        e.write(".config/a", &noise(3000, i), 0o644);
        let before = common::names_in(&e.repo, "snapshots");
        let (rc, v) = e.json(
            "backup-checkpoint",
            &["manual", &format!("c{i}"), "--path", "~/.config"],
        );
        assert_eq!(rc, 0, "{v:#}");
        records.extend(
            common::names_in(&e.repo, "snapshots")
                .into_iter()
                .filter(|p| !before.contains(p)),
        );
    }
    let cut = std::fs::read(&records[2]).unwrap();
    std::fs::write(&records[2], &cut[..cut.len() / 2]).unwrap();
    std::fs::remove_file(&records[1]).unwrap();
    let fifo = Command::new("mkfifo").arg(&records[1]).status().unwrap();
    assert!(fifo.success());
    std::fs::remove_file(&records[3]).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &records[3]).unwrap();
    assert_eq!(e.json("backup-list", &[]).0, 6);

    let started = std::time::Instant::now();
    let (rc, v) = e.json("backup-verify", &["--repair"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "no hang"
    );
    assert_eq!(rc, 6, "repaired with loss: {v:#}");
    assert_eq!(
        v["repair"]["quarantined"].as_array().unwrap().len(),
        3,
        "{v:#}"
    );
    assert_eq!(v["repair"]["lost"].as_array().unwrap().len(), 3, "{v:#}");
    let q = e.repo.join("quarantine/snapshots");
    let name = |p: &std::path::PathBuf| q.join(p.file_name().unwrap());
    assert_eq!(
        std::fs::read(name(&records[2])).unwrap(),
        &cut[..cut.len() / 2]
    );
    assert!(std::fs::symlink_metadata(name(&records[1]))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        std::fs::read_link(name(&records[3])).unwrap(),
        std::path::Path::new("/dev/zero")
    );
    let (rc, v) = e.json("backup-list", &[]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 1);
    let target = e.tmp.path().join("r0");
    let (rc, v) = e.json(
        "backup-restore",
        &["c0", "--target", target.to_str().unwrap()],
    );
    assert_eq!(rc, 0, "{v:#}");
    // A second repair has nothing left to quarantine; a same-named record
    // damaged again does not overwrite the first one moved aside.
    let (rc, v) = e.json("backup-verify", &["--repair"]);
    assert_eq!(rc, 0, "{v:#}");
    std::fs::write(&records[2], b"x").unwrap();
    let (rc, v) = e.json("backup-verify", &["--repair"]);
    assert_eq!(rc, 6, "{v:#}");
    let mut again = name(&records[2]).into_os_string();
    again.push(".1");
    assert_eq!(std::fs::read(&again).unwrap(), b"x");
    assert_eq!(
        std::fs::read(name(&records[2])).unwrap(),
        &cut[..cut.len() / 2]
    );
}
