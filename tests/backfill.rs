//! `cairn backfill CONFIG.toml` on the air-quality fixture: builds the whole
//! product once, then nothing; `--dry-run` predicts the counts exactly; a
//! killed backfill resumes with exactly the missing actions; invalid configs
//! are refused naming line and field; failures do not stop independent
//! partitions and `--retry-failed` reruns just them.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Build, CAIRN, Project};
use serde_json::Value;

const CONFIG: &str = "backfills/2024-01-recompute.toml";
/// 31 days × 2 stations, each a clean and a daily action.
const PARTITIONS: u64 = 31 * 2;
const ACTIONS: u64 = PARTITIONS * 2;

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

/// A copy whose `stations` source has been refreshed once.
fn refreshed() -> Project {
    let project = airquality();
    project
        .cairn(&["defs", "refresh", "stations"])
        .assert_code(0);
    project
}

fn backfill(project: &Project, extra: &[&str]) -> Build {
    let mut args = vec!["backfill", CONFIG, "--json"];
    args.extend_from_slice(extra);
    Build::new(project.cairn(&args))
}

/// `(partition lines, summary)` of `cairn backfill CONFIG --dry-run --json`.
fn dry_run(project: &Project) -> (Vec<Value>, Value) {
    let run = project.cairn(&["backfill", CONFIG, "--dry-run", "--json"]);
    run.assert_code(0);
    let mut lines = run.json_lines();
    let summary = lines.pop().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["dry_run"], true);
    assert!(lines.iter().all(|line| line["type"] == "partition"));
    (lines, summary)
}

fn predicted(summary: &Value) -> [u64; 3] {
    ["executed", "cached", "skipped"].map(|field| summary[field].as_u64().unwrap())
}

#[test]
fn the_backfill_builds_the_product_then_nothing_and_the_dry_run_predicts_it() {
    let project = refreshed();

    let (partitions, summary) = dry_run(&project);
    assert_eq!(partitions.len() as u64, PARTITIONS);
    assert_eq!(summary["to_build"], PARTITIONS);
    assert_eq!(summary["built"], 0);
    assert_eq!(predicted(&summary), [ACTIONS, 0, 0]);
    assert!(!project.file("data").exists(), "a dry run built something");

    let first = backfill(&project, &["-j", "4"]);
    first.assert_code(0);
    first.assert_counts(ACTIONS, ACTIONS, 0, 0, 0);
    assert_eq!(first.summary()["failed_partitions"], serde_json::json!([]));
    for day in 1..=31 {
        for station in ["NL01497", "NL01912"] {
            let rel = format!("data/daily/date=2024-01-{day:02}/station={station}/daily.csv");
            let text = project.read_string(&rel);
            assert!(
                text.starts_with("date,station,readings,mean_no2,min_no2,max_no2\n"),
                "{rel}: {text}"
            );
            assert!(
                text.contains(&format!("\n2024-01-{day:02},{station},")),
                "{text}"
            );
        }
    }

    // The build says why it ran: the config's reason and content digest.
    let events = project.build_events(first.id());
    let requested = &events[0];
    assert_eq!(requested["kind"], "BuildRequested");
    assert_eq!(requested["command"], "backfill");
    let digest = cairn_engine::ContentDigest::of(&project.read(CONFIG)).short();
    assert_eq!(
        requested["reason"],
        format!(
            "#1234 recompute January after the NO2 calibration fix (backfill {CONFIG} {digest})"
        )
    );
    let human = project.cairn(&["log", "--build", &first.id().to_string()]);
    human.assert_code(0);
    assert!(
        human
            .stdout
            .lines()
            .next()
            .unwrap()
            .contains("reason: #1234 recompute"),
        "{}",
        human.stdout
    );

    let (partitions, summary) = dry_run(&project);
    assert!(partitions.iter().all(|line| line["verdict"] == "built"));
    assert_eq!(summary["built"], PARTITIONS);
    assert_eq!(predicted(&summary), [0, ACTIONS, 0]);
    let second = backfill(&project, &[]);
    second.assert_code(0);
    second.assert_counts(ACTIONS, 0, ACTIONS, 0, 0);

    // A corrected reading: the dry run names the partition and the counts
    // the real run then has.
    let input = "inputs/2024-01-10/NL01497.csv";
    let text = project.read_string(input);
    let changed = text.replacen("\n00,", "\n00,1", 1);
    assert_ne!(text, changed);
    project.write(input, changed);
    let (partitions, summary) = dry_run(&project);
    let to_build: Vec<&str> = partitions
        .iter()
        .filter(|line| line["verdict"] != "built")
        .map(|line| line["ref"].as_str().unwrap())
        .collect();
    assert_eq!(to_build, ["daily/date=2024-01-10/station=NL01497"]);
    assert_eq!(predicted(&summary), [2, ACTIONS - 2, 0]);
    let third = backfill(&project, &[]);
    third.assert_counts(ACTIONS, 2, ACTIONS - 2, 0, 0);

    project.cairn(&["replay", "--check"]).assert_code(0);
}

