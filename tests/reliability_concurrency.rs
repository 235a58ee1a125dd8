//! One writer, no stale locks (docs/reliability.md, promise 4). Rows:
//! two-writers and stale-lock.
//!
//! - two_writers: two `cairn build`s on one store, started together,
//!   repeatedly: exactly one writes at a time; with `--no-wait` the other
//!   exits 3 naming the holder (pid, build id, for how long), without it the
//!   other waits (saying so) and then reuses the first one's work; the log's
//!   build ids form contiguous blocks (no interleaved events). Read-only
//!   commands (`status`, `log`, `why`) work while a build runs.
//! - stale_lock: `kill -9` of the holder frees the lock at once (a kernel
//!   lock, not a pid file): the next `--no-wait` build proceeds although the
//!   lock file still names the dead process.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Build, CAIRN, Project, Run};

const TOTAL: u64 = 4;

/// Four actions whose job sleeps 0.4 s: with `-j 2` a build holds the lock
/// for about a second.
fn slow_project() -> Project {
    let p = Project::with_graph(
        r#"
[datasets.src]
source = "inputs/{i}.txt"
[datasets.out]
version = "1.0.0"
[dimensions.i]
values = ["a", "b", "c", "d"]
[jobs.slow]
outputs = ["out/i={i}"]
inputs = ["src/i={i}"]
run = ["sh", "-c", "sleep 0.4; cat \"$CAIRN_IN\" > \"$CAIRN_OUT/v\""]
"#,
    );
    set_inputs(&p, 0);
    p
}

/// New input content (round `round`): every action has work again.
fn set_inputs(p: &Project, round: usize) {
    for name in ["a", "b", "c", "d"] {
        p.write(&format!("inputs/{name}.txt"), format!("{name} {round}\n"));
    }
}

