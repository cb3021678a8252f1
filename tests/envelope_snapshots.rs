//! Pins the JSON envelope with insta snapshots (ids, times, durations, host,
//! repository paths and free-space numbers redacted), and checks that the
//! schema in `docs/schema/envelope.schema.json` is a valid draft 2020-12
//! schema that really constrains envelopes. Every envelope these tests (and
//! all tests using `common::TestEnv::run`) produce is validated against it.
//!
//! Update after an intended change: `INSTA_UPDATE=always cargo test --test
//! envelope_snapshots`, then review the `.snap` diffs.

mod common;

use common::*;
use insta::dynamic_redaction;
use serde_json::Value;

const PATHS: [&str; 4] = ["--path", "~/.zshrc", "--path", "~/.config"];

fn args<'a>(head: &[&'a str]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    v.extend(PATHS);
    v
}

/// Replace machine-specific parts of messages that insta selectors cannot reach
/// precisely: the temp dir prefix, free-space numbers, ages and short ids.
fn normalize(v: &Value, e: &TestEnv) -> Value {
    let tmp = e.tmp.path().to_string_lossy().into_owned();
    let mut v = v.clone();
    fn walk(v: &mut Value, tmp: &str) {
        match v {
            Value::String(s) if s.contains(tmp) => *s = s.replace(tmp, "[TMP]"),
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, tmp)),
            Value::Object(m) => m.values_mut().for_each(|x| walk(x, tmp)),
            _ => {}
        }
    }
    walk(&mut v, &tmp);
    if let Some(checks) = v.get_mut("checks").and_then(Value::as_array_mut) {
        for c in checks {
            let name = c["name"].as_str().unwrap_or_default().to_string();
            let redacted = match name.as_str() {
                "version" => Some("[version]"),
                "disk_space" => Some("[free space]"),
                "last_checkpoint" => Some("[label, id and age]"),
                n if n.starts_with("phase ") => Some("[id and age]"),
                _ => None,
            };
            if let Some(r) = redacted {
                c["message"] = Value::String(r.into());
            }
            if name == "disk_space" {
                // Green or yellow depends on the machine; red would fail the test anyway.
                c["status"] = Value::String("[level]".into());
            }
        }
        // The overall level follows the disk check on a small machine.
        if v["health"] != "red" {
            v["health"] = Value::String("[green or yellow]".into());
            v["stats"]["green"] = Value::String("[count]".into());
            v["stats"]["yellow"] = Value::String("[count]".into());
        }
    }
    v
}

macro_rules! snap {
    ($name:expr, $value:expr) => {
        insta::assert_json_snapshot!($name, $value, {
            ".version" => "[version]",
            ".duration_ms" => "[duration_ms]",
            ".repository" => "[repository]",
            ".snapshot.id" => "[id]",
            ".snapshot.short_id" => "[short_id]",
            ".snapshot.tree" => "[tree]",
            ".snapshot.parent" => dynamic_redaction(|v, _| if v.as_str().is_some() { "[parent]".into() } else { v }),
            ".snapshot.created_at" => "[created_at]",
            ".snapshot.host" => "[host]",
            ".snapshots[].id" => "[id]",
            ".snapshots[].short_id" => "[short_id]",
            ".snapshots[].tree" => "[tree]",
            ".snapshots[].parent" => dynamic_redaction(|v, _| if v.as_str().is_some() { "[parent]".into() } else { v }),
            ".snapshots[].created_at" => "[created_at]",
            ".snapshots[].host" => "[host]",
            ".stats.repository_bytes" => "[repository_bytes]",
            ".stats.*" => dynamic_redaction(|v, path| {
                if path.to_string().ends_with("_ms") { "[ms]".into() } else { v }
            }),
            ".problems[].snapshots[]" => "[short_id kind label]",
            ".source.id" => "[id]",
            ".source.short_id" => "[short_id]",
            ".source.tree" => "[tree]",
            ".source.created_at" => "[created_at]",
            ".source.host" => "[host]",
            ".resolved.snapshot" => "[short_id]",
            ".resolved.created_at" => "[created_at]",
            ".resolved.run_started_at" => "[run_started_at]",
        })
    };
}

fn fixture() -> TestEnv {
    TestEnv::with_dotfiles()
}

