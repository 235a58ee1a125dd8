//! Property: for random graphs and random sequences of edits (input content,
//! touch, version bumps, invalidations), an incremental build produces the same
//! data as a clean build in a fresh store, and never runs an action whose key
//! was already built (unless one of its outputs was invalidated).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use serde_json::Value;

const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");
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
    ]
}

fn dataset(index: usize) -> String {
    if index == 0 {
        "src".to_owned()
    } else {
        format!("d{index}")
    }
}

/// Writes cairn.toml for `spec` with the given versions (major, minor).
fn write_graph(dir: &Path, spec: &GraphSpec, versions: &[(u64, u64)]) {
    let mut text = String::from(
        "[datasets.src]\nsource = \"src/{p}.txt\"\n\n[dimensions.p]\nvalues = [\"a\", \"b\", \"c\"]\n\n",
    );
    for (index, inputs) in spec.stages.iter().enumerate() {
        let stage = index + 1;
        let (major, minor) = versions[index];
        let inputs: Vec<String> = inputs
            .iter()
            .map(|input| format!("\"{}/p={{p}}\"", dataset(*input)))
            .collect();
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
    std::fs::write(dir.join("cairn.toml"), text).unwrap();
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

fn cairn(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(CAIRN)
        .args(args)
        .current_dir(dir)
        .env_remove("USER")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(
                    path.strip_prefix(root).unwrap().to_owned(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The project files (not data, not store) copied to a fresh directory.
fn clean_build_data(project: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let fresh = tempfile::tempdir().unwrap();
    for name in ["cairn.toml", "job.sh"] {
        std::fs::copy(project.join(name), fresh.path().join(name)).unwrap();
    }
    std::fs::create_dir(fresh.path().join("src")).unwrap();
    for key in KEYS {
        let file = format!("src/{key}.txt");
        std::fs::copy(project.join(&file), fresh.path().join(&file)).unwrap();
    }
    let (code, _, stderr) = cairn(fresh.path(), &["build"]);
    assert_eq!(code, 0, "clean build failed: {stderr}");
    snapshot(&fresh.path().join("data"))
}

fn events(dir: &Path) -> Vec<Value> {
    let (code, stdout, stderr) = cairn(dir, &["log", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn check(spec: &GraphSpec, edits: &[Edit]) {
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    std::fs::write(dir.join("job.sh"), JOB).unwrap();
    std::fs::create_dir(dir.join("src")).unwrap();
    for key in KEYS {
        std::fs::write(dir.join(format!("src/{key}.txt")), format!("{key}\n")).unwrap();
    }
    let mut versions = vec![(1u64, 0u64); spec.stages.len()];
    write_graph(dir, spec, &versions);
    let (code, _, stderr) = cairn(dir, &["build"]);
    assert_eq!(code, 0, "{stderr}");

    for edit in edits {
        let mut invalidated: BTreeSet<String> = BTreeSet::new();
        match edit {
            Edit::Content { key, line } => {
                let path = dir.join(format!("src/{}.txt", KEYS[*key]));
                let mut text = std::fs::read_to_string(&path).unwrap();
                text.push_str(&format!("line {line}\n"));
                std::fs::write(&path, text).unwrap();
            }
            Edit::Touch { key } => {
                let path = dir.join(format!("src/{}.txt", KEYS[*key]));
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, bytes).unwrap();
            }
            Edit::Version { stage, major } => {
                let version = &mut versions[stage - 1];
                *version = if *major {
                    (version.0 % 3 + 1, 0)
                } else {
                    (version.0, version.1 + 1)
                };
                write_graph(dir, spec, &versions);
            }
            Edit::Invalidate { stage, key } => {
                let partition = format!("d{stage}/p={}", KEYS[*key]);
                let (code, _, stderr) = cairn(
                    dir,
                    &["invalidate", &partition, "--reason", "property test"],
                );
                assert_eq!(code, 0, "{stderr}");
                invalidated.insert(partition);
            }
        }
        let before = events(dir);
        let built_keys: BTreeSet<String> = before
            .iter()
            .filter(|event| event["kind"] == "ActionSucceeded")
            .map(|event| event["manifest"]["key"].as_str().unwrap().to_owned())
            .collect();
        let (code, stdout, stderr) = cairn(dir, &["build", "--json"]);
        assert_eq!(code, 0, "incremental build failed after {edit:?}: {stderr}");
        let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        let build = summary["build"].as_u64().unwrap();
        for event in events(dir)
            .iter()
            .filter(|e| e["build"] == build && e["kind"] == "ActionStarted")
        {
            let key = event["key"].as_str().unwrap();
            let outputs: Vec<&str> = event["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o.as_str().unwrap())
                .collect();
            let forced = outputs.iter().any(|output| invalidated.contains(*output));
            assert!(
                forced || !built_keys.contains(key),
                "after {edit:?}, build {build} re-ran {outputs:?} whose key {key} was already built"
            );
        }
        assert_eq!(
            snapshot(&dir.join("data")),
            clean_build_data(dir),
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
/// major version back (which must restore, not run).
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
        ],
    );
}
