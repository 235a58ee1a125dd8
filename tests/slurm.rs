//! The Slurm executor against a real two-node Slurm on this host
//! (`.ci/services/slurm.sh`, docs/slurm.md): the same data as a local build,
//! failures reported as for a local job, Ctrl-C cancelling every Slurm job of
//! cairn's, and an action built locally never submitted. Where the Slurm
//! packages cannot be installed each test prints `SKIPPED:` and returns.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{Background, Project, snapshot};

/// Starts (or reuses) the cluster once per test binary: `false` when the
/// packages cannot be installed here. A cluster the tests started is
/// stopped when the last test binary using it exits ([`stop_at_exit`]).
fn slurm() -> bool {
    static UP: OnceLock<bool> = OnceLock::new();
    *UP.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/services/slurm.sh");
        stop_at_exit(&script);
        let output = Command::new("bash")
            .arg(&script)
            .args(["start", "--by-tests"])
            .output()
            .expect("run .ci/services/slurm.sh");
        match output.status.code() {
            Some(0) => true,
            Some(3) => false,
            _ => panic!(
                "{} start failed: {}{}",
                script.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    })
}

/// A watcher process, in a session of its own, holds a shared lock on
/// `/run/cairn-slurm-tests.lock` while this test binary runs. Once the
/// binary has exited it takes the lock exclusively (only when no other
/// test binary holds it) and, if the tests started the cluster
/// (`slurm.sh start --by-tests` marked it), stops it, munged included. A
/// test binary starting meanwhile waits for its shared lock, then starts
/// the cluster again.
fn stop_at_exit(script: &Path) {
    use std::io::BufRead;
    let me = std::process::id();
    let watcher = format!(
        "exec 9>>/run/cairn-slurm-tests.lock; flock -s 9; echo locked; exec >/dev/null 2>&1; \
         while kill -0 {me} 2>/dev/null; do sleep 1; done; \
         if flock -n -x 9 && [ -f /run/cairn-slurm-started-by-tests ]; then bash '{}' stop; fi",
        script.display()
    );
    let Ok(mut child) = Command::new("setsid")
        .args(["sh", "-c", &watcher])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        return;
    };
    // Until it holds the shared lock: no stop can start after this.
    if let Some(stdout) = child.stdout.take() {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    }
    // It outlives this process on purpose: never waited for.
    std::mem::forget(child);
}

/// The two nodes have one CPU each: the tests take turns.
fn turn() -> Option<std::sync::MutexGuard<'static, ()>> {
    static TURN: Mutex<()> = Mutex::new(());
    if !slurm() {
        #[expect(clippy::print_stderr, reason = "the notice of a skipped test")]
        {
            eprintln!(
                "SKIPPED: the Slurm packages (slurmctld slurmd slurm-client munge) cannot be installed here"
            );
        }
        return None;
    }
    Some(
        TURN.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// The Slurm jobs (queued, running or completing) whose working directory
/// is under `dir`: cairn's batch directory is in the project's data.
fn slurm_jobs_under(dir: &Path) -> Vec<String> {
    let output = Command::new("squeue")
        .args(["-h", "-o", "%i %T %Z"])
        .output()
        .expect("run squeue");
    assert!(output.status.success(), "squeue failed");
    let dir = dir.canonicalize().expect("canonical project directory");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| {
            line.split_whitespace()
                .nth(2)
                .is_some_and(|work| Path::new(work).starts_with(&dir))
        })
        .map(str::to_owned)
        .collect()
}

