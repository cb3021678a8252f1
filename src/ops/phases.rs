//! Bootstrap runs, and what a phase name means when a bootstrap runs again.
//!
//! Every phase checkpoint belongs to a **run** (the record's `run` field):
//! the Ansible role passes one id per play (`BACKUP_RUN_ID`), `--run ID`
//! sets it by hand, and otherwise [`choose_run`] decides: a new run begins at
//! `pre-ansible`, when the phase already has a checkpoint in the current run,
//! or when it comes earlier in bootstrap order than the current run's last
//! phase (a bootstrap that starts over). Records written before runs existed
//! are grouped by the same rule ([`runs`]), so old repositories read the same.
//!
//! A run's phases pair up like Snapper's pre/post snapshots: the effect of
//! the phase after checkpoint X is the difference between X and the **next
//! checkpoint of the same run**. The run's last checkpoint compares with the
//! next phase checkpoint taken after it (the next run's first); when there is
//! none it is **open**: the phase may still be running or was cut off, so
//! its effect is unknown and it counts as a change.
//!
//! [`resolve`] turns `pre-dotfiles`, `pre-dotfiles@first`,
//! `pre-dotfiles@RUN` and `pre-dotfiles~N` into one checkpoint, saying which
//! run was chosen and why newer ones were passed over. `docs/cli.md`
//! ("Phases and runs") is the user-facing account.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::repo::snapshot::{invalid_name, Snapshot, SnapshotKind, PHASES};

/// Where a run id given in the environment comes from (the role sets it once per play).
pub const RUN_ENV: &str = "BACKUP_RUN_ID";

/// One phase of a run: its checkpoint and the checkpoint its effect is measured against.
#[derive(Debug, Clone)]
pub struct RunPhase<'a> {
    /// Phase label (`pre-dotfiles`).
    pub phase: &'a str,
    /// The run's first checkpoint with this label.
    pub snapshot: &'a Snapshot,
    /// The next checkpoint (same run, or the next run's first); `None`: open.
    pub next: Option<&'a Snapshot>,
}

impl RunPhase<'_> {
    /// Whether the phase changed the tracked state; `None` while open.
    pub fn changed(&self) -> Option<bool> {
        self.next
            .map(|n| n.record.tree != self.snapshot.record.tree)
    }
}

/// One bootstrap run, its phases in the order they were taken.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    /// Run id (from the records; `legacy-<short id>` for records without one).
    pub id: String,
    /// Phases in order; a phase repeated within the run (an explicit id
    /// reused) is listed once, with its first checkpoint.
    pub phases: Vec<RunPhase<'a>>,
    /// Every checkpoint of the run, oldest first.
    pub checkpoints: Vec<&'a Snapshot>,
}

impl<'a> Run<'a> {
    /// When the run's first checkpoint was taken.
    pub fn started_at(&self) -> &str {
        &self.checkpoints[0].record.created_at
    }

    /// The run's checkpoint for `phase`.
    pub fn phase(&self, phase: &str) -> Option<&RunPhase<'a>> {
        self.phases.iter().find(|p| p.phase == phase)
    }
}

/// Is this a bootstrap phase checkpoint?
pub fn is_phase_checkpoint(s: &Snapshot) -> bool {
    s.record.kind == SnapshotKind::Checkpoint && PHASES.contains(&s.record.label.as_str())
}

fn order(phase: &str) -> usize {
    PHASES.iter().position(|p| *p == phase).unwrap_or(0)
}

/// Does `phase` begin a new run after a run whose phases so far are `labels`?
fn starts_new_run(labels: &[&str], phase: &str) -> bool {
    phase == PHASES[0]
        || labels.is_empty()
        || labels.contains(&phase)
        || labels.last().is_some_and(|last| order(phase) < order(last))
}

