//! Definitions from external sources: `cairn defs refresh|show|diff` on the
//! air-quality fixture. Builds read the stored record and never run the
//! source; a failing or malformed source leaves the last good record in
//! force; diffs show what a refresh changed, and backfills follow it.

mod common;

use std::path::Path;

use common::{Build, Project};
use serde_json::{Value, json};

const CONFIG: &str = "backfills/2024-01-recompute.toml";
const SOURCE_COMMAND: &str = "command = [\"sh\", \"api/fetch-stations.sh\"]";

/// A copy of `fixtures/airquality` (without any local data or store).
fn airquality() -> Project {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if name == "data" || name == ".cairn" {
                continue;
            }
            let target = to.join(&name);
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    let project = Project::empty();
    copy(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/airquality"),
        project.path(),
    );
    project
}

/// Replaces the `stations` source's command in the copy's cairn.toml.
fn set_source_command(project: &Project, command: &str) {
    let graph = project.read_string("cairn.toml");
    let start = graph.find("command = [").unwrap();
    let end = start + graph[start..].find('\n').unwrap();
    project.write(
        "cairn.toml",
        format!("{}{command}{}", &graph[..start], &graph[end..]),
    );
}

fn show(project: &Project) -> Value {
    let run = project.cairn(&["defs", "show", "stations", "--json"]);
    run.assert_code(0);
    run.json_lines().pop().unwrap()
}

fn defs_events(project: &Project) -> Vec<Value> {
    project.log(&["--kind", "DefsRefreshed"])
}

#[test]
fn before_the_first_refresh_using_the_source_says_how_to_refresh_it() {
    let project = airquality();
    let hint = "source \"stations\" has no record yet: run `cairn defs refresh stations`";
    project.cairn(&["build"]).assert_usage_error(hint);
    project.cairn(&["status"]).assert_usage_error(hint);
    project
        .cairn(&["plan", "daily/date=2024-01-01/station={station}"])
        .assert_usage_error(hint);
    project
        .cairn(&["backfill", CONFIG])
        .assert_usage_error(hint);
    // A ref that does not need the source still builds.
    let one = project.build(&["daily/date=2024-01-01/station=NL01497"]);
    one.assert_code(0);
    one.assert_counts(2, 2, 0, 0, 0);
    let run = project.cairn(&["defs", "show", "stations"]);
    run.assert_code(0);
    assert!(run.stderr.contains(hint), "{}", run.stderr);
}

#[test]
fn refresh_records_the_source_and_builds_never_run_it() {
    let project = airquality();
    let run = project.cairn(&["defs", "refresh", "--json"]);
    run.assert_code(0);
    let line = &run.json_lines()[0];
    assert_eq!(line["source"], "stations");
    assert_eq!(line["ok"], true);
    assert_eq!(line["values"], 2);
    assert_eq!(line["added"], json!(["NL01497", "NL01912"]));
    assert!(
        run.stderr.contains("stations: recorded 2 values"),
        "{}",
        run.stderr
    );

    let record = show(&project);
    assert_eq!(record["values"], json!(["NL01497", "NL01912"]));
    assert_eq!(record["previous"], Value::Null);
    let events = defs_events(&project);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["source"], "stations");
    assert_eq!(events[0]["digest"], record["digest"]);
    assert_eq!(events[0]["values"], 2);
    let human = project.cairn(&["defs", "show", "stations"]);
    assert_eq!(human.stdout, "NL01497\nNL01912\n");

    // Builds use the record; the source is never run (it would fail now).
    project.write("api/OUTAGE", "");
    let build = project.build(&[]);
    build.assert_code(0);
    build.assert_counts(124, 124, 0, 0, 0);
    assert_eq!(defs_events(&project).len(), 1);
}

