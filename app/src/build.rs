//! The build use case: `cairn build` (and the build a backfill runs).
//!
//! [`build`] first tries the up-to-date snapshot (app/src/uptodate.rs):
//! when it confirms that every action is current the build is recorded
//! without planning; when only a few recorded paths changed, the build
//! plans (or reads the kept plan) and presumes the other actions current.
//! Otherwise it plans and runs everything through the engine
//! ([`execute`]). [`dry_run`] says what a build would do, and records
//! nothing. What happens while the build runs goes to a [`BuildObserver`]
//! (the command line's progress bar and JSON lines); what it did comes
//! back as a [`Built`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_engine::action::Context;
use cairn_engine::evaluate::{Verdict, evaluate};
use cairn_engine::exec::{BuildOptions, BuildReport, Reporter};
use cairn_engine::plan::Plan;
use cairn_engine::record::BuildCounts;
pub use cairn_engine::record::Submission;
use cairn_engine::runner::Children;
use cairn_engine::uptodate::{Snapshot, Witness, presume};
use cairn_store::Store;

use crate::error::AppError;
use crate::error::{EXIT_FAILED, EXIT_INTERRUPTED};
use crate::uptodate::{Assisted, Base, Leave, Quick};
use crate::workspace::{Notes, StoreHandle, Workspace};

/// What `cairn build` is asked.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// Refs or patterns (empty: every partition the graph declares).
    pub refs: Vec<String>,
    /// Jobs at once (default: the number of cores).
    pub jobs: Option<usize>,
    /// Keep building independent actions after a failure.
    pub keep_going: bool,
    /// Fail at once if another cairn holds the store, instead of waiting.
    pub no_wait: bool,
    /// Extra attempts for a failing job (overrides each job's `retries`).
    pub retries: Option<u32>,
    /// Stops the build when cancelled. `None` (the command line): SIGINT
    /// and SIGTERM stop it, through handlers installed while it runs; with
    /// a `Cancel` no signal handler is installed.
    pub cancel: Option<Cancel>,
    /// The server operation this build runs, recorded in its
    /// `BuildRequested` (store format 9).
    pub submission: Option<Submission>,
    /// Why it was asked for, recorded in its `BuildRequested` (a server's
    /// submit gives the request's `reason`).
    pub reason: Option<String>,
    /// The plan of these refs that a [`dry_run_for_build`] just made or
    /// took (the server's submit, server/src/expect.rs), used instead of
    /// planning again: planning is a function of the graph file, the refs
    /// and the configure answers, which that dry run cached (or, after a
    /// change, the plan kept with the up-to-date snapshot, which the build
    /// that made it cached). The caller gives it only while nothing changed
    /// since. A plan kept with the up-to-date snapshot still comes first.
    pub plan: Option<Arc<Plan>>,
}

/// A handle that stops a build from outside it, as SIGINT does on the
/// command line: [`Cancel::cancel`] stops scheduling and sends the running
/// jobs SIGTERM (SIGKILL after
/// [`TERM_GRACE`](cairn_engine::runner::TERM_GRACE)); [`Cancel::kill_now`]
/// SIGKILLs them at once. Cheap to clone; every clone cancels the same
/// builds. Cancelling before the build starts stops it as soon as it does.
#[derive(Clone, Default)]
pub struct Cancel(Arc<CancelState>);

#[derive(Default)]
struct CancelState {
    /// The engine's stop flag (`BuildOptions::interrupt`).
    requested: AtomicBool,
    now: AtomicBool,
    /// The children of the builds this handle was given to, while they run.
    children: std::sync::Mutex<Vec<std::sync::Weak<Children>>>,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel")
            .field("cancelled", &self.is_cancelled())
            .field("now", &self.0.now.load(Ordering::SeqCst))
            .finish()
    }
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Stops the build(s) given this handle: no action starts any more,
    /// running jobs get SIGTERM, then SIGKILL after the grace. Idempotent.
    pub fn cancel(&self) {
        let children = self.children();
        self.0.requested.store(true, Ordering::SeqCst);
        for children in children.iter().filter_map(std::sync::Weak::upgrade) {
            children.interrupt();
        }
    }

    /// [`Cancel::cancel`], and SIGKILLs the running jobs at once.
    pub fn kill_now(&self) {
        let children = self.children();
        self.0.now.store(true, Ordering::SeqCst);
        self.0.requested.store(true, Ordering::SeqCst);
        for children in children.iter().filter_map(std::sync::Weak::upgrade) {
            children.kill_now();
        }
    }

    /// Whether [`Cancel::cancel`] (or [`Cancel::kill_now`]) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.requested.load(Ordering::SeqCst)
    }

    /// The flag the engine stops on.
    fn flag(&self) -> &AtomicBool {
        &self.0.requested
    }

    fn children(&self) -> std::sync::MutexGuard<'_, Vec<std::sync::Weak<Children>>> {
        self.0
            .children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Gives this handle a build's children: a cancel that came first
    /// applies to them at once.
    fn attach(&self, attached: &Arc<Children>) {
        let mut children = self.children();
        children.retain(|children| children.strong_count() > 0);
        children.push(Arc::downgrade(attached));
        if self.0.now.load(Ordering::SeqCst) {
            attached.kill_now();
        } else if self.0.requested.load(Ordering::SeqCst) {
            attached.interrupt();
        }
    }
}

