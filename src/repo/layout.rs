//! The repository's names on disk, in one place: every module that builds a
//! path inside a repository (or a copy of one on an external target) takes
//! the name from here, so the layout in docs/format.md has one spelling in
//! the code. Tests keep their literal names on purpose: they pin the format.

/// The repository's identity and format version, `config.json` at the root.
pub const CONFIG: &str = "config.json";
/// The lock file at the root (see [`crate::repo::lock`]).
pub const LOCK: &str = "lock";
/// Wrapped secret keys, `keys/<id>.age`.
pub const KEYS: &str = "keys";
/// Pack files, `packs/<sha256>`.
pub const PACKS: &str = "packs";
/// Index files, `index/<sha256>`.
pub const INDEX: &str = "index";
/// Trees, `trees/<sha256>.json`.
pub const TREES: &str = "trees";
/// Snapshot records, `snapshots/<sha256>.json`: a snapshot is committed when its record is.
pub const SNAPSHOTS: &str = "snapshots";
/// Pins, `pins/<snapshot id>` holding the reason (kept by prune).
pub const PINS: &str = "pins";
/// Local caches that can be deleted at any time.
pub const CACHE: &str = "cache";
/// The files cache inside [`CACHE`].
pub const FILES_CACHE: &str = "files";
/// The run log, `logs/runs.jsonl` and its rotations.
pub const LOGS: &str = "logs";

/// Damaged objects moved aside by `backup-verify --repair`,
/// `quarantine/snapshots/<name>` (never read, never synced, never deleted by the tool).
pub const QUARANTINE: &str = "quarantine";

/// Subdirectories, created on first use.
pub const SUBDIRS: [&str; 6] = [PACKS, INDEX, TREES, SNAPSHOTS, CACHE, LOGS];
