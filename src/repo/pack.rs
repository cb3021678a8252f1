//! Pack files: many blobs appended to one file, with a trailer that lists them.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! "DFBPACK1"                              8-byte magic
//! blob bytes, back to back                (encoding per blob: see flags)
//! trailer: N × { id[32] flags u8 offset u64 length u64 }   49 bytes each
//! N u32
//! "DFBTRLR1"                              8-byte magic
//! ```
//!
//! A pack is named by the SHA-256 of the whole file and never changes after
//! its rename into `packs/`. The trailer makes a pack self-describing, so a
//! lost or damaged index can be rebuilt from the packs alone.

use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use crate::atomic::{AtomicFile, Dir};
use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;

/// Magic at the start of every pack.
pub const PACK_MAGIC: &[u8; 8] = b"DFBPACK1";
/// Magic at the very end of every pack.
pub const TRAILER_MAGIC: &[u8; 8] = b"DFBTRLR1";
/// Bytes per trailer record.
pub const TRAILER_RECORD: usize = 32 + 1 + 8 + 8;
/// Blob stored as plain bytes; its id is the SHA-256 of those bytes.
pub const FLAG_PLAIN: u8 = 0;
/// Blob stored as an age file (a secret-class file encrypted to the configured
/// recipients); its id is a keyed hash of the plaintext (see `src/secrets.rs`).
pub const FLAG_AGE: u8 = 1;

/// Packs are closed once they reach this size (a single larger blob makes a larger pack).
pub const PACK_TARGET_SIZE: u64 = 32 << 20;

const BUFFER: usize = 1 << 20;
/// Start writeback of a pack every this many bytes (see [`crate::sys::start_writeback`]).
const WRITEBACK_STEP: u64 = 8 << 20;
/// Chunks of a streamed blob in flight between the reading and the writing thread.
const STREAM_DEPTH: usize = 4;

/// One blob inside a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedBlob {
    /// The blob's id.
    pub id: Hash,
    /// Encoding flags (`FLAG_PLAIN`).
    pub flags: u8,
    /// Offset of the blob's first byte in the pack file.
    pub offset: u64,
    /// Stored length in bytes.
    pub length: u64,
}

/// A pack that has been renamed into place (but whose directory may not be synced yet).
#[derive(Debug, Clone)]
pub struct FinishedPack {
    /// SHA-256 of the pack file.
    pub id: Hash,
    /// Blobs in it.
    pub blobs: Vec<PackedBlob>,
    /// Size of the pack file.
    pub size: u64,
}

struct OpenPack<'d> {
    file: AtomicFile<'d>,
    hasher: Sha256,
    buffer: Vec<u8>,
    written: u64,
    /// Bytes of the file already handed to the kernel's writeback.
    writeback_started: u64,
    blobs: Vec<PackedBlob>,
}

/// Appends blobs to packs in `packs/`, closing each at [`PACK_TARGET_SIZE`].
pub struct PackWriter<'d> {
    dir: &'d Dir,
    open: Option<OpenPack<'d>>,
    finished: Vec<FinishedPack>,
}

impl<'d> PackWriter<'d> {
    /// A writer for the `packs/` directory.
    pub fn new(dir: &'d Dir) -> Self {
        PackWriter {
            dir,
            open: None,
            finished: Vec::new(),
        }
    }

