//! Running operations (docs/api.md "Operations"): what every handler
//! shares ([`Shared`]), one operation's run through the use cases of
//! cairn-app on tokio's blocking pool, and the [`BuildObserver`] that keeps
//! its resource current.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::body::Bytes;
use axum::http::StatusCode;
use cairn_app::backfill::{Backfill, BackfillRequest};
use cairn_app::build::{BuildObserver, BuildRequest};
use cairn_app::{AppError, Workspace};
use cairn_engine::digest::ActionKey;
use cairn_engine::exec::{Outcome, Progress, Reporter};
use cairn_engine::plan::Plan;
use cairn_engine::plan::PlannedAction;
use cairn_engine::record::BuildCounts;
use cairn_engine::refs::PartitionRef;
use serde_json::{Value, json};

use crate::ServeOptions;
use crate::error::ApiError;
use crate::feed::Feed;
use crate::metrics::Metrics;
use crate::registry::{
    FailedPartition, Operation, Registry, RunningAction, State, Work, lock, now_ms, plural,
};

/// What every handler and run shares.
pub struct Shared {
    pub workspace: Workspace,
    pub token: String,
    pub public_read: bool,
    pub jobs: Option<usize>,
    pub grace: std::time::Duration,
    pub registry: Mutex<Registry>,
    pub feed: Feed,
    /// The dry runs submits share (server/src/expect.rs).
    pub expecting: Arc<crate::expect::Expecting>,
    /// The datasets' grids, kept per generation (server/src/grids.rs).
    pub grids: Arc<crate::grids::Grids>,
    pub metrics: Metrics,
    /// Set on SIGTERM/SIGINT: readyz answers 503, submits are refused.
    pub shutting_down: AtomicBool,
    /// Operations running now, and how many may (`--operations`): the
    /// others queue. Builds of the held store run side by side and share
    /// the actions they both need (docs/architecture.md).
    slots: (Mutex<usize>, std::sync::Condvar),
    max_running: usize,
    /// Where a submit queues its operation for the runner threads
    /// ([`Shared::start_runners`]); `None` once they were told to stop.
    /// Only the request path and the shutdown lock it, never a runner.
    queue: Mutex<Option<std::sync::mpsc::Sender<String>>>,
    /// The runners' end of the queue, until they start.
    queued: Mutex<Option<std::sync::mpsc::Receiver<String>>>,
    /// Bumped whenever an operation changes: wakes its event streams.
    pub changed: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    pub fn new(
        workspace: Workspace,
        token: String,
        options: &ServeOptions,
    ) -> Result<Shared, AppError> {
        let feed = Feed::new(&workspace)?;
        let (queue, queued) = std::sync::mpsc::channel();
        let restored = crate::restore::operations(&workspace, options.keep_operations)?;
        let mut metrics = Metrics::default();
        metrics.restored_events_read = restored.events_read;
        Ok(Shared {
            workspace,
            token,
            public_read: options.public_read,
            jobs: options.jobs,
            grace: options.grace,
            registry: Mutex::new({
                let mut registry = restored.registry;
                registry.set_bound(options.keep_operations);
                registry
            }),
            feed,
            expecting: Arc::default(),
            grids: Arc::default(),
            metrics,
            shutting_down: AtomicBool::new(false),
            slots: (Mutex::new(0), std::sync::Condvar::new()),
            max_running: options.operations.max(1),
            queue: Mutex::new(Some(queue)),
            queued: Mutex::new(Some(queued)),
            changed: tokio::sync::watch::Sender::new(0),
        })
    }

    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Wakes whoever follows operations.
    pub fn touch(&self) {
        self.changed.send_modify(|version| *version += 1);
    }

    /// The generation the grids are kept at (server/src/grids.rs): the
    /// store's last event seq and the change counter, read now.
    pub fn grid_generation(&self) -> crate::grids::Generation {
        (
            Feed::last_seq_in_store(&self.workspace),
            self.expecting.generation(),
        )
    }

