//! Package-list captures through the real `backup-checkpoint`, with fake
//! package managers on `PATH`: one that prints a list, one that fails, one
//! that hangs (with a child of its own) past the timeout, and the rest
//! missing. Covers what is stored in the record, the warnings, reuse of an
//! unchanged checkpoint, the on/off switches, and that a dry run runs nothing.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

const CKPT: &str = "backup-checkpoint";
const BREW_LIST: &str = "git 2.43.0\nripgrep 14.1.0\n";
const BREWFILE: &str = "tap \"homebrew/bundle\"\nbrew \"git\"\nbrew \"ripgrep\"\ncask \"iterm2\"\nmas \"Xcode\", id: 497799835\n";

fn script(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A fake-manager directory: `brew` prints a list (from `brew.out`) or, for
/// `bundle dump --file=-`, a Brewfile (`brew.bundle`); `apt-mark`
/// fails, `pip` hangs with a child holding stdout; no `pip3`, `code`, `npm`.
fn fake_managers(e: &TestEnv) -> PathBuf {
    let bin = e.tmp.path().join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("brew.out"), BREW_LIST).unwrap();
    std::fs::write(bin.join("brew.bundle"), BREWFILE).unwrap();
    script(
        &bin,
        "brew",
        &format!(
            "if [ \"$*\" = 'bundle dump --file=-' ]; then /bin/cat '{}'; else /bin/cat '{}'; fi",
            bin.join("brew.bundle").display(),
            bin.join("brew.out").display()
        ),
    );
    script(
        &bin,
        "apt-mark",
        "echo 'E: could not open lock file' >&2\nexit 3",
    );
    // Not `exec`: the sleeping child keeps the pipe open unless the whole group is killed.
    script(&bin, "pip", "/bin/sleep 60\necho never");
    bin
}

fn config(e: &TestEnv, body: &str) {
    e.write(
        ".config/dotfiles-backup/config.toml",
        body.as_bytes(),
        0o644,
    );
}

fn run_with_path(e: &TestEnv, bin: &Path, args: &[&str], extra: &[(&str, &str)]) -> (i32, Value) {
    let path = bin.to_string_lossy().into_owned();
    let mut env: Vec<(&str, &str)> = vec![("PATH", &path), ("BACKUP_PACKAGES", "1")];
    env.extend_from_slice(extra);
    let (rc, v, _) = e.run(CKPT, args, &env);
    (rc, v)
}

/// Run with `PATH` and no `BACKUP_PACKAGES` (TestEnv sets it off for hermetic tests).
fn without_switch(e: &TestEnv, path: &str, args: &[&str]) -> Value {
    let mut argv = vec!["--json"];
    argv.extend_from_slice(args);
    let mut cmd = e.command(CKPT, &argv, &[("PATH", path)]);
    cmd.env_remove("BACKUP_PACKAGES");
    let (rc, v) = parse_envelope(&cmd.output().unwrap());
    assert_eq!(rc, 0, "{v:#}");
    v
}

