//! `cairn build`.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use cairn_engine::action::Context;
use cairn_engine::evaluate::{Verdict, evaluate};
use cairn_engine::exec::{BuildOptions, BuildReport, build};
use cairn_engine::plan::Plan;
use cairn_engine::record::BuildCounts;
use cairn_engine::runner::Children;
use cairn_engine::uptodate::{Snapshot, Witness, presume};
use cairn_store::Store;
use rayon::prelude::*;
use serde_json::json;

use crate::report::{BuildReporter, count, duration_text, json_line, note};
use crate::uptodate::{Assisted, Quick};
use crate::{BuildArgs, Cli, Failure};
use cairn_app::Workspace;

pub fn run(cli: &Cli, args: &BuildArgs) -> Result<u8, Failure> {
    let started = std::time::Instant::now();
    let project = crate::open_workspace(cli)?;
    let mut assisted: Option<Assisted> = None;
    if args.dry_run {
        let found = crate::uptodate::try_dry(&project, &args.refs, jobs(args.jobs))?;
        if let Some(snapshot) = found {
            dry_run_current(&snapshot, args.json);
            tracing::debug!(
                "dry run answered from the snapshot ({:.2?})",
                started.elapsed()
            );
            left_for_exit(snapshot);
            return Ok(0);
        }
    } else {
        let asked = crate::uptodate::Asked {
            requested: &args.refs,
            jobs: jobs(args.jobs),
            json: args.json,
            no_wait: args.no_wait,
        };
        match crate::uptodate::try_quick(&project, &asked)? {
            Quick::Done(executed) => {
                if args.json {
                    json_line(&executed.summary_json(started.elapsed()));
                }
                note(&executed.summary_text(started.elapsed()));
                tracing::debug!(
                    "build finished from the snapshot ({:.2?})",
                    started.elapsed()
                );
                return Ok(executed.exit_code());
            }
            Quick::Assist(found) => assisted = Some(found),
            Quick::Full => {}
        }
    }
    // The plan kept with the snapshot is this build's plan: the snapshot
    // was confirmed but for a few changed paths, and planning is a
    // function of what it pins.
    // Without it (missing, damaged), the snapshot this build leaves keeps
    // the plan made now.
    let kept = assisted.as_mut().and_then(|assisted| {
        let digest = assisted.snapshot.plan.take()?;
        let plan = assisted.store.read_plan(&digest)?;
        assisted.snapshot.plan = Some(digest);
        Some(plan)
    });
    let plan = match kept {
        Some(plan) => {
            tracing::debug!("read the kept plan ({:.2?})", started.elapsed());
            plan
        }
        None => {
            let refs = project.requested(&args.refs)?;
            tracing::debug!("{} refs requested ({:.2?})", refs.len(), started.elapsed());
            if args.dry_run {
                project.plan(&refs)?
            } else {
                project.plan_for_build(&refs)?
            }
        }
    };
    tracing::debug!(
        "planned {} actions, {} sources ({:.2?})",
        plan.actions.len(),
        plan.sources.len(),
        started.elapsed()
    );
    if args.dry_run {
        let code = dry_run(&project, &plan, args.json);
        left_for_exit(plan);
        return code;
    }
    let executed = execute(
        &project,
        &plan,
        &Execution {
            jobs: args.jobs,
            keep_going: args.keep_going,
            json: args.json,
            no_wait: args.no_wait,
            retries: args.retries,
            requested: args.refs.clone(),
            command: "build",
            reason: None,
            snapshot: true,
        },
        assisted,
    )?;
    if args.json {
        json_line(&executed.summary_json(started.elapsed()));
    }
    note(&executed.summary_text(started.elapsed()));
    let code = executed.exit_code();
    let closing = std::time::Instant::now();
    drop(executed);
    tracing::debug!("closed the store ({:.2?})", closing.elapsed());
    left_for_exit(plan);
    Ok(code)
}

/// Leaves `value`'s memory to the process's exit instead of freeing it:
/// `cairn build` returns to `main` and exits right after, and freeing a
/// million-action plan one allocation at a time took half a second. Only
/// for plain data (no files, locks or children to release).
fn left_for_exit<T>(value: T) {
    std::mem::forget(value);
}

