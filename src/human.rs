//! Human output: compact summaries and tables rendered from the envelope, so
//! people and machines always see the same facts.

use std::fmt::Write;

use serde_json::Value;

use crate::cli::human_bytes;
use crate::config::Settings;
use crate::report::{Envelope, Status};

fn snapshot_line(env: &Envelope) -> String {
    let Some(s) = &env.snapshot else {
        return String::new();
    };
    format!(
        "{} {} {} ({}): {} files, {} dirs, {} symlinks, {}",
        s.short_id,
        s.kind,
        s.label,
        s.created_at.get(..19).unwrap_or(&s.created_at),
        s.files,
        s.dirs,
        s.symlinks,
        human_bytes(s.bytes)
    )
}

/// `backup-checkpoint` / `backup-create`.
pub fn snapshot_taken(env: &Envelope, _s: &Settings) -> String {
    let mut out = String::new();
    if env.status == Status::Skipped {
        let _ = writeln!(
            out,
            "skipped: {}",
            env.skip_reason.as_deref().unwrap_or("?")
        );
        return out;
    }
    let Some(s) = &env.snapshot else {
        return out;
    };
    let verb = if env.dry_run {
        if env.changed {
            "would store"
        } else {
            "nothing new to store for"
        }
    } else if s.reused {
        "unchanged; kept"
    } else if env.changed {
        "stored"
    } else {
        "recorded (content already stored)"
    };
    let _ = writeln!(out, "{verb} {}", snapshot_line(env));
    let new_bytes = env
        .stats
        .get("new_bytes")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let read = env
        .stats
        .get("files_read")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "  new data {}, files read {read}, in {} ms",
        human_bytes(new_bytes),
        env.duration_ms
    );
    if let Some(Value::Array(large)) = env.extra.get("large_files") {
        for f in large {
            let _ = writeln!(
                out,
                "  large file {} {} ({})",
                f["path"].as_str().unwrap_or("?"),
                human_bytes(f["bytes"].as_u64().unwrap_or(0)),
                f["level"].as_str().unwrap_or("?")
            );
        }
    }
    if env.extra.contains_key("roots") {
        if let Some(Value::Array(roots)) = env.extra.get("roots") {
            for r in roots {
                let _ = writeln!(
                    out,
                    "  {:<40} {}",
                    r["root"].as_str().unwrap_or("?"),
                    if r["present"].as_bool() == Some(true) {
                        format!(
                            "{} files, {}",
                            r["files"],
                            human_bytes(r["bytes"].as_u64().unwrap_or(0))
                        )
                    } else {
                        "absent".into()
                    }
                );
            }
        }
        if let Some(Value::Array(ex)) = env.extra.get("excluded") {
            for e in ex.iter().take(20) {
                let _ = writeln!(
                    out,
                    "  excluded {} ({})",
                    e["path"].as_str().unwrap_or("?"),
                    e["reason"].as_str().unwrap_or("?")
                );
            }
            if ex.len() > 20 {
                let _ = writeln!(out, "  ... and {} more excluded", ex.len() - 20);
            }
        }
    }
    out
}