/// Every run in the repository, oldest first. `snapshots` is in repository
/// order (oldest first), as [`crate::repo::Repository::snapshots`] returns it.
pub fn runs(snapshots: &[Snapshot]) -> Vec<Run<'_>> {
    let mut out: Vec<Run<'_>> = Vec::new();
    // Records without a run id join the legacy run that is open, by the rule.
    let mut legacy: Option<usize> = None;
    for s in snapshots.iter().filter(|s| is_phase_checkpoint(s)) {
        let at = match &s.record.run {
            Some(id) => out.iter().position(|r| &r.id == id),
            None => legacy.filter(|&i| {
                let labels: Vec<&str> = out[i]
                    .checkpoints
                    .iter()
                    .map(|c| c.record.label.as_str())
                    .collect();
                !starts_new_run(&labels, &s.record.label)
            }),
        };
        let i = at.unwrap_or_else(|| {
            out.push(Run {
                id: s
                    .record
                    .run
                    .clone()
                    .unwrap_or_else(|| format!("legacy-{}", s.id.short())),
                phases: Vec::new(),
                checkpoints: Vec::new(),
            });
            out.len() - 1
        });
        if s.record.run.is_none() {
            legacy = Some(i);
        }
        out[i].checkpoints.push(s);
    }
    pair_phases(snapshots, &mut out);
    out
}

/// Fill each run's phases with their checkpoint and the next one.
fn pair_phases<'a>(snapshots: &'a [Snapshot], runs: &mut [Run<'a>]) {
    let all: Vec<&Snapshot> = snapshots
        .iter()
        .filter(|s| is_phase_checkpoint(s))
        .collect();
    for run in runs.iter_mut() {
        let mut phases: Vec<RunPhase<'a>> = Vec::new();
        for (i, s) in run.checkpoints.iter().enumerate() {
            if phases.iter().any(|p| p.phase == s.record.label) {
                continue;
            }
            let later_in_run = run.checkpoints[i + 1..]
                .iter()
                .find(|n| n.record.label != s.record.label)
                .copied();
            let next = later_in_run.or_else(|| {
                // The run's last phase: the next phase checkpoint of another run.
                let last = run.checkpoints.last().expect("a run has a checkpoint");
                all.iter()
                    .find(|n| {
                        n.record.created_at > last.record.created_at
                            && !run.checkpoints.iter().any(|c| c.id == n.id)
                    })
                    .copied()
            });
            phases.push(RunPhase {
                phase: s.record.label.as_str(),
                snapshot: s,
                next,
            });
        }
        run.phases = phases;
    }
}

/// Check a run id given with `--run` or in `BACKUP_RUN_ID`.
pub fn check_run_id(id: &str, source: &str) -> Result<()> {
    match invalid_name(id) {
        None => Ok(()),
        Some(why) => Err(Error::usage(
            "unsafe_name",
            format!("{id:?} ({source}) cannot be used as a run id: {why}"),
        )
        .with_hint("use letters, digits, `.`, `_` and `-`, e.g. the play's start time")),
    }
}

/// The run a new checkpoint of `phase` belongs to: `explicit` when given,
/// else the current run or a new one ([`starts_new_run`]). The flag says
/// whether it is the repository's first run (whose checkpoints are pinned).
pub fn choose_run(snapshots: &[Snapshot], phase: &str, explicit: Option<&str>) -> (String, bool) {
    let all = runs(snapshots);
    let first = all.first().map(|r| r.id.clone());
    let id = match explicit {
        Some(id) => id.to_string(),
        None => {
            // The current run is the one with the newest phase checkpoint.
            let newest = snapshots.iter().rev().find(|s| is_phase_checkpoint(s));
            let current = newest.and_then(|n| {
                all.iter()
                    .find(|r| r.checkpoints.iter().any(|c| c.id == n.id))
            });
            match current {
                Some(r) => {
                    let labels: Vec<&str> = r
                        .checkpoints
                        .iter()
                        .map(|c| c.record.label.as_str())
                        .collect();
                    if starts_new_run(&labels, phase) {
                        new_run_id()
                    } else {
                        r.id.clone()
                    }
                }
                None => new_run_id(),
            }
        }
    };
    let is_first = first.as_deref().is_none_or(|f| f == id);
    (id, is_first)
}