#[test]
fn checkpoint_envelopes() {
    let e = fixture();
    // One bootstrap run, named (an automatic run id holds the time).
    let (rc, cp) = e.json(
        "backup-checkpoint",
        &args(&["auto", "pre-dotfiles", "--run", "run-1"]),
    );
    assert_eq!(rc, 0);
    snap!("checkpoint", normalize(&cp, &e));
    let (rc, again) = e.json(
        "backup-checkpoint",
        &args(&["auto", "pre-dotfiles", "--run", "run-1"]),
    );
    assert_eq!(rc, 0);
    assert_eq!(again["snapshot"]["reused"], true);
    snap!("checkpoint_reused", normalize(&again, &e));
    let (rc, other) = e.json(
        "backup-checkpoint",
        &args(&["manual", "same-content", "--tag", "t1"]),
    );
    assert_eq!(rc, 0);
    snap!("checkpoint_other_label", normalize(&other, &e));
}

#[test]
fn dry_run_envelope() {
    let e = fixture();
    let (rc, v) = e.json("backup-create", &args(&["--dry-run"]));
    assert_eq!(rc, 0);
    snap!("create_dry_run", normalize(&v, &e));
}

#[test]
fn list_envelopes() {
    let e = fixture();
    e.json(
        "backup-checkpoint",
        &args(&["auto", "pre-dotfiles", "--run", "run-1"]),
    );
    e.json("backup-create", &args(&[]));
    let (rc, list) = e.json("backup-list", &[]);
    assert_eq!(rc, 0);
    snap!("list", normalize(&list, &e));
    let (rc, files) = e.json("backup-list", &["pre-dotfiles", "--files"]);
    assert_eq!(rc, 0);
    snap!("list_files", normalize(&files, &e));
}

#[test]
fn rollback_plan_envelope() {
    let e = fixture();
    let (rc, _) = e.json(
        "backup-checkpoint",
        &args(&["auto", "pre-dotfiles", "--run", "run-1"]),
    );
    assert_eq!(rc, 0);
    std::fs::write(e.home.join(".zshrc"), b"broken\n").unwrap();
    let (rc, plan) = e.json("backup-rollback", &["pre-dotfiles", "--dry-run"]);
    assert_eq!(rc, 0, "{plan:#}");
    snap!("rollback_plan", normalize(&plan, &e));
}

#[test]
fn verify_envelopes() {
    let e = fixture();
    e.json("backup-checkpoint", &args(&["auto", "pre-dotfiles"]));
    let (rc, ok) = e.json("backup-verify", &["--read-data"]);
    assert_eq!(rc, 0);
    snap!("verify", normalize(&ok, &e));
    let packs = names_in(&e.repo, "packs");
    std::fs::remove_file(&packs[0]).unwrap();
    let (rc, bad) = e.json("backup-verify", &[]);
    assert_eq!(rc, 6);
    snap!("verify_missing_pack", normalize(&bad, &e));
}

#[test]
fn health_check_envelope() {
    let e = fixture();
    e.json("backup-checkpoint", &args(&["auto", "pre-ansible"]));
    let (rc, v) = e.json("backup-checkpoint", &args(&["--health-check"]));
    assert_eq!(rc, 0, "{v:#}");
    snap!("health_check", normalize(&v, &e));
}

#[test]
fn print_config_envelope() {
    let e = fixture();
    let cfg = e.write(
        ".config/dotfiles-backup/config.toml",
        b"[retention]\nkeep_last = 9\n[space]\nlarge_file_warn_mb = 20\n",
        0o644,
    );
    let (rc, v, _) = e.run(
        "backup-create",
        &["--print-config", "--wait", "2", "--exclude", "*.log"],
        &[("BACKUP_RETRIES", "5")],
    );
    assert_eq!(rc, 0, "{v:#}");
    assert!(
        !e.repo.exists(),
        "--print-config reads nothing and writes nothing"
    );
    let items = v["config"].as_array().unwrap();
    let get = |k: &str| items.iter().find(|i| i["key"] == k).unwrap();
    let file_src =
        format!("config {}", cfg.display()).replace(&e.home.to_string_lossy().into_owned(), "~");
    assert_eq!(get("retention.keep_last")["value"], 9);
    assert_eq!(get("retention.keep_last")["source"], file_src.as_str());
    assert_eq!(get("space.large_file_warn_mb")["value"], 20);
    assert_eq!(get("retention.keep_daily")["source"], "default");
    assert_eq!(get("retry.attempts")["source"], "env BACKUP_RETRIES");
    assert_eq!(get("repository.lock_wait_secs")["source"], "flag --wait");
    assert_eq!(get("track.extra_exclude")["source"], "flag --exclude");
    assert_eq!(get("repository.path")["source"], "env BACKUP_REPO");
    snap!("print_config", normalize(&v, &e));

    // Human: one line per key with its source; also when backups are disabled.
    let out = e.output(
        "backup-create",
        &["--print-config"],
        &[("BACKUP_DISABLED", "1")],
    );
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[retention]\nauto = true  # default\n"),
        "{text}"
    );
    assert!(
        text.contains("keep_last = 9  # config ~/.config/dotfiles-backup/config.toml"),
        "{text}"
    );
    assert!(
        text.contains("disabled = true  # env BACKUP_DISABLED"),
        "{text}"
    );
}

