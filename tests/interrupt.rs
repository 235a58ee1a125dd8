//! Ctrl-C (SIGINT) during a build stops the running jobs, records what
//! finished, exits 130, and the next build runs only what was not recorded.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

fn log_events(dir: &Path) -> Vec<Value> {
    let output = Command::new(CAIRN)
        .args(["log", "--json"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// `cairn build --json` in `dir`, which must succeed: its summary line.
fn build_json(dir: &Path) -> Value {
    let output = Command::new(CAIRN)
        .args(["build", "--json"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn sigint_stops_jobs_records_what_finished_and_the_next_build_resumes() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("pods");
    let generate = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/podcast/generate");
    assert!(
        Command::new("sh")
            .arg(&generate)
            .arg(&dir)
            .args(["4", "4"])
            .status()
            .unwrap()
            .success()
    );
    // Slow every clean action down so the interrupt lands mid-build.
    let script = dir.join("jobs/clean.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    std::fs::write(&script, format!("sleep 0.3\n{text}")).unwrap();

    let child = Command::new(CAIRN)
        .args(["build", "--json", "-j", "2"])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until at least one clean action has been recorded, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let started_clean = dir.join("data/clean").exists();
        if started_clean || Instant::now() > deadline {
            break;
        }
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cairn took too long to stop"
    );
    assert_eq!(
        output.status.code(),
        Some(130),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true);
    let total = summary["total"].as_u64().unwrap();
    assert_eq!(total, 4 * 4 * 2 + 4);
    let done = summary["executed"].as_u64().unwrap();
    assert!(
        done < total,
        "the interrupt came too late to test anything: {summary}"
    );

    let events = log_events(&dir);
    let finished = events
        .iter()
        .find(|event| event["kind"] == "BuildFinished")
        .unwrap();
    assert_eq!(finished["interrupted"], true);
    let succeeded = events
        .iter()
        .filter(|event| event["kind"] == "ActionSucceeded")
        .count() as u64;
    assert_eq!(
        succeeded, done,
        "every executed action reported is recorded"
    );

    // No leftover job processes and no staging directories.
    assert!(!dir.join("data/.cairn-tmp").exists());

    // The next build runs exactly the actions that were not recorded.
    let summary = build_json(&dir);
    assert_eq!(summary["executed"].as_u64().unwrap(), total - done);
    assert_eq!(summary["cached"].as_u64().unwrap(), done);
}

mod common;

use common::{Background, Project, processes_in, wait_for};

/// A job that ignores SIGTERM, as do the `sleep`s it starts (`trap ''` is
/// inherited across exec).
const STUBBORN: &str = r#"
[datasets.stubborn]
version = "1.0.0"
[dimensions.i]
values = ["1"]
[jobs.stubborn]
outputs = ["stubborn/i={i}"]
run = ["sh", "-c", "trap '' TERM; touch started; while :; do sleep 1; done"]
"#;

/// Issue 28 B2: one Ctrl-C sends SIGTERM; a job that ignores it is
/// SIGKILLed after the grace, said on stderr, and cairn exits 130 (it hung
/// before, with no message, until kill -9).
#[test]
fn a_job_ignoring_sigterm_is_killed_after_the_grace() {
    let p = Project::with_graph(STUBBORN);
    let build = Background::start(p.path(), &["build"]);
    wait_for(&p.file("started"));
    build.signal("INT");
    let (code, stderr, waited) = build.wait(Duration::from_secs(20));
    assert_eq!(code, 130, "{stderr}");
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(9),
        "stopped after {waited:?}, not after the 5 s grace; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("cairn: interrupted: stopping 1 running job (SIGTERM; SIGKILL in 5s, or at once on a second interrupt)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "cairn: job stubborn (stubborn/i=1) did not exit within 5s of SIGTERM: killed (SIGKILL)"
        ),
        "{stderr}"
    );
    assert!(
        processes_in(p.path()).is_empty(),
        "{:?}",
        processes_in(p.path())
    );
    assert!(!p.file("data/stubborn").exists());
}

/// A second Ctrl-C means now: the job is SIGKILLed at once.
#[test]
fn a_second_interrupt_kills_the_jobs_at_once() {
    let p = Project::with_graph(STUBBORN);
    let build = Background::start(p.path(), &["build"]);
    wait_for(&p.file("started"));
    build.signal("INT");
    std::thread::sleep(Duration::from_millis(300));
    let second = Instant::now();
    build.signal("INT");
    let (code, stderr, _) = build.wait(Duration::from_secs(20));
    assert_eq!(code, 130, "{stderr}");
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "stopped {:?} after the second interrupt; stderr:\n{stderr}",
        second.elapsed()
    );
    assert!(
        stderr.contains("cairn: interrupted again: killing 1 running job now (SIGKILL)"),
        "{stderr}"
    );
    assert!(
        processes_in(p.path()).is_empty(),
        "{:?}",
        processes_in(p.path())
    );
    // SIGTERM to cairn counts as an interrupt too.
    std::fs::remove_file(p.file("started")).expect("remove started");
    let build = Background::start(p.path(), &["build"]);
    wait_for(&p.file("started"));
    build.signal("TERM");
    // Two signals of one kind sent together may arrive as one.
    std::thread::sleep(Duration::from_millis(300));
    build.signal("TERM");
    let (code, stderr, waited) = build.wait(Duration::from_secs(20));
    assert_eq!(code, 130, "{stderr}");
    assert!(waited < Duration::from_secs(3), "{waited:?}\n{stderr}");
}

/// Issue 26 §6: Ctrl-C during a retry's backoff ends the build at once
/// (it waited out the whole backoff: an hour here).
#[test]
fn an_interrupt_during_a_retry_backoff_returns_at_once() {
    let p = Project::with_graph(
        r#"
[datasets.flaky]
version = "1.0.0"
[dimensions.i]
values = ["1"]
[jobs.flaky]
outputs = ["flaky/i={i}"]
run = ["sh", "-c", "touch failed; exit 1"]
retries = 3
retry_backoff = "1h"
"#,
    );
    let build = Background::start(p.path(), &["build"]);
    wait_for(&p.file("failed"));
    // Let the attempt end and the backoff begin.
    std::thread::sleep(Duration::from_millis(500));
    build.signal("INT");
    let (code, stderr, waited) = build.wait(Duration::from_secs(20));
    assert_eq!(code, 130, "{stderr}");
    assert!(waited < Duration::from_secs(3), "{waited:?}\n{stderr}");
    assert!(
        stderr.contains("job flaky (flaky/i=1) was interrupted"),
        "{stderr}"
    );
    let events = log_events(p.path());
    let started: Vec<&Value> = events
        .iter()
        .filter(|event| event["kind"] == "ActionStarted")
        .collect();
    assert_eq!(started.len(), 1, "no second attempt starts: {started:?}");
    let failed: Vec<&str> = events
        .iter()
        .filter(|event| event["kind"] == "ActionFailed")
        .filter_map(|event| event["error"].as_str())
        .collect();
    assert_eq!(
        failed,
        [
            "job flaky (flaky/i=1) exited with status 1 (attempt 1 of 4; retrying)",
            "job flaky (flaky/i=1) was interrupted"
        ]
    );
}

/// A job that exits 0 after the interrupt's SIGTERM (here it traps it and
/// writes half an output) is not stored: cairn told it to stop, so its exit
/// status proves nothing. Its output is not materialized, and the next
/// build runs it again. Stored as built before.
#[test]
fn a_job_that_exits_0_after_the_interrupt_is_not_stored() {
    let p = Project::with_graph(
        r#"
[datasets.half]
version = "1.0.0"
[dimensions.i]
values = ["1"]
[jobs.half]
outputs = ["half/i={i}"]
run = ["sh", "-c", "trap 'echo half > \"$CAIRN_OUT/x\"; exit 0' TERM; touch started; [ -e quick ] || { sleep 60 & wait; }; echo whole > \"$CAIRN_OUT/x\""]
"#,
    );
    let build = Background::start(p.path(), &["build"]);
    wait_for(&p.file("started"));
    build.signal("INT");
    let (code, stderr, _) = build.wait(Duration::from_secs(20));
    assert_eq!(code, 130, "{stderr}");
    assert!(
        stderr.contains("job half (half/i=1) was interrupted"),
        "{stderr}"
    );
    assert!(!p.file("data/half").exists(), "no output is visible");
    let events = log_events(p.path());
    assert!(
        !events
            .iter()
            .any(|event| event["kind"] == "ActionSucceeded"),
        "nothing is recorded as built: {events:?}"
    );
    // The next build runs it again, to its end this time.
    std::fs::write(p.file("quick"), "").expect("write quick");
    let summary = build_json(p.path());
    assert_eq!(summary["executed"], 1, "{summary}");
    assert_eq!(
        std::fs::read_to_string(p.file("data/half/i=1/x")).unwrap(),
        "whole\n"
    );
}
