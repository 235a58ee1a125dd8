//! The scheduler: runs a [`Plan`] on a pool of `-j N` workers, each
//! action as soon as its inputs are known, and records what happened in
//! group commits.
//!
//! Durability order per group: blob sync, then one catalog transaction with
//! the group's events and stat updates, then the reporter hears of the
//! actions (an action is acknowledged only once it is committed). Dependents
//! start as soon as an upstream action finishes, without waiting for its
//! commit: a crash loses at most the uncommitted group, which the next build
//! redoes. Groups are committed in order on a committer thread, so the
//! scheduler never waits for a sync (a `syncfs` can take tens of
//! milliseconds) to release dependents; groups that queue up while one is
//! being committed are merged into one sync and one transaction.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::digest::{ActionKey, ContentDigest, KeyHasher};
use crate::graph::Graph;
use crate::observe::{ObserveError, Observer, StatUpdate};
use crate::plan::{InputSource, Plan, PlannedAction};
use crate::ports::StoreError;
use crate::record::{BuildCounts, EventKind};

pub mod action;
mod context;
pub mod inflight;
pub mod run;
mod staging;

pub(crate) use context::NEVER_BUILT;
pub use context::{Context, Decision, Finished, Outcome, RealDirs, ResolvedInput, now_ms};
pub use staging::Leftover;
use staging::clear_staging;

/// A build leaves an up-to-date snapshot only if its sweep left at most
/// this many actions, or a quarter of the plan, to run or restore: each is
/// checked again after the jobs, and the witness holds what the sweep saw
/// meanwhile. A cold build of 22,265 actions would pay a second sweep and
/// about 45 MB for it (its peak RSS going from 53 to 100 MB).
const SETTLE_AT_MOST: usize = 1024;

/// How long finished actions may wait for their group commit.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

pub struct BuildOptions<'a> {
    /// Worker threads, i.e. jobs running at once.
    pub jobs: usize,
    pub keep_going: bool,
    /// Set (by a signal handler) to stop the build: running jobs get SIGTERM.
    pub interrupt: &'a AtomicBool,
    /// Recorded in `BuildRequested`.
    pub requested: Vec<String>,
    pub command: String,
    pub reason: Option<String>,
    /// Records what the build observes, for an up-to-date snapshot; told to
    /// stop when the build will not end with every action current.
    pub witness: Option<&'a dyn BuildWitness>,
    /// By plan index, the key of each action the build may take as current
    /// without checking it: an up-to-date snapshot confirmed everything it
    /// relies on (see `uptodate::presume`). Such an action's sources are not
    /// observed and its outputs are not looked at; only the digests of
    /// those read by an action that is checked are looked up.
    pub presumed: Option<&'a [Option<ActionKey>]>,
    /// The server operation this build runs (recorded in `BuildRequested`).
    pub submission: Option<crate::record::Submission>,
}

impl<'a> BuildOptions<'a> {
    /// A plain `cairn build`: one worker, stop at the first failure, no
    /// snapshot witness, nothing presumed; stopped when `interrupt` is set.
    pub fn new(interrupt: &'a AtomicBool) -> Self {
        BuildOptions {
            jobs: 1,
            keep_going: false,
            interrupt,
            requested: Vec::new(),
            command: "build".to_owned(),
            reason: None,
            witness: None,
            presumed: None,
            submission: None,
        }
    }
}

/// Watches a build for the up-to-date snapshot (engine/src/uptodate.rs's
/// `Witness`, the catalog the build observes through): the scheduler says
/// when the jobs are done, so that what is observed from then on describes
/// the final state, or that the build will not end with every action
/// current. Called at most twice per build, never per action.
pub trait BuildWitness: Sync {
    /// The build will not end with every action current: stop recording.
    fn stop(&self);
    /// The jobs are done: observations from now on are of the final state.
    fn settle(&self);
}

/// Per-job code digests as a sorted list (the snapshot's form).
pub fn sorted_codes(
    codes: &HashMap<String, Option<ContentDigest>>,
) -> Vec<(String, Option<ContentDigest>)> {
    let mut out: Vec<_> = codes
        .iter()
        .map(|(job, digest)| (job.clone(), *digest))
        .collect();
    out.sort();
    out
}

/// Live progress, passed with every report.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub total: usize,
    pub done: usize,
    pub running: usize,
    pub counts: BuildCounts,
}

/// Receives progress; the engine never prints.
pub trait Reporter: Sync {
    /// `action`'s job starts (its first attempt in this build), under `key`.
    fn started(&self, _action: &PlannedAction, _key: &ActionKey, _progress: Progress) {}
    /// Another build of the process runs `action`'s key: this build waits
    /// on that run (`joined_build`), then hears `finished` with
    /// [`Outcome::Joined`] (or the run's failure).
    fn joined(&self, _action: &PlannedAction, _joined_build: u64, _progress: Progress) {}
    /// A running action recorded checkpoint `sequence`.
    fn checkpointed(&self, _action: &PlannedAction, _sequence: u64) {}
    /// Called once the action's outcome is committed to the catalog.
    fn finished(
        &self,
        _action: &PlannedAction,
        _key: Option<&ActionKey>,
        _outcome: &Outcome,
        _progress: Progress,
    ) {
    }
}

/// A reporter that ignores everything.
pub struct Silent;
impl Reporter for Silent {}

#[derive(Debug, Clone)]
pub struct BuildReport {
    pub build: u64,
    pub counts: BuildCounts,
    pub interrupted: bool,
    /// One line per failed action.
    pub failures: Vec<String>,
    /// When the build ended with every action current (nothing failed or
    /// was skipped, and the actions that ran or were restored were found
    /// current when checked again after the jobs) and a witness was
    /// recording.
    pub all_current: Option<AllCurrent>,
    /// Actions given as presumed ([`BuildOptions::presumed`]) that the
    /// build checked after all (their manifest could not be read), in the
    /// order it found them.
    pub unpresumed: Vec<usize>,
}