/// `backup-list`.
pub fn list(env: &Envelope, _s: &Settings) -> String {
    let mut out = String::new();
    if let Some(Value::Array(entries)) = env.extra.get("entries") {
        let _ = writeln!(out, "{}", snapshot_line(env));
        for e in entries {
            let _ = writeln!(
                out,
                "{:<7} {} {:>10} {} {}{}",
                e["type"].as_str().unwrap_or("?"),
                e["mode"].as_str().unwrap_or("?"),
                e["size"].as_u64().unwrap_or(0),
                e["sha256"]
                    .as_str()
                    .map(|h| &h[..12])
                    .unwrap_or(if e["omitted"].is_string() {
                        "(omitted)   "
                    } else {
                        "-           "
                    }),
                e["path"].as_str().unwrap_or("?"),
                e["target"]
                    .as_str()
                    .map(|t| format!(" -> {t}"))
                    .unwrap_or_default()
            );
        }
        return out;
    }
    if let Some(Value::Array(snaps)) = env.extra.get("snapshots") {
        if snaps.is_empty() {
            let _ = writeln!(
                out,
                "no snapshots yet in {}",
                env.repository.as_deref().unwrap_or("?")
            );
            return out;
        }
        let g = |k: &str| env.stats.get(k).and_then(Value::as_u64).unwrap_or(0);
        let would_free = match g("prune_would_free") {
            0 => String::new(),
            n => format!("; `backup-prune` would free {}", human_bytes(n)),
        };
        let _ = writeln!(
            out,
            "repository {}: {} snapshot(s), {} on disk{would_free}",
            env.repository.as_deref().unwrap_or("?"),
            snaps.len(),
            human_bytes(g("repository_bytes")),
        );
        let _ = writeln!(
            out,
            "{:<8}  {:<10}  {:<22}  {:>7}  {:>7}  {:>10}  {:>10}",
            "ID", "KIND", "LABEL", "AGE", "FILES", "SIZE", "ADDED"
        );
        for s in snaps {
            let _ = writeln!(
                out,
                "{:<8}  {:<10}  {:<22}  {:>7}  {:>7}  {:>10}  {:>10}",
                s["short_id"].as_str().unwrap_or("?"),
                s["kind"].as_str().unwrap_or("?"),
                s["label"].as_str().unwrap_or("?"),
                crate::time::age(s["created_at"].as_str().unwrap_or("")),
                s["files"].as_u64().unwrap_or(0),
                human_bytes(s["bytes"].as_u64().unwrap_or(0)),
                human_bytes(s["new_bytes"].as_u64().unwrap_or(0)),
            );
        }
    }
    out
}

/// `backup-verify`.
pub fn verify(env: &Envelope, _s: &Settings) -> String {
    let mut out = String::new();
    if let Some(Value::Array(problems)) = env.extra.get("problems") {
        if problems.is_empty() && env.status == Status::Success {
            let _ = writeln!(
                out,
                "repository OK: {} snapshots, {} packs, {} blobs{}",
                env.stats.get("snapshots").unwrap_or(&Value::from(0)),
                env.stats.get("packs").unwrap_or(&Value::from(0)),
                env.stats.get("blobs").unwrap_or(&Value::from(0)),
                if env
                    .stats
                    .get("bytes_read")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    > 0
                {
                    ", every byte re-hashed"
                } else {
                    ""
                }
            );
        }
        for p in problems {
            let _ = writeln!(
                out,
                "PROBLEM {}: {}",
                p["code"].as_str().unwrap_or("?"),
                p["message"].as_str().unwrap_or("?")
            );
            for s in p["snapshots"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "  affects snapshot {}", s.as_str().unwrap_or("?"));
            }
            for f in p["paths"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "  affects {}", f.as_str().unwrap_or("?"));
            }
        }
    }
    out
}

/// `--health-check`.
pub fn health(env: &Envelope, _s: &Settings) -> String {
    let mut out = String::new();
    if let Some(Value::Array(checks)) = env.extra.get("checks") {
        for c in checks {
            let level = c["status"].as_str().unwrap_or("?");
            let mark = match level {
                "green" => "ok  ",
                "yellow" => "WARN",
                _ => "FAIL",
            };
            let _ = writeln!(
                out,
                "{mark} {:<16} {}",
                c["name"].as_str().unwrap_or("?"),
                c["message"].as_str().unwrap_or("")
            );
        }
        let _ = writeln!(
            out,
            "overall: {}",
            env.extra
                .get("health")
                .and_then(Value::as_str)
                .unwrap_or("?")
        );
    }
    out
}

