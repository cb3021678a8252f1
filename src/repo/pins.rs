//! Pins: `<repo>/pins/<snapshot id>`, a file whose text says why the
//! snapshot is kept whatever the retention policy. Part of the repository
//! format, so prune, list, checkpoint and the report all read it from here.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;

use crate::atomic::Dir;
use crate::error::{IoContext, Result};
use crate::hash::Hash;

use super::layout;
use super::Repository;

/// Pinned snapshot ids (`<repo>/pins/<id>`).
pub fn pins(repo: &Repository) -> HashSet<Hash> {
    let mut out = HashSet::new();
    if let Ok(listing) = std::fs::read_dir(repo.sub(layout::PINS)) {
        for e in listing.flatten() {
            if let Some(id) = e.file_name().to_str().and_then(|n| n.parse().ok()) {
                out.insert(id);
            }
        }
    }
    out
}

/// Why each pinned snapshot is pinned: the pin file's text (the first
/// bootstrap run's checkpoints say so), or "pinned by hand" for an empty one.
pub fn pin_reasons(repo: &Repository) -> BTreeMap<Hash, String> {
    pins(repo)
        .into_iter()
        .map(|id| {
            let text = std::fs::read(repo.sub(layout::PINS).join(id.to_hex())).unwrap_or_default();
            let text = String::from_utf8_lossy(&text).trim().to_string();
            let reason = if text.is_empty() {
                "pinned by hand (backup-prune --pin)".to_string()
            } else {
                text
            };
            (id, reason)
        })
        .collect()
}

/// Pin `id` with a reason (kept until `backup-prune --unpin`).
pub fn write_pin(repo: &Repository, id: &Hash, reason: &str) -> Result<()> {
    let pins_dir = repo.sub(layout::PINS);
    // 0700 whatever the umask, like every other repository directory.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&pins_dir)
        .ctx("creating", &pins_dir)?;
    Dir::open(&pins_dir)?.write_atomic(OsStr::new(&id.to_hex()), reason.as_bytes(), 0o600)
}
