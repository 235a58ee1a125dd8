//! What `status` and `why` say while a build runs, and downstream of a
//! failed or invalidated partition (issue 26 §6).

mod common;

use std::time::{Duration, Instant};

use common::{Background, Project, wait_for};

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

/// One job `slow` with retries, over one source partition: RETRIES,
/// BACKOFF and RUN are filled in.
const RETRIED: &str = r#"
[datasets.src]
source = "src/{p}.txt"

[dimensions.p]
values = ["x"]

[datasets.slow]

[jobs.slow]
outputs = ["slow/p={p}"]
inputs = ["src/p={p}"]
retries = RETRIES
retry_backoff = "BACKOFF"
run = RUN
"#;

fn retried(retries: u32, backoff: &str, run: &str) -> String {
    RETRIED
        .replace("RETRIES", &retries.to_string())
        .replace("BACKOFF", backoff)
        .replace("RUN", run)
}

/// A job whose first attempt records a checkpoint and fails, and whose
/// second waits for `release`, telling the test through `running`.
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

/// Polls `status REF` until `done(state, reason)` holds or 20 s pass:
/// the last `(state, reason)` read.
fn status_until(
    project: &Project,
    partition: &str,
    done: impl Fn(&str, &str) -> bool,
) -> (String, String) {
    let start = Instant::now();
    loop {
        let status = project.status(&[partition]);
        let (state, reason) = status[partition].clone();
        if done(&state, &reason) || start.elapsed() > Duration::from_secs(20) {
            return (state, reason);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// While a retried job runs its second attempt, `status` said `failed …
/// resumable` (the first attempt's failure). (Failed before: there was no
/// `running` state.)
#[test]
fn a_running_job_is_running_not_failed() {
    let project = Project::empty();
    let dir = project.path().display().to_string();
    project.write(
        "cairn.toml",
        retried(1, "1s", &format!(r#"["sh", "{dir}/job.sh", "{dir}"]"#)),
    );
    project.write("job.sh", JOB);
    project.write("src/x.txt", "x\n");
    let build = Background::start(project.path(), &["build"]);
    wait_for(&project.file("running"));
    // The build commits the second ActionStarted within its commit
    // interval; give it a moment (until then the partition is running
    // too: waiting to retry).
    let (state, reason) = status_until(&project, "slow/p=x", |state, reason| {
        state == "running" && reason.contains("attempt 2, started")
    });
    assert_eq!(state, "running", "{reason}");
    let prefix = format!(
        "job slow in build 1 (pid {}), attempt 2, started ",
        build.child.id()
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
    let (code, stderr, _) = build.wait(Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    let status = project.status(&[]);
    assert_eq!(status["slow/p=x"].0, "built", "{status:?}");
}

/// Between a failed attempt and its retry, `status` said `failed` (the
/// log had nothing to mark the wait). (Failed before: the state was
/// `failed`, and `ActionRetrying` did not exist.) The wait ends at once on
/// an interrupt.
#[test]
fn a_job_waiting_to_retry_is_running_not_failed() {
    // It fails every attempt, and waits an hour before the second.
    let project = Project::with_graph(&retried(
        2,
        "1h",
        r#"["sh", "-c", "echo broken >&2; exit 3"]"#,
    ));
    project.write("src/x.txt", "x\n");
    let build = Background::start(project.path(), &["build"]);
    // Running from its first attempt on; the wait begins once it failed.
    let (state, reason) = status_until(&project, "slow/p=x", |state, reason| {
        state == "running" && reason.contains("attempt 1 failed")
    });
    assert_eq!(state, "running", "{reason}");
    let prefix = format!(
        "job slow in build 1 (pid {}), attempt 1 failed, attempt 2 starts ",
        build.child.id()
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
    build.signal("INT");
    let (code, stderr, waited) = build.wait(Duration::from_secs(60));
    assert_eq!(code, 130, "{stderr}");
    assert!(waited < Duration::from_secs(30), "{waited:?}");
    let status = project.status(&[]);
    assert_eq!(status["slow/p=x"].0, "failed", "{status:?}");
}