/// What an up-to-date snapshot needs from a build that ended with every
/// action current, besides what its witness observed.
#[derive(Debug, Clone)]
pub struct AllCurrent {
    /// Each action's index, key and the build whose result it reuses
    /// (`None` for an action presumed current, whose manifest was not
    /// read), in the order they were found current (the sweep's, then
    /// those that ran or were restored).
    pub keys: Vec<(usize, ActionKey, Option<u64>)>,
    /// The code digests the keys were computed with, sorted by job.
    pub codes: Vec<(String, Option<ContentDigest>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Code(String),
    /// What the graph file names is wrong (a `code` file missing): a usage
    /// error, `cairn.toml:LINE: jobs.J.code: ...`.
    #[error("{0}")]
    Graph(String),
}

/// The code digest of each job (files named by `code`, plus the run
/// executable when it is a file in the project), computed once per build.
pub fn code_digests<'p>(
    graph: &Graph,
    jobs: impl Iterator<Item = &'p str>,
    observer: &Observer<'_>,
    updates: &mut Vec<StatUpdate>,
) -> Result<HashMap<String, Option<ContentDigest>>, ExecError> {
    let mut out = HashMap::new();
    for name in jobs {
        if out.contains_key(name) {
            continue;
        }
        let job = &graph.jobs[name];
        let mut files = crate::code::code_files(graph, job).map_err(ExecError::Graph)?;
        if let Some(program) = job.run.first()
            && program.contains('/')
            && graph.root.join(program).is_file()
        {
            files.push(program.trim_start_matches("./").to_owned());
        }
        files.sort();
        files.dedup();
        if files.is_empty() {
            out.insert(name.to_owned(), None);
            continue;
        }
        let mut hasher = KeyHasher::new("cairn/code/v1");
        for relative in &files {
            let path = graph.root.join(relative);
            let metadata = std::fs::metadata(&path).map_err(|error| {
                ExecError::Graph(format!("jobs.{name}.code: {}: {error}", path.display()))
            })?;
            let digest = observer
                .file(&path, &metadata, updates)
                .map_err(|error| match error {
                    // A damaged catalog is the store's error, whichever
                    // file first needed the stat cache.
                    ObserveError::Cache { source, .. } => ExecError::Store(source),
                    error => ExecError::Code(format!("jobs.{name}.code: {error}")),
                })?;
            hasher.str("path", relative).digest("content", &digest);
        }
        out.insert(name.to_owned(), Some(ContentDigest(hasher.finish())));
    }
    Ok(out)
}

/// Checks that the `code` entries of `jobs` name files, before a build
/// opens the store: a missing one is the graph file's error (exit 2,
/// `cairn.toml:LINE`), and nothing is created or recorded.
pub fn check_code_files<'p>(
    graph: &Graph,
    jobs: impl Iterator<Item = &'p str>,
) -> Result<(), ExecError> {
    let mut seen = std::collections::HashSet::new();
    for name in jobs {
        if seen.insert(name)
            && let Some(job) = graph.jobs.get(name)
        {
            crate::code::code_files(graph, job).map_err(ExecError::Graph)?;
        }
    }
    Ok(())
}

/// One `DatasetVersionChanged` for each dataset whose version in the graph
/// differs from the one last recorded, so each change is logged once.
fn version_changes(context: &Context<'_>) -> Result<Vec<EventKind>, ExecError> {
    let recorded = context.catalog.dataset_versions()?;
    let mut events = Vec::new();
    for dataset in context.graph.datasets.values() {
        let now = dataset.version.as_ref().map(ToString::to_string);
        let before = recorded.get(&dataset.name).cloned();
        if now != before {
            events.push(EventKind::DatasetVersionChanged {
                dataset: dataset.name.clone(),
                from: before,
                to: now,
            });
        }
    }
    Ok(events)
}

/// Source digests, observed in parallel; a missing source is an error string
/// (empty for a source not read because only presumed actions read it).
fn observe_sources(
    context: &Context<'_>,
    plan: &Plan,
    presumed: Option<&Presumption<'_>>,
) -> (Vec<Result<ContentDigest, String>>, Vec<StatUpdate>) {
    // With presumed actions, only the sources of the others are read (and
    // of those a checked action reads, in case one has to be checked after
    // all: see `Presumption::finish`).
    let needed = presumed.map(|presumed| {
        let mut needed = vec![false; plan.sources.len()];
        for (index, action) in plan.actions.iter().enumerate() {
            if presumed.keys[index].is_none() || presumed.read[index] {
                for input in &action.inputs {
                    if let InputSource::Source { source } = *input {
                        needed[source] = true;
                    }
                }
            }
        }
        needed
    });
    let results: Vec<(Result<ContentDigest, String>, Vec<StatUpdate>)> = plan
        .sources
        .par_iter()
        .enumerate()
        .map(|(index, source)| {
            if needed.as_ref().is_some_and(|needed| !needed[index]) {
                // Empty (no allocation: at 1M partitions, 500,050 of them);
                // `resolve_inputs` words it if anything ever asks.
                return (Err(String::new()), Vec::new());
            }
            let observer = Observer::new(context.catalog);
            let mut updates = Vec::new();
            let digest = match observer.partition(&source.path, &mut updates) {
                Ok(Some((digest, _))) => Ok(digest),
                Ok(None) => Err(source.missing()),
                Err(error) => Err(source.unreadable(error)),
            };
            (digest, updates)
        })
        .collect();
    let mut updates = Vec::new();
    let digests = results
        .into_iter()
        .map(|(digest, mut more)| {
            updates.append(&mut more);
            digest
        })
        .collect();
    (digests, updates)
}

/// The inputs of `action` if all are known: `Err` names a failed input.
fn resolve_inputs(
    context: &Context<'_>,
    plan: &Plan,
    action: &PlannedAction,
    sources: &[Result<ContentDigest, String>],
    outputs: &[Option<Vec<ContentDigest>>],
) -> Result<Option<Vec<ResolvedInput>>, String> {
    let mut resolved = Vec::with_capacity(action.inputs.len());
    for (dep, source) in action.config.inputs.iter().zip(&action.inputs) {
        let (digest, path) = match *source {
            InputSource::Source { source } => match &sources[source] {
                Ok(digest) => (*digest, plan.sources[source].path.clone()),
                Err(error) if error.is_empty() => {
                    return Err(format!(
                        "source {} was not read",
                        plan.sources[source].partition
                    ));
                }
                Err(error) => return Err(error.clone()),
            },
            InputSource::Action { action, output } => match &outputs[action] {
                Some(digests) => (digests[output], context.data_path(&dep.partition)),
                None => return Ok(None),
            },
        };
        resolved.push(ResolvedInput {
            partition: dep.partition.clone(),
            digest,
            path,
        });
    }
    Ok(Some(resolved))
}

/// For each action of `actions` (all upstream actions finished), in
/// parallel: its outcome if its outputs are current and intact, else `None`.
fn finish_current(
    context: &Context<'_>,
    plan: &Plan,
    codes: &HashMap<String, Option<ContentDigest>>,
    sources: &[Result<ContentDigest, String>],
    outputs: &[Option<Vec<ContentDigest>>],
    presumed: Option<&Presumption<'_>>,
    actions: &[usize],
) -> Vec<(usize, Option<Finished>)> {
    actions
        .par_iter()
        .map(|&index| {
            if let Some(finished) = presumed.and_then(|presumed| presumed.finish(context, index)) {
                return (index, Some(finished));
            }
            let action = &plan.actions[index];
            let code = codes.get(&*action.job).copied().flatten();
            // A missing source (an error here) is the scheduler's to report.
            let finished = match resolve_inputs(context, plan, action, sources, outputs) {
                Ok(Some(inputs)) => context.finish_if_current(action, &inputs, code),
                _ => None,
            };
            (index, finished)
        })
        .collect()
}

