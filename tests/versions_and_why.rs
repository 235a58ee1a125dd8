//! Issue 3's scenario on a 30×30 podcast copy: semver policy, switching back,
//! invalidation, and `cairn why` giving the right reason each time. Asserts
//! which actions ran (from the build's JSON lines), not only counts.

mod common;

use std::collections::BTreeSet;

use common::{Project, snapshot};
use serde_json::Value;

/// Outputs executed by `job` in `build`.
fn executed(build: &common::Build, job: &str) -> BTreeSet<String> {
    build
        .outputs_where("outcome", "executed")
        .into_iter()
        .filter(|output| output.starts_with(&format!("{job}/")))
        .collect()
}

fn why(project: &Project, partition: &str) -> String {
    let run = project.cairn(&["why", partition, "--json"]);
    run.assert_code(0);
    let value: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    value["reason"].as_str().unwrap().to_owned()
}

fn set_clean_version(project: &Project, version: &str) {
    let text = project.read_string("cairn.toml");
    let mut out = String::new();
    let mut in_clean = false;
    for line in text.lines() {
        if line.starts_with('[') {
            in_clean = line == "[datasets.clean]";
        }
        if in_clean && line.starts_with("version") {
            out.push_str(&format!("version = \"{version}\"\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    project.write("cairn.toml", out);
}

#[test]
fn semver_policy_switching_back_and_invalidation_on_30x30() {
    let project = Project::podcast(30, 30);
    let clean_ref = "clean/date=2024-01-01/station=S001";

    project.build(&[]).assert_counts(1830, 1830, 0, 0, 0);
    let v1_data = snapshot(&project.file("data"));

    // A minor bump keeps every partition valid; status names both versions.
    set_clean_version(&project, "1.1.0");
    assert_eq!(project.build(&[]).count("executed"), 0);
    let status = project.cairn(&["status", clean_ref]).stdout;
    assert!(
        status.contains("built by 1.0.0") && status.contains("graph now 1.1.0: valid"),
        "{status}"
    );
    assert!(
        why(&project, clean_ref).contains("built by clean 1.0.0, graph now 1.1.0: still valid")
    );

    // A major bump with no code change: every clean action runs, no daily one
    // (identical content: early cutoff).
    set_clean_version(&project, "2.0.0");
    let reason = why(&project, clean_ref);
    assert!(
        reason.contains("dataset clean major version changed: 1 -> 2"),
        "{reason}"
    );
    let build = project.build(&[]);
    assert_eq!(build.count("executed"), 900);
    assert_eq!(
        (
            executed(&build, "clean").len(),
            executed(&build, "daily").len(),
            executed(&build, "raw").len()
        ),
        (900, 0, 0)
    );

    // A major bump with a code change that alters the output: clean and daily.
    set_clean_version(&project, "3.0.0");
    let script = project.read_string("jobs/clean.sh");
    let changed = script.replace("print st \",\" $0", "if ($0 !~ /,1$/) print st \",\" $0");
    assert_ne!(
        script, changed,
        "the clean job's print statement moved; update this test"
    );
    project.write("jobs/clean.sh", changed);
    let build = project.build(&[]);
    assert_eq!(
        (
            executed(&build, "clean").len(),
            executed(&build, "daily").len()
        ),
        (900, 30)
    );
    assert_eq!(build.count("executed"), 930);

    // Back to the first major (and the first code): nothing runs, the data
    // paths hold the earlier bytes again.
    project.write("jobs/clean.sh", script);
    set_clean_version(&project, "1.2.0");
    let reason = why(&project, "daily/date=2024-01-01");
    assert!(
        reason.contains("restores it from the store without running the job"),
        "{reason}"
    );
    assert_eq!(project.build(&[]).count("executed"), 0);
    assert_eq!(snapshot(&project.file("data")), v1_data);

    // Invalidating one date's clean partitions runs exactly those 30 actions
    // (their outputs are identical, so daily is cut off).
    project
        .cairn(&[
            "invalidate",
            "clean/date=2024-01-04/station={station}",
            "--reason",
            "test",
        ])
        .assert_code(0);
    let reason = why(&project, "clean/date=2024-01-04/station=S002");
    assert!(
        reason.contains("was invalidated") && reason.ends_with(": test"),
        "{reason}"
    );
    let build = project.build(&[]);
    assert_eq!(build.count("executed"), 30);
    let expected: BTreeSet<String> = (1..=30)
        .map(|s| format!("clean/date=2024-01-04/station=S{s:03}"))
        .collect();
    assert_eq!(executed(&build, "clean"), expected);
    assert!(why(&project, "clean/date=2024-01-04/station=S002").contains("is up to date"));

    // Each version change was recorded once.
    let tos: Vec<String> = project
        .log(&[])
        .iter()
        .filter(|event| event["kind"] == "DatasetVersionChanged" && event["dataset"] == "clean")
        .map(|event| event["to"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tos, ["1.0.0", "1.1.0", "2.0.0", "3.0.0", "1.2.0"]);
}

#[test]
fn why_names_the_changed_input_and_an_upstream_failure() {
    let project = Project::podcast(2, 2);
    assert!(why(&project, "raw/date=2024-01-01/station=S001").contains("never built"));
    project.build(&[]).assert_code(0);

    project.append("inputs/2024-01-01/S002.txt", "ep0999,5\n");
    let reason = why(&project, "raw/date=2024-01-01/station=S002");
    assert!(
        reason.contains("input inputs/date=2024-01-01/station=S002 content changed from"),
        "{reason}"
    );
    assert!(
        why(&project, "daily/date=2024-01-01")
            .contains("input clean/date=2024-01-01/station=S002 will be rebuilt")
    );

    // Make clean fail: daily's explanation names the failed upstream.
    project.write("jobs/clean.sh", "echo broken >&2; exit 4\n");
    project.cairn(&["build", "--keep-going"]).assert_code(1);
    let reason = why(&project, "daily/date=2024-01-01");
    assert!(
        reason.contains(
            "waiting on upstream clean/date=2024-01-01/station=S002, which failed in build"
        ),
        "{reason}"
    );
    assert!(reason.contains("exited with status 4"), "{reason}");
}