#[test]
fn error_envelopes() {
    let e = fixture();
    let (rc, usage) = e.json("backup-list", &["--no-such-flag"]);
    assert_eq!(rc, 2);
    snap!("usage_error", normalize(&usage, &e));
    let (rc, phase) = e.json("backup-checkpoint", &["auto", "pre-bogus"]);
    assert_eq!(rc, 2);
    snap!("unknown_phase", normalize(&phase, &e));
    let (rc, skipped, _) = e.run(
        "backup-checkpoint",
        &args(&["auto", "pre-ansible"]),
        &[("BACKUP_DISABLED", "true")],
    );
    assert_eq!(rc, 0);
    snap!("disabled", normalize(&skipped, &e));
}

// ---------------------------------------------------------------- the schema itself

fn schema_value() -> Value {
    serde_json::from_str(&std::fs::read_to_string(schema_path()).unwrap()).unwrap()
}

#[test]
fn schema_is_a_valid_draft_2020_12_schema() {
    let s = schema_value();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    if let Err(e) = jsonschema::meta::validate(&s) {
        panic!("schema is not valid against its meta-schema: {e}");
    }
    // Every payload key the engine can emit is described.
    for key in [
        "snapshots",
        "entries",
        "checks",
        "health",
        "problems",
        "excluded",
        "roots",
        "plan",
        "large_files",
        "source",
        "can_retry",
        "decisions",
        "config",
        "config_file",
    ] {
        assert!(
            s["properties"].get(key).is_some(),
            "payload {key} missing from the schema"
        );
    }
}

#[test]
fn schema_rejects_malformed_envelopes() {
    let e = fixture();
    let (_, good) = e.json("backup-checkpoint", &args(&["auto", "pre-dotfiles"]));
    assert!(schema_errors(&good).is_empty());
    type Mutation = (&'static str, fn(&mut Value));
    let mutations: [Mutation; 10] = [
        ("missing status", |v| {
            v.as_object_mut().unwrap().remove("status");
        }),
        ("unknown status", |v| v["status"] = "ok".into()),
        ("changed as string", |v| v["changed"] = "false".into()),
        ("undocumented exit code", |v| v["exit_code"] = 9.into()),
        ("schema_version 2", |v| v["schema_version"] = 2.into()),
        ("unknown top-level key", |v| v["surprise"] = true.into()),
        ("short snapshot id", |v| v["snapshot"]["id"] = "abc".into()),
        (
            "error without retryable",
            |v| {
                v["errors"] =
                    serde_json::json!([{"code": "x", "path": null, "message": "m", "hint": null}])
            },
        ),
        ("warning without code", |v| {
            v["warnings"] = serde_json::json!([{"message": "m", "path": null}])
        }),
        ("entry with bad mode", |v| {
            v["entries"] = serde_json::json!([{
                "path": "~/x", "path_b64": null, "type": "file", "mode": "644",
                "size": 1, "sha256": null, "target": null, "omitted": null, "mtime_ns": 0
            }])
        }),
    ];
    for (what, f) in mutations {
        let mut bad = good.clone();
        f(&mut bad);
        assert!(
            !schema_errors(&bad).is_empty(),
            "schema accepted an envelope with {what}"
        );
    }
}

/// `backup-create --schedule daily` where no `systemctl` can be run: the
/// files are written, `activated: false`, and the warning names the commands.
#[test]
fn schedule_envelope() {
    let e = fixture();
    let path = [("PATH", "/nonexistent")];
    let (rc, v, _) = e.run("backup-create", &args(&["--schedule", "daily"]), &path);
    assert_eq!(rc, 0, "{v:#}");
    snap!("schedule_daily", normalize(&v, &e));
    let (rc, v, _) = e.run("backup-create", &args(&["--schedule", "off"]), &path);
    assert_eq!(rc, 0, "{v:#}");
    snap!("schedule_off", normalize(&v, &e));
}