/// How to run a planned build: what `cairn build` and `cairn backfill`
/// share.
pub struct Execution<'a> {
    /// Jobs at once (default: the number of cores).
    pub jobs: Option<usize>,
    pub keep_going: bool,
    /// JSON lines for each action on stdout.
    pub json: bool,
    pub no_wait: bool,
    pub retries: Option<u32>,
    /// Recorded in `BuildRequested`, with `command` and `reason`.
    pub requested: Vec<String>,
    pub command: &'a str,
    pub reason: Option<String>,
    /// Whether a build that finds every action current records an
    /// up-to-date snapshot for the next identical `cairn build`.
    pub snapshot: bool,
}

/// Jobs at once: `-j N`, else the number of cores; at most
/// [`MAX_JOBS`](cairn_engine::limits::MAX_JOBS), each slot being a thread
/// (a larger `-j` is clamped, with a note the first time).
pub fn jobs(requested: Option<usize>) -> usize {
    static NOTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let max = cairn_engine::limits::MAX_JOBS;
    let jobs = requested.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    if jobs > max {
        if requested.is_some() && !NOTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            note(&format!(
                "-j {jobs} clamped to {max}, the most jobs cairn runs at once"
            ));
        }
        return max;
    }
    jobs.max(1)
}

/// A finished (or interrupted) build, with the store it wrote, closed when
/// this is dropped.
pub struct Executed {
    pub report: BuildReport,
    /// Actions in the plan.
    pub total: usize,
    /// `Some` until dropped.
    store: Option<Store>,
    /// The up-to-date snapshot the build leaves, written while the store
    /// closes (`Store::close_writing_snapshot`).
    snapshot: Option<Snapshot>,
}

impl Drop for Executed {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let Some(snapshot) = self.snapshot.take() else {
            return;
        };
        let started = std::time::Instant::now();
        match store.close_writing_snapshot(&snapshot) {
            Ok(()) => tracing::debug!(
                "recorded the up-to-date snapshot ({} paths) while closing the store ({:.2?})",
                snapshot.entries.len(),
                started.elapsed()
            ),
            Err(error) => tracing::warn!("could not record the up-to-date snapshot: {error}"),
        }
    }
}

impl Executed {
    pub fn new(
        report: BuildReport,
        total: usize,
        store: Store,
        snapshot: Option<Snapshot>,
    ) -> Self {
        Executed {
            report,
            total,
            store: Some(store),
            snapshot,
        }
    }

    pub fn store(&self) -> &Store {
        self.store
            .as_ref()
            .expect("the store is open until dropped")
    }

