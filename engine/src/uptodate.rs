//! The up-to-date snapshot: what a build that found every action current
//! relied on, so that the next build asked the same thing can say "nothing
//! to do" from one `lstat` per observed path, without planning, computing
//! keys or looking anything up (ninja's no-op, under cairn's content rule).
//!
//! A build records one only when its sweep found *every* action current
//! (nothing ran, nothing was restored, nothing failed): then every stat-cache
//! decision it made was about the final state, and the [`Witness`] holds,
//! for each path it observed, the entry it relied on. The next `cairn build`
//! with the same [`fingerprint`] (graph file bytes, command, requested refs,
//! passed environment, store, key recipes) takes the snapshot's word only if
//!
//! - the event log still ends with the event the snapshot names (any append
//!   in between: a build, an invalidation, a defs refresh, makes it stale);
//! - every job's code digest is what it was (recomputed: a glob can match a
//!   new file);
//! - every directory between the data root and an output is still a real
//!   directory (not a link), as the full check requires;
//! - every observed directory's stat matches its entry, and every observed
//!   file's stat matches its entry or its content re-hashes to the same
//!   digest with the same executable bit (a touched file), exactly the
//!   stat-cache rule the full check applies (racy timestamps included).
//!
//! Planning is a function of the graph, the requested refs, the store's
//! defs records and configure answers; keys are functions of configs, code,
//! versions, the passed environment and input contents. All of these are
//! pinned by the conditions above, except a configure command that is not
//! cached (a job with `configure` and no `code`, or with `configure_cache =
//! false`): a graph with one never
//! records a snapshot. Anything else the snapshot cannot confirm sends the
//! build down the full path, which decides afresh.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::digest::{ActionKey, ContentDigest, KeyHasher};
use crate::graph::Graph;
use crate::key::ACTION_RECIPE;
use crate::observe::{
    Bases, StatUpdate, executable, fields_valid, hash_file, listing_digest, now_ns, stat_entry,
    still_valid,
};
use crate::ports::{Catalog, StoreError};
use crate::record::{
    CheckpointRecord, DefsRecord, Event, EventKind, Manifest, PARTITION_RECIPE, PartitionState,
    StatEntry,
};
use crate::refs::PartitionRef;

/// Bump when the snapshot's meaning changes: every fingerprint changes.
pub const SNAPSHOT_RECIPE: &str = "cairn/up-to-date/v4";

/// What a build that found everything current relied on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What the build was asked, and with what: see [`fingerprint`].
    pub fingerprint: ContentDigest,
    /// The log's last event when the snapshot was taken (kept in the
    /// file's header, which a confirmed build rewrites alone).
    #[serde(skip)]
    pub last_event: LastEvent,
    /// The plan's source partitions (for the `Planned` event).
    pub sources: u64,
    /// Each job's code digest, by job name.
    pub codes: Vec<(String, Option<ContentDigest>)>,
    /// Job names, indexed by [`CurrentAction::job`].
    pub jobs: Vec<String>,
    /// Every action, in the plan's (topological) order.
    pub actions: Vec<CurrentAction>,
    /// Directories between the data root and the outputs, which must still
    /// be real directories (absolute paths).
    pub directories: Vec<String>,
    /// The digest of the plan kept beside the snapshot (`Store::write_plan`),
    /// which a build with a few changed paths uses instead of planning.
    pub plan: Option<ContentDigest>,
    /// Every stat-cache key the build observed, with the entry it relied on
    /// and the file's executable bit, sorted by key. Last in the encoding:
    /// a snapshot read back leaves them in its file, streamed through
    /// [`confirm_paths`] (2.5 million at 1M partitions), and this is empty.
    pub entries: Vec<Observed>,
}

/// The log's last event, by enough of it to tell it from another event
/// that was given the same seq (a store restored from a backup).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastEvent {
    pub seq: u64,
    pub build: u64,
    pub time_ms: u64,
}

impl LastEvent {
    pub fn of(event: &Event) -> Self {
        LastEvent {
            seq: event.seq,
            build: event.build,
            time_ms: event.time_ms,
        }
    }
}

/// What a build that presumed actions from a snapshot and did not end with
/// every action current (a failure, a skip, an interrupt) leaves for the
/// next one: the snapshot still describes every action the build did not
/// check, so the next build may presume them again if the log moved from
/// the snapshot's last event (`from`) to this build's (`to`) and nothing
/// else, and it checks `actions` (with whatever else changed). Kept
/// beside the snapshot (`Store::write_recheck`), a cache like it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recheck {
    /// The snapshot's last event, which the build presumed from.
    pub from: LastEvent,
    /// The log's last event when the build ended.
    pub to: LastEvent,
    /// By plan index, sorted: every action the build did not presume
    /// (checked, run, restored, failed, skipped or never reached) or
    /// presumed and checked after all, which is everything it may have
    /// changed in the catalog or the data.
    pub actions: Vec<u32>,
}

/// One action of the snapshot: enough to report it as the full path would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentAction {
    /// The action's index in the plan (planning is deterministic).
    pub index: u32,
    pub job: u32,
    #[serde(with = "key_bytes")]
    pub key: ActionKey,
    /// The build whose result it reuses (what a dry run reports). Fixed
    /// width, like the key, so that a build can write both over the file
    /// in place ([`SnapshotPatch`]).
    #[serde(with = "u64_bytes")]
    pub built_by: u64,
    pub outputs: Vec<String>,
}

/// The length of `value` as a postcard varint.
fn varint_len(value: u64) -> u64 {
    u64::from((64 - (value | 1).leading_zeros()).div_ceil(7))
}

impl CurrentAction {
    /// The action's encoded length in a snapshot file.
    pub fn encoded_len(&self) -> u64 {
        self.key_offset()
            + 32
            + 1
            + 8
            + varint_len(self.outputs.len() as u64)
            + self
                .outputs
                .iter()
                .map(|output| varint_len(output.len() as u64) + output.len() as u64)
                .sum::<u64>()
    }

    /// Where its key's 32 bytes start within its encoding; its `built_by`'s
    /// 8 bytes follow one byte after them.
    pub fn key_offset(&self) -> u64 {
        varint_len(u64::from(self.index)) + varint_len(u64::from(self.job)) + 1
    }

