//! The operations registry (Google AIP-151 long-running operations,
//! docs/api.md "The Operation resource"): every submitted build or
//! backfill, its state, the counts it announced at submit and those it
//! reached, the actions it runs now, and how it ended; the idempotency
//! keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cairn_app::backfill::{Backfill, BackfillRequest};
use cairn_app::build::{BuildRequest, Cancel};
use cairn_engine::plan::Plan;
use cairn_engine::record::{Announced, BuildCounts, Submission};
use cairn_engine::refs::PartitionRef;
use serde::Serialize;
use serde_json::{Value, json};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// `ms` as an RFC 3339 UTC time (`2026-12-06T16:00:00.123Z`).
pub fn rfc3339(ms: u64) -> String {
    let Ok(ms) = i64::try_from(ms) else {
        return String::new();
    };
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(time) => format!("{time:.3}"),
        Err(_) => String::new(),
    }
}

/// Locks `mutex`, going on with the data of a thread that panicked while
/// holding it (the registry stays readable).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Build,
    Backfill,
}

impl Kind {
    pub fn word(self) -> &'static str {
        match self {
            Kind::Build => "build",
            Kind::Backfill => "backfill",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Queued,
        State::Running,
        State::Succeeded,
        State::Failed,
        State::Cancelled,
    ];

    pub fn word(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        State::ALL.into_iter().find(|state| state.word() == text)
    }

    pub fn done(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::Cancelled)
    }
}

/// What an operation announced at submit (Bazel BEP-style), from a dry
/// run (shared by the submits that ask for the same partitions at once:
/// server/src/expect.rs): the plan's partitions and actions, how many are
/// current or restorable, how many would run. `None` only for an operation
/// made before it was counted.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Expected {
    pub partitions: u64,
    pub actions: u64,
    pub current: u64,
    pub to_run: u64,
}

impl From<Expected> for Announced {
    fn from(expected: Expected) -> Announced {
        Announced {
            partitions: expected.partitions,
            actions: expected.actions,
            current: expected.current,
            to_run: expected.to_run,
        }
    }
}

impl From<Announced> for Expected {
    fn from(announced: Announced) -> Expected {
        Expected {
            partitions: announced.partitions,
            actions: announced.actions,
            current: announced.current,
            to_run: announced.to_run,
        }
    }
}

/// What an operation builds.
#[derive(Debug)]
pub enum Work {
    Build(BuildRequest),
    Backfill {
        backfill: Box<Backfill>,
        request: BackfillRequest,
        /// `retry_failed`: the partitions of the backfill whose last
        /// attempt (or an input's) failed, as `cairn backfill
        /// --retry-failed` picks them (`cairn_app::backfill::targets`);
        /// `None`: all of them.
        retry: Option<Vec<PartitionRef>>,
    },
}

/// An action running now.
#[derive(Debug, Clone)]
pub struct RunningAction {
    /// The action's address in the plan: stable while the build runs.
    pub slot: usize,
    /// The action key its `ActionStarted` carries.
    pub key: String,
    pub job: String,
    pub outputs: Vec<String>,
    pub since_ms: u64,
}

/// A partition whose action failed in the operation's build.
#[derive(Debug, Clone, Serialize)]
pub struct FailedPartition {
    pub partition: String,
    pub job: String,
    pub error: String,
    /// The last lines of the job's stderr (redacted by the engine).
    pub log_tail: String,
}

