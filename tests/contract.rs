//! The output contract through the real binaries: every envelope validates
//! against `docs/schema/envelope.schema.json`; exit codes and error codes for
//! each bad input; `changed` semantics for idempotent runs; secrets never
//! reach the repository; locking; permissions under `umask 000`; and insta
//! snapshots of the main envelopes (ids, times, paths redacted).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

fn schema() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/schema/envelope.schema.json"
        ))
        .unwrap();
        jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
    })
}

struct Env {
    tmp: tempfile::TempDir,
    home: PathBuf,
    repo: PathBuf,
}

fn exe(bin: &str) -> &'static str {
    match bin {
        "backup-checkpoint" => env!("CARGO_BIN_EXE_backup-checkpoint"),
        "backup-create" => env!("CARGO_BIN_EXE_backup-create"),
        "backup-list" => env!("CARGO_BIN_EXE_backup-list"),
        "backup-verify" => env!("CARGO_BIN_EXE_backup-verify"),
        "backup-restore" => env!("CARGO_BIN_EXE_backup-restore"),
        "backup-rollback" => env!("CARGO_BIN_EXE_backup-rollback"),
        "backup-prune" => env!("CARGO_BIN_EXE_backup-prune"),
        other => panic!("{other}"),
    }
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir_all(home.join(".config/nvim")).unwrap();
        std::fs::write(home.join(".zshrc"), b"export EDITOR=nvim\n").unwrap();
        std::fs::write(home.join(".config/nvim/init.lua"), b"vim.o.number = true\n").unwrap();
        // Fixed modes so snapshots do not depend on the umask of the machine.
        for (p, m) in [
            (".config", 0o755),
            (".config/nvim", 0o755),
            (".zshrc", 0o644),
            (".config/nvim/init.lua", 0o644),
        ] {
            std::fs::set_permissions(home.join(p), std::fs::Permissions::from_mode(m)).unwrap();
        }
        let repo = tmp.path().join("repo");
        Env { tmp, home, repo }
    }

    fn cmd(&self, bin: &str, args: &[&str], extra_env: &[(&str, &str)]) -> (i32, Value, String) {
        let out = Command::new(exe(bin))
            .args(args)
            .arg("--json")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("BACKUP_REPO", &self.repo)
            // This machine's package managers would make envelopes machine-specific.
            .env("BACKUP_PACKAGES", "0")
            .envs(extra_env.iter().copied())
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("stdout is not exactly one JSON document ({e}):\n{text}"));
        let errors: Vec<String> = schema()
            .iter_errors(&v)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "envelope violates the schema: {errors:?}\n{v:#}"
        );
        let code = out.status.code().unwrap();
        assert_eq!(
            v["exit_code"], code,
            "exit_code field equals the process exit code"
        );
        (code, v, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn run(&self, bin: &str, args: &[&str]) -> (i32, Value) {
        let (c, v, _) = self.cmd(bin, args, &[]);
        (c, v)
    }
}

const PATHS: [&str; 4] = ["--path", "~/.zshrc", "--path", "~/.config"];

fn with_paths<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend(PATHS);
    v
}

#[test]
fn idempotent_checkpoints_report_changed_only_for_new_content() {
    let e = Env::new();
    // Within one bootstrap run (the role passes one id per play).
    let (rc, first) = e.run(
        "backup-checkpoint",
        &with_paths(&["auto", "pre-dotfiles", "--run", "r1"]),
    );
    assert_eq!(rc, 0, "{first}");
    assert_eq!(first["changed"], true);
    assert_eq!(first["snapshot"]["kind"], "checkpoint");
    let (_, again) = e.run(
        "backup-checkpoint",
        &with_paths(&["auto", "pre-dotfiles", "--run", "r1"]),
    );
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(
        again["snapshot"]["id"], first["snapshot"]["id"],
        "same label, same content: nothing written"
    );
    assert_eq!(again["snapshot"]["reused"], true);
    let (_, other) = e.run(
        "backup-checkpoint",
        &with_paths(&["auto", "post-setup", "--run", "r1"]),
    );
    assert_eq!(
        other["changed"], false,
        "content already stored under another label"
    );
    assert_ne!(other["snapshot"]["id"], first["snapshot"]["id"]);
    assert_eq!(other["snapshot"]["tree"], first["snapshot"]["tree"]);
    std::fs::write(e.home.join(".zshrc"), b"changed\n").unwrap();
    let (_, changed) = e.run("backup-checkpoint", &with_paths(&["auto", "post-setup"]));
    assert_eq!(changed["changed"], true);
    assert_eq!(changed["snapshot"]["new_bytes"], 8);
}