fn record(e: &TestEnv, v: &Value) -> Value {
    let id = v["snapshot"]["id"].as_str().expect("snapshot id");
    let text =
        std::fs::read_to_string(e.repo.join("snapshots").join(format!("{id}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn outcome<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["packages"]
        .as_array()
        .and_then(|a| a.iter().find(|o| o["name"] == name))
        .unwrap_or_else(|| panic!("no outcome for {name}: {v:#}"))
}

#[test]
fn captures_lists_skips_missing_and_warns_on_failure_and_timeout() {
    let e = TestEnv::with_dotfiles();
    let bin = fake_managers(&e);
    config(&e, "[packages]\ntimeout_secs = 2\n");
    let started = Instant::now();
    let (rc, v) = run_with_path(&e, &bin, &["auto", "pre-homebrew"], &[]);
    let took = started.elapsed();
    assert_eq!(
        rc, 0,
        "a failing package manager never fails the checkpoint: {v:#}"
    );
    assert_eq!(v["status"], "success");
    // The hanging `pip` and its child were killed at the timeout.
    assert!(took < Duration::from_secs(20), "took {took:?}");

    assert_eq!(outcome(&v, "brew")["status"], "captured");
    assert_eq!(outcome(&v, "brew")["packages"], 2);
    // The Brewfile (taps, formulae, casks, mas): one entry per line.
    assert_eq!(outcome(&v, "brewfile")["status"], "captured");
    assert_eq!(outcome(&v, "brewfile")["packages"], 5);
    assert_eq!(outcome(&v, "apt")["status"], "failed");
    assert_eq!(outcome(&v, "pip")["status"], "timeout");
    assert_eq!(outcome(&v, "code")["status"], "missing");
    assert_eq!(outcome(&v, "npm")["status"], "missing");
    assert_eq!(v["stats"]["package_lists"], 2, "brew list and the Brewfile");

    // A timeout has its own code (issue 21); missing commands are silent.
    let warnings: Vec<&Value> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["code"] == "package_capture_failed" || w["code"] == "package_capture_timeout")
        .collect();
    assert_eq!(warnings.len(), 2, "missing commands are silent: {v:#}");
    let codes: Vec<&str> = warnings
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == "package_capture_timeout")
            .count(),
        1,
        "{v:#}"
    );
    let text: Vec<&str> = warnings
        .iter()
        .map(|w| w["message"].as_str().unwrap())
        .collect();
    assert!(
        text.iter().any(|m| m.contains("apt-mark")
            && m.contains("status 3")
            && m.contains("could not open lock file")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|m| m.contains("pip") && m.contains("did not finish within 2 s")),
        "{text:?}"
    );

    // Stored in the record: what was captured, with its hash, and a marker
    // for each failed or timed-out capture (unknown, not "nothing installed").
    let r = record(&e, &v);
    let lists = r["packages"].as_array().expect("packages in the record");
    let names: Vec<&str> = lists.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["apt", "brew", "brewfile", "pip"], "{r:#}");
    assert_eq!(lists[0]["status"], "failed");
    assert_eq!(lists[0]["output"], "");
    assert_eq!(lists[3]["status"], "timeout");
    let (brew, brewfile) = (&lists[1], &lists[2]);
    assert!(
        brew.get("status").is_none(),
        "captured lists have no status: {r:#}"
    );
    assert_eq!(brewfile["output"], BREWFILE);
    assert_eq!(brew["output"], BREW_LIST);
    assert_eq!(brew["bytes"], BREW_LIST.len());
    assert_eq!(
        brew["sha256"],
        hex::encode(Sha256::digest(BREW_LIST.as_bytes()))
    );
    assert!(brew["command"][0].as_str().unwrap().ends_with("/brew"));
}

#[test]
fn unchanged_lists_reuse_the_checkpoint_and_changed_ones_make_a_new_one() {
    let e = TestEnv::with_dotfiles();
    let bin = fake_managers(&e);
    config(
        &e,
        "[packages]\ntimeout_secs = 5\n[packages.commands]\nbrew = [\"brew\"]\n",
    );
    let (rc, first) = run_with_path(&e, &bin, &["auto", "pre-dotfiles"], &[]);
    assert_eq!(rc, 0, "{first:#}");
    assert_eq!(
        first["warnings"],
        serde_json::json!([]),
        "only `brew` is configured"
    );
    // The same bootstrap run (the role exports one id per play).
    let run = [("BACKUP_RUN_ID", first["run"].as_str().unwrap())];
    let (_, again) = run_with_path(&e, &bin, &["auto", "pre-dotfiles"], &run);
    assert_eq!(again["snapshot"]["reused"], true, "{again:#}");
    assert_eq!(again["snapshot"]["id"], first["snapshot"]["id"]);

    // Same files, one more package: a new checkpoint that records it.
    std::fs::write(bin.join("brew.out"), format!("{BREW_LIST}zsh 5.9\n")).unwrap();
    let (_, third) = run_with_path(&e, &bin, &["auto", "pre-dotfiles"], &run);
    assert_eq!(third["snapshot"]["reused"], false, "{third:#}");
    assert_ne!(third["snapshot"]["id"], first["snapshot"]["id"]);
    assert_eq!(third["snapshot"]["tree"], first["snapshot"]["tree"]);
    let r = record(&e, &third);
    assert!(r["packages"][0]["output"]
        .as_str()
        .unwrap()
        .contains("zsh 5.9"));
}

