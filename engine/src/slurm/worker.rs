//! `cairn worker run SPEC...`: the step a Slurm job runs on its node. Each
//! spec file (written by the coordinator's [`super::SlurmRunner`] into the
//! attempt's staging directory, on the shared filesystem) says what to run;
//! the worker runs it with the local runner's own spawn code (process
//! group, PDEATHSIG, timeout, SIGTERM then SIGKILL: [`run_process`]), then
//! writes the outcome beside it durably (written aside, fsynced, renamed,
//! the directory fsynced). The coordinator ingests the staged outputs only
//! after reading an outcome of exit status 0, exactly as for a local job.

use std::fs;
use std::io::{self, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::executor::HEARTBEAT_EVERY;
use crate::job::{Children, Ended, Invocation, JobEnvironment};
use crate::local::run_process;

/// The version of [`WorkerSpec`] and [`WorkerOutcome`]: a worker refuses a
/// spec of another version (a coordinator and nodes of different cairns).
pub const SPEC_VERSION: u32 = 1;

/// What the worker runs: one attempt of an action's job. No secret value is
/// in it: `secret_names` are read from the worker's own environment, where
/// `sbatch --export` put them (docs/slurm.md, "Secrets").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerSpec {
    pub version: u32,
    /// `job clean (clean/date=…)`, for messages.
    pub label: String,
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// The allow-listed variables of the coordinator's environment.
    pub passed: Vec<(String, String)>,
    /// The names of the secret variables (`[env] secret`).
    pub secret_names: Vec<String>,
    /// The job's own variables (config env, CAIRN_*), set last.
    pub extra: Vec<(String, String)>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// `CAIRN_RUN_ID` of the process, as the coordinator would give it.
    pub run_id: String,
    pub timeout_ms: Option<u64>,
    /// Where the worker writes the [`WorkerOutcome`].
    pub outcome: PathBuf,
}

/// How the job ended, as the worker saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerOutcome {
    pub version: u32,
    /// The exit status, or `None` when a signal ended it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub escalated: bool,
    /// The job could not be started: why (the attempt fails with it).
    pub error: Option<String>,
    /// `SLURMD_NODENAME` and `SLURM_JOB_ID` of the worker.
    pub node: Option<String>,
    pub slurm_job: Option<String>,
    /// The attempt cannot succeed on the nodes as configured (they do not
    /// see the project): no retry. Absent in outcomes of older workers.
    #[serde(default)]
    pub permanent: bool,
    /// The worker was told to stop (SIGTERM: Slurm cancelled or ended its
    /// job) before the job ended: not stored, whatever its status.
    /// Absent in outcomes of older workers.
    #[serde(default)]
    pub stopped: bool,
}

impl WorkerOutcome {
    /// The process's status as [`std::process::ExitStatus`] (a wait status).
    pub fn status(&self) -> std::process::ExitStatus {
        match (self.code, self.signal) {
            (Some(code), _) => std::process::ExitStatus::from_raw((code & 0xff) << 8),
            (None, Some(signal)) => std::process::ExitStatus::from_raw(signal & 0x7f),
            (None, None) => std::process::ExitStatus::from_raw(0xff << 8),
        }
    }
}

/// A problem of the worker with a spec file.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot read the worker spec {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("the worker spec {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write the outcome {path}: {source}")]
    Outcome { path: PathBuf, source: io::Error },
    #[error("{}", unshared(path, node.as_deref()))]
    Unshared { path: PathBuf, node: Option<String> },
}

/// Why a worker cannot see `path` of the coordinator's, said once for the
/// worker's own log and the coordinator's error.
pub fn unshared(path: &Path, node: Option<&str>) -> String {
    format!(
        "{} is not found on {}: the nodes do not share it with the coordinator (data = \"shared\" needs the project, the data directory and the store on a filesystem shared with the nodes, at the same paths; without one, use [executor] data = \"cache\", docs/slurm.md)",
        path.display(),
        node.map_or_else(|| "this node".to_owned(), |node| format!("node {node}"))
    )
}

/// The node this worker runs on, as Slurm names it.
fn this_node() -> Option<String> {
    std::env::var("SLURMD_NODENAME").ok()
}

/// Where a pulling worker marks that it started (`workers/<slurm job
/// id>`): a worker that ended without one never saw the directory.
pub const STARTED: &str = "workers";

