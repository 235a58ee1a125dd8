//! `cairn --remote URL build|backfill`: submit an operation, follow its
//! event stream with the local build's progress display, print the local
//! build's summary and exit with its code (docs/cli.md, "`--remote`").

use std::collections::HashMap;
use std::io::{BufReader, IsTerminal};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use cairn_app::build::BuildObserver;
use cairn_app::dto::Refs;
use cairn_app::dto::backfill::BackfillSummary;
use cairn_app::dto::build::{BuildSummary, DrySummary};
use cairn_engine::action::Outcome;
use cairn_engine::digest::ActionKey;
use cairn_engine::exec::Progress;
use cairn_engine::record::BuildCounts;
use cairn_engine::refs::PartitionRef;
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{Remote, encode};
use super::sse::Events;
use crate::report::{BuildReporter, count, json_line, note};
use crate::{BackfillArgs, BuildArgs, Failure};

/// Exit codes of a build (cli/src/lib.rs).
const EXIT_FAILED: u8 = 1;
const EXIT_INTERRUPTED: u8 = 130;

/// The Operation resource (docs/api.md), the fields the client reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Operation {
    pub id: String,
    pub state: String,
    #[serde(default)]
    pub done: bool,
    #[serde(default)]
    pub build: Option<u64>,
    #[serde(default)]
    pub expected: Option<Expected>,
    #[serde(default)]
    pub counts: Option<Counts>,
    /// When done: the `build --json` summary.
    #[serde(default)]
    pub result: Option<ResultSummary>,
    #[serde(default)]
    pub error: Option<OperationError>,
}

/// What the operation announced at submit.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Expected {
    #[serde(default)]
    pub partitions: u64,
    #[serde(default)]
    pub actions: u64,
    #[serde(default)]
    pub current: u64,
    #[serde(default)]
    pub to_run: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Counts {
    #[serde(default)]
    pub executed: u64,
    #[serde(default)]
    pub cached: u64,
    #[serde(default)]
    pub joined: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub skipped: u64,
}

