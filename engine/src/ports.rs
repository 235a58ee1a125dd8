//! The ports through which the executor reaches durable state. `cairn-store`
//! implements them on redb and the file system; tests may use in-memory ones.
//!
//! Durability contract: bytes given to [`BlobStore`] become durable no later
//! than [`BlobStore::sync`]; the executor calls `sync` before
//! [`Catalog::append`] commits events that refer to those blobs, so the catalog
//! never points to a missing blob.

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
    /// Makes every blob written so far durable.
    fn sync(&self) -> Result<(), StoreError>;
}

/// The catalog: the event log and its projections, plus the stat cache.
pub trait Catalog: Send + Sync {
    /// The manifest of the last success of `key`, if any.
    fn action(&self, key: &ActionKey) -> Result<Option<Manifest>, StoreError>;
    /// The last checkpoint of `key` not cleared by a success since.
    fn checkpoint(&self, key: &ActionKey) -> Result<Option<CheckpointRecord>, StoreError>;
    /// The projected state of a partition.
    fn partition(&self, partition: &PartitionRef) -> Result<Option<PartitionState>, StoreError>;
    /// Appends `events` for `build` in one transaction, updating the
    /// projections and recording `stats` in the stat cache. Returns the
    /// sequence number of the last event appended.
    fn append(
        &self,
        build: u64,
        events: Vec<EventKind>,
        stats: Vec<(String, StatEntry)>,
    ) -> Result<u64, StoreError> {
        let now = crate::action::now_ms();
        let events = events.into_iter().map(|kind| (now, kind)).collect();
        self.append_timed(build, events, stats)
    }
    /// Like [`Catalog::append`], with the wall time (ms since the epoch) at
    /// which each event happened, which may be earlier than the commit.
    fn append_timed(
        &self,
        build: u64,
        events: Vec<(u64, EventKind)>,
        stats: Vec<(String, StatEntry)>,
    ) -> Result<u64, StoreError>;
    /// The version of each versioned dataset as last recorded by
    /// `DatasetVersionChanged` (absent: never recorded, or unversioned now).
    fn dataset_versions(&self) -> Result<std::collections::BTreeMap<String, String>, StoreError>;
    /// The latest good record of definitions source `source` (the last
    /// `DefsRefreshed` about it), if it was ever refreshed.
    fn defs(&self, source: &str) -> Result<Option<DefsRecord>, StoreError>;
    /// A stat-cache entry by absolute path.
    fn stat(&self, path: &str) -> Result<Option<StatEntry>, StoreError>;
    /// Whether the catalog records nothing at all: no event, so no result,
    /// partition state or checkpoint (a store never built in). No action
    /// key can then match, and evaluation need not compute one. A catalog
    /// that cannot tell cheaply answers `false`.
    fn records_nothing(&self) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// Allocates the next build id (writers only). It is stored by the
    /// first [`Catalog::append`] of events that carry it, in that commit;
    /// a process that ends before appending leaves nothing that uses the
    /// id, and the next writer is given it again.
    fn next_build_id(&self) -> Result<u64, StoreError>;
    /// Events with `seq >= from`, in order, streamed to `visit` (return
    /// `false` to stop).
    fn scan_events(
        &self,
        from: u64,
        visit: &mut dyn FnMut(Event) -> bool,
    ) -> Result<(), StoreError>;
    /// Told of every stat-cache decision an observation made: the entry it
    /// relied on for `path` (looked up and still valid, or just computed)
    /// and the file's executable bit. Only a build's
    /// [`Witness`](crate::uptodate::Witness) keeps them; catalogs ignore them.
    fn observed(&self, _path: &str, _entry: &StatEntry, _executable: bool) {}
}

/// A catalog that holds a stat cache in memory and nothing else (no event,
/// manifest or partition state): for observing files through the stat cache
/// without a store, as tests and tools do. `append_timed` records the stat
/// updates and drops the events.
#[derive(Default)]
pub struct MemoryStatCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, StatEntry>>,
}

impl MemoryStatCache {
    /// Records stat-cache updates, replacing earlier entries of their paths.
    pub fn record(&self, updates: impl IntoIterator<Item = (String, StatEntry)>) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(updates);
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

impl Catalog for MemoryStatCache {
    fn action(&self, _key: &ActionKey) -> Result<Option<Manifest>, StoreError> {
        Ok(None)
    }
    fn checkpoint(&self, _key: &ActionKey) -> Result<Option<CheckpointRecord>, StoreError> {
        Ok(None)
    }
    fn partition(&self, _partition: &PartitionRef) -> Result<Option<PartitionState>, StoreError> {
        Ok(None)
    }
    fn append_timed(
        &self,
        _build: u64,
        _events: Vec<(u64, EventKind)>,
        stats: Vec<(String, StatEntry)>,
    ) -> Result<u64, StoreError> {
        self.record(stats);
        Ok(0)
    }
    fn dataset_versions(&self) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
        Ok(std::collections::BTreeMap::new())
    }
    fn defs(&self, _source: &str) -> Result<Option<DefsRecord>, StoreError> {
        Ok(None)
    }
    fn stat(&self, path: &str) -> Result<Option<StatEntry>, StoreError> {
        Ok(self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(path)
            .cloned())
    }
    fn next_build_id(&self) -> Result<u64, StoreError> {
        Ok(1)
    }
    fn scan_events(
        &self,
        _from: u64,
        _visit: &mut dyn FnMut(Event) -> bool,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}
