//! One writer per store: while a build runs, a second `cairn build
//! --no-wait` is refused with exit code 3; without `--no-wait` it waits and
//! then reuses the first build's work. Read-only commands keep working.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Build, CAIRN, Project, Run};

const TOTAL: u64 = 21;

/// A 3x3 copy whose clean job sleeps 2 s, and a build of it running in the
/// background (9 jobs at once) that holds the store's lock.
fn slow_build_in_background() -> (Project, Child) {
    let p = Project::podcast(3, 3);
    p.patch_clean("sleep 2");
    let child = Command::new(CAIRN)
        .args(["build", "--json", "-j", "9"])
        .current_dir(p.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the first build");
    // The holder writes its pid into the lock file just after locking it.
    let lock = p.file(".cairn/lock");
    let holder = format!("pid={}\n", child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&lock).is_ok_and(|text| text.starts_with(&holder)) {
        assert!(
            Instant::now() < deadline,
            "the first build never took the lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (p, child)
}

fn finish(child: Child) -> Build {
    let output = child.wait_with_output().expect("wait for the first build");
    let run = Run {
        args: vec!["build".to_owned(), "--json".to_owned()],
        code: output.status.code().expect("exit code"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8"),
    };
    Build::new(run)
}

#[test]
fn second_build_with_no_wait_exits_3_while_the_store_is_locked() {
    let (p, child) = slow_build_in_background();

    let second = p.cairn(&["build", "--no-wait"]);
    let still_running = !p.file("data/daily").exists();
    second.assert_code(3);
    assert!(
        second.stderr.contains("locked"),
        "stderr: {}",
        second.stderr
    );
    assert!(
        second.stderr.contains(&format!("pid {}", child.id())),
        "the message does not name the holder: {}",
        second.stderr
    );
    let json = p.cairn(&["build", "--no-wait", "--json"]);
    json.assert_code(3);
    assert!(json.stderr.contains("locked"), "stderr: {}", json.stderr);
    assert!(
        still_running,
        "the first build finished too early for this test"
    );

    // Reading is not writing: status and log work during the build.
    p.cairn(&["status"]).assert_code(0);
    p.cairn(&["log", "--json"]).assert_code(0);

    let first = finish(child);
    first.assert_code(0);
    first.assert_counts(TOTAL, TOTAL, 0, 0, 0);
    // The refused builds left no trace: only build 1 is in the log.
    let builds: std::collections::BTreeSet<u64> = p
        .log(&[])
        .iter()
        .map(|e| e["build"].as_u64().expect("build"))
        .collect();
    assert_eq!(builds, [first.id()].into_iter().collect());

    // Once the lock is free, --no-wait builds (and has nothing to do).
    let after = p.build(&["--no-wait"]);
    after.assert_code(0);
    after.assert_counts(TOTAL, 0, TOTAL, 0, 0);
}

#[test]
fn second_build_without_no_wait_waits_and_reuses_the_first_builds_work() {
    let (p, child) = slow_build_in_background();
    let second = p.build(&[]);
    let first = finish(child);
    first.assert_code(0);
    first.assert_counts(TOTAL, TOTAL, 0, 0, 0);
    second.assert_code(0);
    second.assert_counts(TOTAL, 0, TOTAL, 0, 0);
    assert!(second.id() > first.id());
    assert!(
        second.run.stderr.contains("locked") && second.run.stderr.contains("waiting"),
        "the waiting build did not say why it waits: {}",
        second.run.stderr
    );
}
