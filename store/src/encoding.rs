//! How records are laid out on disk: every persisted value is one format byte
//! followed by the postcard encoding of the value.
//!
//! Invariants:
//! - The format byte is [`FORMAT_VERSION`] for everything this cairn writes.
//!   postcard is not self-describing, so any change to a persisted type in
//!   `cairn_engine::record` bumps [`FORMAT_VERSION`] and adds a decoding path
//!   for the old byte here. The committed golden store
//!   (`fixtures/golden-store`, format 1) fails its test when one is missing.
//!
//! Formats:
//! - 1: the first format.
//! - 2: `ActionStarted` gained `attempt` and `resumed_from`, and
//!   `ActionCheckpointed` was added after it (which renumbers the variants
//!   that follow). Format-1 events are read through [`v1`]; the other
//!   records (manifests, partition states, stat entries) did not change and
//!   decode under either byte.
//! - 3: `DefsRefreshed` was appended to the events (the variants before it
//!   keep their numbers, so format-2 events decode unchanged) and the
//!   `defs` table holds [`DefsRecord`]s.
//! - 4: the manifest gained `command` (what entered its key besides inputs
//!   and versions, so a rebuild can name what changed). Manifests of
//!   formats 1 to 3, in the `actions` table and in `ActionSucceeded`
//!   events, are read through [`v3`] with no command; format-2 and -3
//!   events through [`v3`] too. The other records did not change.
//! - 5: `ActionFailed.key` became optional (`None`: the action failed
//!   before it had a key, its source input missing). Format-4 events are
//!   read through [`v4`]; in every older format such a failure carried an
//!   all-zero key, which reads as `None`. The other records did not change.
//! - 6: `PartitionPruned` was appended to the events (`cairn prune`); the
//!   variants before it keep their numbers, so format-5 events decode
//!   unchanged (older ones as above). The other records did not change.
//! - 7: a manifest's `FileEntry` gained `mode` (the permission bits a
//!   restore recreates). Manifests of every older format (in `actions`,
//!   and in the `ActionSucceeded` events) are read with each file getting
//!   0o755 or 0o644 from its `executable`, the mode restores gave it then:
//!   formats 1 to 3 through [`v3`], formats 4 to 6 through [`v6`].
//!   Format-4 to -6 events are [`v4`] events (generic over the manifest
//!   and the failure key) around a [`v6::Manifest`]; a `PartitionPruned`
//!   in a format-4 or -5 event is refused (it did not exist yet). The
//!   other records did not change.
//! - 8: `ActionRetrying` was appended to the events (a failed attempt's
//!   wait before the next); the variants before it keep their numbers, so
//!   format-7 events decode unchanged, and an `ActionRetrying` in one is
//!   refused. The other records did not change.
//! - 9: `BuildRequested` gained `submission` (the server operation a build
//!   runs), `BuildFinished`'s counts gained `joined`, and `ActionJoined`
//!   was appended (a build of a held workspace took the run of another).
//!   Format-7 and -8 events are read through [`v8`] (no submission, no
//!   joined); older formats' counts through the frozen [`Counts`]. The
//!   other records did not change.
//! - 10: `ActionCached` gained `remote` (the origin and manifest of a
//!   result restored from the shared remote cache), and `RemoteRefused`
//!   and `ActionUploaded` were appended (docs/remote-cache.md). Format-9
//!   events are read through [`v9`] (`remote: None`). The other records
//!   did not change.
//! - 11: `ActionDispatched` was appended to the events (the executor's id
//!   of the job an attempt ran in: the Slurm job id); the variants before
//!   it keep their numbers, so format-10 events decode unchanged, and an
//!   `ActionDispatched` in one is refused. The other records did not
//!   change.
//! - 12: `BuildRequested`'s `submission` gained `submitted_by`,
//!   `submitted_ms` and `expected` (what a server's operation was
//!   submitted by, when, and what it announced). A format-10 or -11
//!   `BuildRequested` is read through [`v11`] (none of the three); the
//!   other kinds of those formats did not change and decode as today's.
//!   Format-9 events read their submission through [`v11`] too. The other
//!   records did not change.
//! - Decoding never panics, whatever the bytes (the event decoder is fuzzed):
//!   every failure is a [`DecodeError`]. A value followed by trailing bytes is
//!   refused rather than silently truncated, so a torn or spliced record
//!   cannot pass for a valid one.

use cairn_engine::ActionKey;
use cairn_engine::record::{
    CheckpointRecord, DefsRecord, Event, EventKind, Manifest, PartitionState, StatEntry,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The version of the store format this cairn writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 12;

/// The format byte written in front of every value.
const FORMAT_BYTE: u8 = 12;
const _: () = assert!(FORMAT_BYTE as u32 == FORMAT_VERSION);

/// The oldest format this cairn reads.
const OLDEST_FORMAT_BYTE: u8 = 1;

/// Why a persisted value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the record is empty")]
    Empty,
    #[error("the record has format {found}, newer than this cairn reads (up to {FORMAT_VERSION})")]
    NewerFormat { found: u8 },
    #[error("the record has unknown format byte {found}")]
    UnknownFormat { found: u8 },
    #[error("the record is malformed: {0}")]
    Malformed(String),
    #[error("the record has {0} unexpected trailing bytes")]
    TrailingBytes(usize),
}

pub fn encode_event(event: &Event) -> Vec<u8> {
    encode(event)
}

pub fn decode_event(bytes: &[u8]) -> Result<Event, DecodeError> {
    match bytes.first() {
        Some(1) => decode_body::<v1::Event>(&bytes[1..]).map(Event::from),
        Some(2 | 3) => decode_body::<v3::Event>(&bytes[1..]).map(Event::from),
        Some(&format @ 4..=6) => {
            let body = &bytes[1..];
            let event = if format == 4 {
                decode_body::<v4::Event<v6::Manifest, ActionKey>>(body).map(Event::from)?
            } else {
                decode_body::<v4::Event<v6::Manifest, Option<ActionKey>>>(body).map(Event::from)?
            };
            if format < 6 && matches!(event.kind, EventKind::PartitionPruned { .. }) {
                return Err(DecodeError::Malformed(format!(
                    "a format-{format} event cannot be PartitionPruned (added in format 6)"
                )));
            }
            Ok(event)
        }
        Some(&format @ 7..=8) => {
            let event = decode_body::<v8::Event<Manifest, Option<ActionKey>>>(&bytes[1..])
                .map(Event::from)?;
            if format == 7 && matches!(event.kind, EventKind::ActionRetrying { .. }) {
                return Err(DecodeError::Malformed(
                    "a format-7 event cannot be ActionRetrying (added in format 8)".to_owned(),
                ));
            }
            Ok(event)
        }
        Some(9) => decode_body::<v9::Event>(&bytes[1..]).map(Event::from),
        Some(&format @ 10..=11) => {
            let event = v11::decode(&bytes[1..])?;
            if format == 10 && matches!(event.kind, EventKind::ActionDispatched { .. }) {
                return Err(DecodeError::Malformed(
                    "a format-10 event cannot be ActionDispatched (added in format 11)".to_owned(),
                ));
            }
            Ok(event)
        }
        _ => decode(bytes),
    }
}

pub fn encode_manifest(manifest: &Manifest) -> Vec<u8> {
    encode(manifest)
}

pub fn decode_manifest(bytes: &[u8]) -> Result<Manifest, DecodeError> {
    match bytes.first() {
        Some(1..=3) => decode_body::<v3::Manifest>(&bytes[1..]).map(Manifest::from),
        Some(4..=6) => decode_body::<v6::Manifest>(&bytes[1..]).map(Manifest::from),
        _ => decode(bytes),
    }
}

pub fn encode_partition_state(state: &PartitionState) -> Vec<u8> {
    encode(state)
}

pub fn decode_partition_state(bytes: &[u8]) -> Result<PartitionState, DecodeError> {
    decode(bytes)
}

pub fn encode_stat_entry(entry: &StatEntry) -> Vec<u8> {
    encode(entry)
}

pub fn decode_stat_entry(bytes: &[u8]) -> Result<StatEntry, DecodeError> {
    decode(bytes)
}

pub fn encode_checkpoint(record: &CheckpointRecord) -> Vec<u8> {
    encode(record)
}

pub fn decode_checkpoint(bytes: &[u8]) -> Result<CheckpointRecord, DecodeError> {
    decode(bytes)
}

pub fn encode_defs(record: &DefsRecord) -> Vec<u8> {
    encode(record)
}

pub fn decode_defs(bytes: &[u8]) -> Result<DefsRecord, DecodeError> {
    decode(bytes)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // postcard only fails on serde features our record types do not use
    // (sequences of unknown length, `collect_str` errors), so a failure here is
    // a programming error in a record type, not bad data.
    postcard::to_extend(value, vec![FORMAT_BYTE])
        .expect("record types serialize with postcard (no unknown-length sequences)")
}

/// Decodes a record whose layout is the same in every format this cairn
/// reads (everything but events and manifests, see the module doc).
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&format, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    match format {
        OLDEST_FORMAT_BYTE..=FORMAT_BYTE => {}
        found if u32::from(found) > FORMAT_VERSION => {
            return Err(DecodeError::NewerFormat { found });
        }
        found => return Err(DecodeError::UnknownFormat { found }),
    }
    decode_body(body)
}

fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes::<T>(body)
        .map_err(|error| DecodeError::Malformed(error.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// Before format 5, an action that failed before it had a key (a missing
/// source input) recorded the all-zero key: it reads as none.
fn known_key(key: ActionKey) -> Option<ActionKey> {
    (key != ActionKey([0; 32])).then_some(key)
}

/// Build counts as formats 1 to 8 recorded them (format 9 added
/// `joined`). Frozen: never change this type.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(crate) struct Counts {
    pub executed: u64,
    pub cached: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl From<Counts> for cairn_engine::record::BuildCounts {
    fn from(old: Counts) -> Self {
        cairn_engine::record::BuildCounts {
            executed: old.executed,
            cached: old.cached,
            failed: old.failed,
            skipped: old.skipped,
            joined: 0,
        }
    }
}

/// The key of an `ActionFailed` event as a format recorded it: a key
/// (formats 1 to 4, all-zero when unknown) or an optional one (format 5).
trait FailedKey {
    fn known(self) -> Option<ActionKey>;
}

impl FailedKey for ActionKey {
    fn known(self) -> Option<ActionKey> {
        known_key(self)
    }
}

impl FailedKey for Option<ActionKey> {
    fn known(self) -> Option<ActionKey> {
        self
    }
}

/// Format 1 events, as cairn wrote them before format 2, and their reading
/// in today's types. Frozen: never change these types, add a `v2` module
/// when format 3 changes events again.
mod v1 {
    use super::Counts as BuildCounts;
    use super::v3::Manifest;
    use cairn_engine::record;
    use cairn_engine::{ActionKey, ContentDigest, PartitionRef};
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct Event {
        pub seq: u64,
        pub time_ms: u64,
        pub build: u64,
        pub kind: EventKind,
    }

    /// Variant order is the format: it must stay as it was.
    #[derive(Debug, Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) enum EventKind {
        BuildRequested {
            requested: Vec<String>,
            command: String,
            reason: Option<String>,
        },
        Planned {
            actions: u64,
            sources: u64,
        },
        DatasetVersionChanged {
            dataset: String,
            from: Option<String>,
            to: Option<String>,
        },
        ActionStarted {
            key: ActionKey,
            job: String,
            outputs: Vec<PartitionRef>,
            reason: String,
        },
        ActionSucceeded {
            manifest: Manifest,
        },
        ActionFailed {
            key: ActionKey,
            job: String,
            outputs: Vec<PartitionRef>,
            error: String,
            exit_code: Option<i32>,
            stdout: Option<ContentDigest>,
            stderr: Option<ContentDigest>,
        },
        ActionCached {
            key: ActionKey,
            job: String,
            outputs: Vec<PartitionRef>,
            built_by: u64,
            restored: bool,
        },
        ActionSkipped {
            job: String,
            outputs: Vec<PartitionRef>,
            reason: String,
        },
        PartitionMaterialized {
            partition: PartitionRef,
            digest: ContentDigest,
            key: ActionKey,
        },
        PartitionInvalidated {
            partition: PartitionRef,
            reason: String,
            by: Option<String>,
        },
        BuildFinished {
            counts: BuildCounts,
            interrupted: bool,
        },
    }

    impl From<Event> for record::Event {
        fn from(event: Event) -> record::Event {
            use record::EventKind as Now;
            let kind = match event.kind {
                EventKind::BuildRequested {
                    requested,
                    command,
                    reason,
                } => Now::BuildRequested {
                    requested,
                    command,
                    reason,
                    submission: None,
                },
                EventKind::Planned { actions, sources } => Now::Planned { actions, sources },
                EventKind::DatasetVersionChanged { dataset, from, to } => {
                    Now::DatasetVersionChanged { dataset, from, to }
                }
                // Format 1 had neither retries nor checkpoints: every start
                // was a first attempt from scratch.
                EventKind::ActionStarted {
                    key,
                    job,
                    outputs,
                    reason,
                } => Now::ActionStarted {
                    key,
                    job,
                    outputs,
                    reason,
                    attempt: 1,
                    resumed_from: None,
                },
                EventKind::ActionSucceeded { manifest } => Now::ActionSucceeded {
                    manifest: manifest.into(),
                },
                EventKind::ActionFailed {
                    key,
                    job,
                    outputs,
                    error,
                    exit_code,
                    stdout,
                    stderr,
                } => Now::ActionFailed {
                    key: super::known_key(key),
                    job,
                    outputs,
                    error,
                    exit_code,
                    stdout,
                    stderr,
                },
                EventKind::ActionCached {
                    key,
                    job,
                    outputs,
                    built_by,
                    restored,
                } => Now::ActionCached {
                    key,
                    job,
                    outputs,
                    built_by,
                    restored,
                    remote: None,
                },
                EventKind::ActionSkipped {
                    job,
                    outputs,
                    reason,
                } => Now::ActionSkipped {
                    job,
                    outputs,
                    reason,
                },
                EventKind::PartitionMaterialized {
                    partition,
                    digest,
                    key,
                } => Now::PartitionMaterialized {
                    partition,
                    digest,
                    key,
                },
                EventKind::PartitionInvalidated {
                    partition,
                    reason,
                    by,
                } => Now::PartitionInvalidated {
                    partition,
                    reason,
                    by,
                },
                EventKind::BuildFinished {
                    counts,
                    interrupted,
                } => Now::BuildFinished {
                    counts: counts.into(),
                    interrupted,
                },
            };
            record::Event {
                seq: event.seq,
                time_ms: event.time_ms,
                build: event.build,
                kind,
            }
        }
    }
}

/// Formats 1 to 3 manifests, and formats 2 and 3 events, as cairn wrote
/// them before format 4 gave the manifest its `command`, and their reading
/// in today's types. Frozen: never change these types.
mod v3 {
    use super::Counts as BuildCounts;
    use cairn_engine::record::{self, InputRecord};
    use cairn_engine::{ActionKey, ContentDigest, PartitionRef};
    use serde::Deserialize;

    /// A file as formats 1 to 6 recorded it: no mode.
    #[derive(Debug, Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct FileEntry {
        pub path: String,
        pub executable: bool,
        pub size: u64,
        pub digest: ContentDigest,
    }

    /// An output as formats 1 to 6 recorded it.
    #[derive(Debug, Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct OutputRecord {
        pub partition: PartitionRef,
        pub digest: ContentDigest,
        pub files: Vec<FileEntry>,
    }

    /// Outputs in today's types: each file gets the mode a restore gave it
    /// before format 7, 0o755 if executable, else 0o644.
    pub(super) fn outputs_today(outputs: Vec<OutputRecord>) -> Vec<record::OutputRecord> {
        outputs
            .into_iter()
            .map(|output| record::OutputRecord {
                partition: output.partition,
                digest: output.digest,
                files: output
                    .files
                    .into_iter()
                    .map(|file| record::FileEntry {
                        path: file.path,
                        executable: file.executable,
                        size: file.size,
                        digest: file.digest,
                        mode: if file.executable { 0o755 } else { 0o644 },
                    })
                    .collect(),
            })
            .collect()
    }

    #[derive(Debug, Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct Manifest {
        pub key: ActionKey,
        pub job: String,
        pub outputs: Vec<OutputRecord>,
        pub inputs: Vec<InputRecord>,
        pub code_digest: Option<ContentDigest>,
        pub versions: Vec<(String, String)>,
        pub build: u64,
        pub started_ms: u64,
        pub finished_ms: u64,
        pub stdout: Option<ContentDigest>,
        pub stderr: Option<ContentDigest>,
    }

    impl From<Manifest> for record::Manifest {
        /// Before format 4 the command was not recorded: explanations that
        /// compare with it fall back to a general reason.
        fn from(old: Manifest) -> record::Manifest {
            record::Manifest {
                key: old.key,
                job: old.job,
                outputs: outputs_today(old.outputs),
                inputs: old.inputs,
                code_digest: old.code_digest,
                versions: old.versions,
                build: old.build,
                started_ms: old.started_ms,
                finished_ms: old.finished_ms,
                stdout: old.stdout,
                stderr: old.stderr,
                command: None,
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct Event {
        pub seq: u64,
        pub time_ms: u64,
        pub build: u64,
        pub kind: EventKind,
    }

    /// Variant order is the format: it must stay as it was.
    #[derive(Debug, Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) enum EventKind {
        BuildRequested {
            requested: Vec<String>,
            command: String,
            reason: Option<String>,
        },
        Planned {
            actions: u64,
            sources: u64,
        },
        DatasetVersionChanged {
            dataset: String,
            from: Option<String>,
            to: Option<String>,
        },
        ActionStarted {
            key: ActionKey,
            job: String,
            outputs: Vec<PartitionRef>,
            reason: String,
            attempt: u32,
            resumed_from: Option<u64>,
        },
        ActionCheckpointed {
            key: ActionKey,
            job: String,
            sequence: u64,
            digest: ContentDigest,
            size: u64,
        },
        ActionSucceeded {
            manifest: Manifest,
        },
        ActionFailed {
            key: ActionKey,
            job: String,
            outputs: Vec<PartitionRef>,
            error: String,
            exit_code: Option<i32>,
            stdout: Option<ContentDigest>,
            stderr: Option<ContentDigest>,
        },
        ActionCached {
            key: ActionKey,
            job: String,
            outputs: Vec<PartitionRef>,
            built_by: u64,
            restored: bool,
        },
        ActionSkipped {
            job: String,
            outputs: Vec<PartitionRef>,
            reason: String,
        },
        PartitionMaterialized {
            partition: PartitionRef,
            digest: ContentDigest,
            key: ActionKey,
        },
        PartitionInvalidated {
            partition: PartitionRef,
            reason: String,
            by: Option<String>,
        },
        BuildFinished {
            counts: BuildCounts,
            interrupted: bool,
        },
        DefsRefreshed {
            source: String,
            digest: ContentDigest,
            values: u64,
        },
    }

    impl From<Event> for record::Event {
        fn from(event: Event) -> record::Event {
            use record::EventKind as Now;
            let kind = match event.kind {
                EventKind::BuildRequested {
                    requested,
                    command,
                    reason,
                } => Now::BuildRequested {
                    requested,
                    command,
                    reason,
                    submission: None,
                },
                EventKind::Planned { actions, sources } => Now::Planned { actions, sources },
                EventKind::DatasetVersionChanged { dataset, from, to } => {
                    Now::DatasetVersionChanged { dataset, from, to }
                }
                EventKind::ActionStarted {
                    key,
                    job,
                    outputs,
                    reason,
                    attempt,
                    resumed_from,
                } => Now::ActionStarted {
                    key,
                    job,
                    outputs,
                    reason,
                    attempt,
                    resumed_from,
                },
                EventKind::ActionCheckpointed {
                    key,
                    job,
                    sequence,
                    digest,
                    size,
                } => Now::ActionCheckpointed {
                    key,
                    job,
                    sequence,
                    digest,
                    size,
                },
                EventKind::ActionSucceeded { manifest } => Now::ActionSucceeded {
                    manifest: manifest.into(),
                },
                EventKind::ActionFailed {
                    key,
                    job,
                    outputs,
                    error,
                    exit_code,
                    stdout,
                    stderr,
                } => Now::ActionFailed {
                    key: super::known_key(key),
                    job,
                    outputs,
                    error,
                    exit_code,
                    stdout,
                    stderr,
                },
                EventKind::ActionCached {
                    key,
                    job,
                    outputs,
                    built_by,
                    restored,
                } => Now::ActionCached {
                    key,
                    job,
                    outputs,
                    built_by,
                    restored,
                    remote: None,
                },
                EventKind::ActionSkipped {
                    job,
                    outputs,
                    reason,
                } => Now::ActionSkipped {
                    job,
                    outputs,
                    reason,
                },
                EventKind::PartitionMaterialized {
                    partition,
                    digest,
                    key,
                } => Now::PartitionMaterialized {
                    partition,
                    digest,
                    key,
                },
                EventKind::PartitionInvalidated {
                    partition,
                    reason,
                    by,
                } => Now::PartitionInvalidated {
                    partition,
                    reason,
                    by,
                },
                EventKind::BuildFinished {
                    counts,
                    interrupted,
                } => Now::BuildFinished {
                    counts: counts.into(),
                    interrupted,
                },
                EventKind::DefsRefreshed {
                    source,
                    digest,
                    values,
                } => Now::DefsRefreshed {
                    source,
                    digest,
                    values,
                },
            };
            record::Event {
                seq: event.seq,
                time_ms: event.time_ms,
                build: event.build,
                kind,
            }
        }
    }
}

/// Format 4 to 6 events, as cairn wrote them before format 7 gave each
/// file of a manifest its `mode`, and their reading in today's types.
/// Generic over the manifest `M` ([`super::v6::Manifest`] in all three)
/// and the failure key `K` (an all-zero [`ActionKey`] when unknown in
/// format 4, an `Option<ActionKey>` since format 5); `PartitionPruned`,
/// appended in format 6, is refused in older ones by [`decode_event`].
/// Nothing else differs between them. Frozen: never change these types.
mod v4 {
    use super::Counts as BuildCounts;
    use super::FailedKey;
    use cairn_engine::record;
    use cairn_engine::{ActionKey, ContentDigest, PartitionRef};
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct Event<M, K> {
        pub seq: u64,
        pub time_ms: u64,
        pub build: u64,
        pub kind: EventKind<M, K>,
    }

    /// Variant order is the format: it must stay as it was.
    #[derive(Debug, Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) enum EventKind<M, K> {
        BuildRequested {
            requested: Vec<String>,
            command: String,
            reason: Option<String>,
        },
        Planned {
            actions: u64,
            sources: u64,
        },
        DatasetVersionChanged {
            dataset: String,
            from: Option<String>,
            to: Option<String>,
        },
        ActionStarted {
            key: ActionKey,
            job: String,
            outputs: Vec<PartitionRef>,
            reason: String,
            attempt: u32,
            resumed_from: Option<u64>,
        },
        ActionCheckpointed {
            key: ActionKey,
            job: String,
            sequence: u64,
            digest: ContentDigest,
            size: u64,
        },
        ActionSucceeded {
            manifest: M,
        },
        ActionFailed {
            key: K,
            job: String,
            outputs: Vec<PartitionRef>,
            error: String,
            exit_code: Option<i32>,
            stdout: Option<ContentDigest>,
            stderr: Option<ContentDigest>,
        },
        ActionCached {
            key: ActionKey,
            job: String,
            outputs: Vec<PartitionRef>,
            built_by: u64,
            restored: bool,
        },
        ActionSkipped {
            job: String,
            outputs: Vec<PartitionRef>,
            reason: String,
        },
        PartitionMaterialized {
            partition: PartitionRef,
            digest: ContentDigest,
            key: ActionKey,
        },
        PartitionInvalidated {
            partition: PartitionRef,
            reason: String,
            by: Option<String>,
        },
        BuildFinished {
            counts: BuildCounts,
            interrupted: bool,
        },
        DefsRefreshed {
            source: String,
            digest: ContentDigest,
            values: u64,
        },
        PartitionPruned {
            partition: PartitionRef,
            reason: String,
            by: Option<String>,
        },
    }

    impl<M: Into<record::Manifest>, K: FailedKey> From<Event<M, K>> for record::Event {
        fn from(event: Event<M, K>) -> record::Event {
            use record::EventKind as Now;
            let kind = match event.kind {
                EventKind::BuildRequested {
                    requested,
                    command,
                    reason,
                } => Now::BuildRequested {
                    requested,
                    command,
                    reason,
                    submission: None,
                },
                EventKind::Planned { actions, sources } => Now::Planned { actions, sources },
                EventKind::DatasetVersionChanged { dataset, from, to } => {
                    Now::DatasetVersionChanged { dataset, from, to }
                }
                EventKind::ActionStarted {
                    key,
                    job,
                    outputs,
                    reason,
                    attempt,
                    resumed_from,
                } => Now::ActionStarted {
                    key,
                    job,
                    outputs,
                    reason,
                    attempt,
                    resumed_from,
                },
                EventKind::ActionCheckpointed {
                    key,
                    job,
                    sequence,
                    digest,
                    size,
                } => Now::ActionCheckpointed {
                    key,
                    job,
                    sequence,
                    digest,
                    size,
                },
                EventKind::ActionSucceeded { manifest } => Now::ActionSucceeded {
                    manifest: manifest.into(),
                },
                EventKind::ActionFailed {
                    key,
                    job,
                    outputs,
                    error,
                    exit_code,
                    stdout,
                    stderr,
                } => Now::ActionFailed {
                    key: key.known(),
                    job,
                    outputs,
                    error,
                    exit_code,
                    stdout,
                    stderr,
                },
                EventKind::ActionCached {
                    key,
                    job,
                    outputs,
                    built_by,
                    restored,
                } => Now::ActionCached {
                    key,
                    job,
                    outputs,
                    built_by,
                    restored,
                    remote: None,
                },
                EventKind::ActionSkipped {
                    job,
                    outputs,
                    reason,
                } => Now::ActionSkipped {
                    job,
                    outputs,
                    reason,
                },
                EventKind::PartitionMaterialized {
                    partition,
                    digest,
                    key,
                } => Now::PartitionMaterialized {
                    partition,
                    digest,
                    key,
                },
                EventKind::PartitionInvalidated {
                    partition,
                    reason,
                    by,
                } => Now::PartitionInvalidated {
                    partition,
                    reason,
                    by,
                },
                EventKind::BuildFinished {
                    counts,
                    interrupted,
                } => Now::BuildFinished {
                    counts: counts.into(),
                    interrupted,
                },
                EventKind::DefsRefreshed {
                    source,
                    digest,
                    values,
                } => Now::DefsRefreshed {
                    source,
                    digest,
                    values,
                },
                EventKind::PartitionPruned {
                    partition,
                    reason,
                    by,
                } => Now::PartitionPruned {
                    partition,
                    reason,
                    by,
                },
            };
            record::Event {
                seq: event.seq,
                time_ms: event.time_ms,
                build: event.build,
                kind,
            }
        }
    }
}

