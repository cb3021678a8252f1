//! `backup-verify --repair [--from-external]`: the command that joins an
//! external copy (`ops::sync`) to the repair and the check (`ops::verify`).
//! Its own module so that neither of those two needs the other.

use crate::error::Result;
use crate::repo::Repository;

use super::verify;

/// `backup-verify --repair`: repair, then verify as usual (exit 6 while
/// anything is still lost, naming it).
///
/// `from_external`: `Some(name)` fetches lost objects from that external
/// target first (`Some(None)`: the only one configured).
pub fn run_repair(
    settings: &crate::config::Settings,
    read_data: bool,
    from_external: Option<Option<&str>>,
    env: &mut crate::report::Envelope,
) -> Result<()> {
    let repo = Repository::open(&settings.repo)?;
    // An rclone copy is fetched into its cache directory first; the guard is unused (not fresh).
    let copy = match from_external {
        Some(name) => {
            let shown = env.repository.clone();
            let (ext, _) = super::sync::external_repo(settings, name, false, env)?;
            env.repository = shown;
            Some(ext.repo)
        }
        None => None,
    };
    let repaired = verify::repair(&repo, "backup-verify", settings.lock_wait, copy.as_deref())?;
    if let Some(failed) = repaired.fetch_failed.as_ref().filter(|f| !f.is_empty()) {
        env.warnings.push(crate::report::Warning::new(
            "fetch_failed",
            format!(
                "{} object(s) could not be fetched intact from the external copy, e.g. {}: {}",
                failed.len(),
                failed[0].object,
                failed[0].message
            ),
        ));
    }
    env.changed = true;
    if !repaired.lost.is_empty() {
        let n: usize = repaired.lost.iter().map(|l| l.paths.len()).sum();
        env.warnings.push(crate::report::Warning::new(
            "data_lost",
            format!(
                "{n} path(s) in {} snapshot(s) have content no pack holds; they are listed under `repair.lost` and cannot be restored from this repository",
                repaired.lost.len()
            ),
        ));
    }
    if !repaired.quarantined.is_empty() {
        env.warnings.push(crate::report::Warning::new(
            "snapshot_quarantined",
            format!(
                "{} damaged snapshot record(s) moved to {}: those snapshots are lost, the others are intact; see `repair.quarantined`",
                repaired.quarantined.len(),
                crate::paths::display_path(&repo.sub(crate::repo::layout::QUARANTINE)),
            ),
        ));
    }
    env.put("repair", &repaired);
    verify::run(settings, read_data, env)?;
    // The verify that follows no longer sees a quarantined record: what it
    // lost must still end the run with exit 6, as lost paths do.
    if !repaired.quarantined.is_empty() && env.errors.is_empty() {
        env.status = crate::report::Status::Failed;
        env.set_exit(crate::exit::ExitCode::Corrupt);
        let e = crate::error::Error::new(
            crate::exit::ExitCode::Corrupt,
            "snapshot_lost",
            format!(
                "repaired with loss: {} snapshot record(s) were damaged beyond repair and moved aside, e.g. {}",
                repaired.quarantined.len(),
                repaired.quarantined[0].moved_to
            ),
        )
        .with_path(&repo.sub(crate::repo::layout::QUARANTINE))
        .with_hint("every other snapshot is intact and restorable; take a new checkpoint to protect the current state; the moved files are kept for inspection and can be deleted");
        env.errors.push((&e).into());
    }
    Ok(())
}
