//! Issue 3's scenario on a 30×30 podcast copy: semver policy, switching back,
//! invalidation, and `cairn why` giving the right reason each time. Asserts
//! which actions ran (from the build's JSON lines), not only counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
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

/// Builds and returns (summary, outputs of executed actions grouped by job).
fn build(dir: &Path) -> (Value, BTreeMap<String, Vec<String>>) {
    let (code, stdout, stderr) = run(dir, &["build", "--json"]);
    assert_eq!(code, 0, "build failed: {stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let mut executed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in &lines {
        if line["type"] == "action" && line["outcome"] == "executed" {
            let job = line["job"].as_str().unwrap().to_owned();
            for output in line["outputs"].as_array().unwrap() {
                executed
                    .entry(job.clone())
                    .or_default()
                    .push(output.as_str().unwrap().to_owned());
            }
        }
    }
    (lines.last().unwrap().clone(), executed)
}

fn count(executed: &BTreeMap<String, Vec<String>>, job: &str) -> usize {
    executed.get(job).map_or(0, Vec::len)
}

fn why(dir: &Path, partition: &str) -> String {
    let (code, stdout, stderr) = run(dir, &["why", partition, "--json"]);
    assert_eq!(code, 0, "why failed: {stderr}");
    let value: Value = serde_json::from_str(stdout.trim()).unwrap();
    value["reason"].as_str().unwrap().to_owned()
}

fn set_clean_version(dir: &Path, version: &str) {
    let path = dir.join("cairn.toml");
    let text = std::fs::read_to_string(&path).unwrap();
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
    std::fs::write(path, out).unwrap();
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
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

#[test]
fn semver_policy_switching_back_and_invalidation_on_30x30() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("pods");
    let generate = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/podcast/generate");
    let status = Command::new("sh")
        .arg(&generate)
        .arg(&dir)
        .args(["30", "30"])
        .status()
        .unwrap();
    assert!(status.success());
    let clean_ref = "clean/date=2024-01-01/station=S001";

    let (summary, _) = build(&dir);
    assert_eq!(
        (summary["executed"].as_u64(), summary["failed"].as_u64()),
        (Some(1830), Some(0))
    );
    let v1_data = snapshot(&dir.join("data"));

    // A minor bump keeps every partition valid; status names both versions.
    set_clean_version(&dir, "1.1.0");
    let (summary, _) = build(&dir);
    assert_eq!(summary["executed"], 0);
    let (_, status, _) = run(&dir, &["status", clean_ref]);
    assert!(
        status.contains("built by 1.0.0") && status.contains("graph now 1.1.0: valid"),
        "{status}"
    );
    assert!(why(&dir, clean_ref).contains("built by clean 1.0.0, graph now 1.1.0: still valid"));

    // A major bump with no code change: every clean action runs, no daily one
    // (identical content: early cutoff).
    set_clean_version(&dir, "2.0.0");
    let reason = why(&dir, clean_ref);
    assert!(
        reason.contains("dataset clean major version changed: 1 -> 2"),
        "{reason}"
    );
    let (summary, executed) = build(&dir);
    assert_eq!(summary["executed"], 900);
    assert_eq!(
        (
            count(&executed, "clean"),
            count(&executed, "daily"),
            count(&executed, "raw")
        ),
        (900, 0, 0)
    );

    // A major bump with a code change that alters the output: clean and daily.
    set_clean_version(&dir, "3.0.0");
    let script = dir.join("jobs/clean.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    let changed = text.replace("print st \",\" $0", "if ($0 !~ /,1$/) print st \",\" $0");
    assert_ne!(
        text, changed,
        "the clean job's print statement moved; update this test"
    );
    std::fs::write(&script, changed).unwrap();
    let (summary, executed) = build(&dir);
    assert_eq!(
        (count(&executed, "clean"), count(&executed, "daily")),
        (900, 30)
    );
    assert_eq!(summary["executed"], 930);

    // Back to the first major (and the first code): nothing runs, the data
    // paths hold the earlier bytes again.
    std::fs::write(&script, text).unwrap();
    set_clean_version(&dir, "1.2.0");
    let reason = why(&dir, "daily/date=2024-01-01");
    assert!(
        reason.contains("restores it from the store without running the job"),
        "{reason}"
    );
    let (summary, _) = build(&dir);
    assert_eq!(summary["executed"], 0);
    assert_eq!(snapshot(&dir.join("data")), v1_data);

    // Invalidating one date's clean partitions runs exactly those 30 actions
    // (their outputs are identical, so daily is cut off).
    let (code, _, stderr) = run(
        &dir,
        &[
            "invalidate",
            "clean/date=2024-01-04/station={station}",
            "--reason",
            "test",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let reason = why(&dir, "clean/date=2024-01-04/station=S002");
    assert!(
        reason.contains("was invalidated") && reason.ends_with(": test"),
        "{reason}"
    );
    let (summary, executed) = build(&dir);
    assert_eq!(summary["executed"], 30);
    let mut expected: Vec<String> = (1..=30)
        .map(|s| format!("clean/date=2024-01-04/station=S{s:03}"))
        .collect();
    let mut actual = executed["clean"].clone();
    expected.sort();
    actual.sort();
    assert_eq!(actual, expected);
    assert!(why(&dir, "clean/date=2024-01-04/station=S002").contains("is up to date"));

    // Each version change was recorded once.
    let (_, log, _) = run(&dir, &["log", "--json"]);
    let changes: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|event| event["kind"] == "DatasetVersionChanged" && event["dataset"] == "clean")
        .collect();
    let tos: Vec<&str> = changes
        .iter()
        .map(|event| event["to"].as_str().unwrap())
        .collect();
    assert_eq!(tos, ["1.0.0", "1.1.0", "2.0.0", "3.0.0", "1.2.0"]);
}

#[test]
fn why_names_the_changed_input_and_an_upstream_failure() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("pods");
    let generate = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/podcast/generate");
    assert!(
        Command::new("sh")
            .arg(&generate)
            .arg(&dir)
            .args(["2", "2"])
            .status()
            .unwrap()
            .success()
    );
    let (code, _, _) = run(&dir, &["why", "daily/date=2024-01-01", "--json"]);
    assert_eq!(code, 0);
    assert!(why(&dir, "raw/date=2024-01-01/station=S001").contains("never built"));
    build(&dir);

    let input = dir.join("inputs/2024-01-01/S002.txt");
    let mut text = std::fs::read_to_string(&input).unwrap();
    text.push_str("ep0999,5\n");
    std::fs::write(&input, text).unwrap();
    let reason = why(&dir, "raw/date=2024-01-01/station=S002");
    assert!(
        reason.contains("input inputs/date=2024-01-01/station=S002 content changed from"),
        "{reason}"
    );
    assert!(
        why(&dir, "daily/date=2024-01-01")
            .contains("input clean/date=2024-01-01/station=S002 will be rebuilt")
    );

    // Make clean fail: daily's explanation names the failed upstream.
    std::fs::write(dir.join("jobs/clean.sh"), "echo broken >&2; exit 4\n").unwrap();
    let (code, _, _) = run(&dir, &["build", "--keep-going"]);
    assert_eq!(code, 1);
    let reason = why(&dir, "daily/date=2024-01-01");
    assert!(
        reason.contains(
            "waiting on upstream clean/date=2024-01-01/station=S002, which failed in build"
        ),
        "{reason}"
    );
    assert!(reason.contains("exited with status 4"), "{reason}");
}
