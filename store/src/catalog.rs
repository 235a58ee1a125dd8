//! The catalog: one redb database, `.cairn/catalog.redb`, holding the event
//! log, its projections and the stat cache.
//!
//! Tables (every value is `[format byte] ++ postcard`, see [`crate::encoding`]):
//! - `events`: `u64 seq → Event`. Append-only: nothing in this crate updates or
//!   deletes a key, and seqs are consecutive from 1.
//! - `actions`: `action key → Manifest` of the last success of that key.
//! - `partitions`: `ref text → PartitionState`.
//! - `datasets`: `dataset → version` last recorded (a projection).
//! - `partition_events`: `(ref text, seq) → ()`, the seqs of the events about
//!   each partition (a projection: the index behind `cairn history`, `cairn
//!   logs` and `cairn log --partition REF`).
//! - `defs`: `source name → DefsRecord` of its last `DefsRefreshed` (a
//!   projection: the record builds read a source's values from).
//! - `stat_cache`: `absolute path → StatEntry`.
//! - `meta`: `format` (store format version), `next_build` (the next build id).
//!
//! Invariants:
//! - `actions`, `partitions`, `datasets` and `partition_events` are exactly
//!   what [`cairn_engine::projection::apply`] produces over `events`: they are written in the same transaction as the
//!   events that cause them, and [`RedbCatalog::replay_check`] proves it.
//! - Every commit is redb's default `Durability::Immediate`: once `append`
//!   returns, the events survive a crash or power loss.
//! - A store written by a newer format is refused before anything is written.
//!   A store written before `partition_events` existed gets it built from the
//!   log when a writer first opens it.
//! - The writer verifies every page checksum on open, so a corrupted file is
//!   an error naming it, never a panic or a silently wrong answer.
//!
//! Concurrency: the writer opens the database in redb's
//! `ConcurrencyMode::SingleWriter`, which lets other processes open it with
//! `open_read_only` (in the same mode) and read committed snapshots while a
//! build writes, so `status` and `log` never wait for a build. A read-only
//! catalog is the same type: its read methods work, and `append` and
//! `next_build_id` fail with a clear error.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use cairn_engine::PartitionRef;
use cairn_engine::digest::ActionKey;
use cairn_engine::ports::{EventLog, Projections, StatCache, StoreError};
use cairn_engine::record::{
    CheckpointRecord, DefsRecord, Event, EventKind, Manifest, PartitionState, StatEntry,
};
use redb::{
    Builder, ConcurrencyMode, Database, DatabaseError, Key, ReadOnlyDatabase, ReadOnlyTable,
    ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, TableError, Value,
};

mod length;

use crate::encoding::{
    FORMAT_VERSION, decode_checkpoint, decode_event, decode_manifest, decode_partition_state,
    decode_stat_entry, encode_checkpoint, encode_event, encode_manifest, encode_partition_state,
    encode_stat_entry,
};
use crate::encoding::{decode_defs, encode_defs};
use cairn_engine::projection::{
    MemoryProjections, ProjectionTables, apply, differences, partitions_of,
};

const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");
const ACTIONS: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("actions");
const PARTITIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("partitions");
const STAT_CACHE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("stat_cache");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// `dataset → version last recorded by DatasetVersionChanged` (a projection).
const DATASETS: TableDefinition<'_, &str, &str> = TableDefinition::new("datasets");
/// `action key → CheckpointRecord`: the last checkpoint of a key that has not
/// succeeded since (a projection).
const CHECKPOINTS: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("checkpoints");
/// `(ref text, seq) → ()`: the events about each partition (a projection).
const PARTITION_EVENTS: TableDefinition<'_, (&str, u64), ()> =
    TableDefinition::new("partition_events");
/// `source name → DefsRecord`: the latest record of each definitions source
/// (a projection).
const DEFS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("defs");

/// The page cache of a read-only catalog.
const READER_CACHE_BYTES: usize = 16 * 1024 * 1024;
/// The page cache of the writer. redb's default (1 GiB) lets a build's
/// memory grow with the catalog's history: opening the writer reads every
/// page (the integrity check), and each page read stays cached, so a no-op
/// build of a 22,265-action project peaked at 130 MiB. A bounded cache keeps
/// memory with the requested graph; the lookups that matter use the upper
/// levels of the trees, which stay cached. Measured on the 365x30 workload
/// (67 MB catalog): 32 MiB -> 16 MiB took the cold build's peak RSS from 75
/// to 58 MiB (target: 64) and left the cold build (43 s) and the no-op
/// (0.52 s) as fast.
const WRITER_CACHE_BYTES: usize = 16 * 1024 * 1024;

const META_FORMAT: &str = "format";
const META_NEXT_BUILD: &str = "next_build";

/// The database handle: a writer, or a reader beside some other writer.
enum Handle {
    Writer(Database),
    Reader(ReadOnlyDatabase),
    /// Only while a writer handle is dropped.
    Closed,
}

/// The redb catalog; implements the catalog ports ([`EventLog`],
/// [`Projections`], [`StatCache`], so [`cairn_engine::ports::Catalog`]).
pub struct RedbCatalog {
    path: PathBuf,
    /// The read snapshot the per-action lookups (`action`, `partition`,
    /// `stat`, `checkpoint`) share, so that a build does not begin a read
    /// transaction and open a table for each of its tens of thousands of
    /// lookups. Taken at the first lookup and dropped by every commit of
    /// this handle, so a lookup always sees what this handle committed; a
    /// read-only handle keeps one snapshot of the other writer's commits for
    /// its (short) life, which makes a command's answers consistent.
    /// Declared before `handle`: fields drop in order, and the snapshot's
    /// read transaction must end before the database closes.
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    /// The build id [`EventLog::next_build_id`] handed out last, not yet
    /// carried by an appended event: the first append that carries it
    /// stores it, in the same commit.
    reserved_build: Mutex<Option<u64>>,
    handle: Handle,
}