/// The actions a build takes as current unchecked ([`BuildOptions::presumed`]).
struct Presumption<'a> {
    keys: &'a [Option<ActionKey>],
    /// Whether an action that is checked reads this one's outputs (then
    /// their digests are looked up).
    read: Vec<bool>,
    /// Presumed actions checked after all (their manifest could not be
    /// read), for [`BuildReport::unpresumed`].
    fell_back: std::sync::Mutex<Vec<usize>>,
}

impl<'a> Presumption<'a> {
    fn new(plan: &Plan, keys: &'a [Option<ActionKey>]) -> Self {
        let read = plan
            .actions
            .iter()
            .zip(keys)
            .map(|(action, key)| {
                key.is_some()
                    && action
                        .dependents
                        .iter()
                        .any(|&dependent| keys[dependent].is_none())
            })
            .collect();
        Presumption {
            keys,
            read,
            fell_back: std::sync::Mutex::default(),
        }
    }

    /// The outcome of a presumed action: cached, with nothing to record;
    /// `None` for an action that is checked (or whose manifest, needed for
    /// its outputs' digests, cannot be read: then it is checked too).
    fn finish(&self, context: &Context<'_>, index: usize) -> Option<Finished> {
        let key = self.keys.get(index).copied().flatten()?;
        let outputs = if self.read[index] {
            let Some(manifest) = context.catalog.action(&key).ok().flatten() else {
                self.fell_back
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(index);
                return None;
            };
            manifest
                .outputs
                .iter()
                .map(|output| output.digest)
                .collect()
        } else {
            // Read by no action that is checked: no digest is asked for.
            Vec::new()
        };
        Some(Finished {
            key: Some(key),
            events: Vec::new(),
            updates: Vec::new(),
            outcome: Outcome::Cached { restored: false },
            outputs: Some(outputs),
            built_by: None,
            leftovers: Vec::new(),
        })
    }
}

enum Message {
    /// An event of a running action (started, checkpointed, attempt failed).
    Event(usize, u64, Box<EventKind>),
    /// An action finished, at this wall time (ms).
    Done(usize, u64, Box<Finished>),
}

/// Finished work waiting to be made durable, then reported.
struct Group {
    events: Vec<(u64, EventKind)>,
    updates: Vec<StatUpdate>,
    reports: Vec<(usize, Option<ActionKey>, Outcome)>,
    /// Progress when the group was closed (passed to the reporter).
    progress: Progress,
}

/// The committer thread: for each group (merged with any that queued up
/// meanwhile), blobs durable, then one catalog transaction, then reports.
/// Stops at the first error, which it returns (and flags in `failed`).
fn commit_groups(
    context: &Context<'_>,
    plan: &Plan,
    reporter: &dyn Reporter,
    groups: &crossbeam_channel::Receiver<Group>,
    failed: &AtomicBool,
) -> Result<(), ExecError> {
    while let Ok(mut group) = groups.recv() {
        while let Ok(more) = groups.try_recv() {
            group.events.extend(more.events);
            group.updates.extend(more.updates);
            group.reports.extend(more.reports);
            group.progress = more.progress;
        }
        // A group of reports only (actions found current record nothing)
        // needs no transaction: nothing new would be made durable.
        let committed = if group.events.is_empty() && group.updates.is_empty() {
            context.blobs.sync()
        } else {
            context.blobs.sync().and_then(|()| {
                context
                    .catalog
                    .append_timed(context.build, group.events, group.updates)
                    .map(|_| ())
            })
        };
        if let Err(error) = committed {
            failed.store(true, Ordering::SeqCst);
            return Err(error.into());
        }
        for (index, key, outcome) in group.reports {
            reporter.finished(&plan.actions[index], key.as_ref(), &outcome, group.progress);
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Spawned,
    Done,
}

/// Runs `plan`. Returns the report; store errors abort the build.
pub fn build(
    context: &Context<'_>,
    plan: &Plan,
    options: &BuildOptions<'_>,
    reporter: &dyn Reporter,
) -> Result<BuildReport, ExecError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.jobs.max(1))
        .thread_name(|index| format!("cairn-worker-{index}"))
        .build()
        .map_err(|error| ExecError::Code(format!("cannot start worker threads: {error}")))?;
    let started = std::time::Instant::now();
    let active = Active::enter(&context.staging_root);
    let presumed = options
        .presumed
        .filter(|keys| keys.len() == plan.actions.len())
        .map(|keys| Presumption::new(plan, keys));
    let (sources, mut updates) = pool.install(|| observe_sources(context, plan, presumed.as_ref()));
    let observer = Observer::new(context.catalog);
    let codes = code_digests(
        context.graph,
        plan.actions.iter().map(|a| &*a.job),
        &observer,
        &mut updates,
    )?;
    let mut events = vec![EventKind::BuildRequested {
        requested: options.requested.clone(),
        command: options.command.clone(),
        reason: options.reason.clone(),
        submission: options.submission.clone(),
    }];
    events.extend(version_changes(context)?);
    events.push(EventKind::Planned {
        actions: plan.actions.len() as u64,
        sources: plan.sources.len() as u64,
    });
    // The build's start is the committer's first group: its sync overlaps
    // the sweep and the first jobs instead of holding them back (groups are
    // committed in order, so it still precedes everything the build
    // records; if it fails, the build stops as after any failed commit).
    let (groups, committed_groups) = crossbeam_channel::unbounded::<Group>();
    let at = now_ms();
    let _ = groups.send(Group {
        events: events.into_iter().map(|event| (at, event)).collect(),
        updates,
        reports: Vec::new(),
        progress: Progress {
            total: plan.actions.len(),
            ..Progress::default()
        },
    });
    tracing::debug!(
        "observed {} sources, handed the build's start to the committer ({:.2?})",
        plan.sources.len(),
        started.elapsed()
    );
    let commit_failed = AtomicBool::new(false);
    thread::scope(|threads| {
        let committer = thread::Builder::new()
            .name("cairn-commit".into())
            .spawn_scoped(threads, || {
                commit_groups(context, plan, reporter, &committed_groups, &commit_failed)
            })
            .map_err(|error| ExecError::Code(format!("cannot start the commit thread: {error}")))?;
        let uploads = match context.remote {
            Some(remote) if remote.writes() => {
                let (queue, queued) = crossbeam_channel::unbounded::<crate::remote::Upload>();
                let mut upload_threads = Vec::new();
                for index in 0..UPLOAD_THREADS {
                    let queued = queued.clone();
                    let blobs = context.blobs;
                    let build = context.build;
                    let spawned = thread::Builder::new()
                        .name(format!("cairn-upload-{index}"))
                        .spawn_scoped(threads, move || {
                            while let Some(batch) = next_uploads(&queued) {
                                remote.upload_many(blobs, &batch, build);
                            }
                        })
                        .map_err(|error| {
                            ExecError::Code(format!("cannot start an upload thread: {error}"))
                        })?;
                    upload_threads.push(spawned);
                }
                Some(Uploads {
                    queue,
                    threads: upload_threads,
                })
            }
            _ => None,
        };
        let lookahead = match context.remote {
            Some(remote) => Some(lookahead(threads, context, plan, remote)?),
            None => None,
        };
        let scheduled = schedule(
            context,
            plan,
            options,
            reporter,
            &pool,
            Scheduled {
                sources,
                codes,
                groups,
                commit_failed: &commit_failed,
                presumed,
                uploads,
                lookahead,
            },
        );
        // Whatever `schedule` returned: the lookahead threads stop.
        if let Some(remote) = context.remote {
            remote.end_lookahead();
        }
        // `schedule` dropped the sender: the committer finishes what is queued.
        let committed = committer
            .join()
            .unwrap_or_else(|_| Err(ExecError::Code("the commit thread panicked".into())));
        // Every result of this build is committed (or the build failed):
        // its runs are no longer joinable; a new decision finds them.
        if let Some(in_flight) = context.in_flight {
            in_flight.build_ended(context.build);
        }
        committed?;
        let (mut report, ran) = scheduled?;
        active.leave_clearing();
        if let Some(witness) = options.witness {
            report.all_current = ran.and_then(|ran| settle(context, plan, &pool, witness, ran));
            if report.all_current.is_none() {
                witness.stop();
            }
        }
        tracing::debug!("build finished ({:.2?})", started.elapsed());
        Ok(report)
    })
}