/// The summary a finished operation carries (`cairn build --json`'s last
/// line, or `cairn backfill --json`'s).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResultSummary {
    #[serde(default)]
    pub build: Option<u64>,
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub executed: u64,
    #[serde(default)]
    pub cached: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub skipped: u64,
    /// Present when not zero.
    #[serde(default)]
    pub joined: u64,
    #[serde(default)]
    pub interrupted: bool,
    #[serde(default)]
    pub failed_partitions: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct OperationError {
    #[serde(default)]
    pub code: Option<u16>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub failed: Vec<FailedPartition>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct FailedPartition {
    pub partition: String,
    #[serde(default)]
    pub error: Option<String>,
}

/// `cairn --remote URL build [REF...]`.
pub fn build(remote: &Remote, args: &BuildArgs) -> Result<u8, Failure> {
    let started = Instant::now();
    refuse_local_only(args.no_wait, "build")?;
    refuse_remote_cache(args.remote_cache.given(), "build")?;
    let body = json!({
        "refs": args.refs,
        "keep_going": args.keep_going,
        "retries": args.retries,
        "jobs": args.jobs,
        "dry_run": args.dry_run,
    });
    if args.dry_run {
        let (_, answer): (u16, DryAnswer) = remote.post_json("/v1/builds", &body, &[])?;
        return Ok(dry_run(&answer, args.json));
    }
    let key = idempotency_key(args.idempotency_key.as_deref());
    let (_, operation): (u16, Operation) =
        remote.post_json("/v1/builds", &body, &[("Idempotency-Key", &key)])?;
    submitted(
        remote,
        &operation,
        args.detach,
        args.json,
        &Kind::Build,
        started,
    )
}

/// `cairn --remote URL backfill CONFIG`: the config file is read here and
/// sent in the body (the server validates it as the local command does).
pub fn backfill(remote: &Remote, args: &BackfillArgs) -> Result<u8, Failure> {
    let started = Instant::now();
    refuse_local_only(args.no_wait, "backfill")?;
    refuse_remote_cache(args.remote_cache.given(), "backfill")?;
    let text = std::fs::read_to_string(&args.config).map_err(|error| {
        Failure::usage(format!(
            "backfill config {}: cannot read it: {error}",
            args.config.display()
        ))
    })?;
    let body = json!({
        "config": text,
        // The server takes a file name (no directory) for its messages.
        "config_name": args
            .config
            .file_name()
            .map_or_else(|| "backfill.toml".into(), |name| name.to_string_lossy()),
        "keep_going": !args.fail_fast,
        "retries": args.retries,
        "jobs": args.jobs,
        "dry_run": args.dry_run,
    });
    let mut body = body;
    if args.retry_failed {
        // The server picks the partitions to retry from its store as the
        // local `--retry-failed` does (docs/api.md, "Backfills").
        body["retry_failed"] = Value::Bool(true);
    }
    if args.dry_run {
        let (_, answer): (u16, Value) = remote.post_json("/v1/backfills", &body, &[])?;
        if let Some(code) = nothing_to_retry(&answer, args.json) {
            return Ok(code);
        }
        return Ok(backfill_dry_run(&answer, args.json));
    }
    let key = idempotency_key(args.idempotency_key.as_deref());
    let (_, answer): (u16, Value) =
        remote.post_json("/v1/backfills", &body, &[("Idempotency-Key", &key)])?;
    if let Some(code) = nothing_to_retry(&answer, args.json) {
        return Ok(code);
    }
    let operation: Operation = serde_json::from_value(answer).map_err(|error| {
        Failure::store(format!(
            "{}/v1/backfills: the operation is not what this cairn understands ({error})",
            remote.base()
        ))
    })?;
    if args.retry_failed {
        note(&format!(
            "retrying {} whose last attempt failed (or whose inputs' did)",
            count(
                operation
                    .expected
                    .as_ref()
                    .map_or(0, |expected| expected.partitions),
                "partition"
            )
        ));
    }
    submitted(
        remote,
        &operation,
        args.detach,
        args.json,
        &Kind::Backfill {
            retry: format!(
                "cairn --remote {} backfill {} --retry-failed",
                remote.base(),
                args.config.display()
            ),
        },
        started,
    )
}

/// A `retry_failed` backfill's answer when the server found nothing to
/// retry: says so as the local `backfill --retry-failed` does
/// (cli/src/backfill.rs) and returns its exit code, 0.
fn nothing_to_retry(answer: &Value, json: bool) -> Option<u8> {
    if answer.get("nothing_to_retry") != Some(&Value::Bool(true)) {
        return None;
    }
    Some(crate::backfill::nothing_to_retry(json))
}

fn refuse_local_only(no_wait: bool, command: &str) -> Result<(), Failure> {
    if no_wait {
        return Err(Failure::usage(format!(
            "{command} --no-wait does not work with --remote: the server holds the store"
        )));
    }
    Ok(())
}

fn refuse_remote_cache(given: bool, command: &str) -> Result<(), Failure> {
    if given {
        return Err(Failure::usage(format!(
            "{command} --remote-cache, --remote-cache-mode and --no-upload-wait do not work with --remote: the server's graph file says which remote cache it uses"
        )));
    }
    Ok(())
}

/// The `Idempotency-Key` of this invocation: the one given, else a fresh
/// random one (so that a retried request of this invocation is never run
/// twice, and two invocations are two operations).
fn idempotency_key(given: Option<&str>) -> String {
    if let Some(key) = given {
        return key.to_owned();
    }
    let mut bytes = [0u8; 16];
    let from_system = std::fs::File::open("/dev/urandom")
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut bytes));
    if from_system.is_err() {
        // No /dev/urandom: the standard library's random hash keys, the
        // time and the process id.
        use std::hash::{BuildHasher, Hasher};
        for half in bytes.chunks_mut(8) {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |time| time.as_nanos()),
            );
            hasher.write_u32(std::process::id());
            half.copy_from_slice(&hasher.finish().to_le_bytes());
        }
    }
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("cairn-cli-{hex}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Build,
    /// `retry`: the command that retries its failed partitions.
    Backfill {
        retry: String,
    },
}