/// The tables of one read transaction, opened once.
struct Snapshot {
    actions: Option<ReadOnlyTable<&'static [u8; 32], &'static [u8]>>,
    partitions: Option<ReadOnlyTable<&'static str, &'static [u8]>>,
    stat_cache: Option<ReadOnlyTable<&'static str, &'static [u8]>>,
    checkpoints: Option<ReadOnlyTable<&'static [u8; 32], &'static [u8]>>,
    partition_events: Option<ReadOnlyTable<(&'static str, u64), ()>>,
}

/// Counts of the catalog, for `cairn store stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatalogStats {
    /// Events in the log (the last seq).
    pub events: u64,
    /// Build ids allocated (builds, invalidations, repairs).
    pub builds: u64,
    /// Manifests in `actions`: distinct keys that succeeded.
    pub actions: u64,
    /// Partitions with any recorded state.
    pub partitions: u64,
    /// Partitions with a current materialization.
    pub materialized: u64,
    /// Entries of the `partition_events` index.
    pub indexed: u64,
    /// Size of `catalog.redb` in bytes.
    pub file_bytes: u64,
}

/// What [`RedbCatalog::replay`] rebuilt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub events: u64,
    pub actions: u64,
    pub partitions: u64,
    pub datasets: u64,
    pub indexed: u64,
}

/// The outcome of opening a catalog read-only.
pub(crate) enum ReaderOpen {
    Opened(RedbCatalog),
    /// The last writer died without closing the file, and no live writer has
    /// recovered it yet: a read-only handle may not repair it.
    NeedsRecovery,
}

impl RedbCatalog {
    /// Opens (or creates) the catalog for writing. The caller holds the
    /// store's writer lock.
    pub(crate) fn open_writer(path: &Path, create: bool) -> Result<RedbCatalog, StoreError> {
        let mut builder = Builder::new();
        builder.set_concurrency_mode(ConcurrencyMode::SingleWriter);
        // A plain open trusts a cleanly closed file and may panic on one
        // altered since (a torn copy, an edit); checking every page checksum
        // turns that into an error. It reads the whole file (+30 ms per
        // 70 MB, and a catalog grows with its history), so it is skipped
        // when the file is exactly as this writer's predecessor closed it.
        let unchanged = !create || path.exists();
        let unchanged = unchanged && closed_stamp_matches(path);
        builder.set_check_integrity_on_open(!unchanged);
        // From here on the file is being written: the stamp no longer holds.
        remove_closed_stamp(path)?;
        builder.set_cache_size(WRITER_CACHE_BYTES);
        let database = if create {
            builder.create(path)
        } else {
            builder.open(path)
        }
        .map_err(|error| catalog_error(path, error))?;
        let catalog = RedbCatalog {
            path: path.to_owned(),
            handle: Handle::Writer(database),
            snapshot: RwLock::new(None),
            reserved_build: Mutex::new(None),
        };
        let format = catalog.stored_format()?;
        if format.is_none() {
            catalog.initialize()?;
        }
        if format.is_some_and(|format| format < u64::from(FORMAT_VERSION)) {
            // This writer adds records of its own format: an older cairn
            // must now refuse the store rather than misread them.
            catalog.set_format()?;
        }
        if format.is_some() && !catalog.has_table(PARTITION_EVENTS)? {
            // A store from before the index existed: build it (and, by the
            // same replay, check nothing else) from the log, once.
            tracing::info!(
                "{}: building the partition event index from the log",
                path.display()
            );
            catalog.replay()?;
        }
        Ok(catalog)
    }