#[test]
fn switches_manual_default_off_env_override_and_dry_run_runs_nothing() {
    let e = TestEnv::with_dotfiles();
    let bin = e.tmp.path().join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let marker = e.tmp.path().join("ran");
    script(
        &bin,
        "brew",
        &format!("/bin/touch '{}'\necho x 1", marker.display()),
    );
    let path = bin.to_string_lossy().into_owned();

    // Manual checkpoints capture nothing by default.
    let (rc, v, _) = e.run(CKPT, &["manual", "before-x"], &[("PATH", &path)]);
    assert_eq!(rc, 0, "{v:#}");
    assert!(v.get("packages").is_none(), "{v:#}");
    assert!(record(&e, &v).get("packages").is_none());
    assert!(!marker.exists());

    // A dry run of a phase checkpoint does not run package managers.
    let (rc, v, _) = e.run(
        CKPT,
        &["auto", "pre-ansible", "--dry-run"],
        &[("PATH", &path), ("BACKUP_PACKAGES", "1")],
    );
    assert_eq!(rc, 0, "{v:#}");
    assert!(!marker.exists(), "dry run ran a package manager");

    // BACKUP_PACKAGES=0 turns phase captures off.
    let (_, v, _) = e.run(
        CKPT,
        &["auto", "pre-ansible"],
        &[("PATH", &path), ("BACKUP_PACKAGES", "0")],
    );
    assert!(v.get("packages").is_none(), "{v:#}");
    assert!(!marker.exists());

    // The config default (no BACKUP_PACKAGES at all): phase checkpoints capture.
    let v = without_switch(&e, &path, &["auto", "pre-homebrew"]);
    assert_eq!(outcome(&v, "brew")["status"], "captured", "{v:#}");
    assert!(marker.exists());
    // And `manual = true` in the config turns them on for named checkpoints.
    std::fs::remove_file(&marker).unwrap();
    config(&e, "[packages]\nmanual = true\n");
    let v = without_switch(&e, &path, &["manual", "before-y"]);
    assert_eq!(outcome(&v, "brew")["status"], "captured", "{v:#}");
    assert!(marker.exists());
}

#[test]
fn output_over_the_limit_is_a_warning_not_a_truncated_list() {
    let e = TestEnv::with_dotfiles();
    let bin = e.tmp.path().join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    // ~200 KiB of output against a 64 KiB limit.
    script(&bin, "brew", "i=0; while [ $i -lt 4000 ]; do echo \"package-$i 1.0.0-with-a-long-version-string-here\"; i=$((i+1)); done");
    config(&e, "[packages]\nmax_output_kb = 64\n");
    let (rc, v) = run_with_path(&e, &bin, &["auto", "pre-homebrew"], &[]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(outcome(&v, "brew")["status"], "failed");
    assert!(v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["code"] == "package_capture_failed"
            && w["message"].as_str().unwrap().contains("max_output_kb")));
    // Nothing truncated is stored: a marker says the list is unknown.
    let r = record(&e, &v);
    let lists = r["packages"].as_array().unwrap();
    assert_eq!(
        lists.len(),
        2,
        "brew and the Brewfile (same program): {r:#}"
    );
    for l in lists {
        assert_eq!(l["status"], "failed", "{r:#}");
        assert_eq!(l["output"], "");
    }
}

#[test]
fn bad_package_config_is_a_usage_error_naming_the_key() {
    let e = TestEnv::with_dotfiles();
    config(&e, "[packages.commands]\nbrew = []\n");
    let (rc, v) = e.json(CKPT, &["auto", "pre-homebrew"]);
    assert_eq!(rc, 2, "{v:#}");
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("packages.commands.brew"));
}