    /// The snapshot's record of plan action `index`, current with `key`
    /// (the result of build `built_by`), its job named by index `job` into
    /// [`Snapshot::jobs`].
    pub fn of(
        index: usize,
        job: u32,
        (key, built_by): (ActionKey, u64),
        action: &crate::plan::PlannedAction,
    ) -> Self {
        CurrentAction {
            index: index as u32,
            job,
            key,
            built_by,
            outputs: action
                .config
                .outputs
                .iter()
                .map(|output| output.as_str().to_owned())
                .collect(),
        }
    }
}

/// A stat-cache key with the entry a build relied on.
///
/// Encoded as one fixed-width byte string ([`Seen::BYTES`]): a snapshot
/// holds millions, and postcard decodes a byte string in one step where
/// it decodes a digest's 32 bytes and each varint one byte at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub entry: StatEntry,
    pub executable: bool,
}

impl Seen {
    /// size, mtime, ctime, inode, recorded (little-endian), digest, bit.
    pub const BYTES: usize = 8 + 16 + 16 + 8 + 16 + 32 + 1;

    /// What a snapshot file holds of it (after the length byte).
    pub fn to_bytes(self) -> [u8; Self::BYTES] {
        let entry = &self.entry;
        let mut out = [0u8; Self::BYTES];
        out[0..8].copy_from_slice(&entry.size.to_le_bytes());
        out[8..24].copy_from_slice(&entry.mtime_ns.to_le_bytes());
        out[24..40].copy_from_slice(&entry.ctime_ns.to_le_bytes());
        out[40..48].copy_from_slice(&entry.inode.to_le_bytes());
        out[48..64].copy_from_slice(&entry.recorded_ns.to_le_bytes());
        out[64..96].copy_from_slice(&entry.digest.0);
        out[96] = u8::from(self.executable);
        out
    }

    /// The inverse of [`Seen::to_bytes`]; `None` if `bytes` is not one.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::BYTES || bytes[96] > 1 {
            return None;
        }
        let u64_at =
            |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let i128_at =
            |at: usize| i128::from_le_bytes(bytes[at..at + 16].try_into().unwrap_or_default());
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&bytes[64..96]);
        Some(Seen {
            entry: StatEntry {
                size: u64_at(0),
                mtime_ns: i128_at(8),
                ctime_ns: i128_at(24),
                inode: u64_at(40),
                recorded_ns: i128_at(48),
                digest: ContentDigest(digest),
            },
            executable: bytes[96] == 1,
        })
    }
}

impl Serialize for Seen {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> Deserialize<'de> for Seen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Seen;
            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(formatter, "{} bytes of a stat entry", Seen::BYTES)
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Seen, E> {
                Seen::from_bytes(bytes).ok_or_else(|| E::invalid_length(bytes.len(), &self))
            }
        }
        // A buffer, not a borrow: the snapshot is decoded from a stream.
        deserializer.deserialize_byte_buf(Visitor)
    }
}

/// [`ActionKey`] as a byte string (see [`Seen`]).
mod key_bytes {
    use super::ActionKey;

    pub fn serialize<S: serde::Serializer>(
        key: &ActionKey,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&key.0)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<ActionKey, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ActionKey;
            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("the 32 bytes of an action key")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<ActionKey, E> {
                let key: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| E::invalid_length(bytes.len(), &self))?;
                Ok(ActionKey(key))
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}

/// A `u64` as 8 little-endian bytes (see [`CurrentAction::built_by`]).
mod u64_bytes {
    pub fn serialize<S: serde::Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&value.to_le_bytes())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = u64;
            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("the 8 bytes of a build id")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<u64, E> {
                let value: [u8; 8] = bytes
                    .try_into()
                    .map_err(|_| E::invalid_length(bytes.len(), &self))?;
                Ok(u64::from_le_bytes(value))
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}

pub type Observed = (String, Seen);

/// Recorded paths of a snapshot in a batch: their keys back to back, each
/// with its entry and where that entry sits in the snapshot's file (`at`,
/// opaque here: what a [`SnapshotPatch`] writes to).
#[derive(Debug, Default)]
pub struct PathBatch {
    keys: String,
    entries: Vec<(usize, usize, Seen, u64)>,
}

impl PathBatch {
    pub fn clear(&mut self) {
        self.keys.clear();
        self.entries.clear();
    }

    pub fn push(&mut self, key: &str, seen: Seen, at: u64) {
        let start = self.keys.len();
        self.keys.push_str(key);
        self.entries.push((start, self.keys.len(), seen, at));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `index`th path: its key, entry and place.
    pub fn get(&self, index: usize) -> (&str, &Seen, u64) {
        let (start, end, ref seen, at) = self.entries[index];
        (&self.keys[start..end], seen, at)
    }
}

/// A snapshot's recorded paths, in its (sorted) order, a batch at a time:
/// the file the store streams them from, or entries in memory.
pub trait RecordedPaths: Send {
    /// Fills `batch` (cleared first) with the next paths; `Ok(false)` once
    /// there are none left.
    fn next_batch(&mut self, batch: &mut PathBatch) -> Result<bool, Unconfirmed>;
}

/// Entries held in memory, each at its index.
pub struct InMemory<'a> {
    pub entries: &'a [Observed],
    pub next: usize,
}

impl RecordedPaths for InMemory<'_> {
    fn next_batch(&mut self, batch: &mut PathBatch) -> Result<bool, Unconfirmed> {
        batch.clear();
        let end = (self.next + PATH_BATCH).min(self.entries.len());
        for (index, (key, seen)) in self.entries[self.next..end].iter().enumerate() {
            batch.push(key, *seen, (self.next + index) as u64);
        }
        self.next = end;
        Ok(!batch.is_empty())
    }
}

/// Paths per batch: the next batch is read while this one is checked.
pub const PATH_BATCH: usize = 65_536;

/// What changed of a snapshot that a build confirmed or presumed actions
/// from, to be written over its file in place (`Store::patch_snapshot`):
/// a snapshot is updated by what changed, not rewritten (a rewrite at 1M
/// partitions is 458 MB, and all of it in memory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotPatch {
    /// The log's last event the patched snapshot vouches for.
    pub last_event: LastEvent,
    /// New entries of recorded paths, at their places in the file
    /// ([`PathBatch::get`]); a later one for the same place wins.
    pub entries: Vec<(u64, Seen)>,
    /// Actions whose key or result changed: position in
    /// [`Snapshot::actions`], key, the build whose result it reuses.
    pub actions: Vec<(usize, ActionKey, u64)>,
}

