//! The bootstrap completion report: `backup-checkpoint auto bootstrap-complete`
//! ends with one line per bootstrap phase saying what protects it.
//!
//! For each phase in [`PHASES`] order the newest checkpoint with that label
//! (taken no later than this run) is looked up in the repository, and the
//! run log (`logs/runs.jsonl`) adds what the snapshots cannot say: warnings
//! of the run that took it, and runs for the phase that failed. A phase is
//!
//! * `created`: its checkpoint stored a state different from the previous
//!   phase's checkpoint (the phase before it changed tracked files);
//! * `unchanged`: it has a checkpoint, identical to the previous phase's
//!   (nothing tracked changed in between; still a valid rollback point);
//! * `skipped`: no checkpoint, and the run log shows a run for the phase that
//!   failed or was skipped;
//! * `missing`: no checkpoint and no run for it in the log.
//!
//! Each phase with a checkpoint gets the exact command to roll back to it
//! (by short id, so a later checkpoint with the same label cannot change
//! what it means).

use serde::Serialize;
use serde_json::Value;

use crate::config::Settings;
use crate::repo::snapshot::{Snapshot, SnapshotKind, PHASES};
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
}

/// Build the report from the snapshots and the run log; `current` is this
/// run's envelope (not in the log yet).
pub fn build(snapshots: &[Snapshot], log: &[Value], current: &Envelope) -> CompletionReport {
    let current_id = current.snapshot.as_ref().map(|s| s.id.clone());
    // Only checkpoints up to the one this run took (or, without one, all).
    let cutoff = current
        .snapshot
        .as_ref()
        .map(|s| s.created_at.clone())
        .unwrap_or_else(|| "9999".into());
    let mut phases = Vec::new();
    let mut previous_tree = None;
    for phase in PHASES {
        let snap = snapshots.iter().rev().find(|s| {
            s.record.kind == SnapshotKind::Checkpoint
                && s.record.label == phase
                && s.record.created_at <= cutoff
        });
        let runs: Vec<&Value> = log
            .iter()
            .filter(|v| v["command"] == "backup-checkpoint" && run_phase(v) == Some(phase))
            .collect();
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
        };
        match snap {
            Some(s) => {
                let id = s.id.to_hex();
                r.status = if previous_tree == Some(s.record.tree) {
                    "unchanged"
                } else {
                    "created"
                };
                previous_tree = Some(s.record.tree);
                r.snapshot = Some(s.id.short());
                r.created_at = Some(s.record.created_at.clone());
                r.files = s.record.summary.files;
                r.bytes = s.record.summary.bytes;
                r.new_bytes = s.record.summary.new_bytes;
                r.package_lists = s.record.packages.as_ref().map_or(0, |p| p.len() as u64);
                r.rollback = Some(format!("backup-rollback {}", s.id.short()));
                let taker: Option<&Value> = if current_id.as_deref() == Some(id.as_str()) {
                    None
                } else {
                    runs.iter()
                        .rev()
                        .find(|v| v["snapshot"]["id"].as_str() == Some(id.as_str()))
                        .copied()
                };
                let warnings = match taker {
                    Some(v) => messages(&v["warnings"]),
                    None if current_id.as_deref() == Some(id.as_str()) => {
                        current.warnings.iter().map(|w| w.message.clone()).collect()
                    }
                    None => Vec::new(),
                };
                r.warnings = warnings;
            }
            None => {
                if let Some(last) = runs.last() {
                    r.status = "skipped";
                    r.warnings = messages(&last["errors"]);
                    if let Some(reason) = last["skip_reason"].as_str() {
                        r.warnings.push(format!("skipped: {reason}"));
                    }
                }
            }
        }
        phases.push(r);
    }
    CompletionReport {
        protected: phases.iter().filter(|p| p.snapshot.is_some()).count() as u64,
        new_bytes: phases.iter().map(|p| p.new_bytes).sum(),
        phases,
    }
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
    let report = build(&snapshots, &log, env);
    env.put("completion", report);
}
