//! The local job runner: job processes spawned on this machine
//! ([`LocalRunner`], the real [`JobRunner`]: spawn.rs, process groups in
//! groups.rs), and the configure step of executable jobs
//! ([`ProcessConfigurer`]). The port and what a job is given (its
//! environment, the registry of running children) are in job/.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::graph::{Graph, Job};
use crate::plan::Configurer;
use crate::plan::config::{
    ConfigureError, FanDomains, JobConfig, Known, bindings_of, declarative_config,
    declarative_config_bound, parse_configure_output,
};
use crate::refs::PartitionRef;
use rustc_hash::FxHashSet;

pub(crate) mod slice;
pub(crate) mod spawn;

pub use crate::job::{
    Children, Ended, Invocation, JobEnvironment, JobRun, JobRunner, POLL_INTERVAL, TERM_GRACE,
};

/// Spawns each job as a local process ([`run_process`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalRunner;

impl JobRunner for LocalRunner {
    fn run(
        &self,
        job: &JobRun<'_>,
        children: &Children,
        poll: Option<&(dyn Fn() + Sync)>,
    ) -> io::Result<Ended> {
        run_shielded(&job.invocation, job.shield, children, poll, job.started)
    }
}

/// `/dev/null`, opened once for the stdin of every job.
fn dev_null() -> io::Result<std::os::fd::BorrowedFd<'static>> {
    static DEV_NULL: std::sync::OnceLock<File> = std::sync::OnceLock::new();
    if let Some(file) = DEV_NULL.get() {
        return Ok(std::os::fd::AsFd::as_fd(file));
    }
    let file = File::open("/dev/null")?;
    Ok(std::os::fd::AsFd::as_fd(DEV_NULL.get_or_init(|| file)))
}

/// The job's log at `path`, open for writing and empty: what
/// `File::create` gives, without its `O_TRUNC` when the file is already
/// empty (a reused attempt directory's logs are, exec/staging.rs). On ext4
/// a truncate dirties the inode even at length 0, and two per job were a
/// twentieth of a worker's time with one-line jobs.
fn empty_log(path: &std::path::Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    if file.metadata()?.len() > 0 {
        file.set_len(0)?;
    }
    Ok(file)
}

/// Uncounts a child from [`Children::running`]'s starting ones when
/// dropped (its pid recorded, or its spawn failed).
struct Starting<'a>(&'a Children);

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.0.starting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs a process to completion with stdout/stderr captured to files,
/// calling `poll` every [`POLL_INTERVAL`] while it runs (on another thread).
///
/// Nothing of the run outlives it: when its leader exits, what is left in
/// its process group is SIGKILLed, and so are the orphans re-parented to
/// cairn that carry its run id ([`crate::groups`]).
pub fn run_process(
    invocation: &Invocation<'_>,
    children: &Children,
    poll: Option<&(dyn Fn() + Sync)>,
) -> io::Result<Ended> {
    run_shielded(invocation, None, children, poll, None)
}