/// The `BuildRequested` events of formats 10 and 11, and the submission
/// of formats 9 to 11, as cairn wrote them before format 12 gave the
/// submission its `submitted_by`, `submitted_ms` and `expected`. The other
/// kinds of formats 10 and 11 are today's: [`decode`] reads the variant
/// first and only a `BuildRequested` goes through the frozen type.
/// Frozen: never change these types.
mod v11 {
    use cairn_engine::record;
    use serde::Deserialize;

    use super::DecodeError;

    #[derive(Debug, Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct Submission {
        pub operation: String,
        pub idempotency_key: Option<String>,
        pub body_digest: [u8; 32],
    }

    impl From<Submission> for record::Submission {
        fn from(old: Submission) -> record::Submission {
            record::Submission {
                operation: old.operation,
                idempotency_key: old.idempotency_key,
                body_digest: old.body_digest,
                submitted_by: None,
                submitted_ms: 0,
                expected: None,
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct Event {
        pub seq: u64,
        pub time_ms: u64,
        pub build: u64,
        pub kind: EventKind,
    }

    /// Variant 0 of the event kinds, as it was: the only one that changed.
    #[derive(Debug, Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) enum EventKind {
        BuildRequested {
            requested: Vec<String>,
            command: String,
            reason: Option<String>,
            submission: Option<Submission>,
        },
    }

    /// A format-10 or -11 event's body: postcard writes the event's three
    /// numbers and then its kind's variant index, all varints, so the
    /// index says which layout follows.
    pub(super) fn decode(body: &[u8]) -> Result<record::Event, DecodeError> {
        let (_, variant): ((u64, u64, u64), u32) = postcard::take_from_bytes(body)
            .map(|(header, _)| header)
            .map_err(|error| DecodeError::Malformed(error.to_string()))?;
        if variant != 0 {
            return super::decode_body(body);
        }
        let event: Event = super::decode_body(body)?;
        let EventKind::BuildRequested {
            requested,
            command,
            reason,
            submission,
        } = event.kind;
        Ok(record::Event {
            seq: event.seq,
            time_ms: event.time_ms,
            build: event.build,
            kind: record::EventKind::BuildRequested {
                requested,
                command,
                reason,
                submission: submission.map(record::Submission::from),
            },
        })
    }
}

/// Format 7 and 8 events, as cairn wrote them before format 9 gave
/// `BuildRequested` its `submission`, the counts their `joined`, and
/// appended `ActionJoined`: the format-4 events ([`super::v4`]) with
/// `ActionRetrying` appended (format 8; refused under byte 7 by
/// [`decode_event`]), read with today's manifest and an optional failure
/// key. Frozen: never change these types.
/// Format 9 events, as cairn wrote them before format 10 gave
/// `ActionCached` its `remote` and appended `RemoteRefused` and
/// `ActionUploaded`, and their reading in today's types (a format-7 or -8
/// event goes through [`v8`]). Frozen: never change these types.
mod v9 {
    use super::v11::Submission;
    use cairn_engine::record::{self, BuildCounts, Manifest};
    use cairn_engine::{ActionKey, ContentDigest, PartitionRef};
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct Event {
        pub seq: u64,
        pub time_ms: u64,
        pub build: u64,
        pub kind: EventKind,
    }

    /// Variant order is the format: it must stay as it was.
    #[derive(Debug, Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) enum EventKind {
        BuildRequested {
            requested: Vec<String>,
            command: String,
            reason: Option<String>,
            submission: Option<Submission>,
        },
        Planned {
            actions: u64,
            sources: u64,
        },
        DatasetVersionChanged {
            dataset: String,
            from: Option<String>,
            to: Option<String>,
        },
        ActionStarted {
            key: ActionKey,
            job: String,
            outputs: Vec<PartitionRef>,
            reason: String,
            attempt: u32,
            resumed_from: Option<u64>,
        },
        ActionCheckpointed {
            key: ActionKey,
            job: String,
            sequence: u64,
            digest: ContentDigest,
            size: u64,
        },
        ActionSucceeded {
            manifest: Manifest,
        },
        ActionFailed {
            key: Option<ActionKey>,
            job: String,
            outputs: Vec<PartitionRef>,
            error: String,
            exit_code: Option<i32>,
            stdout: Option<ContentDigest>,
            stderr: Option<ContentDigest>,
        },
        ActionCached {
            key: ActionKey,
            job: String,
            outputs: Vec<PartitionRef>,
            built_by: u64,
            restored: bool,
        },
        ActionSkipped {
            job: String,
            outputs: Vec<PartitionRef>,
            reason: String,
        },
        PartitionMaterialized {
            partition: PartitionRef,
            digest: ContentDigest,
            key: ActionKey,
        },
        PartitionInvalidated {
            partition: PartitionRef,
            reason: String,
            by: Option<String>,
        },
        BuildFinished {
            counts: BuildCounts,
            interrupted: bool,
        },
        DefsRefreshed {
            source: String,
            digest: ContentDigest,
            values: u64,
        },
        PartitionPruned {
            partition: PartitionRef,
            reason: String,
            by: Option<String>,
        },
        ActionRetrying {
            key: ActionKey,
            job: String,
            outputs: Vec<PartitionRef>,
            attempt: u32,
            delay_ms: u64,
        },
        ActionJoined {
            key: ActionKey,
            job: String,
            outputs: Vec<PartitionRef>,
            joined_build: u64,
        },
    }

    impl From<Event> for record::Event {
        fn from(event: Event) -> record::Event {
            use record::EventKind as Now;
            let kind = match event.kind {
                EventKind::BuildRequested {
                    requested,
                    command,
                    reason,
                    submission,
                } => Now::BuildRequested {
                    requested,
                    command,
                    reason,
                    submission: submission.map(record::Submission::from),
                },
                EventKind::Planned { actions, sources } => Now::Planned { actions, sources },
                EventKind::DatasetVersionChanged { dataset, from, to } => {
                    Now::DatasetVersionChanged { dataset, from, to }
                }
                EventKind::ActionStarted {
                    key,
                    job,
                    outputs,
                    reason,
                    attempt,
                    resumed_from,
                } => Now::ActionStarted {
                    key,
                    job,
                    outputs,
                    reason,
                    attempt,
                    resumed_from,
                },
                EventKind::ActionCheckpointed {
                    key,
                    job,
                    sequence,
                    digest,
                    size,
                } => Now::ActionCheckpointed {
                    key,
                    job,
                    sequence,
                    digest,
                    size,
                },
                EventKind::ActionSucceeded { manifest } => Now::ActionSucceeded { manifest },
                EventKind::ActionFailed {
                    key,
                    job,
                    outputs,
                    error,
                    exit_code,
                    stdout,
                    stderr,
                } => Now::ActionFailed {
                    key,
                    job,
                    outputs,
                    error,
                    exit_code,
                    stdout,
                    stderr,
                },
                EventKind::ActionCached {
                    key,
                    job,
                    outputs,
                    built_by,
                    restored,
                } => Now::ActionCached {
                    key,
                    job,
                    outputs,
                    built_by,
                    restored,
                    remote: None,
                },
                EventKind::ActionSkipped {
                    job,
                    outputs,
                    reason,
                } => Now::ActionSkipped {
                    job,
                    outputs,
                    reason,
                },
                EventKind::PartitionMaterialized {
                    partition,
                    digest,
                    key,
                } => Now::PartitionMaterialized {
                    partition,
                    digest,
                    key,
                },
                EventKind::PartitionInvalidated {
                    partition,
                    reason,
                    by,
                } => Now::PartitionInvalidated {
                    partition,
                    reason,
                    by,
                },
                EventKind::BuildFinished {
                    counts,
                    interrupted,
                } => Now::BuildFinished {
                    counts,
                    interrupted,
                },
                EventKind::DefsRefreshed {
                    source,
                    digest,
                    values,
                } => Now::DefsRefreshed {
                    source,
                    digest,
                    values,
                },
                EventKind::PartitionPruned {
                    partition,
                    reason,
                    by,
                } => Now::PartitionPruned {
                    partition,
                    reason,
                    by,
                },
                EventKind::ActionRetrying {
                    key,
                    job,
                    outputs,
                    attempt,
                    delay_ms,
                } => Now::ActionRetrying {
                    key,
                    job,
                    outputs,
                    attempt,
                    delay_ms,
                },
                EventKind::ActionJoined {
                    key,
                    job,
                    outputs,
                    joined_build,
                } => Now::ActionJoined {
                    key,
                    job,
                    outputs,
                    joined_build,
                },
            };
            record::Event {
                seq: event.seq,
                time_ms: event.time_ms,
                build: event.build,
                kind,
            }
        }
    }
}