/// Waits (up to 30 s: a cancelled Slurm job completes for a moment) until
/// no Slurm job of cairn's under `dir` is left.
fn no_jobs_left_under(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = slurm_jobs_under(dir);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Slurm jobs of cairn left: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A graph of 4 `a` and 4 `b` partitions; each `a` job appends
/// `REF SLURM_JOB_ID` to `ran.log` (empty id when it ran locally), and the
/// `a` job of `n=` `fail` exits 7 after printing to stderr.
fn graph(fail: &str) -> String {
    format!(
        r#"
[executor]
kind = "slurm"

[datasets.a]
[datasets.b]
[dimensions.n]
values = ["1", "2", "3", "4"]

[jobs.a]
outputs = ["a/n={{n}}"]
run = ["sh", "-c", "echo \"$CAIRN_OUTPUT_REF_0 $SLURM_JOB_ID\" >> ran.log; if [ \"$CAIRN_OUTPUT_REF_0\" = \"a/n={fail}\" ]; then echo \"boom on $CAIRN_OUTPUT_REF_0\" >&2; exit 7; fi; echo \"a $CAIRN_OUTPUT_REF_0\" > \"$CAIRN_OUT/data.txt\""]

[jobs.b]
outputs = ["b/n={{n}}"]
inputs = ["a/n={{n}}"]
run = ["sh", "-c", "cat \"$CAIRN_IN/data.txt\" > \"$CAIRN_OUT/data.txt\"; echo b >> \"$CAIRN_OUT/data.txt\""]
"#
    )
}

/// `ran.log` as `(ref, slurm job id)` lines.
fn ran(p: &Project) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(p.file("ran.log")).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut fields = line.split(' ');
            (
                fields.next().unwrap_or_default().to_owned(),
                fields.next().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Podcast DAYS x STATIONS built locally and through Slurm: every action
/// runs through Slurm once, the data is byte-identical to the local
/// build's, a second Slurm build runs nothing and no Slurm job of cairn's
/// is left. The project built through Slurm, and its number of actions.
fn built_through_slurm_as_locally(days: u32, stations: u32) -> (Project, u64) {
    let local = Project::podcast(days, stations);
    let through = Project::podcast(days, stations);
    let built_locally = local.build(&["--executor", "local"]);
    built_locally.assert_code(0);
    let total = built_locally.count("executed");
    let first = through.build(&["--executor", "slurm"]);
    first.assert_code(0);
    first.assert_counts(total, total, 0, 0, 0);
    assert_eq!(
        snapshot(&through.file("data")),
        snapshot(&local.file("data")),
        "the data built through Slurm is not the local build's"
    );
    let second = through.build(&["--executor", "slurm"]);
    second.assert_code(0);
    second.assert_counts(total, 0, total, 0, 0);
    no_jobs_left_under(through.path());
    (through, total)
}

#[test]
fn a_podcast_built_through_slurm_equals_a_local_build_and_rebuilds_nothing() {
    let Some(_turn) = turn() else { return };
    let (through, total) = built_through_slurm_as_locally(3, 4);
    assert_eq!(total, 3 * 4 * 2 + 3);
    // Nothing changed: nothing runs locally either.
    let third = through.build(&["--executor", "local"]);
    third.assert_code(0);
    third.assert_counts(total, 0, total, 0, 0);
}

#[test]
fn every_action_runs_in_a_slurm_job_and_the_graph_file_chooses_slurm() {
    let Some(_turn) = turn() else { return };
    let p = Project::with_graph(&graph("none"));
    let built = p.build(&[]);
    built.assert_code(0);
    built.assert_counts(8, 8, 0, 0, 0);
    let ran = ran(&p);
    assert_eq!(ran.len(), 4, "{ran:?}");
    for (partition, job) in &ran {
        assert!(
            job.parse::<u64>().is_ok(),
            "{partition} did not run in a Slurm job: {ran:?}"
        );
    }
    assert_eq!(
        p.read_string("data/b/n=3/data.txt"),
        "a a/n=3\nb\n",
        "b read a's output"
    );
    // Each action's Slurm job is recorded (`ActionDispatched`): the id the
    // job itself saw in SLURM_JOB_ID, and one Slurm knows.
    let dispatched = common::of_kind(&p.build_events(built.id()), "ActionDispatched")
        .into_iter()
        .map(|event| {
            assert_eq!(event["executor"], "slurm", "{event}");
            assert_eq!(event["attempt"], 1, "{event}");
            let outputs = common::string_array(&event["outputs"]);
            (
                outputs[0].clone(),
                common::str_field(event, "id").to_owned(),
            )
        })
        .collect::<std::collections::BTreeMap<String, String>>();
    assert_eq!(dispatched.len(), 8, "{dispatched:?}");
    for (partition, job) in &ran {
        assert_eq!(dispatched.get(partition), Some(job), "{dispatched:?}");
    }
    for id in dispatched.values() {
        let known = Command::new("squeue")
            .args(["-h", "-t", "all", "-j", id, "-o", "%i %T"])
            .output()
            .expect("run squeue");
        let text = String::from_utf8_lossy(&known.stdout);
        assert!(
            text.starts_with(&format!("{id} ")),
            "Slurm does not know job {id}: {text}"
        );
    }
    // `history` and `logs` point at it, in text and JSON.
    let id = &dispatched["b/n=3"];
    let history = p.cairn(&["history", "b/n=3"]);
    history.assert_code(0);
    assert!(
        history
            .stdout
            .contains(&format!("  ran in   Slurm job {id}\n")),
        "{}",
        history.stdout
    );
    let json = p.cairn(&["history", "b/n=3", "--json"]).json_lines();
    assert_eq!(json[0]["dispatched"]["executor"], "slurm", "{}", json[0]);
    assert_eq!(json[0]["dispatched"]["id"], id.as_str(), "{}", json[0]);
    let logs = p.cairn(&["logs", "b/n=3"]);
    logs.assert_code(0);
    assert!(
        logs.stderr.contains(&format!(") in Slurm job {id}, key ")),
        "{}",
        logs.stderr
    );
    let log = p.cairn(&["log", "--kind", "ActionDispatched", "--partition", "b/n=3"]);
    assert!(
        log.stdout
            .contains(&format!("attempt 1 runs in Slurm job {id}")),
        "{}",
        log.stdout
    );
}

#[test]
fn an_action_built_locally_is_never_submitted() {
    let Some(_turn) = turn() else { return };
    let p = Project::with_graph(&graph("none"));
    let local = p.build(&["--executor", "local", "a/n=1", "b/n=2"]);
    local.assert_code(0);
    local.assert_counts(3, 3, 0, 0, 0);
    let before = ran(&p);
    assert_eq!(before.len(), 2);
    assert!(before.iter().all(|(_, job)| job.is_empty()), "{before:?}");

    let mixed = p.build(&["--executor", "slurm"]);
    mixed.assert_code(0);
    mixed.assert_counts(8, 5, 3, 0, 0);
    let after = ran(&p);
    let submitted: Vec<&(String, String)> = after[before.len()..].iter().collect();
    let refs: Vec<&str> = submitted.iter().map(|(r, _)| r.as_str()).collect();
    let mut sorted = refs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["a/n=3", "a/n=4"], "only the a jobs not built ran");
    assert!(
        submitted.iter().all(|(_, job)| job.parse::<u64>().is_ok()),
        "{submitted:?}"
    );
}

/// The failure line of `partition`'s action (its error and stderr tail).
fn failure_of(build: &common::Build, partition: &str) -> (String, Vec<String>) {
    let action = build.action_for(partition);
    (
        action["error"].as_str().unwrap_or_default().to_owned(),
        action["stderr_tail"]
            .as_array()
            .map(|lines| {
                lines
                    .iter()
                    .map(|line| line.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default(),
    )
}

#[test]
fn a_failing_job_is_reported_as_locally_and_keep_going_builds_the_rest() {
    let Some(_turn) = turn() else { return };
    let through = Project::with_graph(&graph("2"));
    let local = Project::with_graph(&graph("2"));
    let failed = through.build(&["--keep-going"]);
    failed.assert_code(1);
    failed.assert_counts(8, 6, 0, 1, 1);
    let locally = local.build(&["--keep-going", "--executor", "local"]);
    locally.assert_code(1);
    locally.assert_counts(8, 6, 0, 1, 1);
    let (error, tail) = failure_of(&failed, "a/n=2");
    assert!(error.contains("exited with status 7"), "{error}");
    assert_eq!(
        (error, tail),
        failure_of(&locally, "a/n=2"),
        "the failure reads as the local runner's"
    );
    // Its stderr is in the store, as for a local job, and the failed run
    // names its Slurm job (the one the job saw).
    let id = ran(&through)
        .into_iter()
        .find(|(partition, _)| partition == "a/n=2")
        .map(|(_, id)| id)
        .expect("a/n=2 ran");
    let logs = through.cairn(&["logs", "a/n=2"]);
    logs.assert_code(0);
    assert!(logs.stdout.contains("boom on a/n=2"), "{}", logs.stdout);
    assert!(
        logs.stderr.contains(&format!(" in Slurm job {id}, key ")),
        "{}",
        logs.stderr
    );
    let history = through.cairn(&["history", "a/n=2", "--json"]).json_lines();
    assert_eq!(history[0]["type"], "failure", "{}", history[0]);
    assert_eq!(
        history[0]["dispatched"]["id"],
        id.as_str(),
        "{}",
        history[0]
    );
    let text = through.cairn(&["history", "a/n=2"]);
    assert!(
        text.stdout
            .contains(&format!("  ran in   Slurm job {id}\n")),
        "{}",
        text.stdout
    );
    // Without --keep-going the build stops after the failure.
    let again = through.build(&[]);
    again.assert_code(1);
    assert_eq!(again.count("failed"), 1);
}

/// How many jobs wrote their `started-<slurm job id>` file.
fn started(p: &Project) -> usize {
    std::fs::read_dir(p.path())
        .expect("read the project")
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("started-"))
        .count()
}

#[test]
fn ctrl_c_cancels_every_slurm_job_of_cairn() {
    let Some(_turn) = turn() else { return };
    let p = Project::with_graph(
        r#"
[executor]
kind = "slurm"
batch = 1

[datasets.slow]
[dimensions.n]
values = ["1", "2", "3", "4", "5", "6"]

[jobs.slow]
outputs = ["slow/n={n}"]
run = ["sh", "-c", "trap 'echo half > \"$CAIRN_OUT/x\"; exit 0' TERM; touch started-$SLURM_JOB_ID; sleep 120 & wait; echo done > \"$CAIRN_OUT/x\""]
"#,
    );
    // The job traps SIGTERM and exits 0 with half an output: what a shell
    // does by itself when Slurm kills its `sleep` before it (Slurm signals
    // a job's processes one by one), which left `data/slow/n=1` visible now
    // and then. An attempt cancelled is never stored, whatever its status.
    let build = Background::start(p.path(), &["build", "-j", "6"]);
    // A failed assertion still stops the build (and so its Slurm jobs).
    struct Interrupt(u32);
    impl Drop for Interrupt {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-INT", &self.0.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
    let _interrupt = Interrupt(build.child.id());
    // Until a job runs on each node (the others wait in the queue).
    let deadline = Instant::now() + Duration::from_secs(60);
    while started(&p) < 2 {
        assert!(Instant::now() < deadline, "no Slurm job started");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        slurm_jobs_under(p.path()).len() >= 2,
        "a Slurm job runs on each node"
    );
    build.signal("INT");
    let (code, stderr, _) = build.wait(Duration::from_secs(60));
    assert_eq!(code, 130, "{stderr}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = slurm_jobs_under(p.path());
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Slurm jobs of cairn left after Ctrl-C: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for n in 1..=6 {
        assert!(
            !p.file(&format!("data/slow/n={n}")).exists(),
            "no output is visible"
        );
    }
    assert!(
        p.log(&["--kind", "ActionSucceeded"]).is_empty(),
        "nothing is recorded as built"
    );
}

/// A Slurm job that Slurm ends (`scancel` from outside, as an
/// administrator or a preemption does) is retried even when its job exits
/// 0 after the SIGTERM: here the job traps it and writes half an output.
/// The retry builds the whole one. Before, the half was stored as built.
#[test]
fn a_job_slurm_ends_is_retried_even_if_it_then_exits_0() {
    let Some(_turn) = turn() else { return };
    let p = Project::with_graph(
        r#"
[executor]
kind = "slurm"

[datasets.h]
[jobs.h]
outputs = ["h"]
retries = 1
retry_backoff = "200ms"
run = ["sh", "-c", "if [ -e first ]; then echo whole > \"$CAIRN_OUT/x\"; exit 0; fi; trap 'echo half > \"$CAIRN_OUT/x\"; exit 0' TERM; touch first; sleep 120 & wait"]
"#,
    );
    let build = Background::start(p.path(), &["build"]);
    common::wait_for(&p.file("first"));
    let jobs = slurm_jobs_under(p.path());
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let id = jobs[0].split_whitespace().next().expect("a job id");
    let status = Command::new("scancel")
        .arg(id)
        .status()
        .expect("run scancel");
    assert!(status.success(), "scancel {id}");
    let (code, stderr, _) = build.wait(Duration::from_secs(90));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(p.read_string("data/h/x"), "whole\n");
    let failed: Vec<String> = p
        .log(&["--kind", "ActionFailed"])
        .iter()
        .filter_map(|event| event["error"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("retrying"), "{failed:?}");
    no_jobs_left_under(p.path());
}

/// Slurm ends a job with SIGCONT to every process of it, then SIGTERM to
/// each, the job before its worker. A job that traps SIGTERM and exits 0
/// can end before its worker hears of its own SIGTERM; the SIGCONT
/// announced it, so the worker reports the attempt stopped (retried, never
/// stored). A SIGCONT alone (a resumed job) stops nothing. Needs no Slurm:
/// the signals go as slurmstepd sends them, with a pause before the
/// worker's SIGTERM, as when slurmstepd lost its CPU to the woken job.
/// Before, the worker reported the half-made output as a success.
#[test]
fn a_job_exiting_0_between_slurms_sigcont_and_its_workers_sigterm_is_reported_stopped() {
    for slurm_ends_it in [true, false] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let spec = serde_json::json!({
            "version": 1,
            "label": "job h (h)",
            "argv": ["sh", "-c", "trap 'echo half > x; exit 0' TERM; echo $$ > pid; \
                while [ ! -e go ]; do sleep 0.05; done; echo whole > x"],
            "cwd": dir.path(),
            "passed": [],
            "secret_names": [],
            "extra": [],
            "stdout": dir.path().join("stdout"),
            "stderr": dir.path().join("stderr"),
            "run_id": "test-1",
            "timeout_ms": null,
            "outcome": dir.path().join("outcome.json"),
        });
        let spec_path = dir.path().join("worker.json");
        std::fs::write(&spec_path, spec.to_string()).expect("write the spec");
        let worker = Background::start(
            dir.path(),
            &["worker", "run", spec_path.to_str().expect("a UTF-8 path")],
        );
        common::wait_for(&dir.path().join("pid"));
        let job = std::fs::read_to_string(dir.path().join("pid")).expect("the job's pid");
        let kill = |signal: &str| {
            let status = Command::new("kill")
                .args([&format!("-{signal}"), job.trim()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -{signal} {job}");
        };
        worker.signal("CONT");
        kill("CONT");
        if slurm_ends_it {
            kill("TERM");
            common::wait_for(&dir.path().join("x"));
            std::thread::sleep(Duration::from_millis(300));
            worker.signal("TERM");
        } else {
            std::fs::write(dir.path().join("go"), "").expect("write go");
        }
        let (_, stderr, _) = worker.wait(Duration::from_secs(30));
        let outcome: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("outcome.json")).expect("the worker's outcome"),
        )
        .expect("an outcome in JSON");
        let made = std::fs::read_to_string(dir.path().join("x")).expect("the job's output");
        assert_eq!(made, if slurm_ends_it { "half\n" } else { "whole\n" });
        assert_eq!(outcome["code"], 0, "{outcome} {stderr}");
        assert_eq!(
            outcome["stopped"], slurm_ends_it,
            "Slurm ended the job: {slurm_ends_it}; {outcome} {stderr}"
        );
    }
}

/// A project of one job `a` (`run = ["true"]`) under `executor` (the
/// `[executor]` table's lines, or nothing) with `job_extra` lines in the
/// job: its `cairn build` is refused with `message`. Returns the project.
fn refused(executor: &str, job_extra: &str, message: &str) -> Project {
    let table = if executor.is_empty() {
        String::new()
    } else {
        format!("[executor]\n{executor}\n")
    };
    let p = Project::with_graph(&format!(
        "\n{table}[datasets.a]\n[jobs.a]\noutputs = [\"a\"]\nrun = [\"true\"]\n{job_extra}"
    ));
    p.cairn(&["build"]).assert_usage_error(message);
    p
}

#[test]
fn bad_executor_values_name_the_file_and_field() {
    refused(
        "kind = \"pbs\"",
        "",
        "cairn.toml:3: executor.kind: \"pbs\" is not an executor",
    );
    let p = refused(
        "",
        "resources = { cpus = 2, mem = \"lots\" }\n",
        "jobs.a.resources.mem: \"lots\" is not an amount of memory",
    );
    let bad_flag = p.cairn(&["build", "--executor", "pbs"]);
    bad_flag.assert_code(2);
    refused(
        "kind = \"slurm\"\nheartbeat_timeout = \"1s\"",
        "",
        "cairn.toml:4: executor.heartbeat_timeout: \"1s\" is too short: at least 4s",
    );
}

/// Runs `.ci/services/slurm.sh ARGS`, panicking on failure.
fn service(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/services/slurm.sh");
    let output = Command::new("bash")
        .arg(&script)
        .args(args)
        .output()
        .expect("run .ci/services/slurm.sh");
    assert!(
        output.status.success(),
        "slurm.sh {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_node_killed_mid_build_loses_nothing_and_its_checkpointed_job_resumes_on_the_other() {
    let Some(_turn) = turn() else { return };
    let p = Project::with_graph(
        r#"
[executor]
kind = "slurm"
batch = 1
heartbeat_timeout = "5s"

[datasets.w]
[dimensions.n]
values = ["1", "2", "3", "4"]

[jobs.w]
outputs = ["w/n={n}"]
retries = 2
retry_backoff = "200ms"
run = ["sh", "-c", "r=none; [ -n \"$CAIRN_RESUME\" ] && r=$(cat \"$CAIRN_RESUME\"); echo \"$CAIRN_OUTPUT_REF_0 $SLURMD_NODENAME $r\" >> ran.log; echo '{\"step\":1}' > \"$CAIRN_CHECKPOINT\"; sleep 4; echo \"$CAIRN_OUTPUT_REF_0 from=$r\" > \"$CAIRN_OUT/x\""]
"#,
    );
    // The node comes back whatever happens. Slurm was never told it was
    // lost: the job cancelled on it stays "completing" until the node is
    // marked down, which clears it (start-node then resumes it).
    struct Revive;
    impl Drop for Revive {
        fn drop(&mut self) {
            let _ = Command::new("scontrol")
                .args(["update", "nodename=n1", "state=down", "reason=cairn-test"])
                .status();
            service(&["start-node", "n1"]);
        }
    }
    let _revive = Revive;
    let build = Background::start(p.path(), &["build", "-j", "4"]);
    let on_n1 = |text: &str| {
        text.lines()
            .find(|line| line.split(' ').nth(1) == Some("n1"))
            .map(|line| line.split(' ').next().unwrap_or_default().to_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        let text = std::fs::read_to_string(p.file("ran.log")).unwrap_or_default();
        if let Some(victim) = on_n1(&text) {
            break victim;
        }
        assert!(Instant::now() < deadline, "nothing ran on n1: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Let its checkpoint be recorded, then kill the node with its jobs.
    // Slurm is not told: it would mark the node down only after
    // SlurmdTimeout (300 s); the heartbeat notices within 5 s.
    std::thread::sleep(Duration::from_millis(1500));
    service(&["kill-node", "n1"]);
    let killed = Instant::now();
    let (code, stderr, _) = build.wait(Duration::from_secs(120));
    assert_eq!(code, 0, "{stderr}");
    // The bound (5 s, checked every second), the retry's backoff and
    // submission, and the rest of the 4 s jobs on n2: well under a
    // minute, where SlurmdTimeout alone would take 300 s.
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(45),
        "the lost node was noticed only after {took:?}"
    );
    let lost = lost_attempts(&p);
    assert!(
        lost.iter().any(|error| error.contains(" on n1 was lost")),
        "{lost:?}"
    );
    let ran = std::fs::read_to_string(p.file("ran.log")).unwrap_or_default();
    // The victim ran again, on n2, from its checkpoint.
    assert!(
        ran.lines()
            .any(|line| line == format!("{victim} n2 {{\"step\":1}}")),
        "{victim} did not resume on n2:\n{ran}"
    );
    assert_eq!(
        p.read_string(&format!("data/{victim}/x")),
        format!("{victim} from={{\"step\":1}}\n")
    );
    for n in 1..=4 {
        assert!(
            p.file(&format!("data/w/n={n}/x")).is_file(),
            "w/n={n}\n{ran}"
        );
    }
    p.cairn(&["store", "verify"]).assert_code(0);
    p.cairn(&["replay", "--check"]).assert_code(0);
    let again = p.build(&[]);
    again.assert_counts(4, 0, 4, 0, 0);
}

/// The errors of the attempts failed as lost (no heartbeat).
fn lost_attempts(p: &Project) -> Vec<String> {
    p.log(&["--kind", "ActionFailed"])
        .iter()
        .filter_map(|event| event["error"].as_str())
        .filter(|error| error.contains("gave no heartbeat"))
        .map(str::to_owned)
        .collect()
}

/// A worker whose process is frozen (SIGSTOP: alive for Slurm, its job
/// still running) is noticed within `heartbeat_timeout`: its Slurm job is
/// cancelled, the attempt fails as lost, and the retry builds the action.
/// Before the heartbeat the build waited for the frozen worker forever.
fn a_frozen_worker_is_noticed_and_its_action_retried(p: &Project, pid_file: &Path) {
    // The worker's pid is the job's parent; stopped, thawed at the end.
    struct Thaw(std::path::PathBuf);
    impl Drop for Thaw {
        fn drop(&mut self) {
            if let Ok(pid) = std::fs::read_to_string(&self.0) {
                let _ = Command::new("kill")
                    .args(["-CONT", pid.trim()])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
    let _thaw = Thaw(pid_file.to_owned());
    let build = Background::start(p.path(), &["build"]);
    common::wait_for(pid_file);
    let pid = loop {
        let text = std::fs::read_to_string(pid_file).unwrap_or_default();
        if text.ends_with('\n') {
            break text.trim().to_owned();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -STOP {pid}");
    let frozen = Instant::now();
    let (code, stderr, _) = build.wait(Duration::from_secs(90));
    assert_eq!(code, 0, "{stderr}");
    let took = frozen.elapsed();
    // The bound (5 s, looked at every second), the backoff, a Slurm job
    // for the retry and its run.
    assert!(
        took < Duration::from_secs(30),
        "the frozen worker was noticed only after {took:?}"
    );
    let lost = lost_attempts(p);
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(lost[0].contains("heartbeat_timeout = 5s"), "{}", lost[0]);
    // Built by the retry: the frozen attempt's job still sleeps.
    assert_eq!(p.read_string("data/f/x"), "attempt 2\n");
    let again = p.build(&[]);
    again.assert_counts(1, 0, 1, 0, 0);
}

/// The job of `f`: its first attempt records its worker's pid in
/// `pid_file` and sleeps long; the second writes its output at once.
fn frozen_job(pid_file: &Path) -> String {
    let pid = pid_file.display();
    format!(
        r#"
[datasets.f]
[jobs.f]
outputs = ["f"]
retries = 1
retry_backoff = "200ms"
run = ["sh", "-c", "if [ ! -e {pid} ]; then echo $PPID > {pid}.new; mv {pid}.new {pid}; sleep 60; echo 'attempt 1' > \"$CAIRN_OUT/x\"; exit 0; fi; echo 'attempt 2' > \"$CAIRN_OUT/x\""]
"#
    )
}

#[test]
fn a_frozen_worker_is_noticed_within_the_heartbeat_timeout_and_retried() {
    let Some(_turn) = turn() else { return };
    let p = Project::with_graph("");
    let pid_file = p.file("worker.pid");
    p.write(
        "cairn.toml",
        format!(
            "\n[executor]\nkind = \"slurm\"\nheartbeat_timeout = \"5s\"\n{}",
            frozen_job(&pid_file)
        ),
    );
    a_frozen_worker_is_noticed_and_its_action_retried(&p, &pid_file);
}

/// The same without a shared filesystem: the worker beats through the
/// remote cache. (The job keeps its pid file outside the project, in a
/// directory of this host's that the nodes, on this host too, see.)
#[test]
fn without_a_shared_filesystem_a_frozen_worker_is_noticed_and_retried() {
    let Some(_turn) = turn() else { return };
    let Some(cache) = NginxCache::start() else {
        return;
    };
    let outside = tempfile::tempdir().unwrap();
    let pid_file = outside.path().join("worker.pid");
    let p = Project::with_graph(&format!(
        "\n[executor]\nkind = \"slurm\"\ndata = \"cache\"\nheartbeat_timeout = \"5s\"\n\n[cache]\nurl = \"{}\"\n{}",
        cache.url,
        frozen_job(&pid_file)
    ));
    a_frozen_worker_is_noticed_and_its_action_retried(&p, &pid_file);
}

#[test]
fn a_coordinator_killed_mid_build_has_its_orphans_cancelled_by_the_next() {
    let Some(_turn) = turn() else { return };
    let p = Project::with_graph(
        r#"
[executor]
kind = "slurm"
batch = 1

[datasets.slow]
[datasets.quick]
[dimensions.n]
values = ["1", "2", "3"]

[jobs.slow]
outputs = ["slow/n={n}"]
run = ["sh", "-c", "touch started-$SLURM_JOB_ID; sleep 120; echo done > \"$CAIRN_OUT/x\""]

[jobs.quick]
outputs = ["quick"]
run = ["sh", "-c", "echo quick > \"$CAIRN_OUT/x\""]
"#,
    );
    let build = Background::start(p.path(), &["build", "-j", "3", "slow/n={n}"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Until a job runs on each node (the third waits in the queue).
    while started(&p) < 2 {
        assert!(Instant::now() < deadline, "no Slurm job started");
        std::thread::sleep(Duration::from_millis(100));
    }
    build.signal("KILL");
    let (code, _, _) = build.wait(Duration::from_secs(10));
    assert_eq!(code, -1, "cairn was killed");
    assert!(
        slurm_jobs_under(p.path()).len() >= 2,
        "a killed coordinator leaves its Slurm jobs"
    );
    // The next build finds and cancels them before it submits its own.
    let since = Instant::now();
    let next = p.build(&["quick"]);
    next.assert_code(0);
    // Its job did not wait behind the orphans (they sleep 120 s).
    assert!(
        since.elapsed() < Duration::from_secs(60),
        "the next build waited {:?} behind the orphans",
        since.elapsed()
    );
    next.assert_counts(1, 1, 0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = slurm_jobs_under(p.path());
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "orphans left: {left:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!p.file("data/slow/n=1").exists());
}
#[test]
fn podcast_30x30_through_slurm_is_byte_identical_to_local_and_rebuilds_nothing() {
    let Some(_turn) = turn() else { return };
    let (_, total) = built_through_slurm_as_locally(30, 30);
    assert_eq!(total, 30 * 30 * 2 + 30);
}

/// A Bazel HTTP cache (nginx with WebDAV, `.ci/services/nginx-cache.sh`)
/// on a free loopback port, stopped when dropped; `None` (with a notice)
/// when nginx is not installed.
struct NginxCache {
    root: tempfile::TempDir,
    url: String,
}

impl NginxCache {
    fn start() -> Option<NginxCache> {
        if Command::new("nginx").arg("-v").output().is_err() {
            #[expect(clippy::print_stderr, reason = "the notice of a skipped test")]
            {
                eprintln!("SKIPPED: nginx is not installed (.ci/run installs it)");
            }
            return None;
        }
        let root = tempfile::tempdir().expect("a directory for nginx");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/services/nginx-cache.sh");
        let output = Command::new("bash")
            .arg(&script)
            .args(["start", root.path().to_str().unwrap()])
            .output()
            .expect("run nginx-cache.sh");
        assert!(
            output.status.success(),
            "nginx-cache.sh start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        Some(NginxCache {
            root,
            url: format!("http://127.0.0.1:{port}"),
        })
    }
}

impl Drop for NginxCache {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/services/nginx-cache.sh");
        let _ = Command::new("bash")
            .arg(&script)
            .args(["stop", self.root.path().to_str().unwrap()])
            .output();
    }
}

/// A worker binary for `[executor] worker` that runs this cairn in a mount
/// namespace where `hidden` is an empty tmpfs: a worker that reads or
/// writes anything of the project there finds nothing, and what it writes
/// vanishes. (The tests run as root, as the cluster's SlurmUser.)
fn worker_hiding(hidden: &Path, dir: &Path) -> std::path::PathBuf {
    let wrapper = dir.join("cairn-hiding-the-project");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec unshare -m sh -c 'mount -t tmpfs none \"$0\" && exec \"$@\"' '{}' '{}' \"$@\"\n",
            hidden.display(),
            env!("CARGO_BIN_EXE_cairn")
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// An empty project whose directory the nodes do not see, and the worker
/// that hides it ([`worker_hiding`]), kept in the returned directory.
fn hidden_from_the_nodes() -> (Project, std::path::PathBuf, tempfile::TempDir) {
    let p = Project::empty();
    let bin = tempfile::tempdir().unwrap();
    let worker = worker_hiding(&p.path().canonicalize().unwrap(), bin.path());
    (p, worker, bin)
}

/// Without a shared filesystem every file goes through the cache: a
/// 192 MiB output up from its worker, down to the coordinator, and down
/// again to the next job's worker as its input, then that job's copy up.
/// Each is streamed (hashed as read, sent in parts to a directory cache,
/// written as it arrives), so no worker and not the coordinator holds more
/// than 96 MiB of memory that is no file's. Before, each held every blob
/// whole, twice on its way up: about 400 MiB.
#[test]
fn without_a_shared_filesystem_large_files_go_through_the_cache_streamed() {
    let Some(_turn) = turn() else { return };
    let cache = tempfile::tempdir().unwrap();
    let (p, worker, _bin) = hidden_from_the_nodes();
    p.write(
        "cairn.toml",
        format!(
            r#"
[executor]
kind = "slurm"
data = "cache"
worker = "{}"

[cache]
url = "file://{}"

[datasets.a]
[datasets.b]
[jobs.a]
outputs = ["a"]
run = ["sh", "-c", "head -c 201326592 /dev/urandom > \"$CAIRN_OUT/x\""]
[jobs.b]
outputs = ["b"]
inputs = ["a"]
run = ["sh", "-c", "cp \"$CAIRN_IN/x\" \"$CAIRN_OUT/x\""]
"#,
            worker.display(),
            cache.path().display()
        ),
    );
    let mut build = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["build", "--json"])
        .current_dir(p.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start cairn build");
    let anon = |pid: &str| common::status_kib(pid, "RssAnon");
    let (mut coordinator, mut workers, mut seen) = (0u64, 0u64, 0usize);
    let coordinator_pid = build.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(180);
    while build.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the build did not end");
        coordinator = coordinator.max(anon(&coordinator_pid).unwrap_or(0));
        let found = Command::new("pgrep")
            .args(["-f", "cairn worker cached"])
            .output()
            .expect("run pgrep");
        for pid in String::from_utf8_lossy(&found.stdout).split_whitespace() {
            if let Some(held) = anon(pid) {
                seen += 1;
                workers = workers.max(held);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let output = build.wait_with_output().expect("the build's output");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(seen > 0, "no worker was seen");
    assert!(
        workers <= 96 << 10,
        "a worker held {} MiB of memory moving a 192 MiB file",
        workers >> 10
    );
    assert!(
        coordinator <= 96 << 10,
        "the coordinator held {} MiB of memory moving a 192 MiB file",
        coordinator >> 10
    );
    common::assert_same_file(
        &p.file("data/a/x"),
        &p.file("data/b/x"),
        "b's copy differs from a",
    );
    // Each worker removed Slurm's log of its job, empty (in the nodes'
    // /tmp: one file per Slurm job would pile up there).
    let dispatched = p.log(&["--kind", "ActionDispatched"]);
    assert_eq!(dispatched.len(), 2, "{dispatched:?}");
    for event in &dispatched {
        let id = event["id"].as_str().expect("the Slurm job's id");
        let log = format!("/tmp/slurm-{id}.out");
        assert!(!Path::new(&log).exists(), "{log} was left");
    }
}

#[test]
fn without_a_shared_filesystem_a_podcast_goes_through_the_cache_and_equals_a_local_build() {
    let Some(_turn) = turn() else { return };
    let Some(cache) = NginxCache::start() else {
        return;
    };
    let local = Project::podcast(3, 4);
    let through = Project::podcast(3, 4);
    let bin = tempfile::tempdir().unwrap();
    // The nodes never see the project: its directory is empty for them.
    let worker = worker_hiding(&through.path().canonicalize().unwrap(), bin.path());
    through.append(
        "cairn.toml",
        &format!(
            "\n[executor]\nkind = \"slurm\"\ndata = \"cache\"\nworker = \"{}\"\n\n[cache]\nurl = \"{}\"\n",
            worker.display(),
            cache.url
        ),
    );
    let built_locally = local.build(&[]);
    built_locally.assert_code(0);
    let total = built_locally.count("executed");
    assert_eq!(total, 3 * 4 * 2 + 3);
    let first = through.build(&[]);
    first.assert_code(0);
    first.assert_counts(total, total, 0, 0, 0);
    assert_eq!(
        snapshot(&through.file("data")),
        snapshot(&local.file("data")),
        "the data built through Slurm and the cache is not the local build's"
    );
    // Every action ran in a Slurm job, recorded; actions ready together
    // shared Slurm jobs (batching, docs/slurm.md). Before, each action had
    // a Slurm job of its own. How many share one depends on how many are
    // ready within the gathering's 50 ms, which a loaded machine stretches
    // (13 to 19 jobs were seen under load): only that some Slurm job ran
    // more than one action is certain.
    let events = through.build_events(first.id());
    let dispatched = common::of_kind(&events, "ActionDispatched");
    assert_eq!(dispatched.len() as u64, total);
    let jobs: std::collections::BTreeSet<String> = dispatched
        .iter()
        .map(|event| event["id"].to_string())
        .collect();
    assert!(
        (jobs.len() as u64) < total,
        "{} Slurm jobs for {total} actions: {jobs:?}",
        jobs.len()
    );
    let second = through.build(&[]);
    second.assert_code(0);
    second.assert_counts(total, 0, total, 0, 0);
    no_jobs_left_under(through.path());
    // What the jobs printed came back as with the local runner.
    let logs = through.cairn(&["logs", "daily/date=2024-01-02", "--stdout"]);
    let local_logs = local.cairn(&["logs", "daily/date=2024-01-02", "--stdout"]);
    assert_eq!(logs.stdout, local_logs.stdout);
    through.cairn(&["store", "verify"]).assert_code(0);
}

#[test]
fn without_a_shared_filesystem_a_failing_job_reports_its_status_and_stderr() {
    let Some(_turn) = turn() else { return };
    let Some(cache) = NginxCache::start() else {
        return;
    };
    let p = Project::with_graph(&format!(
        r#"
[executor]
kind = "slurm"
data = "cache"

[cache]
url = "{}"

[datasets.a]
[jobs.a]
outputs = ["a"]
run = ["sh", "-c", "echo \"boom in $PWD\" >&2; exit 7"]
"#,
        cache.url
    ));
    let failed = p.build(&[]);
    failed.assert_code(1);
    let (error, tail) = failure_of(&failed, "a");
    assert!(error.contains("exited with status 7"), "{error}");
    assert_eq!(tail.len(), 1, "{tail:?}");
    assert!(
        tail[0].starts_with("boom in /tmp/cairn-worker-") && tail[0].ends_with("/work"),
        "the job ran in the worker's scratch, not the project: {tail:?}"
    );
    let logs = p.cairn(&["logs", "a", "--stderr"]);
    assert!(logs.stdout.starts_with("boom in "), "{}", logs.stdout);
}

#[test]
fn data_cache_without_a_remote_cache_is_a_usage_error() {
    refused(
        "kind = \"slurm\"\ndata = \"cache\"",
        "",
        "executor.data = \"cache\" needs a remote cache",
    );
    refused(
        "data = \"nfs\"",
        "",
        "cairn.toml:3: executor.data: \"nfs\" is not a data mode",
    );
}

/// `data = "shared"` (the default) on nodes that do not see the project:
/// each worker says so, naming the path, and the build fails both kinds of
/// action at once (no retry) instead of submitting workers forever.
#[test]
fn nodes_that_do_not_see_the_shared_directory_fail_the_build_clearly_and_at_once() {
    let Some(_turn) = turn() else { return };
    let (p, worker, _bin) = hidden_from_the_nodes();
    p.write(
        "cairn.toml",
        format!(
            r#"
[executor]
kind = "slurm"
worker = "{}"

[datasets.a]
[datasets.b]

[jobs.a]
outputs = ["a"]
retries = 3
run = ["sh", "-c", "echo a > \"$CAIRN_OUT/x\""]

[jobs.b]
outputs = ["b"]
retries = 3
resources = {{ cpus = 1 }}
run = ["sh", "-c", "echo b > \"$CAIRN_OUT/x\""]
"#,
            worker.display()
        ),
    );
    let since = Instant::now();
    let build = Background::start(p.path(), &["build", "--keep-going", "--json"]);
    let (code, stderr, _) = build.wait(Duration::from_secs(90));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        since.elapsed() < Duration::from_secs(60),
        "took {:?}",
        since.elapsed()
    );
    let data = p.path().canonicalize().unwrap().join("data");
    let failed = p.log(&["--kind", "ActionFailed"]);
    assert_eq!(failed.len(), 2, "one failure each, no retry: {failed:?}");
    for event in &failed {
        let error = event["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!("{}/", data.display()))
                && error.contains(" is not found on node n")
                && error.contains("the nodes do not share it")
                && error.contains("data = \"cache\""),
            "{error}"
        );
    }
    assert!(p.log(&["--kind", "ActionRetrying"]).is_empty());
    // Two workers for `a` (BLIND_WORKERS) and one Slurm job for `b`.
    let output = Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%i %T %Z"])
        .output()
        .expect("run squeue");
    let under = p.path().canonicalize().unwrap();
    let submitted: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| {
            line.split_whitespace()
                .nth(2)
                .is_some_and(|work| Path::new(work).starts_with(&under))
        })
        .map(str::to_owned)
        .collect();
    assert!(submitted.len() <= 3, "{submitted:?}");
}