    /// Computes dataset `name`'s grid: the `cairn status` of its
    /// partitions, serialized.
    pub fn grid_computation(
        self: &Arc<Self>,
        name: &str,
    ) -> impl Fn() -> Result<Bytes, ApiError> + Clone + Send + Sync + use<> {
        let shared = Arc::clone(self);
        let name = name.to_owned();
        move || {
            let graph = &shared.workspace.graph;
            let shape = crate::grid::shape(graph, &name)
                .map_err(ApiError::invalid)?
                .ok_or_else(|| ApiError::not_found(format!("no dataset {name:?} in the graph")))?;
            let requests = [shape.pattern.as_str().to_owned()];
            // Read before the status: an answer is never kept under a
            // later log than the one it saw (server/src/grids.rs).
            let stamp = cairn_app::status::stamp(&shared.workspace, &requests);
            let rows = cairn_app::status::states(&shared.workspace, &requests)?;
            let answer = crate::grid::grid(&shape, &rows);
            let body = serde_json::to_vec(&answer)
                .map(Bytes::from)
                .map_err(|error| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("the grid of {name:?}: {error}"),
                    )
                })?;
            if let Ok((_, stamp)) = stamp
                && let Err(error) =
                    crate::grids::keep_answer(&shared.kept_grids(), &name, &stamp, &body)
            {
                tracing::debug!("the grid of {name:?} is not kept for the next server: {error}");
            }
            Ok(body)
        }
    }

    /// Where the grids' answers are kept for the next server: the store's
    /// `grids/` (docs/internals.md, "Cache files").
    pub fn kept_grids(&self) -> std::path::PathBuf {
        self.workspace.store_dir.join("grids")
    }

    /// The answer an earlier server kept for dataset `name` under the
    /// store as it is now, with the generation to take it at (blocking).
    pub fn kept_grid(&self, name: &str) -> Option<(crate::grids::Generation, Bytes)> {
        let graph = &self.workspace.graph;
        let shape = crate::grid::shape(graph, name).ok()??;
        let requests = [shape.pattern.as_str().to_owned()];
        let generation = self.grid_generation();
        let (seq, stamp) = cairn_app::status::stamp(&self.workspace, &requests).ok()?;
        // The log moved between the two reads: no answer is known to fit.
        if seq != generation.0 {
            return None;
        }
        let body = crate::grids::kept_answer(&self.kept_grids(), name, &stamp)?;
        Some((generation, body))
    }

    /// After an operation ended or partitions were invalidated: the grids
    /// asked for lately are computed again in the background, unless an
    /// operation still runs or waits (its end warms them).
    pub fn warm_grids(self: &Arc<Self>) {
        if tokio::runtime::Handle::try_current().is_err()
            || !self.registry().unfinished().is_empty()
        {
            return;
        }
        let now = self.grid_generation();
        self.grids.warm(now, |name| self.grid_computation(name));
    }

    /// Jobs at once for a build asked `requested` (the server's `-j`
    /// otherwise).
    pub fn jobs_for(&self, requested: Option<usize>) -> usize {
        cairn_app::build::jobs(self.workspace.notes(), requested.or(self.jobs))
    }

    /// Cancels operation `id`: a queued one ends at once; a running one is
    /// stopped (its jobs get SIGTERM, then SIGKILL) and ends as cancelled
    /// when its actions stopped. Returns the operation, or `None` if there
    /// is none.
    pub fn cancel(&self, id: &str) -> Option<Value> {
        let mut registry = self.registry();
        let op = registry.get_mut(id)?;
        match op.state {
            State::Queued => op.cancel_queued(),
            State::Running => {
                op.cancel_requested = true;
                op.cancel.cancel();
            }
            _ => {}
        }
        let json = op.json();
        drop(registry);
        self.touch();
        Some(json)
    }

    /// Runs operation `id` to its end (on a blocking thread), on the
    /// workspace's held store, once the build slot is free.
    pub fn run(self: &Arc<Self>, id: &str) {
        let _slot = self.slot();
        let work = {
            let mut registry = self.registry();
            let Some(op) = registry.get_mut(id) else {
                return;
            };
            if op.state != State::Queued {
                return;
            }
            if self.shutting_down() {
                op.cancel_queued();
                drop(registry);
                self.touch();
                return;
            }
            op.state = State::Running;
            op.started_ms = Some(now_ms());
            op.start_seq = self.feed.head();
            // The submit's plan, unless an operation ended or partitions
            // were invalidated since its dry run was asked
            // (server/src/expect.rs): then the build plans afresh.
            let plan = op.take_dry_plan(self.expecting.generation());
            // Recorded in the build's `BuildRequested`: the log says which
            // operation each build was, who submitted it, when, why, and
            // what it announced (a restarted server shows it so).
            (op.work.clone(), plan, op.submission(), op.reason.clone())
        };
        let (work, plan, submission, reason) = work;
        self.touch();
        let Some(work) = work else {
            return;
        };
        let observer = OpObserver {
            shared: self,
            id,
            failed: AtomicBool::new(false),
        };
        let started = Instant::now();
        let ended = match &*work {
            Work::Build(request) => {
                let request = BuildRequest {
                    plan,
                    submission: Some(submission),
                    reason,
                    ..request.clone()
                };
                cairn_app::build::build(&self.workspace, &request, &observer).map(|built| {
                    let summary = serde_json::to_value(built.summary(started.elapsed()))
                        .unwrap_or(Value::Null);
                    Ended {
                        build: built.build(),
                        counts: built.counts(),
                        interrupted: built.interrupted(),
                        summary,
                    }
                })
            }
            Work::Backfill {
                backfill,
                request,
                retry,
            } => self.run_backfill(
                backfill,
                retry.as_deref(),
                plan.as_deref(),
                &BackfillRequest {
                    submission: Some(submission),
                    ..request.clone()
                },
                &observer,
                started,
            ),
        };
        // Before the operation shows as done: a client that saw it done
        // and submits again is told what is left now (server/src/expect.rs).
        self.expecting.changed();
        let end_seq = Feed::last_seq_in_store(&self.workspace);
        {
            let mut registry = self.registry();
            if let Some(op) = registry.get_mut(id) {
                op.finished_ms = Some(now_ms());
                op.end_seq = Some(end_seq.max(op.start_seq));
                op.running.clear();
                match ended {
                    Ok(ended) => {
                        op.build = Some(ended.build);
                        op.counts = ended.counts;
                        op.result = Some(ended.summary);
                        op.state = if ended.interrupted {
                            State::Cancelled
                        } else if ended.counts.failed > 0 {
                            State::Failed
                        } else {
                            State::Succeeded
                        };
                        op.error = match op.state {
                            State::Cancelled => Some(json!({
                                "code": cairn_app::error::EXIT_INTERRUPTED,
                                "status": "CANCELLED",
                                "message": if op.cancel_requested {
                                    "cancelled"
                                } else {
                                    "interrupted: the server is shutting down"
                                },
                                "failed": op.failed,
                            })),
                            State::Failed => Some(json!({
                                "code": cairn_app::error::EXIT_FAILED,
                                "status": "FAILED",
                                "message": format!("{} failed", plural(op.failed.len())),
                                "failed": op.failed,
                            })),
                            _ => None,
                        };
                    }
                    Err(error) => {
                        op.state = State::Failed;
                        let (_, status) = crate::error::status_of(&error);
                        op.error = Some(json!({
                            "code": error.exit_code(),
                            "status": status,
                            "message": error.to_string(),
                            "failed": op.failed,
                        }));
                    }
                }
            }
        }
        self.feed.poke();
        self.touch();
        self.warm_grids();
    }

    /// Waits for a free operation slot; it is freed when the guard drops.
    fn slot(&self) -> Slot<'_> {
        let (count, freed) = &self.slots;
        let mut running = lock(count);
        while *running >= self.max_running {
            running = freed
                .wait(running)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *running += 1;
        Slot(self)
    }

    fn run_backfill(
        &self,
        backfill: &Backfill,
        retry: Option<&[PartitionRef]>,
        planned: Option<&Plan>,
        request: &BackfillRequest,
        observer: &OpObserver<'_>,
        started: Instant,
    ) -> Result<Ended, AppError> {
        let made;
        let plan = match (planned, retry) {
            (Some(plan), _) => plan,
            (None, Some(refs)) => {
                made = self.workspace.plan(refs)?;
                &made
            }
            (None, None) => {
                made = self.workspace.plan(&backfill.refs())?;
                &made
            }
        };
        let backfilled =
            cairn_app::backfill::run(&self.workspace, backfill, plan, request, observer)?;
        let summary =
            serde_json::to_value(backfilled.summary(started.elapsed())).unwrap_or(Value::Null);
        Ok(Ended {
            build: backfilled.built.build(),
            counts: backfilled.built.counts(),
            interrupted: backfilled.built.interrupted(),
            summary,
        })
    }
}