/// What a front end hears while a build runs: the engine's per-action
/// [`Reporter`] calls, and two of the build's own.
pub trait BuildObserver: Reporter {
    /// The engine is done: no action starts or finishes any more (a
    /// progress bar goes away before the build's warnings and summary).
    fn actions_done(&self) {}

    /// The up-to-date snapshot finished the build: every action of
    /// `snapshot` (in the plan's order) is current, with its key; there
    /// were no per-action calls.
    fn found_current(&self, _snapshot: &Snapshot) {}
}

/// An observer that hears nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unobserved;

impl Reporter for Unobserved {}
impl BuildObserver for Unobserved {}

/// How to run a planned build: what `cairn build` and `cairn backfill`
/// share.
#[derive(Debug, Clone)]
pub struct Execution<'a> {
    /// Jobs at once (default: the number of cores).
    pub jobs: Option<usize>,
    pub keep_going: bool,
    pub no_wait: bool,
    pub retries: Option<u32>,
    /// Recorded in `BuildRequested`, with `command` and `reason`.
    pub requested: Vec<String>,
    pub command: &'a str,
    pub reason: Option<String>,
    /// Whether a build that finds every action current records an
    /// up-to-date snapshot for the next identical `cairn build`.
    pub snapshot: bool,
    /// Stops the build when cancelled; `None`: SIGINT/SIGTERM do (see
    /// [`BuildRequest::cancel`]).
    pub cancel: Option<Cancel>,
    /// Recorded in `BuildRequested` (see [`BuildRequest::submission`]).
    pub submission: Option<Submission>,
}

/// A finished (or interrupted) build, with the store it wrote, closed
/// when this is dropped (writing the up-to-date snapshot the build leaves,
/// if any).
pub struct Built {
    pub report: BuildReport,
    /// Actions in the plan.
    pub total: u64,
    /// The plan the build made or read (`None` when the snapshot finished
    /// the build without one, or the caller planned). A front end about to
    /// exit may leave it to the process's exit rather than free it.
    pub plan: Option<Plan>,
    /// `Some` until dropped (the workspace's held store is not closed).
    store: Option<StoreHandle>,
    /// The up-to-date snapshot the build leaves, written while the store
    /// closes (`Store::close_writing_snapshot`).
    snapshot: Option<Leave>,
    /// What the shared remote cache did, if the build used one, and the
    /// warnings it gave (docs/remote-cache.md).
    pub remote: Option<cairn_engine::remote::RemoteSummary>,
}

impl Drop for Built {
    fn drop(&mut self) {
        let Some(handle) = self.store.take() else {
            return;
        };
        let Some(snapshot) = self.snapshot.take() else {
            return;
        };
        let started = std::time::Instant::now();
        let written = match handle.into_opened() {
            Ok(store) => store.close_writing_snapshot(&snapshot.write()),
            // The held store stays open for the workspace's other builds.
            Err(held) => held.write_snapshot(&snapshot.write()),
        };
        match written {
            Ok(()) => tracing::debug!(
                "recorded the up-to-date snapshot ({}) while closing the store ({:.2?})",
                snapshot.describe(),
                started.elapsed()
            ),
            Err(error) => tracing::warn!("could not record the up-to-date snapshot: {error}"),
        }
    }
}

