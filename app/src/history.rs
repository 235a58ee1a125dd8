//! `history`: every materialization of one partition, with the failed runs
//! and invalidations in between (docs/audit.md, "`cairn history`").
//!
//! It reads the partition's events through the catalog's
//! `partition_events` index, so its cost grows with the partition's
//! history, not with the log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use cairn_engine::digest::{ActionKey, ContentDigest};
use cairn_engine::graph::Producer;
use cairn_engine::ports::Projections;
use cairn_engine::record::{Event, EventKind, Manifest};
use cairn_engine::refs::PartitionRef;
use cairn_store::Store;

use crate::{AppError, Workspace};

/// The job of another system an attempt ran in (`ActionDispatched`):
/// the executor's name (`slurm`) and its id of the job (the Slurm job id,
/// for `sacct -j ID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    pub executor: String,
    pub id: String,
}

impl Dispatch {
    /// `Slurm job 42`.
    pub fn title(&self) -> String {
        format!(
            "{} job {}",
            crate::events::executor_title(&self.executor),
            self.id
        )
    }
}

/// The dispatch of each action run of `events` (a partition's, oldest
/// first) that had one, by the seq of the `ActionSucceeded` or
/// `ActionFailed` that ended it: the `ActionDispatched` after the
/// attempt's `ActionStarted` (a retry starts without one).
pub(crate) fn dispatches(events: &[Event]) -> HashMap<u64, Dispatch> {
    let mut open: HashMap<(u64, ActionKey), Dispatch> = HashMap::new();
    let mut ended = HashMap::new();
    for event in events {
        match &event.kind {
            EventKind::ActionStarted { key, .. } => {
                open.remove(&(event.build, *key));
            }
            EventKind::ActionDispatched {
                key, executor, id, ..
            } => {
                open.insert(
                    (event.build, *key),
                    Dispatch {
                        executor: executor.clone(),
                        id: id.clone(),
                    },
                );
            }
            EventKind::ActionSucceeded { manifest } => {
                if let Some(dispatch) = open.remove(&(event.build, manifest.key)) {
                    ended.insert(event.seq, dispatch);
                }
            }
            EventKind::ActionFailed { key: Some(key), .. } => {
                if let Some(dispatch) = open.remove(&(event.build, *key)) {
                    ended.insert(event.seq, dispatch);
                }
            }
            _ => {}
        }
    }
    ended
}

/// A partition's history, or why it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum History {
    /// A source partition: cairn observes `path` and never runs a job for it.
    Source { path: PathBuf },
    /// Nothing was built here yet: there is no store.
    NothingBuilt,
    /// Its entries, newest first (empty: it was never built, failed or
    /// invalidated).
    Entries(Vec<HistoryEntry>),
}

/// One entry of a partition's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryEntry {
    Materialization(Box<Materialized>),
    Failure(Box<FailedRun>),
    Invalidation(InvalidationEntry),
    /// The build joined another build's run of the partition's action
    /// (`ActionJoined`): it was not built twice.
    Joined(JoinedRun),
}

/// A build of a held workspace took another build's run of the
/// partition's action instead of running it again (`ActionJoined`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedRun {
    pub seq: u64,
    pub build: u64,
    pub time_ms: u64,
    pub key: ActionKey,
    pub job: String,
    /// The build that ran it.
    pub joined_build: u64,
}

impl HistoryEntry {
    pub fn build(&self) -> u64 {
        match self {
            HistoryEntry::Materialization(m) => m.build,
            HistoryEntry::Failure(f) => f.build,
            HistoryEntry::Invalidation(i) => i.build,
            HistoryEntry::Joined(j) => j.build,
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            HistoryEntry::Materialization(m) => m.seq,
            HistoryEntry::Failure(f) => f.seq,
            HistoryEntry::Invalidation(i) => i.seq,
            HistoryEntry::Joined(j) => j.seq,
        }
    }
}

