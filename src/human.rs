//! Human output: compact summaries and tables rendered from the envelope, so
//! people and machines always see the same facts.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use crate::config::Settings;
use crate::report::{Envelope, Status};
use crate::units::human_bytes;

/// `--color`: when human output may use ANSI colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set (non-empty) or `TERM=dumb`.
    #[default]
    Auto,
    /// Always (an explicit flag outranks `NO_COLOR`, as no-color.org asks).
    Always,
    /// Never.
    Never,
}

/// Whether to colour a stream that is (or is not) a terminal.
pub fn color_wanted(choice: ColorChoice, is_terminal: bool) -> bool {
    match choice {
        ColorChoice::Never => false,
        ColorChoice::Always => true,
        ColorChoice::Auto => {
            is_terminal
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
        }
    }
}

/// Set once by the run wrapper before rendering; off by default (tests, pipes).
static COLOR: AtomicBool = AtomicBool::new(false);

/// Turn colour in the renderers below on or off.
pub fn set_color(on: bool) {
    COLOR.store(on, Ordering::Relaxed);
}

/// A colour or emphasis.
#[derive(Debug, Clone, Copy)]
pub enum Style {
    /// Failures, removals.
    Red,
    /// Success, additions.
    Green,
    /// Warnings, changes.
    Yellow,
    /// Emphasis.
    Bold,
}

