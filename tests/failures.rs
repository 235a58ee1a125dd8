//! Failing jobs on 3-day x 3-station podcast copies (21 actions): exit codes,
//! skipped dependents, `--keep-going`, nothing cached from a failed run, and
//! outputs that are missing or contain a symbolic link.

mod common;

use std::collections::BTreeSet;

use common::{Project, clean_ref, daily_ref, event_partitions, of_kind, refs, str_field};

const TOTAL: u64 = 21;
const BAD_DATE: &str = "2024-01-02";
const BAD_STATION: &str = "S002";

/// A 3x3 copy whose clean job runs `action` (a shell command list) instead
/// of its work for `clean/date=2024-01-02/station=S002` only.
fn project_with_bad_clean(action: &str) -> Project {
    let p = Project::podcast(3, 3);
    let bad = clean_ref(BAD_DATE, BAD_STATION);
    p.patch_clean(&format!(
        "if [ \"$CAIRN_OUTPUT_REF_0\" = \"{bad}\" ]; then {action}; fi"
    ));
    p
}

fn failing_project() -> Project {
    project_with_bad_clean("echo 'clean: refusing on purpose' >&2; exit 3")
}

/// Asserts that the log and the data directory hold no result of `bad`.
fn assert_nothing_recorded_for(p: &Project, bad: &str) {
    let events = p.log(&[]);
    for event in &events {
        let kind = str_field(event, "kind");
        if kind == "PartitionMaterialized" || kind == "ActionSucceeded" || kind == "ActionCached" {
            assert!(
                !event_partitions(event).contains(bad),
                "{kind} recorded for the failed partition {bad}: {event}"
            );
        }
    }
    assert!(
        !p.file(&format!("data/{bad}")).exists(),
        "data/{bad} exists after its job failed"
    );
}

#[test]
fn failing_job_exits_1_skips_its_daily_and_records_nothing() {
    let p = failing_project();
    let bad = clean_ref(BAD_DATE, BAD_STATION);
    let b = p.build(&[]);
    b.assert_code(1);
    assert_eq!(b.count("failed"), 1);
    assert_eq!(b.count("total"), TOTAL);
    assert_eq!(b.count("cached"), 0);
    assert_eq!(
        b.count("executed") + b.count("failed") + b.count("skipped"),
        TOTAL
    );
    assert_eq!(b.outputs("failed"), refs([&bad]));
    let failed = b.action_for(&bad);
    let error = str_field(failed, "error");
    assert!(error.contains("exited with status 3"), "error: {error}");
    assert!(b.outputs("skipped").contains(&daily_ref(BAD_DATE)));
    // Every action line is accounted for, once.
    assert_eq!(b.all_outputs(), p.all_refs());
    assert_eq!(b.actions().len() as u64, TOTAL);
    assert!(b.run.stderr.contains(&bad), "stderr:\n{}", b.run.stderr);

    assert_nothing_recorded_for(&p, &bad);
    assert!(!p.file(&format!("data/{}", daily_ref(BAD_DATE))).exists());

    // The failure is an event, with the exit code.
    let events = p.build_events(b.id());
    let failures = of_kind(&events, "ActionFailed");
    assert_eq!(failures.len(), 1, "ActionFailed events: {failures:?}");
    assert_eq!(event_partitions(failures[0]), refs([&bad]));
    assert_eq!(failures[0]["exit_code"], 3);
    // Exactly the executed actions started and succeeded.
    assert_eq!(
        common::partitions_of_kind(&events, "ActionStarted"),
        &b.outputs("executed") | &b.outputs("failed")
    );
    assert_eq!(
        common::partitions_of_kind(&events, "ActionSucceeded"),
        b.outputs("executed")
    );
    assert_eq!(
        common::partitions_of_kind(&events, "ActionSkipped"),
        b.outputs("skipped")
    );
    let finished = of_kind(&events, "BuildFinished");
    assert_eq!(finished.len(), 1);
    for field in ["executed", "cached", "failed", "skipped"] {
        assert_eq!(finished[0]["counts"][field], b.summary()[field], "{field}");
    }
}

#[test]
fn no_action_starts_after_a_failure_without_keep_going() {
    let p = failing_project();
    let bad = clean_ref(BAD_DATE, BAD_STATION);
    // One job at a time: once the failing action has finished, nothing else
    // may start.
    let b = p.build(&["-j", "1"]);
    b.assert_code(1);
    let events = p.build_events(b.id());
    let failures = of_kind(&events, "ActionFailed");
    assert_eq!(failures.len(), 1);
    assert_eq!(event_partitions(failures[0]), refs([&bad]));
    let failed_seq = failures[0]["seq"].as_u64().expect("seq");
    let late_starts: BTreeSet<String> = of_kind(&events, "ActionStarted")
        .into_iter()
        .filter(|e| e["seq"].as_u64().expect("seq") > failed_seq)
        .flat_map(event_partitions)
        .collect();
    assert!(
        late_starts.is_empty(),
        "actions started after the failure of {bad}: {late_starts:?}"
    );
}