/// [`run_process`], for a run another build may join: while `shield` is
/// set, an interrupt of `children` neither SIGTERMs nor SIGKILLs it
/// (exec/inflight.rs).
#[expect(
    clippy::print_stderr,
    reason = "escalating to SIGKILL is said on stderr as it happens, whoever runs the process"
)]
fn run_shielded(
    invocation: &Invocation<'_>,
    shield: Option<&std::sync::Arc<std::sync::atomic::AtomicBool>>,
    children: &Children,
    poll: Option<&(dyn Fn() + Sync)>,
    on_start: Option<&(dyn Fn() + Sync)>,
) -> io::Result<Ended> {
    if children.is_interrupted() {
        return Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "the build was interrupted",
        ));
    }
    let (program, args) = invocation
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut env: Vec<(&str, &str)> = Vec::with_capacity(
        invocation.environment.passed.len()
            + invocation.environment.secret.len()
            + invocation.extra_env.len()
            + 1,
    );
    for (name, value) in invocation
        .environment
        .passed
        .iter()
        .chain(&invocation.environment.secret)
        .chain(invocation.extra_env)
    {
        env.push((name, value));
    }
    let run_id = children.run_id(invocation.run_id);
    env.push((crate::groups::RUN_ID_VAR, &run_id));
    children.record()?;
    let stdin = dev_null()?;
    let stdout = empty_log(invocation.stdout)?;
    let stderr = empty_log(invocation.stderr)?;
    // Counted as running from before the spawn until its pid is in
    // `children.pids`: an interrupt in between still sees the job.
    children.starting.fetch_add(1, Ordering::SeqCst);
    let counted = Starting(children);
    let gate = crate::groups::starting();
    let process = spawn::spawn(&spawn::Spec {
        program,
        args,
        env: &env,
        cwd: invocation.cwd,
        stdin: stdin.as_raw_fd(),
        stdout: stdout.as_raw_fd(),
        stderr: stderr.as_raw_fd(),
    })
    .map_err(|error| io::Error::new(error.kind(), format!("cannot start {program:?}: {error}")))?;
    let pid = process.pid;
    crate::groups::register(pid);
    drop(gate);
    drop((stdout, stderr));
    if let Some(shield) = shield
        && let Ok(mut shields) = children.shields.lock()
    {
        shields.insert(pid, std::sync::Arc::clone(shield));
    }
    if let Ok(mut pids) = children.pids.lock() {
        pids.insert(pid);
    }
    drop(counted);
    let shielded = || shield.is_some_and(|shield| shield.load(Ordering::SeqCst));
    // An interrupt that came while the job started did not see its pid.
    if children.is_interrupted() && !shielded() {
        crate::groups::signal_group(pid, libc::SIGTERM);
    }
    // SIGTERM on timeout, SIGKILL when the grace after a SIGTERM is over
    // (or at once on a second interrupt); checked on every tick.
    let started = Instant::now();
    // The caller's work for while the job runs (JobRun::started): the
    // job's timeout counts from its spawn all the same.
    if let Some(on_start) = on_start {
        on_start();
    }
    let escalation = Mutex::new((None::<Instant>, false, false));
    // Shielded when the interrupt came (it sent no SIGTERM then), and when
    // the shield dropped since (its last waiter gave up): the interrupt
    // reaches the job now, with its grace.
    let late_interrupt = Mutex::new((false, None::<Instant>));
    let tick = || {
        if let Some(poll) = poll {
            poll();
        }
        let Ok(mut state) = escalation.lock() else {
            return;
        };
        let (terminated, timed_out, killed) = &mut *state;
        let Ok(mut late) = late_interrupt.lock() else {
            return;
        };
        let shielded_now = shielded();
        if !late.0 && children.is_interrupted() {
            late.0 = shielded_now || children.was_spared(pid);
        }
        if late.0 && !shielded_now && late.1.is_none() {
            late.1 = Some(Instant::now());
            crate::groups::signal_group(pid, libc::SIGTERM);
        }
        if let Some(timeout) = invocation.timeout
            && !*timed_out
            && started.elapsed() >= timeout
        {
            *timed_out = true;
            terminated.get_or_insert_with(Instant::now);
            crate::groups::signal_group(pid, libc::SIGTERM);
        }
        let interrupt_due = match (shielded_now, late.1) {
            (true, _) => None,
            // Its grace counts from the late SIGTERM (now on "now").
            (false, Some(since)) => Some(if children.now.load(Ordering::SeqCst) {
                Instant::now()
            } else {
                since + TERM_GRACE
            }),
            (false, None) => children.kill_due(),
        };
        let due = [terminated.map(|at| at + TERM_GRACE), interrupt_due]
            .into_iter()
            .flatten()
            .min();
        if !*killed && due.is_some_and(|due| Instant::now() >= due) {
            *killed = true;
            crate::groups::signal_group(pid, libc::SIGKILL);
            if !children.now.load(Ordering::SeqCst) {
                eprintln!(
                    "cairn: {} did not exit within {}s of SIGTERM: killed (SIGKILL)",
                    invocation.label,
                    TERM_GRACE.as_secs()
                );
            }
        }
    };
    // Wait for the job's exit without reaping it, so its pid (the group id)
    // cannot be reused, then kill whatever it left running in its group:
    // nothing of a job may outlive it (and, say, write a checkpoint after it
    // exited). The checkpoint is watched meanwhile, on this thread.
    process.wait_exited(POLL_INTERVAL, Some(&tick));
    // Told to stop: an interrupt that did not spare it (a shielded run is
    // spared until its shield drops, then gets its late SIGTERM). An
    // interrupt that comes just as it exits counts too: its result is
    // then given up, never kept on a guess.
    let stopped = {
        let late = late_interrupt.lock().map(|late| *late).unwrap_or_default();
        late.1.is_some() || (children.told_to_stop() && !shielded() && !children.was_spared(pid))
    };
    crate::groups::signal_group(pid, libc::SIGKILL);
    crate::groups::reap_orphans(pid, &run_id);
    let status = process.reap();
    crate::groups::unregister(pid);
    if let Ok(mut pids) = children.pids.lock() {
        pids.remove(&pid);
    }
    if shield.is_some()
        && let Ok(mut shields) = children.shields.lock()
    {
        shields.remove(&pid);
        if let Ok(mut spared) = children.spared.lock() {
            spared.remove(&pid);
        }
    }
    let (_, timed_out, escalated) = escalation.into_inner().unwrap_or_default();
    Ok(Ended {
        status: status?,
        timed_out,
        escalated,
        stopped,
    })
}