/// `text` in `style` when `on`.
pub fn paint_if(on: bool, text: &str, style: Style) -> String {
    if !on {
        return text.to_string();
    }
    let code = match style {
        Style::Red => "31",
        Style::Green => "32",
        Style::Yellow => "33",
        Style::Bold => "1",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// `text` in `style` when colour is on for stdout.
fn paint(text: &str, style: Style) -> String {
    paint_if(COLOR.load(Ordering::Relaxed), text, style)
}

/// `backup-list --diff`: one line per path (`+` added, `-` removed, `~`
/// changed with what changed and the size change), then the totals.
fn diff(env: &Envelope, items: &[Value]) -> String {
    let mut out = String::new();
    let name = |v: &Value| {
        format!(
            "{} {}",
            v["short_id"].as_str().unwrap_or("?"),
            v["label"].as_str().unwrap_or("?")
        )
    };
    let from = env.extra.get("from").map(name).unwrap_or_default();
    let to = match env.extra.get("to") {
        Some(v) if !v.is_null() => name(v),
        _ => "the live home".to_string(),
    };
    let _ = writeln!(out, "changes from {from} to {to}:");
    if items.is_empty() {
        let _ = writeln!(out, "  no differences");
    }
    for it in items {
        let size = it["size"].as_u64().unwrap_or(0);
        let sized = |size| match it["type"].as_str() {
            Some("dir") => "dir".to_string(),
            Some("symlink") => "symlink".to_string(),
            _ => human_bytes(size),
        };
        let (mark, detail) = match it["change"].as_str().unwrap_or("?") {
            "added" => ("+", sized(size)),
            "removed" => ("-", sized(size)),
            _ => {
                let what: Vec<&str> = it["changes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let mut d = what.join(",");
                if let Some(t) = it["old_type"].as_str() {
                    d = format!("{d} {t} -> {}", it["type"].as_str().unwrap_or("?"));
                }
                if let Some(m) = it["old_mode"].as_str() {
                    d = format!("{d} {m} -> {}", it["mode"].as_str().unwrap_or("?"));
                }
                let old = it["old_size"].as_u64().unwrap_or(size);
                if what.contains(&"content") && old != size {
                    d = format!("{d} {} -> {}", human_bytes(old), human_bytes(size));
                } else if it["type"] == "file" {
                    d = format!("{d} {}", human_bytes(size));
                }
                ("~", d)
            }
        };
        let kind = match it["type"].as_str() {
            Some("dir") => "/",
            Some("symlink") => "@",
            _ => "",
        };
        let style = match mark {
            "+" => Style::Green,
            "-" => Style::Red,
            _ => Style::Yellow,
        };
        let _ = writeln!(
            out,
            "{} {}{kind}  ({detail})",
            paint(mark, style),
            esc(it["path"].as_str().unwrap_or("?"))
        );
    }
    let g = |k: &str| env.stats.get(k).and_then(Value::as_u64).unwrap_or(0);
    let _ = writeln!(
        out,
        "{} added ({}), {} removed ({}), {} changed",
        g("added"),
        human_bytes(g("added_bytes")),
        g("removed"),
        human_bytes(g("removed_bytes")),
        g("changed")
    );
    out.push_str(&package_diff(env));
    out
}

/// The package-list part of `--diff`: per manager, what was installed,
/// removed or changed version between the two.
fn package_diff(env: &Envelope) -> String {
    let mut out = String::new();
    let Some(Value::Array(managers)) = env.extra.get("package_diff") else {
        return out;
    };
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    for m in managers {
        let name = m["name"].as_str().unwrap_or("?");
        match m["status"].as_str() {
            Some("only_in_from") => {
                let _ = writeln!(out, "packages {name}: listed only in the first snapshot");
                continue;
            }
            Some("only_in_to") => {
                let _ = writeln!(out, "packages {name}: listed only in the second");
                continue;
            }
            Some(s @ ("unknown_in_from" | "unknown_in_to")) => {
                let which = if s == "unknown_in_from" {
                    "first"
                } else {
                    "second"
                };
                let _ = writeln!(
                    out,
                    "packages {name}: unknown in the {which} snapshot (its capture failed or timed out)"
                );
                continue;
            }
            _ => {}
        }
        let (added, removed) = (names(&m["added"]), names(&m["removed"]));
        let changed = m["changed"].as_array().cloned().unwrap_or_default();
        let _ = writeln!(
            out,
            "packages {name}: {} installed, {} removed, {} changed version",
            added.len(),
            removed.len(),
            changed.len()
        );
        for a in &added {
            let _ = writeln!(out, "  {} {a}", paint("+", Style::Green));
        }
        for r in &removed {
            let _ = writeln!(out, "  {} {r}", paint("-", Style::Red));
        }
        for c in &changed {
            let _ = writeln!(
                out,
                "  {} {} {} -> {}",
                paint("~", Style::Yellow),
                c["name"].as_str().unwrap_or("?"),
                c["from"].as_str().unwrap_or("?"),
                c["to"].as_str().unwrap_or("?")
            );
        }
    }
    out
}

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
    out.push_str(&packages_line(env));
    if let Some(Value::Array(large)) = env.extra.get("large_files") {
        for f in large {
            let _ = writeln!(
                out,
                "  large file {} {} ({})",
                esc(f["path"].as_str().unwrap_or("?")),
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
        out.push_str(&largest(env));
        if let Some(Value::Array(ex)) = env.extra.get("excluded") {
            for e in ex.iter().take(20) {
                let _ = writeln!(
                    out,
                    "  excluded {} ({})",
                    esc(e["path"].as_str().unwrap_or("?")),
                    esc(e["reason"].as_str().unwrap_or("?"))
                );
            }
            if ex.len() > 20 {
                let _ = writeln!(out, "  ... and {} more excluded", ex.len() - 20);
            }
        }
    }
    out.push_str(&completion(env));
    out
}

/// `--sizes`: the largest directories and files, and suggested excludes.
fn largest(env: &Envelope) -> String {
    let mut out = String::new();
    let Some(l) = env.extra.get("largest") else {
        return out;
    };
    for (key, title) in [("dirs", "largest directories"), ("files", "largest files")] {
        let items = l[key].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  {title}:");
        for d in items {
            let _ = writeln!(
                out,
                "    {:>10}  {}",
                human_bytes(d["bytes"].as_u64().unwrap_or(0)),
                esc(d["path"].as_str().unwrap_or("?"))
            );
        }
    }
    let suggestions = l["suggestions"].as_array().cloned().unwrap_or_default();
    if !suggestions.is_empty() {
        let _ = writeln!(
            out,
            "  suggested excludes (add to [track] extra_exclude, or pass --exclude PATTERN):"
        );
        for s in suggestions {
            let _ = writeln!(
                out,
                "    {:<16} {} in {} dir(s), e.g. {}: {}",
                esc(s["pattern"].as_str().unwrap_or("?")),
                human_bytes(s["bytes"].as_u64().unwrap_or(0)),
                s["dirs"],
                esc(s["example"].as_str().unwrap_or("?")),
                esc(s["why"].as_str().unwrap_or(""))
            );
        }
    }
    out
}

/// `backup-list`.
pub fn list(env: &Envelope, _s: &Settings) -> String {
    let mut out = String::new();
    if let Some(Value::Array(items)) = env.extra.get("diff") {
        return diff(env, items);
    }
    if let Some(Value::Array(runs)) = env.extra.get("runs") {
        return phases(runs);
    }
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
                esc(e["path"].as_str().unwrap_or("?")),
                e["target"]
                    .as_str()
                    .map(|t| format!(" -> {}", esc(t)))
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

/// `backup-list --phases`: one block per run, newest first.
fn phases(runs: &[Value]) -> String {
    let mut out = String::new();
    if runs.is_empty() {
        let _ = writeln!(
            out,
            "no bootstrap runs yet (no `backup-checkpoint auto PHASE` so far)"
        );
        return out;
    }
    for r in runs {
        let _ = writeln!(
            out,
            "run {} (started {}){}",
            r["run"].as_str().unwrap_or("?"),
            r["started_at"].as_str().unwrap_or("?"),
            if r["first"] == true {
                ", first run"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "  {:<18}  {:<8}  {:<28}  PINNED",
            "PHASE", "ID", "WHAT THE PHASE CHANGED"
        );
        for p in r["phases"].as_array().into_iter().flatten() {
            let g = |k: &str| p[k].as_u64().unwrap_or(0);
            let effect = match p["state_changed"].as_bool() {
                None => "open (nothing after it yet)".to_string(),
                Some(false) => "nothing".to_string(),
                Some(true) => format!(
                    "+{} -{} ~{} ({})",
                    g("added"),
                    g("removed"),
                    g("changed"),
                    human_bytes(g("bytes"))
                ),
            };
            let _ = writeln!(
                out,
                "  {:<18}  {:<8}  {:<28}  {}",
                p["phase"].as_str().unwrap_or("?"),
                p["snapshot"].as_str().unwrap_or("?"),
                effect,
                p["pinned"].as_str().unwrap_or("-")
            );
        }
    }
    let _ = writeln!(
        out,
        "`backup-rollback PHASE` picks the newest run in which the phase changed something; PHASE@first, PHASE@RUN and PHASE~N pick others"
    );
    out
}

/// `backup-verify`.
pub fn verify(env: &Envelope, _s: &Settings) -> String {
    let mut out = String::new();
    if let Some(r) = env.extra.get("repair") {
        for f in r["fetched"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "fetched from the external copy: {}",
                f.as_str().unwrap_or("?")
            );
        }
        for f in r["fetch_failed"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "{} {}: {}",
                paint("NOT FETCHED", Style::Red),
                f["object"].as_str().unwrap_or("?"),
                f["message"].as_str().unwrap_or("?")
            );
        }
        let _ = writeln!(
            out,
            "index rebuilt from {} pack(s): {} blobs; {} old index file(s) removed",
            r["packs_indexed"], r["blobs_indexed"], r["index_files_removed"]
        );
        for p in r["unreadable_packs"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  pack with a damaged trailer left out: {}",
                p.as_str().unwrap_or("?")
            );
        }
        for q in r["quarantined"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "{} {} -> {} ({})",
                paint("QUARANTINED", Style::Red),
                q["record"].as_str().unwrap_or("?"),
                q["moved_to"].as_str().unwrap_or("?"),
                q["reason"].as_str().unwrap_or("?")
            );
        }
        for l in r["lost"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "{} snapshot {}:",
                paint("LOST", Style::Red),
                l["snapshot"].as_str().unwrap_or("?")
            );
            for p in l["paths"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "  {}", p.as_str().unwrap_or("?"));
            }
        }
    }
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
                "{} {}: {}",
                paint("PROBLEM", Style::Red),
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
                // The level's own word, so the table reads the same without colour.
                "green" => paint("green ", Style::Green),
                "yellow" => paint("yellow", Style::Yellow),
                _ => paint("red   ", Style::Red),
            };
            let _ = writeln!(
                out,
                "{mark} {:<22} {}",
                c["name"].as_str().unwrap_or("?"),
                c["message"].as_str().unwrap_or("")
            );
        }
        let g = |k: &str| env.stats.get(k).and_then(Value::as_u64).unwrap_or(0);
        let _ = writeln!(
            out,
            "overall: {} ({} green, {} yellow, {} red)",
            env.extra
                .get("health")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            g("green"),
            g("yellow"),
            g("red")
        );
    }
    out
}

