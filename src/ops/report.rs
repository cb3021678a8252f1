//! The bootstrap completion report: `backup-checkpoint auto bootstrap-complete`
//! ends with one line per bootstrap phase saying what protects it.
//!
//! The report covers this checkpoint's bootstrap run ([`crate::ops::phases`]):
//! for each phase in [`PHASES`] order, the run's checkpoint with that label,
//! and from the run log (`logs/runs.jsonl`) what the snapshots cannot say:
//! what the run that took it reported, its warnings, and runs of the phase
//! (in this bootstrap run) that failed. A phase is
//!
//! * `created`: its checkpoint stored a state no snapshot had (the envelope
//!   of that checkpoint said `changed: true`, as the role's line does);
//! * `unchanged`: its state was stored already (`changed: false`);
//! * `skipped`: no checkpoint in this run, and the run log shows a run for
//!   the phase in this bootstrap run that failed or was skipped;
//! * `missing`: no checkpoint and no run for it.
//!
//! `state_changed` says whether the phase after the checkpoint changed the
//! tracked files (the checkpoint against the run's next one), exactly as
//! `backup-list --phases` says it. Each phase with a checkpoint gets the
//! command to roll back to it by short id, so a later run cannot change what
//! it means; a phase without one gets none.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::hash::Hash;

use crate::config::Settings;
use crate::repo::snapshot::{Snapshot, PHASES};
use crate::repo::Repository;
use crate::report::Envelope;

/// One phase's line of the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PhaseReport {
    /// Phase name.
    pub phase: String,
    /// `created`, `unchanged`, `skipped` or `missing`.
    pub status: &'static str,
    /// Short id of the checkpoint.
    pub snapshot: Option<String>,
    /// When it was taken.
    pub created_at: Option<String>,
    /// Files in it.
    pub files: u64,
    /// Bytes of files in it.
    pub bytes: u64,
    /// Bytes it added to the repository.
    pub new_bytes: u64,
    /// Package lists recorded with it.
    pub package_lists: u64,
    /// Warnings of the run that took it, or the error of a failed run.
    pub warnings: Vec<String>,
    /// Command that rolls the tracked files back to it.
    pub rollback: Option<String>,
    /// Whether the phase after this checkpoint changed the tracked state
    /// (`None`: open, or no checkpoint).
    pub state_changed: Option<bool>,
    /// Why the checkpoint is pinned, if it is.
    pub pinned: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompletionReport {
    /// One per phase, in bootstrap order.
    pub phases: Vec<PhaseReport>,
    /// Phases with a checkpoint.
    pub protected: u64,
    /// Total bytes the bootstrap's checkpoints added to the repository.
    pub new_bytes: u64,
    /// The bootstrap run reported on.
    pub run: Option<String>,
}

/// Build the report from the snapshots and the run log; `current` is this
/// run's envelope (not in the log yet), `pins` the pin reasons.
pub fn build(
    snapshots: &[Snapshot],
    log: &[Value],
    current: &Envelope,
    pins: &BTreeMap<Hash, String>,
) -> CompletionReport {
    let current_id = current.snapshot.as_ref().map(|s| s.id.clone());
    let runs = crate::ops::phases::runs(snapshots);
    // This checkpoint's run (the newest one if it cannot be found).
    let run = runs
        .iter()
        .find(|r| {
            r.checkpoints
                .iter()
                .any(|c| Some(c.id.to_hex()) == current_id)
        })
        .or(runs.last());
    let run_id = run.map(|r| r.id.clone());
    let phases = PHASES
        .iter()
        .map(|phase| {
            let taken = run.and_then(|r| r.phase(phase));
            let tried: Vec<&Value> = log
                .iter()
                .filter(|v| {
                    v["command"] == "backup-checkpoint"
                        && run_phase(v) == Some(phase)
                        && v["run"].as_str() == run_id.as_deref()
                })
                .collect();
            phase_report(phase, taken, &tried, log, current, pins)
        })
        .collect::<Vec<_>>();
    CompletionReport {
        protected: phases.iter().filter(|p| p.snapshot.is_some()).count() as u64,
        new_bytes: phases.iter().map(|p| p.new_bytes).sum(),
        phases,
        run: run_id,
    }
}

