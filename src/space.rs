//! The free-space guard and the repository quota, checked before a run
//! writes anything, so that a full disk is reported up front instead of
//! half-way (the write path is crash-safe either way: ENOSPC mid-write
//! leaves only unreferenced temp data and exits 7).

use std::path::Path;

use crate::config::SpaceSection;
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::paths::display_path;
use crate::repo::Repository;
use crate::report::Warning;
use crate::units::human_bytes;

const MIB: u64 = 1 << 20;

/// Free bytes for unprivileged users on the file system holding `path` (or its nearest existing parent).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let mut p = Some(path);
    while let Some(cur) = p {
        if let Ok(free) = crate::sys::available_bytes(cur) {
            return Some(free);
        }
        p = cur.parent();
    }
    None
}

/// Warnings to report, or a refusal (exit 5) naming the file system and the space needed.
pub fn check_before_write(
    repo: &Repository,
    estimated_new: u64,
    policy: &SpaceSection,
) -> Result<Vec<Warning>> {
    let mut warnings = Vec::new();
    let root = repo.root();
    let shown = display_path(root);
    if policy.max_repo_mb > 0 {
        let size = repo.size_bytes();
        let quota = policy.max_repo_mb * MIB;
        if size + estimated_new > quota {
            return Err(Error::new(
                ExitCode::Refused,
                "quota_exceeded",
                format!(
                    "the repository {shown} holds {} and this run may add up to {}, over the quota of {}",
                    human_bytes(size),
                    human_bytes(estimated_new),
                    human_bytes(quota)
                ),
            )
            .with_path(root)
            .with_hint(format!(
                "free at least {} with `backup-prune` (see `backup-prune --dry-run`), or raise space.max_repo_mb",
                human_bytes(size + estimated_new - quota)
            )));
        }
    }
    let Some(free) = free_bytes(root) else {
        return Ok(warnings);
    };
    let fs = mount_point(root);
    let refuse = policy.refuse_below_mb * MIB;
    if free < refuse || estimated_new.saturating_add(refuse) > free {
        let need = estimated_new
            .saturating_add(refuse)
            .saturating_sub(free)
            .max(1);
        return Err(Error::new(
            ExitCode::Refused,
            "insufficient_space",
            format!(
                "only {} free on {fs} (holding {shown}); this run may write {} and at least {} must stay free; nothing was written",
                human_bytes(free),
                human_bytes(estimated_new),
                human_bytes(refuse)
            ),
        )
        .with_path(root)
        .with_hint(format!("free {} on {fs}, or move the repository with --repo", human_bytes(need)))
        .retryable(true));
    }
    if free < policy.strong_warn_below_mb * MIB {
        warnings.push(Warning::at(
            "disk_space_critical",
            shown.clone(),
            format!(
                "only {} free on {fs}; checkpoints will be refused below {}",
                human_bytes(free),
                human_bytes(refuse)
            ),
        ));
    } else if free < policy.warn_below_mb * MIB {
        warnings.push(Warning::at(
            "disk_space_low",
            shown,
            format!("{} free on {fs}", human_bytes(free)),
        ));
    }
    Ok(warnings)
}

/// The mount point holding `path` (longest matching entry of /proc/self/mounts), for messages.
pub fn mount_point(path: &Path) -> String {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "its file system".into();
    };
    let mut best = String::from("/");
    for line in mounts.lines() {
        if let Some(mp) = line.split_whitespace().nth(1) {
            let mp = mp.replace("\\040", " ");
            if path.starts_with(&mp) && mp.len() > best.len() {
                best = mp;
            }
        }
    }
    best
}
