//! In-memory twins of the ports in [`crate::ports`], for tests and tools.
//!
//! - [`MemoryCatalog`]: the replay model. It keeps the events and folds each
//!   one, as it is appended, with the same rules the redb catalog applies
//!   ([`crate::projection::apply`]); it also holds a stat cache and hands
//!   out build ids as the redb catalog does.
//! - [`MemoryBlobs`]: blobs by blake3 of their content, every read verified.
//! - [`MemoryStatCache`]: a stat cache and nothing else, for observing files
//!   without a store.
//! - [`MemoryRemoteCache`]: a shared remote cache, with switches to make it
//!   fail, and to plant poisoned entries and corrupt blobs, for tests.
//!
//! The contract tests in `contract.rs` (feature `contract`) hold the twins
//! and the real store (`cairn-store`'s tests run the same functions) to the
//! same behaviour (docs/internals.md, "Ports and their twins"). Nothing here is
//! durable: `sync` has nothing to do.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Mutex, PoisonError, RwLock};

use crate::digest::{ActionKey, ContentDigest};
use crate::ports::{
    BlobStore, EventLog, Projections, PutOutcome, RemoteCache, RemoteError, StatCache, StoreError,
    VerifyingReader,
};
use crate::projection::{MemoryProjections, apply};
use crate::record::{
    CheckpointRecord, DefsRecord, Event, EventKind, Manifest, PartitionState, StatEntry,
};
use crate::refs::PartitionRef;

/// The catalog in memory: the event log, the projections folded from it by
/// [`crate::projection::apply`], a stat cache and the build counter. A new
/// one records nothing; `Default` is [`MemoryCatalog::new`].
#[derive(Debug, Default)]
pub struct MemoryCatalog {
    state: RwLock<CatalogState>,
}

#[derive(Debug, Default)]
struct CatalogState {
    events: Vec<Event>,
    projections: MemoryProjections,
    stats: HashMap<String, StatEntry>,
    /// The next build id as an append stored it (0: none stored, read as 1).
    next_build: u64,
    /// The build id handed out last and not carried by an append yet.
    reserved_build: Option<u64>,
}

impl MemoryCatalog {
    pub fn new() -> Self {
        Self::default()
    }

    /// A catalog holding `events` (their seqs must be 1, 2, …), with the
    /// projections a replay of them gives.
    pub fn from_events(events: impl IntoIterator<Item = Event>) -> Result<Self, StoreError> {
        let catalog = Self::new();
        {
            let mut state = catalog.write();
            for event in events {
                let expected = state.events.len() as u64 + 1;
                if event.seq != expected {
                    return Err(StoreError::Catalog {
                        path: "memory".into(),
                        message: format!(
                            "event {} given where event {expected} belongs",
                            event.seq
                        ),
                    });
                }
                state.next_build = state.next_build.max(event.build + 1);
                apply(&event, &mut state.projections)?;
                state.events.push(event);
            }
        }
        Ok(catalog)
    }