/// One phase's line: its checkpoint in this run, or what became of the tries.
fn phase_report(
    phase: &str,
    taken: Option<&crate::ops::phases::RunPhase<'_>>,
    tried: &[&Value],
    log: &[Value],
    current: &Envelope,
    pins: &BTreeMap<Hash, String>,
) -> PhaseReport {
    let mut r = PhaseReport {
        phase: phase.into(),
        status: "missing",
        snapshot: None,
        created_at: None,
        files: 0,
        bytes: 0,
        new_bytes: 0,
        package_lists: 0,
        warnings: Vec::new(),
        rollback: None,
        state_changed: None,
        pinned: None,
    };
    let Some(p) = taken else {
        if let Some(last) = tried.last() {
            r.status = "skipped";
            r.warnings = messages(&last["errors"]);
            if let Some(reason) = last["skip_reason"].as_str() {
                r.warnings.push(format!("skipped: {reason}"));
            }
        }
        return r;
    };
    let s = p.snapshot;
    let id = s.id.to_hex();
    let is_current = current.snapshot.as_ref().is_some_and(|c| c.id == id);
    // The newest logged run that reported this checkpoint said what it did.
    let taker = log
        .iter()
        .rev()
        .find(|v| v["snapshot"]["id"].as_str() == Some(id.as_str()));
    let stored_new_state = if is_current {
        current.changed
    } else {
        taker.is_none_or(|v| v["changed"] != false)
    };
    r.status = if stored_new_state {
        "created"
    } else {
        "unchanged"
    };
    r.snapshot = Some(s.id.short());
    r.created_at = Some(s.record.created_at.clone());
    r.files = s.record.summary.files;
    r.bytes = s.record.summary.bytes;
    r.new_bytes = s.record.summary.new_bytes;
    r.package_lists = s.record.packages.as_ref().map_or(0, |p| p.len() as u64);
    r.rollback = Some(format!("backup-rollback {}", s.id.short()));
    r.state_changed = p.changed();
    r.pinned = pins.get(&s.id).cloned();
    r.warnings = match taker {
        _ if is_current => current.warnings.iter().map(|w| w.message.clone()).collect(),
        Some(v) => messages(&v["warnings"]),
        None => Vec::new(),
    };
    r
}

/// The phase a logged checkpoint run was for: its `phase` payload (failed
/// runs too), else the label of the checkpoint it reported.
fn run_phase(v: &Value) -> Option<&str> {
    v["phase"]
        .as_str()
        .or_else(|| {
            (v["snapshot"]["kind"] == "checkpoint")
                .then(|| v["snapshot"]["label"].as_str())
                .flatten()
        })
        .filter(|p| PHASES.contains(p))
}

fn messages(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["message"].as_str().map(str::to_string))
        .collect()
}

/// Add the `completion` payload to a `bootstrap-complete` envelope. A
/// repository that cannot be read leaves the report out with a warning;
/// the checkpoint itself already succeeded or failed on its own.
pub fn attach(settings: &Settings, env: &mut Envelope) {
    let snapshots = match Repository::open(&settings.repo).and_then(|r| r.snapshots()) {
        Ok(s) => s,
        Err(e) => {
            env.warnings.push(crate::report::Warning::new(
                "completion_report_unavailable",
                format!("the completion report could not be built: {}", e.message),
            ));
            return;
        }
    };
    let log = crate::runlog::read_all(&settings.repo);
    let pins = Repository::open(&settings.repo)
        .map(|r| crate::repo::pins::pin_reasons(&r))
        .unwrap_or_default();
    let report = build(&snapshots, &log, env, &pins);
    env.put("completion", report);
}