impl Built {
    fn new(report: BuildReport, total: u64, store: StoreHandle, snapshot: Option<Leave>) -> Self {
        Built {
            report,
            total,
            plan: None,
            store: Some(store),
            snapshot,
            remote: None,
        }
    }

    /// The store the build wrote, open until this is dropped.
    pub fn store(&self) -> &Store {
        self.store
            .as_ref()
            .expect("the store is open until dropped")
    }

    /// The build's id.
    pub fn build(&self) -> u64 {
        self.report.build
    }

    pub fn counts(&self) -> BuildCounts {
        self.report.counts
    }

    pub fn interrupted(&self) -> bool {
        self.report.interrupted
    }

    /// The summary line of `--json`; `elapsed`: the command's wall time.
    pub fn summary(&self, elapsed: std::time::Duration) -> crate::dto::build::BuildSummary {
        let mut summary = crate::dto::build::BuildSummary::new(
            self.report.build,
            self.total,
            self.report.counts,
            self.report.interrupted,
            elapsed,
        );
        summary.remote = self.remote.as_ref().map(Into::into);
        summary
    }

    /// 130 if interrupted, 1 if an action failed, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.report.interrupted {
            EXIT_INTERRUPTED
        } else if self.report.counts.failed > 0 {
            EXIT_FAILED
        } else {
            0
        }
    }
}

/// What a dry run found. Nothing was run or recorded.
pub enum DryRun {
    /// The up-to-date snapshot confirmed that nothing changed since the
    /// last build: every action of it is up to date, in the plan's order.
    Current(Snapshot),
    /// The plan and each action's verdict, by plan index. The plan's
    /// `requested` is empty unless the dry run was made for a build
    /// (`dry_run_planning`) and planned everything: nothing of a dry run's
    /// own reads it, nor a build (the kept plan a build with a changed
    /// input runs, which a dry run after a change returns, holds none).
    Planned { plan: Plan, verdicts: Vec<Verdict> },
}

impl DryRun {
    /// Actions, and how many would run (`executed`), are up to date or
    /// restorable (`cached`) or blocked (`skipped`). Counts assume every
    /// upstream rebuild changes its output.
    pub fn counts(&self) -> (u64, BuildCounts) {
        match self {
            DryRun::Current(snapshot) => {
                let total = snapshot.actions.len() as u64;
                let counts = BuildCounts {
                    cached: total,
                    ..BuildCounts::default()
                };
                (total, counts)
            }
            DryRun::Planned { plan, verdicts } => {
                (plan.actions.len() as u64, Verdict::count(verdicts))
            }
        }
    }
}

/// Jobs at once: `requested`, else the number of cores; at most
/// [`MAX_JOBS`](cairn_engine::limits::MAX_JOBS), each slot being a thread
/// (a larger `-j` is clamped, with a note the first time).
pub fn jobs(notes: &dyn Notes, requested: Option<usize>) -> usize {
    static NOTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let max = cairn_engine::limits::MAX_JOBS;
    let jobs = requested.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    if jobs > max {
        if requested.is_some() && !NOTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            notes.note(&format!(
                "-j {jobs} clamped to {max}, the most jobs cairn runs at once"
            ));
        }
        return max;
    }
    jobs.max(1)
}

/// `cairn build --dry-run REFS`: what a build would do, from the
/// up-to-date snapshot when it confirms that nothing changed, else from a
/// plan and its verdicts (configure answers cached before are used, none
/// is written).
pub fn dry_run(
    workspace: &Workspace,
    refs: &[String],
    jobs: Option<usize>,
) -> Result<DryRun, AppError> {
    dry_run_planning(workspace, refs, jobs, false)
}

/// The dry run of a build about to run (a server's submit): as
/// [`dry_run`], but it plans as the build does
/// ([`Workspace::plan_for_build`]: code files checked, configure answers
/// cached), so that the build may take its plan ([`BuildRequest::plan`])
/// instead of planning again.
pub fn dry_run_for_build(
    workspace: &Workspace,
    refs: &[String],
    jobs: Option<usize>,
) -> Result<DryRun, AppError> {
    dry_run_planning(workspace, refs, jobs, true)
}

