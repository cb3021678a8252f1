//! Names that a case-insensitive or normalising file system treats as one.
//!
//! A snapshot taken on Linux can hold `Foo` and `foo`, or the NFC and NFD
//! spellings of `café`, side by side. Restored into a directory that folds
//! names (macOS APFS/HFS+ by default, a Linux `chattr +F` casefold
//! directory), the second would silently replace the first: one file's
//! content lost, the other's under the wrong name. So restore refuses
//! before changing anything, naming every clashing pair ([`check`]); the
//! user picks one with `--path`, or restores elsewhere with `--target`.
//!
//! A name pair clashes only when (1) at least one of them is to be written
//! (a pair that already exists side by side can only be on a byte-exact
//! file system), and (2) the file system holding their directory folds the
//! difference, asked of the nearest existing directory ([`crate::sys::name_folding`];
//! ext4 casefold is inherited by new subdirectories and macOS folding is per
//! volume). The comparison approximates the file systems' own: Unicode NFD,
//! then Unicode full case folding ([`fold_case`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::paths::display_path;
use crate::sys::NameFolding;

/// Two or more spellings the file system holding `dir` treats as one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clash {
    /// The directory holding them.
    pub dir: Vec<u8>,
    /// The clashing names, sorted.
    pub names: Vec<Vec<u8>>,
    /// How that file system folds names.
    pub folding: NameFolding,
}

/// The name as a folding file system compares it. Names that are not UTF-8
/// are compared byte for byte (ext4 casefold does the same).
fn key(name: &[u8], folding: NameFolding) -> String {
    let Ok(s) = std::str::from_utf8(name) else {
        return format!("\u{0}{}", hex::encode(name));
    };
    let nfd: String = s.nfd().collect();
    match folding {
        NameFolding::Exact => s.to_string(),
        NameFolding::Normalization => nfd,
        NameFolding::CaseAndNormalization => fold_case(&nfd),
    }
}

/// Unicode case folding, approximated per character with the standard
/// library's full case mappings: lower(upper(lower(upper(c)))) sends `ß`,
/// `ẞ` and `SS` all to `ss`, and `ς`, `σ` and `Σ` to `σ`, as the file
/// systems' full folding does; the result is normalized to NFD again.
fn fold_case(s: &str) -> String {
    let up_low = |c: char| c.to_uppercase().flat_map(char::to_lowercase);
    s.chars()
        .flat_map(up_low)
        .flat_map(up_low)
        .collect::<String>()
        .nfd()
        .collect()
}

/// Every (directory, name) pair on the way to each path.
fn components<'a>(paths: impl Iterator<Item = &'a [u8]>) -> BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> {
    let mut out: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for p in paths {
        let mut end = p.len();
        while let Some(slash) = p[..end].iter().rposition(|b| *b == b'/') {
            let name = &p[slash + 1..end];
            if !name.is_empty() {
                let dir = if slash == 0 {
                    b"/".to_vec()
                } else {
                    p[..slash].to_vec()
                };
                out.entry(dir).or_default().insert(name.to_vec());
            }
            end = slash;
        }
    }
    out
}

/// The clashes among `written` (paths the restore creates or rewrites) and
/// `existing` (paths there now that stay or are removed), asking the file
/// system of each directory where a clash is possible at all.
pub fn clashes<'a>(
    written: impl Iterator<Item = &'a [u8]>,
    existing: impl Iterator<Item = &'a [u8]>,
) -> Vec<Clash> {
    let new = components(written);
    let old = components(existing);
    let mut out = Vec::new();
    for (dir, names) in &new {
        let mut all: BTreeSet<&Vec<u8>> = names.iter().collect();
        if let Some(o) = old.get(dir) {
            all.extend(o.iter());
        }
        // Cheap first pass with the most folding key; most directories stop here.
        if !has_duplicate_keys(&all, NameFolding::CaseAndNormalization) {
            continue;
        }
        let folding = folding_of(dir);
        let mut groups: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for n in &all {
            groups
                .entry(key(n, folding))
                .or_default()
                .push((*n).clone());
        }
        for group in groups.into_values() {
            if group.len() > 1 && group.iter().any(|n| names.contains(n)) {
                out.push(Clash {
                    dir: dir.clone(),
                    names: group,
                    folding,
                });
            }
        }
    }
    out
}

fn has_duplicate_keys(names: &BTreeSet<&Vec<u8>>, folding: NameFolding) -> bool {
    let mut seen = BTreeSet::new();
    names.iter().any(|n| !seen.insert(key(n, folding)))
}

