//! The ports through which the executor reaches durable state. `cairn-store`
//! implements them on redb and the file system; `memory.rs` holds an
//! in-memory twin of each, held to the same contract by tests written once
//! for both (docs/internals.md, "Ports and their twins").
//!
//! - [`EventLog`]: the append-only log of events, and build ids.
//! - [`Projections`]: what the log says now, by key: manifests, partition
//!   states, checkpoints, dataset versions, definitions records.
//! - [`StatCache`]: remembered file observations.
//! - [`Catalog`]: the three together, as one store holds them (implemented
//!   for every type that implements the three).
//! - [`BlobStore`]: the content-addressed blobs.
//!
//! Durability contract: bytes given to [`BlobStore`] become durable no later
//! than [`BlobStore::sync`]; the executor calls `sync` before
//! [`EventLog::append`] commits events that refer to those blobs, so the
//! catalog never points to a missing blob.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::digest::{ActionKey, ContentDigest};
use crate::record::{
    CheckpointRecord, DefsRecord, Event, EventKind, Manifest, PartitionState, StatEntry,
};
use crate::refs::PartitionRef;

/// Errors from the store. Messages are lowercase and name the path or object.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {expected} is missing from the store")]
    MissingBlob { expected: ContentDigest },
    #[error("blob {} is corrupt (expected {}, read {})", expected.short(), expected.short(), actual.short())]
    CorruptBlob {
        expected: ContentDigest,
        actual: ContentDigest,
    },
    /// Something other than a regular file under a blob's name: damage,
    /// never read (opening a FIFO would block forever).
    #[error("blob {} is {kind}, not a regular file ({})", expected.short(), path.display())]
    NotAFile {
        expected: ContentDigest,
        path: PathBuf,
        kind: &'static str,
    },
    #[error("catalog {path}: {message}")]
    Catalog { path: PathBuf, message: String },
    #[error(
        "store {path} was written by a newer cairn (format {found}, this cairn reads up to {supported})"
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{0}")]
    Locked(String),
}

