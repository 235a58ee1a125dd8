//! What `status` and `why` say while a build runs, and downstream of a
//! failed or invalidated partition (issue 26 §6).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{CAIRN, Project};

/// `src` → `a` → `b`, one partition each; `a`'s job fails on the input
/// `bad`.
const CHAIN: &str = r#"
[datasets.src]
source = "src/{p}.txt"

[dimensions.p]
values = ["x"]

[datasets.a]
[datasets.b]

[jobs.a]
outputs = ["a/p={p}"]
inputs = ["src/p={p}"]
run = ["sh", "-c", "if grep -q bad \"$CAIRN_INPUT_0\"; then echo broken >&2; exit 4; fi; cat \"$CAIRN_INPUT_0\" > \"$CAIRN_OUT/o\""]

[jobs.b]
outputs = ["b/p={p}"]
inputs = ["a/p={p}"]
run = ["sh", "-c", "cat \"$CAIRN_INPUT_0/o\" > \"$CAIRN_OUT/o\""]
"#;

fn chain() -> Project {
    let project = Project::with_graph(CHAIN);
    project.write("src/x.txt", "good\n");
    project.build(&[]).assert_counts(2, 2, 0, 0, 0);
    project
}

fn why(project: &Project, partition: &str) -> String {
    let run = project.cairn(&["why", partition]);
    run.assert_code(0);
    run.stdout.trim_end().to_owned()
}

/// `status` said `stale … input a/p=x will be rebuilt` while `why` said
/// `waiting on upstream a/p=x, which failed`. (Failed before: the status
/// reason did not name the failure.)
#[test]
fn status_and_why_agree_downstream_of_a_failure() {
    let project = chain();
    project.write("src/x.txt", "bad\n");
    let build = project.build(&["--keep-going"]);
    build.assert_code(1);
    let status = project.status(&[]);
    let (state, reason) = &status["b/p=x"];
    assert_eq!(state, "stale");
    let expected =
        "waiting on upstream a/p=x, which failed in build 2: job a (a/p=x) exited with status 4";
    assert!(reason.starts_with(expected), "status: {reason}");
    assert_eq!(why(&project, "b/p=x"), format!("b/p=x is {reason}"));
    assert_eq!(status["a/p=x"].0, "failed");
}

/// `why` on a partition whose input was invalidated read "will be rebuilt
/// if its inputs change: input … will be rebuilt". (Failed before.)
#[test]
fn an_invalidated_input_is_named_with_its_reason() {
    let project = chain();
    project
        .cairn(&["invalidate", "a/p=x", "--reason", "bad feed"])
        .assert_code(0);
    let status = project.status(&[]);
    let (state, reason) = &status["b/p=x"];
    assert_eq!(state, "stale");
    assert!(
        reason.starts_with("its input a/p=x will be rebuilt first (a/p=x was invalidated "),
        "{reason}"
    );
    assert!(
        reason.ends_with(": bad feed); it is rebuilt if that changes the input's content"),
        "{reason}"
    );
    assert_eq!(why(&project, "b/p=x"), format!("b/p=x is stale: {reason}"));
}

/// A job whose first attempt records a checkpoint and fails, and whose
/// second waits for `release`, telling the test through `running`.
const RETRIED: &str = r#"
[datasets.src]
source = "src/{p}.txt"

[dimensions.p]
values = ["x"]

[datasets.slow]

[jobs.slow]
outputs = ["slow/p={p}"]
inputs = ["src/p={p}"]
retries = 1
retry_backoff = "1s"
run = ["sh", "DIR/job.sh", "DIR"]
"#;

const JOB: &str = r#"#!/bin/sh
dir=$1
if [ ! -e "$dir/attempted" ]; then
  touch "$dir/attempted"
  echo '{"page": 1}' > "$CAIRN_CHECKPOINT.tmp" && mv "$CAIRN_CHECKPOINT.tmp" "$CAIRN_CHECKPOINT"
  sleep 0.5
  exit 1
fi
touch "$dir/running"
while [ ! -e "$dir/release" ]; do sleep 0.05; done
echo done > "$CAIRN_OUT/o"
"#;