    fn ensure_open(&mut self) -> Result<&mut OpenPack<'d>> {
        if self.open.is_none() {
            let file = self.dir.create_atomic(OsStr::new("pack"), 0o600)?;
            let mut pack = OpenPack {
                file,
                hasher: Sha256::new(),
                buffer: Vec::with_capacity(BUFFER),
                written: 0,
                writeback_started: 0,
                blobs: Vec::new(),
            };
            pack.append(PACK_MAGIC)?;
            self.open = Some(pack);
        }
        Ok(self.open.as_mut().expect("just opened"))
    }

    /// Append a blob whose bytes are in memory.
    pub fn add(&mut self, id: Hash, flags: u8, data: &[u8]) -> Result<()> {
        let pack = self.ensure_open()?;
        let offset = pack.written;
        pack.append(data)?;
        pack.blobs.push(PackedBlob {
            id,
            flags,
            offset,
            length: data.len() as u64,
        });
        self.roll_if_full()
    }

    /// Append a plain blob streamed from `reader`, returning its id and length.
    ///
    /// The bytes are hashed as they are copied, so the id always matches the
    /// stored bytes. If `keep(&id)` returns false (the blob turned out to be
    /// known already, or the source changed) the appended bytes are cut off
    /// again. The outer error is a failure of the pack (fatal for the run);
    /// the inner one a failure reading the source (that file only).
    ///
    /// Every byte goes through two SHA-256 streams (the blob's id and the
    /// pack's name), so they run on two threads: a helper reads and hashes the
    /// blob while this thread hashes and writes the pack (see
    /// docs/performance.md, "large files").
    pub fn add_stream(
        &mut self,
        reader: &mut (dyn Read + Send),
        source: &Path,
        keep: &dyn Fn(&Hash) -> bool,
    ) -> Result<Result<(Hash, u64)>> {
        let pack = self.ensure_open()?;
        pack.flush()?;
        let start = pack.written;
        let start_hasher = pack.hasher.clone();
        let (full_tx, full_rx) = mpsc::sync_channel::<Vec<u8>>(STREAM_DEPTH);
        let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
        let mut pack_error = None;
        let read = std::thread::scope(|s| {
            let helper = s.spawn(move || -> std::io::Result<Hash> {
                let mut blob_hasher = Sha256::new();
                loop {
                    // Buffers come back from the writer; at most STREAM_DEPTH + 2 exist.
                    let mut chunk = free_rx.try_recv().unwrap_or_default();
                    chunk.resize(BUFFER, 0);
                    let n = loop {
                        match reader.read(&mut chunk) {
                            Ok(n) => break n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            Err(e) => return Err(e),
                        }
                    };
                    if n == 0 {
                        return Ok(Hash::from_hasher(blob_hasher));
                    }
                    chunk.truncate(n);
                    blob_hasher.update(&chunk);
                    if full_tx.send(chunk).is_err() {
                        // The writer stopped on a pack error; that error is reported.
                        return Ok(Hash::default());
                    }
                }
            });
            while let Ok(chunk) = full_rx.recv() {
                if let Err(e) = pack.append(&chunk) {
                    pack_error = Some(e);
                    break;
                }
                let _ = free_tx.send(chunk);
            }
            drop(full_rx);
            match helper.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        });
        if let Some(e) = pack_error {
            return Err(e);
        }
        let id = match read {
            Ok(id) => id,
            Err(e) => {
                pack.rewind_to(start, start_hasher)?;
                return Ok(Err(Error::io("reading", source, &e)));
            }
        };
        let length = pack.written - start;
        if keep(&id) {
            pack.blobs.push(PackedBlob {
                id,
                flags: FLAG_PLAIN,
                offset: start,
                length,
            });
            self.roll_if_full()?;
        } else {
            pack.rewind_to(start, start_hasher)?;
        }
        Ok(Ok((id, length)))
    }

    fn roll_if_full(&mut self) -> Result<()> {
        if self
            .open
            .as_ref()
            .is_some_and(|p| p.written >= PACK_TARGET_SIZE)
        {
            self.close_current()?;
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        let Some(mut pack) = self.open.take() else {
            return Ok(());
        };
        if pack.blobs.is_empty() {
            return Ok(()); // dropping removes the temp file
        }
        let mut trailer = Vec::with_capacity(pack.blobs.len() * TRAILER_RECORD + 12);
        for b in &pack.blobs {
            trailer.extend_from_slice(&b.id.0);
            trailer.push(b.flags);
            trailer.extend_from_slice(&b.offset.to_le_bytes());
            trailer.extend_from_slice(&b.length.to_le_bytes());
        }
        trailer.extend_from_slice(&(pack.blobs.len() as u32).to_le_bytes());
        trailer.extend_from_slice(TRAILER_MAGIC);
        pack.append(&trailer)?;
        pack.flush()?;
        let id = Hash::from_hasher(pack.hasher.clone());
        pack.file.set_final_name(OsStr::new(&id.to_hex()));
        let size = pack.written;
        let blobs = std::mem::take(&mut pack.blobs);
        // One fsync per pack; the directory is synced once by `finish`.
        pack.file.commit(false)?;
        self.finished.push(FinishedPack { id, blobs, size });
        Ok(())
    }

    /// Close the open pack and make every pack's directory entry durable.
    pub fn finish(mut self) -> Result<Vec<FinishedPack>> {
        self.close_current()?;
        if !self.finished.is_empty() {
            self.dir.sync()?;
        }
        Ok(std::mem::take(&mut self.finished))
    }

    /// Bytes appended to packs so far (including headers and trailers of closed packs).
    pub fn bytes_written(&self) -> u64 {
        self.finished.iter().map(|p| p.size).sum::<u64>()
            + self.open.as_ref().map_or(0, |p| p.written)
    }
}