#[test]
fn a_failing_or_malformed_source_keeps_the_last_good_record() {
    let project = airquality();
    project
        .cairn(&["defs", "refresh", "stations"])
        .assert_code(0);
    project.build(&[]).assert_counts(124, 124, 0, 0, 0);
    let before = show(&project);

    let failures = [
        (
            r#"command = ["sh", "-c", "echo 'connection refused' >&2; exit 7"]"#,
            "defs refresh stations: the command exited with status 7 (sh -c echo 'connection refused' >&2; exit 7): connection refused; nothing was recorded and the previous record stays in force (seq 1, 2 values, refreshed ",
        ),
        (
            r#"command = ["sh", "-c", "echo '<html>503 Service Unavailable</html>'"]"#,
            "defs refresh stations: malformed output: the output is not JSON",
        ),
        (
            r#"command = ["sh", "-c", "echo '[\"NL01497\", \"../../etc\"]'"]"#,
            "defs refresh stations: malformed output: value 2 \"../../etc\" is not a valid partition value",
        ),
        (
            r#"command = ["sh", "-c", "echo '{\"values\": []}'"]"#,
            "defs refresh stations: malformed output: the list of values is empty",
        ),
        (
            "command = [\"sleep\", \"10\"]\ntimeout = \"300ms\"",
            "defs refresh stations: the command did not finish within its timeout of 300ms",
        ),
    ];
    for (command, expected) in failures {
        set_source_command(&project, &command.replace("\ntimeout = \"300ms\"", ""));
        if command.contains("timeout") {
            let graph = project.read_string("cairn.toml");
            project.write(
                "cairn.toml",
                graph.replace("timeout = \"30s\"", "timeout = \"300ms\""),
            );
        }
        let run = project.cairn(&["defs", "refresh", "stations"]);
        run.assert_code(1);
        assert!(
            run.stderr.contains(expected),
            "{command}: stderr does not contain {expected:?}:\n{}",
            run.stderr
        );
        // Nothing was recorded; builds keep using the last good record.
        assert_eq!(defs_events(&project).len(), 1);
        assert_eq!(show(&project), before);
        project.build(&[]).assert_counts(124, 0, 124, 0, 0);
    }

    // The fixture's own outage switch fails the same way.
    let graph = project
        .read_string("cairn.toml")
        .replace("timeout = \"300ms\"", "timeout = \"30s\"");
    project.write("cairn.toml", graph);
    set_source_command(&project, SOURCE_COMMAND);
    project.write("api/OUTAGE", "");
    let run = project.cairn(&["defs", "refresh"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("503 Service Unavailable"),
        "{}",
        run.stderr
    );
    std::fs::remove_file(project.file("api/OUTAGE")).unwrap();
    project.cairn(&["defs", "refresh"]).assert_code(0);
    assert_eq!(defs_events(&project).len(), 2);
    project.cairn(&["replay", "--check"]).assert_code(0);
}

#[test]
fn diff_shows_the_stations_a_refresh_changed_and_the_backfill_follows_them() {
    let project = airquality();
    project
        .cairn(&["defs", "refresh", "stations"])
        .assert_code(0);
    let first = Build::new(project.cairn(&["backfill", CONFIG, "--json"]));
    first.assert_counts(124, 124, 0, 0, 0);

    // The API drops NL01912 and lists a new station, NL10938.
    let api = project
        .read_string("api/stations.json")
        .replace("NL01912", "NL10938");
    project.write("api/stations.json", api);
    let run = project.cairn(&["defs", "refresh", "stations"]);
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("since seq 1: 1 added (NL10938), 1 removed (NL01912)"),
        "{}",
        run.stderr
    );
    let record = show(&project);
    assert_eq!(record["values"], json!(["NL01497", "NL10938"]));
    let seq = record["seq"].as_u64().unwrap();
    assert_eq!(record["previous"], 1);

    let diff = project.cairn(&["defs", "diff", "stations"]);
    diff.assert_code(0);
    assert_eq!(diff.stdout, "+NL10938\n-NL01912\n");
    assert!(
        diff.stderr
            .contains(&format!("stations: seq 1 -> seq {seq}: 1 added, 1 removed")),
        "{}",
        diff.stderr
    );
    let diff = project.cairn(&["defs", "diff", "stations", "--from", "1", "--json"]);
    diff.assert_code(0);
    assert_eq!(
        diff.json_lines()[0],
        json!({"source": "stations", "from": 1, "to": seq, "added": ["NL10938"], "removed": ["NL01912"]})
    );
    project
        .cairn(&["defs", "diff", "stations", "--from", "2"])
        .assert_usage_error("--from 2: event 2 is BuildRequested, not a DefsRefreshed of stations");
    let log = project.cairn(&["log", "--kind", "DefsRefreshed"]);
    assert_eq!(log.stdout.lines().count(), 2, "{}", log.stdout);

    // The same config now covers the new list: NL10938 is built, NL01497
    // reused, NL01912 no longer requested.
    let run = project.cairn(&["backfill", CONFIG, "--dry-run"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains(
            "62 partitions: 31 built, 31 to build; 124 actions: 62 would run, 62 up to date"
        ),
        "{}",
        run.stderr
    );
    let second = Build::new(project.cairn(&["backfill", CONFIG, "--json"]));
    second.assert_counts(124, 62, 62, 0, 0);
    assert!(
        second
            .outputs_where("outcome", "executed")
            .iter()
            .all(|output| output.ends_with("station=NL10938"))
    );
    let status = project.status(&["daily/date=2024-01-31/station={station}"]);
    assert_eq!(
        status.keys().cloned().collect::<Vec<_>>(),
        [
            "daily/date=2024-01-31/station=NL01497",
            "daily/date=2024-01-31/station=NL10938"
        ]
    );
    assert!(status.values().all(|(state, _)| state == "built"));
    project.cairn(&["replay", "--check"]).assert_code(0);
}

/// Issue 28 B2 and issue 26 §7: a source that ignores SIGTERM is SIGKILLed
/// the grace after its timeout, with its children, and `defs refresh`
/// returns (it hung, holding the writer lock, and its `sleep` survived).
/// A source left running by a killed cairn is killed by the next one.
#[test]
fn a_source_ignoring_sigterm_is_killed_after_its_timeout_and_leaves_nothing() {
    use std::time::{Duration, Instant};
    let project = airquality();
    set_source_command(
        &project,
        r#"command = ["sh", "-c", "trap '' TERM; sleep 30 & touch started; wait; echo '[\"A\"]'"]"#,
    );
    let graph = project
        .read_string("cairn.toml")
        .replace("timeout = \"30s\"", "timeout = \"1s\"");
    project.write("cairn.toml", graph);
    let clock = Instant::now();
    let run = project.cairn(&["defs", "refresh", "stations"]);
    let took = clock.elapsed();
    run.assert_code(1);
    assert!(
        took < Duration::from_secs(10),
        "defs refresh took {took:?}\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "defs refresh stations: the command did not finish within its timeout of 1s and was stopped with SIGKILL: it ignored SIGTERM"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("cairn: source stations did not exit within 5s of SIGTERM: killed (SIGKILL)"),
        "{}",
        run.stderr
    );
    assert!(
        common::processes_in(project.path()).is_empty(),
        "{:?}",
        common::processes_in(project.path())
    );

    // kill -9 of cairn while the source runs: its `sleep` outlives cairn
    // (the kernel kills only the process cairn started) until the next
    // cairn that takes the lock kills it.
    let graph = project
        .read_string("cairn.toml")
        .replace("timeout = \"1s\"", "timeout = \"30s\"");
    project.write("cairn.toml", graph);
    std::fs::remove_file(project.file("started")).unwrap();
    let mut refresh = common::Background::start(project.path(), &["defs", "refresh"]);
    common::wait_for(&project.file("started"));
    refresh.child.kill().unwrap();
    let _ = refresh.wait(Duration::from_secs(10));
    let left = common::processes_in(project.path());
    assert_eq!(left.len(), 1, "the source's sleep outlives cairn: {left:?}");
    set_source_command(&project, SOURCE_COMMAND);
    let run = project.cairn(&["defs", "refresh", "stations"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains(
            "cairn: killed 1 process left running by the jobs of a cairn that was killed"
        ),
        "{}",
        run.stderr
    );
    assert!(
        common::processes_in(project.path()).is_empty(),
        "{:?}",
        common::processes_in(project.path())
    );
}