/// A fresh run id: UTC start time to the second, and 4 hex digits from the
/// clock's nanoseconds and the process id, so two runs started in the same
/// second still differ.
fn new_run_id() -> String {
    let now = jiff::Timestamp::now();
    let salt = (now.subsec_nanosecond() as u32) ^ std::process::id().rotate_left(16);
    let mix = salt.wrapping_mul(0x9E37_79B9) >> 16;
    format!("{}-{:04x}", now.strftime("%Y%m%dT%H%M%SZ"), mix & 0xffff)
}

/// A run passed over by [`resolve`], and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PassedOver {
    /// Run id.
    pub run: String,
    /// When the run started.
    pub started_at: String,
    /// Short id of that run's checkpoint for the phase.
    pub snapshot: String,
    /// Why it was not chosen.
    pub reason: String,
}

/// How a phase name was resolved (the `resolved` payload of restore and rollback).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Resolution {
    /// What was asked (`pre-dotfiles`, `pre-dotfiles@first`, ...).
    pub selector: String,
    /// The phase label.
    pub phase: String,
    /// `newest_changed`, `newest`, `first`, `run` or `back`.
    pub rule: &'static str,
    /// The chosen run.
    pub run: String,
    /// When that run started.
    pub run_started_at: String,
    /// Short id of the chosen checkpoint.
    pub snapshot: String,
    /// When it was taken.
    pub created_at: String,
    /// Whether the phase changed the tracked state in that run (`null`: open).
    pub changed: Option<bool>,
    /// Newer runs with the phase that were not chosen, newest first.
    pub passed_over: Vec<PassedOver>,
    /// One sentence for people.
    pub why: String,
}

/// Split `pre-dotfiles@x` / `pre-dotfiles~2` / `pre-dotfiles`; `None` when
/// the selector is not a phase form (labels, ids and `latest` go on as before).
fn parse(selector: &str) -> Option<(&str, Option<&str>, Option<&str>)> {
    let (name, at) = match selector.split_once('@') {
        Some((n, a)) => (n, Some(a)),
        None => (selector, None),
    };
    let (name, back) = match name.split_once('~') {
        Some((n, b)) if at.is_none() => (n, Some(b)),
        Some(_) => return None,
        None => (name, None),
    };
    PHASES.contains(&name).then_some((name, at, back))
}

fn passed(run: &Run<'_>, p: &RunPhase<'_>, reason: String) -> PassedOver {
    PassedOver {
        run: run.id.clone(),
        started_at: run.started_at().to_string(),
        snapshot: p.snapshot.id.short(),
        reason,
    }
}

fn not_found(selector: &str, message: String) -> Error {
    Error::new(ExitCode::Failed, "snapshot_not_found", message).with_hint(format!(
        "run `backup-list --phases` to see the runs and their phases (asked for {selector:?})"
    ))
}