/// Writes `bytes` to `path` durably: aside, fsynced, renamed over it, its
/// directory fsynced.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_aside(path, bytes, true)?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically for readers, not durably: aside,
/// renamed over it, no fsync (the spec: see `SlurmRunner::run`).
pub(crate) fn write_visible(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_aside(path, bytes, false)
}

/// Writes `bytes` beside `path` (fsynced if `sync`) and renames them over
/// it; the file aside is removed if that fails.
fn write_aside(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".{}", crate::groups::unique_id()));
    let aside = PathBuf::from(aside);
    let written = (|| {
        let mut file = fs::File::create(&aside)?;
        file.write_all(bytes)?;
        if sync {
            file.sync_all()?;
        }
        fs::rename(&aside, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&aside);
    }
    written
}

pub fn read_spec(path: &Path) -> Result<WorkerSpec, WorkerError> {
    let bytes = fs::read(path).map_err(|source| WorkerError::Read {
        path: path.to_owned(),
        source,
    })?;
    let spec: WorkerSpec =
        serde_json::from_slice(&bytes).map_err(|error| WorkerError::Invalid {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
    if spec.version != SPEC_VERSION {
        return Err(WorkerError::Invalid {
            path: path.to_owned(),
            message: format!(
                "version {} (this cairn reads version {SPEC_VERSION}): the nodes run another cairn than the coordinator",
                spec.version
            ),
        });
    }
    Ok(spec)
}

/// The heartbeat file of the attempt whose outcome goes to `outcome`:
/// beside it, rewritten by the worker every [`HEARTBEAT_EVERY`] while the
/// attempt runs (a count of beats), watched by the coordinator.
pub fn heartbeat_path(outcome: &Path) -> PathBuf {
    outcome.with_file_name("heartbeat")
}

/// Runs `work` while a thread calls `beat` with 1, 2, 3… every
/// [`HEARTBEAT_EVERY`], starting at once; stops beating when `work`
/// returns. A worker frozen (SIGSTOP) or killed beats no more: the
/// coordinator then takes the attempt for lost (docs/slurm.md, "Faults").
pub(super) fn beating<T>(beat: impl Fn(u64) + Send, work: impl FnOnce() -> T) -> T {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut count = 0u64;
            loop {
                count += 1;
                beat(count);
                match stopped.recv_timeout(HEARTBEAT_EVERY) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        });
        let result = work();
        drop(stop);
        result
    })
}

/// Reads the outcome the worker wrote for a spec, if it is there.
pub fn read_outcome(path: &Path) -> Option<WorkerOutcome> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Runs each spec in turn (a batch), writing each one's outcome, and stops
/// starting new ones once `children` is interrupted (SIGTERM from
/// `scancel`). An error: a spec that could not be read or an outcome that
/// could not be written; the specs after it still run.
pub fn run_specs(paths: &[PathBuf], children: &Children) -> Result<(), Vec<WorkerError>> {
    crate::groups::become_subreaper();
    in_turn(paths, children, |path| run_spec(path, children))
}

