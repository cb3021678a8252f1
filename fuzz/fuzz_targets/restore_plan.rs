//! Fuzz the restore/rollback planner: tree → `flatten` (with the real
//! `placer`) → `plan`, the pipeline `backup-restore`/`backup-rollback` run
//! before touching anything.
//!
//! The desired tree comes from the input: as tree JSON when it is one (the
//! seeds are real trees), otherwise built with `arbitrary` from path
//! components chosen to be hostile (`..`, `.`, empty, NUL, `/`, non-UTF-8).
//! Either way it goes through `repo::decode_tree`, as a tree read from a
//! repository does. The current state is empty, the same tree with some
//! entries changed or dropped, or a second fuzzed tree.
//!
//! Proves, for any tree: nothing panics, and every action the plan lists
//! * names an absolute path with no NUL and no empty, `.` or `..` component;
//! * lies at or beneath its anchor: the `--target` directory when one is
//!   given, otherwise `$HOME` or one of the configured absolute roots;
//! * appears once, and belongs to the desired or the current state (and
//!   carries the desired entry exactly when the path is desired);
//! * is never a delete when restoring (restore never deletes), and deletes
//!   of a rollback come deepest first (a child before its directory).
#![no_main]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use dotfiles_backup::config::TrackedRoot;
use dotfiles_backup::hash::Hash;
use dotfiles_backup::ops::restore::{flatten, placer, plan, ActionKind, Mode2, Overwrite, State};
use dotfiles_backup::paths::{unsafe_relative_path, ByteName};
use dotfiles_backup::repo::decode_tree;
use dotfiles_backup::repo::snapshot::{Entry, EntryType, RootTree, Sealed, Tree};
use libfuzzer_sys::fuzz_target;

const HOME: &str = "/home/fuzz";
const TARGET: &str = "/srv/restore-target";
const CONFIGURED: [&str; 2] = ["/etc/fuzz.conf", "/opt/fuzz"];

/// Path components a fuzzed path is made of: ordinary names and every kind
/// of component that could escape a root.
const COMPONENTS: [&[u8]; 12] = [
    b"a",
    b"b",
    b".config",
    b"nvim",
    b"..",
    b".",
    b"",
    b"x\0y",
    b"/",
    b"\xff\xfe",
    b"~",
    b"fuzz.conf",
];

#[derive(Arbitrary, Debug)]
enum FuzzPath {
    Parts(Vec<u8>),
    Raw(Vec<u8>),
}