fn dry_run_planning(
    workspace: &Workspace,
    refs: &[String],
    jobs: Option<usize>,
    for_build: bool,
) -> Result<DryRun, AppError> {
    let started = std::time::Instant::now();
    let threads = self::jobs(workspace.notes(), jobs);
    match crate::uptodate::try_dry(workspace, refs, threads)? {
        crate::uptodate::Dry::Current(snapshot) => {
            tracing::debug!(
                "dry run answered from the snapshot ({:.2?})",
                started.elapsed()
            );
            return Ok(DryRun::Current(*snapshot));
        }
        crate::uptodate::Dry::Changed(confirmed) => {
            if let Some(dry) = dry_run_presumed(workspace, *confirmed)? {
                tracing::debug!(
                    "dry run answered from the snapshot and its kept plan ({:.2?})",
                    started.elapsed()
                );
                return Ok(dry);
            }
        }
        crate::uptodate::Dry::Full => {}
    }
    let requested = workspace.requested(refs)?;
    tracing::debug!(
        "{} refs requested ({:.2?})",
        requested.len(),
        started.elapsed()
    );
    let mut plan = if for_build {
        workspace.plan_for_build(&requested)?
    } else {
        workspace.plan(&requested)?
    };
    // Not needed past planning (a million refs: 16 MB through the
    // evaluation, where a dry run's memory peaks).
    drop(requested);
    if !for_build {
        // Nor is the plan's own copy read by a dry run (its listing and
        // counts are the actions'); the one for a build is kept for it.
        drop(std::mem::take(&mut plan.requested));
    }
    tracing::debug!(
        "planned {} actions, {} sources ({:.2?})",
        plan.actions.len(),
        plan.sources.len(),
        started.elapsed()
    );
    let evaluating = std::time::Instant::now();
    let verdicts =
        workspace.read_context(|context| evaluate(context, &plan).map_err(AppError::from))?;
    tracing::debug!("evaluated ({:.2?})", evaluating.elapsed());
    Ok(DryRun::Planned { plan, verdicts })
}

/// The dry run of a build whose snapshot `confirmed` found current but
/// for a few changed paths or what a failed build since left to check,
/// as that build would take it ([`presume`]): the actions neither
/// concerns are up to date, reusing the build the snapshot names, and the
/// others get the full dry run's verdict, planned and evaluated with their
/// upstream alone (an action's verdict is a function of its upstream: its
/// key is a hash of it). At 10⁶ partitions this is the snapshot's stat
/// pass and the kept plan instead of planning and evaluating everything.
/// `None` (the full dry run, which reports any error itself) without a
/// kept plan; where the new plan's actions are not the kept plan's (job
/// and config, `agrees_with_kept`); where it finds a presumed action other
/// than up to date under the snapshot's key and build; or if planning or
/// evaluating them fails.
fn dry_run_presumed(
    workspace: &Workspace,
    confirmed: crate::uptodate::Confirmed,
) -> Result<Option<DryRun>, AppError> {
    let Some(presumed) = confirmed.presume(&workspace.data_root) else {
        return Ok(None);
    };
    let crate::uptodate::Presumed {
        plan,
        keys,
        built_by,
        changed,
        recheck,
    } = presumed;
    let mut verdicts: Vec<Option<Verdict>> = keys
        .iter()
        .zip(&built_by)
        .map(|(key, &built_by)| key.map(|key| Verdict::UpToDate { key, built_by }))
        .collect();
    let refs: Vec<cairn_engine::refs::PartitionRef> = plan
        .actions
        .iter()
        .zip(&keys)
        .filter(|(_, key)| key.is_none())
        .filter_map(|(action, _)| action.config.outputs.first().cloned())
        .collect();
    let concerned = keys.iter().filter(|key| key.is_none()).count();
    // Whether they agree with the kept plan before any is evaluated.
    let (own, kept) = match crate::uptodate::plan_agreeing(workspace, &plan, &refs, "dry run") {
        Ok(Some(agreeing)) => agreeing,
        Ok(None) => return Ok(None),
        Err(error) => {
            tracing::debug!("dry run: the concerned actions' plan failed: {error}");
            return Ok(None);
        }
    };
    let evaluated =
        match workspace.read_context(|context| evaluate(context, &own).map_err(AppError::from)) {
            Ok(evaluated) => evaluated,
            Err(error) => {
                tracing::debug!("dry run: the concerned actions' evaluation failed: {error}");
                return Ok(None);
            }
        };
    for (verdict, index) in evaluated.into_iter().zip(kept) {
        match keys[index] {
            // Upstream of what is concerned: presumed, as the build takes
            // it, and found so again.
            Some(key) => {
                let again = Verdict::UpToDate {
                    key,
                    built_by: built_by[index],
                };
                if verdict != again {
                    tracing::debug!(
                        "dry run: a presumed action is {} when planned again",
                        verdict.state()
                    );
                    return Ok(None);
                }
            }
            None => verdicts[index] = Some(verdict),
        }
    }
    let Some(verdicts) = verdicts.into_iter().collect::<Option<Vec<Verdict>>>() else {
        return Ok(None);
    };
    tracing::debug!(
        "dry run: presumed {} of {} actions current from the snapshot, evaluated {} planned for the other {concerned} ({changed} changed paths, {recheck} actions left to check)",
        plan.actions.len() - concerned,
        plan.actions.len(),
        own.actions.len(),
    );
    Ok(Some(DryRun::Planned { plan, verdicts }))
}

