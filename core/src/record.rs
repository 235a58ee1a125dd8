//! The facts cairn records: manifests of finished actions, events of the log,
//! and the partition state projected from them.
//!
//! These types are persisted (postcard, by `cairn-store`) and printed (JSON, by
//! `cairn log --json`). postcard is not self-describing: any change to a field
//! here is a format bump in `cairn-store` with a decoding path for the old form.

use serde::{Deserialize, Serialize};

use crate::digest::{ActionKey, ContentDigest, KeyHasher};
use crate::refs::PartitionRef;

/// One file of a partition. `path` is relative to the partition's data path,
/// `/`-separated, and never contains `..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    /// Whether any execute bit of `mode` is set: what the partition digest
    /// hashes ([`PARTITION_RECIPE`]).
    pub executable: bool,
    pub size: u64,
    pub digest: ContentDigest,
    /// The file's permission bits (`st_mode & 0o777`) as the job left them,
    /// which a restore recreates exactly (store format 7). Set-id and sticky
    /// bits are never kept. Manifests of older formats recorded only
    /// `executable` and read as 0o755 or 0o644, what restores gave them.
    pub mode: u32,
}

/// The permission bits a manifest records ([`FileEntry::mode`]).
pub const MODE_BITS: u32 = 0o777;

/// The recipe of a partition's content digest; bump it if the fields change.
pub const PARTITION_RECIPE: &str = "cairn/partition/v1";

/// Merkle digest of a partition: (relative path, exec bit, content digest) of
/// each file, sorted by path. `files` must be sorted by path. The other
/// permission bits are not hashed: a 0600 and a 0644 file of the same
/// content make the same partition (no key downstream changes).
pub fn partition_digest(files: &[FileEntry]) -> ContentDigest {
    debug_assert!(files.windows(2).all(|pair| pair[0].path < pair[1].path));
    let mut hasher = KeyHasher::new(PARTITION_RECIPE);
    hasher.u64("files", files.len() as u64);
    for file in files {
        hasher
            .str("path", &file.path)
            .u64("executable", u64::from(file.executable))
            .digest("content", &file.digest);
    }
    ContentDigest(hasher.finish())
}

/// An output partition of a finished action, with its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    pub partition: PartitionRef,
    pub digest: ContentDigest,
    pub files: Vec<FileEntry>,
}

/// An input partition of an action, by content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    pub partition: PartitionRef,
    pub digest: ContentDigest,
}

/// The record of one successful action: everything needed to audit it and to
/// restore its outputs from the blob store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub key: ActionKey,
    pub job: String,
    pub outputs: Vec<OutputRecord>,
    pub inputs: Vec<InputRecord>,
    /// Digest of the job's code files (`code` in the graph file), if any.
    pub code_digest: Option<ContentDigest>,
    /// `(dataset, version)` of each versioned output dataset when built.
    pub versions: Vec<(String, String)>,
    pub build: u64,
    pub started_ms: u64,
    pub finished_ms: u64,
    /// Captured stdout and stderr blobs.
    pub stdout: Option<ContentDigest>,
    pub stderr: Option<ContentDigest>,
    /// The command as it entered the key, so that a later rebuild can say
    /// which argument, variable or program changed. `None` in manifests
    /// written before store format 4. (Boxed: events stay small.)
    pub command: Option<Box<CommandRecord>>,
}

/// Where a result restored from the shared remote cache came from
/// ([`EventKind::ActionCached`]'s `remote`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteOrigin {
    /// The cache's URL, without credentials.
    pub url: String,
    /// Who built it, as its AC entry says: host, cairn version and build
    /// there (informative only: nothing is trusted from it).
    pub producer: String,
    /// The manifest, verified against the local action and with this
    /// build's id: the key's local manifest from now on.
    pub manifest: Manifest,
}

