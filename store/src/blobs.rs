//! The blob CAS: `.cairn/cas/ab/cdef…`, one read-only file per distinct
//! content, named by the blake3 of that content.
//!
//! Invariants:
//! - A blob file is only ever created by renaming a complete temp file from
//!   `.cairn/cas/tmp/` (same file system) onto its final name, so a reader
//!   never sees a half-written blob under a digest's name. Temp names are
//!   `<pid>-<counter>`, unique across the threads and processes of one store.
//!   An adopted file (below) is linked into `tmp/` and renamed the same way.
//! - The digest of a stored blob is computed from the bytes that were written
//!   (the in-memory buffer or the temp copy), never from a source file that
//!   could change in between: a blob's name always matches what was stored.
//!   The one exception is adoption, which hashes the very inode that becomes
//!   the blob, through the descriptor it then links, and refuses the file if
//!   its size, mtime or ctime changed while it was hashed.
//! - Blobs are read-only and cairn never writes them in place: restoring
//!   copies them out, so editing a restored data file cannot corrupt the
//!   store.
//! - A blob is never more readable than the file it was stored from: its
//!   mode is that file's read and exec bits, plus owner read (a 0600 output
//!   gives a 0400 blob, a 0644 one 0444; bytes given without a file, such as
//!   captured logs, 0444), less the umask for a file cairn creates. Files of
//!   the same content share one blob, which takes the most restrictive of
//!   their modes: a put that finds the blob readable by more than its file
//!   was narrows it (a `chmod` of the group and other bits), or, when the
//!   blob is also another partition's data file (an adopted inode, more
//!   than one link), replaces it by its own copy, leaving that data file
//!   alone. Narrowing and publishing hold one lock per handle, so two
//!   concurrent puts of one content cannot leave the wider mode behind.
//!   Restores apply the mode the manifest recorded, not the blob's.
//! - Every read is verified (re-hashed): bit rot or tampering is reported as
//!   [`StoreError::CorruptBlob`], never served.
//!
//! Large outputs of jobs are adopted rather than copied: hard-linked into
//! the store, read-only (see `adopt.rs`).
//!
//! Durability: writes are not fsynced one by one, which would put an fsync per
//! output on the hot path. [`BlobStore::sync`] is the barrier, called once per
//! batch before the catalog commit that refers to the blobs. On Linux it is
//! one `syncfs(2)` on the file system holding the CAS: a single call per batch
//! however many blobs and fan-out directories were written, covering every
//! file's data and every directory entry (rename, new fan-out directory)
//! without tracking them (an adopted file is on that file system too, or it
//! could not have been linked), and reporting writeback errors since Linux
//! 5.8. The cost is that it also flushes unrelated dirty data on that file
//! system, mostly the jobs' own outputs, which are about to be needed anyway.
//! It runs only if something was written since the last sync, so a build that
//! stores nothing pays nothing. A batch of at most [`EACH_FILE_AT_MOST`] blobs
//! (a build that changed one input writes three) is fsynced blob by blob
//! instead, as below: `syncfs` would also write back whatever else is dirty
//! on the file system (the previous build's up-to-date snapshot, 8 MB at
//! 22,265 actions), and the build's last commit waits for it. Elsewhere the store remembers the blobs
//! written since the last sync and fsyncs each of them (an adopted blob's
//! fsync is its data file's: one inode), their directories and the CAS root.
//!
//! A blob already present under a digest is not rewritten, unless its length
//! differs from the new content (that is what a blob torn by a power loss
//! before its sync looks like, and replacing it is cheaper than serving it),
//! or this handle found it corrupt (a failed [`BlobStore::read`],
//! [`BlobStore::restore`] or [`FsBlobStore::verify`]): a job that reruns
//! because its blob was bad then writes the good bytes back.

use std::collections::{BTreeSet, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cairn_engine::ContentDigest;
use cairn_engine::ports::{BlobStore, StoreError, VerifyingReader};

/// Files up to this size are read into memory, hashed and written in one go;
/// larger ones are copied in the kernel and hashed from the copy, or adopted.
const SMALL_FILE_LIMIT: u64 = 1024 * 1024;
/// At most this many blobs written since the last sync are made durable by
/// an fsync each (with their directories and the CAS root); more, and one
/// `syncfs` covers them (see the module doc).
const EACH_FILE_AT_MOST: usize = 4;
/// Buffer size of the streaming restore.
const RESTORE_BUFFER: usize = 256 * 1024;
/// A restore leaves a hole where the blob has this many zero bytes, aligned
/// (the page size, and the block size of most file systems).
const HOLE_BLOCK: usize = 4096;

/// How [`FsBlobStore::sync`] makes writes durable (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// One `syncfs` on the CAS's file system (Linux).
    FileSystem,
    /// `fsync` of each blob written since the last sync and of its directory.
    EachFile,
}