/// The builds running in this process, by staging root: what a build
/// leaves in the staging root is cleared when the first one starts and when
/// the last one ends, never under another build that runs beside it (in a
/// held workspace: docs/architecture.md).
static ACTIVE: std::sync::Mutex<Option<HashMap<std::path::PathBuf, usize>>> =
    std::sync::Mutex::new(None);

fn active() -> std::sync::MutexGuard<'static, Option<HashMap<std::path::PathBuf, usize>>> {
    ACTIVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How many builds run in this process now (a build counts from the start
/// of [`build`] until it returns).
pub fn builds_running() -> usize {
    active().as_ref().map_or(0, |builds| builds.values().sum())
}

/// One running build, counted in [`ACTIVE`] while it lives.
struct Active<'a> {
    root: &'a std::path::Path,
}

impl<'a> Active<'a> {
    /// Counts a build with staging root `root`, clearing what earlier
    /// builds left there if no other build of this process uses it.
    fn enter(root: &'a std::path::Path) -> Self {
        let mut active = active();
        let count = active
            .get_or_insert_with(HashMap::new)
            .entry(root.to_owned())
            .or_insert(0);
        if *count == 0 {
            clear_staging(root);
        }
        *count += 1;
        Active { root }
    }

    /// The build ended: its staging is cleared unless another build of
    /// this process still uses the root (under the count's lock, so that
    /// no build starts staging there meanwhile).
    fn leave_clearing(self) {
        self.leave(true);
        std::mem::forget(self);
    }

    /// Uncounts the build, clearing its root if `clear` and no other build
    /// uses it.
    fn leave(&self, clear: bool) {
        let mut active = active();
        let Some(builds) = active.as_mut() else {
            return;
        };
        let Some(count) = builds.get_mut(self.root) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            builds.remove(self.root);
            if clear {
                clear_staging(self.root);
            }
        }
    }
}

impl Drop for Active<'_> {
    /// A build that stopped on an error leaves its staging as it was.
    fn drop(&mut self) {
        self.leave(false);
    }
}

/// What [`schedule`] takes over from [`build`].
struct Scheduled<'a> {
    sources: Vec<Result<ContentDigest, String>>,
    codes: HashMap<String, Option<ContentDigest>>,
    groups: crossbeam_channel::Sender<Group>,
    commit_failed: &'a AtomicBool,
    presumed: Option<Presumption<'a>>,
    /// To the upload threads (write mode of a remote cache).
    uploads: Option<Uploads<'a>>,
    /// To the lookahead threads (a remote cache).
    lookahead: Option<crossbeam_channel::Sender<LookAhead>>,
}

/// The upload threads of a build with a remote cache in write mode
/// (engine/src/remote.rs): the scheduler queues each action that ran, and
/// at the build's end waits for them (or, with `--no-upload-wait`, lets
/// only the requests under way finish).
struct Uploads<'scope> {
    queue: crossbeam_channel::Sender<crate::remote::Upload>,
    threads: Vec<thread::ScopedJoinHandle<'scope, ()>>,
}

/// Upload threads per build: one, which keeps the entries of many results
/// in flight together (`Remote::upload_many`), so that their requests share
/// its wake-ups: with one request at a time per thread, the wake-ups cost
/// more than the requests (docs/benchmarks.md, "Shared remote cache").
const UPLOAD_THREADS: usize = 1;

/// Results uploaded in one batch at most (their entries are in memory
/// together, each at most its manifest and 256 KiB of inlined blobs).
const UPLOAD_BATCH: usize = 64;

/// How long the upload thread lets results gather after the first one it
/// is woken for: the scheduler's hand-offs then wake it once per batch, not
/// once per result. The build waits for the uploads only at its end.
const UPLOAD_GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// Lookahead threads per build with a remote cache: the one asks for the
/// entries of every action that became ready since its last batch, in
/// flight together, ahead of the workers.
const LOOKAHEAD_THREADS: usize = 1;

/// The next batch of results to upload: the first one queued (waited for),
/// then, after [`UPLOAD_GATHER`], those queued since (up to
/// [`UPLOAD_BATCH`]). `None` once the queue is closed and empty.
fn next_uploads(
    queued: &crossbeam_channel::Receiver<crate::remote::Upload>,
) -> Option<Vec<crate::remote::Upload>> {
    let first = queued.recv().ok()?;
    if queued.len() + 1 < UPLOAD_BATCH {
        thread::sleep(UPLOAD_GATHER);
    }
    Some(
        std::iter::once(first)
            .chain(queued.try_iter().take(UPLOAD_BATCH - 1))
            .collect(),
    )
}

