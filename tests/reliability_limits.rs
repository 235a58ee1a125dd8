//! Bounded memory and time for every input (docs/reliability.md, "Limits"):
//! a graph whose dimensions expand past the partition limit, a backfill
//! config that is `/dev/zero` or a FIFO, a defs source that prints too much,
//! `-j 100000`. Each is refused (or clamped) quickly with a message naming
//! the limit and the variable that raises it. Every run has a deadline, so a
//! regression fails here instead of hanging the suite.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{CAIRN, Project};

/// `cairn ARGS` in `project` with `env` set, killed (and the test failed)
/// past `deadline`. Returns (exit code, stdout, stderr, elapsed).
fn cairn_within(
    project: &Project,
    args: &[&str],
    env: &[(&str, &str)],
    deadline: Duration,
) -> (i32, String, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(CAIRN)
        .args(args)
        .current_dir(project.path())
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn");
    // Drained on threads: a chatty child must not block on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cairn") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "cairn {args:?} was still running after {deadline:?}; stderr so far:\n{}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let code = status
        .code()
        .unwrap_or_else(|| panic!("cairn {args:?} was killed: {status:?}"));
    (code, out.join().unwrap(), err.join().unwrap(), elapsed)
}

const DEADLINE: Duration = Duration::from_secs(30);

/// Dates from 0001-01-01 to 9999-12-31 (3,652,059 days) times 2 stations.
const HUGE_RANGE: &str = r#"
[datasets.raw]
[dimensions.date]
start = "0001-01-01"
end = "9999-12-31"
[dimensions.station]
values = ["A", "B"]
[jobs.raw]
outputs = ["raw/date={date}/station={station}"]
run = ["sh", "-c", "echo x > $CAIRN_OUT/x"]
"#;

#[test]
fn limits_a_huge_date_range_is_refused_before_it_is_listed() {
    let project = Project::with_graph(HUGE_RANGE);
    for args in [
        &["build"][..],
        &["build", "--dry-run"],
        &["status"],
        &["build", "raw/date={date}/station=A"],
        &["plan", "raw/date={date}/station={station}"],
    ] {
        // Before the limit this listed 7.3 M partitions (11 GB, minutes).
        let (code, stdout, stderr, elapsed) =
            cairn_within(&project, args, &[], Duration::from_secs(10));
        assert_eq!(code, 2, "cairn {args:?}: {stderr}");
        assert!(stdout.is_empty(), "cairn {args:?}: {stdout}");
        assert!(
            stderr.contains("is over the limit of 2000000 partitions (CAIRN_MAX_PARTITIONS; set CAIRN_MAX_PARTITIONS=N to raise it)"),
            "cairn {args:?}: {stderr}"
        );
        assert!(
            elapsed < Duration::from_secs(10),
            "cairn {args:?} took {elapsed:?}"
        );
    }
    let (_, _, stderr, _) = cairn_within(&project, &["build"], &[], DEADLINE);
    assert!(
        stderr.contains(
            "the graph declares 7304118 partitions (7304118 of raw/date={date}/station={station})"
        ),
        "{stderr}"
    );
    let (_, _, stderr, _) = cairn_within(
        &project,
        &["build", "raw/date={date}/station=A"],
        &[],
        DEADLINE,
    );
    assert!(
        stderr
            .contains("cannot expand raw/date={date}/station=A: 3652059 partitions (3652059 date)"),
        "{stderr}"
    );
    assert!(
        !project.file(".cairn").exists(),
        "a refused build made a store"
    );
}

#[test]
fn limits_the_partition_limit_can_be_lowered_and_raised() {
    let project = Project::podcast(2, 2);
    // 10 partitions in all; 4 under clean/.
    let (code, _, stderr, _) = cairn_within(
        &project,
        &["build", "--dry-run"],
        &[("CAIRN_MAX_PARTITIONS", "9")],
        DEADLINE,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("the graph declares 10 partitions"),
        "{stderr}"
    );
    assert!(
        stderr.contains("over the limit of 9 partitions"),
        "{stderr}"
    );
    let (code, _, stderr, _) = cairn_within(
        &project,
        &["build", "--dry-run"],
        &[("CAIRN_MAX_PARTITIONS", "10")],
        DEADLINE,
    );
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr, _) = cairn_within(
        &project,
        &["build", "--dry-run"],
        &[("CAIRN_MAX_PARTITIONS", "lots")],
        DEADLINE,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("CAIRN_MAX_PARTITIONS=\"lots\" is not a whole number of partitions"),
        "{stderr}"
    );
}