/// The content-addressed blob store under `.cairn/cas/`.
#[derive(Debug)]
pub struct FsBlobStore {
    cas_dir: PathBuf,
    temp_dir: PathBuf,
    writable: bool,
    durability: Durability,
    temp_counter: AtomicU64,
    /// This process's id, for temp names (`getpid` is a system call).
    pid: u32,
    /// Something was written since the last sync ([`Durability::FileSystem`]).
    unsynced: AtomicBool,
    /// Blobs written since the last sync (with [`Durability::FileSystem`],
    /// the first [`EACH_FILE_AT_MOST`] + 1 of them).
    pending: Mutex<Vec<PathBuf>>,
    /// Blobs found corrupt by this handle: rewritten by the next put.
    suspect: Mutex<HashSet<ContentDigest>>,
    /// Held while deciding whether a present blob is kept (and narrowing
    /// its mode) and while renaming a new one into place.
    publish: Mutex<()>,
    /// The fan-out directories (by their first byte) this handle made or
    /// found: not made again before each new blob (a failed `mkdir` per
    /// blob). One removed meanwhile (`remove` takes an emptied one) is made
    /// again when the rename into it finds it gone.
    fan_outs: [AtomicBool; 256],
}

/// What is under a blob's name, for [`FsBlobStore::keeps_locked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Present {
    /// The blob, kept as it is.
    Kept,
    /// Nothing.
    Absent,
    /// Something that is not kept: a directory (`is_dir`), a blob of
    /// another length or mode, or one found corrupt.
    Replaced { is_dir: bool },
}

/// What re-hashing a stored blob found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobCheck {
    /// Present, `length` bytes, and its content hashes to its name.
    Intact { length: u64 },
    /// Present, `length` bytes, but its content hashes to `actual`.
    Corrupt { length: u64, actual: ContentDigest },
    /// Not in the store.
    Missing,
    /// Something other than a regular file is under the blob's name (a
    /// FIFO, a directory, a device, a symbolic link...): never read.
    NotAFile { kind: &'static str },
}

impl FsBlobStore {
    /// The CAS at `cas_dir`, which exists (with its `tmp/`) if `writable`.
    pub(crate) fn new(cas_dir: PathBuf, writable: bool) -> FsBlobStore {
        let durability = if cfg!(target_os = "linux") {
            Durability::FileSystem
        } else {
            Durability::EachFile
        };
        FsBlobStore::with_durability(cas_dir, writable, durability)
    }

    fn with_durability(cas_dir: PathBuf, writable: bool, durability: Durability) -> FsBlobStore {
        FsBlobStore {
            temp_dir: cas_dir.join("tmp"),
            cas_dir,
            writable,
            durability,
            temp_counter: AtomicU64::new(0),
            pid: std::process::id(),
            unsynced: AtomicBool::new(false),
            pending: Mutex::new(Vec::new()),
            suspect: Mutex::new(HashSet::new()),
            publish: Mutex::new(()),
            fan_outs: [const { AtomicBool::new(false) }; 256],
        }
    }

    /// Where the blob with `digest` lives (whether or not it is present).
    pub fn blob_path(&self, digest: &ContentDigest) -> PathBuf {
        let hex = digest.to_hex();
        self.cas_dir.join(&hex[..2]).join(&hex[2..])
    }

    /// Re-hashes the blob: [`StoreError::MissingBlob`] if absent,
    /// [`StoreError::CorruptBlob`] if its content no longer matches.
    pub fn verify(&self, digest: &ContentDigest) -> Result<(), StoreError> {
        match self.check_blob(digest)? {
            BlobCheck::Intact { .. } => Ok(()),
            BlobCheck::Corrupt { actual, .. } => Err(StoreError::CorruptBlob {
                expected: *digest,
                actual,
            }),
            BlobCheck::Missing => Err(StoreError::MissingBlob { expected: *digest }),
            BlobCheck::NotAFile { kind } => Err(StoreError::NotAFile {
                expected: *digest,
                path: self.blob_path(digest),
                kind,
            }),
        }
    }