/// Resolve a phase selector; `Ok(None)` when `selector` is not one.
pub fn resolve<'a>(
    snapshots: &'a [Snapshot],
    selector: &str,
) -> Result<Option<(&'a Snapshot, Resolution)>> {
    let Some((phase, at, back)) = parse(selector) else {
        return Ok(None);
    };
    let all = runs(snapshots);
    // Newest first, only runs that have the phase.
    let with: Vec<(&Run<'_>, &RunPhase<'_>)> = all
        .iter()
        .rev()
        .filter_map(|r| Some((r, r.phase(phase)?)))
        .collect();
    if with.is_empty() {
        return Err(not_found(
            selector,
            format!("no bootstrap run has a {phase} checkpoint yet"),
        ));
    }
    let mut skipped = Vec::new();
    let (rule, index) = match (at, back) {
        (Some("first"), _) => ("first", with.len() - 1),
        (Some(run), _) => {
            let exact = with.iter().position(|(r, _)| r.id == run);
            let prefixed: Vec<usize> = (0..with.len())
                .filter(|&i| !run.is_empty() && with[i].0.id.starts_with(run))
                .collect();
            match (exact, prefixed.as_slice()) {
                (Some(i), _) => ("run", i),
                (None, [i]) => ("run", *i),
                (None, []) => {
                    return Err(not_found(
                        selector,
                        format!("no run {run:?} has a {phase} checkpoint"),
                    ))
                }
                (None, many) => {
                    return Err(Error::usage(
                        "ambiguous_snapshot",
                        format!(
                            "run {run:?} matches {} runs with a {phase} checkpoint",
                            many.len()
                        ),
                    )
                    .with_hint("give more of the run id (`backup-list --phases`)"))
                }
            }
        }
        (None, Some(n)) => {
            let n: usize = n.parse().map_err(|_| {
                Error::usage(
                    "bad_selector",
                    format!("{selector:?}: `~` takes a number of runs back, e.g. {phase}~1"),
                )
                .with_hint("write PHASE~N, PHASE@first or PHASE@RUN")
            })?;
            if n >= with.len() {
                return Err(not_found(
                    selector,
                    format!(
                        "only {} run(s) have a {phase} checkpoint; {selector} asks for run {} back",
                        with.len(),
                        n
                    ),
                ));
            }
            ("back", n)
        }
        (None, None) => {
            let mut pick = None;
            for (i, (r, p)) in with.iter().enumerate() {
                if p.changed() == Some(false) {
                    skipped.push(passed(
                        r,
                        p,
                        format!(
                        "nothing tracked changed between {phase} ({}) and the next checkpoint ({})",
                        p.snapshot.id.short(),
                        p.next.map(|n| n.id.short()).unwrap_or_default()
                    ),
                    ));
                } else {
                    pick = Some(i);
                    break;
                }
            }
            match pick {
                Some(i) => ("newest_changed", i),
                None => {
                    skipped.clear();
                    ("newest", 0)
                }
            }
        }
    };
    let (run, p) = with[index];
    if rule != "newest_changed" {
        for (r, q) in &with[..index] {
            skipped.push(passed(r, q, format!("{selector} names an older run")));
        }
    }
    let why = match rule {
        "newest_changed" if skipped.is_empty() => format!(
            "{phase} of run {} (the newest run with a {phase} checkpoint{})",
            run.id,
            if p.changed().is_none() { "; still open, nothing after it yet" } else { "" }
        ),
        "newest_changed" => format!(
            "{phase} of run {}: the newest run in which something changed after {phase}; {} newer run(s) changed nothing",
            run.id,
            skipped.len()
        ),
        "newest" => format!(
            "{phase} of run {}: nothing changed after {phase} in any run, so the newest",
            run.id
        ),
        "first" => format!("{phase} of the first run with it ({})", run.id),
        "back" => format!("{phase} of run {}, {} run(s) back", run.id, index),
        _ => format!("{phase} of run {}", run.id),
    };
    let snapshot = p.snapshot;
    Ok(Some((
        snapshot,
        Resolution {
            selector: selector.to_string(),
            phase: phase.to_string(),
            rule,
            run: run.id.clone(),
            run_started_at: run.started_at().to_string(),
            snapshot: snapshot.id.short(),
            created_at: snapshot.record.created_at.clone(),
            changed: p.changed(),
            passed_over: skipped,
            why,
        },
    )))
}