/// One operation.
#[derive(Debug)]
pub struct Operation {
    pub id: String,
    pub kind: Kind,
    pub state: State,
    pub submitted_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// The submitted body, normalized (what the idempotency digest covers).
    pub request: Value,
    /// blake3 of the kind and the normalized body.
    pub digest: [u8; 32],
    pub idempotency_key: Option<String>,
    /// Why it was submitted: a build's `reason`, a backfill's (its config's
    /// reason, path and digest, as `cairn backfill` records it). Recorded
    /// in its build's `BuildRequested`.
    pub reason: Option<String>,
    /// Who or what submitted it (the body's `submitted_by`). Recorded in
    /// its build's `BuildRequested` (`submission`, store format 12).
    pub submitted_by: Option<String>,
    /// The build id in the event log, once its `BuildRequested` is read.
    pub build: Option<u64>,
    /// The log's last seq when the operation started: its events come
    /// after it.
    pub start_seq: u64,
    /// The log's last seq once its build returned: every event of it is at
    /// or before it.
    pub end_seq: Option<u64>,
    pub expected: Option<Expected>,
    pub counts: BuildCounts,
    pub running: Vec<RunningAction>,
    /// Executed actions' durations: their sum (ms) and number, for the ETA.
    pub durations: (u64, u64),
    /// Jobs at once, for the ETA.
    jobs: usize,
    pub result: Option<Value>,
    pub error: Option<Value>,
    pub failed: Vec<FailedPartition>,
    /// Outputs of actions that failed or were skipped: what a retry builds.
    pub unfinished: Vec<String>,
    pub cancel_requested: bool,
    /// Stops its build (given to the use case with the request).
    pub cancel: Cancel,
    pub work: Option<Arc<Work>>,
    /// The plan its submit's dry run made, and the generation of
    /// [`crate::expect::Expecting`] that dry run was asked at: taken when
    /// the operation starts, used if the generation is still that one
    /// (server/src/expect.rs).
    pub dry_plan: Option<(Arc<Plan>, u64)>,
}

impl Operation {
    /// A queued operation; `work`'s request gets the operation's
    /// [`Cancel`] (and its [`Operation::submission`] when it starts).
    pub fn new(
        kind: Kind,
        request: Value,
        digest: [u8; 32],
        idempotency_key: Option<String>,
        mut work: Work,
        jobs: usize,
    ) -> Operation {
        let cancel = Cancel::new();
        let id = crate::auth::operation_id();
        match &mut work {
            Work::Build(request) => request.cancel = Some(cancel.clone()),
            Work::Backfill { request, .. } => request.cancel = Some(cancel.clone()),
        }
        let reason = request
            .get("reason")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let submitted_by = request
            .get("submitted_by")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Operation {
            id,
            kind,
            state: State::Queued,
            submitted_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
            request,
            digest,
            idempotency_key,
            reason,
            submitted_by,
            build: None,
            start_seq: 0,
            end_seq: None,
            expected: None,
            counts: BuildCounts::default(),
            running: Vec::new(),
            durations: (0, 0),
            jobs,
            result: None,
            error: None,
            failed: Vec::new(),
            unfinished: Vec::new(),
            cancel_requested: false,
            cancel,
            work: Some(Arc::new(work)),
            dry_plan: None,
        }
    }

    /// What its build records in its `BuildRequested`: which operation
    /// (and key) it was, who submitted it, when, and what it announced.
    pub fn submission(&self) -> Submission {
        Submission {
            operation: self.id.clone(),
            idempotency_key: self.idempotency_key.clone(),
            body_digest: self.digest,
            submitted_by: self.submitted_by.clone(),
            submitted_ms: self.submitted_ms,
            expected: self.expected.map(Announced::from),
        }
    }

    /// An operation of an earlier server, rebuilt from its build's
    /// `BuildRequested` (at `time_ms`, with `reason`): what the log keeps
    /// of it. Its end comes from [`Operation::ended_in_log`]; without one
    /// it stays running until [`Registry::close_restored`].
    pub fn restored(
        submission: &Submission,
        command: &str,
        requested: &[String],
        reason: Option<&str>,
        build: u64,
        time_ms: u64,
    ) -> Operation {
        let kind = if command == "backfill" {
            Kind::Backfill
        } else {
            Kind::Build
        };
        Operation {
            id: submission.operation.clone(),
            kind,
            state: State::Running,
            // Before store format 12: the build's start.
            submitted_ms: if submission.submitted_ms == 0 {
                time_ms
            } else {
                submission.submitted_ms
            },
            started_ms: Some(time_ms),
            finished_ms: None,
            request: json!({"refs": requested, "restored": true}),
            digest: submission.body_digest,
            idempotency_key: submission.idempotency_key.clone(),
            reason: reason.map(str::to_owned),
            submitted_by: submission.submitted_by.clone(),
            build: Some(build),
            start_seq: 0,
            end_seq: None,
            // Before store format 12, made from the counts at its end.
            expected: submission.expected.map(Expected::from),
            counts: BuildCounts::default(),
            running: Vec::new(),
            durations: (0, 0),
            jobs: 1,
            result: None,
            error: None,
            failed: Vec::new(),
            unfinished: Vec::new(),
            cancel_requested: false,
            cancel: Cancel::new(),
            work: None,
            dry_plan: None,
        }
    }