/// What entered an action key besides its inputs, outputs and versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// The job's `run`.
    pub run: Vec<String>,
    /// The config's `args`, appended to `run`.
    pub args: Vec<String>,
    /// The config's `env`, sorted by name.
    pub env: Vec<(String, String)>,
    /// The allow-listed variables of cairn's environment that entered the
    /// key (never secrets), sorted by name.
    pub passed_env: Vec<(String, String)>,
    /// The program `run[0]` resolved to.
    pub program: ProgramRecord,
}

/// The program a job runs, as its key sees it (engine/src/program.rs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramRecord {
    /// Where it was found: an absolute path outside the project, `./rel`
    /// inside it, or the name as given if it was not found.
    pub path: String,
    /// The content of the file it leads to, for a program outside the
    /// project; `None` inside it (its content is the job's code) or when
    /// it was not found.
    pub digest: Option<ContentDigest>,
}

/// Counts that end a build. Every action is in exactly one of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildCounts {
    /// Actions whose job ran and succeeded.
    pub executed: u64,
    /// Actions satisfied without running (restored ones included).
    pub cached: u64,
    /// Actions whose job failed (or could not start, or lacked a source).
    pub failed: u64,
    /// Actions not run because an input failed (or the build was interrupted).
    pub skipped: u64,
    /// Actions another build of the same process was running: this build
    /// waited on that run and took its result (`ActionJoined`; store
    /// format 9).
    pub joined: u64,
}

/// What a server submitted a build as (`BuildRequested.submission`): enough
/// for a restarted server to rebuild its operations and idempotency keys
/// from the log (store format 9), and to show them as they were shown
/// before (store format 12: who submitted it, when, and what it
/// announced; the reason is `BuildRequested.reason`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// The server's operation id (`op-7f3a9c2e01b4`).
    pub operation: String,
    /// The client's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<String>,
    /// blake3 of the normalized request body.
    pub body_digest: [u8; 32],
    /// Who or what submitted it, as the request said (`submitted_by`).
    /// `None` in records of formats 9 to 11.
    #[serde(default)]
    pub submitted_by: Option<String>,
    /// When the server accepted it (ms since the Unix epoch); 0 in records
    /// of formats 9 to 11.
    #[serde(default)]
    pub submitted_ms: u64,
    /// What the server announced when it accepted it; `None` in records
    /// of formats 9 to 11.
    #[serde(default)]
    pub expected: Option<Announced>,
}

/// What a server announced for an operation when it accepted it (its dry
/// run's counts: docs/api.md, "The Operation resource").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announced {
    /// Partitions asked for.
    pub partitions: u64,
    /// Actions in the plan.
    pub actions: u64,
    /// Actions up to date or restorable.
    pub current: u64,
    /// Actions that would run.
    pub to_run: u64,
}

