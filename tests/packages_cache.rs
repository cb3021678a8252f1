//! Cached package captures (issue 21) through the real `backup-checkpoint`,
//! with fake package managers on `PATH`: a fake Homebrew prefix whose
//! `Cellar` is the cache key, a `[packages.watch]` key for a configured
//! command, and managers that hang, flood, fail, write into `$HOME`, change
//! state without changing mtimes, or run in two checkpoints at once.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const CKPT: &str = "backup-checkpoint";
/// Past the racy window of the cache key (2 s).
const SETTLE: Duration = Duration::from_millis(2100);

fn script(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn config(e: &TestEnv, body: &str) {
    e.write(
        ".config/dotfiles-backup/config.toml",
        body.as_bytes(),
        0o644,
    );
}

/// A Homebrew prefix `<tmp>/brew` with `Cellar/git/2.43.0`; `bin/brew`
/// prints `brew.out` and appends a line to `brew.calls` per run.
fn fake_brew(e: &TestEnv) -> PathBuf {
    let prefix = e.tmp.path().join("brew");
    std::fs::create_dir_all(prefix.join("Cellar/git/2.43.0")).unwrap();
    std::fs::write(prefix.join("brew.out"), "git 2.43.0\n").unwrap();
    script(
        &prefix.join("bin/brew"),
        &format!(
            "echo run >> '{p}/brew.calls'\n/bin/cat '{p}/brew.out'",
            p = prefix.display()
        ),
    );
    prefix
}

fn calls(prefix: &Path) -> usize {
    std::fs::read_to_string(prefix.join("brew.calls"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn run(e: &TestEnv, path: &Path, args: &[&str], extra: &[(&str, &str)]) -> Value {
    let path = path.to_string_lossy().into_owned();
    let mut env: Vec<(&str, &str)> = vec![("PATH", &path)];
    env.extend_from_slice(extra);
    let (rc, v, err) = e.run(CKPT, args, &env);
    assert_eq!(rc, 0, "{v:#}\n{err}");
    v
}

fn outcome<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["packages"]
        .as_array()
        .and_then(|a| a.iter().find(|o| o["name"] == name))
        .unwrap_or_else(|| panic!("no outcome for {name}: {v:#}"))
}

fn record(e: &TestEnv, v: &Value) -> Value {
    let id = v["snapshot"]["id"].as_str().expect("snapshot id");
    let text =
        std::fs::read_to_string(e.repo.join("snapshots").join(format!("{id}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn unchanged_prefix_reuses_the_list_and_any_change_runs_brew_again() {
    let e = TestEnv::with_dotfiles();
    let prefix = fake_brew(&e);
    let bin = prefix.join("bin");
    let only = [("BACKUP_PACKAGES", "brew")];
    std::thread::sleep(SETTLE);

    let v = run(&e, &bin, &["auto", "pre-homebrew"], &only);
    assert_eq!(outcome(&v, "brew")["cached"], false);
    assert_eq!(
        v["packages"].as_array().unwrap().len(),
        1,
        "only brew: {v:#}"
    );
    assert_eq!(calls(&prefix), 1);
    assert!(e.repo.join("cache/packages").is_file());
    let run_id = [
        ("BACKUP_PACKAGES", "brew"),
        ("BACKUP_RUN_ID", v["run"].as_str().unwrap()),
    ];

    // Nothing changed: the list comes from the cache, brew does not run.
    let again = run(&e, &bin, &["auto", "pre-homebrew"], &run_id);
    assert_eq!(outcome(&again, "brew")["cached"], true, "{again:#}");
    assert_eq!(outcome(&again, "brew")["packages"], 1);
    assert_eq!(calls(&prefix), 1);
    assert_eq!(again["snapshot"]["reused"], true, "same lists, same record");

    // An upgrade adds a version directory one level down: brew runs again.
    std::fs::create_dir(prefix.join("Cellar/git/2.44.0")).unwrap();
    std::fs::write(prefix.join("brew.out"), "git 2.43.0 2.44.0\n").unwrap();
    let up = run(&e, &bin, &["auto", "pre-homebrew"], &run_id);
    assert_eq!(outcome(&up, "brew")["cached"], false);
    assert_eq!(calls(&prefix), 2);
    assert!(record(&e, &up)["packages"][0]["output"]
        .as_str()
        .unwrap()
        .contains("2.44.0"));
    // Changed less than 2 s ago (racy): not trusted yet, so brew runs again...
    run(&e, &bin, &["auto", "pre-homebrew"], &run_id);
    assert_eq!(calls(&prefix), 3, "a racy key must not be stored");
    // ...and once it has settled, the next capture is stored and reused.
    std::thread::sleep(SETTLE);
    run(&e, &bin, &["auto", "pre-homebrew"], &run_id);
    assert_eq!(calls(&prefix), 4);
    let v = run(&e, &bin, &["auto", "pre-homebrew"], &run_id);
    assert_eq!(outcome(&v, "brew")["cached"], true, "{v:#}");
    assert_eq!(calls(&prefix), 4);

    // State changed but the mtime was put back (same size, same mtime): the
    // ctime and inode still differ, so the key does too.
    let git = prefix.join("Cellar/git");
    let before = std::fs::metadata(&git).unwrap();
    std::fs::rename(git.join("2.44.0"), git.join("2.45.0")).unwrap();
    std::fs::write(prefix.join("brew.out"), "git 2.43.0 2.45.0\n").unwrap();
    set_mtime(
        &git,
        mtime_ns(&before) / 1_000_000_000,
        mtime_ns(&before) % 1_000_000_000,
    );
    let v = run(&e, &bin, &["auto", "pre-homebrew"], &run_id);
    assert_eq!(outcome(&v, "brew")["cached"], false, "{v:#}");
    assert!(record(&e, &v)["packages"][0]["output"]
        .as_str()
        .unwrap()
        .contains("2.45.0"));

    // A damaged cache is ignored (brew runs) and replaced.
    std::thread::sleep(SETTLE);
    run(&e, &bin, &["auto", "pre-homebrew"], &run_id);
    let n = calls(&prefix);
    let cache = e.repo.join("cache/packages");
    let mut bytes = std::fs::read(&cache).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 1;
    std::fs::write(&cache, &bytes).unwrap();
    let v = run(&e, &bin, &["auto", "pre-homebrew"], &run_id);
    assert_eq!(
        outcome(&v, "brew")["cached"],
        false,
        "damaged cache trusted: {v:#}"
    );
    assert_eq!(calls(&prefix), n + 1);
    let v = run(&e, &bin, &["auto", "pre-homebrew"], &run_id);
    assert_eq!(outcome(&v, "brew")["cached"], true, "rewritten: {v:#}");

    // `packages.cache = false`: every checkpoint asks.
    config(&e, "[packages]\ncache = false\n");
    let v = run(&e, &bin, &["auto", "pre-homebrew"], &run_id);
    assert_eq!(outcome(&v, "brew")["cached"], false);
}

#[test]
fn watched_paths_key_a_configured_command_and_the_home_is_never_written() {
    let e = TestEnv::with_dotfiles();
    let bin = e.tmp.path().join("fakebin");
    let state = e.tmp.path().join("state.txt");
    std::fs::write(&state, "one\n").unwrap();
    let calls = e.tmp.path().join("calls");
    // Writes where a careless manager would (its cache and log under $HOME)
    // unless the scratch variables point elsewhere.
    script(
        &bin.join("lister"),
        &format!(
            "echo x >> '{calls}'\n\
             mkdir -p \"${{npm_config_cache:-$HOME/.npm}}\" \"${{PIP_CACHE_DIR:-$HOME/.cache/pip}}\" \"${{HOMEBREW_CACHE:-$HOME/Library/Caches/Homebrew}}\"\n\
             echo log > \"${{npm_config_logs_dir:-$HOME/.npm/_logs}}.log\"\n\
             /bin/cat '{state}'",
            calls = calls.display(),
            state = state.display()
        ),
    );
    config(
        &e,
        &format!(
            "[packages]\n[packages.commands]\nmine = [\"lister\"]\nother = [\"lister\", \"again\"]\n[packages.watch]\nmine = [\"{}\"]\n",
            state.display()
        ),
    );
    let before = dir_state(&e.home);
    std::thread::sleep(SETTLE);
    let n = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let v = run(
        &e,
        &bin,
        &["auto", "pre-ansible"],
        &[("BACKUP_PACKAGES", "1")],
    );
    assert_eq!(n(&calls), 2, "both ran: {v:#}");
    let v = run(
        &e,
        &bin,
        &["auto", "pre-ansible"],
        &[("BACKUP_PACKAGES", "1")],
    );
    assert_eq!(outcome(&v, "mine")["cached"], true, "{v:#}");
    assert_eq!(outcome(&v, "other")["cached"], false, "no watch, no cache");
    assert_eq!(n(&calls), 3);
    std::fs::write(&state, "two\n").unwrap();
    let v = run(
        &e,
        &bin,
        &["auto", "pre-ansible"],
        &[("BACKUP_PACKAGES", "mine")],
    );
    assert_eq!(outcome(&v, "mine")["cached"], false);
    assert_eq!(n(&calls), 4, "limited to `mine`");
    assert!(record(&e, &v)["packages"][0]["output"] == "two\n", "{v:#}");

    // Nothing was written into the protected home (the config file aside).
    let after = dir_state(&e.home);
    assert_eq!(before, after, "a capture wrote into $HOME");
}

#[test]
fn hanging_flooding_and_failing_managers_never_fail_the_checkpoint() {
    let e = TestEnv::with_dotfiles();
    let bin = e.tmp.path().join("fakebin");
    // Hangs with a child holding the pipe.
    script(
        &bin.join("pip"),
        "/bin/sleep 60 &\n/bin/sleep 60\necho never",
    );
    // 50 MB of output.
    script(
        &bin.join("npm"),
        "/usr/bin/head -c 52428800 /dev/zero | /usr/bin/tr '\\0' 'a'",
    );
    script(&bin.join("apt-mark"), "echo half a list\nexit 1");
    let started = Instant::now();
    let v = run(
        &e,
        &bin,
        &["auto", "pre-homebrew"],
        &[
            ("BACKUP_PACKAGES", "pip,npm,apt"),
            ("BACKUP_PACKAGES_TIMEOUT", "3"),
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(v["status"], "success", "{v:#}");
    assert_eq!(outcome(&v, "pip")["status"], "timeout");
    assert_eq!(outcome(&v, "npm")["status"], "failed");
    assert_eq!(outcome(&v, "apt")["status"], "failed");
    let codes: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"package_capture_timeout"), "{codes:?}");
    let timeout = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["code"] == "package_capture_timeout")
        .unwrap();
    assert!(
        timeout["message"].as_str().unwrap().contains("`pip`"),
        "{timeout:#}"
    );
    // Every one is stored as unknown, never as an empty or partial list.
    let r = record(&e, &v);
    let lists = r["packages"].as_array().unwrap();
    assert_eq!(lists.len(), 3, "{r:#}");
    for l in lists {
        assert!(l["status"] == "failed" || l["status"] == "timeout", "{l:#}");
        assert_eq!(l["output"], "");
    }
    // Failures are never cached.
    assert_eq!(v["stats"]["package_lists"], 0);
}

#[test]
fn bad_manager_names_are_usage_errors() {
    let e = TestEnv::with_dotfiles();
    let (rc, v, _) = e.run(
        CKPT,
        &["auto", "pre-homebrew"],
        &[("BACKUP_PACKAGES", "apt,nope")],
    );
    assert_eq!(rc, 2, "{v:#}");
    let msg = v["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("`nope`"), "{msg}");
    assert!(
        v["errors"][0]["hint"]
            .as_str()
            .unwrap()
            .contains("brewfile"),
        "{v:#}"
    );
    config(&e, "[packages]\nmanagers = [\"brew\", \"cargo\"]\n");
    let (rc, v, _) = e.run(CKPT, &["auto", "pre-homebrew"], &[("BACKUP_PACKAGES", "1")]);
    assert_eq!(rc, 2, "{v:#}");
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("`cargo`"));
    let (rc, v, _) = e.run(
        CKPT,
        &["auto", "pre-homebrew"],
        &[("BACKUP_PACKAGES_TIMEOUT", "soon")],
    );
    assert_eq!(rc, 2, "{v:#}");
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("BACKUP_PACKAGES_TIMEOUT"));
}

#[test]
fn two_checkpoints_at_once_leave_a_valid_cache() {
    let e = TestEnv::with_dotfiles();
    let prefix = fake_brew(&e);
    let bin = prefix.join("bin");
    std::fs::write(
        prefix.join("brew.out"),
        (0..2000)
            .map(|i| format!("pkg{i} 1.0\n"))
            .collect::<String>(),
    )
    .unwrap();
    // The repository exists already (concurrent creation is another matter).
    run(&e, &bin, &["manual", "start"], &[]);
    std::thread::sleep(SETTLE);
    let path = bin.to_string_lossy().into_owned();
    let children: Vec<_> = ["pre-homebrew", "pre-dotfiles", "pre-ansible"]
        .iter()
        .map(|phase| {
            e.command(
                CKPT,
                &["--json", "auto", phase, "--wait", "30"],
                &[
                    ("PATH", &path),
                    ("BACKUP_PACKAGES", "brew"),
                    ("BACKUP_RUN_ID", "r1"),
                ],
            )
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let (rc, v) = parse_envelope(&out);
        assert_eq!(rc, 0, "{v:#}");
    }
    let n = calls(&prefix);
    let v = run(
        &e,
        &bin,
        &["auto", "pre-homebrew"],
        &[("BACKUP_PACKAGES", "brew")],
    );
    assert_eq!(outcome(&v, "brew")["cached"], true, "{v:#}");
    assert_eq!(outcome(&v, "brew")["packages"], 2000);
    assert_eq!(calls(&prefix), n);
}