/// The partition got content (`PartitionMaterialized`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Materialized {
    pub seq: u64,
    pub build: u64,
    pub time_ms: u64,
    pub key: ActionKey,
    /// Its content.
    pub digest: ContentDigest,
    /// The job ran in this build (`ActionSucceeded`); otherwise the manifest
    /// of an earlier run was reused (`ActionCached`).
    pub executed: bool,
    /// The data path was rewritten from the store.
    pub restored: bool,
    /// The manifest of the run that produced the content (reused or not);
    /// `None` when it is no longer recorded.
    pub manifest: Option<Manifest>,
    /// Why the job ran (`ActionStarted`), when it did.
    pub reason: Option<String>,
    /// Inputs whose content differs from the previous materialization's.
    pub changed: Vec<PartitionRef>,
    /// This is the partition's current content.
    pub current: bool,
    /// The reason the build was requested with (a backfill's).
    pub build_reason: Option<String>,
    /// The server operation the build ran, if a server submitted it.
    pub operation: Option<String>,
    /// Restored from the shared remote cache at this URL
    /// (docs/remote-cache.md).
    pub remote: Option<String>,
    /// Uploaded to the shared remote cache at this URL by this build.
    pub uploaded: Option<String>,
    /// The job of another system it ran in, when it ran in this build
    /// through one (the Slurm job).
    pub dispatched: Option<Dispatch>,
}

impl Materialized {
    /// How long the run that produced the content took.
    pub fn duration_ms(&self) -> Option<u64> {
        self.manifest.as_ref().map(duration_ms)
    }
}

/// A run of its job that failed (`ActionFailed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRun {
    pub seq: u64,
    pub build: u64,
    pub time_ms: u64,
    /// `None` when it never ran (a missing source input).
    pub key: Option<ActionKey>,
    pub job: String,
    /// Why the job ran (`ActionStarted`), when it did.
    pub reason: Option<String>,
    pub error: String,
    pub exit_code: Option<i32>,
    pub stdout: Option<ContentDigest>,
    pub stderr: Option<ContentDigest>,
    /// The reason the build was requested with (a backfill's).
    pub build_reason: Option<String>,
    /// The server operation the build ran, if a server submitted it.
    pub operation: Option<String>,
    /// The job of another system the failed attempt ran in (the Slurm job).
    pub dispatched: Option<Dispatch>,
}

/// The partition was invalidated (`PartitionInvalidated`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidationEntry {
    pub seq: u64,
    pub build: u64,
    pub time_ms: u64,
    pub reason: String,
    pub by: Option<String>,
}

/// How long the run of `manifest` took.
pub fn duration_ms(manifest: &Manifest) -> u64 {
    manifest.finished_ms.saturating_sub(manifest.started_ms)
}

pub(crate) fn parse_ref(text: &str) -> Result<PartitionRef, AppError> {
    PartitionRef::parse(text).map_err(|error| AppError::Usage(error.to_string()))
}

/// The file a source partition is observed from, when `partition` is one.
pub(crate) fn source_path(workspace: &Workspace, partition: &PartitionRef) -> Option<PathBuf> {
    match workspace.graph.lookup(partition) {
        Ok(Producer::Source { path, .. }) => Some(path),
        _ => None,
    }
}

/// Every event about `partition`, oldest first.
pub(crate) fn partition_events(
    store: &Store,
    partition: &PartitionRef,
) -> Result<Vec<Event>, AppError> {
    let mut events = Vec::new();
    store
        .catalog()
        .partition_events(partition, 1, &mut |event| {
            events.push(event);
            true
        })?;
    Ok(events)
}

