//! Where a snapshot's roots go on this machine: under `$HOME`, under
//! `--target`, or at a configured absolute root. Shared by restore, undo and
//! list's live comparison, so none of them imports another for it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::config::{Settings, TrackedRoot};
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::paths::unsafe_relative_path;

/// Where a snapshot root goes: under `$HOME` (for `~/`), under `--target`, or
/// at its absolute path when it is one of the configured roots.
pub fn placer<'a>(
    home: Option<&'a Path>,
    target: Option<&'a Path>,
    configured: &'a [TrackedRoot],
) -> impl Fn(&Path) -> Result<PathBuf> + 'a {
    placer_following(home, target, configured, &[])
}

/// [`placer`], also accepting absolute roots beneath `follow` (the
/// `track.follow_links_into` prefixes: symlinked content outside `$HOME`).
pub fn placer_following<'a>(
    home: Option<&'a Path>,
    target: Option<&'a Path>,
    configured: &'a [TrackedRoot],
    follow: &'a [PathBuf],
) -> impl Fn(&Path) -> Result<PathBuf> + 'a {
    move |root: &Path| {
        let bytes = root.as_os_str().as_bytes();
        let (inner, is_home): (&[u8], bool) = if bytes == b"~" {
            (b"", true)
        } else if let Some(rest) = bytes.strip_prefix(b"~/") {
            (rest, true)
        } else if let Some(rest) = bytes.strip_prefix(b"/") {
            (rest, false)
        } else {
            return Err(Error::new(
                ExitCode::Corrupt,
                "unsafe_manifest_path",
                format!("snapshot root {:?} is neither `~/...` nor absolute", root),
            ));
        };
        if inner.is_empty() && !is_home {
            return Err(Error::new(
                ExitCode::Corrupt,
                "unsafe_manifest_path",
                "snapshot root is `/`".to_string(),
            ));
        }
        if let Some(why) = unsafe_relative_path(inner) {
            return Err(Error::new(
                ExitCode::Corrupt,
                "unsafe_manifest_path",
                format!("snapshot root {:?} {why}", root),
            ));
        }
        let inner = Path::new(OsStr::from_bytes(inner));
        if let Some(t) = target {
            return Ok(if inner.as_os_str().is_empty() {
                t.to_path_buf()
            } else {
                t.join(inner)
            });
        }
        if is_home {
            let home = home.ok_or_else(|| {
                Error::usage(
                    "home_not_set",
                    "the snapshot's paths are under ~ but $HOME is not set",
                )
                .with_hint("set HOME, or pass --target DIR")
            })?;
            return Ok(if inner.as_os_str().is_empty() {
                home.to_path_buf()
            } else {
                home.join(inner)
            });
        }
        let abs = Path::new("/").join(inner);
        if configured.iter().any(|r| r.abs == abs) || follow.iter().any(|p| abs.starts_with(p)) {
            Ok(abs)
        } else {
            Err(Error::new(
                ExitCode::Refused,
                "outside_home_refused",
                format!(
                    "the snapshot root {} is outside $HOME and not in the current configuration",
                    abs.display()
                ),
            )
            .with_hint("restore it with --target DIR, or add it to track.config"))
        }
    }
}

/// The `track.follow_links_into` prefixes with their links resolved, as
/// the scan compares them.
pub fn follow_prefixes(settings: &Settings) -> Vec<PathBuf> {
    settings
        .follow_links_into
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect()
}
