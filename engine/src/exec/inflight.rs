//! Actions in flight across the builds of one process (a held workspace,
//! docs/architecture.md): when two builds need the same action (the same
//! key) at the same time, it runs once. The first build to claim the key
//! runs it; a build that claims it meanwhile joins that run: it waits (in
//! no job slot) and takes the run's result as its own, recording
//! `ActionJoined`. The port is [`Context::in_flight`](super::Context):
//! `None` (the command line, whose builds are alone in their process) is
//! the no-op: no claim, no lock, nothing per action.
//!
//! - **Cancelling the build that runs a joined action does not stop it.**
//!   While another build waits on a run, the run is shielded: the first
//!   build's interrupt (its `Cancel`, a signal) neither SIGTERMs nor
//!   SIGKILLs that job, which runs to its end inside the first build (which
//!   records its outcome, then ends as interrupted). When the last waiter
//!   gives up too (its own build cancelled), the shield drops and the
//!   interrupt reaches the job (SIGTERM, SIGKILL after the grace). A retry of it is not
//!   started after the interrupt; the run then ends as interrupted and each
//!   waiter claims the key again and runs it itself.
//! - **A failed run** is reported by each waiter as the failure of its own
//!   action (`ActionFailed`, "joined the run of build N, which failed: …").
//!   A later claim of a key whose run failed runs it again.
//! - **A succeeded run** stays joinable until the build that ran it ends
//!   (by then its result is committed and a new decision finds it).
//! - **Job slots.** The registry also bounds the jobs running at once over
//!   every build of the process ([`InFlight::slot`]); a waiter holds none.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::digest::{ActionKey, ContentDigest};

/// How often a waiter (for a run or a slot) looks at its build's interrupt.
const WAKE_EVERY: Duration = Duration::from_millis(50);

/// How a run ended, as its waiters take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunResult {
    /// The outputs are in place, with these digests.
    Succeeded { outputs: Vec<ContentDigest> },
    /// The job failed (for good: its attempts used up).
    Failed {
        error: String,
        exit_code: Option<i32>,
        stdout: Option<ContentDigest>,
        stderr: Option<ContentDigest>,
        stderr_tail: Vec<String>,
    },
    /// The build running it was interrupted before the job could run (or
    /// retry): a waiter runs it itself.
    Interrupted,
}

/// One run of a key.
struct Run {
    /// The build running it.
    build: u64,
    /// Set while another build waits on the run: an interrupt of `build`
    /// leaves the job running (job/mod.rs, `Children::interrupt`).
    shield: Arc<AtomicBool>,
    /// The builds waiting on the run; the shield drops with the last.
    waiters: Mutex<usize>,
    result: Mutex<Option<RunResult>>,
    done: Condvar,
}

/// The registry of runs in flight (and the job slots) of one process.
pub struct InFlight {
    runs: Mutex<HashMap<ActionKey, Arc<Run>>>,
    slots: Mutex<usize>,
    slot_free: Condvar,
    max_slots: usize,
}

/// What [`InFlight::claim`] found.
pub enum Claim<'r> {
    /// No other build runs the key: this one runs it, then calls
    /// [`Running::finish`].
    Run(Running<'r>),
    /// Another build runs it (or ran it, successfully, in a build not yet
    /// over): wait on that run.
    Join(Joining),
}

/// This build's claim on a key it runs. Dropped without
/// [`Running::finish`] (a panic), the run ends as interrupted.
pub struct Running<'r> {
    registry: &'r InFlight,
    key: ActionKey,
    run: Arc<Run>,
    finished: bool,
}

/// A run of another build this one waits on.
pub struct Joining {
    run: Arc<Run>,
}

/// A job slot, released when dropped.
pub struct Slot<'r> {
    registry: &'r InFlight,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl InFlight {
    /// A registry whose builds run at most `jobs` jobs at once, together.
    pub fn new(jobs: usize) -> InFlight {
        InFlight {
            runs: Mutex::new(HashMap::new()),
            slots: Mutex::new(0),
            slot_free: Condvar::new(),
            max_slots: jobs.max(1),
        }
    }

    /// Claims `key` for `build`: run it, or join the run of another build.
    pub fn claim(&self, key: ActionKey, build: u64) -> Claim<'_> {
        let mut runs = lock(&self.runs);
        if let Some(run) = runs.get(&key) {
            let joinable = run.build != build
                && match &*lock(&run.result) {
                    None => true,
                    Some(RunResult::Succeeded { .. }) => true,
                    Some(_) => false,
                };
            if joinable {
                *lock(&run.waiters) += 1;
                run.shield.store(true, Ordering::SeqCst);
                return Claim::Join(Joining {
                    run: Arc::clone(run),
                });
            }
        }
        let run = Arc::new(Run {
            build,
            shield: Arc::new(AtomicBool::new(false)),
            waiters: Mutex::new(0),
            result: Mutex::new(None),
            done: Condvar::new(),
        });
        runs.insert(key, Arc::clone(&run));
        Claim::Run(Running {
            registry: self,
            key,
            run,
            finished: false,
        })
    }

    /// The shield of the run of `key` by `build`, while it is in flight:
    /// passed to the job runner with each attempt.
    pub fn shield(&self, key: &ActionKey, build: u64) -> Option<Arc<AtomicBool>> {
        lock(&self.runs)
            .get(key)
            .filter(|run| run.build == build)
            .map(|run| Arc::clone(&run.shield))
    }

    /// `build` is over (its results committed): its succeeded runs are no
    /// longer joinable (a new decision finds them in the catalog).
    pub fn build_ended(&self, build: u64) {
        lock(&self.runs).retain(|_, run| run.build != build || lock(&run.result).is_none());
    }

    /// Waits for a job slot, unless `stop` says the build was interrupted
    /// (then `None`; checked every 50 ms).
    pub fn slot(&self, stop: &dyn Fn() -> bool) -> Option<Slot<'_>> {
        let mut used = lock(&self.slots);
        while *used >= self.max_slots {
            if stop() {
                return None;
            }
            used = self
                .slot_free
                .wait_timeout(used, WAKE_EVERY)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *used += 1;
        Some(Slot { registry: self })
    }

    /// Keys in flight (running, or succeeded in a build not yet over).
    pub fn len(&self) -> usize {
        lock(&self.runs).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut used = lock(&self.registry.slots);
        *used = used.saturating_sub(1);
        self.registry.slot_free.notify_one();
    }
}