#[test]
fn keep_going_finishes_every_independent_action() {
    let p = failing_project();
    let bad = clean_ref(BAD_DATE, BAD_STATION);
    let b = p.build(&["--keep-going"]);
    b.assert_code(1);
    // Only the failed clean and the daily that needs it do not finish.
    b.assert_counts(TOTAL, TOTAL - 2, 0, 1, 1);
    assert_eq!(b.outputs("failed"), refs([&bad]));
    assert_eq!(b.outputs("skipped"), refs([&daily_ref(BAD_DATE)]));
    let mut expected: BTreeSet<String> = p.all_refs();
    expected.remove(&bad);
    expected.remove(&daily_ref(BAD_DATE));
    assert_eq!(b.outputs("executed"), expected);
    for partition in &expected {
        assert!(
            p.file(&format!("data/{partition}")).is_dir(),
            "data/{partition} is missing"
        );
    }
    assert_nothing_recorded_for(&p, &bad);
    assert!(!p.file(&format!("data/{}", daily_ref(BAD_DATE))).exists());
}

#[test]
fn failed_action_is_not_cached_and_runs_again_once_fixed() {
    let p = failing_project();
    let bad = clean_ref(BAD_DATE, BAD_STATION);
    let first = p.build(&["--keep-going"]);
    first.assert_code(1);
    first.assert_counts(TOTAL, TOTAL - 2, 0, 1, 1);

    // Unchanged: the failed action runs (and fails) again; the rest is cached.
    let again = p.build(&["--keep-going"]);
    again.assert_code(1);
    again.assert_counts(TOTAL, 0, TOTAL - 2, 1, 1);
    assert_eq!(again.outputs("failed"), refs([&bad]));
    assert_eq!(
        common::partitions_of_kind(&p.build_events(again.id()), "ActionStarted"),
        refs([&bad])
    );

    // Fixed: the clean action and its daily execute, nothing else.
    p.write(
        "jobs/clean.sh",
        std::fs::read(common::generate_script().with_file_name("jobs/clean.sh"))
            .expect("read the fixture's clean.sh"),
    );
    let fixed = p.build(&[]);
    fixed.assert_code(0);
    fixed.assert_counts(TOTAL, 2, TOTAL - 2, 0, 0);
    let expected = refs([&bad, &daily_ref(BAD_DATE)]);
    assert_eq!(fixed.outputs("executed"), expected);
    assert_eq!(
        common::partitions_of_kind(&p.build_events(fixed.id()), "ActionStarted"),
        expected
    );
    assert_eq!(
        p.read_string(&format!("data/{bad}/reviews.csv")),
        p.expected_clean(BAD_DATE, BAD_STATION)
    );
    assert_eq!(
        p.read_string(&format!("data/{}/summary.csv", daily_ref(BAD_DATE))),
        p.expected_summary(BAD_DATE)
    );
}

#[test]
fn job_exiting_0_without_writing_its_output_fails() {
    let p = project_with_bad_clean("exit 0");
    let bad = clean_ref(BAD_DATE, BAD_STATION);
    let b = p.build(&["--keep-going"]);
    b.assert_code(1);
    b.assert_counts(TOTAL, TOTAL - 2, 0, 1, 1);
    assert_eq!(b.outputs("failed"), refs([&bad]));
    let error = str_field(b.action_for(&bad), "error");
    assert!(error.contains("did not write its output"), "error: {error}");
    assert!(
        error.contains(&bad),
        "error does not name the output: {error}"
    );
    assert_nothing_recorded_for(&p, &bad);
}

#[test]
fn job_leaving_a_symlink_in_its_output_fails() {
    let p = project_with_bad_clean("ln -s /etc/passwd \"$CAIRN_OUT/reviews.csv\"; exit 0");
    let bad = clean_ref(BAD_DATE, BAD_STATION);
    let b = p.build(&["--keep-going"]);
    b.assert_code(1);
    b.assert_counts(TOTAL, TOTAL - 2, 0, 1, 1);
    assert_eq!(b.outputs("failed"), refs([&bad]));
    let error = str_field(b.action_for(&bad), "error");
    assert!(error.contains("symbolic link"), "error: {error}");
    assert_nothing_recorded_for(&p, &bad);
    // No staging directory is left behind under data/.
    let leftovers: Vec<_> = std::fs::read_dir(p.file("data"))
        .expect("read data/")
        .map(|e| e.expect("entry").file_name())
        .filter(|name| !["raw", "clean", "daily"].contains(&name.to_str().unwrap_or("")))
        .collect();
    assert!(leftovers.is_empty(), "left under data/: {leftovers:?}");
}

