//! The JobRunner port: how the executor starts an action's job and waits
//! for it (exec/run.rs calls it once per attempt), and what a job is given:
//! the environment policy ([`JobEnvironment`], docs/internals.md "Job
//! processes") and the registry of running children an interrupt stops
//! ([`Children`]).
//!
//! The real runner spawns processes ([`crate::local::LocalRunner`]); the
//! [`ScriptedRunner`] twin spawns nothing and writes the outputs a test's
//! script says, for in-process tests of the scheduler.
//!
//! Nothing from cairn's environment reaches a job except the allow-list
//! (PATH, HOME, LANG and `[env] allow`) and variables marked secret (`[env]
//! secret`). Allow-listed values enter the action key; secret values never
//! enter a key, an event, or an error message.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::graph::{DEFAULT_ENV_ALLOW, EnvPolicy};
use crate::redact::Redactor;
use crate::refs::PartitionRef;

mod scripted;

pub use scripted::{Ran, ScriptedJob, ScriptedRunner};

/// Starts an action's job and waits for it: one call per attempt.
pub trait JobRunner: Sync {
    /// Runs `job` to completion, its stdout and stderr captured to
    /// `job.invocation.stdout` and `.stderr`, calling `poll` every
    /// [`POLL_INTERVAL`] while it runs. Refuses to start once `children`
    /// was interrupted (an [`io::ErrorKind::Interrupted`] error).
    fn run(
        &self,
        job: &JobRun<'_>,
        children: &Children,
        poll: Option<&(dyn Fn() + Sync)>,
    ) -> io::Result<Ended>;
}

/// One attempt of an action's job, as the executor asks for it.
pub struct JobRun<'a> {
    /// The job's name.
    pub job: &'a str,
    /// The partitions it produces, in the order of `CAIRN_OUTPUT_<i>`.
    pub outputs: &'a [PartitionRef],
    /// The process to run (`CAIRN_OUTPUT_<i>` and the other variables in
    /// `extra_env`).
    pub invocation: Invocation<'a>,
    /// Set while another build of the process waits on this run
    /// (exec/inflight.rs): an interrupt of this build then leaves the job
    /// running (no SIGTERM, no SIGKILL). `None`: never shared.
    pub shield: Option<&'a Arc<AtomicBool>>,
    /// Called by a runner that runs the job in another system's job, once
    /// that job is known: the executor's name (`"slurm"`) and its id of
    /// the job (the Slurm job id). The executor records it
    /// (`ActionDispatched`).
    pub dispatched: Option<Dispatched<'a>>,
    /// Called by a runner once the job's process runs, before it waits for
    /// it (the local runner: right after the spawn). The worker does then
    /// what it put off from the action before (the emptied run directory
    /// of its last job, exec/staging.rs) while the job runs, rather than
    /// before it starts. A runner that never calls it
    /// leaves that to the worker after the attempt.
    pub started: Option<&'a (dyn Fn() + Sync)>,
}

/// What a runner calls with the executor's name and its id of the job an
/// attempt runs in ([`JobRun::dispatched`]).
pub type Dispatched<'a> = &'a (dyn Fn(&str, &str) + Sync);

/// The variables of cairn's own environment that jobs receive.
#[derive(Debug, Clone, Default)]
pub struct JobEnvironment {
    /// Allow-listed, sorted by name; part of every action key.
    pub passed: Vec<(String, String)>,
    /// Secret: passed to jobs, never recorded or hashed.
    pub secret: Vec<(String, String)>,
    /// Redacts the secret values from what jobs print (see `redact.rs`).
    pub redactor: Redactor,
}

impl JobEnvironment {
    /// Picks the variables `policy` allows from `lookup` (normally the
    /// process environment).
    pub fn from_lookup(policy: &EnvPolicy, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let mut passed = Vec::new();
        for name in DEFAULT_ENV_ALLOW
            .iter()
            .copied()
            .chain(policy.allow.iter().map(String::as_str))
        {
            if policy.secret.iter().any(|secret| secret == name)
                || passed.iter().any(|(n, _)| n == name)
            {
                continue;
            }
            if let Some(value) = lookup(name) {
                passed.push((name.to_owned(), value));
            }
        }
        passed.sort();
        let secret = policy
            .secret
            .iter()
            .filter_map(|name| lookup(name).map(|value| (name.clone(), value)))
            .collect::<Vec<(String, String)>>();
        let redactor = Redactor::new(secret.iter().map(|(_, value)| value.as_bytes()));
        JobEnvironment {
            passed,
            secret,
            redactor,
        }
    }

    pub fn from_process(policy: &EnvPolicy) -> Self {
        Self::from_lookup(policy, |name| std::env::var(name).ok())
    }

    pub(crate) fn apply(&self, command: &mut std::process::Command) {
        command.env_clear();
        for (name, value) in self.passed.iter().chain(&self.secret) {
            command.env(name, value);
        }
    }
}