#[test]
fn a_killed_backfill_reruns_exactly_the_missing_actions() {
    let project = refreshed();
    // Slow the clean job down so the kill lands half-way.
    let script = project.read_string("jobs/clean.sh");
    project.write(
        "jobs/clean.sh",
        script.replacen("\nLC_ALL=C\n", "\nsleep 0.2\nLC_ALL=C\n", 1),
    );
    let mut child = Command::new(CAIRN)
        .args(["backfill", CONFIG, "-j", "2"])
        .current_dir(project.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let succeeded = |project: &Project| project.log(&["--kind", "ActionSucceeded"]).len() as u64;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if succeeded(&project) >= 10 {
            break;
        }
        assert!(Instant::now() < deadline, "the backfill made no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backfill ended early"
        );
    }
    child.kill().unwrap(); // SIGKILL: no chance to record anything more
    child.wait().unwrap();

    let done = succeeded(&project);
    assert!(
        done < ACTIONS,
        "the kill came too late to test anything ({done} actions recorded)"
    );
    let rerun = backfill(&project, &[]);
    rerun.assert_code(0);
    rerun.assert_counts(ACTIONS, ACTIONS - done, done, 0, 0);
    backfill(&project, &[]).assert_counts(ACTIONS, 0, ACTIONS, 0, 0);
    project.cairn(&["replay", "--check"]).assert_code(0);
}

#[test]
fn invalid_configs_are_refused_naming_line_and_field_before_anything_runs() {
    let fresh = airquality();
    // Before the first refresh, a `from` dimension has no values.
    fresh.cairn(&["backfill", CONFIG]).assert_usage_error(&format!(
        "{CONFIG}:11: dimensions.station.from: source \"stations\" has no record yet: run `cairn defs refresh stations`"
    ));
    assert!(
        !fresh.file(".cairn").exists(),
        "a refused backfill created the store"
    );

    let project = refreshed();
    let good = project.read_string(CONFIG);
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace("end = \"2024-01-31\"", "end = \"2024-01-31\"\nstepdays = 2"),
            "bad.toml:9: dimensions.date.stepdays: unknown field `stepdays`",
        ),
        (
            good.replace("reason = ", "reasn = "),
            "bad.toml:4: reasn: unknown field `reasn`",
        ),
        (
            good.replace("[dimensions.station]\nfrom = \"stations\"\n", ""),
            "bad.toml:3: target: placeholder {station} has no [dimensions.station]",
        ),
        (
            format!("{good}\n[dimensions.region]\nvalues = [\"north\"]\n"),
            "bad.toml:13: dimensions.region: {region} is not a placeholder of the target daily/date={date}/station={station}",
        ),
        (
            good.replace("end = \"2024-01-31\"", "end = \"2023-12-31\""),
            "bad.toml:8: dimensions.date.end: end 2023-12-31 is before start 2024-01-01",
        ),
        (
            good.replace("start = \"2024-01-01\"", "start = \"2024-13-01\""),
            "bad.toml:7: dimensions.date.start: \"2024-13-01\" is not a valid calendar date",
        ),
        (
            good.replace("start = \"2024-01-01\"", "start = \"Jan 1\""),
            "bad.toml:7: dimensions.date.start: \"Jan 1\" is not a date of the form YYYY-MM-DD",
        ),
        (
            good.replace("target = \"daily/", "target = \"weekly/"),
            "bad.toml:3: target: no job produces weekly/date={date}/station={station}: dataset \"weekly\" is not declared",
        ),
        (
            good.replace(
                "target = \"daily/date={date}/station={station}\"",
                "target = \"daily/date={date}\"",
            )
            .replace("[dimensions.station]\nfrom = \"stations\"\n", ""),
            "bad.toml:3: target: no job produces daily/date={date} (the jobs of dataset daily produce daily/date={date}/station={station})",
        ),
        (
            good.replace("target = \"daily/", "target = \"readings/"),
            "bad.toml:3: target: no job produces readings/date={date}/station={station}: readings is a source dataset",
        ),
        (
            good.replace("from = \"stations\"", "from = \"sensors\""),
            "bad.toml:11: dimensions.station.from: no [sources.sensors] is declared",
        ),
    ];
    for (text, expected) in cases {
        project.write("bad.toml", &text);
        let before = project.state();
        let run = project.cairn(&["backfill", "bad.toml"]);
        run.assert_usage_error(expected);
        assert_eq!(
            project.state(),
            before,
            "a refused backfill changed the store"
        );
    }
}