    /// The end of a restored operation's build, from its `BuildFinished`
    /// (seq `seq`, at `time_ms`).
    pub fn ended_in_log(&mut self, counts: BuildCounts, interrupted: bool, seq: u64, time_ms: u64) {
        self.counts = counts;
        self.finished_ms = Some(time_ms);
        self.end_seq = Some(seq);
        let actions =
            counts.executed + counts.cached + counts.failed + counts.skipped + counts.joined;
        // Before store format 12 (nothing recorded of what it announced):
        // the actions it ran through.
        self.expected.get_or_insert_with(|| Expected {
            actions,
            ..Expected::default()
        });
        self.result = Some(json!({
            "build": self.build,
            "cached": counts.cached,
            "executed": counts.executed,
            "failed": counts.failed,
            "interrupted": interrupted,
            "joined": counts.joined,
            "skipped": counts.skipped,
            "total": actions,
            "type": "summary",
        }));
        self.state = if interrupted {
            State::Cancelled
        } else if counts.failed > 0 {
            State::Failed
        } else {
            State::Succeeded
        };
        self.error = match self.state {
            State::Cancelled => Some(json!({
                "code": cairn_app::error::EXIT_INTERRUPTED,
                "status": "CANCELLED",
                "message": "interrupted",
                "failed": self.failed,
            })),
            State::Failed => Some(json!({
                "code": cairn_app::error::EXIT_FAILED,
                "status": "FAILED",
                "message": format!("{} failed", plural(self.failed.len())),
                "failed": self.failed,
            })),
            _ => None,
        };
    }

    /// Seconds until the actions still to run are done: their number times
    /// the mean duration of those that ran, over the jobs at once. `None`
    /// before any ran, or once done.
    fn eta_seconds(&self) -> Option<f64> {
        if self.state.done() || self.durations.1 == 0 {
            return None;
        }
        let mean = self.durations.0 as f64 / self.durations.1 as f64 / 1000.0;
        let done = self.counts.executed + self.counts.failed;
        let left = self
            .expected
            .map_or(0, |expected| expected.to_run)
            .saturating_sub(done)
            .max(self.running.len() as u64);
        let parallel = self.jobs.clamp(1, usize::MAX) as f64;
        Some((left as f64 * mean / parallel * 1000.0).round() / 1000.0)
    }

    /// The Operation resource (docs/api.md).
    pub fn json(&self) -> Value {
        let running: Vec<Value> = self
            .running
            .iter()
            .map(|action| {
                json!({
                    "job": action.job,
                    "key": action.key,
                    "outputs": action.outputs,
                    "since": rfc3339(action.since_ms),
                })
            })
            .collect();
        json!({
            "id": self.id,
            "name": format!("operations/{}", self.id),
            "kind": self.kind,
            "state": self.state,
            "done": self.state.done(),
            "submitted_at": rfc3339(self.submitted_ms),
            "started_at": self.started_ms.map(rfc3339),
            "finished_at": self.finished_ms.map(rfc3339),
            "request": self.request,
            "reason": self.reason,
            "submitted_by": self.submitted_by,
            "build": self.build,
            "expected": self.expected,
            "counts": {
                "executed": self.counts.executed,
                "cached": self.counts.cached,
                "joined": self.counts.joined,
                "failed": self.counts.failed,
                "skipped": self.counts.skipped,
            },
            "running": running,
            "eta_seconds": self.eta_seconds(),
            "result": self.result,
            "error": self.error,
        })
    }

    /// The plan its submit's dry run made, for its build to take, if
    /// `generation` (the [`crate::expect::Expecting`] generation now) is
    /// the one the dry run was asked at: no operation ended and nothing
    /// was invalidated since (server/src/expect.rs). Taken either way:
    /// an operation keeps no plan once it started.
    pub fn take_dry_plan(&mut self, generation: u64) -> Option<Arc<Plan>> {
        self.dry_plan
            .take()
            .filter(|(_, asked_at)| *asked_at == generation)
            .map(|(plan, _)| plan)
    }

