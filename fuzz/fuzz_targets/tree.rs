//! Fuzz the tree decoder (`trees/<sha256>.json`).
//!
//! Proves, for any bytes: `dotfiles_backup::repo::decode_tree` never panics,
//! bytes under a wrong id are always refused, and a tree it accepts has a
//! version this build understands, no entry whose mode has bits above 0o7777
//! and no uid/gid of -1 (the values that would reach chmod/chown as something
//! else), and re-encodes (`Tree::encode`, what a run writes) to bytes that
//! decode to the same tree. The id passed is the bytes' own SHA-256, so the
//! fuzzer gets past the checksum into the JSON decoding.
#![no_main]

use std::path::Path;

use dotfiles_backup::hash::Hash;
use dotfiles_backup::repo::decode_tree;
use dotfiles_backup::repo::snapshot::OBJECT_VERSION;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/repo/trees/fuzz.json");
    let id = Hash::of(data);
    let mut wrong = id;
    wrong.0[0] ^= 0x80;
    assert!(
        decode_tree(data, &wrong, path).is_err(),
        "accepted under a wrong id"
    );
    let Ok(tree) = decode_tree(data, &id, path) else {
        return;
    };
    assert!(tree.version <= OBJECT_VERSION);
    for (_, e) in tree.entries() {
        assert!(e.mode <= 0o7777, "mode {:o} accepted", e.mode);
        assert!(
            e.uid != u32::MAX && e.gid != u32::MAX,
            "uid/gid -1 accepted"
        );
    }
    let (again_id, bytes) = tree.encode();
    let again = decode_tree(&bytes, &again_id, path).expect("a tree's own encoding decodes");
    assert_eq!(tree, again, "tree changed through encode/decode");
});
