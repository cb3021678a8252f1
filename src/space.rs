//! The free-space policy and the repository quota, checked before a run
//! writes anything, so that a full disk is reported up front instead of
//! half-way (the write path is crash-safe either way: ENOSPC mid-write
//! leaves only unreferenced temp data and exits 7).
//!
//! One policy, `[space]` in the config, read by a checkpoint writing into
//! the repository ([`check_before_write`]) and by the health check's
//! `disk_space` row ([`assess`]). A restore or rollback writing into the
//! home or `--target` ([`ensure_room`]) is refused only when its writes do
//! not fit: the reserve (`space.refuse_below_mb`) keeps checkpoints from
//! filling a disk, and a rollback is often what repairs a disk a bad phase
//! filled, so it may use the reserve.

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

/// Where a file system stands under the `[space]` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// At or above `warn_below_mb` after the write.
    Plenty,
    /// Below `warn_below_mb`: a warning.
    Low,
    /// Below `strong_warn_below_mb`: a stronger warning.
    Critical,
    /// The write would leave less than `refuse_below_mb` (or does not fit): refused.
    Short,
}

/// Classify a file system with `free` bytes that is about to receive up to
/// `need` bytes. The warning levels look at the space free now, as the
/// checkpoint guard always did; the refusal at what would be left.
pub fn assess(free: u64, need: u64, policy: &SpaceSection) -> Room {
    let refuse = policy.refuse_below_mb.saturating_mul(MIB);
    if free < refuse || need.saturating_add(refuse) > free {
        Room::Short
    } else if free < policy.strong_warn_below_mb.saturating_mul(MIB) {
        Room::Critical
    } else if free < policy.warn_below_mb.saturating_mul(MIB) {
        Room::Low
    } else {
        Room::Plenty
    }
}

/// Refuse (exit 5, `insufficient_space`) a restore that would write up to
/// `need` bytes into `dest` (an existing directory on the file system being
/// written) when they do not fit in what is free there (the reserve is not
/// kept: see the module docs). The message names the directory, its file
/// system, what is needed and what is free.
pub fn ensure_room(dest: &Path, need: u64) -> Result<()> {
    let Some(free) = free_bytes(dest) else {
        return Ok(());
    };
    if need <= free {
        return Ok(());
    }
    let fs = mount_point(dest);
    let shown = display_path(dest);
    Err(Error::new(
        ExitCode::Refused,
        "insufficient_space",
        format!(
            "restoring writes up to {} into {shown} (file system {fs}), but only {} is free there; nothing was changed",
            human_bytes(need),
            human_bytes(free),
        ),
    )
    .with_path(dest)
    .with_hint(format!(
        "free at least {} on {fs} and run again, restore less with --path, or restore into --target DIR on another file system",
        human_bytes(need - free)
    ))
    .retryable(true))
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
    let refuse = policy.refuse_below_mb.saturating_mul(MIB);
    match assess(free, estimated_new, policy) {
        Room::Short => {
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
        Room::Critical => warnings.push(Warning::at(
            "disk_space_critical",
            shown.clone(),
            format!(
                "only {} free on {fs}; checkpoints will be refused below {}",
                human_bytes(free),
                human_bytes(refuse)
            ),
        )),
        Room::Low => warnings.push(Warning::at(
            "disk_space_low",
            shown,
            format!("{} free on {fs}", human_bytes(free)),
        )),
        Room::Plenty => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(warn: u64, strong: u64, refuse: u64) -> SpaceSection {
        SpaceSection {
            warn_below_mb: warn,
            strong_warn_below_mb: strong,
            refuse_below_mb: refuse,
            ..SpaceSection::default()
        }
    }

    #[test]
    fn one_policy_classifies_free_space_and_what_a_write_leaves() {
        let p = policy(1024, 500, 100);
        assert_eq!(assess(2048 * MIB, 0, &p), Room::Plenty);
        assert_eq!(assess(600 * MIB, 0, &p), Room::Low);
        assert_eq!(assess(200 * MIB, 0, &p), Room::Critical);
        assert_eq!(assess(99 * MIB, 0, &p), Room::Short);
        // Enough free now, but the write would leave less than the reserve.
        assert_eq!(assess(2048 * MIB, 1948 * MIB + 1, &p), Room::Short);
        assert_eq!(assess(2048 * MIB, 1948 * MIB, &p), Room::Plenty);
        // A zero policy refuses only a write that does not fit at all.
        let zero = policy(0, 0, 0);
        assert_eq!(assess(0, 0, &zero), Room::Plenty);
        assert_eq!(assess(10, 11, &zero), Room::Short);
    }

    #[test]
    fn a_refused_restore_names_the_directory_need_free_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = ensure_room(dir.path(), u64::MAX / 2).unwrap_err();
        assert_eq!(err.code, "insufficient_space");
        assert_eq!(err.exit, ExitCode::Refused);
        assert!(
            err.message.contains(&display_path(dir.path())),
            "{}",
            err.message
        );
        assert!(err.message.contains("is free there"), "{}", err.message);
        let hint = err.hint.unwrap_or_default();
        assert!(
            hint.contains("--target DIR") && hint.contains("--path"),
            "{hint}"
        );
        assert!(ensure_room(dir.path(), 1).is_ok());
    }
}