    /// Every event appended so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.read().events.clone()
    }

    /// The projections as they stand (what `cairn replay --check` compares).
    pub fn projections(&self) -> MemoryProjections {
        self.read().projections.clone()
    }

    /// Every stat-cache entry, by path.
    pub fn stat_entries(&self) -> BTreeMap<String, StatEntry> {
        self.read()
            .stats
            .iter()
            .map(|(path, entry)| (path.clone(), *entry))
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, CatalogState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, CatalogState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EventLog for MemoryCatalog {
    fn append_timed(
        &self,
        build: u64,
        events: Vec<(u64, EventKind)>,
        stats: Vec<(String, StatEntry)>,
    ) -> Result<u64, StoreError> {
        let mut state = self.write();
        // The rules never fail on `MemoryProjections`, so an append is
        // whole, as a redb transaction is.
        let mut seq = state.events.len() as u64;
        let mut appended = Vec::with_capacity(events.len());
        for (time_ms, kind) in events {
            seq += 1;
            appended.push(Event {
                seq,
                time_ms,
                build,
                kind,
            });
        }
        let CatalogState {
            events: log,
            projections,
            stats: stat_cache,
            next_build,
            ..
        } = &mut *state;
        for event in appended {
            apply(&event, projections)?;
            log.push(event);
        }
        stat_cache.extend(stats);
        if (*next_build).max(1) <= build {
            *next_build = build + 1;
        }
        Ok(seq)
    }

    fn scan_events(
        &self,
        from: u64,
        visit: &mut dyn FnMut(Event) -> bool,
    ) -> Result<(), StoreError> {
        // Copied out first: a visitor may read the catalog.
        let events: Vec<Event> = {
            let state = self.read();
            let start = usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX);
            state.events.get(start..).unwrap_or_default().to_vec()
        };
        for event in events {
            if !visit(event) {
                break;
            }
        }
        Ok(())
    }

    fn next_build_id(&self) -> Result<u64, StoreError> {
        let mut state = self.write();
        let stored = state.next_build.max(1);
        let build = state
            .reserved_build
            .map_or(stored, |last| stored.max(last + 1));
        state.reserved_build = Some(build);
        Ok(build)
    }

    fn records_nothing(&self) -> Result<bool, StoreError> {
        Ok(self.read().events.is_empty())
    }

    fn never_named(&self, partition: &PartitionRef) -> Result<bool, StoreError> {
        Ok(self
            .read()
            .projections
            .partition_events
            .range((partition.clone(), 0)..=(partition.clone(), u64::MAX))
            .next()
            .is_none())
    }
}

impl Projections for MemoryCatalog {
    fn action(&self, key: &ActionKey) -> Result<Option<Manifest>, StoreError> {
        Ok(self.read().projections.actions.get(key).cloned())
    }

    fn checkpoint(&self, key: &ActionKey) -> Result<Option<CheckpointRecord>, StoreError> {
        Ok(self.read().projections.checkpoints.get(key).copied())
    }

    fn partition(&self, partition: &PartitionRef) -> Result<Option<PartitionState>, StoreError> {
        Ok(self.read().projections.partitions.get(partition).cloned())
    }

    fn dataset_versions(&self) -> Result<BTreeMap<String, String>, StoreError> {
        Ok(self.read().projections.datasets.clone())
    }

    fn defs(&self, source: &str) -> Result<Option<DefsRecord>, StoreError> {
        Ok(self.read().projections.defs.get(source).copied())
    }
}

impl StatCache for MemoryCatalog {
    fn stat(&self, path: &str) -> Result<Option<StatEntry>, StoreError> {
        Ok(self.read().stats.get(path).copied())
    }
}

/// A catalog that holds a stat cache in memory and nothing else (no event,
/// manifest or partition state): for observing files through the stat cache
/// without a store, as tests and tools do. `append_timed` records the stat
/// updates and drops the events.
#[derive(Default)]
pub struct MemoryStatCache {
    entries: Mutex<HashMap<String, StatEntry>>,
}

