//! Property: for random graphs and random sequences of edits (input content,
//! touch, version bumps, invalidations, reordering a job's inputs), an incremental build produces the same
//! data as a clean build in a fresh store, and never runs an action whose key
//! was already built (unless one of its outputs was invalidated).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Project, snapshot};
use proptest::prelude::*;
const KEYS: [&str; 3] = ["a", "b", "c"];

/// A random layered graph: stage `i` reads the source and/or earlier stages.
#[derive(Debug, Clone)]
struct GraphSpec {
    /// For each stage: which earlier datasets it reads (0 = the source).
    stages: Vec<Vec<usize>>,
    /// Whether the stage's job keeps only the line count (so most input
    /// edits do not change its output: early cutoff).
    counts_only: Vec<bool>,
}

#[derive(Debug, Clone)]
enum Edit {
    /// Append a line to one source file.
    Content { key: usize, line: u8 },
    /// Rewrite one source file with identical bytes (new mtime).
    Touch { key: usize },
    /// Bump a stage's version: minor (valid) or major (invalidating).
    Version { stage: usize, major: bool },
    /// `cairn invalidate` one partition of a stage.
    Invalidate { stage: usize, key: usize },
    /// Reverse the order of a stage's inputs in the graph file (the job sees
    /// them by position: issue 26).
    Reorder { stage: usize },
}

fn graph_strategy() -> impl Strategy<Value = GraphSpec> {
    (2usize..=4).prop_flat_map(|count| {
        let stages: Vec<BoxedStrategy<Vec<usize>>> = (1..=count)
            .map(|stage| {
                proptest::collection::btree_set(0..stage, 1..=stage.min(2))
                    .prop_map(|set| set.into_iter().collect())
                    .boxed()
            })
            .collect();
        (stages, proptest::collection::vec(any::<bool>(), count)).prop_map(
            |(stages, counts_only)| GraphSpec {
                stages,
                counts_only,
            },
        )
    })
}

fn edit_strategy(stages: usize) -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0..KEYS.len(), any::<u8>()).prop_map(|(key, line)| Edit::Content { key, line }),
        (0..KEYS.len()).prop_map(|key| Edit::Touch { key }),
        (1..=stages, any::<bool>()).prop_map(|(stage, major)| Edit::Version { stage, major }),
        (1..=stages, 0..KEYS.len()).prop_map(|(stage, key)| Edit::Invalidate { stage, key }),
        (1..=stages).prop_map(|stage| Edit::Reorder { stage }),
    ]
}

fn dataset(index: usize) -> String {
    if index == 0 {
        "src".to_owned()
    } else {
        format!("d{index}")
    }
}

/// Writes cairn.toml for `spec` with the given versions (major, minor),
/// each stage's inputs in reverse order where `reversed` says so.
fn write_graph(project: &Project, spec: &GraphSpec, versions: &[(u64, u64)], reversed: &[bool]) {
    let mut text = String::from(
        "[datasets.src]\nsource = \"src/{p}.txt\"\n\n[dimensions.p]\nvalues = [\"a\", \"b\", \"c\"]\n\n",
    );
    for (index, inputs) in spec.stages.iter().enumerate() {
        let stage = index + 1;
        let (major, minor) = versions[index];
        let mut inputs: Vec<String> = inputs
            .iter()
            .map(|input| format!("\"{}/p={{p}}\"", dataset(*input)))
            .collect();
        if reversed[index] {
            inputs.reverse();
        }
        let mode = if spec.counts_only[index] {
            "count"
        } else {
            "concat"
        };
        text.push_str(&format!(
            "[datasets.d{stage}]\nversion = \"{major}.{minor}.0\"\n\n[jobs.j{stage}]\noutputs = [\"d{stage}/p={{p}}\"]\ninputs = [{}]\nrun = [\"sh\", \"job.sh\", \"{mode}\", \"{stage}\"]\n\n",
            inputs.join(", ")
        ));
    }
    project.write("cairn.toml", text);
}

const JOB: &str = r#"#!/bin/sh
# job.sh MODE STAGE: reads every input (a file, or a directory holding `out`).
mode=$1; stage=$2; i=0
while [ "$i" -lt "$CAIRN_INPUT_COUNT" ]; do
  eval "input=\$CAIRN_INPUT_$i"
  if [ -d "$input" ]; then cat "$input/out"; else cat "$input"; fi
  i=$((i + 1))
done > "$CAIRN_OUT/all"
if [ "$mode" = count ]; then
  echo "stage $stage: $(wc -l < "$CAIRN_OUT/all" | tr -d ' ') lines" > "$CAIRN_OUT/out"
