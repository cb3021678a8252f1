//! Property: any tree (names with arbitrary bytes including non-UTF-8, random
//! modes, symlinks with arbitrary targets, empty directories, files of 0..64 KiB)
//! checkpointed with `--path` is listed back by `backup-list --files --json`
//! with every entry's true type, mode, size, sha256, mtime and symlink target,
//! and nothing else; the stored tree keeps symlink targets byte for byte.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use proptest::prelude::*;
use serde_json::Value;

/// Bytes names are made of: ASCII, a space, a newline, a backslash, glob
/// characters, and bytes that are never valid UTF-8 on their own. No `.`
/// (so no `.`/`..` and no hidden names that default excludes or secret
/// patterns could match), no `/`, no NUL.
const ALPHABET: &[u8] = b"abZ09 \n\\*-_\x80\xc3\xe9\xfe\xff";

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(ALPHABET), 1..6)
}

#[derive(Debug, Clone)]
enum Node {
    File { content: Vec<u8>, mode: u32 },
    Link { target: Vec<u8> },
    EmptyDir { mode: u32 },
}

fn node() -> impl Strategy<Value = Node> {
    prop_oneof![
        6 => (
            prop_oneof![
                3 => prop::collection::vec(any::<u8>(), 0..512),
                1 => (0usize..=64 * 1024, any::<u64>()).prop_map(|(n, seed)| noise(n, seed)),
            ],
            // Owner can always read (the tool runs as the owner, maybe not as root).
            (0u32..0o1000).prop_map(|m| m | 0o400),
        )
            .prop_map(|(content, mode)| Node::File { content, mode }),
        2 => prop::collection::vec(any::<u8>().prop_filter("no NUL", |b| *b != 0), 1..24)
            .prop_map(|target| Node::Link { target }),
        1 => prop::sample::select(vec![0o700u32, 0o755, 0o750, 0o711])
            .prop_map(|mode| Node::EmptyDir { mode }),
    ]
}

/// (parent dir components, leaf name, node).
type Item = (Vec<Vec<u8>>, Vec<u8>, Node);

fn spec() -> impl Strategy<Value = Vec<Item>> {
    prop::collection::vec((prop::collection::vec(name(), 0..3), name(), node()), 1..14)
}

/// Create the tree; entries that collide with earlier ones are skipped (the disk
/// is the oracle, not the spec). Directories get their modes last.
fn build(root: &Path, spec: &[Item], dir_mode: u32) {
    std::fs::create_dir_all(root).unwrap();
    let mut dir_modes: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    for (parents, leaf, node) in spec {
        let mut rel: Vec<u8> = Vec::new();
        let mut ok = true;
        for p in parents {
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(p);
            let path = root.join(OsStr::from_bytes(&rel));
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    ok = false;
                    break;
                }
                Err(_) => {
                    std::fs::create_dir(&path).unwrap();
                    dir_modes.insert(rel.clone(), dir_mode);
                }
            }
        }
        if !ok {
            continue;
        }
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(leaf);
        let path = root.join(OsStr::from_bytes(&rel));
        if std::fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        match node {
            Node::File { content, mode } => {
                std::fs::write(&path, content).unwrap();
                set_mode(&path, *mode);
            }
            Node::Link { target } => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &path).unwrap();
            }
            Node::EmptyDir { mode } => {
                std::fs::create_dir(&path).unwrap();
                dir_modes.insert(rel.clone(), *mode);
            }
        }
    }
    // Deepest first, so a parent's mode never blocks setting a child's.
    let mut dirs: Vec<(Vec<u8>, u32)> = dir_modes.into_iter().collect();
    dirs.sort_by_key(|(r, _)| std::cmp::Reverse(r.len()));
    for (rel, mode) in dirs {
        set_mode(&root.join(OsStr::from_bytes(&rel)), mode);
    }
}