/// What happened. Every event is stored with its sequence number, wall time
/// and build id ([`Event`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    BuildRequested {
        /// The refs or patterns the user asked for (empty: everything declared).
        requested: Vec<String>,
        /// `build`, `backfill`, ...
        command: String,
        reason: Option<String>,
        /// The server operation this build runs, when a server submitted
        /// it (store format 9).
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
        /// Why it runs, in plain words.
        reason: String,
        /// 1 for the first attempt of this action in this build.
        attempt: u32,
        /// The sequence of the checkpoint passed in `CAIRN_RESUME`, if resumed.
        resumed_from: Option<u64>,
    },
    /// A running job wrote a new checkpoint (docs/checkpoints.md); its JSON is the
    /// blob `digest`. Cleared from consideration by the key's next success.
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
        /// `None` when the action failed before it had a key: one of its
        /// source inputs is missing (store format 5; older stores wrote
        /// an all-zero key there, read back as `None`).
        key: Option<ActionKey>,
        job: String,
        outputs: Vec<PartitionRef>,
        error: String,
        exit_code: Option<i32>,
        stdout: Option<ContentDigest>,
        stderr: Option<ContentDigest>,
    },
    /// A key that was built before: its manifest is reused. `restored` when
    /// the data path had to be rewritten from the blob store.
    ActionCached {
        key: ActionKey,
        job: String,
        outputs: Vec<PartitionRef>,
        /// The build that produced the reused manifest.
        built_by: u64,
        restored: bool,
        /// Set when the result came from the shared remote cache (store
        /// format 10): where from, and the manifest it brought, which
        /// becomes the key's local manifest (docs/remote-cache.md).
        remote: Option<Box<RemoteOrigin>>,
    },
    /// Not run: an input failed, or the build stopped first.
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
        /// Who asked (the user name from the environment, if any).
        by: Option<String>,
    },
    BuildFinished {
        counts: BuildCounts,
        interrupted: bool,
    },
    /// `cairn defs refresh` stored a new record of a definitions source
    /// (docs/defs.md): `digest` is the blob of the bytes the source printed,
    /// `values` how many values they hold. Only good records are appended:
    /// a failed or malformed refresh records nothing.
    DefsRefreshed {
        source: String,
        digest: ContentDigest,
        values: u64,
    },
    /// `cairn prune` removed a built partition the graph no longer declares
    /// (its data directory), and why: the partition is no longer built.
    /// Appended after `DefsRefreshed` (store format 6).
    PartitionPruned {
        partition: PartitionRef,
        reason: String,
        /// Who asked (the user name from the environment, if any).
        by: Option<String>,
    },
    /// A failed attempt (the `ActionFailed` just before) will be retried:
    /// attempt `attempt` starts after `delay_ms` of backoff, unless the
    /// build is interrupted first. What `status` shows as running while
    /// the build waits. Appended after `PartitionPruned` (store format 8).
    ActionRetrying {
        key: ActionKey,
        job: String,
        outputs: Vec<PartitionRef>,
        /// The attempt that starts after the backoff (2 after a first failure).
        attempt: u32,
        /// The backoff, in milliseconds.
        delay_ms: u64,
    },
    /// Another build of the same process (a held workspace) was running
    /// this key: this build waited on that run and took its result as
    /// current, instead of running it a second time. Its outcome follows
    /// the joined run's: nothing else on success, an `ActionFailed` of
    /// this build if that run failed. Appended after `ActionRetrying`
    /// (store format 9).
    ActionJoined {
        key: ActionKey,
        job: String,
        outputs: Vec<PartitionRef>,
        /// The build that ran it.
        joined_build: u64,
    },
    /// The shared remote cache had an entry for this key that was refused
    /// (docs/remote-cache.md): it names another key, its inputs differ from
    /// the local action's, or a blob failed verification. Nothing of it was
    /// placed; the action runs. Appended after `ActionJoined` (store format
    /// 10).
    RemoteRefused {
        key: ActionKey,
        job: String,
        outputs: Vec<PartitionRef>,
        /// The cache's URL, without credentials.
        url: String,
        reason: String,
    },
    /// The result of this key, built by this build, was uploaded to the
    /// shared remote cache: `blobs` blobs of `bytes` bytes sent (each
    /// small output file, each larger blob the cache lacked), then the AC
    /// entry (`created` false: another writer's entry
    /// was there first and was kept). Appended after `RemoteRefused`
    /// (store format 10).
    ActionUploaded {
        key: ActionKey,
        job: String,
        outputs: Vec<PartitionRef>,
        url: String,
        blobs: u64,
        bytes: u64,
        created: bool,
    },
    /// An attempt of this action (the `ActionStarted` of `attempt` just
    /// before) runs in a job of another system: `executor` names it
    /// (`"slurm"`), `id` is that system's own id of the job (the Slurm
    /// job id, for `sacct -j ID`). Several attempts of a batch share one
    /// Slurm job. Appended after
    /// `ActionUploaded` (store format 11).
    ActionDispatched {
        key: ActionKey,
        job: String,
        outputs: Vec<PartitionRef>,
        attempt: u32,
        executor: String,
        id: String,
    },
}

