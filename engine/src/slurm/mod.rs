//! The Slurm job runner: each attempt of an action runs in a Slurm job, as
//! `cairn worker run SPEC` (worker.rs), on whichever node Slurm picks
//! (docs/slurm.md). Only where the process runs changes: the attempt's
//! staging directory, its stdout and stderr files and its checkpoint file
//! are the local runner's, on a filesystem the nodes share with the
//! coordinator, and the executor (exec/run.rs) ingests the outputs as for a
//! local job once the worker's outcome says exit status 0.
//!
//! The runner shells out to Slurm's commands (`sbatch --parsable`,
//! `squeue`, `scancel`, `sinfo`): no daemon of cairn's, no REST token.
//!
//! Batching: a Slurm job costs about a second to schedule, so attempts do
//! not get one each. They are queued in the runner's directory
//! (`queue/<seq>`, naming the spec), and workers — Slurm jobs running
//! `cairn worker pull DIR`, at most one per CPU of the partition, submitted
//! while attempts wait — claim them one at a time by renaming the entry
//! into `claimed/<seq>@<slurm job id>`, run them, mark `done/<seq>` once
//! each outcome is written, and exit after `[executor] batch` of them or
//! 3 s without work. One thread of the coordinator reads `claimed/` and
//! `done/` for all the waiting attempts (watch.rs). An action whose job declares
//! `resources` gets a Slurm job of its own (`cairn worker run SPEC`).
//!
//! Heartbeat: a worker beats every second while it runs an attempt
//! (`heartbeat` beside the spec, or an AC entry per beat in cache mode);
//! a running attempt whose beat stops changing for `[executor]
//! heartbeat_timeout` is lost ([`Heart`]): cancelled, failed, retried.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::executor::{Executor, Resources, slurm_minutes};
use crate::graph::Graph;
use crate::job::{Children, Ended, JobRun, JobRunner, POLL_INTERVAL, TERM_GRACE};

pub mod cached;
mod watch;
pub mod worker;

pub use worker::{WorkerOutcome, WorkerSpec, pull, read_outcome, run_specs};

/// How often Slurm is asked for the state of the jobs (`squeue`), at most.
const STATE_INTERVAL: Duration = Duration::from_millis(1000);

/// How often the watch thread reads `claimed/` and `done/` (watch.rs), and
/// an attempt with a Slurm job of its own looks for its outcome file: the
/// latency between a worker finishing an action and the coordinator
/// ingesting it, which bounds the throughput of small actions (in flight /
/// latency). Cache mode asks the cache every [`POLL_INTERVAL`] instead (a
/// request each).
const OUTCOME_POLL: Duration = Duration::from_millis(10);

/// Slurm's job states after which a job runs no more.
const ENDED: &[&str] = &[
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
    "REVOKED",
    "SPECIAL_EXIT",
];