    /// Opens the blob for reading, without blocking and only if it is a
    /// regular file, with its length. Not verified: the caller re-hashes
    /// what it reads (or called [`FsBlobStore::verify`] first).
    pub fn open(&self, digest: &ContentDigest) -> Result<(File, u64), StoreError> {
        let path = self.blob_path(digest);
        match open_blob(&path) {
            Ok(Opened::File { file, length }) => Ok((file, length)),
            Ok(Opened::Missing) => Err(StoreError::MissingBlob { expected: *digest }),
            Ok(Opened::NotAFile { kind }) => {
                self.suspect(digest);
                Err(StoreError::NotAFile {
                    expected: *digest,
                    path,
                    kind,
                })
            }
            Err(error) => Err(StoreError::io(&path, error)),
        }
    }

    /// Re-hashes the blob and says what it found; an error only for I/O
    /// failures other than absence. A corrupt blob is remembered, so that
    /// the next put of its digest through this handle rewrites it.
    pub fn check_blob(&self, digest: &ContentDigest) -> Result<BlobCheck, StoreError> {
        let path = self.blob_path(digest);
        // Read through a descriptor rather than a mapping: a blob truncated
        // behind our back (the very damage this looks for) must be an error
        // or a short read, never a SIGBUS.
        let (mut file, expected) = match open_blob(&path) {
            Ok(Opened::File { file, length }) => (file, length),
            Ok(Opened::Missing) => return Ok(BlobCheck::Missing),
            Ok(Opened::NotAFile { kind }) => {
                self.suspect(digest);
                return Ok(BlobCheck::NotAFile { kind });
            }
            Err(error) => return Err(StoreError::io(&path, error)),
        };
        let mut hasher = blake3::Hasher::new();
        // Most blobs are small: size the buffer to the blob (plus the byte
        // that finds the end), up to the restore buffer.
        let size = usize::try_from(expected.saturating_add(1)).unwrap_or(RESTORE_BUFFER);
        let mut buffer = vec![0u8; size.clamp(1, RESTORE_BUFFER)];
        let mut length = 0u64;
        loop {
            let count = match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(count) => count,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(StoreError::io(&path, error)),
            };
            hasher.update(&buffer[..count]);
            length += count as u64;
        }
        let actual = ContentDigest(*hasher.finalize().as_bytes());
        if actual == *digest {
            Ok(BlobCheck::Intact { length })
        } else {
            self.suspect(digest);
            Ok(BlobCheck::Corrupt { length, actual })
        }
    }

    /// Deletes the blob (writable stores only; the caller holds the writer
    /// lock and knows no kept manifest needs it). Returns the bytes freed,
    /// 0 if it was not there.
    pub fn remove(&self, digest: &ContentDigest) -> Result<u64, StoreError> {
        self.check_writable()?;
        let path = self.blob_path(digest);
        let metadata = match std::fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(StoreError::io(&path, error)),
        };
        // Whatever is under a blob's name goes, a directory tree included
        // (`remove_dir_all` removes links inside it, never what they name).
        let (length, removed) = if metadata.is_dir() {
            (0, remove_tree(&path))
        } else {
            (blob_length(&metadata), std::fs::remove_file(&path))
        };
        match removed {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(StoreError::io(&path, error)),
        }
        // An emptied fan-out directory goes too; one still in use stays.
        if let Some(fan_out) = path.parent() {
            let _ = std::fs::remove_dir(fan_out);
        }
        Ok(length)
    }

    /// The size in bytes of every blob present, by digest, sorted.
    pub fn sizes(&self) -> Result<Vec<(ContentDigest, u64)>, StoreError> {
        let mut out = Vec::new();
        for digest in self.iter_digests()? {
            let path = self.blob_path(&digest);
            match std::fs::symlink_metadata(&path) {
                Ok(metadata) => out.push((digest, blob_length(&metadata))),
                Err(error) if error.kind() == ErrorKind::NotFound => {}
                Err(error) => return Err(StoreError::io(&path, error)),
            }
        }
        Ok(out)
    }

    fn suspect(&self, digest: &ContentDigest) {
        self.suspects().insert(*digest);
    }

    fn suspects(&self) -> std::sync::MutexGuard<'_, HashSet<ContentDigest>> {
        self.suspect
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the blob at `path` may be kept as the blob `digest` of
    /// `length` bytes for a file whose blob mode is `mode` (see
    /// [`blob_mode`]) instead of being rewritten. A kept blob that is
    /// readable by more than `mode` allows is narrowed first (see the
    /// module doc); one that cannot be (an adopted inode, a failed `chmod`)
    /// is not kept.
    fn keeps(&self, digest: &ContentDigest, path: &Path, length: u64, mode: u32) -> bool {
        let _publishing = self.publishing();
        self.keeps_locked(digest, path, length, mode) == Present::Kept
    }

    /// [`FsBlobStore::keeps`], with [`FsBlobStore::publishing`] held, and
    /// what is there when it is not kept.
    fn keeps_locked(&self, digest: &ContentDigest, path: &Path, length: u64, mode: u32) -> Present {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let Ok(metadata) = std::fs::symlink_metadata(path) else {
            return Present::Absent;
        };
        let replaced = Present::Replaced {
            is_dir: metadata.is_dir(),
        };
        if self.suspects().contains(digest) {
            return replaced;
        }
        // Anything but a regular file under a blob's name is replaced (see
        // `open_blob`), and so is a blob of another length (torn).
        if !metadata.is_file() || metadata.len() != length {
            return replaced;
        }
        let current = metadata.mode() & 0o7777;
        // The owner's bits stay; group and other keep only what both allow.
        let narrowed = current & (mode | 0o700);
        if narrowed == current {
            return Present::Kept;
        }
        // An adopted blob is also a data file: its mode is not ours to change.
        if metadata.nlink() > 1 {
            return replaced;
        }
        if std::fs::set_permissions(path, std::fs::Permissions::from_mode(narrowed)).is_ok() {
            Present::Kept
        } else {
            replaced
        }
    }

    fn publishing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.publish
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The digests of every blob present, sorted. Names that are not blobs
    /// (the temp directory, stray files) are skipped.
    pub fn iter_digests(&self) -> Result<Vec<ContentDigest>, StoreError> {
        let mut digests = Vec::new();
        for fan_out in read_dir(&self.cas_dir)? {
            let prefix = fan_out.file_name();
            let Some(prefix) = prefix.to_str().filter(|name| name.len() == 2) else {
                continue;
            };
            if !fan_out.path().is_dir() {
                continue;
            }
            for blob in read_dir(&fan_out.path())? {
                let name = blob.file_name();
                let Some(rest) = name.to_str() else { continue };
                if let Ok(digest) = format!("{prefix}{rest}").parse::<ContentDigest>() {
                    digests.push(digest);
                }
            }
        }
        digests.sort_unstable();
        Ok(digests)
    }

    /// Removes temp files left by a writer that died. Only call it while
    /// holding the store's writer lock: any other writer's temps are live.
    /// A temp that cannot be removed only wastes space, so it is logged and
    /// left rather than preventing the store from opening.
    pub(crate) fn remove_stale_temps(&self) -> Result<(), StoreError> {
        for entry in read_dir(&self.temp_dir)? {
            let path = entry.path();
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!("cannot remove stale temp file {}: {error}", path.display());
                }
            }
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.writable {
            return Ok(());
        }
        Err(StoreError::io(
            &self.cas_dir,
            std::io::Error::new(
                ErrorKind::PermissionDenied,
                "the store was opened read-only, blobs cannot be added",
            ),
        ))
    }

    /// A fresh name under `cas/tmp/`; nothing is created.
    fn temp_name(&self) -> TempPath {
        let number = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        TempPath(self.temp_dir.join(format!("{}-{number}", self.pid)))
    }

    /// A new, empty temp file with `mode` (a blob mode, read-only), open
    /// for writing.
    fn create_temp(&self, mode: u32) -> Result<(TempPath, File), StoreError> {
        let temp = self.temp_name();
        // Created read-only: the open descriptor can still write, and no
        // chmod is needed before the rename publishes it.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp.0)
            .map_err(|source| StoreError::io(&temp.0, source))?;
        Ok((temp, file))
    }

    /// Publishes a complete, read-only temp file of blob mode `mode` as
    /// the blob `digest` of `length` bytes.
    fn commit(
        &self,
        mut temp: TempPath,
        digest: ContentDigest,
        length: u64,
        mode: u32,
    ) -> Result<ContentDigest, StoreError> {
        let final_path = self.blob_path(&digest);
        let publishing = self.publishing();
        let present = self.keeps_locked(&digest, &final_path, length, mode);
        if present != Present::Kept {
            // A rename replaces any other kind of file, not a directory.
            if present == (Present::Replaced { is_dir: true }) {
                remove_tree(&final_path).map_err(|source| StoreError::io(&final_path, source))?;
            }
            let fan_out = &self.fan_outs[usize::from(digest.0[0])];
            if !fan_out.load(Ordering::Relaxed) {
                self.make_fan_out(&final_path)?;
                fan_out.store(true, Ordering::Relaxed);
            }
            match std::fs::rename(&temp.0, &final_path) {
                Err(error) if error.kind() == ErrorKind::NotFound && temp.0.exists() => {
                    self.make_fan_out(&final_path)?;
                    std::fs::rename(&temp.0, &final_path)
                }
                renamed => renamed,
            }
            .map_err(|source| StoreError::io(&final_path, source))?;
            // Renamed: nothing is left to remove.
            temp.0 = PathBuf::new();
            self.suspects().remove(&digest);
        }
        drop(publishing);
        drop(temp);
        self.written(final_path);
        Ok(digest)
    }

    /// Makes the fan-out directory of the blob at `final_path`, if missing.
    fn make_fan_out(&self, final_path: &Path) -> Result<(), StoreError> {
        let fan_out = final_path.parent().unwrap_or(&self.cas_dir);
        match std::fs::create_dir(fan_out) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(error) => Err(StoreError::io(fan_out, error)),
        }
    }

    /// Stores the file at `path`: from memory if it is small, else by
    /// `large`, given the open file and its `fstat`.
    fn store_file(
        &self,
        path: &Path,
        large: impl FnOnce(File, &std::fs::Metadata) -> Result<ContentDigest, StoreError>,
    ) -> Result<ContentDigest, StoreError> {
        self.check_writable()?;
        let source = File::open(path).map_err(|error| StoreError::io(path, error))?;
        let metadata = source
            .metadata()
            .map_err(|error| StoreError::io(path, error))?;
        if metadata.len() <= SMALL_FILE_LIMIT {
            return self.put_small(source, path, metadata.len(), blob_mode(&metadata));
        }
        large(source, &metadata)
    }

    /// Stores a small file (its length known from `fstat`) from memory.
    fn put_small(
        &self,
        mut source: File,
        path: &Path,
        length: u64,
        mode: u32,
    ) -> Result<ContentDigest, StoreError> {
        let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        // To the end, as `read_to_end` on the file, without its size hint
        // (an `fstat` and an `lseek`: the capacity is reserved already).
        std::io::Read::take(&mut source, u64::MAX)
            .read_to_end(&mut bytes)
            .map_err(|error| StoreError::io(path, error))?;
        self.put_bytes_with_mode(&bytes, mode)
    }

    /// Stores a large file by copying it in the kernel (`copy_file_range`, a
    /// reflink where the file system can), then hashing the private copy,
    /// which nobody else can change or truncate under the mapping.
    fn put_copy(&self, mut source: File, path: &Path) -> Result<ContentDigest, StoreError> {
        let mode = blob_mode(
            &source
                .metadata()
                .map_err(|error| StoreError::io(path, error))?,
        );
        let (temp, mut file) = self.create_temp(mode)?;
        let copied =
            std::io::copy(&mut source, &mut file).map_err(|error| StoreError::io(path, error))?;
        drop(file);
        let mut hasher = blake3::Hasher::new();
        hasher
            .update_mmap_rayon(&temp.0)
            .map_err(|error| StoreError::io(&temp.0, error))?;
        self.commit(
            temp,
            ContentDigest(*hasher.finalize().as_bytes()),
            copied,
            mode,
        )
    }

    /// Stores `bytes` as a blob of mode `mode` (see [`blob_mode`]).
    fn put_bytes_with_mode(&self, bytes: &[u8], mode: u32) -> Result<ContentDigest, StoreError> {
        self.check_writable()?;
        let digest = ContentDigest::of(bytes);
        let length = bytes.len() as u64;
        let final_path = self.blob_path(&digest);
        if self.keeps(&digest, &final_path, length, mode) {
            self.written(final_path);
            return Ok(digest);
        }
        let (temp, mut file) = self.create_temp(mode)?;
        file.write_all(bytes)
            .map_err(|error| StoreError::io(&temp.0, error))?;
        drop(file);
        self.commit(temp, digest, length, mode)
    }

    /// Records that `path` must be covered by the next sync. A blob found
    /// already present is recorded too: another thread may have renamed it
    /// into place a moment ago, and its caller's sync must still cover it.
    fn written(&self, path: PathBuf) {
        match self.durability {
            Durability::FileSystem => {
                // The path first, then the flag: a sync that sees the flag
                // takes the path with it (or, past the limit, syncs all).
                {
                    let mut pending = self.pending_paths();
                    if pending.len() <= EACH_FILE_AT_MOST {
                        pending.push(path);
                    }
                }
                self.unsynced.store(true, Ordering::Release);
            }
            Durability::EachFile => self.pending_paths().push(path),
        }
    }

    fn pending_paths(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        // A panic while holding the lock leaves a valid Vec: keep using it.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn sync_each_file(&self) -> Result<(), StoreError> {
        let paths = std::mem::take(&mut *self.pending_paths());
        let result = fsync_files_and_directories(&paths, &self.cas_dir, false);
        if result.is_err() {
            // Keep them for the next attempt rather than pretend they are safe.
            self.pending_paths().extend(paths);
        }
        result
    }
}