/// Everything outside the file system and the log that decides what a
/// build plans and keys; see [`fingerprint`].
pub struct FingerprintInputs<'a> {
    pub graph: &'a Graph,
    pub store_dir: &'a Path,
    pub command: &'a str,
    pub requested: &'a [String],
    pub passed_env: &'a [(String, String)],
}

/// The digest a snapshot is filed under: the graph file's bytes and place,
/// the store, the command and its requested refs, the environment passed to
/// jobs (it is in every key), the key recipes and cairn's version.
pub fn fingerprint(inputs: &FingerprintInputs<'_>) -> ContentDigest {
    let mut hasher = KeyHasher::new(SNAPSHOT_RECIPE);
    hasher
        .str("cairn", env!("CARGO_PKG_VERSION"))
        .str("action_recipe", ACTION_RECIPE)
        .str("partition_recipe", PARTITION_RECIPE)
        .str("graph_file", &inputs.graph.file.to_string_lossy())
        .digest("graph_text", &inputs.graph.text_digest)
        .str("store", &inputs.store_dir.to_string_lossy())
        .str("command", inputs.command)
        .u64("requested", inputs.requested.len() as u64);
    for requested in inputs.requested {
        hasher.str("ref", requested);
    }
    hasher.u64("env", inputs.passed_env.len() as u64);
    for (name, value) in inputs.passed_env {
        hasher.str("env.name", name).str("env.value", value);
    }
    ContentDigest(hasher.finish())
}

/// Whether builds of `graph` may record a snapshot: not when a job's
/// configure answers are not cached (a `configure` command without `code`,
/// or opted out with `configure_cache = false`),
/// since such a job is asked again by every build and may answer otherwise.
pub fn graph_allows(graph: &Graph) -> bool {
    graph
        .jobs
        .values()
        .all(|job| job.configure.is_none() || job.caches_configure())
}

/// The directories between `data_root` and each output partition (the
/// partition directories themselves excluded: their entries check them).
pub fn output_parents<'r>(
    data_root: &Path,
    outputs: impl Iterator<Item = &'r PartitionRef>,
) -> Vec<String> {
    let mut parents = std::collections::BTreeSet::new();
    for output in outputs {
        let mut path = data_root.to_path_buf();
        let relative = output.relative_path();
        let mut components: Vec<_> = relative.components().collect();
        components.pop();
        for component in components {
            path.push(component);
            parents.insert(path.to_string_lossy().into_owned());
        }
    }
    parents.into_iter().collect()
}

/// Why a snapshot was not taken at its word (for `-vv`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unconfirmed(pub String);

/// What [`confirm_paths`] found.
#[derive(Debug, Default)]
pub struct Confirmation {
    /// Stat-cache updates for touched files and directories (same content,
    /// new stat).
    pub touched: Vec<StatUpdate>,
    /// Where each touched path's entry sits, and its executable bit.
    pub touched_at: Vec<(u64, bool)>,
    /// The keys of the observed paths whose content changed (or that are
    /// gone or of another kind), sorted.
    pub changed: Vec<String>,
    /// Where each changed path's entry sits.
    pub changed_at: Vec<u64>,
    /// How many paths were checked.
    pub paths: usize,
}

impl Confirmation {
    /// The touched paths' new entries, at their places (for a
    /// [`SnapshotPatch`]).
    pub fn touched_entries(&self) -> Vec<(u64, Seen)> {
        self.touched
            .iter()
            .zip(&self.touched_at)
            .map(|((_, entry), &(at, executable))| {
                (
                    at,
                    Seen {
                        entry: *entry,
                        executable,
                    },
                )
            })
            .collect()
    }
}

/// Checks a snapshot's `directories` and recorded `paths` against the file
/// system, on `threads` threads (the next batch of paths is read while one
/// is checked). `Err` if a directory between the data root and the outputs
/// is no longer a real one, if more than `changed_at_most` paths changed,
/// or if the paths cannot be read.
pub fn confirm_paths(
    directories: &[String],
    paths: &mut dyn RecordedPaths,
    threads: usize,
    changed_at_most: usize,
) -> Result<Confirmation, Unconfirmed> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|error| Unconfirmed(format!("cannot start worker threads: {error}")))?
        .install(|| confirm_in_parallel(directories, paths, changed_at_most))
}

/// One path's verdict.
enum Found {
    Same,
    Touched(StatUpdate),
    Changed,
}

fn confirm_in_parallel(
    directories: &[String],
    paths: &mut dyn RecordedPaths,
    changed_at_most: usize,
) -> Result<Confirmation, Unconfirmed> {
    directories
        .par_iter()
        .try_for_each(|directory| match fs::symlink_metadata(directory) {
            Ok(metadata) if metadata.is_dir() => Ok(()),
            _ => Err(Unconfirmed(format!(
                "{directory} is no longer a real directory"
            ))),
        })?;
    // Stops early once too many paths changed (a large edit: the full path
    // is then the better way).
    let changed_count = std::sync::atomic::AtomicUsize::new(0);
    let mut confirmation = Confirmation::default();
    let mut current = PathBatch::default();
    let mut next = PathBatch::default();
    if !paths.next_batch(&mut current)? {
        return Ok(confirmation);
    }
    loop {
        let (read, differing) = rayon::join(
            || paths.next_batch(&mut next),
            || check_batch(&current, &changed_count, changed_at_most),
        );
        confirmation.paths += current.len();
        for (index, verdict) in differing?.into_iter().flatten() {
            let (key, seen, at) = current.get(index);
            match verdict {
                Found::Touched(update) => {
                    confirmation.touched.push(update);
                    confirmation.touched_at.push((at, seen.executable));
                }
                Found::Changed => {
                    confirmation.changed.push(key.to_owned());
                    confirmation.changed_at.push(at);
                }
                Found::Same => unreachable!("only differing paths are kept"),
            }
        }
        if !read? {
            return Ok(confirmation);
        }
        std::mem::swap(&mut current, &mut next);
    }
}