fn check(spec: &[Item], dir_mode: u32) -> Result<(), TestCaseError> {
    let e = TestEnv::new();
    let root = e.home.join("t");
    build(&root, spec, dir_mode);
    let (rc, v) = e.json("backup-checkpoint", &["manual", "prop", "--path", "~/t"]);
    prop_assert_eq!(rc, 0, "{:#}", v);
    prop_assert_eq!(&v["status"], "success");
    let (rc, listed) = e.json("backup-list", &["prop", "--files"]);
    prop_assert_eq!(rc, 0, "{:#}", listed);
    let entries: BTreeMap<Vec<u8>, &Value> = listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (entry_path_bytes(x), x))
        .collect();

    // The stored tree, read through the library: targets must be verbatim.
    let repo = dotfiles_backup::repo::Repository::open(&e.repo).unwrap();
    let snaps = repo.snapshots().unwrap();
    prop_assert_eq!(snaps.len(), 1);
    let tree = repo.tree(&snaps[0].record.tree).unwrap();
    let stored_targets: BTreeMap<Vec<u8>, Vec<u8>> = tree
        .entries()
        .filter_map(|(_, en)| en.target.as_ref().map(|t| (en.path.0.clone(), t.0.clone())))
        .collect();

    let mut expected = vec![b"~/t".to_vec()];
    for (rel, meta) in walk(&root) {
        let mut full = b"~/t/".to_vec();
        full.extend_from_slice(&rel);
        expected.push(full.clone());
        let what = String::from_utf8_lossy(&full).into_owned();
        let x = match entries.get(&full) {
            Some(x) => *x,
            None => return Err(TestCaseError::fail(format!("{what:?} not listed"))),
        };
        prop_assert_eq!(
            x["path_b64"].is_null(),
            std::str::from_utf8(&full).is_ok(),
            "{:?}",
            what
        );
        prop_assert_eq!(
            x["mtime_ns"].as_i64().unwrap(),
            mtime_ns(&meta),
            "{:?}",
            what
        );
        let path = root.join(OsStr::from_bytes(&rel));
        let t = meta.file_type();
        if t.is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            let tb = target.as_os_str().as_bytes();
            prop_assert_eq!(&x["type"], "symlink", "{:?}", what);
            prop_assert_eq!(x["size"].as_u64().unwrap(), tb.len() as u64, "{:?}", what);
            prop_assert_eq!(
                x["target"].as_str().unwrap(),
                String::from_utf8_lossy(tb),
                "{:?}",
                what
            );
            prop_assert_eq!(
                stored_targets.get(&rel).map(Vec::as_slice),
                Some(tb),
                "stored target of {:?} is verbatim",
                what
            );
        } else if t.is_dir() {
            prop_assert_eq!(&x["type"], "dir", "{:?}", what);
            prop_assert_eq!(
                x["mode"].as_str().unwrap(),
                format!("{:04o}", meta.mode() & 0o7777),
                "{:?}",
                what
            );
        } else {
            let bytes = std::fs::read(&path).unwrap();
            prop_assert_eq!(&x["type"], "file", "{:?}", what);
            prop_assert_eq!(
                x["size"].as_u64().unwrap(),
                bytes.len() as u64,
                "{:?}",
                what
            );
            prop_assert_eq!(
                x["mode"].as_str().unwrap(),
                format!("{:04o}", meta.mode() & 0o7777),
                "{:?}",
                what
            );
            prop_assert_eq!(
                x["sha256"].as_str().unwrap(),
                sha256_hex(&bytes),
                "{:?}",
                what
            );
        }
    }
    expected.sort();
    let got: Vec<Vec<u8>> = entries.keys().cloned().collect();
    prop_assert_eq!(got, expected, "exactly the entries on disk are listed");
    // And the repository is whole.
    let (rc, v) = e.json("backup-verify", &["--read-data"]);
    prop_assert_eq!(rc, 0, "{:#}", v);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_entry_of_any_tree_is_listed_with_its_true_facts(
        spec in spec(),
        dir_mode in prop::sample::select(vec![0o700u32, 0o755, 0o750]),
    ) {
        check(&spec, dir_mode)?;
    }
}

/// The odd tree of `common` as a fixed case (5 MB streamed file, all link kinds).
#[test]
fn odd_tree_round_trips_through_the_listing() {
    let e = TestEnv::new();
    build_odd_tree(&e.home.join("t"));
    let (rc, v) = e.json("backup-checkpoint", &["manual", "prop", "--path", "~/t"]);
    assert_eq!(rc, 0, "{v:#}");
    let (_, listed) = e.json("backup-list", &["prop", "--files"]);
    let big = listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["path"] == "~/t/big.bin")
        .unwrap();
    assert_eq!(big["size"], BIG_FILE_SIZE);
    assert_eq!(big["sha256"], sha256_hex(&noise(BIG_FILE_SIZE, 5)));
    let latin = listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| entry_path_bytes(x) == b"~/t/caf\xe9")
        .expect("non-UTF-8 name listed via path_b64");
    assert_eq!(latin["sha256"], sha256_hex(b"latin-1 name\n"));
}