impl BlobStore for FsBlobStore {
    fn put_file(&self, path: &Path) -> Result<ContentDigest, StoreError> {
        self.store_file(path, |source, _| self.put_copy(source, path))
    }

    fn adopt_file(&self, path: &Path) -> Result<ContentDigest, StoreError> {
        self.adopt(path, |source, link| std::fs::hard_link(source, link))
    }

    fn put_bytes(&self, bytes: &[u8]) -> Result<ContentDigest, StoreError> {
        self.put_bytes_with_mode(bytes, BYTES_MODE)
    }

    fn put_verified(
        &self,
        expected: &ContentDigest,
        reader: &mut dyn Read,
    ) -> Result<u64, StoreError> {
        self.check_writable()?;
        // Written to a temp file as it arrives and hashed on the way, then
        // published only if the digest is the one expected: whatever the
        // blob's size, a buffer's worth of memory and one pass.
        let (temp, mut file) = self.create_temp(BYTES_MODE)?;
        let mut hasher = blake3::Hasher::new();
        let mut buffer = vec![0; RESTORE_BUFFER];
        let mut length = 0;
        loop {
            let count = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(count) => count,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(StoreError::io(self.blob_path(expected), error)),
            };
            hasher.update(&buffer[..count]);
            file.write_all(&buffer[..count])
                .map_err(|error| StoreError::io(&temp.0, error))?;
            length += count as u64;
        }
        drop(file);
        let actual = ContentDigest(*hasher.finalize().as_bytes());
        if actual != *expected {
            return Err(StoreError::CorruptBlob {
                expected: *expected,
                actual,
            });
        }
        self.commit(temp, actual, length, BYTES_MODE)?;
        Ok(length)
    }

    fn contains(&self, digest: &ContentDigest) -> bool {
        std::fs::symlink_metadata(self.blob_path(digest)).is_ok_and(|metadata| metadata.is_file())
    }

    fn restore(&self, digest: &ContentDigest, dest: &Path) -> Result<(), StoreError> {
        let blob_path = self.blob_path(digest);
        let (mut blob, _) = self.open(digest)?;
        // `create_new`: restoring never overwrites (or writes through a link
        // to) a file that is already there.
        let output = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(|error| StoreError::io(dest, error))?;
        let result = copy_hashing(&mut blob, &blob_path, &output, dest)
            .and_then(|hasher| check(digest, &hasher));
        drop(output);
        if let Err(StoreError::CorruptBlob { .. }) = &result {
            self.suspect(digest);
        }
        if result.is_err() {
            // Best effort: the original error matters more than a failed cleanup.
            let _ = std::fs::remove_file(dest);
        }
        result
    }

    fn read(&self, digest: &ContentDigest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        let (mut file, length) = self.open(digest)?;
        let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        file.read_to_end(&mut bytes)
            .map_err(|error| StoreError::io(&path, error))?;
        let actual = ContentDigest::of(&bytes);
        if actual != *digest {
            self.suspect(digest);
            return Err(StoreError::CorruptBlob {
                expected: *digest,
                actual,
            });
        }
        Ok(bytes)
    }

    fn open_verified(
        &self,
        digest: &ContentDigest,
    ) -> Result<Box<dyn Read + Send + '_>, StoreError> {
        // Opened as every read is (without blocking, regular files only).
        let (file, _) = self.open(digest)?;
        let reader = NamedReader {
            file,
            path: self.blob_path(digest),
        };
        let digest = *digest;
        Ok(Box::new(
            VerifyingReader::new(reader, digest).on_corrupt(move || self.suspect(&digest)),
        ))
    }

    fn sync(&self) -> Result<(), StoreError> {
        match self.durability {
            Durability::FileSystem => {
                if !self.unsynced.swap(false, Ordering::AcqRel) {
                    return Ok(());
                }
                let paths = std::mem::take(&mut *self.pending_paths());
                // A few blobs: an fsync each (and of their directories) is
                // cheaper than flushing every dirty page of the file system.
                let result = if paths.len() <= EACH_FILE_AT_MOST {
                    fsync_files_and_directories(&paths, &self.cas_dir, true)
                } else {
                    File::open(&self.cas_dir)
                        .and_then(|directory| sync_file_system(&directory))
                        .map_err(|error| StoreError::io(&self.cas_dir, error))
                };
                if result.is_err() {
                    self.pending_paths().extend(paths);
                    self.unsynced.store(true, Ordering::Release);
                }
                result
            }
            Durability::EachFile => self.sync_each_file(),
        }
    }
}