/// The most bytes of refs passed to one configure call; more refs are split
/// over several calls to stay under the OS argument limit.
pub const CONFIGURE_ARGS_BYTES: usize = 128 * 1024;

/// Configures jobs for real: declarative jobs in-process, executable jobs by
/// running their `configure` command once per batch of refs.
pub struct ProcessConfigurer<'a> {
    pub graph: &'a Graph,
    pub environment: &'a JobEnvironment,
}

impl Configurer for ProcessConfigurer<'_> {
    fn configure(
        &self,
        job: &Job,
        refs: &[PartitionRef],
        wave: &[PartitionRef],
    ) -> Result<Vec<JobConfig>, ConfigureError> {
        let Some(argv) = &job.configure else {
            let fan = FanDomains::of(self.graph, job)?;
            // A single-output job has one config per (distinct) ref: each
            // bound and templated on its own, in parallel (half a million
            // at the 1M scale), the first error in ref order reported.
            if job.outputs.len() == 1 {
                return crate::par::try_map_in_order(refs.len(), |index| {
                    declarative_config_bound(job, &refs[index], &fan, Known(wave))
                });
            }
            // A config of a multi-output job covers its other outputs too.
            let mut covered: FxHashSet<PartitionRef> = FxHashSet::default();
            let mut configs: Vec<JobConfig> = Vec::with_capacity(refs.len());
            for partition in refs {
                if covered.contains(partition) {
                    continue;
                }
                let config = declarative_config(job, &bindings_of(job, partition)?, &fan)?;
                covered.extend(config.outputs.iter().cloned());
                configs.push(config);
            }
            return Ok(configs);
        };
        let context = self.graph.configure_context();
        let mut configs = Vec::new();
        let mut start = 0;
        while start < refs.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < refs.len()
                && (end == start || bytes + refs[end].as_str().len() < CONFIGURE_ARGS_BYTES)
            {
                bytes += refs[end].as_str().len() + 1;
                end += 1;
            }
            configs.extend(self.configure_batch(job, argv, &refs[start..end], &context)?);
            start = end;
        }
        Ok(configs)
    }
}

impl ProcessConfigurer<'_> {
    fn configure_batch(
        &self,
        job: &Job,
        argv: &[String],
        refs: &[PartitionRef],
        context: &serde_json::Value,
    ) -> Result<Vec<JobConfig>, ConfigureError> {
        let fail = |problem: String| ConfigureError {
            job: job.name.clone(),
            problem,
        };
        // The request on stdin: the refs again, the dimensions' values and
        // the defs sources' records (docs/job-protocol.md).
        let mut request = context.clone();
        request["refs"] = refs
            .iter()
            .map(|partition| serde_json::Value::from(partition.as_str()))
            .collect();
        let request = serde_json::to_vec(&request)
            .map_err(|error| fail(format!("cannot write the request: {error}")))?;
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| fail("command is empty".into()))?;
        let mut command = Command::new(program);
        command.args(args).current_dir(&self.graph.root);
        self.environment.apply(&mut command);
        command.args(refs.iter().map(PartitionRef::as_str));
        // What the step printed may carry a secret: every message is
        // redacted (its stderr, and its stdout quoted by a parse error).
        self.run_configure(job, argv, &mut command, request)
            .map_err(|error| ConfigureError {
                problem: self
                    .environment
                    .redactor
                    .redact_str(&error.problem)
                    .into_owned(),
                ..error
            })
    }

    fn run_configure(
        &self,
        job: &Job,
        argv: &[String],
        command: &mut Command,
        request: Vec<u8>,
    ) -> Result<Vec<JobConfig>, ConfigureError> {
        let fail = |problem: String| ConfigureError {
            job: job.name.clone(),
            problem,
        };
        let program = argv.first().map_or("", String::as_str);
        let output = run_bounded(command, request)
            .map_err(|error| fail(format!("could not start {program:?}: {error}")))?;
        if output.too_long {
            return Err(fail(format!(
                "printed more than {} MiB on stdout ({}); it was stopped",
                CONFIGURE_OUTPUT_LIMIT / (1024 * 1024),
                argv.join(" ")
            )));
        }
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: String = stderr
                .trim()
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            let tail = if tail.is_empty() {
                " and printed nothing on stderr".to_owned()
            } else {
                format!(": {tail}")
            };
            return Err(fail(format!(
                "{} ({}){tail}",
                describe_status(output.status),
                argv.join(" ")
            )));
        }
        parse_configure_output(&job.name, &output.stdout)
    }
}