/// Runs `run` on each of `items` in turn, and stops starting new ones once
/// `children` is interrupted; the errors of those that failed (the items
/// after one still run). A worker's batch, in either data mode.
pub(super) fn in_turn<T>(
    items: &[T],
    children: &Children,
    run: impl Fn(&T) -> Result<(), WorkerError>,
) -> Result<(), Vec<WorkerError>> {
    let mut errors = Vec::new();
    for item in items {
        if children.is_interrupted() {
            break;
        }
        if let Err(error) = run(item) {
            errors.push(error);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// How long a pulling worker waits for more work before it exits.
pub const IDLE: Duration = Duration::from_secs(3);

/// `cairn worker pull DIR`: claims the entries of `DIR/queue` one at a
/// time (renamed to `DIR/claimed/<entry>@<SLURM_JOB_ID>`: one worker wins
/// each), runs the spec each names, and exits after `most` of them, after
/// [`IDLE`] without work, or when `children` is interrupted. How many it
/// ran, and the errors of those it could not.
pub fn pull(dir: &Path, most: usize, children: &Children) -> (usize, Vec<WorkerError>) {
    use std::os::unix::ffi::OsStringExt;
    crate::groups::become_subreaper();
    let me = std::env::var("SLURM_JOB_ID").unwrap_or_else(|_| format!("pid{}", std::process::id()));
    let queue = dir.join(super::QUEUE);
    let claimed = dir.join(super::CLAIMED);
    if !queue.is_dir() {
        return (
            0,
            vec![WorkerError::Unshared {
                path: dir.to_owned(),
                node: this_node(),
            }],
        );
    }
    let started = dir.join(STARTED);
    if let Err(source) =
        fs::create_dir_all(&started).and_then(|()| fs::write(started.join(&me), b""))
    {
        return (
            0,
            vec![WorkerError::Outcome {
                path: started.join(&me),
                source,
            }],
        );
    }
    let (mut ran, mut errors) = (0, Vec::new());
    let mut idle = std::time::Instant::now();
    while ran < most && !children.is_interrupted() {
        let mut names: Vec<std::ffi::OsString> = fs::read_dir(&queue)
            .map(|entries| entries.flatten().map(|entry| entry.file_name()).collect())
            .unwrap_or_default();
        names.sort();
        let took = names.iter().find_map(|name| {
            let target = claimed.join(format!("{}@{me}", name.to_string_lossy()));
            fs::rename(queue.join(name), &target)
                .ok()
                .map(|()| (name, target))
        });
        let Some((name, target)) = took else {
            if idle.elapsed() >= IDLE {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        match fs::read(&target) {
            Ok(bytes) => {
                let spec = PathBuf::from(std::ffi::OsString::from_vec(bytes));
                if let Err(error) = run_spec(&spec, children) {
                    errors.push(error);
                }
                // The outcome is written (durably): tell the coordinator's
                // watch (watch.rs), which reads this directory instead of
                // every attempt looking for its outcome file. A hint only:
                // lost, the coordinator still finds the outcome itself.
                let _ = fs::write(dir.join(super::watch::DONE).join(name), b"");
            }
            Err(source) => errors.push(WorkerError::Read {
                path: target.clone(),
                source,
            }),
        }
        ran += 1;
        idle = std::time::Instant::now();
    }
    (ran, errors)
}

fn run_spec(path: &Path, children: &Children) -> Result<(), WorkerError> {
    if let Some(dir) = path.parent()
        && !dir.is_dir()
    {
        // Nowhere to write an outcome: the coordinator learns it from the
        // Slurm job's end without a heartbeat (docs/slurm.md, "Faults").
        return Err(WorkerError::Unshared {
            path: dir.to_owned(),
            node: this_node(),
        });
    }
    let spec = match read_spec(path) {
        Ok(spec) => spec,
        Err(error) => {
            // The coordinator waits for `outcome.json` beside the spec:
            // tell it why there will be no run.
            let outcome = WorkerOutcome {
                version: SPEC_VERSION,
                error: Some(error.to_string()),
                ..WorkerOutcome::default()
            };
            if let (Some(dir), Ok(bytes)) = (path.parent(), serde_json::to_vec(&outcome))
                && dir.is_dir()
            {
                let _ = write_durably(&dir.join("outcome.json"), &bytes);
            }
            return Err(error);
        }
    };
    if !spec.cwd.is_dir() {
        // The attempt's directory is shared, the project is not.
        let outcome = WorkerOutcome {
            version: SPEC_VERSION,
            error: Some(unshared(&spec.cwd, this_node().as_deref())),
            node: this_node(),
            slurm_job: std::env::var("SLURM_JOB_ID").ok(),
            permanent: true,
            ..WorkerOutcome::default()
        };
        let bytes = serde_json::to_vec(&outcome).map_err(|error| WorkerError::Outcome {
            path: spec.outcome.clone(),
            source: io::Error::other(error),
        })?;
        return write_durably(&spec.outcome, &bytes).map_err(|source| WorkerError::Outcome {
            path: spec.outcome.clone(),
            source,
        });
    }
    let environment = node_environment(&spec.passed, &spec.secret_names);
    // Where it runs, for the job (first: its own variables may override).
    let mut extra = where_it_runs();
    extra.extend(spec.extra.iter().cloned());
    let heartbeat = heartbeat_path(&spec.outcome);
    let beat = |count: u64| {
        // Not durable: a beat only has to be seen, and a lost one is
        // replaced a second later.
        let _ = fs::write(&heartbeat, count.to_string());
    };
    let ended = beating(beat, || {
        run_job(
            &Invocation {
                argv: &spec.argv,
                cwd: &spec.cwd,
                environment: &environment,
                extra_env: &extra,
                stdout: &spec.stdout,
                stderr: &spec.stderr,
                run_id: &spec.run_id,
                label: &spec.label,
                timeout: spec.timeout_ms.map(Duration::from_millis),
            },
            children,
        )
    });
    let mut outcome = WorkerOutcome {
        version: SPEC_VERSION,
        node: this_node(),
        slurm_job: std::env::var("SLURM_JOB_ID").ok(),
        ..WorkerOutcome::default()
    };
    match ended {
        Ok(ended) => {
            outcome.code = ended.status.code();
            outcome.signal = ended.status.signal();
            outcome.timed_out = ended.timed_out;
            outcome.escalated = ended.escalated;
            outcome.stopped = ended.stopped;
        }
        Err(error) => outcome.error = Some(error.to_string()),
    }
    let bytes = serde_json::to_vec(&outcome).map_err(|error| WorkerError::Outcome {
        path: spec.outcome.clone(),
        source: io::Error::other(error),
    })?;
    write_durably(&spec.outcome, &bytes).map_err(|source| WorkerError::Outcome {
        path: spec.outcome.clone(),
        source,
    })
}

/// How long a worker whose job exited after a stop was announced
/// (SIGCONT) waits for the SIGTERM that announcement precedes.
pub(super) const ANNOUNCED_STOP: Duration = Duration::from_secs(1);

/// Runs a spec's job as a local one ([`run_process`]), and counts it as
/// stopped when Slurm ended it, whatever its exit status.
///
/// Slurm ends a job by signalling its processes one by one: SIGCONT to
/// every process, then SIGTERM to every process, the deepest (the job)
/// before its worker. A job that traps SIGTERM and exits 0 at once may
/// end before the worker hears of its own SIGTERM, and its half-made
/// output would be stored as built. So once a SIGCONT came while the job
/// ran (`Children::stop_announced`, set in the signal handler), the
/// worker waits up to [`ANNOUNCED_STOP`] after the job's exit for an
/// interrupt. A SIGCONT that only resumed a suspended job costs that
/// wait, once, and only to a job that succeeded; a worker never
/// signalled waits for nothing.
pub(super) fn run_job(invocation: &Invocation<'_>, children: &Children) -> io::Result<Ended> {
    let announced = children.stop_announced();
    announced.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut ended = run_process(invocation, children, None)?;
    // Only a success could be stored: a failure needs no second look.
    if ended.status.success()
        && !ended.stopped
        && announced.swap(false, std::sync::atomic::Ordering::SeqCst)
        && !children.sleep(ANNOUNCED_STOP)
    {
        ended.stopped = true;
    }
    Ok(ended)
}

/// The job's environment on the node: the passed variables as the spec
/// lists them, and each secret by name from the worker's own environment
/// (secrets never travel in a spec).
pub(super) fn node_environment(
    passed: &[(String, String)],
    secret_names: &[String],
) -> JobEnvironment {
    let secret = secret_names
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|value| (name.clone(), value)))
        .collect();
    JobEnvironment {
        passed: passed.to_vec(),
        secret,
        redactor: crate::redact::Redactor::default(),
    }
}

/// The Slurm variables naming where the job runs, for the job.
pub(super) fn where_it_runs() -> Vec<(String, String)> {
    ["SLURM_JOB_ID", "SLURMD_NODENAME"]
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| ((*name).to_owned(), v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, argv: &[&str]) -> WorkerSpec {
        WorkerSpec {
            version: SPEC_VERSION,
            label: "job t (t/x=1)".into(),
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            cwd: dir.to_owned(),
            passed: vec![("PATH".into(), "/usr/bin:/bin".into())],
            secret_names: vec!["CAIRN_WORKER_TEST_SECRET".into()],
            extra: vec![("A".into(), "1".into())],
            stdout: dir.join("stdout"),
            stderr: dir.join("stderr"),
            run_id: "r1".into(),
            timeout_ms: None,
            outcome: dir.join("outcome.json"),
        }
    }

    #[test]
    fn a_spec_runs_and_its_outcome_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let one = spec(
            dir.path(),
            &[
                "sh",
                "-c",
                "echo \"$A $CAIRN_RUN_ID\"; echo oops >&2; exit 3",
            ],
        );
        let path = dir.path().join("spec.json");
        fs::write(&path, serde_json::to_vec(&one).unwrap()).unwrap();
        run_specs(std::slice::from_ref(&path), &Children::default()).unwrap();
        let outcome = read_outcome(&dir.path().join("outcome.json")).unwrap();
        assert_eq!(outcome.code, Some(3));
        assert_eq!(outcome.status().code(), Some(3));
        assert_eq!(
            fs::read_to_string(dir.path().join("stdout")).unwrap(),
            "1 r1\n"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("stderr")).unwrap(),
            "oops\n"
        );
    }

    #[test]
    fn a_spec_of_another_version_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut one = spec(dir.path(), &["true"]);
        one.version = 99;
        let path = dir.path().join("spec.json");
        fs::write(&path, serde_json::to_vec(&one).unwrap()).unwrap();
        let errors = run_specs(std::slice::from_ref(&path), &Children::default()).unwrap_err();
        let text = errors[0].to_string();
        assert!(
            text.contains("spec.json") && text.contains("version 99"),
            "{text}"
        );
        // The coordinator is told why nothing ran.
        let outcome = read_outcome(&dir.path().join("outcome.json")).unwrap();
        assert!(outcome.error.unwrap().contains("version 99"));
    }

    /// Two workers pulling from one queue run each entry once.
    #[test]
    fn workers_claim_each_queued_spec_once() {
        let dir = tempfile::tempdir().unwrap();
        let runner = dir.path().join("runner");
        fs::create_dir_all(runner.join(super::super::QUEUE)).unwrap();
        fs::create_dir_all(runner.join(super::super::CLAIMED)).unwrap();
        for index in 0..6 {
            let attempt = dir.path().join(format!("a{index}"));
            fs::create_dir(&attempt).unwrap();
            let one = spec(&attempt, &["sh", "-c", "echo x >> ../ran"]);
            let path = attempt.join("worker.json");
            fs::write(&path, serde_json::to_vec(&one).unwrap()).unwrap();
            fs::write(
                runner
                    .join(super::super::QUEUE)
                    .join(format!("{index:010}")),
                path.to_str().unwrap(),
            )
            .unwrap();
        }
        let children = Children::default();
        let (first, second) = std::thread::scope(|scope| {
            let a = scope.spawn(|| pull(&runner, 4, &children));
            let b = scope.spawn(|| pull(&runner, 4, &children));
            (a.join().unwrap(), b.join().unwrap())
        });
        assert!(first.1.is_empty() && second.1.is_empty());
        assert_eq!(first.0 + second.0, 6);
        assert_eq!(
            fs::read_to_string(dir.path().join("ran")).unwrap(),
            "x\n".repeat(6)
        );
        for index in 0..6 {
            let outcome = read_outcome(&dir.path().join(format!("a{index}/outcome.json"))).unwrap();
            assert_eq!(outcome.code, Some(0));
        }
    }

    /// A worker that does not see the runner's directory or the spec's
    /// says so, naming the path, and runs nothing.
    #[test]
    fn a_directory_not_shared_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("not-shared");
        let (ran, errors) = pull(&gone, 4, &Children::default());
        assert_eq!(ran, 0);
        let text = errors[0].to_string();
        assert!(
            text.starts_with(&format!("{} is not found on ", gone.display()))
                && text.contains("data = \"cache\""),
            "{text}"
        );
        let errors = run_specs(&[gone.join("worker.json")], &Children::default()).unwrap_err();
        assert!(matches!(&errors[0], WorkerError::Unshared { path, .. } if *path == gone));
        // The spec is seen, the project (its working directory) is not.
        let mut one = spec(dir.path(), &["true"]);
        one.cwd = gone;
        let path = dir.path().join("spec.json");
        fs::write(&path, serde_json::to_vec(&one).unwrap()).unwrap();
        run_specs(std::slice::from_ref(&path), &Children::default()).unwrap();
        let outcome = read_outcome(&dir.path().join("outcome.json")).unwrap();
        assert!(outcome.permanent);
        assert!(outcome.error.unwrap().contains("the nodes do not share it"));
    }

    #[test]
    fn a_signal_is_an_outcome_with_no_code() {
        let outcome = WorkerOutcome {
            signal: Some(9),
            ..WorkerOutcome::default()
        };
        assert_eq!(outcome.status().signal(), Some(9));
    }
}