/// An operation slot, held while an operation runs.
struct Slot<'a>(&'a Shared);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let (count, freed) = &self.0.slots;
        let mut running = lock(count);
        *running -= 1;
        let idle = *running == 0;
        drop(running);
        freed.notify_one();
        if idle {
            give_back_freed_memory();
        }
    }
}

/// Hands the heap a build freed back to the system once no operation
/// runs. glibc keeps what the threads of a build freed in their arenas,
/// so an idle server would otherwise keep its busiest build's peak: 20
/// MiB of the idle RSS after a 365x30 build (65.4 -> 45.2 MiB; issue 22's
/// budget is 64; docs/benchmarks.md, "cairn serve").
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only walks and trims the allocator's own free
    // lists under its locks; it takes no pointer from us.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How much lower than the server's the priority of an operation's
/// thread is (its nice value, `nice(2)`), and so of every thread its build
/// starts and every job process they spawn (Linux keeps a nice value per
/// thread, and a new thread or process starts with its creator's).
pub const BUILD_NICE: i32 = 10;

/// Queues operation `id` for the runner threads ([`Shared::start_runners`]).
/// Nothing here waits or makes a thread: a submit answers while builds
/// run. Starting a thread per operation on the request path, as before,
/// took 2 to 18 ms of a tokio worker per submit while builds ran (up to
/// 148 ms on a loaded machine: `clone` waits for the memory map the
/// builds' threads keep busy), and every request queued on that worker
/// waited with it: issue 22's "p99 submit latency while building"
/// (docs/benchmarks.md, "cairn serve").
pub fn start_run(shared: &Arc<Shared>, id: &str) {
    let sent = lock(&shared.queue)
        .as_ref()
        .is_some_and(|queue| queue.send(id.to_owned()).is_ok());
    if !sent {
        // The runners stopped (the server is shutting down): it never
        // runs, and says so rather than staying queued for ever.
        if let Some(op) = shared.registry().get_mut(id)
            && op.state == State::Queued
        {
            op.cancel_queued();
        }
        shared.touch();
    }
}