/// The history of `request` (one ref), newest first.
pub fn history(workspace: &Workspace, request: &str) -> Result<History, AppError> {
    let partition = parse_ref(request)?;
    if let Some(path) = source_path(workspace, &partition) {
        return Ok(History::Source { path });
    }
    let Some(store) = workspace.open_reader()? else {
        return Ok(History::NothingBuilt);
    };
    let current_seq = store
        .catalog()
        .partition(&partition)?
        .and_then(|state| state.current)
        .map(|current| current.seq);
    let events = partition_events(&store, &partition)?;
    let mut entries = history_entries(&store, events, current_seq)?;
    entries.reverse();
    let requested = build_reasons(&store, &entries)?;
    for entry in &mut entries {
        let build = entry.build();
        match entry {
            HistoryEntry::Materialization(m) => {
                if let Some(requested) = requested.get(&build) {
                    m.build_reason.clone_from(&requested.reason);
                    m.operation.clone_from(&requested.operation);
                }
            }
            HistoryEntry::Failure(f) => {
                if let Some(requested) = requested.get(&build) {
                    f.build_reason.clone_from(&requested.reason);
                    f.operation.clone_from(&requested.operation);
                }
            }
            HistoryEntry::Invalidation(_) | HistoryEntry::Joined(_) => {}
        }
    }
    Ok(History::Entries(entries))
}

/// Pairs each `PartitionMaterialized` with the `ActionSucceeded` or
/// `ActionCached` of its build and key (both are indexed under the
/// partition, since the key's outputs include it), oldest first.
fn history_entries(
    store: &Store,
    events: Vec<Event>,
    current_seq: Option<u64>,
) -> Result<Vec<HistoryEntry>, AppError> {
    let mut started: HashMap<(u64, ActionKey), String> = HashMap::new();
    let mut succeeded: HashMap<ActionKey, Manifest> = HashMap::new();
    let mut executed_in: HashSet<(u64, ActionKey)> = HashSet::new();
    let mut cached: HashMap<(u64, ActionKey), bool> = HashMap::new();
    let mut from_remote: HashMap<(u64, ActionKey), String> = HashMap::new();
    let mut uploaded: HashMap<(u64, ActionKey), String> = HashMap::new();
    let mut dispatched = dispatches(&events);
    let mut ran_in: HashMap<(u64, ActionKey), Dispatch> = HashMap::new();
    let mut entries = Vec::new();
    let mut previous_inputs: Option<BTreeMap<PartitionRef, ContentDigest>> = None;
    for event in events {
        let build = event.build;
        match event.kind {
            EventKind::ActionStarted { key, reason, .. } => {
                started.insert((build, key), reason);
            }
            EventKind::ActionSucceeded { manifest } => {
                if let Some(dispatch) = dispatched.remove(&event.seq) {
                    ran_in.insert((build, manifest.key), dispatch);
                }
                executed_in.insert((build, manifest.key));
                succeeded.insert(manifest.key, manifest);
            }
            EventKind::ActionCached {
                key,
                restored,
                remote,
                ..
            } => {
                cached.insert((build, key), restored);
                if let Some(origin) = remote {
                    from_remote.insert((build, key), origin.url);
                }
            }
            // After the materialization it is about (uploads end the build).
            EventKind::ActionUploaded { key, url, .. } => {
                uploaded.insert((build, key), url);
            }
            EventKind::ActionFailed {
                key,
                job,
                error,
                exit_code,
                stdout,
                stderr,
                ..
            } => {
                let reason = key.and_then(|key| started.get(&(build, key)).cloned());
                entries.push(HistoryEntry::Failure(Box::new(FailedRun {
                    seq: event.seq,
                    build,
                    time_ms: event.time_ms,
                    key,
                    job,
                    reason,
                    error,
                    exit_code,
                    stdout,
                    stderr,
                    build_reason: None,
                    operation: None,
                    dispatched: dispatched.remove(&event.seq),
                })));
            }
            EventKind::ActionJoined {
                key,
                job,
                joined_build,
                ..
            } => {
                entries.push(HistoryEntry::Joined(JoinedRun {
                    seq: event.seq,
                    build,
                    time_ms: event.time_ms,
                    key,
                    job,
                    joined_build,
                }));
            }
            EventKind::PartitionInvalidated { reason, by, .. } => {
                entries.push(HistoryEntry::Invalidation(InvalidationEntry {
                    seq: event.seq,
                    build,
                    time_ms: event.time_ms,
                    reason,
                    by,
                }));
            }
            EventKind::PartitionMaterialized { key, digest, .. } => {
                let manifest = match succeeded.get(&key) {
                    Some(manifest) => Some(manifest.clone()),
                    None => store.catalog().action(&key)?,
                };
                let inputs: Option<BTreeMap<PartitionRef, ContentDigest>> =
                    manifest.as_ref().map(|manifest| {
                        manifest
                            .inputs
                            .iter()
                            .map(|input| (input.partition.clone(), input.digest))
                            .collect()
                    });
                let changed = match (&previous_inputs, &inputs) {
                    (Some(before), Some(now)) => now
                        .iter()
                        .filter(|(partition, digest)| before.get(*partition) != Some(*digest))
                        .map(|(partition, _)| partition.clone())
                        .collect(),
                    _ => Vec::new(),
                };
                if inputs.is_some() {
                    previous_inputs = inputs;
                }
                entries.push(HistoryEntry::Materialization(Box::new(Materialized {
                    seq: event.seq,
                    build,
                    time_ms: event.time_ms,
                    key,
                    digest,
                    executed: executed_in.contains(&(build, key)),
                    restored: cached.get(&(build, key)).copied().unwrap_or(false),
                    manifest,
                    reason: started.get(&(build, key)).cloned(),
                    changed,
                    current: current_seq == Some(event.seq),
                    build_reason: None,
                    operation: None,
                    remote: from_remote.get(&(build, key)).cloned(),
                    uploaded: None,
                    dispatched: ran_in.get(&(build, key)).cloned(),
                })));
            }
            _ => {}
        }
    }
    entries.sort_by_key(HistoryEntry::seq);
    for entry in &mut entries {
        if let HistoryEntry::Materialization(m) = entry {
            m.uploaded = uploaded.get(&(m.build, m.key)).cloned();
        }
    }
    Ok(entries)
}

