//! The largest-items view of `--sizes` (with or without `--dry-run`): the
//! largest directories and files of the tracked set, and excludes suggested
//! for caches and build output recognised by name (and, where a name alone
//! is ambiguous, by a marker beside or inside it). Pure: it reads the tree
//! that would be (or was) stored, never the disk.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::repo::snapshot::{EntryType, Tree};

/// How many directories and files are listed.
pub const TOP: usize = 10;

/// Recognised directories: name, why, and a marker that must exist beside
/// it (`../NAME`) or inside it (`NAME`) for the name to count (`None`: the
/// name is enough).
const KNOWN: &[(&str, &str, Option<&str>)] = &[
    (
        "node_modules",
        "npm/yarn dependencies, reinstalled from package.json",
        None,
    ),
    (
        ".cache",
        "caches, rebuilt by the programs that use them",
        None,
    ),
    ("__pycache__", "Python bytecode, rebuilt on import", None),
    (
        ".venv",
        "a Python virtual environment, recreated from requirements",
        None,
    ),
    (
        "venv",
        "a Python virtual environment, recreated from requirements",
        Some("pyvenv.cfg"),
    ),
    (".tox", "tox environments", None),
    (".mypy_cache", "mypy cache", None),
    (".pytest_cache", "pytest cache", None),
    (".ruff_cache", "ruff cache", None),
    (
        "target",
        "Rust build output, rebuilt by cargo",
        Some("../Cargo.toml"),
    ),
    (".gradle", "Gradle caches", None),
    (".next", "Next.js build output", None),
    (
        ".terraform",
        "Terraform providers and modules, fetched by terraform init",
        None,
    ),
    ("dist", "build output", Some("../package.json")),
    ("build", "build output", Some("../package.json")),
    ("Cache", "an application cache", None),
    ("GPUCache", "an application cache", None),
    ("Code Cache", "an application cache", None),
    ("CachedData", "an application cache", None),
];

/// A directory or file and its size.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Sized {
    /// Path as tracked (`~/.config/x`).
    pub path: String,
    /// Bytes of file content (a directory: everything below it).
    pub bytes: u64,
    /// Files (a directory: everything below it; a file: 1).
    pub files: u64,
}

/// An exclude pattern worth adding.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Suggestion {
    /// Gitignore pattern for `[track] extra_exclude` or `--exclude`.
    pub pattern: String,
    /// What it is.
    pub why: String,
    /// Directories it matches in the tracked set.
    pub dirs: u64,
    /// Bytes it would leave out.
    pub bytes: u64,
    /// The largest matching directory.
    pub example: String,
}

/// The view: largest directories and files, and the suggestions.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct Largest {
    /// Largest directories, largest first.
    pub dirs: Vec<Sized>,
    /// Largest files, largest first.
    pub files: Vec<Sized>,
    /// Suggested excludes, most bytes first.
    pub suggestions: Vec<Suggestion>,
}

/// Compute the view of `tree`.
pub fn largest(tree: &Tree) -> Largest {
    let mut dirs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut files = Vec::new();
    let mut present: BTreeSet<String> = BTreeSet::new();
    for (root, e) in tree.entries() {
        let mut path = root.root.lossy();
        if !e.path.is_empty() {
            path = format!("{path}/{}", e.path.lossy());
        }
        present.insert(path.clone());
        match e.kind {
            EntryType::Dir => {
                dirs.entry(path).or_default();
            }
            EntryType::File => {
                // Every directory above it, up to its root.
                let root_path = root.root.lossy();
                let mut p = path.as_str();
                while let Some(i) = p.rfind('/') {
                    p = &p[..i];
                    if p.len() < root_path.len() {
                        break;
                    }
                    let d = dirs.entry(p.to_string()).or_default();
                    d.0 += e.size;
                    d.1 += 1;
                }
                files.push(Sized {
                    path,
                    bytes: e.size,
                    files: 1,
                });
            }
            EntryType::Symlink => {}
        }
    }
    let mut by_pattern: BTreeMap<&str, Suggestion> = BTreeMap::new();
    for (path, (bytes, _)) in &dirs {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let Some((known, why, marker)) = KNOWN.iter().find(|(n, _, _)| *n == name) else {
            continue;
        };
        let marked = match marker {
            None => true,
            Some(m) => match m.strip_prefix("../") {
                Some(beside) => present.contains(&format!("{parent}/{beside}")),
                None => present.contains(&format!("{path}/{m}")),
            },
        };
        // Only the outermost of nested matches (node_modules inside node_modules).
        let nested = path.match_indices('/').any(|(i, _)| {
            KNOWN
                .iter()
                .any(|(n, ..)| n == known && path[..i].ends_with(&format!("/{n}")))
        });
        if !marked || nested {
            continue;
        }
        let s = by_pattern.entry(known).or_insert_with(|| Suggestion {
            pattern: format!("{known}/"),
            why: why.to_string(),
            dirs: 0,
            bytes: 0,
            example: path.clone(),
        });
        s.dirs += 1;
        s.bytes += bytes;
        if *bytes > dirs.get(&s.example).map(|d| d.0).unwrap_or(0) {
            s.example = path.clone();
        }
    }
    let mut dirs: Vec<Sized> = dirs
        .into_iter()
        .map(|(path, (bytes, files))| Sized { path, bytes, files })
        .collect();
    dirs.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.path.cmp(&b.path)));
    dirs.truncate(TOP);
    files.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.path.cmp(&b.path)));
    files.truncate(TOP);
    let mut suggestions: Vec<Suggestion> = by_pattern.into_values().collect();
    suggestions.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.pattern.cmp(&b.pattern)));
    Largest {
        dirs,
        files,
        suggestions,
    }
}