fn wait_for(path: &std::path::Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// While a retried job runs its second attempt, `status` said `failed …
/// resumable` (the first attempt's failure). (Failed before: there was no
/// `running` state.)
#[test]
fn a_running_job_is_running_not_failed() {
    let project = Project::empty();
    let dir = project.path().display().to_string();
    project.write("cairn.toml", RETRIED.replace("DIR", &dir));
    project.write("job.sh", JOB);
    project.write("src/x.txt", "x\n");
    let mut child = Command::new(CAIRN)
        .arg("build")
        .current_dir(project.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cairn build");
    wait_for(&project.file("running"));
    // The build commits the second ActionStarted within its commit
    // interval; give it a moment (until then the partition is running
    // too: waiting to retry).
    let start = Instant::now();
    let (state, reason) = loop {
        let status = project.status(&["slow/p=x"]);
        let (state, reason) = status["slow/p=x"].clone();
        if (state == "running" && reason.contains("attempt 2, started"))
            || start.elapsed() > Duration::from_secs(10)
        {
            break (state, reason);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(state, "running", "{reason}");
    let prefix = format!(
        "job slow in build 1 (pid {}), attempt 2, started ",
        child.id()
    );
    assert!(reason.starts_with(&prefix), "{reason}");
    assert!(reason.ends_with(" ago), checkpoint 1"), "{reason}");
    let human = project.cairn(&["status"]);
    assert!(
        human
            .stdout
            .starts_with("running  slow/p=x  job slow in build 1"),
        "{}",
        human.stdout
    );
    assert!(human.stderr.ends_with(", 1 running\n"), "{}", human.stderr);
    assert!(
        why(&project, "slow/p=x").starts_with(&format!("slow/p=x is being built now: {prefix}")),
    );
    project.write("release", "");
    let exit = child.wait().expect("wait for the build");
    assert!(exit.success(), "{exit:?}");
    let status = project.status(&[]);
    assert_eq!(status["slow/p=x"].0, "built", "{status:?}");
}

/// A job that fails its first attempt and has a long backoff.
const BACKOFF: &str = r#"
[datasets.src]
source = "src/{p}.txt"

[dimensions.p]
values = ["x"]

[datasets.slow]

[jobs.slow]
outputs = ["slow/p={p}"]
inputs = ["src/p={p}"]
retries = 2
retry_backoff = "1h"
run = ["sh", "-c", "echo broken >&2; exit 3"]
"#;

/// Between a failed attempt and its retry, `status` said `failed` (the
/// log had nothing to mark the wait). (Failed before: the state was
/// `failed`, and `ActionRetrying` did not exist.) The wait ends at once on
/// an interrupt.
#[test]
fn a_job_waiting_to_retry_is_running_not_failed() {
    let project = Project::with_graph(BACKOFF);
    project.write("src/x.txt", "x\n");
    let mut child = Command::new(CAIRN)
        .arg("build")
        .current_dir(project.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cairn build");
    let start = Instant::now();
    let (state, reason) = loop {
        let status = project.status(&["slow/p=x"]);
        let (state, reason) = status["slow/p=x"].clone();
        if state == "running" || start.elapsed() > Duration::from_secs(20) {
            break (state, reason);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(state, "running", "{reason}");
    let prefix = format!(
        "job slow in build 1 (pid {}), attempt 1 failed, attempt 2 starts ",
        child.id()
    );
    assert!(reason.starts_with(&prefix), "{reason}");
    // The backoff is an hour: "in 59m 59s" or so.
    assert!(reason.contains("(in 59m "), "{reason}");
    assert!(
        why(&project, "slow/p=x").starts_with(&format!("slow/p=x is being built now: {prefix}")),
    );
    let log = project.cairn(&["log", "--json", "--kind", "ActionRetrying"]);
    log.assert_code(0);
    let line: serde_json::Value = serde_json::from_str(log.stdout.trim()).expect("one line");
    assert_eq!(line["attempt"], 2);
    assert_eq!(line["delay_ms"], 3_600_000);
    // SIGINT ends the wait at once.
    let interrupted = Instant::now();
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    let exit = child.wait().expect("wait for the build");
    assert_eq!(exit.code(), Some(130), "{exit:?}");
    assert!(interrupted.elapsed() < Duration::from_secs(30));
    let status = project.status(&[]);
    assert_eq!(status["slow/p=x"].0, "failed", "{status:?}");
}
