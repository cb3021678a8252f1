//! The bootstrap completion report of `backup-checkpoint auto
//! bootstrap-complete`: every phase's status (created, unchanged, skipped,
//! missing) from the snapshots and the run log, sizes, the warnings of the
//! run that took each checkpoint, and rollback commands that really work.
//! Also `backup-list --stats` over the same run log.

mod common;

use common::*;
use serde_json::Value;

const CKPT: &str = "backup-checkpoint";
const PATHS: [&str; 4] = ["--path", "~/.zshrc", "--path", "~/.ssh"];

fn phase(e: &TestEnv, name: &str) -> (i32, Value) {
    let mut a = vec!["auto", name];
    a.extend(PATHS);
    e.json(CKPT, &a)
}

fn config(e: &TestEnv, body: &str) {
    e.write(
        ".config/dotfiles-backup/config.toml",
        body.as_bytes(),
        0o644,
    );
}

fn row<'a>(v: &'a Value, p: &str) -> &'a Value {
    v["completion"]["phases"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["phase"] == p))
        .unwrap_or_else(|| panic!("no phase {p}: {v:#}"))
}

/// A bootstrap where every status occurs once or more.
fn bootstrap() -> (TestEnv, Value) {
    let e = TestEnv::with_dotfiles();
    // No recipients: this secret is skipped with a warning in every run.
    e.write(".ssh/id_ed25519", b"private\n", 0o600);
    e.write(".ssh/config", b"Host *\n", 0o644);

    let (rc, v) = phase(&e, "pre-ansible");
    assert_eq!(rc, 0, "{v:#}");
    assert!(
        v.get("completion").is_none(),
        "only bootstrap-complete reports"
    );
    // Nothing changed during the ansible phase.
    let (rc, _) = phase(&e, "pre-homebrew");
    assert_eq!(rc, 0);
    // pre-dotfiles is never run. pre-applications fails (no space), so it is skipped.
    config(&e, "[space]\nrefuse_below_mb = 1000000000000\nwarn_below_mb = 1000000000000\nstrong_warn_below_mb = 1000000000000\n");
    let (rc, v) = phase(&e, "pre-applications");
    assert_eq!(rc, 5, "refused for space: {v:#}");
    config(&e, "");
    e.write(".zshrc", b"export EDITOR=hx\n", 0o644);
    let (rc, _) = phase(&e, "post-setup");
    assert_eq!(rc, 0);
    e.write(".ssh/config", b"Host *\n  ForwardAgent no\n", 0o644);
    let (rc, v) = phase(&e, "bootstrap-complete");
    assert_eq!(rc, 0, "{v:#}");
    (e, v)
}

#[test]
fn every_phase_is_reported_with_status_sizes_warnings_and_rollback() {
    let (e, v) = bootstrap();
    let phases: Vec<&str> = v["completion"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "pre-ansible",
            "pre-homebrew",
            "pre-dotfiles",
            "pre-applications",
            "post-setup",
            "bootstrap-complete"
        ]
    );
    let status = |p: &str| row(&v, p)["status"].as_str().unwrap().to_string();
    assert_eq!(status("pre-ansible"), "created");
    assert_eq!(status("pre-homebrew"), "unchanged");
    // What the phase after each checkpoint changed (as `backup-list --phases`).
    let changed = |p: &str| row(&v, p)["state_changed"].clone();
    assert_eq!(changed("pre-ansible"), false, "nothing changed in between");
    assert_eq!(
        changed("pre-homebrew"),
        true,
        ".zshrc changed before post-setup"
    );
    assert_eq!(changed("post-setup"), true, ".ssh/config changed");
    assert!(
        changed("bootstrap-complete").is_null(),
        "open: nothing after it"
    );
    assert!(changed("pre-dotfiles").is_null(), "no checkpoint");
    assert!(v["completion"]["run"].is_string());
    assert_eq!(v["completion"]["run"], v["run"]);
    assert!(
        row(&v, "pre-ansible")["pinned"]
            .as_str()
            .is_some_and(|p| p.contains("first bootstrap run")),
        "{v:#}"
    );
    assert_eq!(status("pre-dotfiles"), "missing");
    assert_eq!(status("pre-applications"), "skipped");
    assert_eq!(status("post-setup"), "created");
    assert_eq!(status("bootstrap-complete"), "created");
    assert_eq!(v["completion"]["protected"], 4);

    // The failed phase says why.
    let why = row(&v, "pre-applications")["warnings"][0].as_str().unwrap();
    assert!(why.contains("free"), "{why}");
    assert!(row(&v, "pre-dotfiles")["rollback"].is_null());
    assert!(row(&v, "pre-dotfiles")["snapshot"].is_null());

    // Sizes are the snapshots' own.
    let pre = row(&v, "pre-ansible");
    assert_eq!(pre["files"], 2, "{pre:#}");
    assert!(pre["new_bytes"].as_u64().unwrap() > 0);
    assert_eq!(row(&v, "pre-homebrew")["new_bytes"], 0);
    assert_eq!(
        row(&v, "bootstrap-complete")["snapshot"],
        v["snapshot"]["short_id"]
    );

    // Warnings of the run that took each checkpoint (from the log, and this run's own).
    for p in ["pre-ansible", "bootstrap-complete"] {
        let w = row(&v, p)["warnings"].as_array().unwrap();
        assert!(
            w.iter().any(|m| m.as_str().unwrap().contains("id_ed25519")),
            "{p}: {w:?}"
        );
    }

    // The rollback commands work as printed.
    for p in ["pre-ansible", "post-setup"] {
        let cmd = row(&v, p)["rollback"].as_str().unwrap();
        let mut words = cmd.split(' ');
        assert_eq!(words.next(), Some("backup-rollback"));
        let target = words.next().unwrap();
        let mut a = vec![target, "--dry-run"];
        a.extend(PATHS);
        let (rc, plan) = e.json("backup-rollback", &a);
        assert_eq!(rc, 0, "{cmd}: {plan:#}");
        assert_eq!(plan["source"]["short_id"], target, "{plan:#}");
    }
}