    /// The summary object that ends `--json` output; `elapsed`: the
    /// command's wall time so far.
    pub fn summary_json(&self, elapsed: std::time::Duration) -> serde_json::Value {
        let counts = self.report.counts;
        json!({
            "type": "summary",
            "build": self.report.build,
            "total": self.total,
            "executed": counts.executed,
            "cached": counts.cached,
            "failed": counts.failed,
            "skipped": counts.skipped,
            "interrupted": self.report.interrupted,
            "duration_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// `build 3: 77 actions: 2 executed, 75 cached, 0 failed, 0 skipped in 1.2s`.
    pub fn summary_text(&self, elapsed: std::time::Duration) -> String {
        let counts = self.report.counts;
        format!(
            "build {}: {}: {} executed, {} cached, {} failed, {} skipped in {}{}",
            self.report.build,
            count(self.total as u64, "action"),
            counts.executed,
            counts.cached,
            counts.failed,
            counts.skipped,
            duration_text(elapsed),
            if self.report.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        )
    }

    /// 130 if interrupted, 1 if an action failed, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.report.interrupted {
            130
        } else if self.report.counts.failed > 0 {
            1
        } else {
            0
        }
    }
}

/// Runs `plan` through the engine: takes the writer lock, stops on
/// SIGINT/SIGTERM, reports progress (and JSON lines) as actions finish.
/// `assisted`: the store `cairn build`'s snapshot check already holds, and
/// the snapshot it found current but for a few changed paths.
pub fn execute(
    project: &Workspace,
    plan: &Plan,
    execution: &Execution<'_>,
    assisted: Option<Assisted>,
) -> Result<Executed, Failure> {
    let started = std::time::Instant::now();
    if assisted.is_none() {
        cairn_engine::exec::check_code_files(
            &project.graph,
            plan.actions.iter().map(|action| &*action.job),
        )?;
    }
    let (store, base) = match assisted {
        Some(Assisted {
            snapshot,
            changed,
            store,
        }) => {
            let presumed = presume(&snapshot, &changed, plan, &project.data_root);
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
            (store, presumed.map(|keys| (keys, snapshot, changed)))
        }
        None => (project.open_writer(!execution.no_wait)?, None),
    };
    tracing::debug!("opened the store ({:.2?})", started.elapsed());
    // One store's build at a time in a data directory (docs/reliability.md).
    let _data_root = cairn_store::DataRootLock::acquire(&project.data_root, &project.store_dir)?;
    let interrupt = Arc::new(AtomicBool::new(false));
    let children = Arc::new(Children::recorded_in(store.dir().join("running")));
    let _interrupts = Interrupts::watch(&interrupt, &children)?;
    cairn_engine::groups::become_subreaper();
    let build_id = cairn_engine::ports::Catalog::next_build_id(store.catalog())?;
    store.record_build(build_id);
    let witness = (execution.snapshot && cairn_engine::uptodate::graph_allows(&project.graph))
        .then(|| Witness::new(store.catalog()));
    let context = Context {
        graph: &project.graph,
        data_root: project.data_root.clone(),
        staging_root: project.data_root.join(".cairn-tmp"),
        catalog: match &witness {
            Some(witness) => witness,
            None => store.catalog(),
        },
        blobs: store.blobs(),
        environment: &project.environment,
        children: &children,
        runner: &cairn_engine::local::LocalRunner,
        build: build_id,
        retries: execution.retries,
        real_dirs: Default::default(),
        programs: Default::default(),
        code_changes: Default::default(),
    };
    let options = BuildOptions {
        jobs: jobs(execution.jobs),
        keep_going: execution.keep_going,
        interrupt: &interrupt,
        requested: execution.requested.clone(),
        command: execution.command.to_owned(),
        reason: execution.reason.clone(),
        witness: witness.as_ref().map(|witness| witness as _),
        presumed: base.as_ref().map(|(keys, _, _)| keys.as_slice()),
    };
    let reporter = BuildReporter::new(execution.json);
    let report = build(&context, plan, &options, &reporter);
    // No job runs any more: whatever one left re-parented to cairn goes.
    cairn_engine::groups::reap_all_orphans();
    let mut report = report.map_err(Failure::from)?;
    reporter.finish();
    // Kept partitions whose job's code changed (on_code_change = "warn";
    // "error" failed its actions): said on every build until acknowledged,
    // so no snapshot lets the next build skip saying it.
    let code_changes = context.code_changes.summary();
    drop(context);
    for (change, partitions) in &code_changes {
        if change.mode == cairn_engine::graph::OnCodeChange::Warn {
            crate::report::warning_line(&format!(
                "job {}: {} of {}: {}",
                change.job,
                crate::report::count(*partitions, "partition"),
                change.dataset,
                change.kept()
            ));
        }
    }
    let snapshot = match report.all_current.take() {
        Some(_) if !code_changes.is_empty() => None,
        Some(all_current) => witness.and_then(Witness::into_entries).and_then(|entries| {
            crate::uptodate::record(
                project,
                &store,
                plan,
                &execution.requested,
                all_current,
                entries,
                base.map(|(_, snapshot, changed)| (snapshot, changed)),
            )
        }),
        None => None,
    };
    Ok(Executed::new(report, plan.actions.len(), store, snapshot))
}

/// SIGINT and SIGTERM while a build runs: the first stops the build (its
/// jobs get SIGTERM, and SIGKILL after [`cairn_engine::runner::TERM_GRACE`]);
/// a second one SIGKILLs the running jobs at once.
struct Interrupts {
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Interrupts {
    fn watch(interrupt: &Arc<AtomicBool>, children: &Arc<Children>) -> Result<Interrupts, Failure> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals =
            signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(|error| {
                Failure::usage(format!("cannot install the signal handler: {error}"))
            })?;
        let handle = signals.handle();
        let (interrupt, children) = (Arc::clone(interrupt), Arc::clone(children));
        let thread = std::thread::Builder::new()
            .name("cairn-signals".into())
            .spawn(move || {
                for (count, _) in signals.forever().enumerate() {
                    interrupt.store(true, std::sync::atomic::Ordering::SeqCst);
                    let running = children.running();
                    if count == 0 {
                        if running > 0 {
                            note(&format!(
                                "cairn: interrupted: stopping {running} running job{} (SIGTERM; SIGKILL in {}s, or at once on a second interrupt)",
                                if running == 1 { "" } else { "s" },
                                cairn_engine::runner::TERM_GRACE.as_secs()
                            ));
                        }
                        children.interrupt();
                    } else {
                        if running > 0 {
                            note(&format!(
                                "cairn: interrupted again: killing {running} running job{} now (SIGKILL)",
                                if running == 1 { "" } else { "s" }
                            ));
                        }
                        children.kill_now();
                    }
                }
            })
            .map_err(|error| Failure::usage(format!("cannot start the signal thread: {error}")))?;
        Ok(Interrupts {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn dry_run(
    project: &Workspace,
    plan: &cairn_engine::plan::Plan,
    json: bool,
) -> Result<u8, Failure> {
    let started = std::time::Instant::now();
    let verdicts =
        project.read_context(|context| evaluate(context, plan).map_err(Failure::from))?;
    tracing::debug!("evaluated ({:.2?})", started.elapsed());
    let mut out = listing();
    // Lines are formatted in parallel, a batch at a time (a million lines
    // held at once would be a hundred megabytes), and written in order.
    'listing: for batch in plan.order.chunks(LISTING_BATCH) {
        let parts: Vec<Vec<u8>> = batch
            .par_chunks(LISTING_BATCH / 16)
            .map(|indices| {
                let mut part = Vec::with_capacity(indices.len() * 96);
                for &index in indices {
                    dry_line(&mut part, &plan.actions[index], &verdicts[index], json);
                }
                part
            })
            .collect();
        for part in parts {
            // A closed pipe (`| head`) ends the listing; the summary still
            // goes to stderr.
            if out.write_all(&part).is_err() {
                break 'listing;
            }
        }
    }
    let _ = out.flush();
    drop(out);
    dry_summary(plan.actions.len(), &Verdict::count(&verdicts), json);
    left_for_exit(verdicts);
    Ok(0)
}

/// Actions listed per parallel step of a dry run.
const LISTING_BATCH: usize = 131_072;

/// One action's line of a dry run into `out`. Humans are not told of
/// up-to-date actions: their reason (a million of them in a large no-op)
/// is not even made.
fn dry_line(
    out: &mut Vec<u8>,
    action: &cairn_engine::plan::PlannedAction,
    verdict: &Verdict,
    json: bool,
) {
    // Writing into a vector cannot fail.
    let _ = if json {
        let line = action_json(&action.job, &action.config.outputs, verdict);
        writeln!(out, "{line}")
    } else if matches!(verdict, Verdict::UpToDate { .. }) {
        Ok(())
    } else {
        let _ = write!(out, "{:>10} ", verdict.state());
        for (position, output) in action.config.outputs.iter().enumerate() {
            if position > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(output.as_str().as_bytes());
        }
        let reason = verdict.reason().to_string();
        writeln!(out, " ({}): {}", action.job, crate::escape::escape(&reason))
    };
}

/// A dry run's `--json` line for one action: the same fields whether the
/// verdict was evaluated or read from the up-to-date snapshot.
fn action_json(job: &str, outputs: &impl serde::Serialize, verdict: &Verdict) -> serde_json::Value {
    json!({"type": "action", "job": job, "outputs": outputs, "verdict": verdict.state(), "reason": verdict.reason().to_string()})
}

/// The dry run of a build the up-to-date snapshot confirmed: every action
/// up to date, listed as [`dry_run`] lists them (in the plan's order, with
/// the build whose result each reuses; humans get the summary alone).
fn dry_run_current(snapshot: &Snapshot, json: bool) {
    if json {
        let mut out = listing();
        for action in &snapshot.actions {
            let verdict = Verdict::UpToDate {
                key: action.key,
                built_by: action.built_by,
            };
            let job = &snapshot.jobs[action.job as usize];
            let line = action_json(job, &action.outputs, &verdict);
            if writeln!(out, "{line}").is_err() {
                break;
            }
        }
        let _ = out.flush();
    }
    let counts = BuildCounts {
        cached: snapshot.actions.len() as u64,
        ..BuildCounts::default()
    };
    dry_summary(snapshot.actions.len(), &counts, json);
}

/// One buffered writer for all of a dry run's lines, on stdout (the plan is
/// the command's data, as `backfill --dry-run` prints it; the summary note
/// goes to stderr): a million actions would otherwise be a million writes
/// through line-buffered stdout.
fn listing() -> impl Write {
    std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock())
}

/// A dry run's last line(s): the JSON summary with `--json`, and the note.
fn dry_summary(total: usize, counts: &BuildCounts, json: bool) {
    if json {
        json_line(
            &json!({"type": "summary", "dry_run": true, "total": total, "executed": counts.executed, "cached": counts.cached, "failed": 0, "skipped": counts.skipped}),
        );
    }
    note(&format!(
        "dry run: {}: {} would run, {} up to date or restorable, {} blocked",
        count(total as u64, "action"),
        counts.executed,
        counts.cached,
        counts.skipped
    ));
}