#[test]
fn dry_run_writes_nothing_not_even_the_repository() {
    let e = Env::new();
    let (rc, v) = e.run(
        "backup-create",
        &with_paths(&["--config-only", "--dry-run"]),
    );
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["dry_run"], true);
    assert!(v["roots"].is_array() && v["excluded"].is_array());
    assert!(!e.repo.exists(), "a dry run must not create the repository");
}

#[test]
fn listing_files_reports_true_hashes_modes_and_sizes() {
    let e = Env::new();
    std::fs::set_permissions(
        e.home.join(".zshrc"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let (_, cp) = e.run(
        "backup-checkpoint",
        &with_paths(&["manual", "before-nvim-change"]),
    );
    let prefix = &cp["snapshot"]["id"].as_str().unwrap()[..6];
    for sel in ["before-nvim-change", prefix, "latest"] {
        let (rc, v) = e.run("backup-list", &[sel, "--files"]);
        assert_eq!(rc, 0, "{v}");
        let z = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["path"] == "~/.zshrc")
            .unwrap()
            .clone();
        assert_eq!(z["mode"], "0640");
        assert_eq!(z["size"], 19);
        assert_eq!(
            z["sha256"],
            dotfiles_backup::hash::Hash::of(b"export EDITOR=nvim\n").to_hex()
        );
    }
    let (_, list) = e.run("backup-list", &[]);
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 1);
    assert!(list["stats"]["repository_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn bad_inputs_get_distinct_codes_and_clear_messages() {
    let e = Env::new();
    let (rc, v) = e.run("backup-checkpoint", &["auto", "pre-bogus"]);
    assert_eq!(rc, 2);
    assert_eq!(v["errors"][0]["code"], "unknown_phase");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("pre-dotfiles"),
        "lists valid phases"
    );
    for bad in ["../x", "", "a/b", ".hidden", "-dash"] {
        let (rc, v) = e.run("backup-checkpoint", &["manual", bad]);
        assert_eq!(rc, 2, "{bad:?}: {v}");
        assert!(v["status"] == "failed");
    }
    // A usage error from the argument parser still yields exactly one envelope.
    let (rc, v) = e.run("backup-list", &["--no-such-flag"]);
    assert_eq!(rc, 2);
    assert_eq!(v["errors"][0]["code"], "usage");
    // Repository path that is a file.
    let file = e.tmp.path().join("file");
    std::fs::write(&file, b"not a repo").unwrap();
    let (rc, v, _) = e.cmd(
        "backup-checkpoint",
        &with_paths(&["manual", "x"]),
        &[("BACKUP_REPO", file.to_str().unwrap())],
    );
    assert_eq!(rc, 2, "{v}");
    assert_eq!(v["errors"][0]["code"], "repository_not_a_directory");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a repo");
    // Unknown config key names the key and the file.
    let cfg = e.tmp.path().join("c.toml");
    std::fs::write(&cfg, "[track]\nconfg = []\n").unwrap();
    let (rc, v) = e.run(
        "backup-checkpoint",
        &["manual", "x", "--config", cfg.to_str().unwrap()],
    );
    assert_eq!(rc, 2);
    let msg = v["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("confg") && msg.contains("c.toml"), "{msg}");
    // Newer repository format: refused, file untouched.
    e.run("backup-checkpoint", &with_paths(&["manual", "x"]));
    let cfg_path = e.repo.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("\"version\": 1", "\"version\": 99");
    std::fs::write(&cfg_path, &text).unwrap();
    let (rc, v) = e.run("backup-checkpoint", &with_paths(&["manual", "y"]));
    assert_eq!(rc, 6, "{v}");
    assert_eq!(v["errors"][0]["code"], "unsupported_format");
    assert_eq!(std::fs::read_to_string(&cfg_path).unwrap(), text);
}

#[test]
fn verify_detects_every_kind_of_damage_and_names_snapshots_and_paths() {
    type Damage = (&'static str, fn(&Path));
    let damage: [Damage; 7] = [
        ("flip a pack byte", |repo| {
            mutate_first(repo, "packs", |b| {
                b[8] ^= 1;
            })
        }),
        ("flip a byte of the trailer", |repo| {
            mutate_first(repo, "packs", |b| {
                let i = b.len() - 30;
                b[i] ^= 1;
            })
        }),
        ("truncate a pack", |repo| {
            mutate_first(repo, "packs", |b| {
                b.truncate(b.len() - 20);
            })
        }),
        ("delete a pack", |repo| {
            let p = first(repo, "packs");
            std::fs::remove_file(p).unwrap();
        }),
        ("flip an index byte", |repo| {
            mutate_first(repo, "index", |b| {
                let i = b.len() - 3;
                b[i] ^= 1;
            })
        }),
        ("edit a snapshot record", |repo| {
            mutate_first(repo, "snapshots", |b| {
                b[10] = b'X';
            })
        }),
        ("edit a tree", |repo| {
            mutate_first(repo, "trees", |b| {
                b[5] ^= 1;
            })
        }),
    ];
    for (what, f) in damage {
        let e = Env::new();
        e.run("backup-checkpoint", &with_paths(&["auto", "pre-dotfiles"]));
        let (rc, v) = e.run("backup-verify", &["--read-data"]);
        assert_eq!(rc, 0, "{v}");
        f(&e.repo);
        let (rc, v) = e.run("backup-verify", &["--read-data"]);
        assert_eq!(rc, 6, "{what}: {v}");
        assert_eq!(v["errors"][0]["code"], "repository_corrupt");
        let problems = v["problems"].as_array().unwrap();
        assert!(!problems.is_empty(), "{what}");
        // Data damage names the snapshots and paths; trailer-only damage (blob data intact) names the pack.
        if what == "flip a pack byte" || what == "delete a pack" {
            assert!(
                problems.iter().any(|p| p["snapshots"][0]
                    .as_str()
                    .unwrap_or("")
                    .contains("pre-dotfiles")),
                "{what}: {v}"
            );
            assert!(
                problems
                    .iter()
                    .any(|p| !p["paths"].as_array().unwrap().is_empty()),
                "{what}: names paths: {v}"
            );
        }
        let (rc, h) = e.run("backup-checkpoint", &["--health-check"]);
        assert_eq!(rc, 1, "{what}: health must be red: {h}");
        assert_eq!(h["health"], "red");
    }
}

fn first(repo: &Path, sub: &str) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo.join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v.remove(0)
}

fn mutate_first(repo: &Path, sub: &str, f: impl Fn(&mut Vec<u8>)) {
    let p = first(repo, sub);
    let mut b = std::fs::read(&p).unwrap();
    f(&mut b);
    std::fs::write(&p, b).unwrap();
}

#[test]
fn health_check_is_green_on_a_good_repository() {
    let e = Env::new();
    e.run("backup-checkpoint", &with_paths(&["auto", "pre-ansible"]));
    let (rc, v) = e.run("backup-checkpoint", &["--health-check"]);
    assert_eq!(rc, 0, "{v}");
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for n in [
        "version",
        "config",
        "repository",
        "writable",
        "lock",
        "disk_space",
        "last_checkpoint",
        "verify",
    ] {
        assert!(names.contains(&n), "missing check {n}");
    }
}

#[test]
fn secrets_are_skipped_with_a_warning_and_never_stored() {
    let e = Env::new();
    std::fs::create_dir_all(e.home.join(".ssh")).unwrap();
    let key: Vec<u8> = (0..400u32).map(|i| (i * 7 + 13) as u8).collect();
    std::fs::write(e.home.join(".ssh/id_ed25519"), &key).unwrap();
    std::fs::write(e.home.join(".ssh/config"), b"Host *\n").unwrap();
    let (rc, v) = e.run("backup-checkpoint", &["manual", "s", "--path", "~/.ssh"]);
    assert_eq!(rc, 0, "{v}");
    let w = v["warnings"].as_array().unwrap();
    assert!(
        w.iter()
            .any(|w| w["code"] == "secret_skipped" && w["path"] == "~/.ssh/id_ed25519"),
        "{v}"
    );
    let mut stored = Vec::new();
    for entry in walk(&e.repo) {
        stored.extend(std::fs::read(entry).unwrap());
    }
    for window in key.windows(16) {
        assert!(
            !stored.windows(16).any(|s| s == window),
            "secret bytes found in the repository"
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn disabled_is_skipped_with_exit_0_and_creates_nothing() {
    let e = Env::new();
    let (rc, v, _) = e.cmd(
        "backup-checkpoint",
        &with_paths(&["auto", "pre-ansible"]),
        &[("BACKUP_DISABLED", "true")],
    );
    assert_eq!(rc, 0);
    assert_eq!(v["status"], "skipped");
    assert_eq!(v["skip_reason"], "disabled");
    assert_eq!(v["degradation"], "disabled");
    assert!(!e.repo.exists());
    let (_, v, _) = e.cmd("backup-list", &[], &[("BACKUP_LOCAL_ONLY", "true")]);
    assert_eq!(v["degradation"], "local-only");
}

#[test]
fn a_held_lock_gives_lock_busy_naming_the_holder() {
    let e = Env::new();
    e.run("backup-checkpoint", &with_paths(&["auto", "pre-ansible"]));
    let guard = dotfiles_backup::repo::lock::acquire(
        &e.repo.join("lock"),
        "backup-create",
        std::time::Duration::ZERO,
    )
    .unwrap();
    let (rc, v) = e.run(
        "backup-checkpoint",
        &with_paths(&["auto", "pre-dotfiles", "--wait", "0.2"]),
    );
    assert_eq!(rc, 4, "{v}");
    assert_eq!(v["errors"][0]["code"], "lock_busy");
    assert_eq!(v["errors"][0]["retryable"], true);
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("backup-create"));
    // Readers do not wait for writers.
    let (rc, _) = e.run("backup-list", &[]);
    assert_eq!(rc, 0);
    drop(guard);
    let (rc, _) = e.run("backup-checkpoint", &with_paths(&["auto", "pre-dotfiles"]));
    assert_eq!(rc, 0);
}

#[test]
fn repository_is_private_even_under_umask_000() {
    let e = Env::new();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; exec '{}' manual u --path '~/.zshrc' --path '~/.config' -q",
            exe("backup-checkpoint")
        ))
        .env("HOME", &e.home)
        .env("BACKUP_REPO", &e.repo)
        .status()
        .unwrap();
    assert!(status.success());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&e.repo), 0o700);
    for p in walk(&e.repo) {
        assert_eq!(mode(&p) & 0o077, 0, "{} is readable by others", p.display());
    }
}