    /// Opens an existing catalog read-only, beside a writer if one runs.
    pub(crate) fn open_reader(path: &Path) -> Result<ReaderOpen, StoreError> {
        let mut builder = Builder::new();
        builder.set_concurrency_mode(ConcurrencyMode::SingleWriter);
        // Readers stream (`cairn log` over millions of events): a small page
        // cache keeps their memory flat instead of growing with the catalog
        // up to redb's default of 1 GiB.
        builder.set_cache_size(READER_CACHE_BYTES);
        let database = match builder.open_read_only(path) {
            Ok(database) => database,
            Err(DatabaseError::RepairAborted) => return Ok(ReaderOpen::NeedsRecovery),
            Err(error) => return Err(catalog_error(path, error)),
        };
        // redb's read-only open does not compare the file's length with its
        // header (a writer's does): without this, a file cut inside its free
        // tail reads as if whole.
        length::check(path)?;
        let catalog = RedbCatalog {
            path: path.to_owned(),
            handle: Handle::Reader(database),
            snapshot: RwLock::new(None),
            reserved_build: Mutex::new(None),
        };
        catalog.stored_format()?;
        Ok(ReaderOpen::Opened(catalog))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store format recorded in `meta` (the newest format of any record
    /// in it); 0 for a catalog that was never initialized.
    pub fn format_version(&self) -> Result<u64, StoreError> {
        Ok(self.stored_format()?.unwrap_or(0))
    }

    /// Records this cairn's [`FORMAT_VERSION`] in `meta`.
    fn set_format(&self) -> Result<(), StoreError> {
        let database = self.writer("upgrading its format")?;
        let transaction = database.begin_write().map_err(|error| self.fail(error))?;
        transaction
            .open_table(META)
            .map_err(|error| self.fail(error))?
            .insert(META_FORMAT, u64::from(FORMAT_VERSION))
            .map_err(|error| self.fail(error))?;
        transaction.commit().map_err(|error| self.fail(error))?;
        self.forget_snapshot();
        Ok(())
    }

    pub fn is_read_only(&self) -> bool {
        matches!(self.handle, Handle::Reader(_))
    }

    /// The seq of the last event, 0 if the log is empty.
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        let transaction = self.begin_read()?;
        let Some(events) = self.read_table(&transaction, EVENTS)? else {
            return Ok(0);
        };
        let last = events.last().map_err(|error| self.fail(error))?;
        Ok(last.map_or(0, |(seq, _)| seq.value()))
    }

    /// Rebuilds every projection (`actions`, `partitions`, `datasets`,
    /// `partition_events`) from the events alone (in memory) and lists how
    /// the live tables differ; empty when they are equal.
    pub fn replay_check(&self) -> Result<Vec<String>, StoreError> {
        // One read transaction: the log and the tables are one snapshot.
        let transaction = self.begin_read()?;
        let mut replayed = MemoryProjections::default();
        if let Some(events) = self.read_table(&transaction, EVENTS)? {
            self.visit_events(&events, 1, &mut |event| {
                apply(&event, &mut replayed)?;
                Ok(true)
            })?;
        }
        let mut found = Vec::new();
        let mut live = self.read_live_projections(&transaction, &mut found)?;
        if self.read_table(&transaction, PARTITION_EVENTS)?.is_none()
            && !replayed.partition_events.is_empty()
        {
            found.push(
                "the partition event index is missing (a store from before it existed): \
                 `cairn replay` builds it"
                    .to_owned(),
            );
            live.partition_events = replayed.partition_events.clone();
        }
        found.extend(differences(&replayed, &live));
        Ok(found)
    }

    /// Rebuilds every projection from the log in one write transaction:
    /// `actions`, `partitions`, `datasets` and `partition_events` are
    /// emptied, then every event is applied again in order. The stat cache
    /// and `meta` are left alone (they are not projections). Writer only.
    pub fn replay(&self) -> Result<ReplayReport, StoreError> {
        let database = self.writer("replaying the log")?;
        let transaction = database.begin_write().map_err(|error| self.fail(error))?;
        let report = {
            transaction
                .delete_table(ACTIONS)
                .map_err(|error| self.fail(error))?;
            transaction
                .delete_table(PARTITIONS)
                .map_err(|error| self.fail(error))?;
            transaction
                .delete_table(DATASETS)
                .map_err(|error| self.fail(error))?;
            transaction
                .delete_table(CHECKPOINTS)
                .map_err(|error| self.fail(error))?;
            transaction
                .delete_table(DEFS)
                .map_err(|error| self.fail(error))?;
            transaction
                .delete_table(PARTITION_EVENTS)
                .map_err(|error| self.fail(error))?;
            let log = transaction
                .open_table(EVENTS)
                .map_err(|error| self.fail(error))?;
            let mut projections = self.table_projections(&transaction)?;
            let mut events = 0;
            for entry in log.range(1..).map_err(|error| self.fail(error))? {
                let (seq, bytes) = entry.map_err(|error| self.fail(error))?;
                let event = self.decode_at(seq.value(), bytes.value())?;
                apply(&event, &mut projections)?;
                events += 1;
            }
            ReplayReport {
                events,
                actions: projections
                    .actions
                    .len()
                    .map_err(|error| self.fail(error))?,
                partitions: projections
                    .partitions
                    .len()
                    .map_err(|error| self.fail(error))?,
                datasets: projections
                    .datasets
                    .len()
                    .map_err(|error| self.fail(error))?,
                indexed: projections
                    .partition_events
                    .len()
                    .map_err(|error| self.fail(error))?,
            }
        };
        transaction.commit().map_err(|error| self.fail(error))?;
        self.forget_snapshot();
        Ok(report)
    }

    /// The latest record of every definitions source, by name.
    pub fn all_defs(&self) -> Result<std::collections::BTreeMap<String, DefsRecord>, StoreError> {
        let transaction = self.begin_read()?;
        let mut out = std::collections::BTreeMap::new();
        if let Some(defs) = self.read_table(&transaction, DEFS)? {
            for entry in defs.iter().map_err(|error| self.fail(error))? {
                let (source, bytes) = entry.map_err(|error| self.fail(error))?;
                let source = source.value().to_owned();
                let record = decode_defs(bytes.value())
                    .map_err(|error| self.fail(format!("defs of source {source}: {error}")))?;
                out.insert(source, record);
            }
        }
        Ok(out)
    }

    /// The event with sequence number `seq`, if there is one.
    pub fn event(&self, seq: u64) -> Result<Option<Event>, StoreError> {
        let transaction = self.begin_read()?;
        let Some(events) = self.read_table(&transaction, EVENTS)? else {
            return Ok(None);
        };
        let Some(bytes) = events.get(seq).map_err(|error| self.fail(error))? else {
            return Ok(None);
        };
        self.decode_at(seq, bytes.value()).map(Some)
    }

    /// The events, newest first (from the last seq down to 1), in one read
    /// transaction, until `visit` says stop: what reads the end of the log
    /// without going through its beginning (a restarted `cairn serve`
    /// rebuilds its last operations this way, server/src/restore.rs).
    pub fn scan_events_back(&self, visit: &mut dyn FnMut(Event) -> bool) -> Result<(), StoreError> {
        let transaction = self.begin_read()?;
        let Some(events) = self.read_table(&transaction, EVENTS)? else {
            return Ok(());
        };
        for entry in events.range(1..).map_err(|error| self.fail(error))?.rev() {
            let (seq, bytes) = entry.map_err(|error| self.fail(error))?;
            if !visit(self.decode_at(seq.value(), bytes.value())?) {
                break;
            }
        }
        Ok(())
    }

    /// The first seq whose event satisfies `reached`, found by binary
    /// search over seq in one read transaction (about log2(events) reads),
    /// or `last seq + 1` when none does. `reached` must be monotone along
    /// the log: false for a prefix of it, true from some seq on. Build ids
    /// are (a build's events form one block, ids allocated in increasing
    /// order by the single writer); recorded times are as long as the
    /// system clock is not stepped back (see `cairn log --since DATE`).
    pub fn first_seq_reaching(&self, reached: &dyn Fn(&Event) -> bool) -> Result<u64, StoreError> {
        let transaction = self.begin_read()?;
        let Some(events) = self.read_table(&transaction, EVENTS)? else {
            return Ok(1);
        };
        let last = events
            .last()
            .map_err(|error| self.fail(error))?
            .map_or(0, |(seq, _)| seq.value());
        let (mut low, mut high) = (1u64, last + 1);
        while low < high {
            let middle = low + (high - low) / 2;
            let Some(bytes) = events.get(middle).map_err(|error| self.fail(error))? else {
                return Err(self.fail(format!(
                    "event {middle} is missing from the log (events 1 to {last} are expected)"
                )));
            };
            if reached(&self.decode_at(middle, bytes.value())?) {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        Ok(low)
    }

    /// The events about `partition` (see [`partitions_of`]) with
    /// `seq >= from`, in order, until `visit` says stop. Reads the
    /// `partition_events` index and fetches each event by seq, so the cost
    /// grows with the partition's history, not the log's; a store without
    /// the index (opened read-only before a writer built it) is scanned.
    pub fn partition_events(
        &self,
        partition: &PartitionRef,
        from: u64,
        visit: &mut dyn FnMut(Event) -> bool,
    ) -> Result<(), StoreError> {
        let transaction = self.begin_read()?;
        let Some(events) = self.read_table(&transaction, EVENTS)? else {
            return Ok(());
        };
        let Some(index) = self.read_table(&transaction, PARTITION_EVENTS)? else {
            return self.visit_events(&events, from, &mut |event| {
                if partitions_of(&event.kind).contains(&partition) {
                    Ok(visit(event))
                } else {
                    Ok(true)
                }
            });
        };
        let text = partition.as_str();
        for entry in index
            .range((text, from)..=(text, u64::MAX))
            .map_err(|error| self.fail(error))?
        {
            let (key, _) = entry.map_err(|error| self.fail(error))?;
            let seq = key.value().1;
            let Some(bytes) = events.get(seq).map_err(|error| self.fail(error))? else {
                return Err(self.fail(format!(
                    "the partition event index lists event {seq} for {partition}, \
                     which is not in the log (run `cairn replay`)"
                )));
            };
            if !visit(self.decode_at(seq, bytes.value())?) {
                break;
            }
        }
        Ok(())
    }

    /// Every manifest of the `actions` table, in key order, until `visit`
    /// says stop.
    pub fn manifests(&self, visit: &mut dyn FnMut(Manifest) -> bool) -> Result<(), StoreError> {
        let transaction = self.begin_read()?;
        let Some(actions) = self.read_table(&transaction, ACTIONS)? else {
            return Ok(());
        };
        for entry in actions.iter().map_err(|error| self.fail(error))? {
            let (key, bytes) = entry.map_err(|error| self.fail(error))?;
            let manifest = decode_manifest(bytes.value()).map_err(|error| {
                self.fail(format!("action {}: {error}", ActionKey(*key.value())))
            })?;
            if !visit(manifest) {
                break;
            }
        }
        Ok(())
    }

    /// Every partition of the `partitions` table with its state, in ref
    /// order, until `visit` says stop.
    pub fn partition_states(
        &self,
        visit: &mut dyn FnMut(PartitionRef, PartitionState) -> bool,
    ) -> Result<(), StoreError> {
        let transaction = self.begin_read()?;
        let Some(partitions) = self.read_table(&transaction, PARTITIONS)? else {
            return Ok(());
        };
        for entry in partitions.iter().map_err(|error| self.fail(error))? {
            let (text, bytes) = entry.map_err(|error| self.fail(error))?;
            let text = text.value();
            let partition = PartitionRef::parse(text)
                .map_err(|error| self.fail(format!("partition key {text:?}: {error}")))?;
            let state = decode_partition_state(bytes.value())
                .map_err(|error| self.fail(format!("partition {partition}: {error}")))?;
            if !visit(partition, state) {
                break;
            }
        }
        Ok(())
    }

    /// The last build id allocated (0 if none): stored, or handed out by
    /// this handle and not appended yet.
    pub fn last_build_id(&self) -> Result<u64, StoreError> {
        let stored = self.stored_next_build()?.saturating_sub(1);
        Ok(stored.max(self.reserved_build().unwrap_or(0)))
    }

    /// `next_build` as committed (1 in a new catalog).
    fn stored_next_build(&self) -> Result<u64, StoreError> {
        let transaction = self.begin_read()?;
        let Some(meta) = self.read_table(&transaction, META)? else {
            return Ok(1);
        };
        Ok(meta
            .get(META_NEXT_BUILD)
            .map_err(|error| self.fail(error))?
            .map_or(1, |value| value.value()))
    }

    fn reserved_build(&self) -> Option<u64> {
        *self
            .reserved_build
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts of the catalog (one snapshot).
    pub fn stats(&self) -> Result<CatalogStats, StoreError> {
        let transaction = self.begin_read()?;
        let mut stats = CatalogStats {
            file_bytes: std::fs::metadata(&self.path)
                .map_err(|error| StoreError::io(&self.path, error))?
                .len(),
            ..CatalogStats::default()
        };
        if let Some(events) = self.read_table(&transaction, EVENTS)? {
            stats.events = events
                .last()
                .map_err(|error| self.fail(error))?
                .map_or(0, |(seq, _)| seq.value());
        }
        if let Some(meta) = self.read_table(&transaction, META)? {
            stats.builds = meta
                .get(META_NEXT_BUILD)
                .map_err(|error| self.fail(error))?
                .map_or(1, |value| value.value())
                .saturating_sub(1);
        }
        stats.builds = stats.builds.max(self.reserved_build().unwrap_or(0));
        if let Some(actions) = self.read_table(&transaction, ACTIONS)? {
            stats.actions = actions.len().map_err(|error| self.fail(error))?;
        }
        if let Some(partitions) = self.read_table(&transaction, PARTITIONS)? {
            for entry in partitions.iter().map_err(|error| self.fail(error))? {
                let (text, bytes) = entry.map_err(|error| self.fail(error))?;
                stats.partitions += 1;
                let state = decode_partition_state(bytes.value())
                    .map_err(|error| self.fail(format!("partition {}: {error}", text.value())))?;
                stats.materialized += u64::from(state.current.is_some());
            }
        }
        if let Some(index) = self.read_table(&transaction, PARTITION_EVENTS)? {
            stats.indexed = index.len().map_err(|error| self.fail(error))?;
        }
        Ok(stats)
    }

    /// Runs redb's full integrity check (every page checksum), repairing what
    /// it can: `Ok(true)` if the file was sound, `Ok(false)` if it was
    /// repaired. Writer only; slow, meant for `cairn store verify`.
    pub fn check_integrity(&mut self) -> Result<bool, StoreError> {
        match &mut self.handle {
            Handle::Writer(database) => database
                .check_integrity()
                .map_err(|error| catalog_error(&self.path, error)),
            Handle::Reader(_) | Handle::Closed => {
                Err(self.read_only_error("checking its integrity"))
            }
        }
    }

    fn stored_format(&self) -> Result<Option<u64>, StoreError> {
        let transaction = self.begin_read()?;
        let Some(meta) = self.read_table(&transaction, META)? else {
            return Ok(None);
        };
        let format = meta
            .get(META_FORMAT)
            .map_err(|error| self.fail(error))?
            .map(|value| value.value());
        if let Some(found) = format
            && found > u64::from(FORMAT_VERSION)
        {
            return Err(StoreError::NewerFormat {
                path: self.path.clone(),
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: FORMAT_VERSION,
            });
        }
        Ok(format)
    }

    /// Creates every table and records the format, so that readers find a
    /// complete schema.
    fn initialize(&self) -> Result<(), StoreError> {
        let database = self.writer("creating it")?;
        let transaction = database.begin_write().map_err(|error| self.fail(error))?;
        {
            // Opening a table in a write transaction creates it.
            transaction
                .open_table(EVENTS)
                .map_err(|error| self.fail(error))?;
            transaction
                .open_table(ACTIONS)
                .map_err(|error| self.fail(error))?;
            transaction
                .open_table(PARTITIONS)
                .map_err(|error| self.fail(error))?;
            transaction
                .open_table(STAT_CACHE)
                .map_err(|error| self.fail(error))?;
            transaction
                .open_table(DATASETS)
                .map_err(|error| self.fail(error))?;
            transaction
                .open_table(PARTITION_EVENTS)
                .map_err(|error| self.fail(error))?;
            let mut meta = transaction
                .open_table(META)
                .map_err(|error| self.fail(error))?;
            meta.insert(META_FORMAT, u64::from(FORMAT_VERSION))
                .map_err(|error| self.fail(error))?;
        }
        transaction.commit().map_err(|error| self.fail(error))?;
        self.forget_snapshot();
        Ok(())
    }

    fn writer(&self, doing: &str) -> Result<&Database, StoreError> {
        match &self.handle {
            Handle::Writer(database) => Ok(database),
            Handle::Reader(_) | Handle::Closed => Err(self.read_only_error(doing)),
        }
    }

    fn read_only_error(&self, doing: &str) -> StoreError {
        self.fail(format!(
            "the store was opened read-only; {doing} needs a command that takes the writer lock"
        ))
    }

    /// The shared read snapshot of the lookup tables (see the field).
    fn snapshot(&self) -> Result<Arc<Snapshot>, StoreError> {
        let cached = self
            .snapshot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(snapshot) = cached {
            return Ok(snapshot);
        }
        let mut slot = self
            .snapshot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(snapshot) = slot.as_ref() {
            return Ok(Arc::clone(snapshot));
        }
        let transaction = self.begin_read()?;
        let snapshot = Arc::new(Snapshot {
            actions: self.read_table(&transaction, ACTIONS)?,
            partitions: self.read_table(&transaction, PARTITIONS)?,
            stat_cache: self.read_table(&transaction, STAT_CACHE)?,
            checkpoints: self.read_table(&transaction, CHECKPOINTS)?,
            partition_events: self.read_table(&transaction, PARTITION_EVENTS)?,
        });
        *slot = Some(Arc::clone(&snapshot));
        Ok(snapshot)
    }

    /// Drops the shared snapshot after a commit, so the next lookup sees it.
    fn forget_snapshot(&self) {
        *self
            .snapshot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        match &self.handle {
            Handle::Writer(database) => database.begin_read(),
            Handle::Reader(database) => database.begin_read(),
            Handle::Closed => return Err(self.fail("the catalog is closed")),
        }
        .map_err(|error| self.fail(error))
    }

    /// Opens a table for reading; `None` if it was never created.
    fn read_table<K: Key + 'static, V: Value + 'static>(
        &self,
        transaction: &ReadTransaction,
        definition: TableDefinition<'_, K, V>,
    ) -> Result<Option<ReadOnlyTable<K, V>>, StoreError> {
        match transaction.open_table(definition) {
            Ok(table) => Ok(Some(table)),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(error) => Err(self.fail(error)),
        }
    }

    /// Decodes the events with `seq >= from` in order until `visit` says stop.
    fn visit_events(
        &self,
        events: &ReadOnlyTable<u64, &[u8]>,
        from: u64,
        visit: &mut dyn FnMut(Event) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        for entry in events.range(from..).map_err(|error| self.fail(error))? {
            let (seq, bytes) = entry.map_err(|error| self.fail(error))?;
            let event = self.decode_at(seq.value(), bytes.value())?;
            if !visit(event)? {
                break;
            }
        }
        Ok(())
    }

    /// Decodes the event stored under `seq`, checking it carries that seq.
    fn decode_at(&self, seq: u64, bytes: &[u8]) -> Result<Event, StoreError> {
        let event = decode_event(bytes)
            .map_err(|error| self.fail(format!("event {seq} does not decode: {error}")))?;
        if event.seq != seq {
            return Err(self.fail(format!(
                "event {seq} is stored with sequence number {}",
                event.seq
            )));
        }
        Ok(event)
    }

    /// Whether the table exists.
    fn has_table<K: Key + 'static, V: Value + 'static>(
        &self,
        definition: TableDefinition<'_, K, V>,
    ) -> Result<bool, StoreError> {
        let transaction = self.begin_read()?;
        Ok(self.read_table(&transaction, definition)?.is_some())
    }

    /// The projection tables of a write transaction (created if missing).
    fn table_projections<'transaction>(
        &self,
        transaction: &'transaction redb::WriteTransaction,
    ) -> Result<TableProjections<'transaction, '_>, StoreError> {
        Ok(TableProjections {
            actions: transaction
                .open_table(ACTIONS)
                .map_err(|error| self.fail(error))?,
            partitions: transaction
                .open_table(PARTITIONS)
                .map_err(|error| self.fail(error))?,
            datasets: transaction
                .open_table(DATASETS)
                .map_err(|error| self.fail(error))?,
            partition_events: transaction
                .open_table(PARTITION_EVENTS)
                .map_err(|error| self.fail(error))?,
            checkpoints: transaction
                .open_table(CHECKPOINTS)
                .map_err(|error| self.fail(error))?,
            defs: transaction
                .open_table(DEFS)
                .map_err(|error| self.fail(error))?,
            catalog: self,
        })
    }

    /// The live projection tables, read into memory (for tests comparing
    /// them with a replay or a twin).
    #[cfg(test)]
    pub(crate) fn live_projections(&self) -> Result<MemoryProjections, StoreError> {
        let transaction = self.begin_read()?;
        let mut found = Vec::new();
        let live = self.read_live_projections(&transaction, &mut found)?;
        assert!(found.is_empty(), "{found:?}");
        Ok(live)
    }

    /// Reads the live `actions` and `partitions` tables; entries that do not
    /// decode, or sit under the wrong key, are reported into `found`.
    fn read_live_projections(
        &self,
        transaction: &ReadTransaction,
        found: &mut Vec<String>,
    ) -> Result<MemoryProjections, StoreError> {
        let mut live = MemoryProjections::default();
        if let Some(actions) = self.read_table(transaction, ACTIONS)? {
            for entry in actions.iter().map_err(|error| self.fail(error))? {
                let (key, bytes) = entry.map_err(|error| self.fail(error))?;
                let key = ActionKey(*key.value());
                match decode_manifest(bytes.value()) {
                    Ok(manifest) if manifest.key == key => {
                        live.actions.insert(key, manifest);
                    }
                    Ok(manifest) => found.push(format!(
                        "action {key}: the live table holds the manifest of {}",
                        manifest.key
                    )),
                    Err(error) => found.push(format!("action {key}: {error}")),
                }
            }
        }
        if let Some(partitions) = self.read_table(transaction, PARTITIONS)? {
            for entry in partitions.iter().map_err(|error| self.fail(error))? {
                let (text, bytes) = entry.map_err(|error| self.fail(error))?;
                let text = text.value();
                let partition = match PartitionRef::parse(text) {
                    Ok(partition) => partition,
                    Err(error) => {
                        found.push(format!("partition key {text:?} in the live table: {error}"));
                        continue;
                    }
                };
                match decode_partition_state(bytes.value()) {
                    Ok(state) => {
                        live.partitions.insert(partition, state);
                    }
                    Err(error) => found.push(format!("partition {partition}: {error}")),
                }
            }
        }
        if let Some(datasets) = self.read_table(transaction, DATASETS)? {
            for entry in datasets.iter().map_err(|error| self.fail(error))? {
                let (dataset, version) = entry.map_err(|error| self.fail(error))?;
                live.datasets
                    .insert(dataset.value().to_owned(), version.value().to_owned());
            }
        }
        if let Some(checkpoints) = self.read_table(transaction, CHECKPOINTS)? {
            for entry in checkpoints.iter().map_err(|error| self.fail(error))? {
                let (key, bytes) = entry.map_err(|error| self.fail(error))?;
                let key = ActionKey(*key.value());
                match decode_checkpoint(bytes.value()) {
                    Ok(record) => {
                        live.checkpoints.insert(key, record);
                    }
                    Err(error) => found.push(format!("checkpoint of action {key}: {error}")),
                }
            }
        }
        if let Some(defs) = self.read_table(transaction, DEFS)? {
            for entry in defs.iter().map_err(|error| self.fail(error))? {
                let (source, bytes) = entry.map_err(|error| self.fail(error))?;
                let source = source.value().to_owned();
                match decode_defs(bytes.value()) {
                    Ok(record) => {
                        live.defs.insert(source, record);
                    }
                    Err(error) => found.push(format!("defs of source {source}: {error}")),
                }
            }
        }
        if let Some(index) = self.read_table(transaction, PARTITION_EVENTS)? {
            for entry in index.iter().map_err(|error| self.fail(error))? {
                let (key, _) = entry.map_err(|error| self.fail(error))?;
                let (text, seq) = key.value();
                match PartitionRef::parse(text) {
                    Ok(partition) => {
                        live.partition_events.insert((partition, seq));
                    }
                    Err(error) => found.push(format!(
                        "partition index key {text:?} (event {seq}) in the live table: {error}"
                    )),
                }
            }
        }
        Ok(live)
    }

    fn fail(&self, error: impl Display) -> StoreError {
        catalog_error(&self.path, error)
    }
}

fn catalog_error(path: &Path, error: impl Display) -> StoreError {
    StoreError::Catalog {
        path: path.to_owned(),
        message: error.to_string(),
    }
}

/// The projection tables of a write transaction.
struct TableProjections<'transaction, 'catalog> {
    actions: Table<'transaction, &'static [u8; 32], &'static [u8]>,
    partitions: Table<'transaction, &'static str, &'static [u8]>,
    datasets: Table<'transaction, &'static str, &'static str>,
    partition_events: Table<'transaction, (&'static str, u64), ()>,
    checkpoints: Table<'transaction, &'static [u8; 32], &'static [u8]>,
    defs: Table<'transaction, &'static str, &'static [u8]>,
    catalog: &'catalog RedbCatalog,
}

impl ProjectionTables for TableProjections<'_, '_> {
    fn set_action(&mut self, manifest: &Manifest) -> Result<(), StoreError> {
        self.actions
            .insert(&manifest.key.0, encode_manifest(manifest).as_slice())
            .map_err(|error| self.catalog.fail(error))?;
        Ok(())
    }

    fn partition(
        &mut self,
        partition: &PartitionRef,
    ) -> Result<Option<PartitionState>, StoreError> {
        let Some(bytes) = self
            .partitions
            .get(partition.as_str())
            .map_err(|error| self.catalog.fail(error))?
        else {
            return Ok(None);
        };
        decode_partition_state(bytes.value())
            .map(Some)
            .map_err(|error| self.catalog.fail(format!("partition {partition}: {error}")))
    }

    fn set_partition(
        &mut self,
        partition: &PartitionRef,
        state: &PartitionState,
    ) -> Result<(), StoreError> {
        self.partitions
            .insert(partition.as_str(), encode_partition_state(state).as_slice())
            .map_err(|error| self.catalog.fail(error))?;
        Ok(())
    }

    fn set_dataset_version(
        &mut self,
        dataset: &str,
        version: Option<&str>,
    ) -> Result<(), StoreError> {
        match version {
            Some(version) => self.datasets.insert(dataset, version).map(drop),
            None => self.datasets.remove(dataset).map(drop),
        }
        .map_err(|error| self.catalog.fail(error))
    }

    fn index_partition_event(
        &mut self,
        partition: &PartitionRef,
        seq: u64,
    ) -> Result<(), StoreError> {
        self.partition_events
            .insert((partition.as_str(), seq), ())
            .map_err(|error| self.catalog.fail(error))?;
        Ok(())
    }

    fn set_checkpoint(
        &mut self,
        key: &ActionKey,
        checkpoint: Option<&CheckpointRecord>,
    ) -> Result<(), StoreError> {
        match checkpoint {
            Some(record) => self
                .checkpoints
                .insert(&key.0, encode_checkpoint(record).as_slice())
                .map(drop),
            None => self.checkpoints.remove(&key.0).map(drop),
        }
        .map_err(|error| self.catalog.fail(error))
    }

    fn defs(&mut self, source: &str) -> Result<Option<DefsRecord>, StoreError> {
        let Some(bytes) = self
            .defs
            .get(source)
            .map_err(|error| self.catalog.fail(error))?
        else {
            return Ok(None);
        };
        decode_defs(bytes.value()).map(Some).map_err(|error| {
            self.catalog
                .fail(format!("defs of source {source}: {error}"))
        })
    }

    fn set_defs(&mut self, source: &str, record: &DefsRecord) -> Result<(), StoreError> {
        self.defs
            .insert(source, encode_defs(record).as_slice())
            .map_err(|error| self.catalog.fail(error))?;
        Ok(())
    }
}

impl EventLog for RedbCatalog {
    fn append_timed(
        &self,
        build: u64,
        events: Vec<(u64, EventKind)>,
        stats: Vec<(String, StatEntry)>,
    ) -> Result<u64, StoreError> {
        let database = self.writer("appending events")?;
        let transaction = database.begin_write().map_err(|error| self.fail(error))?;
        let last_seq = {
            let mut log = transaction
                .open_table(EVENTS)
                .map_err(|error| self.fail(error))?;
            let mut projections = self.table_projections(&transaction)?;
            let mut seq = log
                .last()
                .map_err(|error| self.fail(error))?
                .map_or(0, |(seq, _)| seq.value());
            for (time_ms, kind) in events {
                seq += 1;
                let event = Event {
                    seq,
                    time_ms,
                    build,
                    kind,
                };
                log.insert(seq, encode_event(&event).as_slice())
                    .map_err(|error| self.fail(error))?;
                apply(&event, &mut projections)?;
            }
            let mut stat_cache = transaction
                .open_table(STAT_CACHE)
                .map_err(|error| self.fail(error))?;
            for (path, entry) in &stats {
                stat_cache
                    .insert(path.as_str(), encode_stat_entry(entry).as_slice())
                    .map_err(|error| self.fail(error))?;
            }
            // The build id becomes durable with the first events that
            // carry it, in this commit.
            let mut meta = transaction
                .open_table(META)
                .map_err(|error| self.fail(error))?;
            let next = meta
                .get(META_NEXT_BUILD)
                .map_err(|error| self.fail(error))?
                .map_or(1, |value| value.value());
            if next <= build {
                meta.insert(META_NEXT_BUILD, build + 1)
                    .map_err(|error| self.fail(error))?;
            }
            seq
        };
        // An error before this point drops the transaction, which aborts it:
        // a failed append leaves the catalog as it was.
        transaction.commit().map_err(|error| self.fail(error))?;
        self.forget_snapshot();
        Ok(last_seq)
    }

    fn records_nothing(&self) -> Result<bool, StoreError> {
        // Every result, partition state and checkpoint is projected from
        // an event.
        Ok(self.last_seq()? == 0)
    }

    fn never_named(&self, partition: &PartitionRef) -> Result<bool, StoreError> {
        let snapshot = self.snapshot()?;
        // No index (a reader opened before a writer built it): cannot tell.
        let Some(index) = &snapshot.partition_events else {
            return Ok(false);
        };
        let text = partition.as_str();
        let mut events = index
            .range((text, 0)..=(text, u64::MAX))
            .map_err(|error| self.fail(error))?;
        Ok(events.next().is_none())
    }

    fn next_build_id(&self) -> Result<u64, StoreError> {
        // Only the writer allocates; the id is stored by the first append
        // that carries it (no commit, no `fdatasync` here: two fewer per
        // build). Until then it exists only in this handle, which holds
        // the store's lock; if the process ends first, nothing carries the
        // id and the next writer is given it again.
        self.writer("starting a build")?;
        let stored = self.stored_next_build()?;
        let mut reserved = self
            .reserved_build
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let build = reserved.map_or(stored, |last| stored.max(last + 1));
        *reserved = Some(build);
        Ok(build)
    }

    fn scan_events(
        &self,
        from: u64,
        visit: &mut dyn FnMut(Event) -> bool,
    ) -> Result<(), StoreError> {
        let transaction = self.begin_read()?;
        let Some(events) = self.read_table(&transaction, EVENTS)? else {
            return Ok(());
        };
        self.visit_events(&events, from, &mut |event| Ok(visit(event)))
    }
}

impl Projections for RedbCatalog {
    fn action(&self, key: &ActionKey) -> Result<Option<Manifest>, StoreError> {
        let snapshot = self.snapshot()?;
        let Some(actions) = &snapshot.actions else {
            return Ok(None);
        };
        let Some(bytes) = actions.get(&key.0).map_err(|error| self.fail(error))? else {
            return Ok(None);
        };
        decode_manifest(bytes.value())
            .map(Some)
            .map_err(|error| self.fail(format!("action {key}: {error}")))
    }

    fn checkpoint(&self, key: &ActionKey) -> Result<Option<CheckpointRecord>, StoreError> {
        let snapshot = self.snapshot()?;
        let Some(checkpoints) = &snapshot.checkpoints else {
            return Ok(None);
        };
        let Some(bytes) = checkpoints.get(&key.0).map_err(|error| self.fail(error))? else {
            return Ok(None);
        };
        decode_checkpoint(bytes.value())
            .map(Some)
            .map_err(|error| self.fail(format!("checkpoint of action {key}: {error}")))
    }

    fn partition(&self, partition: &PartitionRef) -> Result<Option<PartitionState>, StoreError> {
        let snapshot = self.snapshot()?;
        let Some(partitions) = &snapshot.partitions else {
            return Ok(None);
        };
        let Some(bytes) = partitions
            .get(partition.as_str())
            .map_err(|error| self.fail(error))?
        else {
            return Ok(None);
        };
        decode_partition_state(bytes.value())
            .map(Some)
            .map_err(|error| self.fail(format!("partition {partition}: {error}")))
    }

    fn dataset_versions(&self) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
        let transaction = self.begin_read()?;
        let mut out = std::collections::BTreeMap::new();
        if let Some(datasets) = self.read_table(&transaction, DATASETS)? {
            for entry in datasets.iter().map_err(|error| self.fail(error))? {
                let (dataset, version) = entry.map_err(|error| self.fail(error))?;
                out.insert(dataset.value().to_owned(), version.value().to_owned());
            }
        }
        Ok(out)
    }

    fn defs(&self, source: &str) -> Result<Option<DefsRecord>, StoreError> {
        let transaction = self.begin_read()?;
        let Some(defs) = self.read_table(&transaction, DEFS)? else {
            return Ok(None);
        };
        let Some(bytes) = defs.get(source).map_err(|error| self.fail(error))? else {
            return Ok(None);
        };
        decode_defs(bytes.value())
            .map(Some)
            .map_err(|error| self.fail(format!("defs of source {source}: {error}")))
    }
}

impl StatCache for RedbCatalog {
    fn stat(&self, path: &str) -> Result<Option<StatEntry>, StoreError> {
        let snapshot = self.snapshot()?;
        let Some(stat_cache) = &snapshot.stat_cache else {
            return Ok(None);
        };
        let Some(bytes) = stat_cache.get(path).map_err(|error| self.fail(error))? else {
            return Ok(None);
        };
        decode_stat_entry(bytes.value())
            .map(Some)
            .map_err(|error| self.fail(format!("stat cache entry {path}: {error}")))
    }
}

#[cfg(test)]
mod tests;

impl Drop for RedbCatalog {
    /// A writer closes the database, then stamps the file as closed
    /// cleanly (see [`closed_stamp_matches`]).
    fn drop(&mut self) {
        if !matches!(self.handle, Handle::Writer(_)) {
            return;
        }
        self.forget_snapshot();
        drop(std::mem::replace(&mut self.handle, Handle::Closed));
        if let Err(error) = write_closed_stamp(&self.path) {
            tracing::debug!("{}: {error}", self.path.display());
        }
    }
}

/// The file beside the catalog that describes it as a writer closed it.
fn closed_stamp_path(catalog: &Path) -> PathBuf {
    catalog.with_extension("closed")
}

/// What identifies one state of the catalog file: device, inode, size,
/// and the modification and change times in nanoseconds. Any write
/// changes the size or the times (the change time cannot be set from user
/// space), and a replaced file has another inode.
fn file_identity(catalog: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(catalog)?;
    Ok(format!(
        "cairn catalog closed: dev {} ino {} size {} mtime {}.{:09} ctime {}.{:09}\n",
        metadata.dev(),
        metadata.ino(),
        metadata.size(),
        metadata.mtime(),
        metadata.mtime_nsec(),
        metadata.ctime(),
        metadata.ctime_nsec()
    ))
}

fn write_closed_stamp(catalog: &Path) -> std::io::Result<()> {
    let stamp = closed_stamp_path(catalog);
    let temp = catalog.with_extension("closed.tmp");
    std::fs::write(&temp, file_identity(catalog)?)?;
    // Not synced: a lost stamp only costs the next writer a full check.
    std::fs::rename(&temp, &stamp)
}

/// Whether the catalog is, to the nanosecond, the file the last writer
/// closed cleanly. Then its pages are the ones that writer committed, and
/// the full page check on open can be skipped; any other change (a crash
/// mid-write, an edit, a copy over it) makes the stamp stale and the check
/// run. `cairn store verify` always runs it.
fn closed_stamp_matches(catalog: &Path) -> bool {
    match (
        std::fs::read_to_string(closed_stamp_path(catalog)),
        file_identity(catalog),
    ) {
        (Ok(stamp), Ok(now)) => stamp == now,
        _ => false,
    }
}

fn remove_closed_stamp(catalog: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(closed_stamp_path(catalog)) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StoreError::io(closed_stamp_path(catalog), error)),
    }
}
