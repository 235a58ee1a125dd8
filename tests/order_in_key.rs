//! Issue 26, section 1: a job sees its inputs and outputs by position
//! (`CAIRN_INPUT_<i>`, `CAIRN_OUTPUT_<i>`, `CAIRN_IN`, `CAIRN_OUT`), so their
//! order is part of what it observes and must be part of its key. Each test
//! reorders something, asserts which actions re-ran, and compares the data
//! with a clean build of the same files.

mod common;

use std::collections::BTreeMap;

use common::{Project, snapshot};
use serde_json::Value;

/// The data of a clean build of `files` (copied from `project`) in a fresh
/// directory.
fn clean_build_data(project: &Project, files: &[&str]) -> BTreeMap<String, Vec<u8>> {
    let fresh = Project::empty();
    for name in files {
        fresh.write(name, project.read(name));
    }
    fresh.build(&[]).assert_code(0);
    snapshot(&fresh.file("data"))
}

fn why(project: &Project, partition: &str) -> Value {
    let run = project.cairn(&["why", partition, "--json"]);
    run.assert_code(0);
    serde_json::from_str(run.stdout.trim()).expect("why --json prints one object")
}

const REORDER: &str = r#"[datasets.src]
source = "src/{k}.txt"
[datasets.cat]
[jobs.cat]
outputs = ["cat/x=1"]
inputs = ["src/k=b", "src/k=a"]
run = ["sh", "-c", "cat \"$CAIRN_INPUT_0\" \"$CAIRN_INPUT_1\" > \"$CAIRN_OUT/o\""]
"#;

/// The exact reproduction of the issue: swapping two inputs in the graph
/// file re-runs the job, and its output is what a clean build gives.
#[test]
fn reordering_inputs_in_the_graph_file_reruns_the_job() {
    let project = Project::with_graph(REORDER);
    project.write("src/a.txt", "A\n");
    project.write("src/b.txt", "B\n");
    project.build(&[]).assert_counts(1, 1, 0, 0, 0);
    assert_eq!(project.read_string("data/cat/x=1/o"), "B\nA\n");

    project.write(
        "cairn.toml",
        REORDER.replace(r#"["src/k=b", "src/k=a"]"#, r#"["src/k=a", "src/k=b"]"#),
    );
    // Asked before building: the order is named as the reason.
    let explained = why(&project, "cat/x=1");
    assert_eq!(explained["state"], "rebuild", "{explained}");
    let reason = explained["reason"].as_str().unwrap();
    assert!(
        reason.contains("the order of the inputs changed")
            && reason.contains("CAIRN_INPUT_0 was src/k=b, is now src/k=a"),
        "{reason}"
    );
    let build = project.build(&[]);
    build.assert_counts(1, 1, 0, 0, 0);
    assert_eq!(
        build.outputs("executed"),
        common::refs(["cat/x=1"]),
        "the reordered action re-ran"
    );
    assert_eq!(project.read_string("data/cat/x=1/o"), "A\nB\n");
    assert_eq!(
        snapshot(&project.file("data")),
        clean_build_data(&project, &["cairn.toml", "src/a.txt", "src/b.txt"])
    );

    // Back to the first order: that key was built, so it is restored, not
    // run, and the data is the first build's again.
    project.write("cairn.toml", REORDER);
    let back = project.build(&[]);
    back.assert_counts(1, 0, 1, 0, 0);
    assert_eq!(project.read_string("data/cat/x=1/o"), "B\nA\n");
}

/// A job that concatenates all its inputs, however many.
const CONCAT_ALL: &str = r#"[datasets.src]
source = "src/{k}.txt"
[datasets.cat]
[jobs.cat]
outputs = ["cat/x=1"]
inputs = ["src/k=a", "src/k=a"]
run = ["sh", "-c", "i=0; while [ $i -lt $CAIRN_INPUT_COUNT ]; do eval cat \"\\$CAIRN_INPUT_$i\"; i=$((i + 1)); done > \"$CAIRN_OUT/o\""]
"#;

/// The same input passed twice is two positions the job sees: dropping the
/// repeat changes the key.
#[test]
fn a_repeated_input_is_part_of_the_key() {
    let project = Project::with_graph(CONCAT_ALL);
    project.write("src/a.txt", "A\n");
    project.build(&[]).assert_counts(1, 1, 0, 0, 0);
    assert_eq!(project.read_string("data/cat/x=1/o"), "A\nA\n");
    project.write(
        "cairn.toml",
        CONCAT_ALL.replace(r#"["src/k=a", "src/k=a"]"#, r#"["src/k=a"]"#),
    );
    let reason = why(&project, "cat/x=1")["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains(
            "the inputs changed (2 before, 1 now): CAIRN_INPUT_1 was src/k=a, is now nothing"
        ),
        "{reason}"
    );
    let build = project.build(&[]);
    build.assert_counts(1, 1, 0, 0, 0);
    assert_eq!(project.read_string("data/cat/x=1/o"), "A\n");
    assert_eq!(
        snapshot(&project.file("data")),
        clean_build_data(&project, &["cairn.toml", "src/a.txt"])
    );
}

const TWO_OUTPUTS: &str = r#"[datasets.src]
source = "src/{k}.txt"
[datasets.first]
[datasets.second]
[dimensions.k]
values = ["a"]
[jobs.split]
outputs = ["first/k={k}", "second/k={k}"]
inputs = ["src/k={k}"]
run = ["sh", "-c", "echo one > \"$CAIRN_OUTPUT_0/o\"; echo two > \"$CAIRN_OUTPUT_1/o\""]
"#;

/// Swapping a declarative job's two outputs: the job now writes `one` into
/// `second` and `two` into `first`, and each partition gets its own.
#[test]
fn swapping_two_declarative_outputs_gives_each_the_right_content() {
    let project = Project::with_graph(TWO_OUTPUTS);
    project.write("src/a.txt", "a\n");
    project.build(&[]).assert_counts(1, 1, 0, 0, 0);
    assert_eq!(project.read_string("data/first/k=a/o"), "one\n");
    assert_eq!(project.read_string("data/second/k=a/o"), "two\n");

    project.write(
        "cairn.toml",
        TWO_OUTPUTS.replace(
            r#"["first/k={k}", "second/k={k}"]"#,
            r#"["second/k={k}", "first/k={k}"]"#,
        ),
    );
    let reason = why(&project, "first/k=a")["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains(
            "the order of the outputs changed: CAIRN_OUTPUT_0 was first/k=a, is now second/k=a"
        ),
        "{reason}"
    );
    let build = project.build(&[]);
    build.assert_counts(1, 1, 0, 0, 0);
    assert_eq!(
        build.outputs("executed"),
        common::refs(["first/k=a", "second/k=a"])
    );
    assert_eq!(project.read_string("data/first/k=a/o"), "two\n");
    assert_eq!(project.read_string("data/second/k=a/o"), "one\n");
    assert_eq!(
        snapshot(&project.file("data")),
        clean_build_data(&project, &["cairn.toml", "src/a.txt"])
    );
}