/// An action that became ready, with its inputs: the lookahead computes
/// its key and asks the remote cache for it (engine/src/remote.rs,
/// `Remote::ask_ahead`).
struct LookAhead {
    index: usize,
    inputs: Vec<ResolvedInput>,
    code: Option<ContentDigest>,
}

/// Starts the lookahead threads of a build with a remote cache; the
/// scheduler sends them each action as it becomes ready. They end when the
/// scheduler drops the sender, or at `Remote::end_lookahead`.
fn lookahead<'scope>(
    threads: &'scope thread::Scope<'scope, '_>,
    context: &'scope Context<'_>,
    plan: &'scope Plan,
    remote: &'scope crate::remote::Remote,
) -> Result<crossbeam_channel::Sender<LookAhead>, ExecError> {
    let (queue, queued) = crossbeam_channel::unbounded::<LookAhead>();
    for index in 0..LOOKAHEAD_THREADS {
        let queued = queued.clone();
        thread::Builder::new()
            .name(format!("cairn-lookahead-{index}"))
            .spawn_scoped(threads, move || {
                while let Ok(first) = queued.recv() {
                    if remote.lookahead_ended() {
                        return;
                    }
                    // With every action that became ready since the last
                    // batch: their lookups are in flight together.
                    let mut keys = Vec::new();
                    let ready = std::iter::once(first)
                        .chain(queued.try_iter().take(crate::remote::AHEAD_AT_MOST - 1));
                    for ready in ready {
                        let action = &plan.actions[ready.index];
                        let key = context.key(action, &ready.inputs, ready.code);
                        if context.asks_remote(action, &key) {
                            keys.push(key);
                        }
                    }
                    remote.ask_ahead_many(&keys);
                }
            })
            .map_err(|error| {
                ExecError::Code(format!("cannot start a lookahead thread: {error}"))
            })?;
    }
    Ok(queue)
}