impl Running<'_> {
    /// Whether another build joined this run.
    pub fn joined(&self) -> bool {
        self.run.shield.load(Ordering::SeqCst)
    }

    /// Publishes the run's result to its waiters. A run that did not
    /// succeed is forgotten at once (the next claim runs the key again); a
    /// succeeded one stays joinable until its build ends.
    pub fn finish(mut self, result: RunResult) {
        self.publish(result);
    }

    fn publish(&mut self, result: RunResult) {
        self.finished = true;
        let succeeded = matches!(result, RunResult::Succeeded { .. });
        {
            let mut runs = lock(&self.registry.runs);
            *lock(&self.run.result) = Some(result);
            if !succeeded
                && runs
                    .get(&self.key)
                    .is_some_and(|run| Arc::ptr_eq(run, &self.run))
            {
                runs.remove(&self.key);
            }
        }
        self.run.done.notify_all();
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.publish(RunResult::Interrupted);
        }
    }
}

impl Drop for Joining {
    /// The last waiter gone (it has the result, or its build was
    /// interrupted), the run is no longer shielded: an interrupt of the
    /// build running it stops it again.
    fn drop(&mut self) {
        let mut waiters = lock(&self.run.waiters);
        *waiters = waiters.saturating_sub(1);
        if *waiters == 0 {
            self.run.shield.store(false, Ordering::SeqCst);
        }
    }
}

impl Joining {
    /// The build running (or that ran) the key.
    pub fn build(&self) -> u64 {
        self.run.build
    }

    /// Waits for the run's result; `None` if `stop` says this build was
    /// interrupted first (checked every 50 ms).
    pub fn wait(&self, stop: &dyn Fn() -> bool) -> Option<RunResult> {
        let mut result = lock(&self.run.result);
        loop {
            if let Some(result) = &*result {
                return Some(result.clone());
            }
            if stop() {
                return None;
            }
            result = self
                .run
                .done
                .wait_timeout(result, WAKE_EVERY)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_joins_the_run_and_takes_its_result() {
        let registry = InFlight::new(2);
        let key = ActionKey([1; 32]);
        let Claim::Run(running) = registry.claim(key, 1) else {
            panic!("the first claim runs")
        };
        assert!(!running.joined());
        let Claim::Join(joining) = registry.claim(key, 2) else {
            panic!("the second claim joins")
        };
        assert_eq!(joining.build(), 1);
        assert!(running.joined(), "joined: shielded");
        assert!(registry.shield(&key, 1).unwrap().load(Ordering::SeqCst));
        let outputs = vec![ContentDigest::of(b"out")];
        std::thread::scope(|threads| {
            let waiter = threads.spawn(|| joining.wait(&|| false));
            running.finish(RunResult::Succeeded {
                outputs: outputs.clone(),
            });
            assert_eq!(
                waiter.join().unwrap(),
                Some(RunResult::Succeeded {
                    outputs: outputs.clone()
                })
            );
        });
        // Joinable until build 1 ends, then forgotten.
        assert!(matches!(registry.claim(key, 3), Claim::Join(_)));
        registry.build_ended(1);
        assert!(registry.is_empty());
        assert!(matches!(registry.claim(key, 3), Claim::Run(_)));
    }

    #[test]
    fn a_failed_or_dropped_run_is_claimed_again_and_a_stopped_waiter_returns() {
        let registry = InFlight::new(1);
        let key = ActionKey([2; 32]);
        let Claim::Run(running) = registry.claim(key, 1) else {
            panic!()
        };
        let Claim::Join(joining) = registry.claim(key, 2) else {
            panic!()
        };
        assert_eq!(joining.wait(&|| true), None, "stopped while waiting");
        let shield = registry.shield(&key, 1).unwrap();
        assert!(shield.load(Ordering::SeqCst));
        let Claim::Join(second) = registry.claim(key, 3) else {
            panic!()
        };
        drop(second);
        assert!(shield.load(Ordering::SeqCst), "a waiter is left");
        drop(running);
        assert_eq!(joining.wait(&|| false), Some(RunResult::Interrupted));
        drop(joining);
        assert!(!shield.load(Ordering::SeqCst), "no waiter left: unshielded");
        assert!(matches!(registry.claim(key, 2), Claim::Run(_)));
    }

    #[test]
    fn slots_bound_the_jobs_of_every_build() {
        let registry = InFlight::new(1);
        let first = registry.slot(&|| false).expect("a free slot");
        assert!(registry.slot(&|| true).is_none(), "none free: stopped");
        drop(first);
        assert!(registry.slot(&|| true).is_some());
    }
}