/// The paths of `batch` that are not the same, by index, in order. Only
/// those are kept: a verdict for each of 2.5 million paths was 320 MB. In
/// chunks, each with its own few open directories to stat relative to.
fn check_batch(
    batch: &PathBatch,
    changed_count: &std::sync::atomic::AtomicUsize,
    changed_at_most: usize,
) -> Result<Vec<Vec<(usize, Found)>>, Unconfirmed> {
    const CHUNK: usize = 512;
    batch
        .entries
        .par_chunks(CHUNK)
        .enumerate()
        .map(|(chunk_index, chunk)| {
            let mut bases = Bases::default();
            let mut differing = Vec::new();
            for (offset, &(start, end, ref seen, _)) in chunk.iter().enumerate() {
                let key = &batch.keys[start..end];
                let next = chunk
                    .get(offset + 1)
                    .map(|&(start, end, _, _)| &batch.keys[start..end]);
                match confirm_one(key, seen, next, &mut bases) {
                    Found::Same => {}
                    Found::Changed
                        if changed_count.fetch_add(1, Ordering::Relaxed) >= changed_at_most =>
                    {
                        return Err(Unconfirmed(format!(
                            "more than {changed_at_most} paths changed, {key} among them"
                        )));
                    }
                    verdict => differing.push((chunk_index * CHUNK + offset, verdict)),
                }
            }
            Ok(differing)
        })
        .collect()
}

/// One observed path, by the stat-cache rule: the same stat, or (a touched
/// file or directory) the same content and executable bit under a new
/// stat, else changed. The common case, the same stat, is decided by a
/// stat relative to an open directory near the path (shared with `next`,
/// the chunk's next key, where it can be); anything else is looked at
/// again by its full path.
fn confirm_one(key: &str, seen: &Seen, next: Option<&str>, bases: &mut Bases) -> Found {
    let (path, directory) = match key.strip_suffix('/') {
        Some(path) => (path, true),
        None => (key, false),
    };
    if let Some(fields) = bases.lstat_before(path, next) {
        let kind = if directory {
            fields.is_dir()
        } else {
            fields.is_file() && fields.executable() == seen.executable
        };
        if kind && fields_valid(&seen.entry, &fields) {
            return Found::Same;
        }
    }
    confirm_by_path(key, seen)
}

/// [`confirm_one`] by the full path: the stat again, and what the rule
/// does when it differs.
fn confirm_by_path(key: &str, seen: &Seen) -> Found {
    if let Some(directory) = key.strip_suffix('/') {
        let metadata = match fs::symlink_metadata(directory) {
            Ok(metadata) if metadata.is_dir() => metadata,
            _ => return Found::Changed,
        };
        if still_valid(&seen.entry, &metadata) {
            return Found::Same;
        }
        // A new stat (or one too recent to trust): list it again.
        let recorded_ns = now_ns();
        return match listing(Path::new(directory)) {
            Some(digest) if digest == seen.entry.digest => {
                Found::Touched((key.to_owned(), stat_entry(&metadata, recorded_ns, digest)))
            }
            _ => Found::Changed,
        };
    }
    let path = Path::new(key);
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_file() => metadata,
        _ => return Found::Changed,
    };
    if executable(&metadata) != seen.executable {
        return Found::Changed;
    }
    if still_valid(&seen.entry, &metadata) {
        return Found::Same;
    }
    let recorded_ns = now_ns();
    match hash_file(path) {
        Ok(digest) if digest == seen.entry.digest => {
            Found::Touched((key.to_owned(), stat_entry(&metadata, recorded_ns, digest)))
        }
        _ => Found::Changed,
    }
}

/// The actions a build may take as current from a confirmed `snapshot`
/// whose `changed` paths (sorted keys) are the only ones that differ: by
/// plan index, the snapshot's key of every action that reads no changed
/// source, holds no changed output path, is not among `recheck` (what a
/// failed build since the snapshot left to check, [`Recheck`]) and reads
/// no output of an action that is not presumed. `None` if the plan is not
/// the snapshot's (it always is when the fingerprint, the log's last event
/// and the code digests are: planning is deterministic) or a changed path
/// belongs to no action's sources or outputs; the build then checks
/// everything.
///
/// Sound for the reason the snapshot is: such an action's key is computed
/// from the same config, code and versions and from inputs whose content
/// did not change, and its outputs, like the catalog, are as they were
/// when the snapshot's build found it current.
pub fn presume(
    snapshot: &Snapshot,
    changed: &[String],
    recheck: &[u32],
    plan: &crate::plan::Plan,
    data_root: &Path,
) -> Option<Vec<Option<ActionKey>>> {
    use crate::plan::InputSource;
    if snapshot.actions.len() != plan.actions.len() {
        return None;
    }
    let mut keys: Vec<Option<ActionKey>> = vec![None; plan.actions.len()];
    for current in &snapshot.actions {
        let action = plan.actions.get(current.index as usize)?;
        let same = snapshot.jobs.get(current.job as usize)? == &*action.job
            && current.outputs.len() == action.config.outputs.len()
            && current
                .outputs
                .iter()
                .zip(&action.config.outputs)
                .all(|(recorded, planned)| recorded == planned.as_str());
        if !same {
            return None;
        }
        keys[current.index as usize] = Some(current.key);
    }
    if keys.iter().any(Option::is_none) {
        return None;
    }
    // Every ancestor of a changed path (outputs by their path relative to
    // the data root, which is their ref's text; sources by their path),
    // with whether an action's output or source is there.
    let mut relative: HashMap<&Path, bool> = HashMap::new();
    let mut absolute: HashMap<&Path, bool> = HashMap::new();
    let paths: Vec<&Path> = changed
        .iter()
        .map(|key| Path::new(key.strip_suffix('/').unwrap_or(key)))
        .collect();
    for path in &paths {
        for ancestor in path.ancestors() {
            absolute.insert(ancestor, false);
        }
        if let Ok(inside) = path.strip_prefix(data_root) {
            for ancestor in inside.ancestors() {
                relative.insert(ancestor, false);
            }
        }
    }
    let mut affected = Vec::new();
    for &index in recheck {
        let index = index as usize;
        if index >= plan.actions.len() {
            return None;
        }
        affected.push(index);
    }
    for (index, action) in plan.actions.iter().enumerate() {
        let mut hit = false;
        for output in &action.config.outputs {
            if let Some(found) = relative.get_mut(Path::new(output.as_str())) {
                *found = true;
                hit = true;
            }
        }
        for input in &action.inputs {
            if let InputSource::Source { source } = *input
                && let Some(found) = absolute.get_mut(plan.sources[source].path.as_path())
            {
                *found = true;
                hit = true;
            }
        }
        if hit {
            affected.push(index);
        }
    }
    // Each changed path must belong to something the plan reads or writes.
    for path in &paths {
        let owned = path.ancestors().any(|ancestor| absolute[ancestor])
            || path
                .strip_prefix(data_root)
                .is_ok_and(|inside| inside.ancestors().any(|ancestor| relative[ancestor]));
        if !owned {
            return None;
        }
    }
    // And everything downstream of them.
    while let Some(index) = affected.pop() {
        if keys[index].take().is_some() {
            affected.extend_from_slice(&plan.actions[index].dependents);
        }
    }
    Some(keys)
}