/// A problem of the Slurm runner with Slurm itself.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("cannot run {command} (is Slurm installed and on PATH?): {source}")]
    Start {
        command: &'static str,
        source: io::Error,
    },
    #[error("{command} failed: {message}")]
    Failed {
        command: &'static str,
        message: String,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// One attempt waiting for its Slurm job id.
struct Ticket {
    spec: PathBuf,
    submitted: Mutex<Option<Result<u64, String>>>,
    ready: Condvar,
}

impl Ticket {
    fn new(spec: PathBuf) -> Arc<Ticket> {
        Arc::new(Ticket {
            spec,
            submitted: Mutex::new(None),
            ready: Condvar::new(),
        })
    }

    /// Waits until the ticket's Slurm job is submitted (at once, or with
    /// its gathering), tells `job`'s dispatch hook, and returns its id.
    fn id(&self, job: &JobRun<'_>) -> io::Result<u64> {
        let mut submitted = self.submitted.lock().unwrap_or_else(|e| e.into_inner());
        let result = loop {
            if let Some(result) = &*submitted {
                break result.clone();
            }
            submitted = self
                .ready
                .wait(submitted)
                .unwrap_or_else(|e| e.into_inner());
        };
        drop(submitted);
        let id =
            result.map_err(|error| io::Error::other(format!("cannot submit to Slurm: {error}")))?;
        if let Some(dispatched) = job.dispatched {
            dispatched("slurm", &id.to_string());
        }
        Ok(id)
    }
}

/// Cache-mode attempts gathered to be submitted as one Slurm job running
/// them in turn (`cairn worker cached URL SPEC...`).
#[derive(Default)]
struct Gathering {
    tickets: Vec<Arc<Ticket>>,
    /// The `[env] secret` names the gathered attempts pass.
    secrets: Vec<String>,
}

/// How long the first attempt of a gathering waits for others before its
/// Slurm job is submitted.
const GATHER: Duration = Duration::from_millis(50);

/// The workers (Slurm jobs running `cairn worker pull`) of a runner.
#[derive(Default)]
struct Workers {
    /// Submitted and not seen ended, with when they were submitted.
    live: Vec<(u64, Instant)>,
    /// Every worker submitted: the claimers an attempt looks for.
    all: Vec<u64>,
    /// The last workers that ended (`COMPLETED`, `FAILED`) without
    /// marking that they started: they did not see the runner's directory.
    blind: Vec<(u64, String)>,
    /// Set once [`BLIND_WORKERS`] in a row did not see it: why every
    /// queued attempt fails (no retry, no more workers).
    unseen: Option<String>,
    /// Attempts each worker was found to have claimed.
    claims: HashMap<u64, usize>,
}

/// How many of the `live` workers still pull: a worker that claimed its
/// `batch` attempts runs the last one and exits. Its replacement is
/// submitted then, not once Slurm says it ended (up to a second later, and
/// Slurm takes another second or two to start the next), so that it waits
/// in Slurm's queue for the CPU while the last attempt runs.
fn pulling(live: &[(u64, Instant)], claims: &HashMap<u64, usize>, batch: usize) -> usize {
    live.iter()
        .filter(|(id, _)| claims.get(id).copied().unwrap_or(0) < batch)
        .count()
}

/// How many workers in a row ending without seeing the runner's directory
/// fail the queued attempts (one could be a node's passing trouble).
const BLIND_WORKERS: usize = 2;

/// The queue the workers pull attempts from, and where they move what they
/// claimed (`claimed/<entry>@<slurm job id>`), in the runner's directory.
pub const QUEUE: &str = "queue";
pub const CLAIMED: &str = "claimed";

#[derive(Default)]
struct States {
    /// When the last `squeue` was started: it knows every job submitted
    /// before then (not necessarily one submitted while it ran).
    at: Option<Instant>,
    /// Job id → (state, reason), as `squeue` said at `at`.
    jobs: HashMap<u64, (String, String)>,
    /// When `sbatch` returned each job's id.
    submitted: HashMap<u64, Instant>,
    /// The node(s) each job was last seen on (`squeue %N`).
    nodes: HashMap<u64, String>,
}

/// The remote cache the nodes exchange files through, without a shared
/// filesystem (`[executor] data = "cache"`, cached.rs).
struct CacheLink {
    url: String,
    cache: Box<dyn crate::ports::RemoteCache>,
    /// Each job's `code` files, relative to `root` (the graph's directory).
    code: HashMap<String, Vec<String>>,
    root: PathBuf,
}

/// Where a Slurm job starts and writes Slurm's log in cache mode: on the
/// node, never the coordinator's directories.
const NODE_DIR: &str = "/tmp";

/// Slurm's log of the Slurm job this process runs in (cache mode), where
/// `--output` put it.
fn node_log() -> Option<PathBuf> {
    let id = std::env::var("SLURM_JOB_ID").ok()?;
    id.parse::<u64>().ok()?;
    Some(Path::new(NODE_DIR).join(format!("slurm-{id}.out")))
}

/// Removes Slurm's log of the Slurm job this worker runs in (cache mode)
/// if nothing was written to it: one empty file per Slurm job would pile
/// up in the nodes' `/tmp`. A log that holds anything (an error of the
/// worker's, which a failed attempt names) is kept for whoever reads it.
pub fn remove_empty_node_log() {
    if let Some(log) = node_log()
        && fs::symlink_metadata(&log).is_ok_and(|meta| meta.is_file() && meta.len() == 0)
    {
        let _ = fs::remove_file(&log);
    }
}

/// Runs attempts as Slurm jobs (see the module's documentation).
pub struct SlurmRunner {
    /// Set in cache mode: every attempt goes through it (cached.rs).
    cache: Option<CacheLink>,
    executor: Executor,
    /// Each job's declared resources (`resources = {…}`).
    resources: HashMap<String, Resources>,
    /// Where batch scripts and Slurm's own logs go (shared with the nodes).
    dir: PathBuf,
    /// The cairn binary the nodes run.
    worker: PathBuf,
    /// `--job-name` of every Slurm job of this runner.
    name: String,
    /// CPUs of the partition: how many Slurm jobs a batch is spread over.
    cpus: usize,
    workers: Mutex<Workers>,
    states: Mutex<States>,
    /// Slurm jobs submitted and not yet seen ended → attempts still
    /// waiting on them.
    live: Mutex<HashMap<u64, usize>>,
    batches: AtomicU64,
    /// A Slurm job ended without an outcome: its log in `dir` is kept.
    lost: std::sync::atomic::AtomicBool,
    /// The thread that sees the workers' claims and outcome marks, started
    /// with the first queued attempt (watch.rs).
    watch: std::sync::OnceLock<Arc<watch::Watch>>,
    /// Cache mode: the attempts waiting to be submitted together.
    gathering: Mutex<Gathering>,
}

fn run_slurm(command: &'static str, args: &[String]) -> Result<String, SlurmError> {
    let output = Command::new(command)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SlurmError::Start { command, source })?;
    if !output.status.success() {
        return Err(SlurmError::Failed {
            command,
            message: format!(
                "{}: {}",
                crate::local::describe_status(output.status),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `'text'` for sh.
fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

impl SlurmRunner {
    /// A runner for `graph`'s jobs under its `[executor]`, keeping its files
    /// in `dir` (on the shared filesystem; created), submitting `worker`
    /// (normally this cairn). Asks Slurm how many CPUs the partition has:
    /// an error when Slurm cannot be reached.
    pub fn new(
        graph: &Graph,
        dir: &Path,
        worker: PathBuf,
        cache: Option<(String, Box<dyn crate::ports::RemoteCache>)>,
    ) -> Result<SlurmRunner, SlurmError> {
        let executor = graph.executor.clone();
        let mut args = vec!["-h".to_owned(), "-o".to_owned(), "%C".to_owned()];
        if let Some(partition) = &executor.partition {
            args.extend(["-p".to_owned(), partition.clone()]);
        }
        // "allocated/idle/other/total" per partition line.
        let cpus = run_slurm("sinfo", &args)?
            .lines()
            .filter_map(|line| line.trim().rsplit('/').next()?.parse::<usize>().ok())
            .sum::<usize>()
            .max(1);
        cancel_orphans(dir);
        let name = format!("cairn-{}", crate::groups::unique_id());
        // Created at the first submission: the build clears the staging
        // area when it starts.
        let dir = dir.join(&name);
        let cache = cache.map(|(url, cache)| CacheLink {
            url,
            cache,
            code: graph
                .jobs
                .values()
                .filter_map(|job| {
                    Some((job.name.clone(), crate::code::code_files(graph, job).ok()?))
                })
                .collect(),
            root: graph.root.clone(),
        });
        Ok(SlurmRunner {
            cache,
            resources: graph
                .jobs
                .values()
                .filter_map(|job| Some((job.name.clone(), job.resources.clone()?)))
                .collect(),
            executor,
            dir,
            worker,
            name,
            cpus,
            workers: Mutex::default(),
            states: Mutex::default(),
            live: Mutex::default(),
            batches: AtomicU64::new(0),
            lost: std::sync::atomic::AtomicBool::new(false),
            watch: std::sync::OnceLock::new(),
            gathering: Mutex::default(),
        })
    }

    /// How many attempts a build gives this runner at once unless `-j`
    /// says: 32 per CPU of the partition (at least 64), so that the queue
    /// never runs dry while the workers pull small actions.
    pub fn default_jobs(&self) -> usize {
        self.cpus
            .saturating_mul(32)
            .clamp(64, crate::limits::MAX_JOBS)
    }

    /// The `--job-name` of this runner's Slurm jobs (`squeue -n NAME`).
    pub fn job_name(&self) -> &str {
        &self.name
    }

    /// Submits one Slurm job running `tickets` in turn with `resources`
    /// (`cairn worker` `head` then each ticket's spec); tells each ticket
    /// its id (or the error).
    fn submit(
        &self,
        head: &[String],
        tickets: &[Arc<Ticket>],
        resources: &Resources,
        secrets: &[String],
    ) {
        let mut worker_args = head.to_vec();
        worker_args.extend(
            tickets
                .iter()
                .map(|ticket| ticket.spec.to_string_lossy().into_owned()),
        );
        let result = self
            .sbatch(&worker_args, tickets.len(), resources, secrets)
            .map_err(|error| error.to_string());
        if let Ok(id) = &result
            && let Ok(mut live) = self.live.lock()
        {
            live.insert(*id, tickets.len());
        }
        for ticket in tickets {
            if let Ok(mut submitted) = ticket.submitted.lock() {
                *submitted = Some(result.clone());
            }
            ticket.ready.notify_all();
        }
    }

    fn sbatch(
        &self,
        worker_args: &[String],
        actions: usize,
        resources: &Resources,
        secrets: &[String],
    ) -> Result<u64, SlurmError> {
        let number = self.batches.fetch_add(1, Ordering::SeqCst);
        fs::create_dir_all(&self.dir).map_err(|source| SlurmError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let script = self.dir.join(format!("batch-{number}.sh"));
        let mut text = format!(
            "#!/bin/sh\nexec {} worker",
            sh_quote(&self.worker.to_string_lossy())
        );
        for arg in worker_args {
            text.push(' ');
            text.push_str(&sh_quote(arg));
        }
        text.push('\n');
        fs::write(&script, text).map_err(|source| SlurmError::Io {
            path: script.clone(),
            source,
        })?;
        let mut args = vec![
            "--parsable".to_owned(),
            format!("--job-name={}", self.name),
            format!(
                "--comment={}",
                comment(std::process::id(), self.dir.parent().unwrap_or(&self.dir))
            ),
            // cairn retries under the action's retry policy: Slurm must not
            // run an attempt again on its own after a node failure.
            "--no-requeue".to_owned(),
            format!("--chdir={}", self.node_dir().display()),
            // (In cache mode the worker removes it if it stays empty:
            // `remove_empty_node_log`.)
            format!(
                "--output={}",
                self.node_dir().join("slurm-%j.out").display()
            ),
            // Secrets by name only: sbatch reads their values from its
            // environment (cairn's); no other variable of cairn's passes.
            if secrets.is_empty() {
                "--export=NONE".to_owned()
            } else {
                format!("--export={}", secrets.join(","))
            },
        ];
        if let Some(partition) = &self.executor.partition {
            args.push(format!("--partition={partition}"));
        }
        if let Some(account) = &self.executor.account {
            args.push(format!("--account={account}"));
        }
        if let Some(qos) = &self.executor.qos {
            args.push(format!("--qos={qos}"));
        }
        if let Some(cpus) = resources.cpus {
            args.push(format!("--cpus-per-task={cpus}"));
        }
        if let Some(mem) = &resources.mem {
            args.push(format!("--mem={mem}"));
        }
        if let Some(time) = resources.time {
            // The actions of a batch run one after another.
            let total = time.saturating_mul(u32::try_from(actions).unwrap_or(u32::MAX));
            args.push(format!("--time={}", slurm_minutes(total)));
        }
        args.push(script.to_string_lossy().into_owned());
        let out = run_slurm("sbatch", &args)?;
        let id = out.trim().split(';').next().unwrap_or_default();
        let id = id.parse::<u64>().map_err(|_| SlurmError::Failed {
            command: "sbatch",
            message: format!("printed {:?}, not a job id", out.trim()),
        })?;
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .submitted
            .insert(id, Instant::now());
        Ok(id)
    }

    /// Whether Slurm job `id` runs no more, as `state` said at `asked`:
    /// an ended state, or not listed by a `squeue` started after the job
    /// was submitted (one started before may not know it yet: not ended).
    fn ended(&self, id: u64, state: Option<&(String, String)>, asked: Instant) -> bool {
        let submitted = self
            .states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .submitted
            .get(&id)
            .copied();
        ended(state, asked, submitted)
    }

    /// Where Slurm starts the jobs and writes its log: the runner's
    /// directory on the shared filesystem, or the node's own in cache mode.
    fn node_dir(&self) -> PathBuf {
        match self.cache {
            Some(_) => PathBuf::from(NODE_DIR),
            None => self.dir.clone(),
        }
    }

    /// Puts the attempt of `spec` in the queue the workers pull from:
    /// `queue/<seq>` names the spec (written aside, renamed in), then makes
    /// sure enough workers are submitted. The entry's name.
    fn enqueue(&self, spec: &Path, secrets: &[String]) -> io::Result<String> {
        self.queue_watch()?;
        let queue = self.dir.join(QUEUE);
        let name = format!("{:010}", self.batches.fetch_add(1, Ordering::SeqCst));
        let aside = self.dir.join(format!(".{name}"));
        fs::write(&aside, spec.as_os_str().as_encoded_bytes())
            .and_then(|()| fs::rename(&aside, queue.join(&name)))
            .map_err(|error| {
                io::Error::new(error.kind(), format!("{}: {error}", queue.display()))
            })?;
        self.ensure_workers(secrets)
            .map_err(|error| io::Error::other(format!("cannot submit to Slurm: {error}")))?;
        Ok(name)
    }

    /// The queue's directories and the thread watching them (watch.rs),
    /// made with the first queued attempt of this runner.
    fn queue_watch(&self) -> io::Result<&Arc<watch::Watch>> {
        if let Some(watch) = self.watch.get() {
            return Ok(watch);
        }
        for dir in [QUEUE, CLAIMED, watch::DONE] {
            let dir = self.dir.join(dir);
            fs::create_dir_all(&dir).map_err(|error| {
                io::Error::new(error.kind(), format!("{}: {error}", dir.display()))
            })?;
        }
        Ok(self
            .watch
            .get_or_init(|| watch::Watch::start(&self.dir, CLAIMED, OUTCOME_POLL)))
    }

    /// Submits workers until there is one per queued attempt, at most one
    /// per CPU of the partition, counting those submitted and not yet seen
    /// ended.
    fn ensure_workers(&self, secrets: &[String]) -> Result<(), SlurmError> {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        let live: Vec<(u64, Instant)> = workers.live.clone();
        let mut kept = Vec::with_capacity(live.len());
        for (id, submitted) in live {
            let (state, asked) = self.state(id)?;
            if !self.ended(id, state.as_ref(), asked) {
                kept.push((id, submitted));
                continue;
            }
            // Every worker that sees the directory marks that it started.
            if self.dir.join(worker::STARTED).join(id.to_string()).exists() {
                workers.blind.clear();
            } else if let Some((state, _)) = &state
                && (state.starts_with("COMPLETED") || state.starts_with("FAILED"))
            {
                workers.blind.push((id, state.clone()));
            }
        }
        workers.live = kept;
        if workers.unseen.is_none() && workers.blind.len() >= BLIND_WORKERS {
            workers.unseen = Some(self.unseen(&workers.blind));
            self.lost.store(true, Ordering::SeqCst);
        }
        if workers.unseen.is_some() {
            return Ok(());
        }
        let queued = fs::read_dir(self.dir.join(QUEUE)).map_or(0, Iterator::count);
        let wanted = queued.min(self.cpus);
        let batch = self.executor.batch.max(1);
        let mut pulling = pulling(&workers.live, &workers.claims, batch);
        while pulling < wanted {
            pulling += 1;
            let args = vec![
                "pull".to_owned(),
                self.dir.to_string_lossy().into_owned(),
                "--most".to_owned(),
                self.executor.batch.max(1).to_string(),
            ];
            let id = self.sbatch(
                &args,
                self.executor.batch.max(1),
                &self.executor.resources,
                secrets,
            )?;
            workers.live.push((id, Instant::now()));
            workers.all.push(id);
            if let Ok(mut live) = self.live.lock() {
                live.insert(id, usize::MAX);
            }
        }
        Ok(())
    }

    /// Why the attempts fail when the workers `blind` (Slurm job, state)
    /// ended without seeing the runner's directory: the path, the node,
    /// what the first one's Slurm log says.
    fn unseen(&self, blind: &[(u64, String)]) -> String {
        let (first, _) = blind[0];
        let node = self.node_of(first);
        let ended: Vec<String> = blind
            .iter()
            .map(|(id, state)| format!("{id} {state}"))
            .collect();
        let log = self.dir.join(format!("slurm-{first}.out"));
        let said = fs::read_to_string(&log)
            .ok()
            .and_then(|text| {
                text.lines()
                    .rev()
                    .find(|line| !line.trim().is_empty())
                    .map(str::to_owned)
            })
            .map(|line| format!(": {line}"))
            .unwrap_or_default();
        format!(
            "{} (Slurm workers ended without starting there: {}; Slurm's log: {}{said})",
            worker::unshared(&self.dir, node.as_deref()),
            ended.join(", "),
            log.display()
        )
    }

    /// Why the queued attempts fail, once the workers did not see the
    /// runner's directory ([`BLIND_WORKERS`]).
    fn unseen_error(&self) -> Option<String> {
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unseen
            .clone()
    }

    /// The state and reason of Slurm job `id`, asked of `squeue` at most
    /// every [`STATE_INTERVAL`] for all of this runner's jobs at once.
    /// `None`: Slurm no longer knows the job.
    fn state(&self, id: u64) -> Result<(Option<(String, String)>, Instant), SlurmError> {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        if states.at.is_none_or(|at| at.elapsed() >= STATE_INTERVAL) {
            let started = Instant::now();
            let out = run_slurm(
                "squeue",
                &[
                    "-h".to_owned(),
                    "-t".to_owned(),
                    "all".to_owned(),
                    format!("--name={}", self.name),
                    "-o".to_owned(),
                    "%i|%T|%r|%N".to_owned(),
                ],
            )?;
            states.jobs.clear();
            for line in out.lines() {
                let mut fields = line.trim().split('|');
                let Some(id) = fields.next().and_then(|id| id.parse::<u64>().ok()) else {
                    continue;
                };
                let Some(state) = fields.next() else { continue };
                let reason = fields.next().unwrap_or_default().to_owned();
                let node = fields.next().unwrap_or_default();
                if !node.is_empty() {
                    states.nodes.insert(id, node.to_owned());
                }
                states.jobs.insert(id, (state.to_owned(), reason));
            }
            states.at = Some(started);
        }
        Ok((
            states.jobs.get(&id).cloned(),
            states.at.unwrap_or_else(Instant::now),
        ))
    }

    /// The node(s) Slurm job `id` was last seen running on.
    fn node_of(&self, id: u64) -> Option<String> {
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .nodes
            .get(&id)
            .cloned()
    }

    /// Cancels Slurm job `id` (SIGTERM to its worker, which stops its job
    /// as an interrupt does).
    fn cancel(&self, id: u64) {
        if let Err(error) = run_slurm("scancel", &[id.to_string()]) {
            tracing::warn!("cannot cancel Slurm job {id}: {error}");
        }
    }

    /// One attempt is done with Slurm job `id`.
    fn release(&self, id: u64) {
        if let Ok(mut live) = self.live.lock()
            && let Some(count) = live.get_mut(&id)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                live.remove(&id);
            }
        }
    }

    /// The Slurm jobs submitted that an attempt still waits on.
    pub fn live_jobs(&self) -> Vec<u64> {
        self.live
            .lock()
            .map(|live| live.keys().copied().collect())
            .unwrap_or_default()
    }
}

impl Drop for SlurmRunner {
    /// Nothing cairn submitted outlives the build: what is still queued or
    /// running (an attempt given up on) is cancelled.
    fn drop(&mut self) {
        if let Some(watch) = self.watch.get() {
            watch.stop();
        }
        let live = self.live_jobs();
        if !live.is_empty() {
            let ids: Vec<String> = live.iter().map(u64::to_string).collect();
            if let Err(error) = run_slurm("scancel", &ids) {
                tracing::warn!("cannot cancel Slurm jobs {}: {error}", ids.join(", "));
            }
        }
        if !self.lost.load(Ordering::SeqCst) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether a Slurm job runs no more: its state is an ended one, or a
/// `squeue` started at `asked`, after the job was `submitted`, did not
/// list it (Slurm forgot it). A `squeue` started before the submission
/// returned may not know the job yet.
fn ended(state: Option<&(String, String)>, asked: Instant, submitted: Option<Instant>) -> bool {
    match state {
        Some((state, _)) => ENDED.iter().any(|ended| state.starts_with(ended)),
        None => submitted.is_none_or(|submitted| asked > submitted),
    }
}

/// The `--comment` of a Slurm job that the cairn of process `pid` submitted
/// for the staging area whose Slurm directory is `dir`.
fn comment(pid: u32, dir: &Path) -> String {
    format!("cairn {pid} {}", dir.display())
}

/// Cancels the Slurm jobs that a cairn no longer running submitted for the
/// staging area of `dir` (it was killed, or its machine restarted): a
/// build holds the store's writer lock, so those attempts are nobody's.
/// The jobs of a live cairn (another build of a `cairn serve`) are left.
fn cancel_orphans(dir: &Path) {
    let Ok(out) = run_slurm(
        "squeue",
        &["-h".to_owned(), "-o".to_owned(), "%i|%k".to_owned()],
    ) else {
        return;
    };
    let mine = format!(" {}", dir.display());
    let orphans: Vec<String> = out
        .lines()
        .filter_map(|line| {
            let (id, comment) = line.trim().split_once('|')?;
            let rest = comment.strip_prefix("cairn ")?;
            let (pid, path) = rest.split_once(' ')?;
            if format!(" {path}") != mine {
                return None;
            }
            let pid = pid.parse::<i32>().ok()?;
            // SAFETY: kill with signal 0 only checks that the process exists.
            #[expect(unsafe_code, reason = "kill(pid, 0) has no safe wrapper in std")]
            let alive = unsafe { libc::kill(pid, 0) } == 0;
            (!alive).then(|| id.to_owned())
        })
        .collect();
    if orphans.is_empty() {
        return;
    }
    tracing::warn!(
        "cancelling Slurm jobs {} left by a cairn that is gone",
        orphans.join(", ")
    );
    if let Err(error) = run_slurm("scancel", &orphans) {
        tracing::warn!("cannot cancel Slurm jobs {}: {error}", orphans.join(", "));
    }
}

/// Appends `line` to the attempt's stderr file (created if the job never
/// started), so that `cairn logs` shows why Slurm ended it.
fn note_in_stderr(path: &Path, line: &str) {
    if let Ok(mut file) = fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{line}");
    }
}

impl JobRunner for SlurmRunner {
    fn run(
        &self,
        job: &JobRun<'_>,
        children: &Children,
        poll: Option<&(dyn Fn() + Sync)>,
    ) -> io::Result<Ended> {
        if children.is_interrupted() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the build was interrupted",
            ));
        }
        if let Some(link) = &self.cache {
            return self.run_cached(link, job, children, poll);
        }
        let invocation = &job.invocation;
        let attempt_dir = invocation
            .stdout
            .parent()
            .ok_or_else(|| io::Error::other("the attempt has no staging directory"))?;
        let spec_path = attempt_dir.join("worker.json");
        let outcome_path = attempt_dir.join("outcome.json");
        let spec = WorkerSpec {
            version: worker::SPEC_VERSION,
            label: invocation.label.to_owned(),
            argv: invocation.argv.to_vec(),
            cwd: invocation.cwd.to_owned(),
            passed: invocation.environment.passed.clone(),
            secret_names: invocation
                .environment
                .secret
                .iter()
                .map(|(name, _)| name.clone())
                .collect(),
            extra: invocation.extra_env.to_vec(),
            stdout: invocation.stdout.to_owned(),
            stderr: invocation.stderr.to_owned(),
            run_id: children.run_id(invocation.run_id),
            timeout_ms: invocation
                .timeout
                .map(|timeout| u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
            outcome: outcome_path.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&spec).map_err(io::Error::other)?;
        // Written aside and renamed in (a worker never reads half a spec),
        // not fsynced: the spec matters only while this coordinator lives.
        // If it dies, the attempt is abandoned: the next build cancels its
        // Slurm jobs (cancel_orphans) and clears the staging area before
        // it submits anything, so no spec is ever read after a crash that
        // could have lost it (a worker that did would fail on the invalid
        // spec, for nobody). Visibility to the nodes needs no fsync either:
        // NFS flushes on close (close-to-open), Lustre and GPFS are
        // coherent. The outcome, which ingestion relies on, stays durable.
        worker::write_visible(&spec_path, &bytes).map_err(|error| {
            io::Error::new(error.kind(), format!("{}: {error}", spec_path.display()))
        })?;
        let ticket = Ticket::new(spec_path);
        let secrets = spec.secret_names;
        match self.resources.get(job.job) {
            // A job that declares its resources gets a Slurm job of its own.
            Some(declared) => {
                let defaults = &self.executor.resources;
                let resources = Resources {
                    cpus: declared.cpus.or(defaults.cpus),
                    mem: declared.mem.clone().or_else(|| defaults.mem.clone()),
                    time: declared.time.or(defaults.time),
                };
                self.submit(
                    &["run".to_owned()],
                    std::slice::from_ref(&ticket),
                    &resources,
                    &secrets,
                );
            }
            None => {
                let name = self.enqueue(&ticket.spec, &secrets)?;
                return self.wait_queued(&name, &secrets, job, children, poll, &outcome_path);
            }
        }
        let id = ticket.id(job)?;
        let heartbeat = worker::heartbeat_path(&outcome_path);
        let ended = self.wait(
            id,
            job,
            children,
            poll,
            &|| std::thread::sleep(OUTCOME_POLL),
            &|| shared_outcome(&outcome_path),
            &Heart::new(&|| fs::read(&heartbeat).ok(), false).seeing(attempt_dir),
        );
        self.release(id);
        ended
    }
}

/// A running attempt's heartbeat, as the coordinator follows it: when
/// the beat last changed, by the coordinator's own clock (so the nodes'
/// clocks and the shared filesystem's mtimes do not matter).
struct Heart<'a> {
    /// The worker's last beat (`None`: none yet).
    read: &'a dyn Fn() -> Option<Vec<u8>>,
    /// The attempt waits its turn in a Slurm job running several
    /// (cache mode): it runs from its first beat, not from the job's
    /// `RUNNING`.
    in_turn: bool,
    /// The directory the worker must see to beat at all (shared mode).
    dir: Option<&'a Path>,
    state: Mutex<HeartState>,
}

#[derive(Default)]
struct HeartState {
    /// Since when the attempt is known to run (claimed by a worker, Slurm
    /// says `RUNNING`, or a first beat seen).
    running: Option<Instant>,
    last: Option<Vec<u8>>,
    changed: Option<Instant>,
}

impl<'a> Heart<'a> {
    /// `running`: the attempt already runs (a worker claimed it).
    fn new(read: &'a dyn Fn() -> Option<Vec<u8>>, running: bool) -> Heart<'a> {
        Heart {
            read,
            in_turn: false,
            dir: None,
            state: Mutex::new(HeartState {
                running: running.then(Instant::now),
                ..HeartState::default()
            }),
        }
    }

    /// With `in_turn`, the attempt is one of several its Slurm job runs in
    /// turn: only its own first beat starts the clock ([`Heart::silent`]).
    /// A worker frozen before its turn is found by the attempt it froze in,
    /// whose Slurm job is then cancelled, which ends this one's wait too.
    fn in_turn(self, in_turn: bool) -> Heart<'a> {
        Heart { in_turn, ..self }
    }

    /// The worker beats in `dir`: a Slurm job that ends without ever
    /// beating did not see it ([`Heart::unseen`]).
    fn seeing(self, dir: &'a Path) -> Heart<'a> {
        Heart {
            dir: Some(dir),
            ..self
        }
    }

    /// The directory the worker did not see, when its Slurm job ended in
    /// `state` (`COMPLETED`, `FAILED`: it ran and exited) without a beat.
    fn unseen(&self, state: &str) -> Option<&'a Path> {
        let beat = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last
            .is_some()
            || (self.read)().is_some();
        let exited = state.starts_with("COMPLETED") || state.starts_with("FAILED");
        self.dir.filter(|_| exited && !beat)
    }

    /// Looks at the beat; how long it has been silent if that is longer
    /// than `bound` while the attempt runs (`running`: Slurm says so).
    fn silent(&self, running: bool, bound: Duration) -> Option<Duration> {
        let beat = (self.read)();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if beat.is_some() && beat != state.last {
            state.last = beat;
            state.changed = Some(now);
        }
        let running = running && !self.in_turn;
        if state.running.is_none() && (running || state.changed.is_some()) {
            state.running = Some(now);
        }
        let since = state.changed.or(state.running)?;
        let silent = now.saturating_duration_since(since);
        (silent > bound).then_some(silent)
    }
}

/// The outcome a worker wrote beside its spec, if it is there.
fn shared_outcome(path: &Path) -> Option<io::Result<Ended>> {
    let outcome = read_outcome(path)?;
    Some(ended_of(&outcome))
}

fn ended_of(outcome: &WorkerOutcome) -> io::Result<Ended> {
    if let Some(error) = &outcome.error {
        // InvalidInput: the executor does not retry (exec/run.rs).
        let kind = if outcome.permanent {
            io::ErrorKind::InvalidInput
        } else {
            io::ErrorKind::Other
        };
        return Err(io::Error::new(kind, error.clone()));
    }
    Ok(Ended {
        status: outcome.status(),
        timed_out: outcome.timed_out,
        escalated: outcome.escalated,
        stopped: outcome.stopped,
    })
}

impl SlurmRunner {
    /// Waits for a worker to claim queue entry `name`, then for the
    /// attempt's outcome as for a Slurm job of its own ([`Self::wait`]).
    /// Both are seen by the watch thread (watch.rs); the outcome file is
    /// also read every [`STATE_INTERVAL`] without its mark.
    fn wait_queued(
        &self,
        name: &str,
        secrets: &[String],
        job: &JobRun<'_>,
        children: &Children,
        poll: Option<&(dyn Fn() + Sync)>,
        outcome_path: &Path,
    ) -> io::Result<Ended> {
        let watch = self.queue_watch()?;
        let entry = self.dir.join(QUEUE).join(name);
        let claimed = self.dir.join(CLAIMED);
        let mut checked = Instant::now();
        let mut unfound = 0;
        let mut polled = Instant::now();
        loop {
            if let Some(poll) = poll
                && polled.elapsed() >= POLL_INTERVAL
            {
                polled = Instant::now();
                poll();
            }
            if let Some(message) = self.unseen_error()
                && fs::remove_file(&entry).is_ok()
            {
                // Taken back: no worker can see it. InvalidInput: the
                // executor does not retry (exec/run.rs).
                return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
            }
            if children.is_interrupted() && fs::remove_file(&entry).is_ok() {
                // Taken back before any worker claimed it.
                return Ok(Ended::cancelled());
            }
            let (mut claim, generation) = watch.with(|seen| seen.claims.get(name).copied());
            if claim.is_none() && checked.elapsed() >= STATE_INTERVAL {
                checked = Instant::now();
                if entry.exists() {
                    // A worker may have left (idle, or lost): another one.
                    self.ensure_workers(secrets).map_err(|error| {
                        io::Error::other(format!("cannot submit to Slurm: {error}"))
                    })?;
                } else {
                    // Claimed, and not seen yet: look for the claim itself.
                    let all = self
                        .workers
                        .lock()
                        .map(|workers| workers.all.clone())
                        .unwrap_or_default();
                    claim = all
                        .iter()
                        .rev()
                        .copied()
                        .find(|id| claimed.join(format!("{name}@{id}")).exists());
                    if claim.is_none() {
                        unfound += 1;
                        if unfound > 3 {
                            return Err(io::Error::other(format!(
                                "queue entry {} was taken by no worker of this build",
                                entry.display()
                            )));
                        }
                    }
                }
            }
            if let Some(id) = claim {
                let last = {
                    let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
                    let claims = workers.claims.entry(id).or_insert(0);
                    *claims += 1;
                    *claims == self.executor.batch.max(1)
                };
                if last {
                    // Its worker exits after this one: the next is
                    // submitted now, while this attempt runs.
                    self.ensure_workers(secrets).map_err(|error| {
                        io::Error::other(format!("cannot submit to Slurm: {error}"))
                    })?;
                }
                if let Some(dispatched) = job.dispatched {
                    dispatched("slurm", &id.to_string());
                }
                let heartbeat = worker::heartbeat_path(outcome_path);
                // Read when its worker marked it written, and every
                // STATE_INTERVAL without (a mark is a hint, never the truth).
                let read = std::cell::Cell::new(Instant::now());
                let looked = std::cell::Cell::new(generation);
                let outcome = || {
                    let (marked, generation) = watch.with(|seen| seen.done.contains(name));
                    looked.set(generation);
                    if !marked && read.get().elapsed() < STATE_INTERVAL {
                        return None;
                    }
                    read.set(Instant::now());
                    shared_outcome(outcome_path)
                };
                // Claimed: its worker runs it (and beats) from now on.
                let ended = self.wait(
                    id,
                    job,
                    children,
                    poll,
                    &|| watch.wait_after(looked.get(), POLL_INTERVAL),
                    &outcome,
                    &Heart::new(&|| fs::read(&heartbeat).ok(), true),
                );
                watch.forget(name, Some(id));
                return ended;
            }
            watch.wait_after(generation, POLL_INTERVAL);
        }
    }

    /// Adds `ticket` to the attempts gathered for one Slurm job (cache
    /// mode), which is submitted once it holds as many as each CPU of the
    /// partition has in flight (at most `batch`), or [`GATHER`] after its
    /// first attempt came. Returns at once; the ticket learns its job id
    /// when the job is submitted.
    fn gather(
        &self,
        head: &[String],
        ticket: &Arc<Ticket>,
        resources: &Resources,
        secrets: &[String],
    ) {
        let size = (self.default_jobs() / self.cpus.max(1)).clamp(1, self.executor.batch.max(1));
        let (first, full) = {
            let mut gathering = self.gathering.lock().unwrap_or_else(|e| e.into_inner());
            if !gathering.tickets.is_empty() && gathering.secrets != secrets {
                // Another set of secrets: a job of its own.
                drop(gathering);
                self.submit(head, std::slice::from_ref(ticket), resources, secrets);
                return;
            }
            if gathering.tickets.is_empty() {
                gathering.secrets = secrets.to_vec();
            }
            gathering.tickets.push(Arc::clone(ticket));
            let first = gathering.tickets.len() == 1;
            let full =
                (gathering.tickets.len() >= size).then(|| std::mem::take(&mut gathering.tickets));
            (first, full)
        };
        if let Some(tickets) = full {
            self.submit(head, &tickets, resources, secrets);
            return;
        }
        if first {
            // The first waits for others, then submits what it has,
            // unless the gathering filled up meanwhile (then its ticket
            // went with it).
            std::thread::sleep(GATHER);
            let tickets = {
                let mut gathering = self.gathering.lock().unwrap_or_else(|e| e.into_inner());
                if gathering
                    .tickets
                    .first()
                    .is_some_and(|head| Arc::ptr_eq(head, ticket))
                {
                    std::mem::take(&mut gathering.tickets)
                } else {
                    Vec::new()
                }
            };
            if !tickets.is_empty() {
                self.submit(head, &tickets, resources, secrets);
            }
        }
    }

    /// Cache mode (cached.rs): uploads the attempt's files and spec,
    /// submits a Slurm job of its own running `cairn worker cached`, waits
    /// for its outcome in the cache, and restores its logs and outputs,
    /// verified, into the attempt's staging directory.
    fn run_cached(
        &self,
        link: &CacheLink,
        job: &JobRun<'_>,
        children: &Children,
        poll: Option<&(dyn Fn() + Sync)>,
    ) -> io::Result<Ended> {
        let invocation = &job.invocation;
        let run_id = children.run_id(invocation.run_id);
        let code = link.code.get(job.job).cloned().unwrap_or_default();
        let spec = cached::prepare(&*link.cache, invocation, &code, &link.root, &run_id).map_err(
            |error| {
                io::Error::other(format!(
                    "cannot upload the job's files to the remote cache {}: {error}",
                    link.url
                ))
            },
        )?;
        let outputs: Vec<PathBuf> = (0..job.outputs.len())
            .filter_map(|index| {
                let name = format!("CAIRN_OUTPUT_{index}");
                invocation
                    .extra_env
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, value)| PathBuf::from(value))
            })
            .collect();
        let secrets: Vec<String> = invocation
            .environment
            .secret
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        let defaults = &self.executor.resources;
        let resources = match self.resources.get(job.job) {
            Some(declared) => Resources {
                cpus: declared.cpus.or(defaults.cpus),
                mem: declared.mem.clone().or_else(|| defaults.mem.clone()),
                time: declared.time.or(defaults.time),
            },
            None => defaults.clone(),
        };
        let head = ["cached".to_owned(), link.url.clone()];
        let ticket = Ticket::new(PathBuf::from(spec.to_hex()));
        // Small actions share Slurm jobs (docs/slurm.md, "Batching"); one
        // that declares resources gets a job of its own.
        let gathered = !self.resources.contains_key(job.job) && self.executor.batch > 1;
        if gathered {
            self.gather(&head, &ticket, &resources, &secrets);
        } else {
            self.submit(&head, std::slice::from_ref(&ticket), &resources, &secrets);
        }
        let id = ticket.id(job)?;
        let restored = || -> Option<io::Result<Ended>> {
            let outcome = match cached::read_outcome(&*link.cache, &spec) {
                Ok(outcome) => outcome?,
                Err(error) => {
                    tracing::warn!("{error}");
                    return None;
                }
            };
            Some(
                cached::restore(
                    &*link.cache,
                    &outcome,
                    invocation.stdout,
                    invocation.stderr,
                    &outputs,
                )
                .map_err(|error| {
                    io::Error::other(format!("the result of Slurm job {id} was refused: {error}"))
                })
                .and_then(|()| ended_of(&outcome.outcome)),
            )
        };
        let last = std::cell::Cell::new(0);
        let beat = || {
            last.set(cached::last_heartbeat(&*link.cache, &spec, last.get()));
            (last.get() > 0).then(|| last.get().to_le_bytes().to_vec())
        };
        let ended = self.wait(
            id,
            job,
            children,
            poll,
            &|| std::thread::sleep(POLL_INTERVAL),
            &restored,
            &Heart::new(&beat, false).in_turn(gathered),
        );
        self.release(id);
        ended
    }

    /// Waits for the outcome of an attempt submitted as Slurm job `id`,
    /// as `outcome` reads it (`None`: not written yet), asking after each
    /// `nap`; `poll` (the checkpoint's watch) every [`POLL_INTERVAL`].
    /// Once the attempt runs, its worker's heartbeat (`heart`) must change
    /// at least every `[executor] heartbeat_timeout`, or the attempt is
    /// lost: its Slurm job is cancelled and the attempt fails, as after
    /// `NODE_FAIL` (nothing it staged is ingested).
    #[expect(
        clippy::too_many_arguments,
        reason = "one wait for the three ways an attempt runs"
    )]
    fn wait(
        &self,
        id: u64,
        job: &JobRun<'_>,
        children: &Children,
        poll: Option<&(dyn Fn() + Sync)>,
        nap: &dyn Fn(),
        outcome: &dyn Fn() -> Option<io::Result<Ended>>,
        heart: &Heart<'_>,
    ) -> io::Result<Ended> {
        let shielded = || {
            job.shield
                .is_some_and(|shield| shield.load(std::sync::atomic::Ordering::SeqCst))
        };
        let mut cancelled: Option<Instant> = None;
        let mut checked = Instant::now();
        let mut polled = Instant::now();
        // An outcome read after this coordinator cancelled the job is one
        // of a job told to stop: its exit 0 may be a shell that carried on
        // once Slurm killed its command (Slurm signals a job's processes
        // one by one), so it is never stored.
        let stopped_after = |ended: io::Result<Ended>, cancelled: Option<Instant>| {
            ended.map(|ended| Ended {
                stopped: ended.stopped || cancelled.is_some(),
                ..ended
            })
        };
        loop {
            if let Some(ended) = outcome() {
                return stopped_after(ended, cancelled);
            }
            if let Some(poll) = poll
                && polled.elapsed() >= POLL_INTERVAL
            {
                polled = Instant::now();
                poll();
            }
            if cancelled.is_none() && children.is_interrupted() && !shielded() {
                self.cancel(id);
                cancelled = Some(Instant::now());
            }
            if checked.elapsed() >= STATE_INTERVAL || cancelled.is_some() {
                checked = Instant::now();
                let (state, asked) = self.state(id).map_err(io::Error::other)?;
                // Not listed by a squeue older than the job is no end
                // (the "ended unknown" of a job just submitted).
                let ended = self.ended(id, state.as_ref(), asked);
                let running = state.as_ref().is_some_and(|(state, _)| state == "RUNNING");
                if cancelled.is_none()
                    && !ended
                    && let Some(silent) = heart.silent(running, self.executor.heartbeat_timeout)
                {
                    // The outcome may have come with the last look.
                    if let Some(ended) = outcome() {
                        return ended;
                    }
                    self.cancel(id);
                    // A worker cancelled runs nothing more: another one
                    // may be submitted for the retry at once, without
                    // waiting for Slurm to see this one end.
                    self.workers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .live
                        .retain(|(worker, _)| *worker != id);
                    let node = self
                        .node_of(id)
                        .map(|node| format!(" on {node}"))
                        .unwrap_or_default();
                    let message = format!(
                        "Slurm job {id}{node} was lost: its worker gave no heartbeat for {}s ([executor] heartbeat_timeout = {}s), so it was cancelled (Slurm's log: {})",
                        silent.as_secs(),
                        self.executor.heartbeat_timeout.as_secs(),
                        self.node_dir().join(format!("slurm-{id}.out")).display()
                    );
                    self.lost.store(true, Ordering::SeqCst);
                    note_in_stderr(job.invocation.stderr, &format!("cairn: {message}"));
                    return Err(io::Error::other(message));
                }
                // Stopped waiting: a cancelled job that lingers past the
                // grace is left to Slurm's own kill.
                let given_up = cancelled.is_some_and(|at| at.elapsed() > TERM_GRACE * 2);
                if ended || given_up {
                    // The outcome is written before the worker exits.
                    if let Some(ended) = outcome() {
                        return stopped_after(ended, cancelled);
                    }
                    if cancelled.is_some() {
                        return Ok(Ended::cancelled());
                    }
                    let (state, reason) =
                        state.unwrap_or_else(|| ("unknown".to_owned(), String::new()));
                    if let Some(dir) = heart.unseen(&state) {
                        let message = format!(
                            "{} (Slurm job {id} ended {state} before its worker started the attempt; Slurm's log: {})",
                            worker::unshared(dir, self.node_of(id).as_deref()),
                            self.node_dir().join(format!("slurm-{id}.out")).display()
                        );
                        self.lost.store(true, Ordering::SeqCst);
                        // InvalidInput: the executor does not retry.
                        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
                    }
                    let reason = if reason.is_empty() || reason == "None" {
                        String::new()
                    } else {
                        format!(", reason {reason}")
                    };
                    let message = format!(
                        "Slurm job {id} ended {state}{reason} before the job's outcome was written (Slurm's log: {})",
                        self.node_dir().join(format!("slurm-{id}.out")).display()
                    );
                    self.lost.store(true, Ordering::SeqCst);
                    note_in_stderr(job.invocation.stderr, &format!("cairn: {message}"));
                    return Err(io::Error::other(message));
                }
            }
            nap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker that claimed its whole batch no longer counts as pulling,
    /// so its replacement is submitted while its last attempt runs.
    #[test]
    fn a_worker_that_claimed_its_batch_is_not_pulling() {
        let now = Instant::now();
        let live = [(7, now), (8, now), (9, now)];
        let claims = HashMap::from([(7, 256), (8, 255)]);
        assert_eq!(pulling(&live, &claims, 256), 2, "8 and 9 (no claim yet)");
        let claims = HashMap::from([(7, 256), (8, 256), (9, 300)]);
        assert_eq!(pulling(&live, &claims, 256), 0);
        assert_eq!(pulling(&live, &HashMap::new(), 1), 3);
    }

    /// An attempt not yet running (a Slurm job pending) is never lost for
    /// want of a beat; once it runs, a beat that stops changing for longer
    /// than the bound is, and one that keeps changing never is.
    #[test]
    fn a_heartbeat_silent_past_the_bound_loses_a_running_attempt() {
        let bound = Duration::from_millis(60);
        let beat = Mutex::new(None::<u64>);
        let read = || beat.lock().unwrap().map(|n| n.to_le_bytes().to_vec());
        let heart = Heart::new(&read, false);
        assert_eq!(heart.silent(false, bound), None);
        std::thread::sleep(bound * 2);
        assert_eq!(heart.silent(false, bound), None, "pending: no beat owed");
        for n in 1..=4 {
            *beat.lock().unwrap() = Some(n);
            assert_eq!(heart.silent(false, bound), None, "beating");
            std::thread::sleep(bound / 2);
        }
        std::thread::sleep(bound * 2);
        assert!(
            heart
                .silent(false, bound)
                .is_some_and(|silent| silent > bound)
        );
        // Running (claimed, or RUNNING for Slurm) without any beat at all.
        let none = || None;
        let claimed = Heart::new(&none, true);
        assert_eq!(claimed.silent(false, bound), None);
        std::thread::sleep(bound * 2);
        assert!(claimed.silent(false, bound).is_some());
        let started = Heart::new(&none, false);
        assert_eq!(started.silent(true, bound), None);
        std::thread::sleep(bound * 2);
        assert!(started.silent(true, bound).is_some());
    }

    /// A job a `squeue` did not list has ended only if that `squeue`
    /// started after the job was submitted: one that started before (and
    /// returned after, on a busy controller) may not know it yet. Treating
    /// that as an end failed attempts with "Slurm job N ended unknown".
    #[test]
    fn a_job_unknown_to_an_older_squeue_has_not_ended() {
        let asked = Instant::now();
        let submitted = asked + Duration::from_millis(300);
        assert!(!ended(None, asked, Some(submitted)));
        assert!(ended(
            None,
            submitted + Duration::from_millis(1),
            Some(submitted)
        ));
        let running = ("RUNNING".to_owned(), String::new());
        let failed = ("NODE_FAIL".to_owned(), String::new());
        assert!(!ended(Some(&running), submitted, Some(submitted)));
        assert!(ended(Some(&failed), asked, Some(submitted)));
    }
}