/// How long a process gets between SIGTERM and SIGKILL (after an
/// interrupt, or its timeout).
pub const TERM_GRACE: Duration = Duration::from_secs(5);

/// Children currently running, so that an interrupt can stop them, and
/// where their runs are recorded (see [`crate::groups`]).
#[derive(Default)]
pub struct Children {
    pub(crate) pids: Mutex<HashSet<u32>>,
    /// Children being started: spawned or about to be, their pid not yet
    /// in `pids` (a job may already run, and be interrupted, meanwhile).
    pub(crate) starting: std::sync::atomic::AtomicUsize,
    pub(crate) interrupted: AtomicBool,
    /// A second interrupt: SIGKILL now, without waiting for the grace.
    pub(crate) now: AtomicBool,
    /// When the first interrupt came (for the grace), and the condition a
    /// retry's backoff waits on.
    pub(crate) since: Mutex<Option<Instant>>,
    pub(crate) wake: Condvar,
    pub(crate) running: Option<PathBuf>,
    /// Names this cairn's record in `running` and prefixes each run id
    /// (`<session>-<run>`): one record per build, not one per job.
    pub(crate) session: String,
    /// The record, created when the first child starts (a build that runs
    /// nothing writes none), removed when the children are dropped.
    pub(crate) record: Mutex<Option<crate::groups::Record>>,
    /// The shields of running children whose run another build joined
    /// ([`JobRun::shield`]): interrupts pass them by.
    pub(crate) shields: Mutex<HashMap<u32, Arc<AtomicBool>>>,
    /// Children an interrupt passed by, shielded then: if their shield
    /// drops, their runner sends the SIGTERM late.
    pub(crate) spared: Mutex<HashSet<u32>>,
    /// Set by a signal handler when a stop is announced (SIGCONT: Slurm
    /// sends it to every process of a job right before the SIGTERM that
    /// ends it); read by a Slurm worker (slurm/worker.rs, `run_job`).
    pub(crate) announced: Arc<AtomicBool>,
    /// Set by a signal handler when a stop signal (SIGINT, SIGTERM) came,
    /// before the thread that calls [`Children::interrupt`] runs.
    pub(crate) signalled: Arc<AtomicBool>,
}

impl Children {
    /// Children whose runs are recorded in `dir` (the store's `running/`),
    /// so that the next cairn can kill what a killed cairn left.
    pub fn recorded_in(dir: PathBuf) -> Self {
        Children {
            running: Some(dir),
            session: crate::groups::unique_id(),
            ..Children::default()
        }
    }

    /// The session of these children: every run id of theirs is
    /// `<session>-<run>` (empty when runs are not recorded).
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The `CAIRN_RUN_ID` of `run`: prefixed by the session when the runs
    /// are recorded, so the next cairn finds every process of this one by
    /// the record's name.
    pub(crate) fn run_id(&self, run: &str) -> String {
        if self.session.is_empty() {
            run.to_owned()
        } else {
            format!("{}-{run}", self.session)
        }
    }

    /// Creates the session's record before its first child starts.
    pub(crate) fn record(&self) -> io::Result<()> {
        let Some(dir) = &self.running else {
            return Ok(());
        };
        let mut record = self
            .record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if record.is_none() {
            *record = Some(crate::groups::Record::create(dir, &self.session)?);
        }
        Ok(())
    }