/// The entries of the snapshot a build with presumed actions leaves:
/// `base`'s (the snapshot it started from, touched entries applied), where
/// the build's own observations replace them. `None` if a `changed` path
/// was not observed again (what it holds now is unknown).
pub fn merge_entries(
    base: Vec<Observed>,
    changed: &[String],
    observed: Vec<Observed>,
) -> Option<Vec<Observed>> {
    let mut out: Vec<Observed> = Vec::with_capacity(base.len().max(observed.len()));
    let mut base = base.into_iter().peekable();
    let mut observed = observed.into_iter().peekable();
    loop {
        let take_observed = match (base.peek(), observed.peek()) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some((b, _)), Some((o, _))) => o <= b,
        };
        if take_observed {
            let entry = observed.next()?;
            // Replaces the base's entry of the same path.
            if base.peek().is_some_and(|(b, _)| *b == entry.0) {
                base.next();
            }
            out.push(entry);
        } else {
            let entry = base.next()?;
            if changed.binary_search(&entry.0).is_ok() {
                return None;
            }
            out.push(entry);
        }
    }
    Some(out)
}

/// The listing digest of one directory, as a walk of it records it (names
/// and whether each is a directory, not following links); `None` if it
/// cannot be read or holds a name that is not UTF-8 (a walk refuses it).
fn listing(directory: &Path) -> Option<ContentDigest> {
    let mut names = Vec::new();
    for entry in fs::read_dir(directory).ok()? {
        let entry = entry.ok()?;
        let is_directory = entry.file_type().ok()?.is_dir();
        names.push((entry.file_name().into_string().ok()?, is_directory));
    }
    let mut names: Vec<(&str, bool)> = names
        .iter()
        .map(|(name, is_directory)| (name.as_str(), *is_directory))
        .collect();
    Some(listing_digest(&mut names))
}

impl Snapshot {
    /// Replaces the entries of touched files with their new stats (after
    /// [`confirm_paths`]), keeping the entries sorted.
    pub fn apply(&mut self, updates: &[StatUpdate]) {
        for (key, entry) in updates {
            if let Ok(position) = self
                .entries
                .binary_search_by(|(existing, _)| existing.as_str().cmp(key))
            {
                self.entries[position].1.entry = *entry;
            }
        }
    }
}

/// A catalog that remembers every stat-cache decision observations made
/// through it (see [`Catalog::observed`]), for the snapshot of a build that
/// turns out to have found everything current. Everything else goes to the
/// catalog it wraps.
pub struct Witness<'a> {
    inner: &'a dyn Catalog,
    recording: AtomicBool,
    /// Set once the build's jobs are done and the actions that ran are
    /// checked again: what is observed from then on describes the final
    /// state, and replaces what was seen of the same path before.
    settled: AtomicBool,
    /// What was observed, with whether it was observed settled.
    seen: Mutex<Vec<(Observed, bool)>>,
}

impl<'a> Witness<'a> {
    pub fn new(inner: &'a dyn Catalog) -> Self {
        Witness {
            inner,
            recording: AtomicBool::new(true),
            settled: AtomicBool::new(false),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Stops recording and lets go of what was recorded: the build will not
    /// end with every action current.
    pub fn stop(&self) {
        self.recording.store(false, Ordering::SeqCst);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        *seen = Vec::new();
    }

    /// From now on, observations describe the final state of the build
    /// (its jobs are done): each replaces whatever was observed of its path
    /// before (a stale output the build then rewrote).
    pub fn settle(&self) {
        self.settled.store(true, Ordering::SeqCst);
    }

    /// The observed entries, sorted by key, one per key; `None` if recording
    /// stopped or two observations of one path disagree (it changed during
    /// the build), unless a settled observation of that path replaces them.
    pub fn into_entries(self) -> Option<Vec<Observed>> {
        if !self.recording.load(Ordering::SeqCst) {
            return None;
        }
        let mut seen = self.seen.into_inner().unwrap_or_else(|p| p.into_inner());
        // By key, the settled observations of a key after the others
        // (a stable sort keeps each group's order of observation).
        seen.sort_by(|a, b| a.0.0.cmp(&b.0.0).then(a.1.cmp(&b.1)));
        let mut out: Vec<Observed> = Vec::with_capacity(seen.len());
        for group in seen.chunk_by(|a, b| a.0.0 == b.0.0) {
            // Settled observations, if any, replace the others whatever
            // they saw; the ones that count must all agree.
            let settled = group.partition_point(|(_, settled)| !settled);
            let counted = if settled < group.len() {
                &group[settled..]
            } else {
                group
            };
            let ((key, first), _) = &counted[0];
            if counted.iter().any(|((_, seen), _)| {
                seen.entry.digest != first.entry.digest || seen.executable != first.executable
            }) {
                return None;
            }
            // The last observation of the same content is the freshest
            // stat; any is a sound pairing.
            let ((_, last), _) = &counted[counted.len() - 1];
            out.push((key.clone(), *last));
        }
        Some(out)
    }
}

/// The scheduler tells the witness when the build's jobs are done, or that
/// it will not end with every action current.
impl crate::exec::BuildWitness for Witness<'_> {
    fn stop(&self) {
        Witness::stop(self);
    }
    fn settle(&self) {
        Witness::settle(self);
    }
}

impl crate::ports::Projections for Witness<'_> {
    fn action(&self, key: &ActionKey) -> Result<Option<Manifest>, StoreError> {
        self.inner.action(key)
    }
    fn checkpoint(&self, key: &ActionKey) -> Result<Option<CheckpointRecord>, StoreError> {
        self.inner.checkpoint(key)
    }
    fn partition(&self, partition: &PartitionRef) -> Result<Option<PartitionState>, StoreError> {
        self.inner.partition(partition)
    }
    fn dataset_versions(&self) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
        self.inner.dataset_versions()
    }
    fn defs(&self, source: &str) -> Result<Option<DefsRecord>, StoreError> {
        self.inner.defs(source)
    }
}