/// A blob file whose read errors name it.
struct NamedReader {
    file: File,
    path: PathBuf,
}

impl Read for NamedReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        self.file
            .read(buffer)
            .map_err(|error| std::io::Error::new(error.kind(), StoreError::io(&self.path, error)))
    }
}

/// A name under `cas/tmp/`, removed on drop unless it was renamed away.
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        // Empty once renamed into place. A failure leaves a stale temp that
        // the next writer's open removes.
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The mode of a blob stored from bytes rather than a file (captured logs,
/// definitions, checkpoints): read-only for everyone, less the umask.
const BYTES_MODE: u32 = 0o444;

/// The mode of a blob stored from the file `metadata` describes: the file's
/// read and exec bits, never a write, set-id or sticky bit, and always
/// owner read (cairn must read it back). An adopted file gets this mode
/// itself.
fn blob_mode(metadata: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::MetadataExt;
    (metadata.mode() & 0o555) | 0o400
}

fn check(expected: &ContentDigest, hasher: &blake3::Hasher) -> Result<(), StoreError> {
    let actual = ContentDigest(*hasher.finalize().as_bytes());
    if actual == *expected {
        Ok(())
    } else {
        Err(StoreError::CorruptBlob {
            expected: *expected,
            actual,
        })
    }
}

/// Copies `reader` to `writer` (a new, empty file), returning the hash of
/// what was copied. Holes are kept: a block of [`HOLE_BLOCK`] zero bytes is
/// hashed but not written, so it stays a hole in `writer` (whose length is
/// set at the end), as `cp --sparse=auto` does. A 2 GB sparse output is then
/// restored as a sparse file, not 2 GB of disk; bytes are the same either way.
fn copy_hashing(
    reader: &mut File,
    reader_path: &Path,
    writer: &File,
    writer_path: &Path,
) -> Result<blake3::Hasher, StoreError> {
    use std::os::unix::fs::FileExt;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; RESTORE_BUFFER];
    let mut position = 0u64;
    let write_error = |error| StoreError::io(writer_path, error);
    loop {
        let count = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(StoreError::io(reader_path, error)),
        };
        let bytes = &buffer[..count];
        hasher.update(bytes);
        // Runs of non-zero blocks are written with one `pwrite` each.
        let mut run_start = None;
        for (index, block) in bytes.chunks(HOLE_BLOCK).enumerate() {
            let offset = index * HOLE_BLOCK;
            let zero = block.iter().all(|&byte| byte == 0);
            match (zero, run_start) {
                (false, None) => run_start = Some(offset),
                (true, Some(start)) => {
                    writer
                        .write_all_at(&bytes[start..offset], position + start as u64)
                        .map_err(write_error)?;
                    run_start = None;
                }
                _ => {}
            }
        }
        if let Some(start) = run_start {
            writer
                .write_all_at(&bytes[start..], position + start as u64)
                .map_err(write_error)?;
        }
        position += count as u64;
    }
    // A file ending in a hole gets its length here (a no-op otherwise).
    writer.set_len(position).map_err(write_error)?;
    Ok(hasher)
}