/// The reason each build of `entries` was requested with (its
/// `BuildRequested`, the first event of the build, found by binary search
/// over seq: build ids grow along the log), for the builds that have one.
/// The builds of a server run side by side and their events interleave:
/// when the search misses, the log is walked back from the build's first
/// entry here (at most [`WALK_BACK`] events) to its `BuildRequested`.
fn build_reasons(
    store: &Store,
    entries: &[HistoryEntry],
) -> Result<HashMap<u64, Requested>, AppError> {
    let mut reasons = HashMap::new();
    let mut builds: BTreeMap<u64, u64> = BTreeMap::new();
    for entry in entries {
        if !matches!(
            entry,
            HistoryEntry::Invalidation(_) | HistoryEntry::Joined(_)
        ) {
            let first = builds.entry(entry.build()).or_insert(entry.seq());
            *first = (*first).min(entry.seq());
        }
    }
    let requested = |event: Option<Event>, build: u64| match event {
        Some(Event {
            build: found,
            kind: EventKind::BuildRequested {
                reason, submission, ..
            },
            ..
        }) if found == build => Some((reason, submission)),
        _ => None,
    };
    for (build, first_entry) in builds {
        let seq = store
            .catalog()
            .first_seq_reaching(&|event| event.build >= build)?;
        let mut found = requested(store.catalog().event(seq)?, build);
        if found.is_none() {
            let lowest = first_entry.saturating_sub(WALK_BACK).max(1);
            for seq in (lowest..first_entry).rev() {
                found = requested(store.catalog().event(seq)?, build);
                if found.is_some() {
                    break;
                }
            }
        }
        if let Some((reason, submission)) = found
            && (reason.is_some() || submission.is_some())
        {
            reasons.insert(
                build,
                Requested {
                    reason,
                    operation: submission.map(|submission| submission.operation),
                },
            );
        }
    }
    Ok(reasons)
}

/// How far back [`build_reasons`] walks the log for a build's request.
const WALK_BACK: u64 = 100_000;

/// What a build was requested with, as history shows it.
struct Requested {
    reason: Option<String>,
    /// The server operation it ran (`BuildRequested.submission`).
    operation: Option<String>,
}