/// `cairn build REFS`: builds them, the up-to-date snapshot first (see the
/// module's documentation).
pub fn build(
    workspace: &Workspace,
    request: &BuildRequest,
    observer: &dyn BuildObserver,
) -> Result<Built, AppError> {
    let started = std::time::Instant::now();
    // A held store's other builds append while this one runs: the
    // snapshot this build may leave must not vouch for their events.
    let since = held_log_end(workspace)?;
    let asked = crate::uptodate::Asked {
        requested: &request.refs,
        jobs: jobs(workspace.notes(), request.jobs),
        no_wait: request.no_wait,
        reason: request.reason.as_deref(),
        submission: request.submission.as_ref(),
    };
    let mut assisted = match crate::uptodate::try_quick(workspace, &asked)? {
        Quick::Done(done) => {
            observer.found_current(&done.snapshot);
            let total = done.snapshot.actions.len() as u64;
            let head = done.snapshot;
            let rewrite = done
                .patch
                .map(|(file, patch)| Leave::Patch { head, file, patch });
            tracing::debug!(
                "build finished from the snapshot ({:.2?})",
                started.elapsed()
            );
            return Ok(Built::new(done.report, total, done.store, rewrite));
        }
        Quick::Assist(found) => Some(found),
        Quick::Full => None,
    };
    // The plan kept with the snapshot is this build's plan: the snapshot
    // was confirmed but for a few changed paths, and planning is a
    // function of what it pins.
    // Without it (missing, damaged), the snapshot this build leaves keeps
    // the plan made now.
    let kept = assisted.as_mut().and_then(|assisted| {
        let digest = assisted.snapshot.plan.take()?;
        let plan = match assisted.kept_plan.take() {
            Some(read) => read,
            None => assisted.store.read_plan(&digest),
        }?;
        assisted.snapshot.plan = Some(digest);
        Some(plan)
    });
    let plan = match (kept, &request.plan) {
        (Some(plan), _) => {
            tracing::debug!("read the kept plan ({:.2?})", started.elapsed());
            plan
        }
        (None, Some(given)) => {
            tracing::debug!("took the dry run's plan ({:.2?})", started.elapsed());
            Arc::unwrap_or_clone(Arc::clone(given))
        }
        (None, None) => {
            let refs = workspace.requested(&request.refs)?;
            tracing::debug!("{} refs requested ({:.2?})", refs.len(), started.elapsed());
            workspace.plan_for_build(&refs)?
        }
    };
    tracing::debug!(
        "planned {} actions, {} sources ({:.2?})",
        plan.actions.len(),
        plan.sources.len(),
        started.elapsed()
    );
    let mut built = execute_assisted(
        workspace,
        &plan,
        &Execution {
            jobs: request.jobs,
            keep_going: request.keep_going,
            no_wait: request.no_wait,
            retries: request.retries,
            requested: request.refs.clone(),
            command: "build",
            reason: request.reason.clone(),
            snapshot: true,
            cancel: request.cancel.clone(),
            submission: request.submission.clone(),
        },
        assisted,
        since,
        observer,
    )?;
    built.plan = Some(plan);
    Ok(built)
}

/// The last event's seq of the workspace's held store (0: none), or
/// `None` when the workspace holds no store (then no other build of the
/// process can append).
fn held_log_end(workspace: &Workspace) -> Result<Option<u64>, AppError> {
    let Some(store) = workspace.held_store() else {
        return Ok(None);
    };
    Ok(Some(store.last_event()?.map_or(0, |last| last.seq)))
}