/// The most a configure step may print on stdout: its answer is parsed in
/// memory, so a runaway configure is stopped rather than allowed to exhaust
/// it.
pub const CONFIGURE_OUTPUT_LIMIT: u64 = 256 * 1024 * 1024;

/// How much of a configure step's stderr is kept (its end), for errors.
const STDERR_TAIL_BYTES: usize = 64 * 1024;

/// What a configure process left.
struct Captured {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// stdout went past [`CONFIGURE_OUTPUT_LIMIT`]: the process was killed.
    too_long: bool,
}

/// Runs `command` to completion like [`Command::output`], but keeps at most
/// [`CONFIGURE_OUTPUT_LIMIT`] bytes of stdout (killing the process past
/// that) and the last [`STDERR_TAIL_BYTES`] of stderr.
fn run_bounded(command: &mut Command, stdin: Vec<u8>) -> io::Result<Captured> {
    use std::io::{Read, Write};
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    // Written on its own thread so that a large request and a large answer
    // cannot block each other; a process that does not read its stdin
    // closes it by exiting (the write then fails with EPIPE, ignored:
    // Rust ignores SIGPIPE).
    if let Some(mut pipe) = child.stdin.take() {
        std::thread::spawn(move || {
            let _ = pipe.write_all(&stdin);
        });
    }
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(io::Error::other("the configure process has no pipes"));
    };
    let tail = std::thread::spawn(move || {
        let mut kept: Vec<u8> = Vec::new();
        let mut buffer = vec![0u8; 8192];
        while let Ok(read) = stderr.read(&mut buffer) {
            if read == 0 {
                break;
            }
            kept.extend_from_slice(&buffer[..read]);
            if kept.len() > 2 * STDERR_TAIL_BYTES {
                kept.drain(..kept.len() - STDERR_TAIL_BYTES);
            }
        }
        let start = kept.len().saturating_sub(STDERR_TAIL_BYTES);
        kept.split_off(start)
    });
    let mut out = Vec::new();
    let read = (&mut stdout)
        .take(CONFIGURE_OUTPUT_LIMIT + 1)
        .read_to_end(&mut out);
    let too_long = out.len() as u64 > CONFIGURE_OUTPUT_LIMIT;
    if too_long || read.is_err() {
        let _ = child.kill();
    }
    drop(stdout);
    let status = child.wait()?;
    read?;
    if too_long {
        // Whatever it started may still hold stderr open: do not wait for it.
        return Ok(Captured {
            status,
            stdout: Vec::new(),
            stderr: Vec::new(),
            too_long,
        });
    }
    let stderr = tail.join().unwrap_or_default();
    Ok(Captured {
        status,
        stdout: out,
        stderr,
        too_long,
    })
}

/// `exited with status 3`, `was killed by signal 9`.
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended abnormally".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::graph::EnvPolicy;

    /// A job's log comes out empty whatever was there, and one already
    /// empty is not truncated again (its mtime, which a truncate sets, is
    /// kept).
    #[test]
    fn a_log_is_emptied_and_an_empty_one_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (full, empty, absent) = (
            dir.path().join("full"),
            dir.path().join("empty"),
            dir.path().join("absent"),
        );
        std::fs::write(&full, "the last job's output").unwrap();
        let long_ago = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30);
        File::create(&empty)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        for path in [&full, &empty, &absent] {
            use std::io::Write;
            let mut log = empty_log(path).unwrap();
            writeln!(log, "new").unwrap();
        }
        for path in [&full, &empty, &absent] {
            assert_eq!(std::fs::read_to_string(path).unwrap(), "new\n");
        }
        let untouched = dir.path().join("untouched");
        File::create(&untouched)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        drop(empty_log(&untouched).unwrap());
        assert_eq!(
            std::fs::metadata(&untouched).unwrap().modified().unwrap(),
            long_ago
        );
    }

    #[test]
    fn only_allow_listed_and_secret_variables_pass() {
        let policy = EnvPolicy {
            allow: vec!["TZ".into()],
            secret: vec!["TOKEN".into()],
        };
        let environment = JobEnvironment::from_lookup(&policy, |name| match name {
            "PATH" => Some("/bin".into()),
            "TZ" => Some("UTC".into()),
            "TOKEN" => Some("hunter2".into()),
            "AWS_SECRET" => Some("nope".into()),
            _ => None,
        });
        assert_eq!(
            environment.passed,
            [
                ("PATH".to_owned(), "/bin".to_owned()),
                ("TZ".to_owned(), "UTC".to_owned())
            ]
        );
        assert_eq!(
            environment.secret,
            [("TOKEN".to_owned(), "hunter2".to_owned())]
        );
    }

    /// A configure step reads the dimensions' values and the defs
    /// sources' records on stdin, with the refs.
    #[test]
    fn configure_is_told_the_dimensions_and_sources_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
