//! `cairn serve` end to end (docs/api.md): a real server on a loopback
//! port, started and stopped by each test, spoken to over HTTP.

mod common;
mod serve_support;

use std::collections::BTreeSet;
use std::time::Duration;

use common::Project;
use serde_json::{Value, json};
use serve_support::{SLOW_GRAPH, Server, encode};

const LONG: Duration = Duration::from_secs(60);

fn slow_project(sleep: &str) -> Project {
    let project = Project::with_graph(SLOW_GRAPH);
    project.write("sleep.txt", sleep);
    project
}

/// The kinds and outputs of build `id`'s events, from `cairn log --json`.
fn started_outputs(project: &Project, build: u64) -> Vec<String> {
    project
        .log(&["--build", &build.to_string(), "--kind", "ActionStarted"])
        .iter()
        .flat_map(|event| {
            event["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|output| output.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_submitted_build_is_polled_to_completion_and_runs_what_it_announced() {
    let project = Project::podcast(3, 2);
    let server = Server::start(project.path(), &[]);
    let answer = server.post(
        "/v1/builds",
        &json!({"refs": ["daily/date=2024-01-01"]}).to_string(),
        None,
    );
    assert_eq!(answer.status, 202, "{}", answer.body);
    let op = answer.json();
    let id = op["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("op-"), "{op}");
    assert_eq!(
        answer.location.as_deref(),
        Some(&*format!("/v1/operations/{id}"))
    );
    assert_eq!(op["name"], format!("operations/{id}"));
    assert_eq!(op["kind"], "build");
    assert_eq!(op["done"], false);
    // Announced at submit: 1 partition asked, 5 actions (2 raw, 2 clean,
    // 1 daily), none current, all 5 to run.
    assert_eq!(
        op["expected"],
        json!({"partitions": 1, "actions": 5, "current": 0, "to_run": 5})
    );
    let done = server.wait_done(&id, LONG);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["counts"]["executed"], 5, "{done}");
    assert_eq!(done["counts"]["failed"], 0, "{done}");
    assert_eq!(done["error"], Value::Null);
    assert_eq!(done["running"], json!([]));
    let build = done["build"].as_u64().unwrap();
    assert_eq!(done["result"]["build"], build);
    assert_eq!(done["result"]["type"], "summary");
    // The log says which actions ran: those of the plan, each once.
    let mut ran = started_outputs(&project, build);
    ran.sort();
    assert_eq!(
        ran,
        [
            "clean/date=2024-01-01/station=S001",
            "clean/date=2024-01-01/station=S002",
            "daily/date=2024-01-01",
            "raw/date=2024-01-01/station=S001",
            "raw/date=2024-01-01/station=S002",
        ]
    );
    // Status through the API: what `cairn status --json` prints.
    let status = server.get("/v1/status?ref=daily%2Fdate%3D2024-01-01");
    assert_eq!(status.status, 200, "{}", status.body);
    let cli = project.cairn(&["status", "--json", "daily/date=2024-01-01"]);
    cli.assert_code(0);
    assert_eq!(status.json()["partitions"], json!(cli.json_lines()));
    // A second build of the same partition runs nothing.
    let again = server.submit(&["daily/date=2024-01-01"]);
    assert_eq!(again["expected"]["to_run"], 0, "{again}");
    let again = server.wait_done(again["id"].as_str().unwrap(), LONG);
    assert_eq!(again["state"], "succeeded");
    assert_eq!(again["counts"]["executed"], 0, "{again}");
    assert_eq!(again["counts"]["cached"], 5, "{again}");
    // Listed newest first.
    let list = server.get("/v1/operations").json();
    let ids: Vec<&str> = list["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [again["id"].as_str().unwrap(), &id]);
    assert_eq!(list["next_page_token"], Value::Null);
    let page = server.get("/v1/operations?page_size=1").json();
    assert_eq!(page["operations"].as_array().unwrap().len(), 1);
    let token = page["next_page_token"].as_str().unwrap().to_owned();
    let next = server
        .get(&format!("/v1/operations?page_size=1&page_token={token}"))
        .json();
    assert_eq!(next["operations"][0]["id"], id.as_str());
    assert_eq!(next["next_page_token"], Value::Null);
    let none = server.get("/v1/operations?state=failed").json();
    assert_eq!(none["operations"], json!([]));
}

#[test]
fn an_idempotency_key_gives_the_same_operation_for_the_same_body_and_422_for_another() {
    let project = Project::podcast(2, 1);
    let server = Server::start(project.path(), &[]);
    let body = json!({"refs": ["daily/date=2024-01-01"]}).to_string();
    let first = server.post("/v1/builds", &body, Some("ci-run-17"));
    assert_eq!(first.status, 202, "{}", first.body);
    let id = first.json()["id"].as_str().unwrap().to_owned();
    // The same body, spelled differently (key order, defaults written out).
    let same = json!({"keep_going": false, "refs": ["daily/date=2024-01-01"], "retries": null});
    let second = server.post("/v1/builds", &same.to_string(), Some("ci-run-17"));
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.json()["id"], id.as_str());
    let other = json!({"refs": ["daily/date=2024-01-02"]}).to_string();
    let refused = server.post("/v1/builds", &other, Some("ci-run-17"));
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(refused.json()["error"]["status"], "ABORTED");
    assert!(refused.error_message().contains(&id), "{}", refused.body);
    // No key: a new operation each time.
    let third = server.post("/v1/builds", &body, None);
    assert_eq!(third.status, 202);
    assert_ne!(third.json()["id"], id.as_str());
    // A key that is not printable ASCII is refused.
    let bad = server.post("/v1/builds", &body, Some(&"k".repeat(256)));
    assert_eq!(bad.status, 400, "{}", bad.body);
    server.wait_done(&id, LONG);
    server.wait_done(third.json()["id"].as_str().unwrap(), LONG);
    // Only one build ran for the two submits with the key, and one for the
    // submit without: two builds in the log.
    let requested = project.log(&["--kind", "BuildRequested"]);
    assert_eq!(requested.len(), 2, "{requested:?}");
}

/// Every endpoint of docs/api.md, as (method, path).
const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/v1/builds"),
    ("POST", "/v1/backfills"),
    ("GET", "/v1/operations"),
    ("GET", "/v1/operations/op-000000000000"),
    ("POST", "/v1/operations/op-000000000000/cancel"),
    ("POST", "/v1/operations/op-000000000000/retry"),
    ("GET", "/v1/operations/op-000000000000/events"),
    ("GET", "/v1/events"),
    ("GET", "/v1/status"),
    ("GET", "/v1/partitions/daily%2Fdate%3D2024-01-01/why"),
    ("GET", "/v1/partitions/daily%2Fdate%3D2024-01-01/history"),
    ("GET", "/v1/partitions/daily%2Fdate%3D2024-01-01/logs"),
    ("GET", "/v1/plan?ref=daily%2Fdate%3D2024-01-01"),
    ("GET", "/v1/datasets"),
    ("GET", "/v1/datasets/clean/grid"),
    ("POST", "/v1/invalidate"),
    ("GET", "/v1/store/stats"),
];

#[test]
fn every_endpoint_refuses_a_missing_or_wrong_token_with_401() {
    let project = Project::podcast(1, 1);
    let server = Server::start(project.path(), &[]);
    let wrong = "0".repeat(64);
    for (method, path) in ENDPOINTS {
        for token in [None, Some(wrong.as_str()), Some("short")] {
            let answer = match *method {
                "GET" => server.get_with(path, token),
                _ => server.post_with(path, "{}", None, token),
            };
            assert_eq!(
                answer.status, 401,
                "{method} {path} {token:?}: {}",
                answer.body
            );
            assert_eq!(answer.json()["error"]["status"], "UNAUTHENTICATED");
            assert!(
                answer
                    .www_authenticate
                    .as_deref()
                    .is_some_and(|value| value.starts_with("Bearer")),
                "{method} {path}: {answer:?}"
            );
        }
    }
    // Health, readiness and metrics need none.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(server.get_with(path, None).status, 200, "{path}");
    }
    // Nothing was built or recorded by the refused requests.
    assert_eq!(project.log(&[]), Vec::<Value>::new());
}

#[test]
fn public_read_lets_reads_in_without_the_token_but_not_writes() {
    let project = Project::podcast(1, 1);
    let server = Server::start(project.path(), &["--public-read"]);
    let read = server.get_with("/v1/status", None);
    assert_eq!(read.status, 200, "{}", read.body);
    for (method, path) in ENDPOINTS.iter().filter(|(method, _)| *method == "POST") {
        let answer = server.post_with(path, "{}", None, None);
        assert_eq!(answer.status, 401, "{method} {path}: {}", answer.body);
    }
}

#[test]
fn the_token_file_is_private_and_kept_across_restarts() {
    let project = Project::podcast(1, 1);
    let first = Server::start(project.path(), &[]).token.clone();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(project.file(".cairn/serve.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(first.len(), 64);
    let second = Server::start(project.path(), &[]).token.clone();
    assert_eq!(first, second);
}

#[test]
fn bad_input_gets_400_with_the_message_the_command_line_prints() {
    let project = Project::podcast(2, 1);
    project.write("backfills/bad.toml", "target = \"daily/date={date}\"\nreason = \"r\"\n\n[dimensions]\ndate = { start = \"2024-01-01\", end = \"2024-13-01\" }\n");
    let outside = Project::empty();
    outside.write(
        "elsewhere.toml",
        "target = \"daily/date=2024-01-01\"\nreason = \"r\"\n",
    );
    std::os::unix::fs::symlink(outside.file("elsewhere.toml"), project.file("escape.toml"))
        .unwrap();
    let server = Server::start(project.path(), &[]);
    // A bad ref: the CLI's message.
    let cli = project.cairn(&["build", "daily/date=banana"]);
    cli.assert_code(2);
    let cli_message = cli
        .stderr
        .trim()
        .strip_prefix("error: ")
        .unwrap()
        .to_owned();
    let answer = server.post("/v1/builds", r#"{"refs": ["daily/date=banana"]}"#, None);
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.json()["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(answer.error_message(), cli_message);
    // Refs in URLs are checked alike.
    for path in [
        "/v1/partitions/daily%2Fdate%3Dbanana/why",
        "/v1/partitions/daily%2Fdate%3Dbanana/history",
        "/v1/partitions/daily%2Fdate%3Dbanana/logs",
        "/v1/status?ref=daily%2Fdate%3Dbanana",
        "/v1/plan?ref=daily%2Fdate%3Dbanana",
    ] {
        let answer = server.get(path);
        assert_eq!(answer.status, 400, "{path}: {}", answer.body);
        assert_eq!(answer.error_message(), cli_message, "{path}");
    }
    let unknown = server.get("/v1/partitions/nope%2Fdate%3D2024-01-01/why");
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    // Malformed JSON, unknown fields, wrong types: the parser's message.
    for body in [r#"{"refs": "#, r#"{"ref": ["a"]}"#, r#"{"refs": 3}"#] {
        let answer = server.post("/v1/builds", body, None);
        assert_eq!(answer.status, 400, "{body}: {}", answer.body);
        assert!(
            answer.error_message().starts_with("request body: "),
            "{}",
            answer.body
        );
    }
    // Paths leaving the project.
    for (path, why) in [
        ("../elsewhere.toml", "`..`"),
        ("backfills/../../x.toml", "`..`"),
        ("/etc/passwd", "relative to the project"),
        ("escape.toml", "leaves the project"),
        ("missing.toml", "cannot be read"),
    ] {
        let answer = server.post(
            "/v1/backfills",
            &json!({"config_path": path}).to_string(),
            None,
        );
        assert_eq!(answer.status, 400, "{path}: {}", answer.body);
        let message = answer.error_message();
        assert!(message.contains(why), "{path}: {message}");
        assert!(
            !message.contains(&project.path().display().to_string()),
            "{message}"
        );
    }
    // An invalid backfill: the CLI's file/line/field message.
    let cli = project.cairn(&["backfill", "backfills/bad.toml"]);
    cli.assert_code(2);
    let cli_message = cli
        .stderr
        .trim()
        .strip_prefix("error: ")
        .unwrap()
        .to_owned();
    assert!(
        cli_message.starts_with("backfills/bad.toml:5"),
        "{cli_message}"
    );
    let answer = server.post(
        "/v1/backfills",
        r#"{"config_path": "backfills/bad.toml"}"#,
        None,
    );
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.error_message(), cli_message);
    // The same config in the body is named by config_name.
    let answer = server.post(
        "/v1/backfills",
        &json!({"config": project.read_string("backfills/bad.toml"), "config_name": "bad.toml"})
            .to_string(),
        None,
    );
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(
        answer.error_message(),
        cli_message.replacen("backfills/bad.toml", "bad.toml", 1)
    );
    // A body over 1 MiB: refused from its Content-Length, before it is
    // read (a client still sending it may see the connection close).
    let answer = server.raw(&format!(
        "POST /v1/builds HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"refs\": [",
        server.token,
        (1 << 20) + 1
    ));
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(answer.contains("\"PAYLOAD_TOO_LARGE\""), "{answer}");
    // Exactly 1 MiB is read (and refused for what it says, not its size).
    let exact = format!(r#"{{"refs": ["{}"]}}"#, "x".repeat((1 << 20) - 14));
    assert_eq!(exact.len(), 1 << 20);
    let answer = server.post("/v1/builds", &exact, None);
    assert_eq!(
        answer.status,
        400,
        "{}",
        &answer.body[..200.min(answer.body.len())]
    );
    // Nothing was built or recorded by any of it.
    assert_eq!(project.log(&[]), Vec::<Value>::new());
}

#[test]
fn a_queued_operation_is_cancelled_before_it_runs() {
    let project = slow_project("2");
    let server = Server::start(project.path(), &["-j", "4", "--operations", "1"]);
    let first = server.submit(&["slow/n=1"]);
    let first_id = first["id"].as_str().unwrap().to_owned();
    server.wait_for(&first_id, LONG, |op| op["state"] == "running");
    let second = server.submit(&["slow/n=2"]);
    let second_id = second["id"].as_str().unwrap().to_owned();
    assert_eq!(second["state"], "queued");
    let cancelled = server.post(&format!("/v1/operations/{second_id}/cancel"), "", None);
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.json()["state"], "cancelled");
    assert_eq!(cancelled.json()["done"], true);
    // Cancelling again is harmless.
    let again = server.post(&format!("/v1/operations/{second_id}/cancel"), "", None);
    assert_eq!(again.json()["state"], "cancelled");
    let first = server.wait_done(&first_id, LONG);
    assert_eq!(first["state"], "succeeded");
    // Only the first ran: one build, one action.
    let started: Vec<String> = project
        .log(&["--kind", "ActionStarted"])
        .iter()
        .map(|event| event["outputs"][0].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(started, ["slow/n=1"]);
    // A retry of the cancelled operation builds what it asked.
    let retry = server.post(&format!("/v1/operations/{second_id}/retry"), "", None);
    assert_eq!(retry.status, 202, "{}", retry.body);
    let retried = server.wait_done(retry.json()["id"].as_str().unwrap(), LONG);
    assert_eq!(retried["state"], "succeeded");
    assert_eq!(retried["counts"]["executed"], 1);
    // A succeeded operation is not retried.
    let refused = server.post(&format!("/v1/operations/{first_id}/retry"), "", None);
    assert_eq!(refused.status, 409, "{}", refused.body);
    let missing = server.post("/v1/operations/op-000000000000/cancel", "", None);
    assert_eq!(missing.status, 404);
}

/// The server's threads (`/proc/PID/status`).
#[cfg(target_os = "linux")]
fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A submit makes no thread: queued operations wait in a queue for the
/// `--operations` runner threads. Before, each submit started a thread of
/// its own on the request path, which took a tokio worker 2 to 18 ms (148
/// on a loaded machine) while builds ran, and every request behind it on
/// that worker waited too: the bimodal submit latency of issue 22's 100
/// overlapping clients (docs/benchmarks.md, "cairn serve").
#[cfg(target_os = "linux")]
#[test]
fn queued_operations_wait_in_a_queue_not_each_on_a_thread_of_its_own() {
    let project = slow_project("3");
    let server = Server::start(project.path(), &["-j", "1", "--operations", "1"]);
    let first = server.submit(&["slow/n=1"]);
    let first_id = first["id"].as_str().unwrap().to_owned();
    server.wait_for(&first_id, LONG, |op| op["state"] == "running");
    let before = threads_of(server.pid());
    let queued: Vec<String> = (0..40)
        .map(|_| {
            let op = server.submit(&["slow/n=2"]);
            assert_eq!(op["state"], "queued", "{op}");
            op["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let after = threads_of(server.pid());
    assert!(
        after < before + 10,
        "40 queued operations took {} more threads ({before} -> {after})",
        after.saturating_sub(before)
    );
    // They still run in the order they came, once the first is done:
    // cancel all but the first two, which run one after the other.
    for id in &queued[2..] {
        let cancelled = server.post(&format!("/v1/operations/{id}/cancel"), "", None);
        assert_eq!(cancelled.json()["state"], "cancelled");
    }
    assert_eq!(server.wait_done(&first_id, LONG)["state"], "succeeded");
    let second = server.wait_done(&queued[0], LONG);
    let third = server.wait_done(&queued[1], LONG);
    assert_eq!(second["counts"]["executed"], 1, "{second}");
    assert_eq!(third["counts"]["cached"], 1, "{third}");
    assert!(
        second["started_at"].as_str() < third["started_at"].as_str(),
        "{second} {third}"
    );
    server.stop();
}

#[test]
fn a_failed_operation_says_which_partitions_failed_with_their_log_tails_and_retries_them() {
    let project = slow_project("0");
    project.write("fail-3", "");
    let server = Server::start(project.path(), &[]);
    let id = server.submit_body(&json!({"refs": ["slow/n={n}"], "keep_going": true}))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = server.wait_done(&id, LONG);
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["counts"]["executed"], 3);
    assert_eq!(done["counts"]["failed"], 1);
    let error = &done["error"];
    assert_eq!(error["code"], 1);
    assert_eq!(error["status"], "FAILED");
    assert_eq!(error["failed"][0]["partition"], "slow/n=3", "{error}");
    assert_eq!(error["failed"][0]["job"], "slow");
    assert!(
        error["failed"][0]["log_tail"]
            .as_str()
            .unwrap()
            .contains("broken input 3"),
        "{error}"
    );
    // Fixed, the retry builds only the failed partition.
    std::fs::remove_file(project.file("fail-3")).unwrap();
    let retry = server.post(&format!("/v1/operations/{id}/retry"), "", None);
    assert_eq!(retry.status, 202, "{}", retry.body);
    assert_eq!(retry.json()["request"]["refs"], json!(["slow/n=3"]));
    assert_eq!(retry.json()["request"]["retry_of"], id.as_str());
    let retried = server.wait_done(retry.json()["id"].as_str().unwrap(), LONG);
    assert_eq!(retried["state"], "succeeded", "{retried}");
    let build = retried["build"].as_u64().unwrap();
    assert_eq!(started_outputs(&project, build), ["slow/n=3"]);
}

#[test]
fn the_event_stream_resumes_after_last_event_id_with_no_gap_and_no_duplicate() {
    let project = slow_project("0.2");
    let server = Server::start(project.path(), &["-j", "2"]);
    // Subscribed from now on, before anything is built.
    let mut live = server.sse("/v1/events", None);
    let op = server.submit(&["slow/n={n}"]);
    let id = op["id"].as_str().unwrap().to_owned();
    // Read part of the build live, then drop the connection.
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let event = live.next().expect("an event");
        assert_eq!(event.event, "cairn");
        let json = event.json();
        assert_eq!(Some(json["seq"].as_u64().unwrap()), event.id);
        seen.push(json);
    }
    drop(live);
    let last = seen.last().unwrap()["seq"].as_u64().unwrap();
    server.wait_done(&id, LONG);
    // Reconnect: everything after `last`, then live.
    let mut resumed = server.sse("/v1/events", Some(last));
    let total = project.log(&[]).len();
    while seen.len() < total {
        seen.push(resumed.next().expect("an event").json());
    }
    // Exactly the log, in order: what `cairn log --json` prints.
    assert_eq!(seen, project.log(&[]));
    // Live events keep coming on the same stream.
    let next = server.submit(&["slow/n=1"]);
    let event = resumed.next().expect("a live event").json();
    assert_eq!(event["seq"].as_u64().unwrap(), total as u64 + 1);
    assert_eq!(event["kind"], "BuildRequested");
    server.wait_done(next["id"].as_str().unwrap(), LONG);
}

#[test]
fn an_operation_stream_carries_its_events_and_ends_with_done() {
    let project = slow_project("0.1");
    let server = Server::start(project.path(), &["-j", "2"]);
    // An earlier build, whose events the stream must not carry.
    let earlier = server.submit(&["slow/n=4"]);
    server.wait_done(earlier["id"].as_str().unwrap(), LONG);
    let op = server.submit(&["slow/n=1", "slow/n=2"]);
    let id = op["id"].as_str().unwrap().to_owned();
    let mut stream = server.sse(&format!("/v1/operations/{id}/events"), None);
    let mut events = Vec::new();
    let done = loop {
        let event = stream.next().expect("an event or done");
        if event.event == "done" {
            break event.json();
        }
        assert_eq!(event.event, "cairn");
        events.push(event.json());
    };
    assert!(stream.next().is_none(), "the stream ends after done");
    assert_eq!(done["id"], id.as_str());
    assert_eq!(done["state"], "succeeded");
    let build = done["build"].as_u64().unwrap();
    assert_eq!(events, project.log(&["--build", &build.to_string()]));
    // Following a finished operation replays it from the log.
    let mut replay = server.sse(&format!("/v1/operations/{id}/events"), None);
    let mut again = Vec::new();
    loop {
        let event = replay.next().expect("an event or done");
        if event.event == "done" {
            break;
        }
        again.push(event.json());
    }
    assert_eq!(again, events);
}

#[test]
fn the_event_stream_takes_the_filters_of_cairn_log_including_a_dimension_value() {
    let project = Project::podcast(2, 2);
    project.build(&[]).assert_code(0);
    let server = Server::start(project.path(), &[]);
    let expected = project.log(&["--dimension", "station=S002"]);
    assert!(!expected.is_empty());
    assert!(
        expected
            .iter()
            .all(|event| event.to_string().contains("station=S002"))
    );
    let mut stream = server.sse("/v1/events?since=1&dimension=station%3DS002", None);
    let got: Vec<Value> = (0..expected.len())
        .map(|_| stream.next().expect("an event").json())
        .collect();
    assert_eq!(got, expected);
    let jobs = project.log(&["--job", "daily", "--kind", "ActionSucceeded"]);
    let mut stream = server.sse("/v1/events?since=1&job=daily&kind=ActionSucceeded", None);
    let got: Vec<Value> = (0..jobs.len())
        .map(|_| stream.next().expect("an event").json())
        .collect();
    assert_eq!(got, jobs);
    let bad = server.get("/v1/events?dimension=station");
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.error_message().starts_with("--dimension "),
        "{}",
        bad.body
    );
}

#[test]
fn reads_answer_what_the_command_line_prints() {
    let project = Project::podcast(2, 2);
    project.build(&["daily/date=2024-01-01"]).assert_code(0);
    let server = Server::start(project.path(), &[]);
    let partition = "clean/date=2024-01-01/station=S002";
    let path = encode(partition);
    let why = server.get(&format!("/v1/partitions/{path}/why"));
    assert_eq!(why.status, 200, "{}", why.body);
    let cli = project.cairn(&["why", "--json", partition]);
    assert_eq!(why.json(), cli.json_lines()[0]);
    let history = server.get(&format!("/v1/partitions/{path}/history")).json();
    let cli = project.cairn(&["history", "--json", partition]);
    assert_eq!(history["entries"], json!(cli.json_lines()));
    assert_eq!(history["partition"], partition);
    let logs = server.get(&format!("/v1/partitions/{path}/logs"));
    assert_eq!(logs.status, 200, "{}", logs.body);
    let cli_stderr = project.cairn(&["logs", "--stderr", partition]).stdout;
    assert_eq!(logs.json()["stderr"], cli_stderr.as_str());
    let text = server.get(&format!("/v1/partitions/{path}/logs?stream=stderr"));
    assert_eq!(text.body, cli_stderr);
    assert!(text.content_type.unwrap().starts_with("text/plain"));
    let plan = server.get("/v1/plan?ref=daily%2Fdate%3D2024-01-02");
    let cli = project.cairn(&["plan", "--format", "json", "daily/date=2024-01-02"]);
    assert_eq!(
        plan.json(),
        serde_json::from_str::<Value>(&cli.stdout).unwrap()
    );
    for format in ["mermaid", "dot"] {
        let answer = server.get(&format!(
            "/v1/plan?ref=daily%2Fdate%3D2024-01-02&format={format}"
        ));
        let cli = project.cairn(&["plan", "--format", format, "daily/date=2024-01-02"]);
        assert_eq!(answer.body, cli.stdout, "{format}");
    }
    let stats = server.get("/v1/store/stats").json();
    let cli = project.cairn(&["store", "stats", "--json"]);
    let cli = &cli.json_lines()[0];
    assert_eq!(stats["events"], cli["events"]);
    assert_eq!(stats["builds"], cli["builds"]);
    // The grid: clean over date x station, row-major; 2024-01-01 built.
    let grid = server.get("/v1/datasets/clean/grid").json();
    assert_eq!(grid["order"], "row-major");
    assert_eq!(
        grid["dimensions"],
        json!([
            {"name": "date", "values": ["2024-01-01", "2024-01-02"]},
            {"name": "station", "values": ["S001", "S002"]}
        ])
    );
    assert_eq!(grid["runs"], json!([["built", 2], ["missing", 2]]));
    let datasets = server.get("/v1/datasets").json();
    let names: BTreeSet<&str> = datasets["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|dataset| dataset["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["clean", "daily", "inputs", "raw"]));
    // Each with its version from the graph file (a source has none).
    for dataset in datasets["datasets"].as_array().unwrap() {
        let version = if dataset["name"] == "inputs" {
            Value::Null
        } else {
            json!("1.0.0")
        };
        assert_eq!(dataset["version"], version, "{dataset}");
    }
    assert_eq!(server.get("/v1/datasets/nope/grid").status, 404);
    // Invalidation, recorded with its reason.
    let answer = server.post(
        "/v1/invalidate",
        &json!({"refs": [partition], "reason": "bad sensor"}).to_string(),
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["partitions"], json!([partition]));
    let grid = server.get("/v1/datasets/clean/grid").json();
    assert_eq!(
        grid["runs"],
        json!([["built", 1], ["stale", 1], ["missing", 2]])
    );
    let why = server.get(&format!("/v1/partitions/{path}/why")).json();
    assert!(
        why["reason"].as_str().unwrap().contains("bad sensor"),
        "{why}"
    );
}

/// `cairn_grid_computations_total` from `/metrics`.
fn grid_computations(server: &Server) -> u64 {
    let text = server.get_with("/metrics", None).body;
    text.lines()
        .find_map(|line| line.strip_prefix("cairn_grid_computations_total "))
        .unwrap_or_else(|| panic!("no cairn_grid_computations_total in:\n{text}"))
        .parse()
        .unwrap()
}

/// The grid's runs, and that they are `cairn status`'s states in order.
fn grid_runs(server: &Server, project: &Project) -> Value {
    let grid = server.get("/v1/datasets/clean/grid").json();
    let status = project.cairn(&["status", "--json", "clean/date={date}/station={station}"]);
    let mut runs: Vec<(String, u64)> = Vec::new();
    for row in status.json_lines() {
        let state = row["state"].as_str().unwrap().to_owned();
        match runs.last_mut() {
            Some((last, count)) if *last == state => *count += 1,
            _ => runs.push((state, 1)),
        }
    }
    assert_eq!(grid["runs"], json!(runs), "the grid is `cairn status`");
    grid["runs"].clone()
}

#[test]
fn the_grid_is_kept_until_a_build_or_an_invalidation_and_never_given_from_before_it() {
    let project = Project::podcast(2, 2);
    let server = Server::start(project.path(), &[]);
    assert_eq!(grid_runs(&server, &project), json!([["missing", 4]]));
    let computed = grid_computations(&server);
    assert_eq!(computed, 1);
    // Asked again with nothing changed: the kept answer.
    assert_eq!(grid_runs(&server, &project), json!([["missing", 4]]));
    assert_eq!(grid_computations(&server), computed, "computed again");
    // A build: the next answer is computed after it.
    let op = server.submit(&["daily/date=2024-01-01"]);
    let op = server.wait_done(op["id"].as_str().unwrap(), LONG);
    assert_eq!(op["state"], "succeeded", "{op}");
    assert_eq!(
        grid_runs(&server, &project),
        json!([["built", 2], ["missing", 2]])
    );
    let computed = grid_computations(&server);
    assert_eq!(grid_runs(&server, &project)[0], json!(["built", 2]));
    assert_eq!(grid_computations(&server), computed, "computed again");
    // An invalidation: likewise.
    let answer = server.post(
        "/v1/invalidate",
        &json!({"refs": ["clean/date=2024-01-01/station=S002"], "reason": "bad sensor"})
            .to_string(),
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        grid_runs(&server, &project),
        json!([["built", 1], ["stale", 1], ["missing", 2]])
    );
    assert!(grid_computations(&server) > computed);
}

#[test]
fn a_build_carries_its_reason_and_who_submitted_it_and_an_invalidation_who_asked() {
    let project = Project::podcast(1, 1);
    let server = Server::start(project.path(), &[]);
    let op = server.submit_body(&json!({
        "refs": ["daily/date=2024-01-01"],
        "reason": "late data from S001",
        "submitted_by": "ana",
    }));
    assert_eq!(op["reason"], "late data from S001", "{op}");
    assert_eq!(op["submitted_by"], "ana", "{op}");
    let id = op["id"].as_str().unwrap();
    server.wait_done(id, LONG);
    let listed = server.get("/v1/operations").json();
    let listed = &listed["operations"][0];
    assert_eq!(listed["id"], id);
    assert_eq!(listed["reason"], "late data from S001");
    assert_eq!(listed["submitted_by"], "ana");
    assert_eq!(listed["request"]["reason"], "late data from S001");
    // Without them: null, and the normalized request as before.
    let plain = server.submit(&["daily/date=2024-01-01"]);
    assert_eq!(plain["reason"], Value::Null, "{plain}");
    assert_eq!(plain["submitted_by"], Value::Null, "{plain}");
    assert!(plain["request"].get("reason").is_none(), "{plain}");
    server.wait_done(plain["id"].as_str().unwrap(), LONG);
    let bad = server.post(
        "/v1/builds",
        &json!({"refs": [], "submitted_by": "a\nb"}).to_string(),
        None,
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.error_message().starts_with("submitted_by: "),
        "{}",
        bad.body
    );
    let answer = server.post(
        "/v1/invalidate",
        &json!({"refs": ["clean/date=2024-01-01/station=S001"], "reason": "bad sensor", "submitted_by": "ana"})
            .to_string(),
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let invalidated = project.log(&["--kind", "PartitionInvalidated"]);
    assert_eq!(invalidated.len(), 1, "{invalidated:?}");
    assert_eq!(invalidated[0]["by"], "ana via cairn serve");
    assert_eq!(invalidated[0]["reason"], "bad sensor");
}

/// Who submitted an operation, why, when, and what it announced are in
/// its build's `BuildRequested` (store format 12): a restarted server
/// shows them as the live one did. Failed before (kept in memory only:
/// `reason` and `submitted_by` were null after a restart, `submitted_at`
/// was the build's start and `expected` made from the counts).
#[test]
fn a_restarted_server_shows_who_submitted_an_operation_why_when_and_what_it_announced() {
    let project = Project::podcast(2, 1);
    let server = Server::start(project.path(), &[]);
    let build = server.submit_body(&json!({
        "refs": ["daily/date=2024-01-01"],
        "reason": "late data from S001",
        "submitted_by": "ana",
    }));
    let build = server.wait_done(build["id"].as_str().unwrap(), LONG);
    let config = "target = \"daily/date={date}\"\nreason = \"recompute\"\n\n\
                  [dimensions.date]\nstart = \"2024-01-01\"\nend = \"2024-01-02\"\n";
    let answer = server.post(
        "/v1/backfills",
        &json!({"config": config, "config_name": "jan.toml", "submitted_by": "airflow"})
            .to_string(),
        None,
    );
    assert_eq!(answer.status, 202, "{}", answer.body);
    let backfill = answer.json();
    assert_eq!(backfill["submitted_by"], "airflow", "{backfill}");
    let reason = backfill["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.starts_with("recompute (backfill jan.toml "),
        "{reason}"
    );
    let backfill = server.wait_done(backfill["id"].as_str().unwrap(), LONG);
    assert_eq!(backfill["expected"]["current"], 3, "{backfill}");
    server.stop();
    let server = Server::start(project.path(), &[]);
    for before in [&build, &backfill] {
        let id = before["id"].as_str().unwrap();
        let after = server.get(&format!("/v1/operations/{id}")).json();
        for field in [
            "reason",
            "submitted_by",
            "submitted_at",
            "expected",
            "kind",
            "state",
            "build",
            "counts",
        ] {
            assert_eq!(after[field], before[field], "{field}: {after} vs {before}");
        }
    }
    assert_eq!(build["reason"], "late data from S001");
    assert_eq!(build["submitted_by"], "ana");
    // The log says it (`cairn log`, `GET /v1/events`).
    let requested = project.log(&["--kind", "BuildRequested"]);
    assert_eq!(
        requested[0]["reason"], "late data from S001",
        "{requested:?}"
    );
    assert_eq!(requested[0]["submission"]["submitted_by"], "ana");
    assert_eq!(requested[0]["submission"]["expected"], build["expected"]);
    assert_eq!(requested[1]["reason"], reason.as_str());
    assert_eq!(requested[1]["submission"]["submitted_by"], "airflow");
    server.stop();
}

/// A build that finds everything current (finished by the up-to-date
/// snapshot, without planning) records its reason and submission too, so
/// a restarted server shows it like any other. Before, that path recorded
/// `BuildRequested` without them: the operation was gone after a restart
/// (404), and the log lost who asked and why.
#[test]
fn a_build_finished_by_the_snapshot_keeps_its_reason_and_submitter_across_a_restart() {
    let project = Project::podcast(1, 1);
    let server = Server::start(project.path(), &[]);
    let mut done = Vec::new();
    for (round, who) in ["ana", "bo", "cy"].iter().enumerate() {
        let op = server.submit_body(&json!({
            "refs": ["daily/date=2024-01-01"],
            "reason": format!("round {round}"),
            "submitted_by": who,
        }));
        done.push(server.wait_done(op["id"].as_str().unwrap(), LONG));
    }
    assert_eq!(done[2]["counts"]["executed"], 0, "{}", done[2]);
    server.stop();
    let requested = project.log(&["--kind", "BuildRequested"]);
    assert_eq!(requested.len(), 3, "{requested:?}");
    for (round, (event, who)) in requested.iter().zip(["ana", "bo", "cy"]).enumerate() {
        assert_eq!(event["reason"], format!("round {round}"), "{event}");
        assert_eq!(event["submission"]["submitted_by"], who, "{event}");
    }
    let server = Server::start(project.path(), &[]);
    for before in &done {
        let id = before["id"].as_str().unwrap();
        let after = server.get(&format!("/v1/operations/{id}"));
        assert_eq!(after.status, 200, "{id}: {}", after.body);
        let after = after.json();
        for field in ["reason", "submitted_by", "state", "build"] {
            assert_eq!(after[field], before[field], "{field}: {after} vs {before}");
        }
    }
    server.stop();
}

#[test]
fn metrics_count_operations_actions_and_requests() {
    let project = Project::podcast(1, 1);
    let server = Server::start(project.path(), &[]);
    let op = server.submit(&["daily/date=2024-01-01"]);
    server.wait_done(op["id"].as_str().unwrap(), LONG);
    let text = server.get_with("/metrics", None);
    assert!(text.content_type.unwrap().starts_with("text/plain"));
    let text = text.body;
    for line in [
        "cairn_queue_depth 0\n",
        "cairn_actions_running 0\n",
        "cairn_actions_total{outcome=\"executed\"} 3\n",
        "cairn_operations{state=\"succeeded\"} 1\n",
        "cairn_http_request_duration_seconds_count{route=\"/v1/builds\",status=\"202\"} 1\n",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
}

#[test]
fn sigterm_lets_running_operations_finish_within_the_grace_refusing_new_ones() {
    let project = slow_project("1");
    let mut server = Server::start(project.path(), &["-j", "4", "--grace", "30s"]);
    let op = server.submit(&["slow/n={n}"]);
    let id = op["id"].as_str().unwrap().to_owned();
    server.wait_for(&id, LONG, |op| {
        op["running"].as_array().is_some_and(|r| !r.is_empty())
    });
    server.signal("TERM");
    // Not ready, and no new operation, while the running one finishes.
    let started = std::time::Instant::now();
    loop {
        let ready = server.get_with("/readyz", None);
        if ready.status == 503 {
            assert_eq!(ready.json()["error"]["status"], "UNAVAILABLE");
            break;
        }
        assert!(started.elapsed() < LONG, "readyz stays {}", ready.status);
    }
    let refused = server.post("/v1/builds", r#"{"refs": ["slow/n=1"]}"#, None);
    assert_eq!(refused.status, 503, "{}", refused.body);
    let op = server.wait_done(&id, LONG);
    assert_eq!(op["state"], "succeeded", "{op}");
    assert_eq!(server.wait_exit(LONG), Some(0), "{}", server.stderr());
    // The build ran to its end: recorded as finished, not interrupted.
    let finished = project.log(&["--kind", "BuildFinished"]);
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert_eq!(finished[0]["interrupted"], false, "{finished:?}");
    assert_eq!(finished[0]["counts"]["executed"], 4, "{finished:?}");
    project.cairn(&["replay", "--check"]).assert_code(0);
    // The store was released: the command line builds (nothing to do).
    let build = project.build(&[]);
    build.assert_code(0);
    assert_eq!(build.count("executed"), 0);
}

#[test]
fn sigterm_cancels_what_still_runs_after_the_grace_and_a_restart_builds_the_rest() {
    let project = slow_project("30");
    let mut server = Server::start(project.path(), &["-j", "4", "--grace", "1s"]);
    let op = server.submit(&["slow/n={n}"]);
    let id = op["id"].as_str().unwrap().to_owned();
    server.wait_for(&id, LONG, |op| {
        op["running"].as_array().is_some_and(|r| !r.is_empty())
    });
    let started = std::time::Instant::now();
    server.signal("TERM");
    assert_eq!(server.wait_exit(LONG), Some(0), "{}", server.stderr());
    // Cancelled after the grace, not after the jobs' 30 s.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let finished = project.log(&["--kind", "BuildFinished"]);
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert_eq!(finished[0]["interrupted"], true, "{finished:?}");
    project.cairn(&["replay", "--check"]).assert_code(0);
    // A restarted server builds what the cancelled one did not.
    project.write("sleep.txt", "0");
    let server = Server::start(project.path(), &[]);
    let op = server.submit(&["slow/n={n}"]);
    let done = server.wait_done(op["id"].as_str().unwrap(), LONG);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["counts"]["executed"], 4, "{done}");
    let built = project.status(&[]);
    assert!(
        built.values().all(|(state, _)| state == "built"),
        "{built:?}"
    );
    // `store verify` takes the writer lock: the server must be gone.
    server.stop();
    project.cairn(&["replay", "--check"]).assert_code(0);
    project.cairn(&["store", "verify"]).assert_code(0);
}

#[test]
fn cancelling_a_running_operation_stops_its_jobs_and_a_retry_builds_the_rest() {
    let project = slow_project("30");
    let server = Server::start(project.path(), &["-j", "2"]);
    let op = server.submit(&["slow/n={n}"]);
    let id = op["id"].as_str().unwrap().to_owned();
    let running = server.wait_for(&id, LONG, |op| {
        op["running"].as_array().is_some_and(|r| r.len() == 2)
    });
    let started = std::time::Instant::now();
    let answer = server.post(&format!("/v1/operations/{id}/cancel"), "", None);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let done = server.wait_done(&id, LONG);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(done["state"], "cancelled", "{done}");
    assert_eq!(done["error"]["status"], "CANCELLED");
    assert_eq!(done["error"]["code"], 130);
    assert_eq!(done["counts"]["executed"], 0, "{done}");
    let build = done["build"].as_u64().unwrap();
    let finished = project.log(&["--build", &build.to_string(), "--kind", "BuildFinished"]);
    assert_eq!(finished[0]["interrupted"], true, "{finished:?}");
    // The running actions were shown with the keys they started under.
    let keys_started: std::collections::BTreeMap<String, String> = project
        .log(&["--build", &build.to_string(), "--kind", "ActionStarted"])
        .iter()
        .map(|event| {
            (
                event["outputs"][0].as_str().unwrap().to_owned(),
                event["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for action in running["running"].as_array().unwrap() {
        let output = action["outputs"][0].as_str().unwrap();
        assert_eq!(
            action["key"].as_str(),
            keys_started.get(output).map(String::as_str),
            "{running}"
        );
    }
    // The retry builds the four partitions, none of which was built.
    project.write("sleep.txt", "0");
    let retry = server.post(&format!("/v1/operations/{id}/retry"), "", None);
    assert_eq!(retry.status, 202, "{}", retry.body);
    let mut refs: Vec<String> = retry.json()["request"]["refs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    refs.sort();
    assert_eq!(refs, ["slow/n=1", "slow/n=2", "slow/n=3", "slow/n=4"]);
    let retried = server.wait_done(retry.json()["id"].as_str().unwrap(), LONG);
    assert_eq!(retried["state"], "succeeded", "{retried}");
    assert_eq!(retried["counts"]["executed"], 4, "{retried}");
}

#[test]
fn kill_9_mid_build_then_restart_the_next_build_completes_and_the_store_verifies() {
    let project = slow_project("2");
    let mut server = Server::start(project.path(), &["-j", "4"]);
    let op = server.submit(&["slow/n={n}"]);
    let id = op["id"].as_str().unwrap().to_owned();
    server.wait_for(&id, LONG, |op| {
        op["running"].as_array().is_some_and(|r| !r.is_empty())
    });
    server.signal("KILL");
    server.wait_exit(LONG);
    project.write("sleep.txt", "0");
    let server = Server::start(project.path(), &[]);
    let op = server.submit(&["slow/n={n}"]);
    let done = server.wait_done(op["id"].as_str().unwrap(), LONG);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["counts"]["executed"], 4, "{done}");
    server.stop();
    project.cairn(&["store", "verify"]).assert_code(0);
    project.cairn(&["replay", "--check"]).assert_code(0);
}

/// `ActionStarted` events per output, over the whole log.
fn starts_per_output(project: &Project) -> std::collections::BTreeMap<String, usize> {
    let mut starts = std::collections::BTreeMap::new();
    for event in project.log(&["--kind", "ActionStarted"]) {
        for output in event["outputs"].as_array().unwrap() {
            *starts
                .entry(output.as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
    }
    starts
}

#[test]
fn two_operations_that_share_actions_run_them_once_and_the_second_joins() {
    let project = slow_project("2");
    let server = Server::start(project.path(), &["-j", "4"]);
    let first = server.submit(&["slow/n={n}"]);
    let first_id = first["id"].as_str().unwrap().to_owned();
    server.wait_for(&first_id, LONG, |op| {
        op["running"].as_array().is_some_and(|r| !r.is_empty())
    });
    let second = server.submit(&["slow/n=1", "slow/n=2"]);
    let second_id = second["id"].as_str().unwrap().to_owned();
    let first = server.wait_done(&first_id, LONG);
    let second = server.wait_done(&second_id, LONG);
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(second["state"], "succeeded", "{second}");
    // One run per action, whatever the two asked: from the log.
    let starts = starts_per_output(&project);
    assert_eq!(starts.len(), 4, "{starts:?}");
    assert!(starts.values().all(|&count| count == 1), "{starts:?}");
    // The second recorded that it joined the first's runs.
    let (first_build, second_build) = (
        first["build"].as_u64().unwrap(),
        second["build"].as_u64().unwrap(),
    );
    assert_ne!(first_build, second_build);
    let joined = project.log(&[
        "--build",
        &second_build.to_string(),
        "--kind",
        "ActionJoined",
    ]);
    assert!(
        !joined.is_empty(),
        "no ActionJoined in build {second_build}"
    );
    for event in &joined {
        assert_eq!(event["joined_build"], first_build, "{event}");
    }
    assert_eq!(second["counts"]["joined"], joined.len(), "{second}");
    assert_eq!(second["counts"]["executed"], 0, "{second}");
    let metrics = server.get_with("/metrics", None).body;
    assert!(
        metrics.contains(&format!(
            "cairn_actions_total{{outcome=\"joined\"}} {}\n",
            joined.len()
        )),
        "{metrics}"
    );
}

#[test]
fn cancelling_an_operation_never_kills_an_action_another_one_joined() {
    let project = slow_project("2");
    let server = Server::start(project.path(), &["-j", "4"]);
    let first = server.submit(&["slow/n=1"]);
    let first_id = first["id"].as_str().unwrap().to_owned();
    server.wait_for(&first_id, LONG, |op| {
        op["running"].as_array().is_some_and(|r| !r.is_empty())
    });
    let second = server.submit(&["slow/n=1"]);
    let second_id = second["id"].as_str().unwrap().to_owned();
    // Wait until the second waits on the first's run, then cancel the first.
    std::thread::sleep(Duration::from_millis(300));
    let answer = server.post(&format!("/v1/operations/{first_id}/cancel"), "", None);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let first = server.wait_done(&first_id, LONG);
    let second = server.wait_done(&second_id, LONG);
    assert_eq!(first["state"], "cancelled", "{first}");
    assert_eq!(second["state"], "succeeded", "{second}");
    // The one run went on for the second: started once, succeeded.
    assert_eq!(starts_per_output(&project)["slow/n=1"], 1);
    let succeeded = project.log(&["--kind", "ActionSucceeded"]);
    assert_eq!(succeeded.len(), 1, "{succeeded:?}");
    assert_eq!(project.status(&["slow/n=1"])["slow/n=1"].0, "built");
}

#[test]
fn a_restarted_server_shows_earlier_operations_and_keeps_their_idempotency_keys() {
    let project = slow_project("0");
    project.write("fail-4", "");
    let body = json!({"refs": ["slow/n={n}"], "keep_going": true}).to_string();
    let server = Server::start(project.path(), &[]);
    let answer = server.post("/v1/builds", &body, Some("nightly-1"));
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.json()["id"].as_str().unwrap().to_owned();
    let done = server.wait_done(&id, LONG);
    assert_eq!(done["state"], "failed");
    let plain = server.submit(&["slow/n=1"]);
    server.wait_done(plain["id"].as_str().unwrap(), LONG);
    server.stop();
    let server = Server::start(project.path(), &[]);
    let again = server.get(&format!("/v1/operations/{id}"));
    assert_eq!(again.status, 200, "{}", again.body);
    let again = again.json();
    assert_eq!(again["state"], "failed", "{again}");
    assert_eq!(again["build"], done["build"]);
    assert_eq!(again["counts"], done["counts"]);
    assert_eq!(
        again["error"]["failed"][0]["partition"], "slow/n=4",
        "{again}"
    );
    // Listed, newest first, with the one without a key.
    let list = server.get("/v1/operations").json();
    let ids: Vec<&str> = list["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [plain["id"].as_str().unwrap(), id.as_str()]);
    // The key still names the operation: same body 200, another 422.
    let same = server.post("/v1/builds", &body, Some("nightly-1"));
    assert_eq!(same.status, 200, "{}", same.body);
    assert_eq!(same.json()["id"], id.as_str());
    let other = server.post("/v1/builds", r#"{"refs": ["slow/n=1"]}"#, Some("nightly-1"));
    assert_eq!(other.status, 422, "{}", other.body);
    // And its failed partition is retried.
    std::fs::remove_file(project.file("fail-4")).unwrap();
    let retry = server.post(&format!("/v1/operations/{id}/retry"), "", None);
    assert_eq!(retry.status, 202, "{}", retry.body);
    assert_eq!(retry.json()["request"]["refs"], json!(["slow/n=4"]));
    let retried = server.wait_done(retry.json()["id"].as_str().unwrap(), LONG);
    assert_eq!(retried["state"], "succeeded", "{retried}");
}

/// A running server keeps at most `--keep-operations` operations, as a
/// restarted one does: a new one evicts the oldest finished ones (never a
/// running one), and an evicted one answers as one older than the bound
/// does after a restart: 404, its key forgotten. Failed before (the
/// running server kept every operation).
#[test]
fn a_running_server_forgets_the_oldest_finished_operations_beyond_the_bound() {
    let project = slow_project("0");
    let server = Server::start(project.path(), &["--keep-operations", "2"]);
    // Each runs a job: a build that finds everything current records
    // nothing, and a restarted server rebuilds only what the log records.
    let body = |at: usize| json!({"refs": [format!("slow/n={}", at + 1)]}).to_string();
    let mut ids = Vec::new();
    for at in 0..4 {
        let answer = server.post("/v1/builds", &body(at), Some(&format!("key-{at}")));
        assert_eq!(answer.status, 202, "{}", answer.body);
        let id = answer.json()["id"].as_str().unwrap().to_owned();
        assert_eq!(server.wait_done(&id, LONG)["state"], "succeeded");
        ids.push(id);
    }
    let listed = server.get("/v1/operations").json();
    let listed: Vec<&str> = listed["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[3].as_str(), ids[2].as_str()]);
    let evicted = server.get(&format!("/v1/operations/{}", ids[0]));
    assert_eq!(evicted.status, 404, "{}", evicted.body);
    // Its key is forgotten: the same body and key is a new operation.
    let again = server.post("/v1/builds", &body(0), Some("key-0"));
    assert_eq!(again.status, 202, "{}", again.body);
    assert_ne!(again.json()["id"], ids[0].as_str());
    server.wait_done(again.json()["id"].as_str().unwrap(), LONG);
    // A restarted server answers the same for it.
    server.stop();
    let server = Server::start(project.path(), &["--keep-operations", "2"]);
    assert_eq!(
        server.get(&format!("/v1/operations/{}", ids[0])).status,
        404
    );
    server.stop();
}

#[test]
fn a_secret_never_appears_in_any_answer() {
    let secret = format!("sekrit-{}", std::process::id() * 7919 + 12_345);
    let project = Project::with_graph(
        r#"
[env]
secret = ["CAIRN_TEST_SECRET"]

[datasets.leak]

[dimensions.n]
values = ["1", "2"]

[jobs.leak]
outputs = ["leak/n={n}"]
run = ["sh", "-c", "echo \"out $CAIRN_TEST_SECRET\"; echo \"err $CAIRN_TEST_SECRET\" >&2; echo v > \"$CAIRN_OUT/v\"; [ \"$1\" = 1 ] || exit 5", "leak"]
args = ["{n}"]
"#,
    );
    let server = Server::start_with_env(project.path(), &[], &[("CAIRN_TEST_SECRET", &secret)]);
    let answer = server.post(
        "/v1/builds",
        &json!({"refs": ["leak/n={n}"], "keep_going": true}).to_string(),
        None,
    );
    assert_eq!(answer.status, 202, "{}", answer.body);
    let id = answer.json()["id"].as_str().unwrap().to_owned();
    let done = server.wait_done(&id, LONG);
    assert_eq!(done["state"], "failed", "{done}");
    // The job saw the secret: its redacted stderr says so.
    let tail = done["error"]["failed"][0]["log_tail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(tail.contains("err [redacted]"), "{tail}");
    let mut answers = vec![done.to_string(), answer.body];
    let mut stream = server.sse(&format!("/v1/operations/{id}/events"), None);
    while let Some(event) = stream.next() {
        answers.push(event.data);
        if event.event == "done" {
            break;
        }
    }
    for path in [
        "/v1/operations".to_owned(),
        "/v1/status".to_owned(),
        "/v1/store/stats".to_owned(),
        "/v1/plan?ref=leak%2Fn%3D2".to_owned(),
        "/v1/datasets/leak/grid".to_owned(),
    ]
    .into_iter()
    .chain(["leak/n=1", "leak/n=2"].iter().flat_map(|partition| {
        let path = encode(partition);
        [
            format!("/v1/partitions/{path}/why"),
            format!("/v1/partitions/{path}/history"),
            format!("/v1/partitions/{path}/logs"),
            format!("/v1/partitions/{path}/logs?stream=stdout"),
        ]
    })) {
        let answer = server.get(&path);
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        answers.push(answer.body);
    }
    let logs = server.get("/v1/partitions/leak%2Fn%3D2/logs").json();
    assert_eq!(logs["stdout"], "out [redacted]\n", "{logs}");
    let hex: String = secret.bytes().map(|byte| format!("{byte:02x}")).collect();
    for answer in &answers {
        assert!(!answer.contains(&secret), "the secret in {answer}");
        assert!(!answer.contains(&hex), "the secret (hex) in {answer}");
    }
}

#[test]
fn a_backfill_from_a_project_file_or_the_body_runs_to_completion_as_the_cli_records_it() {
    let project = Project::podcast(3, 2);
    project.write(
        "backfills/jan.toml",
        "target = \"daily/date={date}\"\nreason = \"the January backfill\"\n\n[dimensions]\ndate = { start = \"2024-01-01\", end = \"2024-01-02\" }\n",
    );
    let server = Server::start(project.path(), &[]);
    let dry = server.post(
        "/v1/backfills",
        r#"{"config_path": "backfills/jan.toml", "dry_run": true}"#,
        None,
    );
    assert_eq!(dry.status, 200, "{}", dry.body);
    let dry = dry.json();
    assert_eq!(dry["expected"]["partitions"], 2, "{dry}");
    assert_eq!(dry["partitions"].as_array().unwrap().len(), 2, "{dry}");
    let answer = server.post(
        "/v1/backfills",
        r#"{"config_path": "backfills/jan.toml"}"#,
        None,
    );
    assert_eq!(answer.status, 202, "{}", answer.body);
    let op = answer.json();
    assert_eq!(op["kind"], "backfill");
    assert_eq!(op["expected"]["to_run"], 10, "{op}");
    let done = server.wait_done(op["id"].as_str().unwrap(), LONG);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["counts"]["executed"], 10, "{done}");
    let build = done["build"].as_u64().unwrap();
    let requested = project.log(&["--build", &build.to_string(), "--kind", "BuildRequested"]);
    assert_eq!(requested[0]["command"], "backfill", "{requested:?}");
    assert!(
        requested[0]["reason"]
            .as_str()
            .unwrap()
            .contains("the January backfill"),
        "{requested:?}"
    );
    // The same config in the body: nothing left to run.
    let inline = json!({
        "config": project.read_string("backfills/jan.toml"),
        "config_name": "jan.toml",
    });
    let answer = server.post("/v1/backfills", &inline.to_string(), None);
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(answer.json()["expected"]["to_run"], 0);
    let done = server.wait_done(answer.json()["id"].as_str().unwrap(), LONG);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["counts"]["executed"], 0, "{done}");
}

#[test]
fn a_restarted_server_gives_failed_partitions_with_the_log_tails_it_gave_before() {
    // Several lines of stderr, the last ten kept; and a retried attempt
    // first, which is not a failed partition of the operation.
    let graph = SLOW_GRAPH.replace(
        "echo \\\"broken input $1\\\" >&2; exit 3;",
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo \\\"warning $i\\\" >&2; done; echo \\\"broken input $1\\\" >&2; exit 3;",
    );
    assert_ne!(graph, SLOW_GRAPH);
    let project = Project::with_graph(&graph);
    project.write("sleep.txt", "0");
    project.write("fail-2", "");
    let server = Server::start(project.path(), &[]);
    let id = server.submit_body(&json!({"refs": ["slow/n={n}"], "keep_going": true, "retries": 1}))
        ["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = server.wait_done(&id, LONG);
    assert_eq!(before["state"], "failed", "{before}");
    let tail = before["error"]["failed"][0]["log_tail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(tail.ends_with("warning 12\nbroken input 2"), "{before}");
    assert_eq!(tail.lines().count(), 10, "{tail}");
    assert_eq!(
        before["error"]["failed"].as_array().unwrap().len(),
        1,
        "{before}"
    );
    server.stop();
    let server = Server::start(project.path(), &[]);
    let after = server.get(&format!("/v1/operations/{id}"));
    assert_eq!(after.status, 200, "{}", after.body);
    let after = after.json();
    assert_eq!(after["error"], before["error"], "{after}");
    assert_eq!(after["counts"], before["counts"]);
    assert_eq!(after["state"], "failed");
}

/// The value of metric `name` (a series without labels) in `/metrics`.
fn metric(server: &Server, name: &str) -> u64 {
    let text = server.get("/metrics").body;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_restarted_server_rebuilds_its_last_operations_reading_only_the_end_of_the_log() {
    let project = slow_project("0");
    project.write("fail-3", "");
    let server = Server::start(project.path(), &[]);
    let mut before = Vec::new();
    for n in 1..=4 {
        let id = server.submit(&[&format!("slow/n={n}")])["id"]
            .as_str()
            .unwrap()
            .to_owned();
        before.push(server.wait_done(&id, LONG));
    }
    assert_eq!(before[2]["state"], "failed");
    server.stop();
    let requested = project.log(&["--kind", "BuildRequested"]);
    assert_eq!(requested.len(), 4);
    let last_seq = project.log(&[]).last().unwrap()["seq"].as_u64().unwrap();

    // Keeping the last two: the log is read back to the third build's
    // BuildRequested, and not before it.
    let server = Server::start(project.path(), &["--keep-operations", "2"]);
    let third = requested[2]["seq"].as_u64().unwrap();
    assert_eq!(
        metric(&server, "cairn_restored_events_read"),
        last_seq - third + 1
    );
    let list = server.get("/v1/operations").json();
    let ids: Vec<&str> = list["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            before[3]["id"].as_str().unwrap(),
            before[2]["id"].as_str().unwrap()
        ]
    );
    let mut bounded = Vec::new();
    for op in &before[2..] {
        let after = server.get(&format!("/v1/operations/{}", op["id"].as_str().unwrap()));
        assert_eq!(after.status, 200, "{}", after.body);
        let after = after.json();
        for field in ["id", "kind", "state", "build", "counts", "error"] {
            assert_eq!(after[field], op[field], "{field}: {after} vs {op}");
        }
        bounded.push(after);
    }
    // An older one is no operation any more, but its build is in the log.
    let first = &before[0];
    let gone = server.get(&format!("/v1/operations/{}", first["id"].as_str().unwrap()));
    assert_eq!(gone.status, 404, "{}", gone.body);
    let build = first["build"].as_u64().unwrap();
    let mut stream = server.sse(&format!("/v1/events?build={build}&since=1"), None);
    let mut kinds = Vec::new();
    while let Some(event) = stream.next() {
        let event = event.json();
        assert_eq!(event["build"], build, "{event}");
        kinds.push(event["kind"].as_str().unwrap().to_owned());
        if event["kind"] == "BuildFinished" {
            break;
        }
    }
    assert_eq!(kinds.first().map(String::as_str), Some("BuildRequested"));
    assert!(kinds.contains(&"ActionSucceeded".to_owned()), "{kinds:?}");
    server.stop();

    // The default keeps all four, in the order they were submitted.
    let server = Server::start(project.path(), &[]);
    assert_eq!(
        metric(&server, "cairn_restored_events_read"),
        last_seq,
        "fewer operations than the bound: the whole log"
    );
    let list = server.get("/v1/operations").json();
    assert_eq!(list["operations"].as_array().unwrap().len(), 4);
    // The two kept by the bounded restart are the same resources.
    for op in &bounded {
        let whole = server
            .get(&format!("/v1/operations/{}", op["id"].as_str().unwrap()))
            .json();
        assert_eq!(&whole, op);
    }
    server.stop();
}

/// A build submitted after a change is counted from the up-to-date
/// snapshot as `cairn build --dry-run` is (the actions the change does not
/// concern taken as current, the others planned and evaluated), and runs
/// what it announced.
#[test]
fn a_build_submitted_after_a_change_is_counted_from_the_snapshot() {
    let project = slow_project("0");
    let mut server = Server::start_with_env(
        project.path(),
        &["--operations", "1"],
        &[("CAIRN_LOG", "warn,cairn_app::build=debug")],
    );
    for _ in 0..2 {
        // Cold, then a no-op that records the snapshot.
        let op = server.submit(&["slow/n={n}"]);
        let done = server.wait_done(op["id"].as_str().unwrap(), LONG);
        assert_eq!(done["state"], "succeeded", "{done}");
    }
    std::fs::remove_dir_all(project.file("data/slow/n=2")).unwrap();
    let again = server.submit(&["slow/n={n}"]);
    assert_eq!(
        again["expected"],
        json!({"partitions": 4, "actions": 4, "current": 4, "to_run": 0}),
        "{again}"
    );
    let done = server.wait_done(again["id"].as_str().unwrap(), LONG);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["counts"]["executed"], 0, "{done}");
    assert_eq!(project.read_string("data/slow/n=2/value"), "2\n");
    server.signal("TERM");
    assert_eq!(server.wait_exit(LONG), Some(0));
    let said = "dry run answered from the snapshot and its kept plan";
    let started = std::time::Instant::now();
    while !server.stderr().contains(said) && started.elapsed() < LONG {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.stderr().contains(said), "{}", server.stderr());
}

#[test]
fn a_submitted_build_takes_its_dry_run_plan_unless_something_changed_before_it_started() {
    let project = slow_project("0");
    let server = Server::start(project.path(), &["--operations", "1"]);
    let first = server.submit(&["slow/n={n}"]);
    server.wait_done(first["id"].as_str().unwrap(), LONG);
    // A no-op build: at most its dry run plans (the up-to-date snapshot
    // answers both when it confirms nothing changed), never its build.
    let before = metric(&server, "cairn_plans_total");
    let noop = server.submit(&["slow/n={n}"]);
    assert_eq!(noop["expected"]["to_run"], 0, "{noop}");
    let done = server.wait_done(noop["id"].as_str().unwrap(), LONG);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["counts"]["executed"], 0, "{done}");
    assert!(metric(&server, "cairn_plans_total") - before <= 1);

    // A partition invalidated, then a build submitted: its dry run plans
    // (the snapshot cannot answer), its build takes that plan.
    let invalidated = server.post(
        "/v1/invalidate",
        r#"{"refs": ["slow/n=3"], "reason": "r"}"#,
        None,
    );
    assert_eq!(invalidated.status, 200, "{}", invalidated.body);
    let before = metric(&server, "cairn_plans_total");
    let again = server.submit(&["slow/n={n}"]);
    assert_eq!(again["expected"]["to_run"], 1, "{again}");
    let done = server.wait_done(again["id"].as_str().unwrap(), LONG);
    assert_eq!(done["counts"]["executed"], 1, "{done}");
    let build = done["build"].as_u64().unwrap();
    assert_eq!(started_outputs(&project, build), ["slow/n=3"]);
    assert_eq!(
        metric(&server, "cairn_plans_total") - before,
        1,
        "planned once"
    );

    // A build that queues while another runs, and partitions invalidated
    // meanwhile: it plans afresh when it starts, and builds what the
    // invalidation left to build.
    project.write("sleep.txt", "2");
    let invalidated = server.post(
        "/v1/invalidate",
        r#"{"refs": ["slow/n=1"], "reason": "r"}"#,
        None,
    );
    assert_eq!(invalidated.status, 200, "{}", invalidated.body);
    let running = server.submit(&["slow/n=1"]);
    server.wait_for(running["id"].as_str().unwrap(), LONG, |op| {
        op["running"]
            .as_array()
            .is_some_and(|running| !running.is_empty())
    });
    let before = metric(&server, "cairn_plans_total");
    let queued = server.submit(&["slow/n=2"]);
    assert_eq!(queued["state"], "queued", "{queued}");
    assert_eq!(queued["expected"]["to_run"], 0, "{queued}");
    assert_eq!(
        metric(&server, "cairn_plans_total") - before,
        1,
        "its dry run"
    );
    let before = metric(&server, "cairn_plans_total");
    let invalidated = server.post(
        "/v1/invalidate",
        r#"{"refs": ["slow/n=2"], "reason": "bad data"}"#,
        None,
    );
    assert_eq!(invalidated.status, 200, "{}", invalidated.body);
    let invalidation_plans = metric(&server, "cairn_plans_total") - before;
    project.write("sleep.txt", "0");
    let done = server.wait_done(queued["id"].as_str().unwrap(), LONG);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["counts"]["executed"], 1, "{done}");
    let build = done["build"].as_u64().unwrap();
    assert_eq!(started_outputs(&project, build), ["slow/n=2"]);
    // A fresh plan, not the dry run's.
    assert_eq!(
        metric(&server, "cairn_plans_total") - before - invalidation_plans,
        1
    );
    server.stop();
}

/// A field of `/proc/PID/stat` (1-based, counted after the command's
/// closing parenthesis as `proc(5)` numbers them).
fn stat_field(stat: &str, field: usize) -> i64 {
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after
        .split_whitespace()
        .nth(field - 3)
        .unwrap()
        .parse()
        .unwrap()
}

/// The jobs of an operation run below the server's priority (nice 10
/// more), so that a submit answered while builds keep the cores busy
/// gets a core first; the server's own threads keep theirs.
#[cfg(target_os = "linux")]
#[test]
fn an_operations_jobs_run_at_a_lower_priority_than_the_server() {
    let project = Project::with_graph(
        r#"
[datasets.nice]

[dimensions.n]
values = ["1"]

[jobs.nice]
outputs = ["nice/n={n}"]
run = ["sh", "-c", "cat /proc/$$/stat > \"$CAIRN_OUT/stat\"", "nice"]
"#,
    );
    let server = Server::start(project.path(), &[]);
    let id = server.submit(&["nice/n=1"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = server.wait_done(&id, LONG);
    assert_eq!(done["state"], "succeeded", "{done}");
    let job = stat_field(&project.read_string("data/nice/n=1/stat"), 19);
    let server_stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid())).unwrap();
    let served = stat_field(&server_stat, 19);
    assert_eq!(
        job,
        (served + 10).min(19),
        "job nice {job}, server nice {served}"
    );
    server.stop();
}