/// Whether every event after seq `since` in `store`'s log is `build`'s:
/// no other build of a held store appended while this one planned and
/// ran, so what this build observed is the whole story of its window and
/// its snapshot may vouch for the log up to its last event.
fn alone_since(store: &Store, since: u64, build: u64) -> Result<bool, AppError> {
    let mut alone = true;
    cairn_engine::ports::EventLog::scan_events(store.catalog(), since + 1, &mut |event| {
        alone = event.build == build;
        alone
    })?;
    Ok(alone)
}

/// Runs `plan` through the engine: takes the writer lock, stops on
/// SIGINT/SIGTERM, tells `observer` of each action as it starts and
/// finishes.
pub fn execute(
    workspace: &Workspace,
    plan: &Plan,
    execution: &Execution<'_>,
    observer: &dyn BuildObserver,
) -> Result<Built, AppError> {
    let since = held_log_end(workspace)?;
    execute_assisted(workspace, plan, execution, None, since, observer)
}

/// [`execute`], with `assisted`: the store `cairn build`'s snapshot check
/// already holds, and the snapshot it found current but for a few changed
/// paths.
fn execute_assisted(
    workspace: &Workspace,
    plan: &Plan,
    execution: &Execution<'_>,
    assisted: Option<Assisted>,
    since: Option<u64>,
    observer: &dyn BuildObserver,
) -> Result<Built, AppError> {
    let started = std::time::Instant::now();
    if assisted.is_none() {
        cairn_engine::exec::check_code_files(
            &workspace.graph,
            plan.actions.iter().map(|action| &*action.job),
        )?;
    }
    let (store, base) = match assisted {
        Some(Assisted {
            snapshot,
            file,
            found,
            recheck,
            kept_plan: _,
            store,
        }) => {
            let presumed = presume(
                &snapshot,
                &found.changed,
                &recheck,
                plan,
                &workspace.data_root,
            );
            match &presumed {
                Some(keys) => tracing::debug!(
                    "presumed {} of {} actions current from the snapshot ({:.2?})",
                    keys.iter().flatten().count(),
                    keys.len(),
                    started.elapsed()
                ),
                None => tracing::debug!(
                    "the snapshot's changed paths are not the plan's: checking every action"
                ),
            }
            let base = Base {
                head: snapshot,
                file,
                found,
            };
            (store, presumed.map(|keys| (keys, base)))
        }
        None => (workspace.open_writer(!execution.no_wait)?, None),
    };
    tracing::debug!("opened the store ({:.2?})", started.elapsed());
    // One store's build at a time in a data directory (docs/reliability.md);
    // a held workspace claimed it for its whole life.
    let _data_root = if workspace.is_held() {
        None
    } else {
        Some(cairn_store::DataRootLock::acquire(
            &workspace.data_root,
            &workspace.store_dir,
        )?)
    };
    let children = Arc::new(Children::recorded_in(store.dir().join("running")));
    // The caller's cancel, or one the signal handlers drive (the command
    // line's: SIGINT/SIGTERM).
    let cancel = execution.cancel.clone().unwrap_or_default();
    cancel.attach(&children);
    let _interrupts = match execution.cancel {
        Some(_) => None,
        None => Some(Interrupts::watch(
            &cancel,
            &children,
            workspace.notes_handle(),
        )?),
    };
    cairn_engine::groups::become_subreaper();
    let build_id = cairn_engine::ports::EventLog::next_build_id(store.catalog())?;
    store.record_build(build_id);
    // What `status` and `why` of a held workspace show as running.
    let _running = workspace.running_build(build_id);
    // Where the jobs run (docs/slurm.md): the Slurm runner asks Slurm for
    // its partition's CPUs first, so an unreachable Slurm fails the build
    // before anything runs.
    let staging_root = workspace.data_root.join(".cairn-tmp");
    let slurm = match workspace.graph.executor.kind {
        cairn_engine::executor::ExecutorKind::Local => None,
        cairn_engine::executor::ExecutorKind::Slurm => {
            let worker = std::env::current_exe().map_err(|error| {
                AppError::StoreProblem(format!(
                    "cannot find this cairn's binary for the Slurm worker: {error}"
                ))
            })?;
            let cache = match workspace.graph.executor.data {
                cairn_engine::executor::DataMode::Shared => None,
                cairn_engine::executor::DataMode::Cache => {
                    Some(crate::remote::open_for_workers(workspace)?)
                }
            };
            Some(
                cairn_engine::slurm::SlurmRunner::new(
                    &workspace.graph,
                    &staging_root.join("slurm"),
                    workspace.graph.executor.worker.clone().unwrap_or(worker),
                    cache,
                )
                .map_err(|error| AppError::StoreProblem(format!("executor slurm: {error}")))?,
            )
        }
    };
    let runner: &dyn cairn_engine::job::JobRunner = match &slurm {
        Some(slurm) => slurm,
        None => &cairn_engine::local::LocalRunner,
    };
    let witness = (execution.snapshot && cairn_engine::uptodate::graph_allows(&workspace.graph))
        .then(|| Witness::new(store.catalog()));
    let remote = crate::remote::open(workspace)?;
    let context = Context {
        graph: &workspace.graph,
        data_root: workspace.data_root.clone(),
        staging_root,
        catalog: match &witness {
            Some(witness) => witness,
            None => store.catalog(),
        },
        blobs: store.blobs(),
        environment: &workspace.environment,
        children: &children,
        runner,
        build: build_id,
        retries: execution.retries,
        real_dirs: Default::default(),
        programs: Default::default(),
        code_changes: Default::default(),
        in_flight: workspace.in_flight(),
        remote: remote.as_ref(),
    };
    let options = BuildOptions {
        jobs: jobs(
            workspace.notes(),
            execution.jobs.or(slurm
                .as_ref()
                .map(cairn_engine::slurm::SlurmRunner::default_jobs)),
        ),
        keep_going: execution.keep_going,
        interrupt: cancel.flag(),
        requested: execution.requested.clone(),
        command: execution.command.to_owned(),
        reason: execution.reason.clone(),
        witness: witness.as_ref().map(|witness| witness as _),
        presumed: base.as_ref().map(|(keys, _)| keys.as_slice()),
        submission: execution.submission.clone(),
    };
    let report = cairn_engine::exec::build(&context, plan, &options, observer);
    // No job of this build runs any more: whatever one left re-parented to
    // cairn goes; only this build's, while other builds of this process
    // (a held workspace) run theirs.
    if cairn_engine::exec::builds_running() == 0 {
        cairn_engine::groups::reap_all_orphans();
    } else {
        cairn_engine::groups::reap_session_orphans(children.session());
    }
    let mut report = report?;
    observer.actions_done();
    // Kept partitions whose job's code changed (on_code_change = "warn";
    // "error" failed its actions): said on every build until acknowledged,
    // so no snapshot lets the next build skip saying it.
    let code_changes = context.code_changes.summary();
    drop(context);
    for (change, partitions) in &code_changes {
        if change.mode == cairn_engine::graph::OnCodeChange::Warn {
            workspace.notes().warning(&format!(
                "job {}: {} of {}: {}",
                change.job,
                crate::text::count(*partitions, "partition"),
                change.dataset,
                change.kept()
            ));
        }
    }
    let crowded = match since {
        Some(since) if report.all_current.is_some() => !alone_since(&store, since, build_id)?,
        _ => false,
    };
    if crowded {
        tracing::debug!(
            "no up-to-date snapshot: another build of the held store appended while this one ran"
        );
    }
    let all_current = report.all_current.take();
    if all_current.is_some() {
        // Every action current: nothing left for the next build to check.
        store.forget_recheck();
    }
    let snapshot = match all_current {
        Some(_) if !code_changes.is_empty() || crowded => None,
        Some(all_current) => witness.and_then(Witness::into_entries).and_then(|entries| {
            crate::uptodate::record(
                workspace,
                &store,
                plan,
                &execution.requested,
                all_current,
                entries,
                base.map(|(_, base)| base),
            )
        }),
        // A build that presumed actions from the snapshot and did not end
        // with every action current: the snapshot still describes every
        // action it presumed, so the next build may presume them again
        // and check the rest, if no event but this build's came since.
        None => {
            if let Some((keys, base)) = &base
                && code_changes.is_empty()
            {
                keep_recheck(&store, keys, &report.unpresumed, base, since, build_id);
            }
            None
        }
    };
    let mut built = Built::new(report, plan.actions.len() as u64, store, snapshot);
    built.remote = remote.as_ref().map(cairn_engine::remote::Remote::summary);
    Ok(built)
}