/// The scheduler loop: launches ready actions, collects what finished, and
/// hands a group to the committer every [`COMMIT_INTERVAL`].
fn schedule(
    context: &Context<'_>,
    plan: &Plan,
    options: &BuildOptions<'_>,
    reporter: &dyn Reporter,
    pool: &rayon::ThreadPool,
    scheduled: Scheduled<'_>,
) -> Result<(BuildReport, Option<Ran>), ExecError> {
    let Scheduled {
        sources,
        codes,
        groups,
        commit_failed,
        presumed,
        uploads,
        lookahead,
    } = scheduled;
    let (upload_queue, upload_threads) = match uploads {
        Some(uploads) => (Some(uploads.queue), uploads.threads),
        None => (None, Vec::new()),
    };
    let stop = AtomicBool::new(false);
    let mut scheduler = Scheduler {
        context,
        plan,
        reporter,
        sources,
        codes,
        outputs: vec![None; plan.actions.len()],
        state: vec![State::Waiting; plan.actions.len()],
        remaining: crate::plan::upstream_counts(&plan.actions),
        progress: Progress {
            total: plan.actions.len(),
            ..Progress::default()
        },
        pending_events: Vec::new(),
        pending_updates: Vec::new(),
        pending_reports: Vec::new(),
        failures: Vec::new(),
        stop: &stop,
        keep_going: options.keep_going,
        started: vec![false; plan.actions.len()],
        interrupted: false,
        in_flight: 0,
        ready: VecDeque::new(),
        idle_workers: 0,
        groups,
        commit_failed,
        current_keys: options.witness.map(|_| Vec::new()),
        presumed,
        upload_queue,
        lookahead,
    };
    let swept = std::time::Instant::now();
    scheduler.sweep_current(pool, options.interrupt);
    let left = plan.actions.len() - scheduler.progress.done;
    if left > SETTLE_AT_MOST.max(plan.actions.len() / 4) {
        // Too much to check again after the jobs (and to keep what the
        // witness saw meanwhile): no snapshot; the next no-op records one.
        scheduler.current_keys = None;
        if let Some(witness) = options.witness {
            witness.stop();
        }
    }
    tracing::debug!(
        "{} of {} actions current ({:.2?})",
        scheduler.progress.done,
        plan.actions.len(),
        swept.elapsed()
    );
    scheduler.commit()?;
    // The workers schedule too: the one that finishes an action releases
    // its dependents and starts one of them itself, under the scheduler's
    // lock, so a chain's next job starts on the thread that saw the last
    // one exit (no hand-off to a scheduler thread and back, each a wait
    // for a CPU on a busy machine). This thread only watches for an
    // interrupt and closes a group every COMMIT_INTERVAL.
    let jobs = options.jobs.max(1);
    let shared = Shared {
        scheduler: Mutex::new(scheduler),
        work: Condvar::new(),
        main: Condvar::new(),
    };
    //
    // The workers are the threads of a pool of their own, `-j` wide, so
    // that the parallel work inside an action (the remote cache's blob
    // downloads, hashing a large output) runs on that pool and `-j` bounds
    // it, rather than on rayon's global pool of one thread per core. Each
    // worker waits until all have started: a worker waiting inside such a
    // parallel call may run pool tasks, and must never find another
    // worker's loop among them (it would run it to the build's end).
    let workers = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .thread_name(|index| format!("cairn-job-{index}"))
        .build()
        .map_err(|error| ExecError::Code(format!("cannot start worker threads: {error}")))?;
    let started = std::sync::Barrier::new(jobs);
    let looped = workers.in_place_scope(|scope| -> Result<(), ExecError> {
        for _ in 0..jobs {
            let shared = &shared;
            let started = &started;
            let interrupt = options.interrupt;
            scope.spawn(move |_| {
                // Woken when its job ends, a worker is on every dependent's
                // path: a short slice lets it run soon on a busy machine.
                crate::local::slice::request_short_slice();
                started.wait();
                work(shared, interrupt);
            });
        }
        let mut last_commit = Instant::now();
        let mut scheduler = shared.lock();
        loop {
            scheduler.check_interrupt(options.interrupt);
            let over = scheduler.in_flight == 0 && scheduler.ready.is_empty();
            if over || last_commit.elapsed() >= COMMIT_INTERVAL {
                if let Err(error) = scheduler.commit() {
                    // The workers start nothing more; the scope waits for
                    // the jobs they run.
                    scheduler.stop.store(true, Ordering::SeqCst);
                    drop(scheduler);
                    shared.work.notify_all();
                    return Err(error);
                }
                last_commit = Instant::now();
            }
            if over {
                return Ok(());
            }
            let wait = COMMIT_INTERVAL
                .saturating_sub(last_commit.elapsed())
                .max(Duration::from_millis(5));
            scheduler = shared
                .main
                .wait_timeout(scheduler, wait)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    });
    let mut scheduler = shared
        .scheduler
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    looped?;
    drop(scheduler.lookahead.take());
    if let Some(remote) = context.remote {
        remote.end_lookahead();
    }
    scheduler.skip_unfinished();
    // The uploads: waited for here, so that the log records them before
    // the build's end (docs/remote-cache.md).
    drop(scheduler.upload_queue.take());
    if let Some(remote) = context.remote {
        if !remote.waits_for_uploads() {
            remote.abandon_uploads();
        }
        for thread in upload_threads {
            let _ = thread.join();
        }
        let at = now_ms();
        scheduler.pending_events.extend(
            remote
                .take_upload_events()
                .into_iter()
                .map(|event| (at, event)),
        );
    }
    let counts = scheduler.progress.counts;
    scheduler.pending_events.push((
        now_ms(),
        EventKind::BuildFinished {
            counts,
            interrupted: scheduler.interrupted,
        },
    ));
    scheduler.commit()?;
    // Every action done and none failed or skipped: the build may leave an
    // up-to-date snapshot once those that ran are checked again.
    let ran = scheduler
        .current_keys
        .filter(|_| !scheduler.interrupted && counts.failed == 0 && counts.skipped == 0)
        .map(|keys| {
            let mut current = vec![false; plan.actions.len()];
            for &(index, ..) in &keys {
                current[index] = true;
            }
            Ran {
                keys,
                ran: (0..plan.actions.len()).filter(|&i| !current[i]).collect(),
                codes: scheduler.codes,
                sources: scheduler.sources,
                outputs: scheduler.outputs,
            }
        });
    Ok((
        BuildReport {
            build: context.build,
            counts,
            interrupted: scheduler.interrupted,
            failures: scheduler.failures,
            all_current: None,
            unpresumed: scheduler
                .presumed
                .map(|presumed| {
                    presumed
                        .fell_back
                        .into_inner()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                })
                .unwrap_or_default(),
        },
        ran,
    ))
}

/// What a build whose actions all succeeded hands to [`settle`].
struct Ran {
    /// The actions the sweep found current, with their keys (and builds).
    keys: Vec<(usize, ActionKey, Option<u64>)>,
    /// The others: run or restored by this build.
    ran: Vec<usize>,
    codes: HashMap<String, Option<ContentDigest>>,
    sources: Vec<Result<ContentDigest, String>>,
    outputs: Vec<Option<Vec<ContentDigest>>>,
}

/// Checks again, through the settled witness, the actions a build ran or
/// restored (their outputs committed): the full check of a no-op build, so
/// that the witness holds what the next build would rely on. `None` if one
/// of them is not current (an output altered meanwhile): no snapshot.
fn settle(
    context: &Context<'_>,
    plan: &Plan,
    pool: &rayon::ThreadPool,
    witness: &dyn BuildWitness,
    ran: Ran,
) -> Option<AllCurrent> {
    let Ran {
        mut keys,
        ran,
        codes,
        sources,
        outputs,
    } = ran;
    if !ran.is_empty() {
        let started = Instant::now();
        witness.settle();
        // Its stat updates (the outputs just written, hashed again) are
        // not recorded: the snapshot holds them, and the stat cache's
        // entries from the build describe the same files.
        let decided =
            pool.install(|| finish_current(context, plan, &codes, &sources, &outputs, None, &ran));
        for (index, finished) in decided {
            let finished = finished?;
            keys.push((index, finished.key?, finished.built_by));
        }
        tracing::debug!(
            "checked the {} actions that ran or were restored again ({:.2?})",
            ran.len(),
            started.elapsed()
        );
    }
    Some(AllCurrent {
        keys,
        codes: sorted_codes(&codes),
    })
}

struct Scheduler<'a> {
    context: &'a Context<'a>,
    plan: &'a Plan,
    reporter: &'a dyn Reporter,
    sources: Vec<Result<ContentDigest, String>>,
    codes: HashMap<String, Option<ContentDigest>>,
    outputs: Vec<Option<Vec<ContentDigest>>>,
    state: Vec<State>,
    /// Unfinished upstream edges per action.
    remaining: Vec<usize>,
    progress: Progress,
    /// Events waiting for the next group commit, with when they happened.
    pending_events: Vec<(u64, EventKind)>,
    pending_updates: Vec<StatUpdate>,
    pending_reports: Vec<(usize, Option<ActionKey>, Outcome)>,
    failures: Vec<String>,
    /// Set after a failure (without --keep-going) or an interrupt: queued
    /// actions are skipped instead of run.
    stop: &'a AtomicBool,
    keep_going: bool,
    /// Whether each action's job was started (for the running count).
    started: Vec<bool>,
    interrupted: bool,
    in_flight: usize,
    ready: VecDeque<usize>,
    /// Workers waiting for a ready action (see [`work`]).
    idle_workers: usize,
    /// To the committer thread.
    groups: crossbeam_channel::Sender<Group>,
    /// Set by the committer when a commit failed: the build stops.
    commit_failed: &'a AtomicBool,
    /// The keys of the actions the sweep found current, while an
    /// up-to-date snapshot may still be taken (see [`BuildReport::all_current`]).
    current_keys: Option<Vec<(usize, ActionKey, Option<u64>)>>,
    presumed: Option<Presumption<'a>>,
    /// Where the actions that ran are queued for upload, if they are.
    upload_queue: Option<crossbeam_channel::Sender<crate::remote::Upload>>,
    /// Where ready actions go for their remote lookup to be asked ahead.
    lookahead: Option<crossbeam_channel::Sender<LookAhead>>,
}