/// Folding of the nearest existing directory at or above `dir`; when none can
/// be asked, the most folding (refusing a restore is safer than merging).
fn folding_of(dir: &[u8]) -> NameFolding {
    let mut p = Some(Path::new(OsStr::from_bytes(dir)));
    while let Some(cur) = p {
        if cur.is_dir() {
            return crate::sys::name_folding(cur).unwrap_or(NameFolding::CaseAndNormalization);
        }
        p = cur.parent();
    }
    NameFolding::CaseAndNormalization
}

/// Refuse (exit 5, `name_clash`) when any clash is found; nothing has been changed yet.
pub fn check<'a>(
    written: impl Iterator<Item = &'a [u8]>,
    existing: impl Iterator<Item = &'a [u8]>,
) -> Result<()> {
    let found = clashes(written, existing);
    let Some(first) = found.first() else {
        return Ok(());
    };
    let dir = Path::new(OsStr::from_bytes(&first.dir));
    let shown: Vec<String> = first
        .names
        .iter()
        .map(|n| format!("'{}'", String::from_utf8_lossy(n)))
        .collect();
    let how = match first.folding {
        NameFolding::Normalization => "Unicode normalization (NFC/NFD)",
        _ => "case or Unicode normalization",
    };
    Err(Error::new(
        ExitCode::Refused,
        "name_clash",
        format!(
            "{} name clash(es): {} in {} differ only in {how}, and the file system there treats them as one name; restoring would merge them, so nothing was changed",
            found.len(),
            shown.join(" and "),
            display_path(dir)
        ),
    )
    .with_path(dir)
    .with_hint("restore one of them with --path, or all of them with --target DIR on a case-sensitive file system, then rename by hand"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> String {
        key(s.as_bytes(), NameFolding::CaseAndNormalization)
    }

    #[test]
    fn case_and_normalization_fold_to_one_key() {
        assert_eq!(k("Foo"), k("foo"));
        assert_eq!(k("FOO.TXT"), k("foo.txt"));
        assert_eq!(k("caf\u{e9}"), k("cafe\u{301}"));
        assert_eq!(k("CAF\u{c9}"), k("cafe\u{301}"));
        assert_ne!(k("foo"), k("fo"));
        assert_eq!(k("Stra\u{df}e"), k("STRASSE"));
        assert_eq!(k("\u{3a3}\u{3a3}"), k("\u{3c3}\u{3c2}"));
        assert_eq!(
            key(b"caf\xc3\xa9", NameFolding::Normalization),
            key("cafe\u{301}".as_bytes(), NameFolding::Normalization)
        );
        assert_ne!(
            key(b"Foo", NameFolding::Normalization),
            key(b"foo", NameFolding::Normalization)
        );
        assert_ne!(
            key(b"Foo", NameFolding::Exact),
            key(b"foo", NameFolding::Exact)
        );
        // Not UTF-8: byte-exact, never equal to a UTF-8 name.
        assert_ne!(
            k("\u{fffd}"),
            key(b"\xff", NameFolding::CaseAndNormalization)
        );
        assert_eq!(
            key(b"\xff", NameFolding::CaseAndNormalization),
            key(b"\xff", NameFolding::Exact)
        );
    }

    #[test]
    fn components_lists_every_level() {
        let c = components([b"/h/Dir/a".as_slice(), b"/h/dir/b".as_slice()].into_iter());
        assert_eq!(c[b"/h".as_slice()].len(), 2);
        assert!(c[b"/".as_slice()].contains(b"h".as_slice()));
    }

    #[test]
    fn a_byte_exact_directory_has_no_clashes() {
        // tempdir is on an ordinary (byte-exact) file system in the test environment.
        let d = tempfile::tempdir().unwrap();
        let base = d.path().as_os_str().as_bytes().to_vec();
        let a = [base.clone(), b"/Foo".to_vec()].concat();
        let b = [base.clone(), b"/foo".to_vec()].concat();
        if crate::sys::name_folding(d.path()).unwrap() == NameFolding::Exact {
            assert!(
                clashes([a.as_slice(), b.as_slice()].into_iter(), std::iter::empty()).is_empty()
            );
        }
        // A directory that does not exist yet is asked through its parent.
        let deep = [base, b"/new/sub/Foo".to_vec()].concat();
        let deep2 = [deep[..deep.len() - 3].to_vec(), b"foo".to_vec()].concat();
        let found = clashes(
            [deep.as_slice(), deep2.as_slice()].into_iter(),
            std::iter::empty(),
        );
        assert_eq!(
            found.is_empty(),
            folding_of(d.path().as_os_str().as_bytes()) == NameFolding::Exact
        );
    }
}