fn redacted(v: &Value) -> Value {
    let mut v = v.clone();
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, val) in m.iter_mut() {
                    match k.as_str() {
                        "id" | "tree" | "parent" | "short_id" | "created_at" | "host" | "home"
                        | "repository" | "duration_ms" | "mtime_ns" | "version"
                        | "run_started_at" | "started_at" => {
                            if !val.is_null() {
                                *val = Value::String(format!("[{k}]"));
                            }
                        }
                        // A short id where a phase was resolved (`resolved.snapshot`).
                        "snapshot" if val.is_string() => {
                            if !val.is_null() {
                                *val = Value::String(format!("[{k}]"));
                            }
                        }
                        "message"
                            if val
                                .as_str()
                                .is_some_and(|s| s.contains(" free on ") || s.contains("/tmp")) =>
                        {
                            *val = Value::String(
                                "[message with machine-specific path or size]".into(),
                            );
                        }
                        k if k.ends_with("_ms") => *val = Value::String("[ms]".into()),
                        _ => walk(val),
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

#[test]
fn envelopes_match_their_snapshots() {
    let e = Env::new();
    // One bootstrap run, named (an automatic run id holds the time).
    let run = ["auto", "pre-dotfiles", "--run", "run-1"];
    let (_, cp) = e.run("backup-checkpoint", &with_paths(&run));
    insta::assert_json_snapshot!("checkpoint", redacted(&cp));
    let (_, again) = e.run("backup-checkpoint", &with_paths(&run));
    insta::assert_json_snapshot!("checkpoint_reused", redacted(&again));
    let (_, files) = e.run("backup-list", &["pre-dotfiles", "--files"]);
    insta::assert_json_snapshot!("list_files", redacted(&files));
    let (_, usage) = e.run("backup-checkpoint", &["auto", "pre-bogus"]);
    insta::assert_json_snapshot!("unknown_phase", redacted(&usage));
    std::fs::write(e.home.join(".zshrc"), b"broken\n").unwrap();
    let (_, plan) = e.run("backup-rollback", &["pre-dotfiles", "--dry-run"]);
    insta::assert_json_snapshot!("rollback_plan", redacted(&plan));
}

#[test]
fn size_report_lists_large_files_and_exclusions_and_exclude_flag_works() {
    let e = Env::new();
    std::fs::write(e.home.join(".config/nvim/big.bin"), vec![1u8; 11 << 20]).unwrap();
    std::fs::create_dir_all(e.home.join(".config/nvim/.cache")).unwrap();
    std::fs::write(e.home.join(".config/nvim/.cache/x"), b"cache").unwrap();
    std::fs::write(e.home.join(".config/nvim/debug.log"), b"log").unwrap();
    // The ignore file (gitignore syntax, relative to $HOME).
    std::fs::create_dir_all(e.home.join(".config/dotfiles-backup")).unwrap();
    std::fs::write(
        e.home.join(".config/dotfiles-backup/ignore"),
        b".config/nvim/*.log\n",
    )
    .unwrap();
    let (rc, v) = e.run(
        "backup-create",
        &with_paths(&["--dry-run", "--exclude", "scratch/"]),
    );
    assert_eq!(rc, 0, "{v}");
    let large = v["large_files"].as_array().unwrap();
    assert_eq!(large.len(), 1, "{v}");
    assert_eq!(large[0]["path"], "~/.config/nvim/big.bin");
    assert_eq!(large[0]["level"], "warn");
    let reasons: Vec<(String, String)> = v["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["path"].as_str().unwrap().to_string(),
                x["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        reasons.contains(&("~/.config/nvim/.cache".into(), "exclude pattern".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("~/.config/nvim/debug.log".into(), "ignore file".into())),
        "{reasons:?}"
    );
    std::fs::create_dir_all(e.home.join(".config/scratch")).unwrap();
    let (_, v) = e.run(
        "backup-create",
        &with_paths(&["--dry-run", "--exclude", "scratch/"]),
    );
    assert!(
        v["excluded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["path"] == "~/.config/scratch"),
        "{v}"
    );
}

#[test]
fn quota_prunes_by_policy_first_then_refuses_with_the_size_needed() {
    let e = Env::new();
    let cfg = e.tmp.path().join("q.toml");
    std::fs::write(
        &cfg,
        "[space]\nmax_repo_mb = 1\n[retention]\nkeep_per_phase = 1\nauto = false\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let data = |seed: u8| -> Vec<u8> {
        (0..400_000u32)
            .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
            .collect()
    };
    std::fs::write(e.home.join(".config/nvim/a.bin"), data(3)).unwrap();
    let (rc, v) = e.run(
        "backup-checkpoint",
        &with_paths(&["auto", "pre-dotfiles", "--config", c]),
    );
    assert_eq!(rc, 0, "{v}");
    // The first bootstrap run is pinned (tests/phases.rs); this is about the policy.
    let (rc, v) = e.run("backup-prune", &["--unpin", "latest", "--config", c]);
    assert_eq!(rc, 0, "{v}");
    std::fs::write(e.home.join(".config/nvim/a.bin"), data(5)).unwrap();
    let (rc, v) = e.run(
        "backup-checkpoint",
        &with_paths(&["auto", "pre-dotfiles", "--config", c]),
    );
    assert_eq!(rc, 0, "{v}");
    // A third version would exceed 1 MiB: the older pre-dotfiles checkpoints are pruned first.
    std::fs::write(e.home.join(".config/nvim/a.bin"), data(7)).unwrap();
    let (rc, v) = e.run(
        "backup-checkpoint",
        &with_paths(&["auto", "pre-dotfiles", "--config", c]),
    );
    assert_eq!(rc, 0, "{v}");
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "quota_pruned"),
        "{v}"
    );
    // Content that can never fit is refused, naming how much must be freed.
    std::fs::write(e.home.join(".config/nvim/huge.bin"), vec![9u8; 2 << 20]).unwrap();
    let (rc, v) = e.run(
        "backup-checkpoint",
        &with_paths(&["auto", "pre-dotfiles", "--config", c]),
    );
    assert_eq!(rc, 5, "{v}");
    assert_eq!(v["errors"][0]["code"], "quota_exceeded");
    assert!(v["errors"][0]["hint"]
        .as_str()
        .unwrap()
        .contains("free at least"));
    let (rc, _) = e.run("backup-verify", &["--read-data"]);
    assert_eq!(rc, 0);
}

#[test]
fn checkpoints_beyond_the_policy_are_pruned_automatically() {
    let e = Env::new();
    let cfg = e.tmp.path().join("a.toml");
    std::fs::write(&cfg, "[retention]\nkeep_per_phase = 2\n").unwrap();
    let c = cfg.to_str().unwrap();
    for i in 0..4 {
        std::fs::write(e.home.join(".zshrc"), format!("version {i}\n")).unwrap();
        let (rc, v) = e.run(
            "backup-checkpoint",
            &with_paths(&["auto", "pre-dotfiles", "--config", c]),
        );
        assert_eq!(rc, 0, "{v}");
        if i == 0 {
            // The first bootstrap run is pinned (tests/phases.rs); this is about the policy.
            let (rc, v) = e.run("backup-prune", &["--unpin", "latest", "--config", c]);
            assert_eq!(rc, 0, "{v}");
        }
    }
    let (_, list) = e.run("backup-list", &[]);
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 2, "{list}");
    let (rc, _) = e.run("backup-verify", &["--read-data"]);
    assert_eq!(rc, 0);
}

mod listing_property {
    use super::*;
    use proptest::prelude::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    fn name() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                Just(b'x'),
                Just(b'y'),
                Just(0xe9u8),
                Just(0xffu8),
                Just(b' ')
            ],
            1..5,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]
        /// Any tree checkpointed and listed back has every entry with the right type, mode, size, hash and target.
        #[test]
        fn every_entry_is_listed_with_its_true_facts(
            files in prop::collection::btree_map(name(), (prop::collection::vec(any::<u8>(), 0..2000), 0u32..4), 1..10),
            links in prop::collection::btree_map(name(), name(), 0..4),
            empty_dirs in prop::collection::btree_set(name(), 0..3),
        ) {
            let e = Env::new();
            let root = e.home.join("t");
            std::fs::create_dir_all(root.join("sub")).unwrap();
            let modes = [0o644, 0o600, 0o755, 0o440];
            for (n, (content, m)) in &files {
                let p = root.join(OsStr::from_bytes(n));
                std::fs::write(&p, content).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(modes[*m as usize])).unwrap();
            }
            for (n, t) in &links {
                let p = root.join("sub").join(OsStr::from_bytes(n));
                std::os::unix::fs::symlink(OsStr::from_bytes(t), &p).unwrap();
            }
            for d in &empty_dirs {
                let _ = std::fs::create_dir(root.join("sub").join(OsStr::from_bytes(d)).with_extension("d"));
            }
            let (rc, v) = e.run("backup-checkpoint", &["manual", "p", "--path", "~/t"]);
            prop_assert_eq!(rc, 0, "{}", v);
            let (_, listed) = e.run("backup-list", &["p", "--files"]);
            let entries = listed["entries"].as_array().unwrap();
            let by_path = |bytes: &[u8]| -> Option<&Value> {
                entries.iter().find(|x| match x["path_b64"].as_str() {
                    Some(b) => {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD.decode(b).unwrap() == bytes
                    }
                    None => x["path"].as_str().unwrap().as_bytes() == bytes,
                })
            };
            for (n, (content, m)) in &files {
                let mut full = b"~/t/".to_vec();
                full.extend_from_slice(n);
                let x = by_path(&full).unwrap_or_else(|| panic!("{:?} not listed", String::from_utf8_lossy(&full)));
                prop_assert_eq!(&x["type"], "file");
                prop_assert_eq!(x["size"].as_u64().unwrap(), content.len() as u64);
                prop_assert_eq!(x["mode"].as_str().unwrap(), format!("{:04o}", modes[*m as usize]));
                prop_assert_eq!(x["sha256"].as_str().unwrap(), dotfiles_backup::hash::Hash::of(content).to_hex());
            }
            for (n, t) in &links {
                let mut full = b"~/t/sub/".to_vec();
                full.extend_from_slice(n);
                let x = by_path(&full).unwrap();
                prop_assert_eq!(&x["type"], "symlink");
                prop_assert_eq!(x["size"].as_u64().unwrap(), t.len() as u64);
            }
            let dirs = entries.iter().filter(|x| x["type"] == "dir").count();
            prop_assert_eq!(dirs, 2 + empty_dirs.len());
        }
    }
}

