//! What an action needs from the build around it ([`Context`]) and what it
//! hands back ([`Finished`], [`Outcome`]): the vocabulary shared by the
//! scheduler (exec/mod.rs), the decision and materialization of one action
//! (exec/action.rs) and the running of its job (exec/run.rs).

use std::fs;
use std::path::{Path, PathBuf};

use crate::digest::{ActionKey, ContentDigest};
use crate::graph::Graph;
use crate::job::{Children, JobEnvironment, JobRunner};
use crate::observe::{StatUpdate, now_ns, stat_entry};
use crate::ports::{BlobStore, Catalog};
use crate::record::{EventKind, FileEntry, Manifest};
use crate::refs::PartitionRef;

use super::staging::Leftover;

/// What an action needs from the build around it.
pub struct Context<'a> {
    pub graph: &'a Graph,
    /// Where partitions are materialized: `data/` beside the graph file.
    pub data_root: PathBuf,
    /// Scratch space on the data root's file system, so renames are atomic.
    pub staging_root: PathBuf,
    pub catalog: &'a dyn Catalog,
    pub blobs: &'a dyn BlobStore,
    pub environment: &'a JobEnvironment,
    pub children: &'a Children,
    /// Starts the jobs and waits for them: processes
    /// ([`crate::local::LocalRunner`]), or a test's script
    /// ([`crate::job::ScriptedRunner`]).
    pub runner: &'a dyn JobRunner,
    pub build: u64,
    /// `--retries`: overrides every job's `retries` when set.
    pub retries: Option<u32>,
    /// Directories between the data root and the partitions already seen
    /// to be real directories by this build's decisions.
    pub real_dirs: RealDirs,
    /// The jobs' programs, resolved once (engine/src/program.rs).
    pub programs: crate::program::Programs,
    /// Kept partitions whose job's code changed since (codechange.rs), by
    /// key: what `build`, `status` and `why` say about them.
    pub code_changes: crate::codechange::CodeChanges,
    /// The runs in flight across the builds of this process, shared
    /// (exec/inflight.rs); `None`, the command line's: the build is alone.
    pub in_flight: Option<&'a super::inflight::InFlight>,
    /// The shared remote cache, if one is configured and not off
    /// (engine/src/remote.rs).
    pub remote: Option<&'a crate::remote::Remote>,
}

impl<'a> Context<'a> {
    /// The context of build `build` of `graph`: partitions in `data/`
    /// beside the graph file, staging in `data/.cairn-tmp`, each job's own
    /// `retries`, nothing resolved yet. Set the other fields with
    /// `Context { retries: Some(0), ..Context::new(…) }`.
    pub fn new(
        graph: &'a Graph,
        catalog: &'a dyn Catalog,
        blobs: &'a dyn BlobStore,
        environment: &'a JobEnvironment,
        children: &'a Children,
        runner: &'a dyn JobRunner,
        build: u64,
    ) -> Self {
        let data_root = graph.root.join("data");
        Context {
            graph,
            staging_root: data_root.join(".cairn-tmp"),
            data_root,
            catalog,
            blobs,
            environment,
            children,
            runner,
            build,
            retries: None,
            real_dirs: RealDirs::default(),
            programs: Default::default(),
            code_changes: Default::default(),
            in_flight: None,
            remote: None,
        }
    }
}

/// Directories a build has seen to be real directories (not links), so that
/// deciding whether 30 partitions of one date are current checks their
/// common parents once, not 30 times. Only the read-only decision uses it:
/// creating parents to write a partition checks every one again.
#[derive(Debug, Default)]
pub struct RealDirs(std::sync::RwLock<std::collections::HashSet<PathBuf>>);

impl RealDirs {
    pub(crate) fn contains(&self, path: &Path) -> bool {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(path)
    }

    pub(crate) fn insert(&self, path: &Path) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(path.to_owned());
    }
}

/// An input as the action sees it.
#[derive(Debug, Clone)]
pub struct ResolvedInput {
    pub partition: PartitionRef,
    pub digest: ContentDigest,
    pub path: PathBuf,
}

/// How an action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Executed {
        duration_ms: u64,
    },
    Cached {
        restored: bool,
    },
    Failed {
        error: String,
        /// The last lines of the job's captured stderr (redacted, at most
        /// [`STDERR_TAIL_LINES`](super::run::STDERR_TAIL_LINES)), for the failure message;
        /// empty when it printed nothing or never ran.
        stderr_tail: Vec<String>,
    },
    Skipped {
        reason: String,
    },
    /// Another build of the process was running the same key: this one
    /// waited on that run and took its outputs (exec/inflight.rs).
    Joined {
        /// The build that ran it.
        build: u64,
    },
}

/// Whether an action must run, given its key.
#[derive(Debug, Clone)]
pub enum Decision {
    /// The key was built before and every output's data path holds it.
    UpToDate {
        manifest: Box<Manifest>,
        /// Every output's current materialization is already this key (the
        /// usual no-op): reusing it records nothing.
        current: bool,
    },
    /// The key was built before; these outputs must be rewritten from the store.
    Restore {
        manifest: Box<Manifest>,
        outputs: Vec<usize>,
    },
    /// No usable result: the job must run, for this reason.
    Run { reason: String },
}

/// The result of one action, to be recorded by the scheduler.
pub struct Finished {
    pub key: Option<ActionKey>,
    pub events: Vec<EventKind>,
    pub updates: Vec<StatUpdate>,
    pub outcome: Outcome,
    /// Content digests of the outputs, when they are known.
    pub outputs: Option<Vec<ContentDigest>>,
    /// The build whose result a cached action reuses (its manifest's);
    /// `None` for actions that ran, failed or were skipped, and for those a
    /// build presumed current without reading their manifest.
    pub built_by: Option<u64>,
    /// What the worker removes once it has reported the action, off the
    /// path to its dependents (the staging root is cleared at the build's
    /// end whatever is left).
    pub leftovers: Vec<Leftover>,
}

/// Why an action whose outputs were never materialized would run (the
/// evaluation without keys gives the same reason).
pub(crate) const NEVER_BUILT: &str = "never built";

/// Stat-cache entries for files just placed at `target` with known digests,
/// so the next build need not re-read them.
pub(crate) fn record_stats(target: &Path, files: &[FileEntry], updates: &mut Vec<StatUpdate>) {
    let recorded_ns = now_ns();
    for file in files {
        let path = if file.path.is_empty() {
            target.to_owned()
        } else {
            target.join(&file.path)
        };
        if let Ok(metadata) = fs::symlink_metadata(&path) {
            updates.push((
                path.to_string_lossy().into_owned(),
                stat_entry(&metadata, recorded_ns, file.digest),
            ));
        }
    }
}

pub use cairn_core::clock::now_ms;