const CONFIGURED: &str = r#"[datasets.src]
source = "src/{k}.txt"
[datasets.cat]
version = "1.0.0"
[jobs.cat]
outputs = ["cat/x=1"]
configure = ["sh", "configure.sh"]
run = ["sh", "-c", "cat \"$CAIRN_INPUT_0\" \"$CAIRN_INPUT_1\" > \"$CAIRN_OUT/o\""]
code = ["configure.sh", "order.txt"]
"#;

/// A configure step whose answer lists the inputs in the order of
/// `order.txt` (listed in `code`, so its answer is re-asked when it changes;
/// the dataset is versioned, so the code digest is not in the key).
const CONFIGURE: &str = r#"set -eu
first=$(sed -n 1p order.txt); second=$(sed -n 2p order.txt)
printf '{"configs":[{"outputs":["%s"],"inputs":["src/k=%s","src/k=%s"]}]}\n' "$1" "$first" "$second"
"#;

/// A configure step that reorders its inputs re-runs the job.
#[test]
fn a_configure_step_that_reorders_its_inputs_reruns_the_job() {
    let project = Project::with_graph(CONFIGURED);
    project.write("configure.sh", CONFIGURE);
    project.write("order.txt", "b\na\n");
    project.write("src/a.txt", "A\n");
    project.write("src/b.txt", "B\n");
    project.build(&[]).assert_counts(1, 1, 0, 0, 0);
    assert_eq!(project.read_string("data/cat/x=1/o"), "B\nA\n");

    project.write("order.txt", "a\nb\n");
    let build = project.build(&[]);
    build.assert_counts(1, 1, 0, 0, 0);
    assert_eq!(build.outputs("executed"), common::refs(["cat/x=1"]));
    assert_eq!(project.read_string("data/cat/x=1/o"), "A\nB\n");
    assert_eq!(
        snapshot(&project.file("data")),
        clean_build_data(
            &project,
            &[
                "cairn.toml",
                "configure.sh",
                "order.txt",
                "src/a.txt",
                "src/b.txt"
            ]
        )
    );
}