/// `backup-restore` / `backup-rollback`: the plan, then what happened.
pub fn plan(env: &Envelope, settings: &Settings) -> String {
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
    out.push_str(&resolved(env));
    if let Some(Value::Array(actions)) = env.extra.get("plan").and_then(|p| p.get("actions")) {
        if actions.is_empty() {
            let _ = writeln!(out, "  nothing to do: everything matches");
        }
        for a in actions {
            let action = a["action"].as_str().unwrap_or("?");
            let style = match action {
                "delete" | "conflict" => Style::Red,
                "create" => Style::Green,
                "skip" => Style::Bold,
                _ => Style::Yellow,
            };
            let _ = writeln!(
                out,
                "  {} {:<7} {}  ({})",
                paint(&format!("{action:<8}"), style),
                a["type"].as_str().unwrap_or("?"),
                esc(a["path"].as_str().unwrap_or("?")),
                esc(a["reason"].as_str().unwrap_or(""))
            );
        }
    }
    out.push_str(&package_plan(env));
    if let Some(s) = &env.snapshot {
        let _ = writeln!(
            out,
            "safety snapshot {} taken first; undo with `{}`",
            s.short_id,
            esc(&undo_command(settings))
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

/// One argument as a POSIX shell would need it to be typed (shown only;
/// commands are never run through a shell).
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// The package plan of a rollback (`package_plan`), and what ran of it (`package_apply`).
fn package_plan(env: &Envelope) -> String {
    let mut out = String::new();
    let Some(plan) = env.extra.get("package_plan") else {
        return out;
    };
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let managers = list(&plan["managers"]);
    if managers.is_empty() {
        let _ = writeln!(
            out,
            "packages: nothing to reverse (every list matches the checkpoint)"
        );
    }
    for m in &managers {
        let name = m["name"].as_str().unwrap_or("?");
        if m["status"] == "unknown" {
            let _ = writeln!(
                out,
                "packages {name}: {} {}",
                paint("unknown:", Style::Red),
                esc(m["reason"].as_str().unwrap_or("?"))
            );
            continue;
        }
        let (inst, rem, up) = (
            list(&m["installed"]),
            list(&m["removed"]),
            list(&m["upgraded"]),
        );
        let _ = writeln!(
            out,
            "packages {name}: {} installed, {} removed, {} upgraded since the checkpoint",
            inst.len(),
            rem.len(),
            up.len()
        );
        let pkg = |p: &Value| {
            let (n, v) = (
                p["name"].as_str().unwrap_or("?"),
                p["version"].as_str().unwrap_or(""),
            );
            esc(&if v.is_empty() {
                n.to_string()
            } else {
                format!("{n} {v}")
            })
            .into_owned()
        };
        for p in &inst {
            let _ = writeln!(out, "  {} {}", paint("+", Style::Green), pkg(p));
        }
        for p in &rem {
            let _ = writeln!(out, "  {} {}", paint("-", Style::Red), pkg(p));
        }
        for c in &up {
            let _ = writeln!(
                out,
                "  {} {} {} -> {}",
                paint("~", Style::Yellow),
                esc(c["name"].as_str().unwrap_or("?")),
                esc(c["from"].as_str().unwrap_or("")),
                esc(c["to"].as_str().unwrap_or(""))
            );
        }
        for c in list(&m["commands"]) {
            let words: Vec<String> = list(&c)
                .iter()
                .map(|w| shell_quote(w.as_str().unwrap_or("")))
                .collect();
            let _ = writeln!(out, "  reverse: {}", esc(&words.join(" ")));
        }
        for n in list(&m["not_reversible"]) {
            let _ = writeln!(out, "  not reversible: {}", esc(n.as_str().unwrap_or("?")));
        }
    }
    if let Some(Value::Array(ran)) = env.extra.get("package_apply").and_then(|a| a.get("ran")) {
        for r in ran {
            let words: Vec<String> = list(&r["command"])
                .iter()
                .map(|w| shell_quote(w.as_str().unwrap_or("")))
                .collect();
            let _ = writeln!(
                out,
                "  ran ({}): {}",
                r["status"].as_str().unwrap_or("?"),
                esc(&words.join(" "))
            );
        }
    }
    out
}

/// How a phase name was resolved, and what a one-phase undo leaves alone.
fn resolved(env: &Envelope) -> String {
    let mut out = String::new();
    if let Some(r) = env.extra.get("resolved") {
        let _ = writeln!(
            out,
            "  {}: {} (run started {})",
            r["selector"].as_str().unwrap_or("?"),
            r["why"].as_str().unwrap_or("?"),
            r["run_started_at"].as_str().unwrap_or("?")
        );
        for p in r["passed_over"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "    passed over run {} ({}): {}",
                p["run"].as_str().unwrap_or("?"),
                p["snapshot"].as_str().unwrap_or("?"),
                p["reason"].as_str().unwrap_or("?")
            );
        }
    }
    if let Some(u) = env.extra.get("phase_undo") {
        let _ = writeln!(
            out,
            "  undoing only what changed from {} to {}:",
            u["from"].as_str().unwrap_or("?"),
            u["to"].as_str().unwrap_or("?")
        );
        for p in u["paths"].as_array().into_iter().flatten() {
            let action = p["action"].as_str().unwrap_or("?");
            let style = if action == "revert" {
                Style::Green
            } else {
                Style::Red
            };
            let _ = writeln!(
                out,
                "    {} {} ({}{})",
                paint(&format!("{action:<9}"), style),
                p["path"].as_str().unwrap_or("?"),
                p["change"].as_str().unwrap_or("?"),
                p["reason"]
                    .as_str()
                    .map(|r| format!("; {r}"))
                    .unwrap_or_default()
            );
        }
    }
    out
}

/// The `--undo` command for this rollback: with the repository and config
/// it used when they came from flags or a non-default config file, so the
/// undo finds them whatever the shell's defaults are later.
fn undo_command(s: &Settings) -> String {
    let mut cmd = String::from("backup-rollback --undo");
    if s.sources.get("repository.path").map(String::as_str) == Some("flag --repo") {
        let _ = write!(cmd, " --repo {}", quote(&s.repo.to_string_lossy()));
    }
    let default_config = s
        .home
        .as_ref()
        .map(|h| h.join(".config/dotfiles-backup/config.toml"));
    if let Some(c) = s
        .config_file
        .as_ref()
        .filter(|c| Some(*c) != default_config.as_ref())
    {
        let _ = write!(cmd, " --config {}", quote(&c.to_string_lossy()));
    }
    cmd
}

/// Single-quote `s` for a POSIX shell when it needs it.
fn quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-~+=:,@".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A name or message as shown to people: control characters (a newline, an
/// escape sequence that would rewrite the terminal line) become `\n`,
/// `\t`, `\r`, `\x1b`, `\u{9b}`. JSON output keeps them as they are.
pub fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
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

/// Package-list captures of a checkpoint, one line.
fn packages_line(env: &Envelope) -> String {
    let Some(Value::Array(outcomes)) = env.extra.get("packages") else {
        return String::new();
    };
    let parts: Vec<String> = outcomes
        .iter()
        .filter(|o| o["status"] != "missing")
        .map(|o| {
            let name = o["name"].as_str().unwrap_or("?");
            match o["status"].as_str() {
                Some("captured") if o["cached"] == true => {
                    format!(
                        "{name} ({}, unchanged)",
                        o["packages"].as_u64().unwrap_or(0)
                    )
                }
                Some("captured") => format!("{name} ({})", o["packages"].as_u64().unwrap_or(0)),
                Some(other) => format!("{name} {other}"),
                None => name.to_string(),
            }
        })
        .collect();
    if parts.is_empty() {
        "  package lists: no package manager found\n".into()
    } else {
        format!("  package lists: {}\n", parts.join(", "))
    }
}

/// The bootstrap completion report (`backup-checkpoint auto bootstrap-complete`).
pub fn completion(env: &Envelope) -> String {
    let mut out = String::new();
    let Some(report) = env.extra.get("completion") else {
        return out;
    };
    let phases = report["phases"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "\nbootstrap complete: {} of {} phases have a checkpoint, {} added to the repository",
        report["protected"].as_u64().unwrap_or(0),
        phases.len(),
        human_bytes(report["new_bytes"].as_u64().unwrap_or(0))
    );
    let _ = writeln!(
        out,
        "{:<18}  {:<9}  {:<8}  {:<13}  {:>6}  {:>10}  {:>10}  ROLL BACK WITH",
        "PHASE", "STATUS", "ID", "PHASE CHANGED", "FILES", "SIZE", "ADDED"
    );
    for p in &phases {
        let has = p["snapshot"].is_string();
        // The same words as `backup-list --phases`.
        let effect = match (has, p["state_changed"].as_bool()) {
            (false, _) => "-",
            (true, None) => "open",
            (true, Some(false)) => "nothing",
            (true, Some(true)) => "yes",
        };
        let _ = writeln!(
            out,
            "{:<18}  {:<9}  {:<8}  {:<13}  {:>6}  {:>10}  {:>10}  {}",
            p["phase"].as_str().unwrap_or("?"),
            p["status"].as_str().unwrap_or("?"),
            p["snapshot"].as_str().unwrap_or("-"),
            effect,
            if has {
                p["files"].to_string()
            } else {
                "-".into()
            },
            if has {
                human_bytes(p["bytes"].as_u64().unwrap_or(0))
            } else {
                "-".into()
            },
            if has {
                human_bytes(p["new_bytes"].as_u64().unwrap_or(0))
            } else {
                "-".into()
            },
            p["rollback"].as_str().unwrap_or("-")
        );
        for w in p["warnings"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "    warning: {}", w.as_str().unwrap_or("?"));
        }
    }
    let _ = writeln!(
        out,
        "preview a rollback with `backup-rollback ID --dry-run`; undo one with `backup-rollback --undo`"
    );
    if let Some(run) = report["run"].as_str() {
        let _ = writeln!(
            out,
            "bootstrap run {run}; every run: `backup-list --phases`"
        );
    }
    out
}

/// `backup-list --stats`: the run-log summary.
pub fn run_stats(env: &Envelope, _s: &Settings) -> String {
    let mut out = String::new();
    let Some(st) = env.extra.get("run_stats") else {
        return out;
    };
    let _ = writeln!(
        out,
        "{} run(s) in the log{}",
        st["runs"].as_u64().unwrap_or(0),
        st["since"]
            .as_str()
            .map(|s| format!(" since {}", s.get(..19).unwrap_or(s)))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "{:<18}  {:>5}  {:>7}  {:>7}  {:>6}  {:>8}  {:>10}  {:>10}",
        "COMMAND", "RUNS", "SUCCESS", "PARTIAL", "FAILED", "RATE", "MEDIAN", "P95"
    );
    for (name, c) in st["commands"].as_object().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<18}  {:>5}  {:>7}  {:>7}  {:>6}  {:>7.1}%  {:>7} ms  {:>7} ms",
            name,
            // As numbers: a JSON value's Display ignores the column width.
            c["runs"].as_u64().unwrap_or(0),
            c["success"].as_u64().unwrap_or(0),
            c["partial"].as_u64().unwrap_or(0),
            c["failed"].as_u64().unwrap_or(0),
            c["success_rate"].as_f64().unwrap_or(0.0) * 100.0,
            c["median_ms"].as_u64().unwrap_or(0),
            c["p95_ms"].as_u64().unwrap_or(0)
        );
    }
    if let Some(codes) = st["failures_by_code"].as_object().filter(|m| !m.is_empty()) {
        let _ = writeln!(out, "failures by code:");
        for (code, n) in codes {
            let _ = writeln!(out, "  {code:<24} {n}");
        }
    }
    let _ = writeln!(out, "last successful checkpoint per phase:");
    // In bootstrap order, not the alphabetical order of the JSON object.
    let per_phase = &st["last_success_per_phase"];
    for phase in crate::repo::snapshot::PHASES {
        let Some(at) = per_phase.get(phase) else {
            continue;
        };
        let _ = writeln!(
            out,
            "  {phase:<18} {}",
            match at.as_str() {
                Some(t) => format!("{} ago", crate::time::age(t)),
                None => "never".into(),
            }
        );
    }
    out
}

/// `backup-create --schedule`.
pub fn schedule(env: &Envelope, _s: &Settings) -> String {
    let mut out = String::new();
    let p = env.extra.get("schedule").cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "schedule {} ({})",
        p["interval"].as_str().unwrap_or("?"),
        p["scheduler"].as_str().unwrap_or("?")
    );
    for f in p["files"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<9} {}",
            f["action"].as_str().unwrap_or("?"),
            f["path"].as_str().unwrap_or("?")
        );
        if let Some(copy) = f["edited_copy"].as_str() {
            let _ = writeln!(out, "  kept your edited version as {copy}");
        }
    }
    if p["activated"] == true {
        for c in p["commands"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  ran: {}", c.as_str().unwrap_or("?"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(super::esc("~/.zshrc"), "~/.zshrc");
        assert_eq!(super::esc("café ✓"), "café ✓");
        assert_eq!(
            super::esc("a\nb\tc\rd\x1b[2Ke\u{9b}f\u{7f}"),
            "a\\nb\\tc\\rd\\x1b[2Ke\\u{9b}f\\x7f"
        );
    }
}