/// What [`open_blob`] found under a blob's name.
enum Opened {
    File { file: File, length: u64 },
    Missing,
    NotAFile { kind: &'static str },
}

/// Opens the blob file at `path` for reading, never blocking and never
/// following a link: `O_NONBLOCK` (opening a FIFO for reading would wait
/// for a writer forever, signals or not; a device could wait too) and
/// `O_NOFOLLOW`, then `fstat` of the descriptor, which must be a regular
/// file. Anything else under a blob's name (a FIFO, a directory, a device,
/// a socket, a symbolic link) is [`Opened::NotAFile`]: damage, never read,
/// and replaced by the next put or `store verify --repair`. `O_NONBLOCK`
/// changes nothing for a regular file.
fn open_blob(path: &Path) -> std::io::Result<Opened> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(Opened::Missing),
        // A link (ELOOP under O_NOFOLLOW), a socket (ENXIO): say what it is.
        Err(error) => {
            return match std::fs::symlink_metadata(path) {
                Ok(metadata) if !metadata.is_file() => Ok(Opened::NotAFile {
                    kind: kind_of(&metadata),
                }),
                _ => Err(error),
            };
        }
    };
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Ok(Opened::NotAFile {
            kind: kind_of(&metadata),
        });
    }
    Ok(Opened::File {
        length: metadata.len(),
        file,
    })
}