fn spawn_build(p: &Project, extra: &[&str]) -> Child {
    Command::new(CAIRN)
        .args(["build", "--json", "-j", "2"])
        .args(extra)
        .current_dir(p.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn build")
}

fn finish(child: Child) -> Run {
    let output = child.wait_with_output().expect("wait for cairn");
    Run {
        args: vec!["build".into(), "--json".into()],
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Waits until the lock file names `pid` and a build id; returns the id.
fn wait_for_holder(p: &Project, pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(p.file(".cairn/lock")).unwrap_or_default();
        if text.starts_with(&format!("pid={pid}\n"))
            && let Some(build) = text
                .lines()
                .find_map(|line| line.strip_prefix("build="))
                .and_then(|value| value.parse().ok())
        {
            return build;
        }
        assert!(Instant::now() < deadline, "pid {pid} never took the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Panics unless every build id's events form one contiguous block and
/// seqs are consecutive.
fn assert_not_interleaved(p: &Project) -> Vec<u64> {
    let events = p.log(&[]);
    let mut blocks: Vec<u64> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event["seq"].as_u64(), Some(index as u64 + 1), "{event}");
        let build = event["build"].as_u64().expect("build");
        if blocks.last() != Some(&build) {
            assert!(
                !blocks.contains(&build),
                "events of build {build} interleave with others: {blocks:?} then {build} at seq {}",
                index + 1
            );
            blocks.push(build);
        }
    }
    blocks
}

#[test]
fn two_writers_started_together_exactly_one_proceeds_repeatedly() {
    let p = slow_project();
    let mut expected_builds = 0;
    for round in 0..4 {
        set_inputs(&p, round);
        let wait = round % 2 == 1;
        let extra: &[&str] = if wait { &[] } else { &["--no-wait"] };
        let first = spawn_build(&p, extra);
        let second = spawn_build(&p, extra);
        let pids = [first.id(), second.id()];
        let runs = [finish(first), finish(second)];
        if wait {
            // Both finish; one waited for the other and reused its work.
            let builds: Vec<Build> = runs.into_iter().map(Build::new).collect();
            for build in &builds {
                build.assert_code(0);
            }
            let (early, late) = if builds[0].id() < builds[1].id() {
                (&builds[0], &builds[1])
            } else {
                (&builds[1], &builds[0])
            };
            early.assert_counts(TOTAL, TOTAL, 0, 0, 0);
            late.assert_counts(TOTAL, 0, TOTAL, 0, 0);
            assert!(
                late.run
                    .stderr
                    .contains("is locked by another cairn process (pid ")
                    && late.run.stderr.contains("; waiting… (--no-wait to fail)"),
                "round {round}: the waiting build did not say why it waits:\n{}",
                late.run.stderr
            );
        } else {
            // Exactly one proceeds; the other is refused naming the holder.
            let codes = [runs[0].code, runs[1].code];
            let (winner, loser) = match codes {
                [0, 3] => (0, 1),
                [3, 0] => (1, 0),
                _ => panic!(
                    "round {round}: exit codes {codes:?}\n{}\n{}",
                    runs[0].stderr, runs[1].stderr
                ),
            };
            let refusal = &runs[loser].stderr;
            assert!(
                refusal.contains(&format!(
                    "is locked by another cairn process (pid {}",
                    pids[winner]
                )),
                "round {round}: the refusal does not name the holder:\n{refusal}"
            );
            assert!(runs[loser].stdout.is_empty(), "{}", runs[loser].stdout);
            let [first, second] = runs;
            let won = Build::new(if winner == 0 { first } else { second });
            won.assert_counts(TOTAL, TOTAL, 0, 0, 0);
        }
        // A refused build takes no build id and records nothing.
        expected_builds += if wait { 2 } else { 1 };
        let blocks = assert_not_interleaved(&p);
        assert_eq!(blocks.len(), expected_builds, "round {round}: {blocks:?}");
    }
}

#[test]
fn two_writers_the_refusal_names_pid_build_and_time_and_readers_keep_working() {
    let p = slow_project();
    p.build(&[]).assert_code(0);
    set_inputs(&p, 1);
    let holder = spawn_build(&p, &[]);
    let build = wait_for_holder(&p, holder.id());
    let refused = p.cairn(&["build", "--no-wait"]);
    refused.assert_code(3);
    let expected = format!(
        "error: store {} is locked by another cairn process (pid {}, build {build}, for ",
        p.file(".cairn").display(),
        holder.id()
    );
    assert!(
        refused.stderr.starts_with(&expected),
        "expected {expected:?}…, got:\n{}",
        refused.stderr
    );
    // Reading is not writing: these work beside the running build.
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["log"],
        &["log", "--json", "--build", &build.to_string()],
        &["why", "out/i=a"],
        &["why", "out/i=b", "--json"],
        &["history", "out/i=c"],
        &["plan", "out/i=d"],
    ] {
        let run = p.cairn(args);
        assert_eq!(
            run.code, 0,
            "cairn {args:?} during a build:\n{}",
            run.stderr
        );
    }
    let done = Build::new(finish(holder));
    done.assert_code(0);
    done.assert_counts(TOTAL, TOTAL, 0, 0, 0);
    assert_eq!(done.id(), build);
    assert_not_interleaved(&p);
}

#[test]
fn stale_lock_kill9_of_the_holder_frees_the_lock_at_once() {
    use std::os::unix::process::ExitStatusExt;
    let p = slow_project();
    for round in 0..3 {
        set_inputs(&p, round);
        let mut holder = spawn_build(&p, &[]);
        let pid = holder.id();
        wait_for_holder(&p, pid);
        holder.kill().expect("SIGKILL the holder");
        let status = holder.wait().expect("reap the holder");
        assert_eq!(status.signal(), Some(9));
        // The lock file still names the dead holder: it is not what locks.
        let text = std::fs::read_to_string(p.file(".cairn/lock")).expect("lock file");
        assert!(text.starts_with(&format!("pid={pid}\n")), "{text}");
        let started = Instant::now();
        let next = p.build(&["--no-wait"]);
        next.assert_code(0);
        assert!(
            !next.run.stderr.contains("locked"),
            "round {round}: {}",
            next.run.stderr
        );
        assert_eq!(next.count("failed"), 0);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the next build took {:?}",
            started.elapsed()
        );
        p.cairn(&["store", "verify"]).assert_code(0);
        p.cairn(&["replay", "--check"]).assert_code(0);
        assert_not_interleaved(&p);
    }
}