/// After the submit: `--detach` prints the id; otherwise follow.
fn submitted(
    remote: &Remote,
    operation: &Operation,
    detach: bool,
    json: bool,
    kind: &Kind,
    started: Instant,
) -> Result<u8, Failure> {
    if detach {
        crate::remote::read::stdout_line(&operation.id);
        note(&format!(
            "submitted operation {}: follow it with GET {}/v1/operations/{}",
            operation.id,
            remote.base(),
            encode(&operation.id)
        ));
        return Ok(0);
    }
    let total = operation
        .expected
        .as_ref()
        .map_or(0, |expected| expected.actions);
    announce(operation);
    let reporter = BuildReporter::new(json);
    let followed = if operation.done {
        reporter.actions_done();
        Followed::Done(Box::new(operation.clone()))
    } else {
        follow(remote, operation, total, &reporter)?
    };
    match followed {
        Followed::Done(finished) => {
            let total = finished
                .expected
                .as_ref()
                .map_or(total, |expected| expected.actions);
            Ok(summary(&finished, total, json, kind, started.elapsed()))
        }
        Followed::Detached => Ok(0),
        Followed::StoppedWaiting => Ok(EXIT_INTERRUPTED),
    }
}

/// What the follower thread hands the main thread.
enum Message {
    Event(Value),
    Done(Box<Operation>),
    Lost(Failure),
}

/// Says what `operation` will do (`expected`, announced at submit).
fn announce(operation: &Operation) {
    let Some(expected) = &operation.expected else {
        return;
    };
    note(&format!(
        "operation {}: {}: {}: {} current or restorable, {} to run",
        operation.id,
        count(expected.partitions, "partition"),
        count(expected.actions, "action"),
        expected.current,
        expected.to_run
    ));
}

/// How long the follower keeps trying to reconnect a dropped stream.
const RECONNECT_FOR: Duration = Duration::from_secs(30);

/// Reads operation `id`'s event stream in a thread of its own,
/// reconnecting with `Last-Event-ID` when it drops (nothing is missed);
/// the main thread stays free to answer Ctrl-C.
fn spawn_follower(remote: Remote, id: &str, sender: mpsc::Sender<Message>) {
    let path = format!("/v1/operations/{}/events", encode(id));
    std::thread::spawn(move || {
        let mut last_id: Option<String> = None;
        let mut lost_since: Option<Instant> = None;
        let mut pause = Duration::from_millis(200);
        loop {
            match remote.open_stream(&path, last_id.as_deref()) {
                Ok(reader) => {
                    let mut events = Events::new(BufReader::new(reader));
                    while let Ok(Some(message)) = events.next_event() {
                        lost_since = None;
                        pause = Duration::from_millis(200);
                        if message.id.is_some() {
                            last_id.clone_from(&message.id);
                        }
                        match message.event.as_str() {
                            "done" => {
                                let sent = match serde_json::from_str::<Operation>(&message.data) {
                                    Ok(operation) => Message::Done(Box::new(operation)),
                                    Err(error) => Message::Lost(Failure::store(format!(
                                        "{}{path}: the final operation is not what this cairn understands ({error})",
                                        remote.base()
                                    ))),
                                };
                                let _ = sender.send(sent);
                                return;
                            }
                            "cairn" => {
                                if let Ok(value) = serde_json::from_str::<Value>(&message.data)
                                    && sender.send(Message::Event(value)).is_err()
                                {
                                    return;
                                }
                            }
                            _ => {}
                        }
                    }
                }
                // A 4xx (unknown operation, refused token) does not get
                // better by asking again.
                Err(failure) if failure.code == 2 => {
                    let _ = sender.send(Message::Lost(failure));
                    return;
                }
                Err(failure) => {
                    let since = *lost_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > RECONNECT_FOR {
                        let _ = sender.send(Message::Lost(Failure::store(format!(
                            "{} (for {}s; the operation may still be running: GET {}/v1/operations/{})",
                            failure.message,
                            RECONNECT_FOR.as_secs(),
                            remote.base(),
                            path.trim_start_matches("/v1/operations/").trim_end_matches("/events"),
                        ))));
                        return;
                    }
                }
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    });
}

/// How following an operation ended.
enum Followed {
    Done(Box<Operation>),
    /// The user chose to detach at Ctrl-C.
    Detached,
    /// Ctrl-C again while the cancel was under way.
    StoppedWaiting,
}

/// Follows `operation` until it is done, showing progress.
fn follow(
    remote: &Remote,
    operation: &Operation,
    total: u64,
    reporter: &BuildReporter,
) -> Result<Followed, Failure> {
    let interrupt = Arc::new(AtomicBool::new(false));
    let terminate = Arc::new(AtomicBool::new(false));
    let signals = [
        signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupt)),
        signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&terminate)),
    ];
    let result = follow_until_done(remote, operation, total, reporter, &interrupt, &terminate);
    for id in signals.into_iter().flatten() {
        signal_hook::low_level::unregister(id);
    }
    result
}