#[test]
fn failures_do_not_stop_independent_partitions_and_retry_failed_reruns_them() {
    let project = refreshed();
    let script = project.read_string("jobs/clean.sh");
    project.write(
        "jobs/clean.sh",
        script.replacen(
            "\nLC_ALL=C\n",
            "\ncase $CAIRN_IN in */2024-01-07/NL01912.csv) [ -e broken ] && { echo 'feed broken' >&2; exit 3; } ;; esac\nLC_ALL=C\n",
            1,
        ),
    );
    project.write("broken", "");
    let first = backfill(&project, &[]);
    first.assert_code(1);
    first.assert_counts(ACTIONS, ACTIONS - 2, 0, 1, 1);
    assert_eq!(
        first.summary()["failed_partitions"],
        serde_json::json!(["clean/date=2024-01-07/station=NL01912"])
    );
    assert!(
        first
            .run
            .stderr
            .contains("failed partitions (1):\n  clean/date=2024-01-07/station=NL01912: "),
        "{}",
        first.run.stderr
    );
    assert!(
        first.run.stderr.contains("--retry-failed"),
        "{}",
        first.run.stderr
    );

    std::fs::remove_file(project.file("broken")).unwrap();
    let retry = backfill(&project, &["--retry-failed"]);
    retry.assert_code(0);
    retry.assert_counts(2, 2, 0, 0, 0);
    assert!(
        project
            .file("data/daily/date=2024-01-07/station=NL01912/daily.csv")
            .is_file()
    );
    // Nothing is left to retry, and nothing is left to build.
    let nothing = project.cairn(&["backfill", CONFIG, "--retry-failed"]);
    nothing.assert_code(0);
    assert!(
        nothing.stderr.contains("nothing to retry"),
        "{}",
        nothing.stderr
    );
    backfill(&project, &[]).assert_counts(ACTIONS, 0, ACTIONS, 0, 0);
}

#[test]
fn several_backfill_tables_build_their_union() {
    let project = refreshed();
    project.write(
        "two.toml",
        r##"reason = "#77 two fixes"
[[backfill]]
target = "daily/date=2024-01-03/station={station}"
[backfill.dimensions.station]
from = "stations"

[[backfill]]
target = "clean/date={date}/station=NL01497"
reason = "#78 clean only"
[backfill.dimensions.date]
start = 2024-01-02
end = 2024-01-06
step_days = 2
"##,
    );
    let run = Build::new(project.cairn(&["backfill", "two.toml", "--json"]));
    run.assert_code(0);
    // daily of the 3rd for both stations, their two clean inputs, and the
    // clean of NL01497 on the 2nd, 4th and 6th.
    run.assert_counts(2 + 2 + 3, 7, 0, 0, 0);
    let events = project.build_events(run.id());
    assert!(
        events[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("#77 two fixes; #78 clean only (backfill two.toml "),
        "{}",
        events[0]
    );
}