impl<'a> Scheduler<'a> {
    /// Finishes, before anything is launched, the actions whose outputs are
    /// current and intact: wave by wave from the sources (an action joins a
    /// wave once all its upstream actions were found current), each wave
    /// decided in parallel chunks on the pool. A no-op build is then a few
    /// parallel loops instead of a task, two channel messages and a wake-up
    /// per action. What is not current (or could not be decided) is left
    /// in `ready` for the scheduler loop, which decides it again and runs,
    /// restores or records it.
    fn sweep_current(&mut self, pool: &rayon::ThreadPool, interrupt: &AtomicBool) {
        /// Actions decided per parallel step: bounds the resolved inputs
        /// held at once.
        const CHUNK: usize = 4096;
        // What the sweep releases is decided here, mostly current: asked
        // ahead only if it is deferred to the workers (below).
        let lookahead = self.lookahead.take();
        let mut wave: Vec<usize> = self
            .plan
            .order
            .iter()
            .copied()
            .filter(|&index| self.remaining[index] == 0)
            .collect();
        let mut deferred = Vec::new();
        while !wave.is_empty() {
            for chunk in wave.chunks(CHUNK) {
                if interrupt.load(Ordering::SeqCst) {
                    deferred.extend_from_slice(chunk);
                    continue;
                }
                let decided = pool.install(|| {
                    finish_current(
                        self.context,
                        self.plan,
                        &self.codes,
                        &self.sources,
                        &self.outputs,
                        self.presumed.as_ref(),
                        chunk,
                    )
                });
                for (index, finished) in decided {
                    match finished {
                        Some(finished) => {
                            if let (Some(keys), Some(key)) =
                                (self.current_keys.as_mut(), finished.key)
                            {
                                keys.push((index, key, finished.built_by));
                            }
                            self.pending_updates.extend(finished.updates);
                            self.finish(index, finished.key, finished.outcome, finished.outputs);
                        }
                        None => deferred.push(index),
                    }
                }
            }
            // `finish` queued the dependents whose upstreams are all current.
            wave = self.ready.drain(..).collect();
        }
        self.lookahead = lookahead;
        for &index in &deferred {
            self.ask_ahead(index);
        }
        self.ready.extend(deferred);
    }

    /// Hands a ready action to the lookahead, if the build has a remote
    /// cache: its lookup is asked before a worker takes it.
    fn ask_ahead(&self, index: usize) {
        let Some(queue) = &self.lookahead else {
            return;
        };
        let action = &self.plan.actions[index];
        if let Ok(Some(inputs)) = resolve_inputs(
            self.context,
            self.plan,
            action,
            &self.sources,
            &self.outputs,
        ) {
            let code = self.codes.get(&*action.job).copied().flatten();
            let _ = queue.send(LookAhead {
                index,
                inputs,
                code,
            });
        }
    }

    /// Sets `stop` and interrupts the running jobs once `interrupt` is set.
    fn check_interrupt(&mut self, interrupt: &AtomicBool) {
        if interrupt.load(Ordering::SeqCst) && !self.interrupted {
            self.interrupted = true;
            self.stop.store(true, Ordering::SeqCst);
            self.context.children.interrupt();
        }
    }

    /// The next ready action to run, with its inputs: counted in flight
    /// from here. An action whose input cannot be resolved (a missing
    /// source) fails here without running; once the build stops, ready
    /// actions are dropped (recorded as skipped when the build ends).
    fn take(&mut self) -> Take {
        while let Some(index) = self.ready.pop_front() {
            if self.stop.load(Ordering::SeqCst) {
                continue;
            }
            let action = &self.plan.actions[index];
            self.state[index] = State::Spawned;
            self.in_flight += 1;
            match resolve_inputs(
                self.context,
                self.plan,
                action,
                &self.sources,
                &self.outputs,
            ) {
                Ok(Some(inputs)) => {
                    let code = self.codes.get(&*action.job).copied().flatten();
                    return Take::Run(Task {
                        index,
                        inputs,
                        code,
                    });
                }
                Ok(None) => unreachable!("launched before its inputs were known"),
                Err(error) => {
                    let finished = failed_without_running(action, error);
                    self.handle(Message::Done(index, now_ms(), Box::new(finished)));
                }
            }
        }
        if self.in_flight == 0 {
            Take::Over
        } else {
            Take::Wait
        }
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Event(index, at, event) => {
                if let EventKind::ActionStarted { key, .. } = &*event
                    && !self.started[index]
                {
                    self.started[index] = true;
                    self.progress.running += 1;
                    self.reporter
                        .started(&self.plan.actions[index], key, self.progress);
                }
                if let EventKind::ActionCheckpointed { sequence, .. } = &*event {
                    self.reporter
                        .checkpointed(&self.plan.actions[index], *sequence);
                }
                if let EventKind::ActionJoined { joined_build, .. } = &*event {
                    self.reporter
                        .joined(&self.plan.actions[index], *joined_build, self.progress);
                }
                self.pending_events.push((at, *event));
            }
            Message::Done(index, at, finished) => {
                let finished = *finished;
                self.in_flight -= 1;
                if self.started[index] {
                    self.progress.running -= 1;
                }
                if let Some(queue) = &self.upload_queue {
                    for event in &finished.events {
                        if let EventKind::ActionSucceeded { manifest } = event {
                            let _ = queue.send(crate::remote::Upload {
                                manifest: Box::new(manifest.clone()),
                                outputs: self.plan.actions[index].config.outputs.to_vec(),
                            });
                        }
                    }
                }
                self.pending_events
                    .extend(finished.events.into_iter().map(|event| (at, event)));
                self.pending_updates.extend(finished.updates);
                self.finish(index, finished.key, finished.outcome, finished.outputs);
            }
        }
    }

    /// Marks `index` done, counts it, and releases or skips its dependents.
    fn finish(
        &mut self,
        index: usize,
        key: Option<ActionKey>,
        outcome: Outcome,
        outputs: Option<Vec<ContentDigest>>,
    ) {
        self.state[index] = State::Done;
        self.progress.done += 1;
        let counts = &mut self.progress.counts;
        match &outcome {
            Outcome::Executed { .. } => counts.executed += 1,
            Outcome::Cached { .. } => counts.cached += 1,
            Outcome::Failed { error, .. } => {
                counts.failed += 1;
                self.failures.push(error.clone());
            }
            Outcome::Skipped { .. } => counts.skipped += 1,
            Outcome::Joined { .. } => counts.joined += 1,
        }
        let succeeded = outputs.is_some();
        self.outputs[index] = outputs;
        self.pending_reports.push((index, key, outcome));
        let action = &self.plan.actions[index];
        if succeeded {
            for &dependent in &action.dependents {
                self.remaining[dependent] -= 1;
                if self.remaining[dependent] == 0 && self.state[dependent] == State::Waiting {
                    self.ready.push_back(dependent);
                    if !self.stop.load(Ordering::SeqCst) {
                        self.ask_ahead(dependent);
                    }
                }
            }
            return;
        }
        if !self.keep_going {
            self.stop.store(true, Ordering::SeqCst);
        }
        let because = action.config.outputs[0].clone();
        for &dependent in &action.dependents {
            if self.state[dependent] == State::Waiting {
                let skip = skipped(
                    &self.plan.actions[dependent],
                    format!("input {because} was not built"),
                );
                self.pending_events
                    .extend(skip.events.into_iter().map(|event| (now_ms(), event)));
                self.finish(dependent, None, skip.outcome, None);
            }
        }
    }

    /// Actions never launched because the build stopped.
    fn skip_unfinished(&mut self) {
        let reason = if self.interrupted {
            "the build was interrupted"
        } else {
            "the build stopped after a failure"
        };
        for index in 0..self.plan.actions.len() {
            if self.state[index] == State::Waiting {
                let skip = skipped(&self.plan.actions[index], reason.to_owned());
                self.pending_events
                    .extend(skip.events.into_iter().map(|event| (now_ms(), event)));
                self.state[index] = State::Done;
                self.progress.done += 1;
                self.progress.counts.skipped += 1;
                self.pending_reports.push((index, None, skip.outcome));
            }
        }
    }

    /// Closes a group and hands it to the committer (blobs durable, then
    /// events and stats, then reports). Fails once a commit has failed; the
    /// committer's own error is what the build reports.
    fn commit(&mut self) -> Result<(), ExecError> {
        if self.commit_failed.load(Ordering::SeqCst) {
            return Err(ExecError::Code("a catalog commit failed".into()));
        }
        if self.pending_events.is_empty()
            && self.pending_updates.is_empty()
            && self.pending_reports.is_empty()
        {
            return Ok(());
        }
        let group = Group {
            events: std::mem::take(&mut self.pending_events),
            updates: std::mem::take(&mut self.pending_updates),
            reports: std::mem::take(&mut self.pending_reports),
            progress: self.progress,
        };
        // A send fails only if the committer stopped on an error, which
        // `commit_failed` reports on the next call.
        let _ = self.groups.send(group);
        Ok(())
    }
}