impl StoreError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The content-addressed blob store.
pub trait BlobStore: Send + Sync {
    /// Copies the file at `path` into the store (unless a blob with the same
    /// digest is present) and returns its digest. Reads the file once.
    fn put_file(&self, path: &Path) -> Result<ContentDigest, StoreError>;
    /// Stores the file at `path` and returns its digest, like
    /// [`BlobStore::put_file`], for a file the caller owns and that nothing
    /// will write to again: a finished job's staged output, whose job and
    /// process group are gone, in a directory only cairn uses.
    ///
    /// The store may take the file itself instead of a copy: a large file
    /// with no other name may be hard-linked into the store (when it is on
    /// the same file system), after which the file *is* the blob. Its write
    /// bits (and set-id and sticky bits) are then cleared and its owner
    /// read bit set, so that the file is read-only from then on, wherever it
    /// is moved, and the store can read it. Its content, name, owner and
    /// other mode bits stay as they were, but its ctime changes,
    /// so stat it afterwards, not before. Small files, files with more than
    /// one name and files that cannot be linked are copied, and are left
    /// untouched; so is a file whose content the store already holds.
    ///
    /// Writing to the file in place afterwards (it is read-only, but the
    /// superuser can) changes the blob too; the change is found when the
    /// blob is next read or restored ([`StoreError::CorruptBlob`]), never
    /// served. Replacing or removing the file (a rename over it, an unlink)
    /// leaves the blob intact.
    ///
    /// A file whose size, mtime or ctime changes while it is being hashed is
    /// refused with an error naming it. The blob is durable after the next
    /// [`BlobStore::sync`], like any other.
    fn adopt_file(&self, path: &Path) -> Result<ContentDigest, StoreError>;
    /// Stores `bytes` and returns their digest.
    fn put_bytes(&self, bytes: &[u8]) -> Result<ContentDigest, StoreError>;
    /// Whether a blob is present (not verified).
    fn contains(&self, digest: &ContentDigest) -> bool;
    /// Writes the blob to `dest` (a new file; the parent exists), re-hashing as
    /// it copies: a mismatch is [`StoreError::CorruptBlob`] and `dest` is removed.
    fn restore(&self, digest: &ContentDigest, dest: &Path) -> Result<(), StoreError>;
    /// Reads a whole blob, verified.
    fn read(&self, digest: &ContentDigest) -> Result<Vec<u8>, StoreError>;
    /// Opens a blob for reading as a stream, verified: the reader hashes
    /// what it yields, and the read that reaches the end fails with
    /// [`StoreError::CorruptBlob`] (as an [`std::io::Error`] of kind
    /// `InvalidData` wrapping it, see [`corrupt_blob_of`]) if the content's
    /// blake3 is not `digest`. Bytes before the end are not yet verified:
    /// a caller that must not act on corrupt content reads to the end
    /// before acting. A missing blob, or one that is not a regular file,
    /// fails here.
    ///
    /// The provided method reads the whole blob ([`BlobStore::read`],
    /// verified) and streams it from memory; stores that can stream from
    /// their medium override it.
    fn open_verified(
        &self,
        digest: &ContentDigest,
    ) -> Result<Box<dyn Read + Send + '_>, StoreError> {
        Ok(Box::new(std::io::Cursor::new(self.read(digest)?)))
    }
    /// Stores what `reader` yields, to its end, as the blob `expected`, and
    /// returns its length; only if its blake3 is `expected`. Otherwise the
    /// content is dropped, nothing is stored, and the error is
    /// [`StoreError::CorruptBlob`]. A read error is
    /// [`StoreError::Io`] with the reader's error as its source (the caller
    /// can tell its own reader's errors from the store's).
    ///
    /// For content from elsewhere (a remote cache) that must be checked
    /// before it enters the store. The provided method reads it whole into
    /// memory; stores that can write as they read override it, so that a
    /// blob of any size takes a buffer's worth of memory and is hashed
    /// once.
    fn put_verified(
        &self,
        expected: &ContentDigest,
        reader: &mut dyn Read,
    ) -> Result<u64, StoreError> {
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|error| StoreError::io("(the blob's source)", error))?;
        let actual = ContentDigest::of(&bytes);
        if actual != *expected {
            return Err(StoreError::CorruptBlob {
                expected: *expected,
                actual,
            });
        }
        self.put_bytes(&bytes)?;
        Ok(bytes.len() as u64)
    }
    /// Makes every blob written so far durable.
    fn sync(&self) -> Result<(), StoreError>;
}

/// The event log: append-only, each event with its sequence number (from
/// 1, consecutive), wall time and build id.
pub trait EventLog: Send + Sync {
    /// Appends `events` for `build` in one transaction, updating the
    /// projections and recording `stats` in the stat cache. Returns the
    /// sequence number of the last event appended.
    fn append(
        &self,
        build: u64,
        events: Vec<EventKind>,
        stats: Vec<(String, StatEntry)>,
    ) -> Result<u64, StoreError> {
        let now = crate::clock::now_ms();
        let events = events.into_iter().map(|kind| (now, kind)).collect();
        self.append_timed(build, events, stats)
    }
    /// Like [`EventLog::append`], with the wall time (ms since the epoch) at
    /// which each event happened, which may be earlier than the commit.
    fn append_timed(
        &self,
        build: u64,
        events: Vec<(u64, EventKind)>,
        stats: Vec<(String, StatEntry)>,
    ) -> Result<u64, StoreError>;
    /// Events with `seq >= from`, in order, streamed to `visit` (return
    /// `false` to stop).
    fn scan_events(
        &self,
        from: u64,
        visit: &mut dyn FnMut(Event) -> bool,
    ) -> Result<(), StoreError>;
    /// Allocates the next build id (writers only). It is stored by the
    /// first [`EventLog::append`] of events that carry it, in that commit;
    /// a process that ends before appending leaves nothing that uses the
    /// id, and the next writer is given it again.
    fn next_build_id(&self) -> Result<u64, StoreError>;
    /// Whether the catalog records nothing at all: no event, so no result,
    /// partition state or checkpoint (a store never built in). No action
    /// key can then match, and evaluation need not compute one. A catalog
    /// that cannot tell cheaply answers `false`.
    fn records_nothing(&self) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// Whether no event ever named `partition` (`projection::partitions_of`:
    /// no job started, succeeded, failed or was checkpointed for it, no
    /// invalidation or prune): then no manifest has it as an output, no
    /// checkpoint belongs to an action producing it and it has no state,
    /// so the action producing it can only run, "never built", whatever
    /// its key. A catalog that cannot tell cheaply answers `false`.
    fn never_named(&self, _partition: &PartitionRef) -> Result<bool, StoreError> {
        Ok(false)
    }
}

