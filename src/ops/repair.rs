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
    env.put("repair", &repaired);
    verify::run(settings, read_data, env)
}