/// The scheduler's state, shared by its workers and the thread that
/// closes the groups.
struct Shared<'a> {
    scheduler: Mutex<Scheduler<'a>>,
    /// Wakes a worker: an action became ready, or the work is over.
    work: Condvar,
    /// Wakes the closing thread: the work is over.
    main: Condvar,
}

impl<'a> Shared<'a> {
    fn lock(&self) -> MutexGuard<'_, Scheduler<'a>> {
        // A worker never panics while holding the lock (jobs run outside
        // it, and a panicking job is caught): keep going on the state.
        self.scheduler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a worker does next.
enum Take {
    Run(Task),
    /// Nothing ready, but actions in flight may release some.
    Wait,
    /// Nothing ready or in flight: the build's work is over.
    Over,
}

/// A ready action with its inputs resolved.
struct Task {
    index: usize,
    inputs: Vec<ResolvedInput>,
    code: Option<ContentDigest>,
}

/// A worker: takes a ready action, runs it outside the lock, hands its
/// result to the scheduler (which releases its dependents) and takes the
/// next, until the work is over.
fn work(shared: &Shared<'_>, interrupt: &AtomicBool) {
    let mut scheduler = shared.lock();
    loop {
        scheduler.check_interrupt(interrupt);
        let task = match scheduler.take() {
            Take::Run(task) => task,
            // What this worker put off is done before it waits or stops
            // (outside the lock), not left for a job that may never come.
            Take::Wait | Take::Over if staging::has_deferred() => {
                drop(scheduler);
                staging::handle_deferred();
                scheduler = shared.lock();
                continue;
            }
            Take::Wait => {
                scheduler.idle_workers += 1;
                scheduler = shared
                    .work
                    .wait(scheduler)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                scheduler.idle_workers -= 1;
                continue;
            }
            Take::Over => {
                drop(scheduler);
                shared.work.notify_all();
                shared.main.notify_all();
                return;
            }
        };
        // Idle workers may take what is ready beside this one: one wake-up
        // each, at most (each is a system call, and thousands of actions
        // may be ready at once).
        for _ in 0..scheduler.ready.len().min(scheduler.idle_workers) {
            shared.work.notify_one();
        }
        let context = scheduler.context;
        let plan = scheduler.plan;
        let stop = scheduler.stop;
        let keep_going = scheduler.keep_going;
        drop(scheduler);
        let action = &plan.actions[task.index];
        let index = task.index;
        let mut finished = if stop.load(Ordering::SeqCst) {
            let reason = if context.children.is_interrupted() {
                "the build was interrupted"
            } else {
                "the build stopped after a failure"
            };
            skipped(action, reason.to_owned())
        } else {
            let emit = |event| {
                shared
                    .lock()
                    .handle(Message::Event(index, now_ms(), Box::new(event)));
            };
            let performed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                context.perform(action, &task.inputs, task.code, &emit)
            }));
            // Done while the job ran (the runner's `started`), else now:
            // the action restored, failed before its job, or ran elsewhere.
            staging::handle_deferred();
            let finished = performed.unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                failed_without_running(
                    action,
                    format!("internal error: cairn panicked running this action: {what}"),
                )
            });
            // Stop queued actions at once, before this result is handled.
            if !keep_going && matches!(finished.outcome, Outcome::Failed { .. }) {
                stop.store(true, Ordering::SeqCst);
            }
            finished
        };
        let mut leftovers = std::mem::take(&mut finished.leftovers);
        // An emptied run directory is kept as a spare by this worker once
        // its next job has started (staging::defer_emptied_run_dir), so
        // that this worker takes the next action itself at once. Handing
        // the next action to an idle worker instead costs a wake-up per
        // action, which on a busy machine is a wait for a CPU: a chain
        // would go from worker to worker at every step.
        if leftovers
            .iter()
            .all(|leftover| matches!(leftover, staging::Leftover::EmptiedRunDir(_)))
        {
            for leftover in leftovers.drain(..) {
                if let staging::Leftover::EmptiedRunDir(run_dir) = leftover {
                    staging::defer_emptied_run_dir(run_dir);
                }
            }
        }
        scheduler = shared.lock();
        scheduler.handle(Message::Done(index, now_ms(), Box::new(finished)));
        if !leftovers.is_empty() {
            // A partition's earlier content can be a large tree: removed
            // once the scheduler has the result, while an idle worker takes
            // what is ready, so that the dependents do not wait for it.
            let more = scheduler.ready.len().min(scheduler.idle_workers);
            drop(scheduler);
            for _ in 0..more {
                shared.work.notify_one();
            }
            for leftover in leftovers {
                leftover.remove();
            }
            scheduler = shared.lock();
        }
    }
}

/// An action that failed before its job could run (a missing source, or
/// cairn itself failed running it).
fn failed_without_running(action: &PlannedAction, error: String) -> Finished {
    action::failure(action, None, error, None, (None, None), Vec::new())
}

pub(crate) fn skipped(action: &PlannedAction, reason: String) -> Finished {
    Finished {
        key: None,
        events: vec![EventKind::ActionSkipped {
            job: action.job.to_string(),
            outputs: action.config.outputs.to_vec(),
            reason: reason.clone(),
        }],
        updates: Vec::new(),
        outcome: Outcome::Skipped { reason },
        outputs: None,
        built_by: None,
        leftovers: Vec::new(),
    }
}