impl crate::ports::EventLog for Witness<'_> {
    fn append_timed(
        &self,
        build: u64,
        events: Vec<(u64, EventKind)>,
        stats: Vec<(String, StatEntry)>,
    ) -> Result<u64, StoreError> {
        self.inner.append_timed(build, events, stats)
    }
    fn next_build_id(&self) -> Result<u64, StoreError> {
        self.inner.next_build_id()
    }
    fn scan_events(
        &self,
        from: u64,
        visit: &mut dyn FnMut(Event) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.scan_events(from, visit)
    }
}

impl crate::ports::StatCache for Witness<'_> {
    fn stat(&self, path: &str) -> Result<Option<StatEntry>, StoreError> {
        self.inner.stat(path)
    }
    fn observed(&self, path: &str, entry: &StatEntry, executable: bool) {
        if self.recording.load(Ordering::Relaxed) {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.push((
                (
                    path.to_owned(),
                    Seen {
                        entry: *entry,
                        executable,
                    },
                ),
                self.settled.load(Ordering::Relaxed),
            ));
        }
    }
}

pub use crate::exec::sorted_codes;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Observer;
    use crate::ports::{MemoryStatCache, StatCache as _};
    use std::os::unix::fs::PermissionsExt;

    fn confirm(
        snapshot: &Snapshot,
        threads: usize,
        changed_at_most: usize,
    ) -> Result<Confirmation, Unconfirmed> {
        let mut paths = InMemory {
            entries: &snapshot.entries,
            next: 0,
        };
        confirm_paths(&snapshot.directories, &mut paths, threads, changed_at_most)
    }

    /// An action's encoded length and key offset are postcard's, and its
    /// key and build sit where [`CurrentAction::key_offset`] says.
    #[test]
    fn an_actions_layout_is_what_postcard_writes() {
        for (index, job, outputs) in [
            (0u32, 0u32, vec![]),
            (
                127,
                128,
                vec!["raw/date=2024-01-01/station=S0001".to_owned()],
            ),
            (1_000_464, 70_000, vec!["a".repeat(200), String::new()]),
        ] {
            let action = CurrentAction {
                index,
                job,
                key: ActionKey([7; 32]),
                built_by: 0x0102_0304_0506_0708,
                outputs,
            };
            let bytes = postcard::to_stdvec(&action).unwrap();
            assert_eq!(action.encoded_len(), bytes.len() as u64);
            let at = action.key_offset() as usize;
            assert_eq!(bytes[at..at + 32], [7; 32]);
            assert_eq!(
                bytes[at + 33..at + 41],
                0x0102_0304_0506_0708u64.to_le_bytes()
            );
            assert_eq!(
                postcard::from_bytes::<CurrentAction>(&bytes).unwrap(),
                action
            );
        }
    }

    /// A stat entry's fixed-width encoding reads back equal, extremes
    /// included, and refuses another length or a bit that is not 0 or 1.
    #[test]
    fn a_seen_entry_reads_back_equal() {
        for (value, executable) in [(0i128, false), (i128::MIN, true), (i128::MAX, false)] {
            let seen = Seen {
                entry: StatEntry {
                    size: u64::MAX,
                    mtime_ns: value,
                    ctime_ns: value.saturating_neg(),
                    inode: 7,
                    recorded_ns: value / 3,
                    digest: ContentDigest([0xa5; 32]),
                },
                executable,
            };
            let bytes = postcard::to_stdvec(&seen).unwrap();
            assert_eq!(postcard::from_bytes::<Seen>(&bytes).unwrap(), seen);
            let raw = seen.to_bytes();
            assert_eq!(Seen::from_bytes(&raw[..Seen::BYTES - 1]), None);
            let mut bad = raw;
            bad[96] = 2;
            assert_eq!(Seen::from_bytes(&bad), None);
        }
    }

    /// A stat relative to an open base says what `lstat` of the full path
    /// says, for files, directories, links and missing paths alike.
    #[test]
    fn a_relative_stat_is_the_full_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("d/p")).unwrap();
        fs::write(root.join("d/p/f.csv"), "x").unwrap();
        fs::set_permissions(root.join("d/p/f.csv"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("f.csv", root.join("d/p/link")).unwrap();
        std::os::unix::fs::symlink(root.join("d/p"), root.join("d/q")).unwrap();
        let mut bases = Bases::default();
        for relative in [
            "d/p/f.csv",
            "d/p",
            "d/p/link",
            "d/q",
            "d/q/f.csv",
            "d/p/none",
            "x/y/z",
        ] {
            let path = root.join(relative);
            let path = path.to_str().unwrap();
            let full = fs::symlink_metadata(path)
                .ok()
                .map(|metadata| crate::observe::StatFields::of(&metadata));
            assert_eq!(bases.lstat(path), full, "{relative}");
        }
        // Too short to have a base two components up: the full path decides.
        assert_eq!(bases.lstat("/tmp"), None);
        assert!(bases.open.len() <= Bases::KEEP);

        // Relative to the parent where the next path shares it, in a walk
        // in sorted order, keys as the snapshot keeps them: the same.
        let keys = [
            "d/",
            "d/p/",
            "d/p/f.csv",
            "d/p/link",
            "d/p/none",
            "d/q",
            "d/q/f.csv",
            "d/q/g",
            "x/y/z",
        ]
        .map(|key| format!("{}/{key}", root.display()));
        let mut bases = Bases::default();
        for (index, key) in keys.iter().enumerate() {
            let path = key.strip_suffix('/').unwrap_or(key);
            let full = fs::symlink_metadata(path)
                .ok()
                .map(|metadata| crate::observe::StatFields::of(&metadata));
            let next = keys.get(index + 1).map(String::as_str);
            assert_eq!(bases.lstat_before(path, next), full, "{key}");
        }
        // The parent of `d/p/f.csv` and of `d/q/f.csv` served as bases.
        for parent in ["d/p", "d/q"] {
            let parent = format!("{}/{parent}", root.display());
            assert!(
                bases.open.iter().any(|(open, _)| *open == parent),
                "{parent} was not a base: {:?}",
                bases.open.iter().map(|(open, _)| open).collect::<Vec<_>>()
            );
        }
        assert!(bases.open.len() <= Bases::KEEP);
    }

    /// A directory with `a.txt` and `sub/b.txt`, observed through a witness
    /// as a build observes a partition; the snapshot of what it saw.
    fn observed_tree() -> (tempfile::TempDir, Snapshot) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.txt"), "a").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/b.txt"), "b").unwrap();
        let cache = MemoryStatCache::default();
        let witness = Witness::new(&cache);
        let mut updates = Vec::new();
        Observer::new(&witness)
            .partition(dir.path(), &mut updates)
            .unwrap()
            .unwrap();
        let entries = witness.into_entries().unwrap();
        let snapshot = Snapshot {
            fingerprint: ContentDigest::of(b""),
            last_event: LastEvent {
                seq: 1,
                build: 1,
                time_ms: 0,
            },
            sources: 0,
            codes: Vec::new(),
            jobs: Vec::new(),
            actions: Vec::new(),
            directories: vec![dir.path().to_string_lossy().into_owned()],
            entries,
            plan: None,
        };
        (dir, snapshot)
    }

    #[test]
    fn a_witness_records_every_directory_and_file_a_walk_relied_on() {
        let (dir, snapshot) = observed_tree();
        let root = dir.path().to_string_lossy().into_owned();
        let keys: Vec<&str> = snapshot
            .entries
            .iter()
            .map(|(key, _)| key.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                format!("{root}/"),
                format!("{root}/a.txt"),
                format!("{root}/sub/"),
                format!("{root}/sub/b.txt"),
            ]
        );
        // Unchanged but just written: too recent to trust by stat, so each
        // is read again, and each matches.
        let found = confirm(&snapshot, 2, 0).unwrap();
        assert!(found.changed.is_empty());
        let updates = found.touched;
        assert_eq!(updates.len(), 4);
    }

    #[test]
    fn same_content_is_confirmed_and_anything_else_is_not() {
        let (dir, snapshot) = observed_tree();
        let path = |relative: &str| dir.path().join(relative);
        // Rewritten with the same bytes: confirmed, with its new stat.
        fs::write(path("a.txt"), "a").unwrap();
        let found = confirm(&snapshot, 1, 0).unwrap();
        assert!(found.changed.is_empty());

        type Alter = fn(&Path);
        let cases: [(&str, Alter); 5] = [
            ("new content", |root| {
                fs::write(root.join("a.txt"), "A").unwrap();
            }),
            ("made executable", |root| {
                fs::set_permissions(root.join("sub/b.txt"), fs::Permissions::from_mode(0o755))
                    .unwrap();
            }),
            ("a file added", |root| {
                fs::write(root.join("sub/c.txt"), "c").unwrap();
            }),
            ("a file replaced by a link", |root| {
                fs::remove_file(root.join("a.txt")).unwrap();
                std::os::unix::fs::symlink(root.join("sub/b.txt"), root.join("a.txt")).unwrap();
            }),
            ("the root replaced by a link", |root| {
                let moved = root.with_extension("moved");
                fs::rename(root, &moved).unwrap();
                std::os::unix::fs::symlink(&moved, root).unwrap();
            }),
        ];
        for (what, alter) in cases {
            let (dir, snapshot) = observed_tree();
            alter(dir.path());
            // Changed paths, or a structural change (the root a link).
            if let Ok(found) = confirm(&snapshot, 2, usize::MAX) {
                assert!(!found.changed.is_empty(), "{what}: confirmed");
            }
            assert!(confirm(&snapshot, 2, 0).is_err(), "{what}: confirmed");
            let moved = dir.path().with_extension("moved");
            if moved.exists() {
                fs::remove_file(dir.path()).unwrap();
                fs::rename(&moved, dir.path()).unwrap();
            }
        }
    }

    #[test]
    fn a_witness_that_stopped_or_saw_a_path_change_gives_nothing() {
        let cache = MemoryStatCache::default();
        let entry = |digest: &[u8]| StatEntry {
            size: 1,
            mtime_ns: 1,
            ctime_ns: 1,
            inode: 1,
            recorded_ns: 2_000_000_000,
            digest: ContentDigest::of(digest),
        };
        let witness = Witness::new(&cache);
        witness.observed("/a", &entry(b"one"), false);
        witness.observed("/a", &entry(b"one"), false);
        assert_eq!(witness.into_entries().map(|entries| entries.len()), Some(1));

        let witness = Witness::new(&cache);
        witness.observed("/a", &entry(b"one"), false);
        witness.observed("/a", &entry(b"two"), false);
        assert_eq!(witness.into_entries(), None);

        let witness = Witness::new(&cache);
        witness.observed("/a", &entry(b"one"), false);
        witness.stop();
        witness.observed("/b", &entry(b"one"), false);
        assert_eq!(witness.into_entries(), None);

        // Settled observations (after the jobs) replace earlier ones of
        // the same path, whatever they saw; among themselves they agree.
        let witness = Witness::new(&cache);
        witness.observed("/a", &entry(b"stale"), false);
        witness.observed("/a", &entry(b"older"), true);
        witness.observed("/b", &entry(b"kept"), false);
        witness.settle();
        witness.observed("/a", &entry(b"rewritten"), false);
        let entries = witness.into_entries().expect("settled over unsettled");
        let digests: Vec<_> = entries
            .iter()
            .map(|(key, seen)| (key.as_str(), seen.entry.digest, seen.executable))
            .collect();
        assert_eq!(
            digests,
            [
                ("/a", ContentDigest::of(b"rewritten"), false),
                ("/b", ContentDigest::of(b"kept"), false)
            ]
        );
        let witness = Witness::new(&cache);
        witness.settle();
        witness.observed("/a", &entry(b"one"), false);
        witness.observed("/a", &entry(b"two"), false);
        assert_eq!(witness.into_entries(), None);
    }

    #[test]
    fn only_uncached_configure_commands_forbid_a_snapshot() {
        let parse = |jobs: &str| {
            let text = format!(
                "[datasets.out]\n[jobs.make]\nrun = [\"true\"]\noutputs = [\"out\"]\n{jobs}"
            );
            Graph::parse(&text, Path::new("cairn.toml"), Path::new(".")).unwrap()
        };
        assert!(graph_allows(&parse("")));
        assert!(!graph_allows(&parse("configure = [\"./configure\"]\n")));
        assert!(graph_allows(&parse(
            "configure = [\"./configure\"]\ncode = [\"configure\"]\n"
        )));
        assert!(!graph_allows(&parse(
            "configure = [\"./configure\"]\ncode = [\"configure\"]\nconfigure_cache = false\n"
        )));
    }

    /// The plan of the test graph (3 days x 2 stations: 6 raw, 6 clean, 3
    /// daily), sources under /p/inputs, data under /p/data, and a snapshot
    /// of it with a distinct key per action.
    fn planned() -> (crate::plan::Plan, Snapshot) {
        use crate::plan::tests::{FakeConfigurer, GRAPH, daily_response};
        let graph = Graph::parse(GRAPH, Path::new("cairn.toml"), Path::new("/p")).unwrap();
        let configurer = FakeConfigurer {
            respond: daily_response,
            calls: std::sync::Mutex::new(Vec::new()),
        };
        let all = graph.all_partitions().unwrap();
        let plan = crate::plan::plan(&graph, &all, &configurer).unwrap();
        let jobs: Vec<String> = ["raw", "clean", "daily"].map(String::from).to_vec();
        let actions = plan
            .actions
            .iter()
            .enumerate()
            .map(|(index, action)| {
                let job = jobs.iter().position(|job| **job == *action.job).unwrap();
                CurrentAction::of(index, job as u32, (ActionKey([index as u8; 32]), 1), action)
            })
            .collect();
        let snapshot = Snapshot {
            fingerprint: ContentDigest::of(b""),
            last_event: LastEvent::default(),
            sources: plan.sources.len() as u64,
            codes: Vec::new(),
            jobs,
            actions,
            directories: Vec::new(),
            entries: Vec::new(),
            plan: None,
        };
        (plan, snapshot)
    }

    /// The outputs of the actions `presume` left to check.
    fn checked(plan: &crate::plan::Plan, keys: &[Option<ActionKey>]) -> Vec<String> {
        let mut out: Vec<String> = plan
            .actions
            .iter()
            .zip(keys)
            .filter(|(_, key)| key.is_none())
            .map(|(action, _)| action.config.outputs[0].to_string())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn presume_checks_what_a_changed_path_concerns_and_everything_downstream() {
        let (plan, snapshot) = planned();
        let data = Path::new("/p/data");
        let presume = |changed: &[&str]| {
            let changed: Vec<String> = changed.iter().map(|key| key.to_string()).collect();
            presume(&snapshot, &changed, &[], &plan, data)
        };
        // A source: its raw and clean partitions, and that day's summary.
        let keys = presume(&["/p/inputs/2024-01-02/B.txt"]).unwrap();
        assert_eq!(
            checked(&plan, &keys),
            [
                "clean/date=2024-01-02/station=B",
                "daily/date=2024-01-02",
                "raw/date=2024-01-02/station=B"
            ]
        );
        // Every other action keeps the snapshot's key.
        for (index, key) in keys.iter().enumerate() {
            if let Some(key) = key {
                assert_eq!(*key, ActionKey([index as u8; 32]));
            }
        }
        // A file inside an output partition, and a partition's directory.
        let keys = presume(&[
            "/p/data/clean/date=2024-01-01/station=A/reviews.csv",
            "/p/data/daily/date=2024-01-03/",
        ])
        .unwrap();
        assert_eq!(
            checked(&plan, &keys),
            [
                "clean/date=2024-01-01/station=A",
                "daily/date=2024-01-01",
                "daily/date=2024-01-03"
            ]
        );
        // A path no action reads or writes: nothing is presumed.
        assert_eq!(presume(&["/p/data/clean/date=2024-01-01/"]), None);
        assert_eq!(presume(&["/p/elsewhere.txt"]), None);
        // A snapshot of another plan: nothing is presumed.
        let mut other = snapshot.clone();
        other.actions[0].outputs = vec!["raw/date=2024-01-09/station=A".into()];
        assert_eq!(super::presume(&other, &[], &[], &plan, data), None);
        let mut other = snapshot.clone();
        other.actions.pop();
        assert_eq!(super::presume(&other, &[], &[], &plan, data), None);
    }

    #[test]
    fn presume_checks_what_a_failed_build_left_and_everything_downstream() {
        let (plan, snapshot) = planned();
        let data = Path::new("/p/data");
        let index_of = |output: &str| {
            plan.actions
                .iter()
                .position(|action| action.config.outputs[0].as_str() == output)
                .unwrap() as u32
        };
        // An action left to check, with nothing changed: it and what
        // reads it.
        let raw = index_of("raw/date=2024-01-03/station=A");
        let keys = super::presume(&snapshot, &[], &[raw], &plan, data).unwrap();
        assert_eq!(
            checked(&plan, &keys),
            [
                "clean/date=2024-01-03/station=A",
                "daily/date=2024-01-03",
                "raw/date=2024-01-03/station=A"
            ]
        );
        // With a changed path beside it: both.
        let changed = ["/p/inputs/2024-01-02/B.txt".to_owned()];
        let daily = index_of("daily/date=2024-01-01");
        let keys = super::presume(&snapshot, &changed, &[daily], &plan, data).unwrap();
        assert_eq!(
            checked(&plan, &keys),
            [
                "clean/date=2024-01-02/station=B",
                "daily/date=2024-01-01",
                "daily/date=2024-01-02",
                "raw/date=2024-01-02/station=B"
            ]
        );
        // An index the plan does not have: nothing is presumed.
        let beyond = plan.actions.len() as u32;
        assert_eq!(super::presume(&snapshot, &[], &[beyond], &plan, data), None);
    }

    #[test]
    fn merged_entries_take_the_new_observations_and_need_every_changed_path() {
        let seen = |digest: &[u8]| Seen {
            entry: StatEntry {
                size: 1,
                mtime_ns: 1,
                ctime_ns: 1,
                inode: 1,
                recorded_ns: 1,
                digest: ContentDigest::of(digest),
            },
            executable: false,
        };
        let base = vec![
            ("/a".to_owned(), seen(b"a")),
            ("/b".to_owned(), seen(b"b")),
            ("/c".to_owned(), seen(b"c")),
        ];
        let observed = vec![("/b".to_owned(), seen(b"B")), ("/d".to_owned(), seen(b"d"))];
        let merged = merge_entries(base.clone(), &["/b".to_owned()], observed).unwrap();
        let digests: Vec<_> = merged
            .iter()
            .map(|(key, seen)| (key.as_str(), seen.entry.digest))
            .collect();
        assert_eq!(
            digests,
            [
                ("/a", ContentDigest::of(b"a")),
                ("/b", ContentDigest::of(b"B")),
                ("/c", ContentDigest::of(b"c")),
                ("/d", ContentDigest::of(b"d"))
            ]
        );
        // A changed path nobody looked at again: what it holds is unknown.
        assert_eq!(merge_entries(base, &["/c".to_owned()], Vec::new()), None);
    }
}