impl OpenPack<'_> {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        self.written += data.len() as u64;
        if self.buffer.len() + data.len() > BUFFER {
            self.flush()?;
        }
        if data.len() >= BUFFER {
            self.write_out(data)?;
        } else {
            self.buffer.extend_from_slice(data);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.buffer.is_empty() {
            let buffer = std::mem::take(&mut self.buffer);
            let res = self.write_out(&buffer);
            self.buffer = buffer;
            self.buffer.clear();
            res?;
        }
        Ok(())
    }

    fn write_out(&mut self, data: &[u8]) -> Result<()> {
        let res = self.file.file().write_all(data);
        res.map_err(|e| Error::io("writing pack", &self.file.temp_path(), &e))?;
        let on_disk = self.written - self.buffer.len() as u64;
        if on_disk - self.writeback_started >= WRITEBACK_STEP {
            // Starts the drive early on Linux so the pack's sync at close does
            // not stall on all 32 MiB at once (docs/performance.md).
            crate::sys::start_writeback(self.file.file(), self.writeback_started, on_disk);
            self.writeback_started = on_disk;
        }
        Ok(())
    }

    /// Cut the pack back to `len` bytes (all flushed) and restore the hasher state.
    fn rewind_to(&mut self, len: u64, hasher: Sha256) -> Result<()> {
        self.buffer.clear();
        let path = self.file.temp_path();
        let f = self.file.file();
        f.set_len(len).ctx("truncating pack", &path)?;
        f.seek(SeekFrom::Start(len)).ctx("seeking in pack", &path)?;
        self.written = len;
        self.writeback_started = self.writeback_started.min(len);
        self.hasher = hasher;
        Ok(())
    }
}

/// Parse a pack's trailer from its last bytes, checking it against the file size.
pub fn read_trailer(path: &Path) -> Result<Vec<PackedBlob>> {
    let (mut f, size) = crate::repo::open_object(path, "pack", Some("missing_pack"), u64::MAX)?;
    let bad = |why: &str| {
        Error::corrupt(
            "corrupt_pack",
            path,
            format!("pack {}: {why}", path.display()),
        )
    };
    if size < 8 + 12 {
        return Err(bad("too short to be a pack"));
    }
    let mut tail = [0u8; 12];
    f.seek(SeekFrom::Start(size - 12))
        .ctx("seeking in pack", path)?;
    f.read_exact(&mut tail).ctx("reading pack", path)?;
    if &tail[4..] != TRAILER_MAGIC {
        return Err(bad("trailer magic missing (truncated?)"));
    }
    let count = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
    let trailer_len = count * TRAILER_RECORD as u64;
    if trailer_len + 12 + 8 > size {
        return Err(bad("trailer longer than the file"));
    }
    let data_end = size - 12 - trailer_len;
    let mut raw = vec![0u8; trailer_len as usize];
    f.seek(SeekFrom::Start(data_end))
        .ctx("seeking in pack", path)?;
    f.read_exact(&mut raw).ctx("reading pack", path)?;
    let mut out = Vec::with_capacity(count as usize);
    for rec in raw.chunks_exact(TRAILER_RECORD) {
        let b = PackedBlob {
            id: Hash(rec[..32].try_into().expect("32 bytes")),
            flags: rec[32],
            offset: u64::from_le_bytes(rec[33..41].try_into().expect("8 bytes")),
            length: u64::from_le_bytes(rec[41..49].try_into().expect("8 bytes")),
        };
        if b.offset < 8
            || b.offset
                .checked_add(b.length)
                .is_none_or(|end| end > data_end)
        {
            return Err(bad("a trailer record points outside the blob area"));
        }
        out.push(b);
    }
    Ok(out)
}

/// Path of a pack by id under a repository's `packs/` directory.
pub fn pack_path(packs_dir: &Path, id: &Hash) -> PathBuf {
    packs_dir.join(id.to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_round_trip_and_are_named_by_their_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        let mut w = PackWriter::new(&dir);
        w.add(Hash::of(b"one"), FLAG_PLAIN, b"one").unwrap();
        let (id, len) = w
            .add_stream(&mut &b"streamed two"[..], Path::new("x"), &|_| true)
            .unwrap()
            .unwrap();
        assert_eq!(id, Hash::of(b"streamed two"));
        assert_eq!(len, 12);
        // A duplicate streamed blob is cut off again.
        w.add_stream(&mut &b"dup"[..], Path::new("y"), &|_| false)
            .unwrap()
            .unwrap();
        let packs = w.finish().unwrap();
        assert_eq!(packs.len(), 1);
        let path = pack_path(tmp.path(), &packs[0].id);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(Hash::of(&bytes), packs[0].id);
        let trailer = read_trailer(&path).unwrap();
        assert_eq!(trailer, packs[0].blobs);
        assert_eq!(trailer.len(), 2);
        let b = trailer[1];
        assert_eq!(
            &bytes[b.offset as usize..(b.offset + b.length) as usize],
            b"streamed two"
        );
    }

    #[test]
    fn empty_writer_leaves_no_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        let w = PackWriter::new(&dir);
        assert!(w.finish().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn truncated_pack_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        let mut w = PackWriter::new(&dir);
        w.add(Hash::of(b"abc"), FLAG_PLAIN, b"abc").unwrap();
        let packs = w.finish().unwrap();
        let path = pack_path(tmp.path(), &packs[0].id);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(read_trailer(&path).unwrap_err().code, "corrupt_pack");
    }
}