/// Keeps what a build that presumed actions from the snapshot and did not
/// end with every action current leaves for the next one
/// ([`cairn_engine::uptodate::Recheck`]): every action it did not presume,
/// or presumed and checked after all (`unpresumed`). Nothing if another
/// build appended beside it (a held store) or the log cannot be read: the
/// next build then takes the full path. The build's own report stands
/// either way.
fn keep_recheck(
    store: &Store,
    keys: &[Option<cairn_engine::digest::ActionKey>],
    unpresumed: &[usize],
    base: &crate::uptodate::Base,
    since: Option<u64>,
    build_id: u64,
) {
    // The log's end is read before the check that every event since the
    // build started is its own: a build of a held store that appends after
    // the read makes the list stale (its end is not the log's), one that
    // appended before fails the check.
    let last = match store.last_event() {
        Ok(Some(last)) => last,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!("could not keep the actions left to check: {error}");
            return;
        }
    };
    match since.map_or(Ok(true), |since| alone_since(store, since, build_id)) {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(
                "no actions left to check: another build of the held store appended while this one ran"
            );
            return;
        }
        Err(error) => {
            tracing::warn!("could not keep the actions left to check: {error}");
            return;
        }
    }
    let mut checked: Vec<bool> = keys.iter().map(Option::is_none).collect();
    for &index in unpresumed {
        if let Some(checked) = checked.get_mut(index) {
            *checked = true;
        }
    }
    let recheck = cairn_engine::uptodate::Recheck {
        from: base.head.last_event,
        to: last,
        actions: (0u32..)
            .zip(&checked)
            .filter(|&(_, &checked)| checked)
            .map(|(index, _)| index)
            .collect(),
    };
    match store.write_recheck(&recheck) {
        Ok(()) => tracing::debug!(
            "left {} actions for the next build to check, the rest presumed from the up-to-date snapshot",
            recheck.actions.len()
        ),
        Err(error) => tracing::warn!("could not keep the actions left to check: {error}"),
    }
}