/// The projections of the event log: what it says now, by key. Changed only
/// by appending events, through the rules in `projection.rs`.
pub trait Projections: Send + Sync {
    /// The manifest of the last success of `key`, if any.
    fn action(&self, key: &ActionKey) -> Result<Option<Manifest>, StoreError>;
    /// The last checkpoint of `key` not cleared by a success since.
    fn checkpoint(&self, key: &ActionKey) -> Result<Option<CheckpointRecord>, StoreError>;
    /// The projected state of a partition.
    fn partition(&self, partition: &PartitionRef) -> Result<Option<PartitionState>, StoreError>;
    /// The version of each versioned dataset as last recorded by
    /// `DatasetVersionChanged` (absent: never recorded, or unversioned now).
    fn dataset_versions(&self) -> Result<BTreeMap<String, String>, StoreError>;
    /// The latest good record of definitions source `source` (the last
    /// `DefsRefreshed` about it), if it was ever refreshed.
    fn defs(&self, source: &str) -> Result<Option<DefsRecord>, StoreError>;
}

/// The stat cache: remembered observations of files by absolute path
/// (docs/internals.md, "Stat cache"). Entries are written by
/// [`EventLog::append`], in the same commit as the events.
pub trait StatCache: Send + Sync {
    /// A stat-cache entry by absolute path.
    fn stat(&self, path: &str) -> Result<Option<StatEntry>, StoreError>;
    /// Told of every stat-cache decision an observation made: the entry it
    /// relied on for `path` (looked up and still valid, or just computed)
    /// and the file's executable bit. Only a build's witness of the
    /// up-to-date snapshot keeps them (docs/internals.md, "The up-to-date
    /// snapshot"); catalogs ignore them.
    fn observed(&self, _path: &str, _entry: &StatEntry, _executable: bool) {}
}

/// The catalog: the event log, its projections and the stat cache, as one
/// store holds them. Every type that implements the three is a `Catalog`;
/// code that needs only one of them may take that one.
pub trait Catalog: EventLog + Projections + StatCache {}

impl<T: EventLog + Projections + StatCache + ?Sized> Catalog for T {}

/// The [`RemoteError`] that a reader of [`RemoteCache::open_blob`] failed
/// with, if that is what `error` (a [`StoreError::Io`] of
/// [`BlobStore::put_verified`], or the reader's own error) holds.
pub fn remote_error_of(error: &(dyn std::error::Error + 'static)) -> Option<RemoteError> {
    let io = match error.downcast_ref::<StoreError>() {
        Some(StoreError::Io { source, .. }) => source,
        Some(_) => return None,
        None => error.downcast_ref::<std::io::Error>()?,
    };
    io.get_ref()?.downcast_ref::<RemoteError>().cloned()
}

/// The [`StoreError::CorruptBlob`] that a reader of
/// [`BlobStore::open_verified`] reported as an [`std::io::Error`], if that is
/// what `error` is.
pub fn corrupt_blob_of(error: &std::io::Error) -> Option<(ContentDigest, ContentDigest)> {
    match error.get_ref()?.downcast_ref::<StoreError>()? {
        StoreError::CorruptBlob { expected, actual } => Some((*expected, *actual)),
        _ => None,
    }
}

/// A read at least this long is hashed in parallel (blake3's own
/// threshold for multithreading to pay off).
const PARALLEL_HASH_FROM: usize = 128 * 1024;

/// Wraps a reader of a blob's content and verifies it: hashes what passes
/// through, and fails the read that reaches the end with
/// [`StoreError::CorruptBlob`] (in an [`std::io::Error`] of kind
/// `InvalidData`) if the content's blake3 is not `expected`. What
/// [`BlobStore::open_verified`] returns, for any store.
pub struct VerifyingReader<'a, R> {
    inner: R,
    expected: ContentDigest,
    hasher: blake3::Hasher,
    /// The end was reached and the digest checked.
    done: bool,
    /// Called once if the content turns out corrupt (a store remembers it).
    on_corrupt: Option<Box<dyn FnOnce() + Send + 'a>>,
}