mod v8 {
    use super::Counts as BuildCounts;
    use super::FailedKey;
    use cairn_engine::record;
    use cairn_engine::{ActionKey, ContentDigest, PartitionRef};
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct Event<M, K> {
        pub seq: u64,
        pub time_ms: u64,
        pub build: u64,
        pub kind: EventKind<M, K>,
    }

    /// Variant order is the format: it must stay as it was.
    #[derive(Debug, Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) enum EventKind<M, K> {
        BuildRequested {
            requested: Vec<String>,
            command: String,
            reason: Option<String>,
        },
        Planned {
            actions: u64,
            sources: u64,
        },
        DatasetVersionChanged {
            dataset: String,
            from: Option<String>,
            to: Option<String>,
        },
        ActionStarted {
            key: ActionKey,
            job: String,
            outputs: Vec<PartitionRef>,
            reason: String,
            attempt: u32,
            resumed_from: Option<u64>,
        },
        ActionCheckpointed {
            key: ActionKey,
            job: String,
            sequence: u64,
            digest: ContentDigest,
            size: u64,
        },
        ActionSucceeded {
            manifest: M,
        },
        ActionFailed {
            key: K,
            job: String,
            outputs: Vec<PartitionRef>,
            error: String,
            exit_code: Option<i32>,
            stdout: Option<ContentDigest>,
            stderr: Option<ContentDigest>,
        },
        ActionCached {
            key: ActionKey,
            job: String,
            outputs: Vec<PartitionRef>,
            built_by: u64,
            restored: bool,
        },
        ActionSkipped {
            job: String,
            outputs: Vec<PartitionRef>,
            reason: String,
        },
        PartitionMaterialized {
            partition: PartitionRef,
            digest: ContentDigest,
            key: ActionKey,
        },
        PartitionInvalidated {
            partition: PartitionRef,
            reason: String,
            by: Option<String>,
        },
        BuildFinished {
            counts: BuildCounts,
            interrupted: bool,
        },
        DefsRefreshed {
            source: String,
            digest: ContentDigest,
            values: u64,
        },
        PartitionPruned {
            partition: PartitionRef,
            reason: String,
            by: Option<String>,
        },
        ActionRetrying {
            key: ActionKey,
            job: String,
            outputs: Vec<PartitionRef>,
            attempt: u32,
            delay_ms: u64,
        },
    }

    impl<M: Into<record::Manifest>, K: FailedKey> From<Event<M, K>> for record::Event {
        fn from(event: Event<M, K>) -> record::Event {
            use record::EventKind as Now;
            let kind = match event.kind {
                EventKind::BuildRequested {
                    requested,
                    command,
                    reason,
                } => Now::BuildRequested {
                    requested,
                    command,
                    reason,
                    submission: None,
                },
                EventKind::Planned { actions, sources } => Now::Planned { actions, sources },
                EventKind::DatasetVersionChanged { dataset, from, to } => {
                    Now::DatasetVersionChanged { dataset, from, to }
                }
                EventKind::ActionStarted {
                    key,
                    job,
                    outputs,
                    reason,
                    attempt,
                    resumed_from,
                } => Now::ActionStarted {
                    key,
                    job,
                    outputs,
                    reason,
                    attempt,
                    resumed_from,
                },
                EventKind::ActionCheckpointed {
                    key,
                    job,
                    sequence,
                    digest,
                    size,
                } => Now::ActionCheckpointed {
                    key,
                    job,
                    sequence,
                    digest,
                    size,
                },
                EventKind::ActionSucceeded { manifest } => Now::ActionSucceeded {
                    manifest: manifest.into(),
                },
                EventKind::ActionFailed {
                    key,
                    job,
                    outputs,
                    error,
                    exit_code,
                    stdout,
                    stderr,
                } => Now::ActionFailed {
                    key: key.known(),
                    job,
                    outputs,
                    error,
                    exit_code,
                    stdout,
                    stderr,
                },
                EventKind::ActionCached {
                    key,
                    job,
                    outputs,
                    built_by,
                    restored,
                } => Now::ActionCached {
                    key,
                    job,
                    outputs,
                    built_by,
                    restored,
                    remote: None,
                },
                EventKind::ActionSkipped {
                    job,
                    outputs,
                    reason,
                } => Now::ActionSkipped {
                    job,
                    outputs,
                    reason,
                },
                EventKind::PartitionMaterialized {
                    partition,
                    digest,
                    key,
                } => Now::PartitionMaterialized {
                    partition,
                    digest,
                    key,
                },
                EventKind::PartitionInvalidated {
                    partition,
                    reason,
                    by,
                } => Now::PartitionInvalidated {
                    partition,
                    reason,
                    by,
                },
                EventKind::BuildFinished {
                    counts,
                    interrupted,
                } => Now::BuildFinished {
                    counts: counts.into(),
                    interrupted,
                },
                EventKind::DefsRefreshed {
                    source,
                    digest,
                    values,
                } => Now::DefsRefreshed {
                    source,
                    digest,
                    values,
                },
                EventKind::PartitionPruned {
                    partition,
                    reason,
                    by,
                } => Now::PartitionPruned {
                    partition,
                    reason,
                    by,
                },
                EventKind::ActionRetrying {
                    key,
                    job,
                    outputs,
                    attempt,
                    delay_ms,
                } => Now::ActionRetrying {
                    key,
                    job,
                    outputs,
                    attempt,
                    delay_ms,
                },
            };
            record::Event {
                seq: event.seq,
                time_ms: event.time_ms,
                build: event.build,
                kind,
            }
        }
    }
}