    /// Ends a queued operation as cancelled: it never started.
    pub fn cancel_queued(&mut self) {
        self.state = State::Cancelled;
        self.finished_ms = Some(now_ms());
        self.error = Some(json!({
            "code": cairn_app::error::EXIT_INTERRUPTED,
            "status": "CANCELLED",
            "message": "cancelled before it started",
            "failed": [],
        }));
        self.work = None;
        self.dry_plan = None;
    }
}

/// `1 partition`, `N partitions`.
pub fn plural(count: usize) -> String {
    if count == 1 {
        "1 partition".to_owned()
    } else {
        format!("{count} partitions")
    }
}

/// Every operation of this server's life (and those of earlier servers,
/// rebuilt from the log), oldest first, and the idempotency keys.
#[derive(Debug, Default)]
pub struct Registry {
    ops: Vec<Operation>,
    index: HashMap<String, usize>,
    keys: HashMap<String, usize>,
    /// How many operations it keeps (`--keep-operations`; `None`: all):
    /// [`Registry::insert`] forgets the oldest finished ones beyond it.
    bound: Option<usize>,
}

/// What a submit with an idempotency key found.
pub enum Existing {
    /// The same key and body: this operation.
    Same(Value),
    /// The same key, another body.
    Conflict(String),
    None,
}

impl Registry {
    pub fn get(&self, id: &str) -> Option<&Operation> {
        self.index.get(id).map(|&at| &self.ops[at])
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Operation> {
        self.index.get(id).map(|&at| &mut self.ops[at])
    }

    /// The operation `key` names, if any, compared with `digest`.
    pub fn existing(&self, key: Option<&str>, digest: &[u8; 32]) -> Existing {
        let Some(key) = key else {
            return Existing::None;
        };
        match self.keys.get(key) {
            Some(&at) if &self.ops[at].digest == digest => Existing::Same(self.ops[at].json()),
            Some(&at) => Existing::Conflict(self.ops[at].id.clone()),
            None => Existing::None,
        }
    }

    /// Adds `op`, unless its key was taken meanwhile (then what the key
    /// names is returned instead).
    pub fn insert(&mut self, op: Operation) -> Result<Value, Existing> {
        match self.existing(op.idempotency_key.as_deref(), &op.digest) {
            Existing::None => {}
            found => return Err(found),
        }
        let at = self.ops.len();
        if let Some(key) = &op.idempotency_key {
            self.keys.insert(key.clone(), at);
        }
        self.index.insert(op.id.clone(), at);
        let json = op.json();
        self.ops.push(op);
        self.evict();
        Ok(json)
    }

    /// Keeps at most `bound` operations from now on (`--keep-operations`,
    /// what a starting server rebuilds from the log).
    pub fn set_bound(&mut self, bound: usize) {
        self.bound = Some(bound);
    }

    /// Forgets the oldest finished operations beyond the bound, and their
    /// idempotency keys, as a restarted server never rebuilds them: a GET
    /// of one is `404` (its build stays in the log). An operation queued
    /// or running is never forgotten, so a busy server may keep more for
    /// a while.
    fn evict(&mut self) {
        let Some(bound) = self.bound else {
            return;
        };
        let mut over = self.ops.len().saturating_sub(bound);
        if over == 0 || !self.ops.iter().any(|op| op.state.done()) {
            return;
        }
        self.ops.retain(|op| {
            if over > 0 && op.state.done() {
                over -= 1;
                false
            } else {
                true
            }
        });
        self.index.clear();
        self.keys.clear();
        for (at, op) in self.ops.iter().enumerate() {
            self.index.insert(op.id.clone(), at);
            if let Some(key) = &op.idempotency_key {
                self.keys.insert(key.clone(), at);
            }
        }
    }

    /// Adds an operation rebuilt from the log (its key, if any, included).
    pub fn restore(&mut self, op: Operation) {
        let at = self.ops.len();
        if let Some(key) = &op.idempotency_key {
            self.keys.insert(key.clone(), at);
        }
        self.index.insert(op.id.clone(), at);
        self.ops.push(op);
    }

    /// Restored operations whose build never finished (the server was
    /// killed): they end as cancelled.
    pub fn close_restored(&mut self) {
        for op in &mut self.ops {
            if op.state == State::Running && op.work.is_none() {
                op.expected.get_or_insert_with(Expected::default);
                op.state = State::Cancelled;
                op.error = Some(json!({
                    "code": cairn_app::error::EXIT_INTERRUPTED,
                    "status": "CANCELLED",
                    "message": "the server stopped before this build finished (its build has no BuildFinished)",
                    "failed": op.failed,
                }));
            }
        }
    }

    /// Operations, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &Operation> {
        self.ops.iter().rev()
    }