/// The threads that run operations, [`Shared::start_runners`].
pub struct Runners {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Shared {
    /// Starts the `--operations` threads that run the queued operations,
    /// each at a priority [`BUILD_NICE`] below the server's, and so the
    /// threads its builds start and their jobs. The request path (the
    /// tokio workers, the blocking pool's dry runs) keeps the server's
    /// priority, so a submit answered while builds keep every core busy
    /// waits for a core a fraction of the time it did (at nice 10 the
    /// scheduler weighs a build thread or job about a tenth of a request
    /// thread). Threads of their own rather than the blocking pool's: a
    /// nice value cannot be raised back without privileges, and a pool
    /// thread goes on to serve requests.
    pub fn start_runners(self: &Arc<Self>) -> std::io::Result<Runners> {
        let Some(queued) = lock(&self.queued).take() else {
            return Ok(Runners {
                threads: Vec::new(),
            });
        };
        let queued = Arc::new(Mutex::new(queued));
        let mut threads = Vec::new();
        for _ in 0..self.max_running {
            let shared = Arc::clone(self);
            let queued = Arc::clone(&queued);
            let thread = std::thread::Builder::new()
                .name("cairn-operation".into())
                .spawn(move || {
                    lower_priority();
                    loop {
                        // Only runners lock it; the sender never waits.
                        let next = lock(&queued).recv();
                        let Ok(id) = next else {
                            break;
                        };
                        // A panic in one operation's run (a bug) leaves
                        // the runner to run the next one.
                        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            shared.run(&id);
                        }));
                        if ran.is_err() {
                            tracing::error!("operation {id}: its run panicked");
                        }
                    }
                });
            match thread {
                Ok(thread) => threads.push(thread),
                Err(error) => {
                    let mut runners = Runners { threads };
                    self.stop_runners(&mut runners);
                    return Err(error);
                }
            }
        }
        Ok(Runners { threads })
    }

    /// Tells the runners to stop once the queue is empty and waits for
    /// them (after the shutdown's drain: every operation is done).
    pub fn stop_runners(&self, runners: &mut Runners) {
        lock(&self.queue).take();
        for thread in runners.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Lowers the calling thread's priority by [`BUILD_NICE`] (Linux: the nice
/// value is per thread). Best effort: a failure leaves it as it was.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    // SAFETY: nice(2) only changes the calling thread's scheduling
    // priority; it takes no pointer.
    unsafe {
        *libc::__errno_location() = 0;
        if libc::nice(BUILD_NICE) == -1 && *libc::__errno_location() != 0 {
            tracing::debug!("could not lower an operation thread's priority");
        }
    }
}