fn follow_until_done(
    remote: &Remote,
    operation: &Operation,
    total: u64,
    reporter: &BuildReporter,
    interrupt: &AtomicBool,
    terminate: &AtomicBool,
) -> Result<Followed, Failure> {
    let (sender, receiver) = mpsc::channel();
    spawn_follower(remote.clone(), &operation.id, sender);
    let current = operation
        .expected
        .as_ref()
        .map_or(0, |expected| expected.current);
    let mut tracker = Tracker::new(remote, total, current, reporter);
    let mut cancelling = false;
    loop {
        match receiver.recv_timeout(Duration::from_millis(100)) {
            Ok(Message::Event(event)) => tracker.event(&event),
            Ok(Message::Done(done)) => {
                reporter.actions_done();
                return Ok(Followed::Done(done));
            }
            Ok(Message::Lost(failure)) => {
                reporter.actions_done();
                return Err(failure);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                reporter.actions_done();
                return Err(Failure::store(format!(
                    "{}: the event stream of operation {} ended without its result",
                    remote.base(),
                    operation.id
                )));
            }
        }
        let interrupted = interrupt.swap(false, Ordering::SeqCst);
        let terminated = terminate.swap(false, Ordering::SeqCst);
        if !interrupted && !terminated {
            continue;
        }
        if cancelling {
            reporter.actions_done();
            note(&format!(
                "stopped waiting: the server goes on cancelling operation {}",
                operation.id
            ));
            return Ok(Followed::StoppedWaiting);
        }
        let choice = if terminated {
            Choice::Cancel
        } else {
            ask(reporter)
        };
        match choice {
            Choice::Detach => {
                reporter.actions_done();
                crate::remote::read::stdout_line(&operation.id);
                note(&format!(
                    "detached: operation {} goes on on the server (GET {}/v1/operations/{})",
                    operation.id,
                    remote.base(),
                    encode(&operation.id)
                ));
                return Ok(Followed::Detached);
            }
            Choice::Cancel => {
                let path = format!("/v1/operations/{}/cancel", encode(&operation.id));
                let _: (u16, Operation) = remote.post_json(&path, &json!({}), &[])?;
                cancelling = true;
                reporter.suspended(|| {
                    note(&format!(
                        "cancelling operation {} (Ctrl-C again to stop waiting)",
                        operation.id
                    ));
                });
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Cancel,
    Detach,
}

/// On a terminal: "cancel the operation or detach? [c/d]"; elsewhere (or
/// at the end of the input) cancel.
fn ask(reporter: &BuildReporter) -> Choice {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Choice::Cancel;
    }
    reporter.suspended(|| {
        loop {
            {
                use std::io::Write;
                let mut stderr = std::io::stderr().lock();
                let _ = write!(stderr, "cancel the operation or detach? [c/d] ");
                let _ = stderr.flush();
            }
            let mut line = String::new();
            match stdin.read_line(&mut line) {
                Ok(0) | Err(_) => return Choice::Cancel,
                Ok(_) => {}
            }
            match line.trim().to_ascii_lowercase().as_str() {
                "c" | "cancel" => return Choice::Cancel,
                "d" | "detach" => return Choice::Detach,
                _ => {}
            }
        }
    })
}

/// Turns the stream's events into the reporter's calls, as the local
/// engine would make them.
struct Tracker<'a> {
    remote: &'a Remote,
    reporter: &'a BuildReporter,
    total: usize,
    done: usize,
    counts: BuildCounts,
    /// Running actions by key, with the number the reporter knows them by.
    ids: HashMap<String, usize>,
    next_id: usize,
    /// Failures whose stderr tail was fetched (bounded: a failing backfill
    /// of thousands must not fetch thousands of logs).
    tails_fetched: usize,
}

/// At most this many failures of one build get their stderr tail shown.
const TAILS_FETCHED: usize = 20;

impl<'a> Tracker<'a> {
    /// `current` of the `total` actions were up to date or restorable at
    /// submit: an untouched one is not in the log (the build's counts
    /// have it), so they count as done from the start, and a restore's
    /// `ActionCached` adds nothing.
    fn new(remote: &'a Remote, total: u64, current: u64, reporter: &'a BuildReporter) -> Self {
        let current = usize::try_from(current).unwrap_or(usize::MAX);
        Tracker {
            remote,
            reporter,
            total: usize::try_from(total).unwrap_or(usize::MAX),
            done: current,
            counts: BuildCounts {
                cached: current as u64,
                ..BuildCounts::default()
            },
            ids: HashMap::new(),
            next_id: 0,
            tails_fetched: 0,
        }
    }

    fn progress(&self) -> Progress {
        Progress {
            total: self.total.max(self.done),
            done: self.done,
            running: self.ids.len(),
            counts: self.counts,
        }
    }

    fn id(&mut self, key: &str) -> usize {
        if let Some(id) = self.ids.get(key) {
            return *id;
        }
        self.next_id += 1;
        self.ids.insert(key.to_owned(), self.next_id);
        self.next_id
    }

    fn event(&mut self, event: &Value) {
        let text = |name: &str| event.get(name).and_then(Value::as_str).unwrap_or_default();
        let outputs = |value: Option<&Value>| -> Vec<String> {
            value
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|item| {
                            item.as_str()
                                .or_else(|| item.get("partition").and_then(Value::as_str))
                                .map(str::to_owned)
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        match text("kind") {
            "ActionStarted" => {
                let key = text("key").to_owned();
                let id = self.id(&key);
                let outputs = outputs(event.get("outputs")).join(", ");
                self.reporter
                    .action_started(id, text("job"), &outputs, self.progress());
            }
            "ActionCheckpointed" => {
                let key = text("key").to_owned();
                if let (Some(id), Some(sequence)) = (
                    self.ids.get(&key).copied(),
                    event.get("sequence").and_then(Value::as_u64),
                ) {
                    self.reporter.action_checkpointed(id, sequence);
                }
            }
            "ActionSucceeded" => {
                let Some(manifest) = event.get("manifest") else {
                    return;
                };
                let number = |name: &str| manifest.get(name).and_then(Value::as_u64).unwrap_or(0);
                let outcome = Outcome::Executed {
                    duration_ms: number("finished_ms").saturating_sub(number("started_ms")),
                };
                let key = manifest
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let job = manifest
                    .get("job")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.counts.executed += 1;
                self.finish(key, job, &outputs(manifest.get("outputs")), &outcome);
            }
            "ActionCached" => {
                let outcome = Outcome::Cached {
                    restored: event.get("restored").and_then(Value::as_bool) == Some(true),
                };
                // Counted as current at submit (see `new`).
                self.finish_counted(
                    text("key"),
                    text("job"),
                    &outputs(event.get("outputs")),
                    &outcome,
                );
            }
            "ActionFailed" => {
                let error = text("error");
                // A failed attempt that will be retried (docs/cli.md): the
                // action goes on.
                if error.ends_with("; retrying)") {
                    return;
                }
                let outputs = outputs(event.get("outputs"));
                let stderr_tail = match (outputs.first(), event.get("stderr")) {
                    (Some(first), Some(Value::String(_))) if self.tails_fetched < TAILS_FETCHED => {
                        self.tails_fetched += 1;
                        self.stderr_tail(first)
                    }
                    _ => Vec::new(),
                };
                let outcome = Outcome::Failed {
                    error: error.to_owned(),
                    stderr_tail,
                };
                self.counts.failed += 1;
                self.finish(text("key"), text("job"), &outputs, &outcome);
            }
            "ActionJoined" => {
                let outcome = Outcome::Joined {
                    build: event
                        .get("joined_build")
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                };
                self.counts.joined += 1;
                self.finish(
                    text("key"),
                    text("job"),
                    &outputs(event.get("outputs")),
                    &outcome,
                );
            }
            "ActionSkipped" => {
                let outcome = Outcome::Skipped {
                    reason: text("reason").to_owned(),
                };
                self.counts.skipped += 1;
                self.finish("", text("job"), &outputs(event.get("outputs")), &outcome);
            }
            _ => {}
        }
    }

    fn finish(&mut self, key: &str, job: &str, outputs: &[String], outcome: &Outcome) {
        self.done += 1;
        self.finish_counted(key, job, outputs, outcome);
    }

    /// An action finished that `done` already counts.
    fn finish_counted(&mut self, key: &str, job: &str, outputs: &[String], outcome: &Outcome) {
        let id = if key.is_empty() {
            self.next_id += 1;
            self.next_id
        } else {
            self.ids.remove(key).unwrap_or_else(|| {
                self.next_id += 1;
                self.next_id
            })
        };
        let parsed = ActionKey::from_str(key).ok();
        self.reporter.action_finished(
            id,
            job,
            Refs::from(outputs),
            outcome,
            parsed.as_ref(),
            self.progress(),
        );
    }

    /// The last lines of the failed run's stderr, as a local build shows
    /// them (`cairn_engine` keeps the last 10 non-blank lines of the last
    /// 16 KiB).
    fn stderr_tail(&self, partition: &str) -> Vec<String> {
        let path = format!("/v1/partitions/{}/logs", encode(partition));
        match self.remote.get_bytes(&path, &[("stream", "stderr")]) {
            Ok(bytes) => cairn_app::logs::tail_of(&bytes),
            Err(_) => Vec::new(),
        }
    }
}

/// Prints the finished operation's summary (as the local command does)
/// and returns the exit code.
fn summary(operation: &Operation, total: u64, json: bool, kind: &Kind, elapsed: Duration) -> u8 {
    let from_counts = operation.counts.clone().unwrap_or_default();
    let result = operation.result.clone().unwrap_or_else(|| ResultSummary {
        build: operation.build,
        total,
        executed: from_counts.executed,
        cached: from_counts.cached,
        failed: from_counts.failed,
        skipped: from_counts.skipped,
        joined: from_counts.joined,
        interrupted: operation.state == "cancelled",
        failed_partitions: Vec::new(),
    });
    let counts = BuildCounts {
        executed: result.executed,
        cached: result.cached,
        failed: result.failed,
        skipped: result.skipped,
        joined: result.joined,
    };
    let interrupted = result.interrupted || operation.state == "cancelled";
    let build = result.build.or(operation.build).unwrap_or(0);
    let failed_partitions: Vec<PartitionRef> = result
        .failed_partitions
        .iter()
        .filter_map(|partition| PartitionRef::parse(partition).ok())
        .collect();
    if json {
        match kind {
            Kind::Build => {
                json_line(&BuildSummary::new(
                    build,
                    result.total,
                    counts,
                    interrupted,
                    elapsed,
                ));
            }
            Kind::Backfill { .. } => json_line(&BackfillSummary::new(
                result.build.or(operation.build),
                result.total,
                counts,
                interrupted,
                Some(elapsed),
                failed_partitions.iter().collect(),
            )),
        }
    }
    let error = operation.error.clone().unwrap_or_default();
    // Refused after it was accepted (the graph changed, the store broke):
    // the server's message, and the exit code a local command would have.
    if operation.state == "failed" && counts.failed == 0 && !interrupted {
        if !error.message.is_empty() {
            crate::report::error_line(&error.message);
        }
        return match error.code {
            Some(400) => 2,
            _ => 3,
        };
    }
    let line = crate::report::summary_text(build, result.total, &counts, interrupted, elapsed);
    match kind {
        Kind::Build => note(&line),
        Kind::Backfill { retry } => {
            note(&format!("backfill {line}"));
            let failed: Vec<(String, String)> = if error.failed.is_empty() {
                result
                    .failed_partitions
                    .iter()
                    .map(|partition| (partition.clone(), String::new()))
                    .collect()
            } else {
                error
                    .failed
                    .iter()
                    .map(|failed| {
                        (
                            failed.partition.clone(),
                            failed.error.clone().unwrap_or_default(),
                        )
                    })
                    .collect()
            };
            if !failed.is_empty() {
                note(&format!("failed partitions ({}):", failed.len()));
                for (partition, error) in &failed {
                    if error.is_empty() {
                        note(&format!("  {partition}"));
                    } else {
                        note(&format!("  {partition}: {}", crate::escape::escape(error)));
                    }
                }
                note(&format!(
                    "fix the cause, then `{retry}` reruns just those (and what depends on them)"
                ));
            }
        }
    }
    if interrupted {
        EXIT_INTERRUPTED
    } else if counts.failed > 0 || operation.state == "failed" {
        EXIT_FAILED
    } else {
        0
    }
}

/// The answer to a dry run (`"dry_run": true`).
#[derive(Debug, Deserialize)]
struct DryAnswer {
    #[serde(default)]
    actions: Vec<Value>,
}

/// Prints a backfill's dry run answer (`partitions`, each the line
/// `backfill --dry-run --json` prints, and its `summary` line) as the
/// local `cairn backfill --dry-run` does (cli/src/backfill.rs).
fn backfill_dry_run(answer: &Value, json: bool) -> u8 {
    let partitions = answer
        .get("partitions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut out = String::new();
    for partition in partitions {
        if json {
            out.push_str(&serde_json::to_string(partition).unwrap_or_default());
            out.push('\n');
        } else {
            let text = |name: &str| {
                partition
                    .get(name)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            };
            out.push_str(&format!(
                "{:<10} {}  ({})\n",
                text("verdict"),
                text("ref"),
                crate::escape::escape(text("reason"))
            ));
        }
    }
    let summary = answer.get("summary").cloned().unwrap_or(Value::Null);
    if json {
        out.push_str(&serde_json::to_string(&summary).unwrap_or_default());
        out.push('\n');
    }
    crate::remote::read::stdout_text(&out);
    let number = |name: &str| summary.get(name).and_then(Value::as_u64).unwrap_or(0);
    note(&format!(
        "dry run: {}: {} built, {} to build; {}: {} would run, {} up to date or restorable, {} blocked",
        count(partitions.len() as u64, "partition"),
        number("built"),
        number("to_build"),
        count(number("total"), "action"),
        number("executed"),
        number("cached"),
        number("skipped")
    ));
    0
}

/// Prints a dry run's answer as `cairn build --dry-run` does.
fn dry_run(answer: &DryAnswer, json: bool) -> u8 {
    let mut counts = BuildCounts::default();
    let mut out = String::new();
    for action in &answer.actions {
        let text = |name: &str| action.get(name).and_then(Value::as_str).unwrap_or_default();
        let verdict = text("verdict");
        match verdict {
            "run" => counts.executed += 1,
            "blocked" => counts.skipped += 1,
            _ => counts.cached += 1,
        }
        if json {
            out.push_str(&serde_json::to_string(action).unwrap_or_default());
            out.push('\n');
        } else if verdict != "up-to-date" {
            let outputs: Vec<&str> = action
                .get("outputs")
                .and_then(Value::as_array)
                .map(|items| items.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            out.push_str(&format!(
                "{verdict:>10} {} ({}): {}\n",
                outputs.join(", "),
                text("job"),
                crate::escape::escape(text("reason"))
            ));
        }
    }
    crate::remote::read::stdout_text(&out);
    let total = answer.actions.len() as u64;
    if json {
        json_line(&DrySummary::new(total, &counts));
    }
    note(&format!(
        "dry run: {}: {} would run, {} up to date or restorable, {} blocked",
        count(total, "action"),
        counts.executed,
        counts.cached,
        counts.skipped
    ));
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fresh_unless_given() {
        let (a, b) = (idempotency_key(None), idempotency_key(None));
        assert_ne!(a, b);
        assert_eq!(a.len(), "cairn-cli-".len() + 32);
        assert_eq!(idempotency_key(Some("ci-42")), "ci-42");
    }

    #[test]
    fn an_operation_parses_from_the_documented_resource() {
        let text = r#"{"id":"op-1","name":"operations/op-1","kind":"build","state":"failed","done":true,
            "submitted_at":"2026-12-06T16:00:00Z","started_at":null,"finished_at":null,"request":{},
            "build":4,"expected":{"partitions":3,"actions":5,"current":1,"to_run":4},
            "counts":{"executed":2,"cached":1,"joined":0,"failed":1,"skipped":1},"running":[],
            "eta_seconds":null,
            "result":{"build":4,"cached":1,"duration_ms":3,"executed":2,"failed":1,"interrupted":false,"schema":1,"skipped":1,"total":5,"type":"summary"},
            "error":{"code":500,"status":"INTERNAL","message":"1 action failed","failed":[{"partition":"clean/x=1","job":"clean","log_tail":"boom"}]}}"#;
        let operation: Operation = serde_json::from_str(text).unwrap();
        assert_eq!(operation.expected.unwrap().actions, 5);
        assert_eq!(operation.result.unwrap().failed, 1);
        assert_eq!(operation.error.unwrap().failed[0].partition, "clean/x=1");
    }
}