impl MemoryStatCache {
    /// Records stat-cache updates, replacing earlier entries of their paths.
    pub fn record(&self, updates: impl IntoIterator<Item = (String, StatEntry)>) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(updates);
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl EventLog for MemoryStatCache {
    fn append_timed(
        &self,
        _build: u64,
        _events: Vec<(u64, EventKind)>,
        stats: Vec<(String, StatEntry)>,
    ) -> Result<u64, StoreError> {
        self.record(stats);
        Ok(0)
    }
    fn scan_events(
        &self,
        _from: u64,
        _visit: &mut dyn FnMut(Event) -> bool,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    fn next_build_id(&self) -> Result<u64, StoreError> {
        Ok(1)
    }
}

impl Projections for MemoryStatCache {
    fn action(&self, _key: &ActionKey) -> Result<Option<Manifest>, StoreError> {
        Ok(None)
    }
    fn checkpoint(&self, _key: &ActionKey) -> Result<Option<CheckpointRecord>, StoreError> {
        Ok(None)
    }
    fn partition(&self, _partition: &PartitionRef) -> Result<Option<PartitionState>, StoreError> {
        Ok(None)
    }
    fn dataset_versions(&self) -> Result<BTreeMap<String, String>, StoreError> {
        Ok(BTreeMap::new())
    }
    fn defs(&self, _source: &str) -> Result<Option<DefsRecord>, StoreError> {
        Ok(None)
    }
}

impl StatCache for MemoryStatCache {
    fn stat(&self, path: &str) -> Result<Option<StatEntry>, StoreError> {
        Ok(self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
            .cloned())
    }
}

/// The blob store in memory: blobs by blake3 of their content, each read
/// re-hashed as [`crate::ports::BlobStore`] requires. `Default` is
/// [`MemoryBlobs::new`].
#[derive(Debug, Default)]
pub struct MemoryBlobs {
    blobs: RwLock<HashMap<ContentDigest, Vec<u8>>>,
    /// Digests stored since the last [`BlobStore::sync`].
    unsynced: Mutex<Vec<ContentDigest>>,
}

impl MemoryBlobs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the bytes stored under `digest` (present or not) by
    /// `bytes`, as bit rot or tampering would: for tests of what a corrupt
    /// blob does. The next put of the right content repairs it.
    pub fn tamper(&self, digest: &ContentDigest, bytes: &[u8]) {
        self.blobs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(*digest, bytes.to_vec());
    }

    /// Removes a blob; whether it was there.
    pub fn remove(&self, digest: &ContentDigest) -> bool {
        self.blobs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(digest)
            .is_some()
    }

    /// The digests of every blob held, sorted.
    pub fn digests(&self) -> Vec<ContentDigest> {
        let mut digests: Vec<ContentDigest> = self
            .blobs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        digests.sort_unstable();
        digests
    }

    /// The blobs stored since the last [`BlobStore::sync`], in order: what a
    /// durable store would still have to make durable.
    pub fn unsynced(&self) -> Vec<ContentDigest> {
        self.unsynced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn get(&self, digest: &ContentDigest) -> Result<Vec<u8>, StoreError> {
        self.blobs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
            .cloned()
            .ok_or(StoreError::MissingBlob { expected: *digest })
    }

    fn store(&self, bytes: Vec<u8>) -> ContentDigest {
        let digest = ContentDigest::of(&bytes);
        let mut blobs = self.blobs.write().unwrap_or_else(PoisonError::into_inner);
        // A blob found different from its name (tampered) is rewritten.
        if blobs.get(&digest) != Some(&bytes) {
            blobs.insert(digest, bytes);
            self.unsynced
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(digest);
        }
        digest
    }
}

fn verified(digest: &ContentDigest, bytes: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    let actual = ContentDigest::of(&bytes);
    if actual == *digest {
        Ok(bytes)
    } else {
        Err(StoreError::CorruptBlob {
            expected: *digest,
            actual,
        })
    }
}

impl BlobStore for MemoryBlobs {
    fn put_file(&self, path: &Path) -> Result<ContentDigest, StoreError> {
        let bytes = std::fs::read(path).map_err(|error| StoreError::io(path, error))?;
        Ok(self.store(bytes))
    }

    /// Copies, never takes the file: the file is left as it was.
    fn adopt_file(&self, path: &Path) -> Result<ContentDigest, StoreError> {
        self.put_file(path)
    }

    fn put_bytes(&self, bytes: &[u8]) -> Result<ContentDigest, StoreError> {
        Ok(self.store(bytes.to_vec()))
    }

    fn contains(&self, digest: &ContentDigest) -> bool {
        self.blobs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(digest)
    }

    fn restore(&self, digest: &ContentDigest, dest: &Path) -> Result<(), StoreError> {
        let bytes = verified(digest, self.get(digest)?)?;
        // `create_new`, as the file store: a restore never overwrites.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(|error| StoreError::io(dest, error))?;
        let written = file.write_all(&bytes);
        drop(file);
        written.map_err(|error| {
            let _ = std::fs::remove_file(dest);
            StoreError::io(dest, error)
        })
    }

    fn read(&self, digest: &ContentDigest) -> Result<Vec<u8>, StoreError> {
        verified(digest, self.get(digest)?)
    }

    fn open_verified(
        &self,
        digest: &ContentDigest,
    ) -> Result<Box<dyn Read + Send + '_>, StoreError> {
        let bytes = self.get(digest)?;
        Ok(Box::new(VerifyingReader::new(
            std::io::Cursor::new(bytes),
            *digest,
        )))
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.unsynced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(())
    }
}

/// A remote cache in memory ([`RemoteCache`]): AC entries by key, written
/// once, and blobs by name, stored as given (a remote is not trusted, so
/// nothing is verified here). Tests can make it fail every request
/// ([`MemoryRemoteCache::set_failing`]), and write or tamper with entries
/// and blobs directly.
#[derive(Debug)]
pub struct MemoryRemoteCache {
    url: String,
    actions: RwLock<BTreeMap<ActionKey, Vec<u8>>>,
    blobs: RwLock<BTreeMap<ContentDigest, Vec<u8>>>,
    failing: std::sync::atomic::AtomicBool,
    requests: std::sync::atomic::AtomicU64,
}

impl Default for MemoryRemoteCache {
    fn default() -> Self {
        Self::new("memory://")
    }
}

impl MemoryRemoteCache {
    pub fn new(url: &str) -> Self {
        MemoryRemoteCache {
            url: url.to_owned(),
            actions: RwLock::default(),
            blobs: RwLock::default(),
            failing: std::sync::atomic::AtomicBool::new(false),
            requests: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Makes every request fail (as an unreachable server would) or succeed.
    pub fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many requests were made, failed ones included.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Writes (or replaces) the AC entry of `key`, as a hostile writer
    /// could: for tests of poisoned entries.
    pub fn plant_action(&self, key: &ActionKey, entry: &[u8]) {
        self.actions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(*key, entry.to_vec());
    }

    /// Replaces the bytes stored under `digest`, as bit rot or tampering
    /// would.
    pub fn tamper_blob(&self, digest: &ContentDigest, bytes: &[u8]) {
        self.blobs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(*digest, bytes.to_vec());
    }

    /// The keys of the AC entries held, sorted.
    pub fn action_keys(&self) -> Vec<ActionKey> {
        self.actions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }

    /// The names of the blobs held, sorted.
    pub fn blob_digests(&self) -> Vec<ContentDigest> {
        self.blobs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }

    fn request(&self, operation: &'static str, object: String) -> Result<(), RemoteError> {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RemoteError::Request {
                url: self.url.clone(),
                operation,
                object,
                message: "connection refused".to_owned(),
            });
        }
        Ok(())
    }
}