/// How a build returned.
struct Ended {
    build: u64,
    counts: BuildCounts,
    interrupted: bool,
    summary: Value,
}

/// Hears one operation's actions and keeps its resource current.
struct OpObserver<'a> {
    shared: &'a Arc<Shared>,
    id: &'a str,
    /// An action failed (for the metrics of failures).
    failed: AtomicBool,
}

impl OpObserver<'_> {
    fn update(&self, change: impl FnOnce(&mut Operation)) {
        if let Some(op) = self.shared.registry().get_mut(self.id) {
            change(op);
        }
        self.shared.touch();
    }
}

fn slot(action: &PlannedAction) -> usize {
    std::ptr::from_ref(action) as usize
}

impl Reporter for OpObserver<'_> {
    fn started(&self, action: &PlannedAction, key: &ActionKey, progress: Progress) {
        let running = RunningAction {
            slot: slot(action),
            key: key.to_string(),
            job: action.job.to_string(),
            outputs: action
                .config
                .outputs
                .iter()
                .map(|output| output.as_str().to_owned())
                .collect(),
            since_ms: now_ms(),
        };
        self.update(|op| {
            op.running.push(running);
            op.counts = progress.counts;
        });
    }

    fn finished(
        &self,
        action: &PlannedAction,
        _key: Option<&cairn_engine::digest::ActionKey>,
        outcome: &Outcome,
        progress: Progress,
    ) {
        self.shared.metrics.action(outcome);
        // Committed: the tailer reads it now rather than at its next tick.
        self.shared.feed.poke();
        let at = slot(action);
        let outputs = || {
            action
                .config
                .outputs
                .iter()
                .map(|output| output.as_str().to_owned())
        };
        self.update(|op| {
            op.running.retain(|running| running.slot != at);
            op.counts = progress.counts;
            match outcome {
                Outcome::Executed { duration_ms } => {
                    op.durations.0 += duration_ms;
                    op.durations.1 += 1;
                }
                Outcome::Failed { error, stderr_tail } => {
                    self.failed.store(true, Ordering::Relaxed);
                    let tail = stderr_tail.join("\n");
                    for partition in outputs() {
                        op.failed.push(FailedPartition {
                            partition: partition.clone(),
                            job: action.job.to_string(),
                            error: error.clone(),
                            log_tail: tail.clone(),
                        });
                        op.unfinished.push(partition);
                    }
                }
                Outcome::Skipped { .. } => op.unfinished.extend(outputs()),
                Outcome::Cached { .. } | Outcome::Joined { .. } => {}
            }
        });
    }
}

impl BuildObserver for OpObserver<'_> {
    fn found_current(&self, snapshot: &cairn_engine::uptodate::Snapshot) {
        let total = snapshot.actions.len() as u64;
        self.shared.metrics.cached(total);
        self.update(|op| {
            op.counts.cached = total;
        });
    }
}
