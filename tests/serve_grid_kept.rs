//! The grids' answers kept for the next server (server/src/grids.rs, "kept
//! between runs"; docs/internals.md, "Cache files"): the first request
//! after a restart is given the answer the last server computed for the
//! store as it is now, and that answer is computed again behind it; an
//! answer of another log, or a damaged file, is never given.

mod common;
mod serve_support;

use std::time::{Duration, Instant};

use common::Project;
use serde_json::{Value, json};
use serve_support::Server;

const LONG: Duration = Duration::from_secs(60);

fn runs(server: &Server) -> Value {
    let answer = server.get("/v1/datasets/clean/grid");
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()["runs"].clone()
}

/// Asks until the answer is `want` (a computation behind the first one).
fn runs_become(server: &Server, want: &Value) {
    let started = Instant::now();
    loop {
        let got = runs(server);
        if got == *want {
            return;
        }
        assert!(started.elapsed() < LONG, "still {got}, not {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kept_files(project: &Project) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(project.file(".cairn/grids")) else {
        return Vec::new();
    };
    entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "answer"))
        .collect()
}

#[test]
fn a_restarted_server_gives_the_kept_grid_of_the_same_log_once_then_computes_it_again() {
    let project = Project::podcast(2, 2);
    project
        .cairn(&["build", "daily/date=2024-01-01"])
        .assert_code(0);
    let built = json!([["built", 2], ["missing", 2]]);
    let server = Server::start(project.path(), &[]);
    assert_eq!(runs(&server), built);
    server.stop();
    assert_eq!(kept_files(&project).len(), 1, "the answer is kept");

    // Outside any server, a built partition's data is deleted: no event.
    std::fs::remove_dir_all(project.file("data/clean/date=2024-01-01/station=S002"))
        .expect("delete a data path");
    let restored = json!([["built", 1], ["stale", 1], ["missing", 2]]);
    let server = Server::start(project.path(), &[]);
    // Same log: the kept answer, at once; then the one computed behind it.
    assert_eq!(runs(&server), built, "the kept answer");
    runs_become(&server, &restored);
    server.stop();

    // The log moved (an invalidation): the kept answer is not given.
    project
        .cairn(&[
            "invalidate",
            "clean/date=2024-01-01/station=S001",
            "--reason",
            "bad sensor",
        ])
        .assert_code(0);
    let server = Server::start(project.path(), &[]);
    assert_eq!(runs(&server), json!([["stale", 2], ["missing", 2]]));
    server.stop();

    // A damaged file (a count in the body edited, the log unchanged): a
    // miss, computed afresh.
    let file = kept_files(&project).pop().expect("a kept answer");
    let text = std::fs::read(&file).unwrap();
    let at = text
        .windows(10)
        .position(|window| window == b"\"stale\",2]")
        .expect("the kept runs");
    let mut edited = text;
    edited[at + 8] = b'3';
    std::fs::write(&file, &edited).unwrap();
    let server = Server::start(project.path(), &[]);
    assert_eq!(runs(&server), json!([["stale", 2], ["missing", 2]]));
    server.stop();
}