impl FuzzPath {
    fn bytes(&self) -> Vec<u8> {
        match self {
            FuzzPath::Raw(b) => b.clone(),
            FuzzPath::Parts(p) => p
                .iter()
                .map(|i| COMPONENTS[*i as usize % COMPONENTS.len()])
                .collect::<Vec<_>>()
                .join(&b'/'),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum FuzzRootName {
    Home(FuzzPath),
    Absolute(FuzzPath),
    Configured(u8),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct FuzzEntry {
    path: FuzzPath,
    kind: u8,
    mode: u16,
    uid: u8,
    gid: u8,
    mtime_ns: i64,
    size: u64,
    content: Option<u8>,
    target: Option<Vec<u8>>,
    omitted: bool,
    sealed: bool,
}

#[derive(Arbitrary, Debug)]
struct FuzzRoot {
    root: FuzzRootName,
    present: bool,
    entries: Vec<FuzzEntry>,
}

#[derive(Arbitrary, Debug)]
struct FuzzInput {
    mode: u8,
    use_target: bool,
    desired: Vec<FuzzRoot>,
    current: Option<Vec<FuzzRoot>>,
}

fn entry(f: &FuzzEntry) -> Entry {
    let kind = [EntryType::File, EntryType::Dir, EntryType::Symlink][f.kind as usize % 3];
    Entry {
        path: ByteName(f.path.bytes()),
        kind,
        mode: u32::from(f.mode),
        uid: u32::from(f.uid),
        gid: u32::from(f.gid),
        mtime_ns: f.mtime_ns,
        size: f.size,
        sha256: f.content.map(|c| Hash::of(&[c])),
        target: f.target.clone().map(ByteName),
        omitted: f.omitted.then(|| "secret".to_string()),
        sealed: f.sealed.then(|| Sealed {
            id: Hash::of(b"sealed"),
            key: "0123456789abcdef".into(),
        }),
    }
}

fn tree(roots: &[FuzzRoot]) -> Tree {
    Tree {
        version: 1,
        roots: roots
            .iter()
            .map(|r| RootTree {
                root: ByteName(match &r.root {
                    FuzzRootName::Home(p) => [b"~/".as_slice(), &p.bytes()].concat(),
                    FuzzRootName::Absolute(p) => [b"/".as_slice(), &p.bytes()].concat(),
                    FuzzRootName::Configured(i) => CONFIGURED[*i as usize % CONFIGURED.len()]
                        .as_bytes()
                        .to_vec(),
                    FuzzRootName::Raw(b) => b.clone(),
                }),
                present: r.present,
                entries: r.entries.iter().map(entry).collect(),
                link: None,
            })
            .collect(),
    }
}

/// The tree as a repository would hand it over: encoded, then decoded and validated.
fn through_repo(tree: &Tree) -> Option<Tree> {
    let (id, bytes) = tree.encode();
    decode_tree(&bytes, &id, Path::new("/repo/trees/fuzz.json")).ok()
}

/// The current state derived from the desired tree: every third entry
/// dropped, every other one's mtime and size changed.
fn perturbed(tree: &Tree) -> Tree {
    let mut t = tree.clone();
    for r in &mut t.roots {
        let mut n = 0usize;
        r.entries.retain_mut(|e| {
            n += 1;
            if n.is_multiple_of(2) {
                e.mtime_ns = e.mtime_ns.wrapping_add(1);
                e.size = e.size.wrapping_add(1);
            }
            !n.is_multiple_of(3)
        });
    }
    t
}

fn check_path(abs: &[u8], target: Option<&str>) {
    assert!(!abs.contains(&0), "NUL in planned path {abs:?}");
    assert!(abs.starts_with(b"/"), "planned path not absolute: {abs:?}");
    assert!(
        unsafe_relative_path(&abs[1..]).is_none(),
        "planned path {:?} has an unsafe component",
        String::from_utf8_lossy(abs)
    );
    let anchors: Vec<&str> = match target {
        Some(t) => vec![t],
        None => std::iter::once(HOME).chain(CONFIGURED).collect(),
    };
    let beneath = anchors.iter().any(|a| {
        let a = a.as_bytes();
        abs == a || (abs.starts_with(a) && abs.get(a.len()) == Some(&b'/'))
    });
    assert!(
        beneath,
        "planned path {:?} escapes its anchors {anchors:?}",
        String::from_utf8_lossy(abs)
    );
}

fn run(desired_tree: &Tree, current_tree: Option<&Tree>, mode_byte: u8, use_target: bool) {
    let configured: Vec<TrackedRoot> = CONFIGURED
        .iter()
        .map(|p| TrackedRoot {
            shown: PathBuf::from(p),
            abs: PathBuf::from(p),
        })
        .collect();
    let target = use_target.then_some(TARGET);
    let place = placer(Some(Path::new(HOME)), target.map(Path::new), &configured);
    let Ok((desired, roots)) = flatten(desired_tree, &place) else {
        return;
    };
    for r in &roots {
        check_path(r.as_os_str().as_encoded_bytes(), target);
    }
    let current: State = current_tree
        .and_then(|t| flatten(t, &place).ok())
        .map(|(s, _)| s)
        .unwrap_or_default();
    let mode = match mode_byte % 5 {
        0 => Mode2::Rollback { keep_new: false },
        1 => Mode2::Rollback { keep_new: true },
        2 => Mode2::Restore(Overwrite::Never),
        3 => Mode2::Restore(Overwrite::IfChanged),
        _ => Mode2::Restore(Overwrite::Always),
    };
    let actions = plan(&desired, &current, mode);
    let mut seen = BTreeSet::new();
    for (i, a) in actions.iter().enumerate() {
        check_path(&a.abs, target);
        assert!(
            seen.insert(a.abs.clone()),
            "path planned twice: {:?}",
            a.abs
        );
        match desired.get(&a.abs) {
            Some(want) => assert_eq!(a.desired.as_ref(), Some(want), "wrong desired entry"),
            None => {
                assert!(a.desired.is_none());
                assert!(
                    current.contains_key(&a.abs),
                    "action on a path in neither state"
                );
            }
        }
        if a.action == ActionKind::Delete {
            assert!(
                matches!(mode, Mode2::Rollback { .. }),
                "restore planned a delete of {:?}",
                a.abs
            );
            // Deepest first: nothing beneath a deleted path is deleted after it.
            let mut prefix = a.abs.clone();
            prefix.push(b'/');
            assert!(
                !actions[i + 1..]
                    .iter()
                    .any(|b| b.action == ActionKind::Delete && b.abs.starts_with(&prefix)),
                "a delete of {:?} comes before a delete beneath it",
                a.abs
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode_byte, rest)) = data.split_first() else {
        return;
    };
    if let Ok(t) = serde_json::from_slice::<Tree>(rest) {
        let Some(t) = through_repo(&t) else { return };
        let current = match mode_byte / 5 % 3 {
            0 => None,
            1 => Some(t.clone()),
            _ => Some(perturbed(&t)),
        };
        run(&t, current.as_ref(), mode_byte, mode_byte & 0x80 != 0);
        return;
    }
    let Ok(input) = FuzzInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let Some(desired) = through_repo(&tree(&input.desired)) else {
        return;
    };
    let current = input.current.as_deref().map(tree);
    run(&desired, current.as_ref(), input.mode, input.use_target);
});