/// For restore and rollback: resolve a phase selector now, put how in the
/// envelope (`resolved`), and return the chosen snapshot's full id, so the
/// plan says which run and why. Other selectors come back unchanged.
///
/// Runs are the current home's (a repository shared by several homes: one
/// home's bootstrap never answers for another's) unless `all_homes`.
pub fn explain(
    settings: &crate::config::Settings,
    selector: &str,
    all_homes: bool,
    env: &mut crate::report::Envelope,
) -> Result<String> {
    if parse(selector).is_none() {
        return Ok(selector.to_string());
    }
    let repo = crate::repo::Repository::open(&settings.repo)?;
    let mut snapshots = repo.snapshots()?;
    if !all_homes {
        snapshots.retain(|s| s.record.of_home(settings.home.as_deref()));
    }
    let Some((snap, why)) = resolve(&snapshots, selector)? else {
        return Ok(selector.to_string());
    };
    env.put("resolved", why);
    Ok(snap.id.to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hash;
    use crate::paths::ByteName;
    use crate::repo::snapshot::{SnapshotRecord, Summary};

    fn cp(n: u8, label: &str, tree: u8, run: Option<&str>) -> Snapshot {
        Snapshot {
            id: Hash([n; 32]),
            record: SnapshotRecord {
                version: 1,
                kind: SnapshotKind::Checkpoint,
                label: label.into(),
                tags: vec![],
                parent: None,
                host: "h".into(),
                user: "u".into(),
                created_at: format!("2026-01-01T00:00:{n:02}Z"),
                tree: Hash([tree; 32]),
                roots: vec![ByteName::from("~/.zshrc")],
                summary: Summary::default(),
                packages: None,
                run: run.map(str::to_string),
                home: None,
            },
        }
    }

    #[test]
    fn legacy_records_group_by_the_automatic_rule() {
        let s = [
            cp(1, "pre-ansible", 1, None),
            cp(2, "pre-dotfiles", 1, None),
            cp(3, "bootstrap-complete", 2, None),
            cp(4, "pre-dotfiles", 2, None),
            cp(5, "pre-homebrew", 2, None),
            cp(6, "pre-dotfiles", 2, None),
        ];
        let r = runs(&s);
        let ids: Vec<usize> = r.iter().map(|r| r.checkpoints.len()).collect();
        assert_eq!(ids, [3, 1, 2], "repeat and going back both start a run");
        assert_eq!(r[0].phase("pre-ansible").unwrap().changed(), Some(false));
        assert_eq!(r[0].phase("pre-dotfiles").unwrap().changed(), Some(true));
        // The last phase of a run compares with the next run's first checkpoint.
        assert_eq!(
            r[0].phase("bootstrap-complete").unwrap().changed(),
            Some(false)
        );
        assert_eq!(r[2].phase("pre-dotfiles").unwrap().changed(), None, "open");
    }

    #[test]
    fn a_phase_resolves_to_the_newest_run_it_changed_something_in() {
        let s = [
            cp(1, "pre-dotfiles", 1, Some("a")),
            cp(2, "bootstrap-complete", 2, Some("a")),
            cp(3, "pre-dotfiles", 2, Some("b")),
            cp(4, "bootstrap-complete", 2, Some("b")),
        ];
        let (snap, why) = resolve(&s, "pre-dotfiles").unwrap().unwrap();
        assert_eq!(snap.id, s[0].id);
        assert_eq!(why.run, "a");
        assert_eq!(why.passed_over.len(), 1);
        assert_eq!(why.passed_over[0].run, "b");
        assert_eq!(
            resolve(&s, "pre-dotfiles~0").unwrap().unwrap().0.id,
            s[2].id
        );
        assert_eq!(
            resolve(&s, "pre-dotfiles~1").unwrap().unwrap().0.id,
            s[0].id
        );
        assert_eq!(
            resolve(&s, "pre-dotfiles@first").unwrap().unwrap().0.id,
            s[0].id
        );
        assert_eq!(
            resolve(&s, "pre-dotfiles@b").unwrap().unwrap().0.id,
            s[2].id
        );
        assert!(resolve(&s, "pre-dotfiles~2").is_err());
        assert!(resolve(&s, "pre-dotfiles@c").is_err());
        assert!(resolve(&s, "pre-homebrew").is_err());
        assert!(resolve(&s, "latest").unwrap().is_none());
        assert!(resolve(&s, "my-label").unwrap().is_none());
    }

    #[test]
    fn explicit_runs_win_and_the_first_run_is_known() {
        let s = [
            cp(1, "pre-ansible", 1, Some("a")),
            cp(2, "pre-dotfiles", 1, Some("a")),
        ];
        assert_eq!(
            choose_run(&s, "pre-dotfiles", Some("a")),
            ("a".into(), true)
        );
        assert_eq!(choose_run(&s, "pre-applications", None), ("a".into(), true));
        let (id, first) = choose_run(&s, "pre-dotfiles", None);
        assert!(id != "a" && !first);
        assert!(choose_run(&s, "pre-ansible", None).0 != "a");
        assert!(choose_run(&[], "pre-dotfiles", None).1);
    }
}