impl EventKind {
    /// The variant name, as printed in `cairn log` and its JSON `kind`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::BuildRequested { .. } => "BuildRequested",
            EventKind::Planned { .. } => "Planned",
            EventKind::DatasetVersionChanged { .. } => "DatasetVersionChanged",
            EventKind::ActionStarted { .. } => "ActionStarted",
            EventKind::ActionCheckpointed { .. } => "ActionCheckpointed",
            EventKind::ActionSucceeded { .. } => "ActionSucceeded",
            EventKind::ActionFailed { .. } => "ActionFailed",
            EventKind::ActionCached { .. } => "ActionCached",
            EventKind::ActionSkipped { .. } => "ActionSkipped",
            EventKind::PartitionMaterialized { .. } => "PartitionMaterialized",
            EventKind::PartitionInvalidated { .. } => "PartitionInvalidated",
            EventKind::BuildFinished { .. } => "BuildFinished",
            EventKind::DefsRefreshed { .. } => "DefsRefreshed",
            EventKind::PartitionPruned { .. } => "PartitionPruned",
            EventKind::ActionRetrying { .. } => "ActionRetrying",
            EventKind::ActionJoined { .. } => "ActionJoined",
            EventKind::RemoteRefused { .. } => "RemoteRefused",
            EventKind::ActionUploaded { .. } => "ActionUploaded",
            EventKind::ActionDispatched { .. } => "ActionDispatched",
        }
    }
}

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// Wall time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub build: u64,
    pub kind: EventKind,
}

/// The catalog's view of one partition, projected from the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The last successful materialization: (key, content digest, build).
    pub current: Option<Materialization>,
    /// Set by `PartitionInvalidated`, cleared by the next materialization.
    pub invalidated: Option<Invalidation>,
    /// The last failure since the last materialization: (build, error).
    pub failed: Option<(u64, String)>,
}

/// Why, by whom and when a partition was marked bad.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalidation {
    pub reason: String,
    pub by: Option<String>,
    pub time_ms: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Materialization {
    pub key: ActionKey,
    pub digest: ContentDigest,
    pub build: u64,
    pub seq: u64,
}

/// The last checkpoint recorded for an action key that has not succeeded since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub sequence: u64,
    pub digest: ContentDigest,
    pub build: u64,
}

/// The latest good record of a definitions source, projected from its last
/// `DefsRefreshed` event (the `defs` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefsRecord {
    /// The seq of the `DefsRefreshed` event.
    pub seq: u64,
    pub build: u64,
    pub time_ms: u64,
    /// The blob holding the source's output.
    pub digest: ContentDigest,
    pub values: u64,
    /// The seq of the source's record before this one, if any.
    pub previous: Option<u64>,
}

/// A remembered observation of a file: if its metadata still matches, its
/// content digest can be trusted without re-reading it (docs/internals.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatEntry {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub inode: u64,
    /// Wall time when the digest was computed, for the racy-timestamp rule.
    pub recorded_ns: i128,
    pub digest: ContentDigest,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &[u8], executable: bool) -> FileEntry {
        FileEntry {
            path: path.to_owned(),
            executable,
            size: content.len() as u64,
            digest: ContentDigest::of(content),
            mode: if executable { 0o755 } else { 0o644 },
        }
    }

    #[test]
    fn partition_digest_hashes_the_exec_bit_not_the_other_mode_bits() {
        let open = file("a", b"1", false);
        let private = FileEntry {
            mode: 0o600,
            ..open.clone()
        };
        assert_eq!(partition_digest(&[open]), partition_digest(&[private]));
    }

    #[test]
    fn partition_digest_covers_path_content_and_mode() {
        let base = partition_digest(&[file("a", b"1", false)]);
        assert_ne!(base, partition_digest(&[file("b", b"1", false)]));
        assert_ne!(base, partition_digest(&[file("a", b"2", false)]));
        assert_ne!(base, partition_digest(&[file("a", b"1", true)]));
        assert_eq!(base, partition_digest(&[file("a", b"1", false)]));
    }
}
