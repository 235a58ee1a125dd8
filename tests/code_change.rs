//! Issue 26, section 2: a job's code changed under a versioned dataset.
//! The semver policy keeps the partitions (only MAJOR invalidates); cairn
//! must say so in `build`, `status` and `why`, a MINOR/PATCH bump
//! acknowledges the change, and `on_code_change` chooses warn (default),
//! rebuild or error. Each test asserts which actions ran.

mod common;

use common::Project;
use serde_json::Value;

const KEPT: &str =
    "kept because clean is still 1.x. Bump MAJOR to rebuild, or MINOR/PATCH to acknowledge";

/// `clean` 1.0.0 over two sources; `OPTIONS` goes into `[datasets.clean]`,
/// `JOB_OPTIONS` into `[jobs.clean]`.
fn graph(version: &str, options: &str, job_options: &str) -> String {
    format!(
        r#"[datasets.src]
source = "src/{{k}}.txt"
[dimensions.k]
values = ["a", "b"]
[datasets.clean]
version = "{version}"
{options}
[jobs.clean]
outputs = ["clean/k={{k}}"]
inputs = ["src/k={{k}}"]
run = ["sh", "jobs/clean.sh"]
code = ["jobs/clean.sh"]
{job_options}
"#
    )
}

fn project(options: &str, job_options: &str) -> Project {
    let project = Project::with_graph(&graph("1.0.0", options, job_options));
    project.write("src/a.txt", "a\n");
    project.write("src/b.txt", "b\n");
    project.write(
        "jobs/clean.sh",
        "tr a-z A-Z < \"$CAIRN_IN\" > \"$CAIRN_OUT/o\"\n",
    );
    project.build(&[]).assert_counts(2, 2, 0, 0, 0);
    project
}

/// The job's code, changed: it now also appends a line.
fn change_code(project: &Project) {
    project.write(
        "jobs/clean.sh",
        "{ tr a-z A-Z < \"$CAIRN_IN\"; echo v2; } > \"$CAIRN_OUT/o\"\n",
    );
}

fn why(project: &Project, partition: &str) -> String {
    let run = project.cairn(&["why", partition, "--json"]);
    run.assert_code(0);
    let value: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    value["reason"].as_str().unwrap().to_owned()
}

fn status(project: &Project, partition: &str) -> (String, String) {
    let run = project.cairn(&["status", partition, "--json"]);
    run.assert_code(0);
    let value: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    (
        value["state"].as_str().unwrap().to_owned(),
        value["reason"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn a_code_change_under_a_version_is_kept_and_said_until_a_bump_acknowledges_it() {
    let project = project("", "");
    change_code(&project);
    for _ in 0..2 {
        // Every build says it (no up-to-date snapshot skips it).
        let build = project.build(&[]);
        build.assert_counts(2, 0, 2, 0, 0);
        let stderr = &build.run.stderr;
        assert!(
            stderr.contains(
                "warning: job clean: 2 partitions of clean: code changed since built (digest "
            ) && stderr.contains(KEPT),
            "{stderr}"
        );
    }
    assert_eq!(project.read_string("data/clean/k=a/o"), "A\n");
    let reason = why(&project, "clean/k=a");
    assert!(
        reason.contains("is up to date")
            && reason.contains("code changed since built (digest ")
            && reason.contains(KEPT),
        "{reason}"
    );
    let (state, reason) = status(&project, "clean/k=b");
    assert_eq!(state, "built");
    assert!(reason.contains(KEPT), "{reason}");

    // A PATCH bump acknowledges it: still kept, and nothing more is said.
    project.write("cairn.toml", graph("1.0.1", "", ""));
    let build = project.build(&[]);
    build.assert_counts(2, 0, 2, 0, 0);
    assert!(
        !build.run.stderr.contains("code changed"),
        "{}",
        build.run.stderr
    );
    assert!(!why(&project, "clean/k=a").contains("code changed"));
    assert!(!status(&project, "clean/k=a").1.contains("code changed"));
    assert_eq!(project.read_string("data/clean/k=a/o"), "A\n");

    // A MAJOR bump rebuilds with the new code.
    project.write("cairn.toml", graph("2.0.0", "", ""));
    project.build(&[]).assert_counts(2, 2, 0, 0, 0);
    assert_eq!(project.read_string("data/clean/k=a/o"), "A\nv2\n");
}

#[test]
fn on_code_change_rebuild_runs_the_job_again_set_on_the_dataset_or_the_job() {
    for (options, job_options) in [
        ("on_code_change = \"rebuild\"", ""),
        ("", "on_code_change = \"rebuild\""),
    ] {
        let project = project(options, job_options);
        change_code(&project);
        let reason = why(&project, "clean/k=a");
        assert!(
            reason.contains("will be rebuilt: code changed since built (digest ")
                && reason.contains("on_code_change = \"rebuild\""),
            "{reason}"
        );
        let build = project.build(&[]);
        build.assert_counts(2, 2, 0, 0, 0);
        assert_eq!(
            build.outputs("executed"),
            common::refs(["clean/k=a", "clean/k=b"])
        );
        assert!(
            !build.run.stderr.contains("warning:"),
            "{}",
            build.run.stderr
        );
        assert_eq!(project.read_string("data/clean/k=a/o"), "A\nv2\n");
        // Built with this code now: nothing more to do.
        project.build(&[]).assert_counts(2, 0, 2, 0, 0);
    }
}

#[test]
fn on_code_change_error_fails_until_a_bump_acknowledges_it() {
    let project = project("on_code_change = \"error\"", "");
    change_code(&project);
    let build = project.build(&["--keep-going"]);
    build.assert_code(1);
    build.assert_counts(2, 0, 0, 2, 0);
    assert!(
        build
            .run
            .stderr
            .contains("failed: job clean (clean/k=a): code changed since built (digest ")
            && build
                .run
                .stderr
                .contains("on_code_change = \"error\" refuses to keep what it built")
            && build
                .run
                .stderr
                .contains("Bump MAJOR to rebuild, or MINOR/PATCH to acknowledge"),
        "{}",
        build.run.stderr
    );
    // The data is what it was: nothing ran.
    assert_eq!(project.read_string("data/clean/k=a/o"), "A\n");
    // A MINOR bump acknowledges it: kept, the build succeeds.
    project.write(
        "cairn.toml",
        graph("1.1.0", "on_code_change = \"error\"", ""),
    );
    let build = project.build(&[]);
    build.assert_code(0);
    assert_eq!(build.count("executed"), 0);
    assert_eq!(build.count("failed"), 0);
    assert_eq!(project.read_string("data/clean/k=a/o"), "A\n");
}

#[test]
fn on_code_change_is_checked_in_the_graph_file() {
    let unversioned = Project::with_graph(
        "[datasets.clean]\non_code_change = \"warn\"\n[jobs.clean]\noutputs = [\"clean/x=1\"]\nrun = [\"true\"]\n",
    );
    unversioned
        .cairn(&["status"])
        .assert_usage_error("cairn.toml:2: datasets.clean.on_code_change: only a versioned dataset keeps its partitions");
    let unknown = Project::with_graph(&graph("1.0.0", "on_code_change = \"ignore\"", ""));
    let run = unknown.cairn(&["status"]);
    run.assert_usage_error("cairn.toml:");
    assert!(
        run.stderr.contains("ignore") && run.stderr.contains("rebuild"),
        "{}",
        run.stderr
    );
}