    /// Sends SIGTERM to every running child's group, refuses new ones and
    /// wakes retries waiting out their backoff. Each child left running
    /// [`TERM_GRACE`] later is SIGKILLed (by its worker).
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        if let Ok(mut since) = self.since.lock() {
            since.get_or_insert_with(Instant::now);
        }
        self.wake.notify_all();
        for pid in self.running_pids() {
            crate::groups::signal_group(pid, libc::SIGTERM);
        }
    }

    /// A second interrupt: SIGKILLs every running child's group at once.
    pub fn kill_now(&self) {
        self.now.store(true, Ordering::SeqCst);
        self.interrupt();
        for pid in self.running_pids() {
            crate::groups::signal_group(pid, libc::SIGKILL);
        }
    }

    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// The flag a signal handler sets when a stop is announced before it
    /// comes: a Slurm worker registers it for SIGCONT, which Slurm sends to
    /// every process of a job right before the SIGTERM (docs/slurm.md,
    /// "Faults"). Only an atomic store: safe in a handler.
    pub fn stop_announced(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.announced)
    }

    /// The flag a signal handler sets when a stop signal comes (SIGINT,
    /// SIGTERM), at once: a job that exits after it was set counts as
    /// stopped (not stored, whatever its status) even before the thread
    /// watching the signals has called [`Children::interrupt`]. A service
    /// manager signals every process of a group together (systemd's
    /// `KillMode=control-group`, Slurm), and a job that traps SIGTERM and
    /// exits 0 at once can end before that thread runs. Only an atomic
    /// store: safe in a handler.
    pub fn stop_signalled(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.signalled)
    }

    /// Whether a stop signal came ([`Children::stop_signalled`]) or an
    /// interrupt.
    pub(crate) fn told_to_stop(&self) -> bool {
        self.is_interrupted() || self.signalled.load(Ordering::SeqCst)
    }

    /// How many children are running, counting those being started (a
    /// job runs before its runner has recorded its pid).
    pub fn running(&self) -> usize {
        self.pids.lock().map(|pids| pids.len()).unwrap_or_default()
            + self.starting.load(Ordering::SeqCst)
    }

    /// Waits `duration` unless interrupted first: whether the whole
    /// duration passed.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let Ok(mut since) = self.since.lock() else {
            return false;
        };
        while since.is_none() && !self.is_interrupted() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            since = match self.wake.wait_timeout(since, left) {
                Ok((since, _)) => since,
                Err(_) => return false,
            };
        }
        false
    }

    /// When SIGKILL is due for a child that got SIGTERM from an interrupt:
    /// at once after a second one, else the grace after the first.
    pub(crate) fn kill_due(&self) -> Option<Instant> {
        let since = (*self.since.lock().ok()?)?;
        Some(if self.now.load(Ordering::SeqCst) {
            Instant::now()
        } else {
            since + TERM_GRACE
        })
    }

    /// The running children an interrupt signals: all but the shielded,
    /// which are noted as spared.
    fn running_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .pids
            .lock()
            .map(|pids| pids.iter().copied().collect())
            .unwrap_or_default();
        pids.retain(|&pid| {
            let shielded = self.is_shielded(pid);
            if shielded && let Ok(mut spared) = self.spared.lock() {
                spared.insert(pid);
            }
            !shielded
        });
        pids
    }

    /// Whether an interrupt passed child `pid` by (shielded then).
    pub(crate) fn was_spared(&self, pid: u32) -> bool {
        self.spared
            .lock()
            .map(|spared| spared.contains(&pid))
            .unwrap_or(false)
    }

    /// Whether another build joined the run of child `pid` (an interrupt
    /// of this build leaves it running).
    pub fn is_shielded(&self, pid: u32) -> bool {
        self.shields
            .lock()
            .map(|shields| {
                shields
                    .get(&pid)
                    .is_some_and(|shield| shield.load(Ordering::SeqCst))
            })
            .unwrap_or(false)
    }
}

/// How often a running job's checkpoint file is looked at (and its
/// timeout and the interrupt grace checked).
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How to run one process.
pub struct Invocation<'a> {
    pub argv: &'a [String],
    pub cwd: &'a Path,
    pub environment: &'a JobEnvironment,
    /// Extra variables (config env, CAIRN_*), set after the policy's.
    pub extra_env: &'a [(String, String)],
    pub stdout: &'a Path,
    pub stderr: &'a Path,
    /// Unique to this run ([`crate::groups::unique_id`]): in its processes'
    /// environment as `CAIRN_RUN_ID`, after the session of the
    /// [`Children`] when their runs are recorded.
    pub run_id: &'a str,
    /// What runs, for messages: `job clean (clean/date=…)`.
    pub label: &'a str,
    /// Past this, the process gets SIGTERM, and SIGKILL [`TERM_GRACE`]
    /// later.
    pub timeout: Option<Duration>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    pub status: ExitStatus,
    /// It ran past its timeout and was stopped.
    pub timed_out: bool,
    /// It outlived SIGTERM by the grace (or a second interrupt came) and was
    /// SIGKILLed.
    pub escalated: bool,
    /// It was told to stop before it ended: an interrupt's SIGTERM reached
    /// it, or its Slurm job was cancelled or ended by Slurm. Whatever its
    /// exit status says, what it wrote is not stored: a job torn down
    /// process by process can exit 0 (a shell whose command was killed
    /// carries on to its next line), and a job trapping SIGTERM can exit 0
    /// with half an output (docs/reliability.md, promise 7).
    pub stopped: bool,
}

impl Ended {
    /// Whether the attempt succeeded, so that what it wrote may be stored:
    /// exit 0, within its timeout, and not told to stop.
    pub fn succeeded(&self) -> bool {
        self.status.success() && !self.timed_out && !self.stopped
    }

    /// An attempt cairn cancelled before it ended (taken back before a
    /// worker claimed it, or given up on after its Slurm job was
    /// cancelled): as if SIGTERM had ended it.
    pub fn cancelled() -> Ended {
        Ended {
            status: std::os::unix::process::ExitStatusExt::from_raw(libc::SIGTERM),
            timed_out: false,
            escalated: false,
            stopped: true,
        }
    }
}