    pub fn count(&self, state: State) -> usize {
        self.ops.iter().filter(|op| op.state == state).count()
    }

    pub fn actions_running(&self) -> usize {
        self.ops.iter().map(|op| op.running.len()).sum()
    }

    /// Ids of the operations not done.
    pub fn unfinished(&self) -> Vec<String> {
        self.ops
            .iter()
            .filter(|op| !op.state.done())
            .map(|op| op.id.clone())
            .collect()
    }

    /// Gives operation `operation` (from the `BuildRequested` of build
    /// `build`) its build id.
    pub fn recognize(&mut self, build: u64, operation: &str) {
        if let Some(op) = self.get_mut(operation)
            && op.build.is_none()
        {
            op.build = Some(build);
        }
    }
}

/// The digest an idempotency key is compared by: blake3 of the kind and
/// the normalized body.
pub fn digest(kind: Kind, request: &Value) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(kind.word().as_bytes());
    hasher.update(b"\n");
    hasher.update(request.to_string().as_bytes());
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Arc<Plan> {
        Arc::new(Plan {
            actions: Vec::new(),
            sources: Vec::new(),
            requested: Vec::new(),
            order: Vec::new(),
            configure_calls: 0,
        })
    }

    fn op() -> Operation {
        Operation::new(
            Kind::Build,
            json!({}),
            [0; 32],
            None,
            Work::Build(BuildRequest::default()),
            1,
        )
    }

    #[test]
    fn a_new_operation_evicts_the_oldest_finished_ones_beyond_the_bound_never_a_running_one() {
        let mut registry = Registry::default();
        registry.set_bound(2);
        let mut ids = Vec::new();
        for (at, state) in [
            State::Running,
            State::Succeeded,
            State::Failed,
            State::Queued,
        ]
        .into_iter()
        .enumerate()
        {
            let mut op = op();
            op.idempotency_key = Some(format!("key-{at}"));
            op.state = state;
            ids.push(op.id.clone());
            assert!(registry.insert(op).is_ok());
        }
        // 4 over a bound of 2: the two finished ones went, oldest first;
        // the running and the queued one stay.
        let kept: Vec<&str> = registry.newest_first().map(|op| op.id.as_str()).collect();
        assert_eq!(kept, [ids[3].as_str(), ids[0].as_str()]);
        assert!(registry.get(&ids[1]).is_none());
        assert!(matches!(
            registry.existing(Some("key-1"), &[0; 32]),
            Existing::None
        ));
        assert!(matches!(
            registry.existing(Some("key-3"), &[0; 32]),
            Existing::Same(_)
        ));
        // Once they finish, the next insert brings it back to the bound.
        for id in [&ids[0], &ids[3]] {
            registry.get_mut(id).unwrap().state = State::Succeeded;
        }
        let newest = op();
        let newest_id = newest.id.clone();
        assert!(registry.insert(newest).is_ok());
        let kept: Vec<&str> = registry.newest_first().map(|op| op.id.as_str()).collect();
        assert_eq!(kept, [newest_id.as_str(), ids[3].as_str()]);
        assert_eq!(registry.get(&ids[3]).unwrap().id, ids[3]);
    }

    #[test]
    fn the_dry_run_plan_is_taken_only_at_the_generation_it_was_made_at() {
        let expecting = crate::expect::Expecting::default();
        let mut same = op();
        same.dry_plan = Some((plan(), expecting.generation()));
        assert!(same.take_dry_plan(expecting.generation()).is_some());
        assert!(same.dry_plan.is_none(), "taken: the operation keeps none");
        // Partitions invalidated (or an operation ended) between the
        // submit and the start: the build plans afresh.
        let mut after = op();
        after.dry_plan = Some((plan(), expecting.generation()));
        expecting.changed();
        assert!(after.take_dry_plan(expecting.generation()).is_none());
        assert!(after.dry_plan.is_none());
    }
}