#[test]
fn shell_helper_skips_or_fails_like_the_role() {
    let e = Env::new();
    let helper = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/checkpoint-or-skip");
    let run = |label: &str, extra: &[(&str, &str)]| {
        Command::new("sh")
            .arg(helper)
            .arg(label)
            .args(["--path", "~/.zshrc", "-q"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &e.home)
            .env("BACKUP_REPO", &e.repo)
            .env("BACKUP_PACKAGES", "0")
            .envs(extra.iter().copied())
            .output()
            .unwrap()
    };
    let none = e.tmp.path().join("no-bin");
    let out = run("pre-ansible", &[("BACKUP_BIN_DIR", none.to_str().unwrap())]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "backup tool not yet installed, skipping pre-ansible checkpoint"
    );
    let out = run(
        "pre-dotfiles",
        &[("BACKUP_BIN_DIR", none.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scripts/install"));
    let out = run("pre-dotfiles", &[("BACKUP_DISABLED", "true")]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!e.repo.exists());
    let bins = Path::new(exe("backup-checkpoint")).parent().unwrap();
    let out = run(
        "pre-dotfiles",
        &[("BACKUP_BIN_DIR", bins.to_str().unwrap())],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, list) = e.run("backup-list", &[]);
    assert_eq!(list["snapshots"][0]["label"], "pre-dotfiles");
}