else
  { echo "stage $stage"; cat "$CAIRN_OUT/all"; } > "$CAIRN_OUT/out"
fi
rm "$CAIRN_OUT/all"
"#;

/// The data of a clean build of the project's files (not data, not store)
/// in a fresh directory.
fn clean_build_data(project: &Project) -> BTreeMap<String, Vec<u8>> {
    let fresh = Project::empty();
    for name in ["cairn.toml", "job.sh"] {
        fresh.write(name, project.read(name));
    }
    for key in KEYS {
        let file = format!("src/{key}.txt");
        fresh.write(&file, project.read(&file));
    }
    fresh.cairn(&["build"]).assert_code(0);
    snapshot(&fresh.file("data"))
}

fn check(spec: &GraphSpec, edits: &[Edit]) {
    let project = Project::empty();
    project.write("job.sh", JOB);
    for key in KEYS {
        project.write(&format!("src/{key}.txt"), format!("{key}\n"));
    }
    let mut versions = vec![(1u64, 0u64); spec.stages.len()];
    let mut reversed = vec![false; spec.stages.len()];
    write_graph(&project, spec, &versions, &reversed);
    project.cairn(&["build"]).assert_code(0);

    for edit in edits {
        let mut invalidated: BTreeSet<String> = BTreeSet::new();
        match edit {
            Edit::Content { key, line } => project.append(
                &format!("src/{}.txt", KEYS[*key]),
                &format!("line {line}\n"),
            ),
            Edit::Touch { key } => {
                let file = format!("src/{}.txt", KEYS[*key]);
                project.write(&file, project.read(&file));
            }
            Edit::Version { stage, major } => {
                let version = &mut versions[stage - 1];
                *version = if *major {
                    (version.0 % 3 + 1, 0)
                } else {
                    (version.0, version.1 + 1)
                };
                write_graph(&project, spec, &versions, &reversed);
            }
            Edit::Reorder { stage } => {
                reversed[stage - 1] = !reversed[stage - 1];
                write_graph(&project, spec, &versions, &reversed);
            }
            Edit::Invalidate { stage, key } => {
                let partition = format!("d{stage}/p={}", KEYS[*key]);
                project
                    .cairn(&["invalidate", &partition, "--reason", "property test"])
                    .assert_code(0);
                invalidated.insert(partition);
            }
        }
        let built_keys: BTreeSet<String> = project
            .log(&[])
            .iter()
            .filter(|event| event["kind"] == "ActionSucceeded")
            .map(|event| event["manifest"]["key"].as_str().unwrap().to_owned())
            .collect();
        let build = project.build(&[]);
        build.assert_code(0);
        for event in project
            .build_events(build.id())
            .iter()
            .filter(|e| e["kind"] == "ActionStarted")
        {
            let key = event["key"].as_str().unwrap();
            let outputs = common::string_array(&event["outputs"]);
            let forced = outputs.iter().any(|output| invalidated.contains(output));
            assert!(
                forced || !built_keys.contains(key),
                "after {edit:?}, build {} re-ran {outputs:?} whose key {key} was already built",
                build.id()
            );
        }
        assert_eq!(
            snapshot(&project.file("data")),
            clean_build_data(&project),
            "after {edit:?}, the incremental data differs from a clean build"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn incremental_build_equals_clean_build(
        (spec, edits) in graph_strategy().prop_flat_map(|spec| {
            let stages = spec.stages.len();
            (Just(spec), proptest::collection::vec(edit_strategy(stages), 1..5))
        })
    ) {
        check(&spec, &edits);
    }
}

/// A fixed sequence that exercises every edit kind, including switching a
/// major version back and reordering inputs back (which must restore, not
/// run).
#[test]
fn every_edit_kind_in_sequence() {
    let spec = GraphSpec {
        stages: vec![vec![0], vec![1], vec![0, 2]],
        counts_only: vec![false, true, false],
    };
    check(
        &spec,
        &[
            Edit::Content { key: 0, line: 7 },
            Edit::Touch { key: 1 },
            Edit::Version {
                stage: 1,
                major: false,
            },
            Edit::Version {
                stage: 2,
                major: true,
            },
            Edit::Version {
                stage: 2,
                major: true,
            },
            Edit::Version {
                stage: 2,
                major: true,
            },
            Edit::Invalidate { stage: 3, key: 2 },
            // Stage 3 concatenates its two inputs: reversing them changes
            // its output; reversing them back restores the first result.
            Edit::Reorder { stage: 3 },
            Edit::Reorder { stage: 3 },
        ],
    );
}