/// Format 4 to 6 manifests, as cairn wrote them before format 7 gave each
/// file its `mode`, and their reading in today's types. Frozen: never
/// change these types.
mod v6 {
    use cairn_engine::record::{self, CommandRecord, InputRecord};
    use cairn_engine::{ActionKey, ContentDigest};
    use serde::Deserialize;

    use super::v3::{OutputRecord, outputs_today};

    #[derive(Debug, Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct Manifest {
        pub key: ActionKey,
        pub job: String,
        pub outputs: Vec<OutputRecord>,
        pub inputs: Vec<InputRecord>,
        pub code_digest: Option<ContentDigest>,
        pub versions: Vec<(String, String)>,
        pub build: u64,
        pub started_ms: u64,
        pub finished_ms: u64,
        pub stdout: Option<ContentDigest>,
        pub stderr: Option<ContentDigest>,
        pub command: Option<Box<CommandRecord>>,
    }

    impl From<Manifest> for record::Manifest {
        fn from(old: Manifest) -> record::Manifest {
            record::Manifest {
                key: old.key,
                job: old.job,
                outputs: outputs_today(old.outputs),
                inputs: old.inputs,
                code_digest: old.code_digest,
                versions: old.versions,
                build: old.build,
                started_ms: old.started_ms,
                finished_ms: old.finished_ms,
                stdout: old.stdout,
                stderr: old.stderr,
                command: old.command,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_engine::record::{
        BuildCounts, CommandRecord, EventKind, FileEntry, InputRecord, Materialization,
        OutputRecord, ProgramRecord,
    };
    use cairn_engine::{ActionKey, ContentDigest, PartitionRef};
    use proptest::prelude::*;

    fn partition(text: &str) -> PartitionRef {
        PartitionRef::parse(text).unwrap()
    }

    fn manifest() -> Manifest {
        Manifest {
            key: ActionKey([7; 32]),
            job: "clean".into(),
            outputs: vec![OutputRecord {
                partition: partition("clean/date=2024-01-01"),
                digest: ContentDigest::of(b"partition"),
                files: vec![FileEntry {
                    path: "part-0.csv".into(),
                    executable: false,
                    size: 4,
                    digest: ContentDigest::of(b"data"),
                    mode: 0o640,
                }],
            }],
            inputs: vec![InputRecord {
                partition: partition("raw/date=2024-01-01"),
                digest: ContentDigest::of(b"raw"),
            }],
            code_digest: Some(ContentDigest::of(b"code")),
            versions: vec![("clean".into(), "1.2.0".into())],
            build: 3,
            started_ms: 1_700_000_000_000,
            finished_ms: 1_700_000_000_500,
            stdout: None,
            stderr: Some(ContentDigest::of(b"stderr")),
            command: Some(Box::new(CommandRecord {
                run: vec!["sh".into(), "jobs/clean.sh".into()],
                args: vec!["2024-01-01".into()],
                env: vec![("MODE".into(), "fast".into())],
                passed_env: vec![("LANG".into(), "C".into())],
                program: ProgramRecord {
                    path: "/usr/bin/sh".into(),
                    digest: Some(ContentDigest::of(b"dash")),
                },
            })),
        }
    }

    /// [`manifest`]'s outputs as formats 1 to 6 wrote them (no modes).
    fn old_outputs() -> Vec<v3::OutputRecord> {
        manifest()
            .outputs
            .into_iter()
            .map(|output| v3::OutputRecord {
                partition: output.partition,
                digest: output.digest,
                files: output
                    .files
                    .into_iter()
                    .map(|file| v3::FileEntry {
                        path: file.path,
                        executable: file.executable,
                        size: file.size,
                        digest: file.digest,
                    })
                    .collect(),
            })
            .collect()
    }

    /// [`manifest`] with the mode its 0o640 file reads with from a format 1
    /// to 6 record: 0o644, what a restore gave a non-executable file then.
    fn manifest_without_modes() -> Manifest {
        let mut expected = manifest();
        expected.outputs[0].files[0].mode = 0o644;
        expected
    }

    /// [`manifest`] as formats 4 and 5 wrote it (a command, no modes).
    fn format_6_manifest() -> v6::Manifest {
        let today = manifest();
        v6::Manifest {
            key: today.key,
            job: today.job,
            outputs: old_outputs(),
            inputs: today.inputs,
            code_digest: today.code_digest,
            versions: today.versions,
            build: today.build,
            started_ms: today.started_ms,
            finished_ms: today.finished_ms,
            stdout: today.stdout,
            stderr: today.stderr,
            command: today.command,
        }
    }

    /// [`manifest`] as formats 1 to 3 wrote it (no command, no modes).
    fn old_manifest() -> v3::Manifest {
        let today = manifest();
        v3::Manifest {
            key: today.key,
            job: today.job,
            outputs: old_outputs(),
            inputs: today.inputs,
            code_digest: today.code_digest,
            versions: today.versions,
            build: today.build,
            started_ms: today.started_ms,
            finished_ms: today.finished_ms,
            stdout: today.stdout,
            stderr: today.stderr,
        }
    }

    /// [`manifest`] as today's cairn reads a format 1 to 3 one.
    fn read_old_manifest() -> Manifest {
        Manifest {
            command: None,
            ..manifest_without_modes()
        }
    }

    fn events() -> Vec<Event> {
        let kinds = vec![
            EventKind::BuildRequested {
                requested: vec!["daily/date=2024-01-31".into()],
                command: "build".into(),
                reason: Some("#1234 recompute".into()),
                submission: None,
            },
            EventKind::ActionSucceeded {
                manifest: manifest(),
            },
            EventKind::ActionFailed {
                key: Some(ActionKey([9; 32])),
                job: "daily".into(),
                outputs: vec![partition("daily/date=2024-01-31")],
                error: "exited with status 1".into(),
                exit_code: Some(1),
                stdout: None,
                stderr: None,
            },
            EventKind::PartitionInvalidated {
                partition: partition("raw/date=2024-01-01"),
                reason: "bad upstream file".into(),
                by: None,
            },
            EventKind::BuildFinished {
                counts: BuildCounts {
                    executed: 2,
                    cached: 5,
                    failed: 1,
                    skipped: 0,
                    joined: 0,
                },
                interrupted: false,
            },
        ];
        kinds
            .into_iter()
            .enumerate()
            .map(|(index, kind)| Event {
                seq: index as u64 + 1,
                time_ms: 1_700_000_000_000 + index as u64,
                build: 3,
                kind,
            })
            .collect()
    }

    #[test]
    fn a_pruned_partition_event_round_trips_at_todays_format() {
        let event = Event {
            seq: 3,
            time_ms: 0,
            build: 3,
            kind: EventKind::PartitionPruned {
                partition: partition("clean/date=2024-01-01"),
                reason: "again".into(),
                by: Some("ana".into()),
            },
        };
        let bytes = encode_event(&event);
        assert_eq!(decode_event(&bytes).unwrap(), event);
    }

    #[test]
    fn events_round_trip() {
        for event in events() {
            let bytes = encode_event(&event);
            assert_eq!(bytes[0], FORMAT_BYTE);
            assert_eq!(decode_event(&bytes).unwrap(), event);
        }
    }

    #[test]
    fn other_records_round_trip() {
        let manifest = manifest();
        assert_eq!(
            decode_manifest(&encode_manifest(&manifest)).unwrap(),
            manifest
        );
        let state = PartitionState {
            current: Some(Materialization {
                key: ActionKey([1; 32]),
                digest: ContentDigest::of(b"x"),
                build: 2,
                seq: 40,
            }),
            invalidated: Some(cairn_engine::record::Invalidation {
                reason: "why".into(),
                by: None,
                time_ms: 0,
                seq: 0,
            }),
            failed: Some((3, "boom".into())),
        };
        assert_eq!(
            decode_partition_state(&encode_partition_state(&state)).unwrap(),
            state
        );
        let entry = StatEntry {
            size: 12,
            mtime_ns: -5,
            ctime_ns: 1_700_000_000_000_000_000,
            inode: 99,
            recorded_ns: 1_700_000_000_000_000_001,
            digest: ContentDigest::of(b"file"),
        };
        assert_eq!(
            decode_stat_entry(&encode_stat_entry(&entry)).unwrap(),
            entry
        );
    }

    #[test]
    fn format_byte_and_framing_are_checked() {
        let mut bytes = encode_event(&events()[0]);
        assert_eq!(decode_event(&[]), Err(DecodeError::Empty));

        bytes[0] = FORMAT_BYTE + 1;
        assert_eq!(
            decode_event(&bytes),
            Err(DecodeError::NewerFormat {
                found: FORMAT_BYTE + 1
            })
        );
        assert_eq!(
            DecodeError::NewerFormat {
                found: FORMAT_BYTE + 1
            }
            .to_string(),
            format!(
                "the record has format {}, newer than this cairn reads (up to {FORMAT_VERSION})",
                FORMAT_BYTE + 1
            )
        );
        bytes[0] = 0;
        assert_eq!(
            decode_event(&bytes),
            Err(DecodeError::UnknownFormat { found: 0 })
        );
        bytes[0] = FORMAT_BYTE;

        bytes.push(0);
        assert_eq!(decode_event(&bytes), Err(DecodeError::TrailingBytes(1)));
        bytes.truncate(bytes.len() - 3);
        assert!(matches!(
            decode_event(&bytes),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn an_invalid_partition_ref_is_refused() {
        let mut event = events()[3].clone();
        let EventKind::PartitionInvalidated { reason, .. } = &mut event.kind else {
            unreachable!()
        };
        reason.clear();
        let bytes = encode_event(&event);
        // Swap the ref text "raw/date=..." for "../date=..." of the same length.
        let start = bytes
            .windows(3)
            .position(|window| window == b"raw")
            .unwrap();
        let mut tampered = bytes;
        tampered[start..start + 3].copy_from_slice(b"../");
        assert!(matches!(
            decode_event(&tampered),
            Err(DecodeError::Malformed(_))
        ));
    }

    /// A format-1 record: byte 1, then the postcard of the frozen v1 types.
    fn v1_bytes(event: &v1::Event) -> Vec<u8> {
        postcard::to_extend(event, vec![1]).unwrap()
    }

    #[test]
    fn format_1_events_are_read_in_todays_types() {
        let key = ActionKey([4; 32]);
        let outputs = vec![partition("clean/date=2024-01-01")];
        let old = |seq, kind| v1::Event {
            seq,
            time_ms: 1_700_000_000_000,
            build: 2,
            kind,
        };
        let started = v1_bytes(&old(
            1,
            v1::EventKind::ActionStarted {
                key,
                job: "clean".into(),
                outputs: outputs.clone(),
                reason: "never built".into(),
            },
        ));
        assert_eq!(
            decode_event(&started).unwrap(),
            Event {
                seq: 1,
                time_ms: 1_700_000_000_000,
                build: 2,
                kind: EventKind::ActionStarted {
                    key,
                    job: "clean".into(),
                    outputs,
                    reason: "never built".into(),
                    attempt: 1,
                    resumed_from: None,
                },
            }
        );
        // Variants after ActionStarted were renumbered in format 2.
        let succeeded = v1_bytes(&old(
            2,
            v1::EventKind::ActionSucceeded {
                manifest: old_manifest(),
            },
        ));
        assert_eq!(
            decode_event(&succeeded).unwrap().kind,
            EventKind::ActionSucceeded {
                manifest: read_old_manifest()
            }
        );
        let finished = v1_bytes(&old(
            3,
            v1::EventKind::BuildFinished {
                counts: Counts {
                    executed: 0,
                    cached: 0,
                    failed: 0,
                    skipped: 0,
                },
                interrupted: true,
            },
        ));
        assert_eq!(
            decode_event(&finished).unwrap().kind,
            EventKind::BuildFinished {
                counts: BuildCounts::default(),
                interrupted: true,
            }
        );
        // The same bytes under today's byte are not a valid event.
        let mut relabelled = started;
        relabelled[0] = FORMAT_BYTE;
        assert!(decode_event(&relabelled).is_err());
        // A format-1 manifest has no command.
        let old_bytes = postcard::to_extend(&old_manifest(), vec![1]).unwrap();
        assert_eq!(decode_manifest(&old_bytes).unwrap(), read_old_manifest());
    }

    /// Formats 2 and 3 wrote events in today's layout but for the manifest,
    /// which had no command: both are read through the frozen `v3` types.
    #[test]
    fn format_2_and_3_events_and_manifests_are_read_in_todays_types() {
        for byte in [2u8, 3] {
            let manifest_bytes = postcard::to_extend(&old_manifest(), vec![byte]).unwrap();
            assert_eq!(
                decode_manifest(&manifest_bytes).unwrap(),
                read_old_manifest()
            );
            let succeeded = v3::Event {
                seq: 5,
                time_ms: 1_700_000_000_000,
                build: 2,
                kind: v3::EventKind::ActionSucceeded {
                    manifest: old_manifest(),
                },
            };
            let bytes = postcard::to_extend(&succeeded, vec![byte]).unwrap();
            assert_eq!(
                decode_event(&bytes).unwrap().kind,
                EventKind::ActionSucceeded {
                    manifest: read_old_manifest()
                }
            );
            // Variants after it keep their numbers.
            let refreshed = v3::Event {
                seq: 6,
                time_ms: 1_700_000_000_001,
                build: 2,
                kind: v3::EventKind::DefsRefreshed {
                    source: "stations".into(),
                    digest: ContentDigest::of(b"defs"),
                    values: 2,
                },
            };
            let bytes = postcard::to_extend(&refreshed, vec![byte]).unwrap();
            assert_eq!(
                decode_event(&bytes).unwrap().kind,
                EventKind::DefsRefreshed {
                    source: "stations".into(),
                    digest: ContentDigest::of(b"defs"),
                    values: 2,
                }
            );
            // The old layout under today's byte is not a valid manifest.
            let mut relabelled = manifest_bytes;
            relabelled[0] = FORMAT_BYTE;
            assert!(decode_manifest(&relabelled).is_err());
        }
    }

    /// Every format before 5 wrote an all-zero key for an action that
    /// failed before it had one: it reads as none; a real key as itself.
    #[test]
    fn failures_without_a_key_read_as_none_from_every_older_format() {
        let outputs = vec![partition("clean/date=2024-01-01")];
        let key_of = |bytes: &[u8]| match decode_event(bytes).unwrap().kind {
            EventKind::ActionFailed { key, .. } => key,
            other => panic!("{other:?}"),
        };
        for (key, expected) in [
            (ActionKey([0; 32]), None),
            (ActionKey([5; 32]), Some(ActionKey([5; 32]))),
        ] {
            let v1 = v1::Event {
                seq: 7,
                time_ms: 1,
                build: 3,
                kind: v1::EventKind::ActionFailed {
                    key,
                    job: "clean".into(),
                    outputs: outputs.clone(),
                    error: "boom".into(),
                    exit_code: None,
                    stdout: None,
                    stderr: None,
                },
            };
            assert_eq!(key_of(&v1_bytes(&v1)), expected);
            for byte in [2u8, 3] {
                let v3 = v3::Event {
                    seq: 7,
                    time_ms: 1,
                    build: 3,
                    kind: v3::EventKind::ActionFailed {
                        key,
                        job: "clean".into(),
                        outputs: outputs.clone(),
                        error: "boom".into(),
                        exit_code: None,
                        stdout: None,
                        stderr: None,
                    },
                };
                let bytes = postcard::to_extend(&v3, vec![byte]).unwrap();
                assert_eq!(key_of(&bytes), expected, "format {byte}");
            }
            let v4 = v4::Event::<v6::Manifest, ActionKey> {
                seq: 7,
                time_ms: 1,
                build: 3,
                kind: v4::EventKind::ActionFailed {
                    key,
                    job: "clean".into(),
                    outputs: outputs.clone(),
                    error: "boom".into(),
                    exit_code: None,
                    stdout: None,
                    stderr: None,
                },
            };
            let bytes = postcard::to_extend(&v4, vec![4]).unwrap();
            assert_eq!(key_of(&bytes), expected, "format 4");
        }
        // Format 4's manifests have their command (and no modes).
        let succeeded = v4::Event::<_, ActionKey> {
            seq: 8,
            time_ms: 1,
            build: 3,
            kind: v4::EventKind::ActionSucceeded {
                manifest: format_6_manifest(),
            },
        };
        let bytes = postcard::to_extend(&succeeded, vec![4]).unwrap();
        assert_eq!(
            decode_event(&bytes).unwrap().kind,
            EventKind::ActionSucceeded {
                manifest: manifest_without_modes()
            }
        );
    }

    /// Format 9 gave `BuildRequested` its `submission` and the counts their
    /// `joined`, and appended `ActionJoined`: format-8 events (as cairn
    /// wrote them) read with no submission and no joined, and today's
    /// round-trip.
    #[test]
    fn format_8_events_read_without_submission_or_joined() {
        type Old = v8::Event<Manifest, Option<ActionKey>>;
        let old = |kind| Old {
            seq: 4,
            time_ms: 1_700_000_000_000,
            build: 3,
            kind,
        };
        let requested = old(v8::EventKind::BuildRequested {
            requested: vec!["daily/*".into()],
            command: "build".into(),
            reason: None,
        });
        let bytes = postcard::to_extend(&requested, vec![8]).unwrap();
        let event = decode_event(&bytes).unwrap();
        assert_eq!(
            event.kind,
            EventKind::BuildRequested {
                requested: vec!["daily/*".into()],
                command: "build".into(),
                reason: None,
                submission: None,
            }
        );
        let finished = old(v8::EventKind::BuildFinished {
            counts: Counts {
                executed: 1,
                cached: 2,
                failed: 3,
                skipped: 4,
            },
            interrupted: true,
        });
        let bytes = postcard::to_extend(&finished, vec![8]).unwrap();
        assert_eq!(
            decode_event(&bytes).unwrap().kind,
            EventKind::BuildFinished {
                counts: BuildCounts {
                    executed: 1,
                    cached: 2,
                    failed: 3,
                    skipped: 4,
                    joined: 0,
                },
                interrupted: true,
            }
        );
        // Today's events round-trip; an ActionJoined under byte 8 is not
        // an event of that format.
        let event = |kind| Event {
            seq: 5,
            time_ms: 1_700_000_000_001,
            build: 4,
            kind,
        };
        let submitted = event(EventKind::BuildRequested {
            requested: Vec::new(),
            command: "backfill".into(),
            reason: Some("january".into()),
            submission: Some(cairn_engine::record::Submission {
                operation: "op-7f3a9c2e01b4".into(),
                idempotency_key: Some("ci-42".into()),
                body_digest: [9; 32],
                ..Default::default()
            }),
        });
        assert_eq!(decode_event(&encode_event(&submitted)).unwrap(), submitted);
        let joined = event(EventKind::ActionJoined {
            key: ActionKey([6; 32]),
            job: "clean".into(),
            outputs: Vec::new(),
            joined_build: 2,
        });
        assert_eq!(decode_event(&encode_event(&joined)).unwrap(), joined);
        let mut bytes = encode_event(&joined);
        bytes[0] = 8;
        assert!(decode_event(&bytes).is_err(), "no ActionJoined in format 8");
    }

    /// Format 10 gave `ActionCached` its `remote` and appended
    /// `RemoteRefused` and `ActionUploaded`: a format-9 `ActionCached` (and
    /// `ActionJoined`, the last kind of format 9) reads through the frozen
    /// [`v9`] with no remote; today's round-trip; the new kinds under byte
    /// 9 are refused.
    #[test]
    fn format_9_events_read_without_a_remote_origin() {
        let old = |kind| v9::Event {
            seq: 7,
            time_ms: 1_700_000_000_000,
            build: 2,
            kind,
        };
        let cached = old(v9::EventKind::ActionCached {
            key: ActionKey([3; 32]),
            job: "clean".into(),
            outputs: vec![partition("clean/date=2024-01-01")],
            built_by: 1,
            restored: true,
        });
        let bytes = postcard::to_extend(&cached, vec![9]).unwrap();
        assert_eq!(
            decode_event(&bytes).unwrap().kind,
            EventKind::ActionCached {
                key: ActionKey([3; 32]),
                job: "clean".into(),
                outputs: vec![partition("clean/date=2024-01-01")],
                built_by: 1,
                restored: true,
                remote: None,
            }
        );
        let joined = old(v9::EventKind::ActionJoined {
            key: ActionKey([4; 32]),
            job: "clean".into(),
            outputs: Vec::new(),
            joined_build: 1,
        });
        let bytes = postcard::to_extend(&joined, vec![9]).unwrap();
        assert!(matches!(
            decode_event(&bytes).unwrap().kind,
            EventKind::ActionJoined {
                joined_build: 1,
                ..
            }
        ));
        let event = |kind| Event {
            seq: 8,
            time_ms: 1_700_000_000_001,
            build: 3,
            kind,
        };
        let from_remote = event(EventKind::ActionCached {
            key: ActionKey([5; 32]),
            job: "clean".into(),
            outputs: vec![partition("clean/date=2024-01-01")],
            built_by: 3,
            restored: true,
            remote: Some(Box::new(cairn_engine::record::RemoteOrigin {
                url: "s3://bucket/team".into(),
                producer: "host ci-1, cairn 0.1.0, build 9".into(),
                manifest: manifest(),
            })),
        });
        let refused = event(EventKind::RemoteRefused {
            key: ActionKey([6; 32]),
            job: "clean".into(),
            outputs: Vec::new(),
            url: "http://127.0.0.1:8080/team".into(),
            reason: "blob 3f2a failed verification".into(),
        });
        let uploaded = event(EventKind::ActionUploaded {
            key: ActionKey([7; 32]),
            job: "clean".into(),
            outputs: Vec::new(),
            url: "s3://bucket/team".into(),
            blobs: 2,
            bytes: 4096,
            created: false,
        });
        for today in [from_remote, refused, uploaded] {
            let bytes = encode_event(&today);
            assert_eq!(bytes[0], FORMAT_BYTE);
            assert_eq!(decode_event(&bytes).unwrap(), today);
            let mut old = bytes.clone();
            old[0] = 9;
            assert!(
                decode_event(&old).is_err() || decode_event(&old).unwrap() != today,
                "{today:?} is not a format-9 event"
            );
        }
    }

    /// Format 8 appended `ActionRetrying`: format-7 events decode with
    /// today's layout, and an `ActionRetrying` under byte 7 is refused.
    #[test]
    fn format_7_events_decode_and_cannot_be_action_retrying() {
        let event = |kind| Event {
            seq: 3,
            time_ms: 1_700_000_000_000,
            build: 2,
            kind,
        };
        let skipped = event(EventKind::ActionSkipped {
            job: "clean".into(),
            outputs: Vec::new(),
            reason: "an input failed".into(),
        });
        let bytes = postcard::to_extend(&skipped, vec![7]).unwrap();
        assert_eq!(decode_event(&bytes).unwrap(), skipped);
        let retrying = event(EventKind::ActionRetrying {
            key: ActionKey([5; 32]),
            job: "clean".into(),
            outputs: Vec::new(),
            attempt: 2,
            delay_ms: 1000,
        });
        assert_eq!(decode_event(&encode_event(&retrying)).unwrap(), retrying);
        let bytes = postcard::to_extend(&retrying, vec![7]).unwrap();
        let error = decode_event(&bytes).unwrap_err().to_string();
        assert!(error.contains("added in format 8"), "{error}");
    }

    /// Format 11 appended `ActionDispatched`: format-10 events decode
    /// with today's layout, and an `ActionDispatched` under byte 10 is
    /// refused.
    #[test]
    fn format_10_events_decode_and_cannot_be_action_dispatched() {
        let event = |kind| Event {
            seq: 4,
            time_ms: 1_700_000_000_000,
            build: 2,
            kind,
        };
        let uploaded = event(EventKind::ActionUploaded {
            key: ActionKey([5; 32]),
            job: "clean".into(),
            outputs: Vec::new(),
            url: "http://127.0.0.1:8080/team".into(),
            blobs: 1,
            bytes: 2,
            created: true,
        });
        let bytes = postcard::to_extend(&uploaded, vec![10]).unwrap();
        assert_eq!(decode_event(&bytes).unwrap(), uploaded);
        let dispatched = event(EventKind::ActionDispatched {
            key: ActionKey([5; 32]),
            job: "clean".into(),
            outputs: Vec::new(),
            attempt: 1,
            executor: "slurm".into(),
            id: "42".into(),
        });
        assert_eq!(
            decode_event(&encode_event(&dispatched)).unwrap(),
            dispatched
        );
        let bytes = postcard::to_extend(&dispatched, vec![10]).unwrap();
        let error = decode_event(&bytes).unwrap_err().to_string();
        assert!(error.contains("added in format 11"), "{error}");
    }

    /// Format 12 gave the submission of `BuildRequested` its
    /// `submitted_by`, `submitted_ms` and `expected`: a format-10 or -11
    /// `BuildRequested` (and a format-9 one) reads through the frozen
    /// [`v11`] without them, the other kinds of those formats as today's;
    /// today's round-trips, and the old layout under today's byte does
    /// not pass for it.
    #[test]
    fn format_11_build_requests_read_without_who_when_or_what_was_announced() {
        let old = v11::Event {
            seq: 3,
            time_ms: 1_700_000_000_000,
            build: 2,
            kind: v11::EventKind::BuildRequested {
                requested: vec!["daily/date={date}".into()],
                command: "backfill".into(),
                reason: Some("january".into()),
                submission: Some(v11::Submission {
                    operation: "op-7f3a9c2e01b4".into(),
                    idempotency_key: Some("ci-42".into()),
                    body_digest: [9; 32],
                }),
            },
        };
        let read = Event {
            seq: 3,
            time_ms: 1_700_000_000_000,
            build: 2,
            kind: EventKind::BuildRequested {
                requested: vec!["daily/date={date}".into()],
                command: "backfill".into(),
                reason: Some("january".into()),
                submission: Some(cairn_engine::record::Submission {
                    operation: "op-7f3a9c2e01b4".into(),
                    idempotency_key: Some("ci-42".into()),
                    body_digest: [9; 32],
                    submitted_by: None,
                    submitted_ms: 0,
                    expected: None,
                }),
            },
        };
        for byte in [10u8, 11] {
            let bytes = postcard::to_extend(&old, vec![byte]).unwrap();
            assert_eq!(decode_event(&bytes).unwrap(), read, "format {byte}");
            // The old layout under today's byte is not today's event.
            let mut relabelled = bytes;
            relabelled[0] = FORMAT_BYTE;
            assert!(decode_event(&relabelled).is_err());
        }
        // Format 9 wrote the same submission.
        let v9 = v9::Event {
            seq: 3,
            time_ms: 1_700_000_000_000,
            build: 2,
            kind: v9::EventKind::BuildRequested {
                requested: vec!["daily/date={date}".into()],
                command: "backfill".into(),
                reason: Some("january".into()),
                submission: Some(v11::Submission {
                    operation: "op-7f3a9c2e01b4".into(),
                    idempotency_key: Some("ci-42".into()),
                    body_digest: [9; 32],
                }),
            },
        };
        let bytes = postcard::to_extend(&v9, vec![9]).unwrap();
        assert_eq!(decode_event(&bytes).unwrap(), read);
        // Today's, with all three.
        let today = Event {
            kind: EventKind::BuildRequested {
                requested: Vec::new(),
                command: "build".into(),
                reason: Some("late data from S001".into()),
                submission: Some(cairn_engine::record::Submission {
                    operation: "op-7f3a9c2e01b4".into(),
                    idempotency_key: None,
                    body_digest: [9; 32],
                    submitted_by: Some("ana".into()),
                    submitted_ms: 1_765_000_000_000,
                    expected: Some(cairn_engine::record::Announced {
                        partitions: 1,
                        actions: 3,
                        current: 1,
                        to_run: 2,
                    }),
                }),
            },
            ..read
        };
        let bytes = encode_event(&today);
        assert_eq!(bytes[0], FORMAT_BYTE);
        assert_eq!(decode_event(&bytes).unwrap(), today);
        let mut old_byte = bytes;
        old_byte[0] = 11;
        assert!(decode_event(&old_byte).is_err() || decode_event(&old_byte).unwrap() != today);
        // A kind other than BuildRequested under byte 11 is today's.
        let finished = Event {
            kind: EventKind::BuildFinished {
                counts: cairn_engine::record::BuildCounts::default(),
                interrupted: false,
            },
            ..read
        };
        let mut bytes = encode_event(&finished);
        bytes[0] = 11;
        assert_eq!(decode_event(&bytes).unwrap(), finished);
    }

    /// Formats 4 to 6 manifests have a command but no modes: each file
    /// reads with the mode restores gave it then (0o755 or 0o644). Format-5
    /// and -6 events are format-4 events with an optional failure key, and
    /// format 6 appended `PartitionPruned`.
    #[test]
    fn format_4_to_6_manifests_and_events_are_read_with_the_modes_restores_gave() {
        let today = manifest();
        assert_eq!(today.outputs[0].files[0].mode, 0o640);
        assert_eq!(decode_manifest(&encode_manifest(&today)).unwrap(), today);
        for byte in [4u8, 5, 6] {
            let bytes = postcard::to_extend(&format_6_manifest(), vec![byte]).unwrap();
            assert_eq!(decode_manifest(&bytes).unwrap(), manifest_without_modes());
            let mut executable = format_6_manifest();
            executable.outputs[0].files[0].executable = true;
            let bytes = postcard::to_extend(&executable, vec![byte]).unwrap();
            let read = decode_manifest(&bytes).unwrap();
            let file = &read.outputs[0].files[0];
            assert_eq!((file.executable, file.mode), (true, 0o755), "format {byte}");
            // The old layout under today's byte is not a valid manifest.
            let mut relabelled = bytes;
            relabelled[0] = FORMAT_BYTE;
            assert!(decode_manifest(&relabelled).is_err());
        }
        for byte in [5u8, 6] {
            let succeeded = v4::Event::<_, Option<ActionKey>> {
                seq: 9,
                time_ms: 1_700_000_000_000,
                build: 5,
                kind: v4::EventKind::ActionSucceeded {
                    manifest: format_6_manifest(),
                },
            };
            let bytes = postcard::to_extend(&succeeded, vec![byte]).unwrap();
            assert_eq!(
                decode_event(&bytes).unwrap().kind,
                EventKind::ActionSucceeded {
                    manifest: manifest_without_modes()
                }
            );
            for key in [None, Some(ActionKey([0; 32])), Some(ActionKey([5; 32]))] {
                let failed = v4::Event::<v6::Manifest, _> {
                    seq: 10,
                    time_ms: 1,
                    build: 5,
                    kind: v4::EventKind::ActionFailed {
                        key,
                        job: "clean".into(),
                        outputs: vec![partition("clean/date=2024-01-01")],
                        error: "boom".into(),
                        exit_code: Some(1),
                        stdout: None,
                        stderr: None,
                    },
                };
                let bytes = postcard::to_extend(&failed, vec![byte]).unwrap();
                let EventKind::ActionFailed { key: read, .. } = decode_event(&bytes).unwrap().kind
                else {
                    panic!("not a failure");
                };
                assert_eq!(read, key, "format {byte} keeps its key as written");
            }
            let refreshed = v4::Event::<v6::Manifest, Option<ActionKey>> {
                seq: 11,
                time_ms: 1,
                build: 5,
                kind: v4::EventKind::DefsRefreshed {
                    source: "stations".into(),
                    digest: ContentDigest::of(b"defs"),
                    values: 2,
                },
            };
            let bytes = postcard::to_extend(&refreshed, vec![byte]).unwrap();
            assert_eq!(
                decode_event(&bytes).unwrap().kind,
                EventKind::DefsRefreshed {
                    source: "stations".into(),
                    digest: ContentDigest::of(b"defs"),
                    values: 2,
                }
            );
        }
        // PartitionPruned exists from format 6 on.
        let pruned = v4::Event::<v6::Manifest, Option<ActionKey>> {
            seq: 12,
            time_ms: 1,
            build: 6,
            kind: v4::EventKind::PartitionPruned {
                partition: partition("clean/date=2024-01-01"),
                reason: "station gone".into(),
                by: None,
            },
        };
        let bytes = postcard::to_extend(&pruned, vec![6]).unwrap();
        assert_eq!(
            decode_event(&bytes).unwrap().kind,
            EventKind::PartitionPruned {
                partition: partition("clean/date=2024-01-01"),
                reason: "station gone".into(),
                by: None,
            }
        );
        let mut older = bytes;
        older[0] = 5;
        assert!(matches!(
            decode_event(&older),
            Err(DecodeError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn older_formats_then_random_bytes_never_panic(
            format in 1u8..=6,
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut bytes = vec![format];
            bytes.extend_from_slice(&body);
            let _ = decode_event(&bytes);
            let _ = decode_manifest(&bytes);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_event(&bytes);
            let _ = decode_manifest(&bytes);
            let _ = decode_partition_state(&bytes);
            let _ = decode_stat_entry(&bytes);
        }

        #[test]
        fn format_byte_then_random_bytes_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut bytes = vec![FORMAT_BYTE];
            bytes.extend_from_slice(&body);
            let _ = decode_event(&bytes);
            let _ = decode_manifest(&bytes);
            let _ = decode_partition_state(&bytes);
            let _ = decode_stat_entry(&bytes);
        }

        #[test]
        fn flipped_bytes_of_a_real_event_never_panic(
            index in 0usize..5,
            position in any::<prop::sample::Index>(),
            value in any::<u8>(),
        ) {
            let mut bytes = encode_event(&events()[index]);
            let position = position.index(bytes.len());
            bytes[position] = value;
            let _ = decode_event(&bytes);
        }
    }
}
