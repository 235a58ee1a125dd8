//! Ctrl-C (SIGINT) during a build stops the running jobs, records what
//! finished, exits 130, and the next build runs only what was not recorded.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

fn log_events(dir: &Path) -> Vec<Value> {
    let output = Command::new(CAIRN)
        .args(["log", "--json"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn sigint_stops_jobs_records_what_finished_and_the_next_build_resumes() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("pods");
    let generate = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/podcast/generate");
    assert!(
        Command::new("sh")
            .arg(&generate)
            .arg(&dir)
            .args(["4", "4"])
            .status()
            .unwrap()
            .success()
    );
    // Slow every clean action down so the interrupt lands mid-build.
    let script = dir.join("jobs/clean.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    std::fs::write(&script, format!("sleep 0.3\n{text}")).unwrap();

    let child = Command::new(CAIRN)
        .args(["build", "--json", "-j", "2"])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until at least one clean action has been recorded, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let started_clean = dir.join("data/clean").exists();
        if started_clean || Instant::now() > deadline {
            break;
        }
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cairn took too long to stop"
    );
    assert_eq!(
        output.status.code(),
        Some(130),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true);
    let total = summary["total"].as_u64().unwrap();
    assert_eq!(total, 4 * 4 * 2 + 4);
    let done = summary["executed"].as_u64().unwrap();
    assert!(
        done < total,
        "the interrupt came too late to test anything: {summary}"
    );

    let events = log_events(&dir);
    let finished = events
        .iter()
        .find(|event| event["kind"] == "BuildFinished")
        .unwrap();
    assert_eq!(finished["interrupted"], true);
    let succeeded = events
        .iter()
        .filter(|event| event["kind"] == "ActionSucceeded")
        .count() as u64;
    assert_eq!(
        succeeded, done,
        "every executed action reported is recorded"
    );

    // No leftover job processes and no staging directories.
    assert!(!dir.join("data/.cairn-tmp").exists());

    // The next build runs exactly the actions that were not recorded.
    let output = Command::new(CAIRN)
        .args(["build", "--json"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_str(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(summary["executed"].as_u64().unwrap(), total - done);
    assert_eq!(summary["cached"].as_u64().unwrap(), done);
}