#[test]
fn job_leaving_a_symlinked_directory_as_its_output_fails() {
    let p = project_with_bad_clean("rm -rf \"$CAIRN_OUT\"; ln -s /etc \"$CAIRN_OUT\"; exit 0");
    let bad = clean_ref(BAD_DATE, BAD_STATION);
    let b = p.build(&["--keep-going"]);
    b.assert_code(1);
    assert_eq!(b.outputs("failed"), refs([&bad]));
    let error = str_field(b.action_for(&bad), "error");
    assert!(error.contains("symbolic link"), "error: {error}");
    assert_nothing_recorded_for(&p, &bad);
}

/// Issue 26 §5: a failure shows the last lines of the job's stderr and the
/// command that prints all of its output, and `cairn logs` keeps stdout and
/// stderr apart when piped: labelled by default, one with --stdout/--stderr.
#[test]
fn a_failure_shows_the_end_of_its_stderr_and_logs_keeps_the_streams_apart() {
    let p = project_with_bad_clean(
        "echo 'on stdout'; i=1; while [ $i -le 15 ]; do echo \"stderr line $i\" >&2; i=$((i+1)); done; exit 3",
    );
    let bad = clean_ref(BAD_DATE, BAD_STATION);
    let build = p.build(&["--keep-going"]);
    build.assert_code(1);
    let stderr = &build.run.stderr;
    let failed_at = stderr.find("failed: job clean").expect(stderr);
    let shown = &stderr[failed_at..];
    assert!(shown.contains("last 10 lines of stderr:"), "{shown}");
    for i in 6..=15 {
        assert!(
            shown.contains(&format!("\n    stderr line {i}\n")),
            "{shown}"
        );
    }
    assert!(
        !shown.contains("stderr line 5\n"),
        "only the last 10: {shown}"
    );
    assert!(
        shown.contains(&format!("all output: cairn logs {bad}")),
        "{shown}"
    );
    let failed: Vec<_> = build
        .lines
        .iter()
        .filter(|line| line["outcome"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["stderr_tail"][9], "stderr line 15");

    let both = p.cairn(&["logs", &bad]);
    both.assert_code(0);
    let stderr_lines: String = (1..=15).map(|i| format!("stderr line {i}\n")).collect();
    assert_eq!(
        both.stdout,
        format!(
            "--- stdout (10 bytes) ---\non stdout\n--- stderr ({} bytes) ---\n{stderr_lines}",
            stderr_lines.len()
        )
    );
    let only_stdout = p.cairn(&["logs", &bad, "--stdout"]);
    only_stdout.assert_code(0);
    assert_eq!(only_stdout.stdout, "on stdout\n");
    assert!(only_stdout.stderr.contains("--- stdout (10 bytes) ---"));
    let only_stderr = p.cairn(&["logs", &bad, "--stderr"]);
    only_stderr.assert_code(0);
    assert_eq!(only_stderr.stdout, stderr_lines);
    p.cairn(&["logs", &bad, "--stdout", "--stderr"])
        .assert_code(2);
}

/// Issue 26 §7: an action that fails before it has a key (its source input
/// is missing) records `ActionFailed` with no key, not an all-zero one.
#[test]
fn a_missing_source_fails_its_action_without_a_key() {
    let p = Project::with_graph(
        r#"
[datasets.src]
source = "inputs/{day}.txt"

[datasets.out]

[dimensions.day]
values = ["mon", "tue"]

[jobs.out]
outputs = ["out/day={day}"]
inputs = ["src/day={day}"]
run = ["sh", "-c", "cp \"$CAIRN_IN\" \"$CAIRN_OUT/v\""]
"#,
    );
    p.write("inputs/mon.txt", "monday\n");
    let build = p.build(&["--keep-going"]);
    build.assert_code(1);
    let failed = p.log(&["--kind", "ActionFailed"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["outputs"][0], "out/day=tue");
    assert!(failed[0]["key"].is_null(), "{:?}", failed[0]);
    let history = p.cairn(&["history", "out/day=tue"]);
    history.assert_code(0);
    assert!(history.stdout.contains("FAILED: "), "{}", history.stdout);
    assert!(
        !history.stdout.contains("000000000000"),
        "{}",
        history.stdout
    );
    p.cairn(&["replay", "--check"]).assert_code(0);
}