impl<'a, R: Read> VerifyingReader<'a, R> {
    pub fn new(inner: R, expected: ContentDigest) -> Self {
        VerifyingReader {
            inner,
            expected,
            hasher: blake3::Hasher::new(),
            done: false,
            on_corrupt: None,
        }
    }

    /// Calls `notify` once if the content turns out corrupt.
    pub fn on_corrupt(mut self, notify: impl FnOnce() + Send + 'a) -> Self {
        self.on_corrupt = Some(Box::new(notify));
        self
    }
}

impl<R: Read> Read for VerifyingReader<'_, R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buffer.is_empty() {
            return Ok(0);
        }
        let count = self.inner.read(buffer)?;
        if count >= PARALLEL_HASH_FROM {
            // A large read (an upload's or a restore's) is hashed on
            // every core: a 1 GiB blob's check no longer takes a core's
            // second or two before its upload can start.
            self.hasher.update_rayon(&buffer[..count]);
            return Ok(count);
        }
        if count > 0 {
            self.hasher.update(&buffer[..count]);
            return Ok(count);
        }
        let actual = ContentDigest(*self.hasher.finalize().as_bytes());
        if actual != self.expected {
            if let Some(notify) = self.on_corrupt.take() {
                notify();
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                StoreError::CorruptBlob {
                    expected: self.expected,
                    actual,
                },
            ));
        }
        self.done = true;
        Ok(0)
    }
}

/// Errors from a remote cache ([`RemoteCache`]). Messages are lowercase and
/// name the cache (its URL without credentials) and the object; they never
/// hold a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// The request did not answer within the cache's timeout.
    #[error("remote cache {url}: {operation} {object} timed out after {after_ms} ms")]
    Timeout {
        url: String,
        operation: &'static str,
        object: String,
        after_ms: u64,
    },
    /// The request failed: refused, unreachable, an error status.
    #[error("remote cache {url}: {operation} {object}: {message}")]
    Request {
        url: String,
        operation: &'static str,
        object: String,
        message: String,
    },
}

/// What [`RemoteCache::put_action`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The entry was written.
    Created,
    /// An entry for the key was already there (another writer came first):
    /// it was kept, not replaced. Not an error.
    AlreadyExists,
}

/// An AC entry to write with [`RemoteCache::put_actions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionPut {
    pub key: ActionKey,
    pub entry: Vec<u8>,
    /// A lookup found no entry for the key moments ago: written as
    /// [`RemoteCache::put_action_after_miss`] writes it.
    pub after_miss: bool,
}

/// Receives the answers of a batch of requests ([`RemoteCache::get_actions`],
/// [`RemoteCache::put_actions`]), each with the index of its request, in the
/// order they arrive; returns whether to go on. Once it returns `false`, no
/// further request of the batch starts: those already under way finish and
/// are answered, the others are never answered.
pub type Answered<'a, T> = dyn FnMut(usize, Result<T, RemoteError>) -> bool + 'a;