#[test]
fn human_report_is_a_table_with_rollback_commands() {
    let (e, v) = bootstrap();
    // The same bootstrap run again (a repeated phase would begin a new run).
    let run = v["run"].as_str().unwrap();
    let mut a = vec!["auto", "bootstrap-complete", "--run", run];
    a.extend(PATHS);
    let out = e.output(CKPT, &a, &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("bootstrap complete: 4 of 6 phases"), "{text}");
    for p in [
        "pre-ansible",
        "pre-dotfiles",
        "missing",
        "skipped",
        "unchanged",
    ] {
        assert!(text.contains(p), "{p}: {text}");
    }
    let post = row(&v, "post-setup")["rollback"].as_str().unwrap();
    assert!(text.contains(post), "{text}");
}

#[test]
fn run_stats_summarise_the_log() {
    let (e, _) = bootstrap();
    let (rc, v) = e.json("backup-list", &["--stats"]);
    assert_eq!(rc, 0, "{v:#}");
    let st = &v["run_stats"];
    let c = &st["commands"]["backup-checkpoint"];
    assert_eq!(c["runs"], 5, "{st:#}");
    assert_eq!(c["success"], 4);
    assert_eq!(c["failed"], 1);
    assert_eq!(c["success_rate"], 0.8);
    assert!(c["p95_ms"].as_u64().unwrap() >= c["median_ms"].as_u64().unwrap());
    assert_eq!(
        st["failures_by_code"].as_object().unwrap().len(),
        1,
        "{st:#}"
    );
    assert!(st["last_success_per_phase"]["pre-ansible"].is_string());
    assert!(st["last_success_per_phase"]["pre-dotfiles"].is_null());
    assert!(st["last_success_per_phase"]["pre-applications"].is_null());
    assert_eq!(v["stats"]["runs"], st["runs"]);

    let out = e.output("backup-list", &["--stats"], &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("backup-checkpoint") && text.contains("80.0%"),
        "{text}"
    );
    assert!(
        text.contains("pre-dotfiles") && text.contains("never"),
        "{text}"
    );
}

#[test]
fn checkpoint_stats_have_metrics_per_stage() {
    let e = TestEnv::with_dotfiles();
    let (_, v) = phase(&e, "pre-ansible");
    for k in [
        "files_scanned",
        "files_read",
        "files_new",
        "bytes_read",
        "new_bytes",
        "dedup_ratio",
        "scan_ms",
        "read_ms",
        "commit_ms",
    ] {
        assert!(v["stats"].get(k).is_some(), "{k}: {v:#}");
    }
    assert_eq!(v["stats"]["dedup_ratio"], 0.0, "all new: {v:#}");
    // The same content under another name: everything read is deduplicated.
    e.write(".ssh/copy-of-zshrc", b"export EDITOR=nvim\n", 0o644);
    let (_, v) = phase(&e, "pre-homebrew");
    assert_eq!(v["stats"]["files_new"], 0, "{v:#}");
    assert_eq!(v["stats"]["dedup_ratio"], 1.0, "{v:#}");
}