impl RemoteCache for MemoryRemoteCache {
    fn url(&self) -> &str {
        &self.url
    }

    fn get_action(&self, key: &ActionKey) -> Result<Option<Vec<u8>>, RemoteError> {
        self.request("get", format!("ac/{key}"))?;
        Ok(self
            .actions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned())
    }

    fn put_action(&self, key: &ActionKey, entry: &[u8]) -> Result<PutOutcome, RemoteError> {
        self.request("put", format!("ac/{key}"))?;
        let mut actions = self.actions.write().unwrap_or_else(PoisonError::into_inner);
        if actions.contains_key(key) {
            return Ok(PutOutcome::AlreadyExists);
        }
        actions.insert(*key, entry.to_vec());
        Ok(PutOutcome::Created)
    }

    fn has_blob(&self, digest: &ContentDigest) -> Result<bool, RemoteError> {
        self.request("head", format!("cas/{digest}"))?;
        Ok(self
            .blobs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(digest))
    }

    fn get_blob(&self, digest: &ContentDigest) -> Result<Option<Vec<u8>>, RemoteError> {
        self.request("get", format!("cas/{digest}"))?;
        Ok(self
            .blobs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
            .cloned())
    }

    fn put_blob(&self, digest: &ContentDigest, bytes: &[u8]) -> Result<(), RemoteError> {
        self.request("put", format!("cas/{digest}"))?;
        self.blobs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(*digest, bytes.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract;
    use crate::ports::Catalog;

    #[test]
    fn the_memory_catalog_keeps_the_catalog_contract() {
        contract::a_new_catalog_records_nothing(&MemoryCatalog::new());
        contract::the_projections_follow_the_log(&MemoryCatalog::new());
        contract::the_stat_cache_keeps_the_last_entry_of_each_path(&MemoryCatalog::new());
        contract::build_ids_are_never_reused(&MemoryCatalog::new());
        contract::a_remote_restore_records_its_manifest(&MemoryCatalog::new());
    }

    #[test]
    fn memory_blobs_keep_the_blob_contract() {
        let scratch = tempfile::tempdir().unwrap();
        contract::blobs_round_trip(&MemoryBlobs::new(), scratch.path());
        contract::a_verified_put_stores_only_what_was_expected(&MemoryBlobs::new());
        let scratch = tempfile::tempdir().unwrap();
        contract::a_missing_blob_is_reported_missing(&MemoryBlobs::new(), scratch.path());
        let scratch = tempfile::tempdir().unwrap();
        let blobs = MemoryBlobs::new();
        contract::a_corrupt_blob_is_never_served(&blobs, scratch.path(), &|digest, bytes| {
            blobs.tamper(digest, bytes);
        });
    }

    #[test]
    fn a_catalog_rebuilt_from_its_events_answers_the_same() {
        let catalog = MemoryCatalog::new();
        contract::the_projections_follow_the_log(&catalog);
        let rebuilt = MemoryCatalog::from_events(catalog.events()).unwrap();
        assert_eq!(rebuilt.projections(), catalog.projections());
        assert_eq!(rebuilt.events(), catalog.events());
        // Build ids go on after the last one the events carry.
        assert_eq!(rebuilt.next_build_id().unwrap(), 4);
        let mut events = catalog.events();
        events.remove(3);
        let Err(error) = MemoryCatalog::from_events(events) else {
            panic!("a gap in the seqs is refused");
        };
        assert!(
            error
                .to_string()
                .contains("event 5 given where event 4 belongs"),
            "{error}"
        );
    }

    #[test]
    fn the_stat_cache_twin_holds_stat_entries_only() {
        let cache = MemoryStatCache::default();
        let entry = StatEntry {
            size: 1,
            mtime_ns: 2,
            ctime_ns: 3,
            inode: 4,
            recorded_ns: 5,
            digest: ContentDigest::of(b"x"),
        };
        let catalog: &dyn Catalog = &cache;
        catalog
            .append(
                1,
                vec![EventKind::Planned {
                    actions: 1,
                    sources: 0,
                }],
                vec![("/a".into(), entry)],
            )
            .unwrap();
        assert_eq!(catalog.stat("/a").unwrap(), Some(entry));
        let mut events = 0;
        catalog
            .scan_events(1, &mut |_| {
                events += 1;
                true
            })
            .unwrap();
        assert_eq!(events, 0, "events are dropped");
        cache.clear();
        assert_eq!(catalog.stat("/a").unwrap(), None);
    }

    #[test]
    fn the_memory_remote_cache_keeps_the_remote_contract() {
        contract::remote_actions_are_written_once(&MemoryRemoteCache::new("memory://"));
        contract::remote_batches_answer_each_request_once(&MemoryRemoteCache::new("memory://"));
        contract::remote_blobs_round_trip(&MemoryRemoteCache::new("memory://"));
        contract::remote_blobs_stream_in(&MemoryRemoteCache::new("memory://"));
        let cache = MemoryRemoteCache::new("memory://");
        cache.set_failing(true);
        contract::a_failing_remote_names_itself(&cache);
    }

    #[test]
    fn memory_blobs_count_what_a_sync_would_make_durable() {
        let blobs = MemoryBlobs::new();
        let a = blobs.put_bytes(b"a").unwrap();
        let b = blobs.put_bytes(b"b").unwrap();
        blobs.put_bytes(b"a").unwrap();
        assert_eq!(blobs.unsynced(), [a, b]);
        blobs.sync().unwrap();
        assert!(blobs.unsynced().is_empty());
        assert_eq!(blobs.digests().len(), 2);
        assert!(blobs.remove(&a));
        assert!(!blobs.contains(&a));
    }
}