/// A shared remote cache of action results (docs/remote-cache.md): AC
/// entries by action key (`ac/<key hex>`, written once: the first writer
/// wins) and content-addressed blobs by blake3 (`cas/<digest hex>`).
///
/// Synchronous, like every port: a backend that speaks a network protocol
/// runs its own runtime inside (the `cairn-remote` crate). Nothing read
/// from a remote cache is trusted: the engine verifies every blob's blake3
/// and every entry's key and inputs before anything enters the local store.
pub trait RemoteCache: Send + Sync {
    /// The cache's URL as shown to users: never with a credential.
    fn url(&self) -> &str;
    /// The AC entry of `key`, as stored (unverified), if there is one.
    fn get_action(&self, key: &ActionKey) -> Result<Option<Vec<u8>>, RemoteError>;
    /// Writes the AC entry of `key` unless one exists (create-only).
    fn put_action(&self, key: &ActionKey, entry: &[u8]) -> Result<PutOutcome, RemoteError>;
    /// [`RemoteCache::put_action`] for a key that a lookup found absent
    /// moments ago: a backend with no conditional put, which must look
    /// before it writes, may take that lookup as its look. The provided
    /// method is `put_action`.
    fn put_action_after_miss(
        &self,
        key: &ActionKey,
        entry: &[u8],
    ) -> Result<PutOutcome, RemoteError> {
        self.put_action(key, entry)
    }
    /// The AC entries of `keys`, each as [`RemoteCache::get_action`]
    /// answers it, given to `answered` as they arrive. The provided method
    /// asks one at a time; a network backend keeps several requests in
    /// flight on one thread (fewer wake-ups per request: docs/benchmarks.md,
    /// "Shared remote cache").
    fn get_actions(&self, keys: &[ActionKey], answered: &mut Answered<'_, Option<Vec<u8>>>) {
        for (index, key) in keys.iter().enumerate() {
            if !answered(index, self.get_action(key)) {
                return;
            }
        }
    }
    /// Writes each entry as [`RemoteCache::put_action`] (or, for one
    /// `after_miss`, [`RemoteCache::put_action_after_miss`]) writes it,
    /// giving `answered` each outcome as it arrives. The provided method
    /// writes one at a time; a network backend keeps several in flight.
    fn put_actions(&self, puts: &[ActionPut], answered: &mut Answered<'_, PutOutcome>) {
        for (index, put) in puts.iter().enumerate() {
            let outcome = if put.after_miss {
                self.put_action_after_miss(&put.key, &put.entry)
            } else {
                self.put_action(&put.key, &put.entry)
            };
            if !answered(index, outcome) {
                return;
            }
        }
    }
    /// Whether the cache holds a blob named `digest` (not verified).
    fn has_blob(&self, digest: &ContentDigest) -> Result<bool, RemoteError>;
    /// The bytes stored under `digest`, unverified: the caller hashes them.
    fn get_blob(&self, digest: &ContentDigest) -> Result<Option<Vec<u8>>, RemoteError>;
    /// The blob stored under `digest` as a stream, unverified, if there is
    /// one. A read error carries the [`RemoteError`] as its source (see
    /// [`remote_error_of`]). The provided method reads it whole
    /// ([`RemoteCache::get_blob`]); backends that can stream override it,
    /// so that a large blob never sits in memory whole.
    fn open_blob(
        &self,
        digest: &ContentDigest,
    ) -> Result<Option<Box<dyn Read + Send + '_>>, RemoteError> {
        Ok(self
            .get_blob(digest)?
            .map(|bytes| Box::new(std::io::Cursor::new(bytes)) as Box<dyn Read + Send>))
    }
    /// Stores `bytes` under `digest` (their blake3, which the caller
    /// computed). Writing a blob that is already there is harmless.
    fn put_blob(&self, digest: &ContentDigest, bytes: &[u8]) -> Result<(), RemoteError>;
    /// Stores what `reader` yields, to its end, under `digest` (its blake3,
    /// which the caller computed), and returns how many bytes that was. A
    /// read error stores nothing: the blob is never left half-written
    /// under its name. The provided method reads it whole and calls
    /// [`RemoteCache::put_blob`]; network backends override it, so that a
    /// large output is not held in memory whole (sent in parts).
    fn put_blob_from(
        &self,
        digest: &ContentDigest,
        reader: &mut dyn Read,
    ) -> Result<u64, RemoteError> {
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|error| RemoteError::Request {
                url: self.url().to_owned(),
                operation: "put",
                object: format!("cas/{digest}"),
                message: format!("reading the blob from the local store: {error}"),
            })?;
        self.put_blob(digest, &bytes)?;
        Ok(bytes.len() as u64)
    }
}