#[test]
fn limits_a_backfill_config_that_is_dev_zero_or_a_fifo_is_refused_at_once() {
    let project = Project::podcast(2, 2);
    let (code, stdout, stderr, elapsed) = cairn_within(
        &project,
        &["backfill", "/dev/zero", "--dry-run"],
        &[],
        DEADLINE,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(
            "/dev/zero: cannot read the backfill config: it is a character device, not a regular file"
        ),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");

    // A FIFO nobody writes to: opening it for reading would block forever.
    let fifo = project.file("backfill.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let (code, _, stderr, elapsed) = cairn_within(
        &project,
        &["backfill", "backfill.fifo", "--dry-run"],
        &[],
        DEADLINE,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cannot read the backfill config: it is a FIFO, not a regular file"),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert!(!project.file(".cairn").exists());
}

#[test]
fn limits_graph_files_and_backfill_configs_past_their_size_limit_are_refused() {
    let project = Project::podcast(2, 2);
    let size = std::fs::metadata(project.file("cairn.toml")).unwrap().len();
    let below = (size - 1).to_string();
    let (code, _, stderr, _) = cairn_within(
        &project,
        &["status"],
        &[("CAIRN_MAX_GRAPH_BYTES", &below)],
        DEADLINE,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cairn.toml: the graph file ({size} bytes) is over the limit of {below} bytes (CAIRN_MAX_GRAPH_BYTES; set CAIRN_MAX_GRAPH_BYTES=N to raise it)"
        )),
        "{stderr}"
    );

    project.write(
        "bf.toml",
        "target = \"clean/date={date}/station={station}\"\nreason = \"limits\"\n\
         [dimensions.date]\nstart = \"2024-01-01\"\nend = \"2024-01-02\"\n\
         [dimensions.station]\nvalues = [\"S001\"]\n",
    );
    let (code, _, stderr, _) = cairn_within(
        &project,
        &["backfill", "bf.toml", "--dry-run"],
        &[("CAIRN_MAX_BACKFILL_BYTES", "50")],
        DEADLINE,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("is over the limit of 50 bytes (CAIRN_MAX_BACKFILL_BYTES; set CAIRN_MAX_BACKFILL_BYTES=N to raise it)"),
        "{stderr}"
    );
    let (code, _, stderr, _) = cairn_within(
        &project,
        &["backfill", "bf.toml", "--dry-run"],
        &[],
        DEADLINE,
    );
    assert_eq!(code, 0, "{stderr}");
}

/// A graph with a `[sources.big]` whose command is `sh big.sh`.
fn source_project(script: &str) -> Project {
    let project = Project::with_graph(
        "[sources.big]\ncommand = [\"sh\", \"big.sh\"]\ntimeout = \"60s\"\n\
         [dimensions.item]\nfrom = \"big\"\n",
    );
    project.write("big.sh", script);
    project
}

#[test]
fn limits_a_defs_source_printing_more_than_the_limit_is_refused() {
    // 4 MiB of valid JSON (400,000 values of 10 bytes) against a limit
    // lowered to 1 MiB, so the test stays small.
    let project = source_project(
        "awk 'BEGIN { printf \"[\"; for (i = 0; i < 400000; i++) \
         printf \"%s\\\"v%07d\\\"\", (i ? \",\" : \"\"), i; print \"]\" }'\n",
    );
    let limit = [("CAIRN_MAX_DEFS_BYTES", "1048576")];
    let (code, _, stderr, _) =
        cairn_within(&project, &["defs", "refresh", "big"], &limit, DEADLINE);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("defs refresh big: the output of the command (sh big.sh) is over the limit of 1048576 bytes (CAIRN_MAX_DEFS_BYTES; set CAIRN_MAX_DEFS_BYTES=N to raise it)"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was recorded"), "{stderr}");
    let (code, stdout, stderr, _) =
        cairn_within(&project, &["defs", "show", "big"], &limit, DEADLINE);
    assert!(
        code != 0 || stdout.is_empty(),
        "a refused output was recorded: {stdout} {stderr}"
    );
    // The default limit takes it.
    let (code, _, stderr, _) = cairn_within(&project, &["defs", "refresh", "big"], &[], DEADLINE);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("recorded 400000 values"), "{stderr}");
}

#[test]
fn limits_a_defs_source_that_never_stops_printing_is_stopped_at_the_limit() {
    // Endless output: stopped once past the limit, long before its 60 s
    // timeout.
    let project = source_project("yes '\"x\",'\n");
    let (code, _, stderr, elapsed) = cairn_within(
        &project,
        &["defs", "refresh", "big"],
        &[("CAIRN_MAX_DEFS_BYTES", "1048576")],
        DEADLINE,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("is over the limit of 1048576 bytes (CAIRN_MAX_DEFS_BYTES; set CAIRN_MAX_DEFS_BYTES=N to raise it); it was stopped"),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
}

#[test]
fn limits_j_100000_is_clamped_and_finishes_quickly() {
    let project = Project::podcast(2, 2);
    let (code, stdout, stderr, elapsed) = cairn_within(
        &project,
        &["build", "--dry-run", "-j", "100000"],
        &[],
        DEADLINE,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("-j 100000 clamped to 256, the most jobs cairn runs at once"),
        "{stderr}"
    );
    // The plan (on stdout or stderr: issue 26 moves it to stdout).
    let planned = format!("{stdout}{stderr}");
    assert!(planned.contains("10 would run"), "{planned}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    let (code, _, stderr, elapsed) = cairn_within(
        &project,
        &["build", "-j", "100000", "--json"],
        &[],
        DEADLINE,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    // With a store (the up-to-date snapshot path, which checks paths on
    // `-j` threads).
    let (code, _, stderr, elapsed) = cairn_within(
        &project,
        &["build", "--dry-run", "-j", "100000"],
        &[],
        DEADLINE,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}
