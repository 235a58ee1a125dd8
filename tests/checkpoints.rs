//! Checkpointed jobs (issue 6) on the paging fixture: a failed or killed run
//! resumes from its last recorded checkpoint, retries resume too, and bad
//! checkpoints corrupt nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

fn copy_fixture(into: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/paging");
    let dir = into.join("paging");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&source)
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    for leftover in ["data", ".cairn", "api/access.log"] {
        let _ = std::fs::remove_dir_all(dir.join(leftover));
        let _ = std::fs::remove_file(dir.join(leftover));
    }
    dir
}

fn cairn(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(CAIRN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn events(dir: &Path) -> Vec<Value> {
    let (code, stdout, stderr) = cairn(dir, &["log", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The pages the fake API served since the log was last cleared.
fn pages_read(dir: &Path) -> Vec<u32> {
    let log = std::fs::read_to_string(dir.join("api/access.log")).unwrap_or_default();
    log.lines()
        .map(|line| line.trim_start_matches("page ").parse().unwrap())
        .collect()
}

fn clear_access_log(dir: &Path) {
    let _ = std::fs::remove_file(dir.join("api/access.log"));
}

fn read_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn uninterrupted_data() -> Vec<(String, Vec<u8>)> {
    let temp = tempfile::tempdir().unwrap();
    let dir = copy_fixture(temp.path());
    let (code, _, stderr) = cairn(&dir, &["build"]);
    assert_eq!(code, 0, "{stderr}");
    read_tree(&dir.join("data/feed/source=reviews"))
}

fn last_checkpoint_page(dir: &Path) -> u64 {
    let (_, status, _) = cairn(dir, &["status", "--json"]);
    let row: Value = serde_json::from_str(status.lines().next().unwrap()).unwrap();
    let reason = row["reason"].as_str().unwrap();
    let start = reason.find("resumable from {\"page\": ").expect(reason)
        + "resumable from {\"page\": ".len();
    reason[start..].split('}').next().unwrap().parse().unwrap()
}

#[test]
fn a_failed_run_resumes_after_its_last_checkpoint() {
    let temp = tempfile::tempdir().unwrap();
    let dir = copy_fixture(temp.path());
    std::fs::write(dir.join("control/fail-at"), "30").unwrap();
    let (code, _, _) = cairn(&dir, &["build"]);
    assert_eq!(code, 1);
    assert_eq!(pages_read(&dir), (1..=30).collect::<Vec<_>>());
    assert_eq!(last_checkpoint_page(&dir), 30);
    let reason = cairn(&dir, &["why", "feed/source=reviews"]).1;
    assert!(reason.contains("resumable from {\"page\": 30}"), "{reason}");

    std::fs::remove_file(dir.join("control/fail-at")).unwrap();
    clear_access_log(&dir);
    let (code, _, stderr) = cairn(&dir, &["build"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        pages_read(&dir),
        (31..=50).collect::<Vec<_>>(),
        "the resumed run read only the remaining pages"
    );
    assert_eq!(
        read_tree(&dir.join("data/feed/source=reviews")),
        uninterrupted_data()
    );

    let started: Vec<Value> = events(&dir)
        .into_iter()
        .filter(|e| e["kind"] == "ActionStarted")
        .collect();
    assert_eq!(started.len(), 2);
    assert!(started[0]["resumed_from"].is_null());
    assert!(started[1]["resumed_from"].as_u64().is_some());
    // Success clears the checkpoint: a forced rebuild starts from page 1.
    let (code, _, stderr) = cairn(
        &dir,
        &["invalidate", "feed/source=reviews", "--reason", "again"],
    );
    assert_eq!(code, 0, "{stderr}");
    clear_access_log(&dir);
    assert_eq!(cairn(&dir, &["build"]).0, 0);
    assert_eq!(pages_read(&dir).first(), Some(&1));
}

#[test]
fn kill_9_of_cairn_resumes_from_the_last_recorded_checkpoint() {
    let temp = tempfile::tempdir().unwrap();
    let dir = copy_fixture(temp.path());
    std::fs::write(dir.join("control/sleep"), "0.05").unwrap();
    let mut child = Command::new(CAIRN)
        .arg("build")
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pages_read(&dir).len() < 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let read_before = pages_read(&dir).len();
    assert!(
        (20..50).contains(&read_before),
        "killed at page {read_before}"
    );
    // The job died with cairn: the access log stops growing.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        pages_read(&dir).len(),
        read_before,
        "the job outlived cairn"
    );

    std::fs::remove_file(dir.join("control/sleep")).unwrap();
    clear_access_log(&dir);
    let (code, _, stderr) = cairn(&dir, &["build"]);
    assert_eq!(code, 0, "{stderr}");
    let resumed = pages_read(&dir);
    let first = *resumed.first().unwrap();
    assert!(
        first > 10,
        "resumed from page {first}, expected near {read_before}"
    );
    assert_eq!(*resumed.last().unwrap(), 50);
    assert_eq!(
        read_tree(&dir.join("data/feed/source=reviews")),
        uninterrupted_data()
    );
}

#[test]
fn retries_resume_within_one_build() {
    let temp = tempfile::tempdir().unwrap();
    let dir = copy_fixture(temp.path());
    let graph = std::fs::read_to_string(dir.join("cairn.toml")).unwrap();
    std::fs::write(
        dir.join("cairn.toml"),
        graph.replace("retries = 0", "retries = 2"),
    )
    .unwrap();
    std::fs::write(dir.join("control/fail-once-at"), "10").unwrap();
    let (code, stdout, stderr) = cairn(&dir, &["build", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        (summary["executed"].as_u64(), summary["failed"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(
        pages_read(&dir),
        (1..=50).collect::<Vec<_>>(),
        "page 1..10 once, then 11..50"
    );
    let events = events(&dir);
    let attempts: Vec<u64> = events
        .iter()
        .filter(|e| e["kind"] == "ActionStarted")
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2]);
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "ActionFailed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("attempt 1 of 3; retrying")
    );
    let second = events
        .iter()
        .filter(|e| e["kind"] == "ActionStarted")
        .nth(1)
        .unwrap();
    assert!(second["resumed_from"].as_u64().is_some());
    assert_eq!(
        read_tree(&dir.join("data/feed/source=reviews")),
        uninterrupted_data()
    );
}

/// The stderr a job's last successful run captured (the blob named by the
/// manifest), where cairn reports ignored checkpoints.
fn captured_stderr(dir: &Path) -> String {
    let succeeded = events(dir)
        .into_iter()
        .rfind(|e| e["kind"] == "ActionSucceeded")
        .unwrap();
    let digest = succeeded["manifest"]["stderr"].as_str().unwrap().to_owned();
    let blob = dir.join(".cairn/cas").join(&digest[..2]).join(&digest[2..]);
    String::from_utf8_lossy(&std::fs::read(blob).unwrap()).into_owned()
}

#[test]
fn bad_checkpoints_are_reported_and_corrupt_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let dir = copy_fixture(temp.path());
    let job = r#"
printf 'not json at all' > "$CAIRN_CHECKPOINT"; sleep 0.3
head -c 2000000 /dev/zero | tr '\0' ' ' > "$CAIRN_CHECKPOINT.tmp"; mv "$CAIRN_CHECKPOINT.tmp" "$CAIRN_CHECKPOINT"; sleep 0.3
(sleep 0.5; echo '{"late": true}' > "$CAIRN_CHECKPOINT"; touch "$PWD/late-writer-ran") &
echo done > "$CAIRN_OUT/result"
"#;
    std::fs::write(dir.join("jobs/fetch.sh"), job).unwrap();
    let (code, _, stderr) = cairn(&dir, &["build"]);
    assert_eq!(code, 0, "{stderr}");
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !dir.join("late-writer-ran").exists(),
        "a process the job left behind outlived it"
    );
    let events = events(&dir);
    assert!(
        events.iter().all(|e| e["kind"] != "ActionCheckpointed"),
        "a bad checkpoint was recorded"
    );
    let log = captured_stderr(&dir);
    assert!(
        log.contains("ignored a checkpoint that is not JSON"),
        "{log}"
    );
    assert!(
        log.contains("ignored a checkpoint of 2000000 bytes (the limit is 1048576 bytes)"),
        "{log}"
    );
    // The store stays consistent.
    let (code, out, err) = cairn(&dir, &["build", "--json"]);
    assert_eq!(code, 0, "{err}");
    let summary: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["executed"], 0);
}