/// `backup-restore` / `backup-rollback`: the plan, then what happened.
pub fn plan(env: &Envelope, _s: &Settings) -> String {
    let mut out = String::new();
    if env.status == Status::Skipped {
        let _ = writeln!(
            out,
            "skipped: {}",
            env.skip_reason.as_deref().unwrap_or("?")
        );
        return out;
    }
    if let Some(src) = env.extra.get("source") {
        let _ = writeln!(
            out,
            "{} {} {} {}",
            if env.dry_run { "plan for" } else { "restoring" },
            src["short_id"].as_str().unwrap_or("?"),
            src["kind"].as_str().unwrap_or("?"),
            src["label"].as_str().unwrap_or("?")
        );
    }
    if let Some(Value::Array(actions)) = env.extra.get("plan").and_then(|p| p.get("actions")) {
        if actions.is_empty() {
            let _ = writeln!(out, "  nothing to do: everything matches");
        }
        for a in actions {
            let _ = writeln!(
                out,
                "  {:<8} {:<7} {}  ({})",
                a["action"].as_str().unwrap_or("?"),
                a["type"].as_str().unwrap_or("?"),
                a["path"].as_str().unwrap_or("?"),
                a["reason"].as_str().unwrap_or("")
            );
        }
    }
    if let Some(s) = &env.snapshot {
        let _ = writeln!(
            out,
            "safety snapshot {} taken first; undo with `backup-rollback --undo`",
            s.short_id
        );
    }
    if !env.dry_run && env.status != Status::Failed {
        let g = |k: &str| env.stats.get(k).and_then(Value::as_u64).unwrap_or(0);
        let _ = writeln!(
            out,
            "created {}, updated {}, deleted {}, re-moded {}, skipped {}, failed {}",
            g("created"),
            g("updated"),
            g("deleted"),
            g("metadata"),
            g("skipped"),
            g("failed")
        );
    }
    out
}

/// `backup-prune`.
pub fn prune(env: &Envelope, _s: &Settings) -> String {
    let mut out = String::new();
    if let Some(Value::Array(ds)) = env.extra.get("decisions") {
        for d in ds {
            let _ = writeln!(
                out,
                "{:<6} {}  {:<10} {:<22} {}",
                if d["keep"].as_bool() == Some(true) {
                    "keep"
                } else {
                    "remove"
                },
                d["short_id"].as_str().unwrap_or("?"),
                d["kind"].as_str().unwrap_or("?"),
                d["label"].as_str().unwrap_or("?"),
                d["reasons"]
                    .as_array()
                    .map(|r| r
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; "))
                    .unwrap_or_default()
            );
        }
    }
    let g = |k: &str| env.stats.get(k).and_then(Value::as_u64).unwrap_or(0);
    let _ = writeln!(
        out,
        "{} {} snapshot(s), {} pack(s) deleted, {} repacked; {} freed",
        if env.dry_run {
            "would remove"
        } else {
            "removed"
        },
        g("snapshots_removed"),
        g("packs_deleted"),
        g("packs_repacked"),
        human_bytes(g("bytes_freed"))
    );
    out
}

/// `backup-create --init-secrets`.
pub fn secrets_initialized(env: &Envelope, _s: &Settings) -> String {
    let mut out = String::new();
    let p = env.extra.get("secrets").cloned().unwrap_or_default();
    let text = |k: &str| p[k].as_str().unwrap_or("?").to_string();
    let verb = |done: bool| match (done, env.dry_run) {
        (true, true) => "would create",
        (true, false) => "created",
        (false, _) => "kept",
    };
    let _ = writeln!(
        out,
        "{} identity   {}",
        verb(p["created_identity"] == true),
        text("identity_file")
    );
    let _ = writeln!(
        out,
        "{} recipient  {} in {}",
        if p["added_recipient"] == true {
            if env.dry_run {
                "would add"
            } else {
                "added"
            }
        } else {
            "has"
        },
        text("recipient"),
        text("recipients_file")
    );
    let _ = writeln!(out, "secret-class files are now stored encrypted to this recipient; restoring them needs the identity file");
    out
}
