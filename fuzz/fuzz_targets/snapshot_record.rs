//! Fuzz the snapshot-record decoder (`snapshots/<sha256>.json`).
//!
//! Proves, for any bytes: `dotfiles_backup::repo::decode_record` never panics
//! (an error is the only way to refuse), bytes under a wrong id are always
//! refused, a record it accepts has a version this build understands, and
//! that record's canonical encoding (`SnapshotRecord::encode`, what a run
//! writes) decodes back to the same record. The id passed is the bytes' own
//! SHA-256, so the fuzzer gets past the checksum into the JSON decoding.
#![no_main]

use std::path::Path;

use dotfiles_backup::hash::Hash;
use dotfiles_backup::repo::decode_record;
use dotfiles_backup::repo::snapshot::OBJECT_VERSION;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/repo/snapshots/fuzz.json");
    let id = Hash::of(data);
    let mut wrong = id;
    wrong.0[31] ^= 1;
    assert!(
        decode_record(data, &wrong, path).is_err(),
        "accepted under a wrong id"
    );
    let Ok(record) = decode_record(data, &id, path) else {
        return;
    };
    assert!(record.version <= OBJECT_VERSION);
    let (again_id, bytes) = record.encode();
    let again = decode_record(&bytes, &again_id, path).expect("a record's own encoding decodes");
    assert_eq!(record, again, "record changed through encode/decode");
});