[datasets.daily]
[dimensions.date]
start = "2024-01-30"
end = "2024-02-01"
[dimensions.station]
from = "stations"
[dimensions.unread]
from = "later"
[sources.stations]
command = ["true"]
[sources.later]
command = ["true"]
[jobs.daily]
outputs = ["daily/date={date}"]
configure = ["sh", "-c", "cat > request.json; echo '{\"configs\":[{\"outputs\":[\"daily/date=2024-01-30\"]}]}'", "configure"]
run = ["true"]
"#;
        let mut graph = Graph::parse(text, &dir.path().join("cairn.toml"), dir.path()).unwrap();
        graph.set_source_values("stations", vec!["S2".into(), "S1".into()]);
        let environment = JobEnvironment::from_process(&graph.env);
        let configurer = ProcessConfigurer {
            graph: &graph,
            environment: &environment,
        };
        let partition = PartitionRef::parse("daily/date=2024-01-30").unwrap();
        let configs = configurer
            .configure(&graph.jobs["daily"], &[partition], &[])
            .unwrap();
        assert_eq!(configs.len(), 1);
        let request = std::fs::read_to_string(dir.path().join("request.json")).unwrap();
        assert_eq!(
            request,
            r#"{"dimensions":{"date":["2024-01-30","2024-01-31","2024-02-01"],"station":["S2","S1"]},"refs":["daily/date=2024-01-30"],"sources":{"stations":["S2","S1"]}}"#
        );
    }

    /// A stop signal noted in its handler (`Children::stop_signalled`)
    /// before the thread that interrupts the children has run: a job that
    /// got its own SIGTERM from the same sender (systemd's
    /// `KillMode=control-group`) and exited 0 at once is stopped, never a
    /// success. Before, only the interrupt counted, which came too late.
    #[test]
    fn a_job_that_exits_0_after_a_stop_signal_is_noted_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let argv: Vec<String> = [
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo $$ > pid; sleep 60 & wait",
        ]
        .map(str::to_owned)
        .to_vec();
        let environment = JobEnvironment::from_process(&EnvPolicy::default());
        for signalled in [false, true] {
            let _ = std::fs::remove_file(&pid_file);
            let children = Children::default();
            let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
            let invocation = Invocation {
                argv: &argv,
                cwd: dir.path(),
                environment: &environment,
                extra_env: &[],
                stdout: &stdout,
                stderr: &stderr,
                run_id: "test",
                label: "job t (t)",
                timeout: None,
            };
            let ended = std::thread::scope(|scope| {
                let run = scope.spawn(|| run_process(&invocation, &children, None));
                let deadline = Instant::now() + Duration::from_secs(30);
                let pid = loop {
                    if let Ok(pid) = std::fs::read_to_string(&pid_file)
                        && let Ok(pid) = pid.trim().parse::<u32>()
                    {
                        break pid;
                    }
                    assert!(Instant::now() < deadline, "the job never started");
                    std::thread::sleep(Duration::from_millis(10));
                };
                if signalled {
                    // What the handler does, and nothing else yet.
                    children.stop_signalled().store(true, Ordering::SeqCst);
                }
                crate::groups::signal_group(pid, libc::SIGTERM);
                run.join().unwrap().unwrap()
            });
            assert_eq!(ended.status.code(), Some(0));
            assert_eq!(ended.stopped, signalled, "signal noted: {signalled}");
            assert_eq!(ended.succeeded(), !signalled);
        }
    }

    #[test]
    fn secrets_never_enter_the_passed_list_even_if_allowed() {
        let policy = EnvPolicy {
            allow: vec!["TOKEN".into()],
            secret: vec!["TOKEN".into()],
        };
        let environment = JobEnvironment::from_lookup(&policy, |_| Some("x".into()));
        assert!(environment.passed.iter().all(|(name, _)| name != "TOKEN"));
    }
}