/// SIGINT and SIGTERM while a build runs: the first stops the build (its
/// jobs get SIGTERM, and SIGKILL after [`cairn_engine::runner::TERM_GRACE`]);
/// a second one SIGKILLs the running jobs at once.
struct Interrupts {
    handle: signal_hook::iterator::Handle,
    /// The handlers that set the children's stop flag, removed with the
    /// build's end (a process may run many builds).
    flags: Vec<signal_hook::SigId>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Interrupts {
    fn watch(
        cancel: &Cancel,
        children: &Arc<Children>,
        notes: Arc<dyn Notes>,
    ) -> Result<Interrupts, AppError> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals =
            signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(|error| {
                AppError::Usage(format!("cannot install the signal handler: {error}"))
            })?;
        let handle = signals.handle();
        let stop_signalled = children.stop_signalled();
        let (cancel, children) = (cancel.clone(), Arc::clone(children));
        let thread = std::thread::Builder::new()
            .name("cairn-signals".into())
            .spawn(move || {
                for (count, _) in signals.forever().enumerate() {
                    let running = children.running();
                    if count == 0 {
                        if running > 0 {
                            notes.note(&format!(
                                "cairn: interrupted: stopping {running} running job{} (SIGTERM; SIGKILL in {}s, or at once on a second interrupt)",
                                if running == 1 { "" } else { "s" },
                                cairn_engine::runner::TERM_GRACE.as_secs()
                            ));
                        }
                        cancel.cancel();
                    } else {
                        if running > 0 {
                            notes.note(&format!(
                                "cairn: interrupted again: killing {running} running job{} now (SIGKILL)",
                                if running == 1 { "" } else { "s" }
                            ));
                        }
                        cancel.kill_now();
                    }
                }
            })
            .map_err(|error| AppError::Usage(format!("cannot start the signal thread: {error}")))?;
        let mut interrupts = Interrupts {
            handle,
            flags: Vec::with_capacity(2),
            thread: Some(thread),
        };
        // Noted in the handler itself as well: a job signalled together
        // with cairn (systemd's `KillMode=control-group`) may exit before
        // the thread above runs, and must not be stored then.
        for signal in [SIGINT, SIGTERM] {
            let id = signal_hook::flag::register(signal, Arc::clone(&stop_signalled)).map_err(
                |error| AppError::Usage(format!("cannot install the signal handler: {error}")),
            )?;
            interrupts.flags.push(id);
        }
        Ok(interrupts)
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        for id in self.flags.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
