//! Fuzz the binary index parser (`index/<sha256>`) and the pack trailer
//! parser (`packs/<sha256>`).
//!
//! Proves, for any bytes: `Index::from_bytes` never panics, and an index it
//! accepts holds no more blobs than its byte length can describe (53 bytes
//! per record after the 16-byte header); `pack::read_trailer` never panics on
//! the same bytes as a pack file, nor on them with the trailer magic
//! appended (so the fuzzer's last four bytes become the record count and the
//! record checks are reached), and every blob location it accepts lies inside
//! the blob area: at or after the 8-byte magic and before the trailer.
//!
//! `read_trailer` takes a path, so the bytes are written to one scratch file
//! per process, rewritten on every input and read back through
//! `/proc/self/fd/N`. It is unlinked as soon as it is made (nothing is left
//! behind) and made in `/dev/shm` when there is one (a file on disk costs
//! 25 times the runs), else in `$TMPDIR`.
#![no_main]

use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use dotfiles_backup::repo::index::Index;
use dotfiles_backup::repo::pack::{read_trailer, TRAILER_MAGIC, TRAILER_RECORD};
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static (Mutex<File>, PathBuf) {
    static SCRATCH: OnceLock<(Mutex<File>, PathBuf)> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!("dfb-fuzz-pack.{}", std::process::id()));
        let file = File::create(&path).expect("creating the scratch pack");
        std::fs::remove_file(&path).expect("unlinking the scratch pack");
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        (Mutex::new(file), proc_path)
    })
}

fn check_pack(bytes: &[u8]) {
    let (file, path) = scratch();
    let mut file = file.lock().expect("scratch lock");
    file.set_len(0).expect("truncating the scratch pack");
    file.rewind().expect("rewinding the scratch pack");
    file.write_all(bytes).expect("writing the scratch pack");
    let Ok(blobs) = read_trailer(path) else {
        return;
    };
    let size = bytes.len() as u64;
    let data_end = size - 12 - (blobs.len() * TRAILER_RECORD) as u64;
    for b in &blobs {
        assert!(b.offset >= 8, "blob before the pack magic: {b:?}");
        assert!(
            b.offset + b.length <= data_end,
            "blob past the blob area ({data_end}): {b:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = Index::from_bytes(data, Path::new("/repo/index/fuzz")) {
        assert!(index.blobs.len() <= data.len().saturating_sub(16) / 53);
        assert!(index.files.is_empty());
    }
    check_pack(data);
    if !data.ends_with(TRAILER_MAGIC) {
        let mut with_magic = data.to_vec();
        with_magic.extend_from_slice(TRAILER_MAGIC);
        check_pack(&with_magic);
    }
});