#[test]
fn diff_shows_packages_installed_removed_and_upgraded_between_phases_and_live() {
    let e = TestEnv::with_dotfiles();
    let bin = fake_managers(&e);
    config(
        &e,
        "[packages]\ntimeout_secs = 5\n[packages.commands]\nbrew = [\"brew\"]\n",
    );
    let (rc, v) = run_with_path(&e, &bin, &["auto", "pre-homebrew"], &[]);
    assert_eq!(rc, 0, "{v:#}");
    // The phase installs zsh, upgrades git and removes ripgrep.
    std::fs::write(bin.join("brew.out"), "git 2.44.0\nzsh 5.9\n").unwrap();
    let (rc, v) = run_with_path(&e, &bin, &["auto", "pre-dotfiles"], &[]);
    assert_eq!(rc, 0, "{v:#}");

    let path = bin.to_string_lossy().into_owned();
    let env = [("PATH", path.as_str()), ("BACKUP_PACKAGES", "1")];
    let (rc, v, _) = e.run(
        "backup-list",
        &["--diff", "pre-homebrew", "pre-dotfiles"],
        &env,
    );
    assert_eq!(rc, 0, "{v:#}");
    let brew = &v["package_diff"][0];
    assert_eq!(brew["name"], "brew", "{v:#}");
    assert_eq!(brew["added"], serde_json::json!(["zsh 5.9"]));
    assert_eq!(brew["removed"], serde_json::json!(["ripgrep 14.1.0"]));
    assert_eq!(
        brew["changed"],
        serde_json::json!([{"name": "git", "from": "2.43.0", "to": "2.44.0"}])
    );
    assert_eq!(v["stats"]["packages_added"], 1);
    assert_eq!(v["stats"]["packages_removed"], 1);

    // Against the live home the managers are asked now.
    std::fs::write(bin.join("brew.out"), "git 2.44.0\nzsh 5.9\nfzf 0.50\n").unwrap();
    let (rc, v, _) = e.run("backup-list", &["--diff", "pre-dotfiles"], &env);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(
        v["package_diff"][0]["added"],
        serde_json::json!(["fzf 0.50"]),
        "{v:#}"
    );

    // The human form names each package.
    let out = e
        .command(
            "backup-list",
            &["--diff", "pre-homebrew", "pre-dotfiles"],
            &env,
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("packages brew: 1 installed, 1 removed, 1 changed version"),
        "{text}"
    );
    assert!(
        text.contains("+ zsh 5.9") && text.contains("~ git 2.43.0 -> 2.44.0"),
        "{text}"
    );

    // Same lists: nothing reported.
    let (_, v, _) = e.run(
        "backup-list",
        &["--diff", "pre-dotfiles", "pre-dotfiles"],
        &env,
    );
    assert_eq!(v["package_diff"], serde_json::json!([]), "{v:#}");
}

#[test]
fn package_managers_write_caches_and_logs_outside_the_home() {
    // Like npm, the fake writes a log and a cache under ~/.npm unless npm_config_* point
    // elsewhere; it also notes where it wrote, to check the scratch directory is removed.
    let e = TestEnv::with_dotfiles();
    let bin = e.tmp.path().join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let seen = e.tmp.path().join("npm-wrote");
    script(
        &bin,
        "npm",
        &format!(
            "logs=\"${{npm_config_logs_dir:-$HOME/.npm/_logs}}\"\n\
             cache=\"${{npm_config_cache:-$HOME/.npm}}\"\n\
             mkdir -p \"$logs\" \"$cache\" && echo debug > \"$logs/debug.log\" && echo c > \"$cache/index\"\n\
             printf '%s\\n%s\\n' \"$logs\" \"$cache\" > '{}'\n\
             printf '/usr/lib\\n`-- typescript@5.4.5\\n'",
            seen.display()
        ),
    );
    let (rc, v) = run_with_path(&e, &bin, &["auto", "pre-applications"], &[]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(outcome(&v, "npm")["status"], "captured", "{v:#}");
    assert!(
        !e.home.join(".npm").exists(),
        "npm wrote into the protected home"
    );
    let wrote = std::fs::read_to_string(&seen).unwrap();
    for dir in wrote.lines() {
        assert!(!dir.starts_with(e.home.to_str().unwrap()), "{dir}");
        assert!(
            !Path::new(dir).exists(),
            "the scratch directory is removed after the capture: {dir}"
        );
    }
    assert_eq!(wrote.lines().count(), 2, "{wrote}");
}