/// What kind of file `metadata` describes, for messages: `a FIFO`.
fn kind_of(metadata: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = metadata.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// The length of the blob `metadata` describes: 0 unless a regular file.
fn blob_length(metadata: &std::fs::Metadata) -> u64 {
    if metadata.is_file() {
        metadata.len()
    } else {
        0
    }
}

/// Removes the directory tree at `path`, making its directories writable
/// first (a tree planted under a blob's name may hold read-only ones).
/// Links inside it are removed, never followed.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fn open_up(path: &Path) {
        if std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).is_err() {
            return;
        }
        if let Ok(entries) = std::fs::read_dir(path) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    open_up(&entry.path());
                }
            }
        }
    }
    open_up(path);
    std::fs::remove_dir_all(path)
}

fn read_dir(path: &Path) -> Result<Vec<std::fs::DirEntry>, StoreError> {
    std::fs::read_dir(path)
        .and_then(Iterator::collect)
        .map_err(|error| StoreError::io(path, error))
}

/// `gone_ok`: a blob removed since it was written (by `repair` or `gc`
/// through the same handle) needs nothing, as with `syncfs`.
fn fsync_files_and_directories(
    paths: &[PathBuf],
    cas_dir: &Path,
    gone_ok: bool,
) -> Result<(), StoreError> {
    if paths.is_empty() {
        return Ok(());
    }
    let fsync = |path: &Path| match File::open(path).and_then(|file| file.sync_all()) {
        Err(error) if gone_ok && error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(|error| StoreError::io(path, error)),
    };
    let mut directories = BTreeSet::new();
    for path in paths {
        fsync(path)?;
        if let Some(parent) = path.parent() {
            directories.insert(parent.to_owned());
        }
    }
    for directory in &directories {
        fsync(directory)?;
    }
    // New fan-out directories are entries of the CAS root.
    fsync(cas_dir)
}

#[cfg(target_os = "linux")]
#[expect(
    unsafe_code,
    reason = "syncfs(2) has no safe wrapper in std; one call replaces an fsync per blob"
)]
fn sync_file_system(directory: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs only reads the descriptor number, which `directory`
    // keeps open for the duration of the call; no memory is passed.
    let status = unsafe { libc::syncfs(directory.as_raw_fd()) };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn sync_file_system(directory: &File) -> std::io::Result<()> {
    // Never selected off Linux (see `FsBlobStore::new`); kept so the code
    // compiles everywhere.
    directory.sync_all()
}

mod adopt;

#[cfg(test)]
mod tests;
