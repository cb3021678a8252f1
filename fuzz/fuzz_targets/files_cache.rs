//! Fuzz the files-cache decoder (`cache/files`).
//!
//! Proves, for any bytes: `FilesCache::decode` never panics, neither on the
//! bytes as they are nor with their SHA-256 appended (so the checksum check
//! passes and the record parsing is reached); a damaged cache is `None`,
//! which a run answers by rebuilding it.
#![no_main]

use dotfiles_backup::hash::Hash;
use dotfiles_backup::repo::cache::FilesCache;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = FilesCache::decode(data);
    let mut sealed = data.to_vec();
    sealed.extend_from_slice(&Hash::of(data).0);
    let _ = FilesCache::decode(&sealed);
});
