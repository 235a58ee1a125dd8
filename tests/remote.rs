//! `cairn --remote URL ...` (docs/cli.md, "`--remote`"): the command line
//! as a client of `cairn serve`.
//!
//! These tests need no server: bad URLs, flags that only mean something
//! with `--remote`, commands that do not work remotely, and a server that
//! is not there.

mod common;

use common::Project;

/// A loopback port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("its address").port();
    drop(listener);
    port
}

#[test]
fn an_unreachable_server_is_one_line_naming_the_url_and_exit_3() {
    let project = Project::podcast(1, 1);
    let url = format!("http://127.0.0.1:{}", closed_port());
    for args in [
        vec!["--remote", url.as_str(), "status"],
        vec!["--remote", url.as_str(), "build"],
        vec!["--remote", url.as_str(), "why", "daily/date=2024-01-01"],
    ] {
        let run = project.cairn(&args);
        run.assert_code(3);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {}", run.stderr);
        assert!(
            lines[0].starts_with(&format!(
                "error: cannot reach the cairn server at {url}/v1/"
            )),
            "{}",
            run.stderr
        );
    }
    // Nothing was opened or created locally.
    assert!(!project.path().join(".cairn").exists());
}

#[test]
fn remote_flags_without_remote_and_local_commands_with_it_are_usage_errors() {
    let project = Project::podcast(1, 1);
    project
        .cairn(&["build", "--detach"])
        .assert_usage_error("--detach works only with --remote URL");
    project
        .cairn(&["backfill", "x.toml", "--idempotency-key", "k"])
        .assert_usage_error("--idempotency-key works only with --remote URL");
    project
        .cairn(&["--token-file", "t", "status"])
        .assert_usage_error("--token-file works only with --remote URL");
    let url = format!("http://127.0.0.1:{}", closed_port());
    project
        .cairn(&["--remote", &url, "store", "verify"])
        .assert_usage_error("`cairn store` does not work with --remote");
    project
        .cairn(&["--remote", &url, "build", "--no-wait"])
        .assert_usage_error("--no-wait does not work with --remote");
    project
        .cairn(&["--remote", "127.0.0.1:8080", "status"])
        .assert_usage_error("not an http:// URL");
    project
        .cairn(&["--remote", &url, "--token-file", "missing.token", "status"])
        .assert_usage_error("--token-file missing.token: cannot read it");
    // None of them built anything.
    assert!(!project.path().join(".cairn").exists());
}

// ------------------------------------------------------ against a server

mod remote_server;

use remote_server::Server;
use serde_json::Value;

/// A podcast copy whose clean job prints a line on stdout and on stderr,
/// fails for station S while `fail-S` exists and waits as long as `slow-S`
/// exists (the job runs in the project directory).
fn project(days: u32, stations: u32) -> Project {
    let project = Project::podcast(days, stations);
    project.patch_clean(
        "echo \"cleaning $1\"; echo \"clean: $1 has 4 bad lines\" >&2\n\
         if [ -e \"fail-$1\" ]; then echo \"bad sensor $1: ratings out of range\" >&2; exit 3; fi\n\
         while [ -e \"slow-$1\" ]; do sleep 0.1; done",
    );
    project
}

/// A JSON line without its timings (which differ from run to run).
fn untimed(line: &Value) -> Value {
    let mut line = line.clone();
    if let Some(object) = line.as_object_mut() {
        object.remove("duration_ms");
    }
    line
}

/// The action lines of a `build --json` run, untimed and sorted (jobs
/// finish in any order), and its summary, untimed.
fn build_lines(run: &common::Run) -> (Vec<String>, Value) {
    let lines = run.json_lines();
    let (summary, actions) = lines.split_last().expect("a summary line");
    let mut actions: Vec<String> = actions.iter().map(|l| untimed(l).to_string()).collect();
    actions.sort();
    (actions, untimed(summary))
}

/// The last line of stderr, without the elapsed time that ends it.
fn summary_line(stderr: &str) -> String {
    let last = stderr.lines().last().unwrap_or_default();
    match last.rfind(" in ") {
        Some(at) => last[..at].to_owned(),
        None => last.to_owned(),
    }
}

#[test]
fn a_remote_build_prints_and_exits_as_a_local_build() {
    let local = project(2, 2);
    let served = project(2, 2);
    let server = Server::start(served.path(), &[]);
    let url = server.url.clone();

    // A first build: everything runs.
    let remote = served.cairn(&["--remote", &url, "build", "--json"]);
    let here = local.cairn(&["build", "--json"]);
    remote.assert_code(0);
    here.assert_code(0);
    assert_eq!(build_lines(&remote), build_lines(&here));
    assert_eq!(summary_line(&remote.stderr), summary_line(&here.stderr));
    assert!(
        summary_line(&here.stderr)
            .ends_with("10 actions: 10 executed, 0 cached, 0 failed, 0 skipped"),
        "{}",
        here.stderr
    );
    assert!(remote.stderr.contains("operation op-"), "{}", remote.stderr);
    // Human output: the same `built …` lines (in any order).
    let built = |stderr: &str| {
        let mut lines: Vec<String> = stderr
            .lines()
            .filter(|line| line.starts_with("built "))
            .map(|line| line[..line.rfind(", ").unwrap_or(line.len())].to_owned())
            .collect();
        lines.sort();
        lines
    };
    let remote_human = served.cairn(&[
        "--remote",
        &url,
        "build",
        "clean/date={date}/station={station}",
    ]);
    let here_human = local.cairn(&["build", "clean/date={date}/station={station}"]);
    remote_human.assert_code(0);
    assert_eq!(built(&remote_human.stderr), built(&here_human.stderr));
    assert_eq!(
        summary_line(&remote_human.stderr),
        summary_line(&here_human.stderr)
    );

    // A failure: exit 1, the failure with the tail of the job's stderr.
    local.write("fail-S002", "");
    served.write("fail-S002", "");
    local.append("inputs/2024-01-02/S002.txt", "ep0001,5\n");
    served.append("inputs/2024-01-02/S002.txt", "ep0001,5\n");
    let remote = served.cairn(&["--remote", &url, "build", "--keep-going"]);
    let here = local.cairn(&["build", "--keep-going"]);
    remote.assert_code(1);
    here.assert_code(1);
    assert_eq!(summary_line(&remote.stderr), summary_line(&here.stderr));
    let failure = |stderr: &str| -> Vec<String> {
        stderr
            .lines()
            .skip_while(|line| !line.starts_with("failed: "))
            .take(5)
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(failure(&remote.stderr), failure(&here.stderr));
    assert!(
        remote
            .stderr
            .contains("    clean: bad sensor S002: ratings out of range")
            || remote
                .stderr
                .contains("    bad sensor S002: ratings out of range"),
        "{}",
        remote.stderr
    );

    // Bad input: exit 2 with the local message, naming the URL.
    let remote = served.cairn(&["--remote", &url, "build", "nosuch/date=2024-01-01"]);
    let here = local.cairn(&["build", "nosuch/date=2024-01-01"]);
    here.assert_code(2);
    remote.assert_code(2);
    // The message names the server's project's graph file.
    let message = here.stderr.trim().trim_start_matches("error: ").replace(
        local.path().to_str().unwrap(),
        served.path().to_str().unwrap(),
    );
    assert!(
        remote.stderr.contains(&message)
            && remote
                .stderr
                .contains(&format!("{url}/v1/builds answered 400")),
        "remote:\n{}\nlocal:\n{}",
        remote.stderr,
        here.stderr
    );
    assert_eq!(remote.stderr.lines().count(), 1, "{}", remote.stderr);
    server.stop();
}

/// `(N file)`/`(N files)` of `history`'s `output` lines, which the JSON
/// (and so `--remote history`) does not carry.
fn without_file_counts(text: &str) -> String {
    text.lines()
        .map(
            |line| match (line.starts_with("  output   "), line.rfind("  (")) {
                (true, Some(at)) if line.ends_with(" file)") || line.ends_with(" files)") => {
                    format!("{}\n", &line[..at])
                }
                _ => format!("{line}\n"),
            },
        )
        .collect()
}

#[test]
fn remote_reads_print_what_the_local_commands_print() {
    let project = project(2, 2);
    project.cairn(&["build"]).assert_code(0);
    project
        .cairn(&[
            "invalidate",
            "clean/date=2024-01-01/station=S001",
            "--reason",
            "bad feed",
        ])
        .assert_code(0);
    project.write("fail-S002", "");
    project.append("inputs/2024-01-02/S002.txt", "ep0002,4\n");
    project.cairn(&["build", "--keep-going"]).assert_code(1);
    std::fs::remove_file(project.file("fail-S002")).unwrap();

    let clean = "clean/date=2024-01-01/station=S001";
    let failed = "clean/date=2024-01-02/station=S002";
    let commands: Vec<Vec<&str>> = vec![
        vec!["status"],
        vec!["status", "--json"],
        vec![
            "status",
            "clean/date={date}/station={station}",
            "daily/date=2024-01-02",
        ],
        vec!["why", clean],
        vec!["why", "--json", clean],
        vec!["why", "daily/date=2024-01-02"],
        vec!["history", clean],
        vec!["history", "--json", clean],
        vec!["history", failed],
        vec!["history", "--json", failed],
        vec!["logs", "clean/date=2024-01-02/station=S001"],
        vec!["logs", "--stdout", "clean/date=2024-01-02/station=S001"],
        vec!["logs", "--stderr", failed],
        vec!["logs", clean, "--build", "1"],
        // Its run in build 1 succeeded; its last (build 2) failed.
        vec!["logs", failed, "--build", "1"],
        vec!["log"],
        vec!["log", "--json"],
        vec![
            "log",
            "--kind",
            "ActionFailed",
            "--kind",
            "PartitionInvalidated",
        ],
        vec!["log", "--json", "--job", "clean", "--since", "3"],
        vec![
            "log",
            "--partition",
            "clean/date={date}/station={station}",
            "--until",
            "30",
        ],
        vec!["log", "--build", "2"],
    ];
    let server = Server::start(project.path(), &[]);
    let url = server.url.clone();
    let remote: Vec<common::Run> = commands
        .iter()
        .map(|command| {
            let mut args = vec!["--remote", url.as_str()];
            args.extend(command);
            project.cairn(&args)
        })
        .collect();
    server.stop();
    for (command, remote) in commands.iter().zip(&remote) {
        let here = project.cairn(command);
        here.assert_code(0);
        remote.assert_code(0);
        let (mut expected, got) = (here.stdout.clone(), remote.stdout.clone());
        if command[0] == "history" && !command.contains(&"--json") {
            expected = without_file_counts(&expected);
        }
        assert!(
            !expected.is_empty() || command[0] == "logs",
            "{command:?}: no output"
        );
        assert_eq!(got, expected, "cairn {command:?}: stdout differs");
        // The notes too, where both have the data for them.
        if matches!(command[0], "status" | "why") {
            assert_eq!(
                remote.stderr, here.stderr,
                "cairn {command:?}: stderr differs"
            );
        }
    }
}

#[test]
fn detach_cancel_idempotency_and_a_refused_token() {
    let project = project(1, 2);
    let server = Server::start(project.path(), &[]);
    let url = server.url.clone();
    let target = "clean/date=2024-01-01/station=S001";

    // --detach: the operation id on stdout, exit 0 at once; it finishes.
    let detached = project.cairn(&["--remote", &url, "build", "--detach", target]);
    detached.assert_code(0);
    let id = detached.stdout.trim().to_owned();
    assert!(
        id.starts_with("op-") && !id.contains('\n'),
        "{}",
        detached.stdout
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = project.cairn(&["--remote", &url, "status", "--json", target]);
        status.assert_code(0);
        if status.json_lines()[0]["state"] == "built" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} never built {target}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // The same key and refs: the same operation, not a second build.
    let once = project.cairn(&[
        "--remote",
        &url,
        "build",
        "--idempotency-key",
        "k-1",
        "raw/date={date}/station={station}",
    ]);
    let twice = project.cairn(&[
        "--remote",
        &url,
        "build",
        "--idempotency-key",
        "k-1",
        "raw/date={date}/station={station}",
    ]);
    once.assert_code(0);
    twice.assert_code(0);
    let operation = |stderr: &str| {
        stderr
            .lines()
            .find_map(|line| {
                line.strip_prefix("operation ")?
                    .split(':')
                    .next()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("no operation note:\n{stderr}"))
    };
    assert_eq!(operation(&once.stderr), operation(&twice.stderr));
    // Another request under the same key: refused (422), exit 2.
    let refused = project.cairn(&[
        "--remote",
        &url,
        "build",
        "--idempotency-key",
        "k-1",
        "clean/date={date}/station={station}",
    ]);
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("answered 422"),
        "{}",
        refused.stderr
    );

    // Ctrl-C without a terminal: cancel, wait for the cancelled state, 130.
    project.write("slow-S002", "");
    let slow = "clean/date=2024-01-01/station=S002";
    let client = common::Background::start(project.path(), &["--remote", &url, "build", slow]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = project.cairn(&["--remote", &url, "status", "--json", slow]);
        if status.code == 0 && status.json_lines()[0]["state"] == "running" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{slow} never ran");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    client.signal("INT");
    let (code, stderr, waited) = client.wait(std::time::Duration::from_secs(45));
    assert_eq!(code, 130, "{stderr}");
    assert!(
        waited < std::time::Duration::from_secs(40),
        "the job's minute was not cut short"
    );
    assert!(stderr.contains("cancelling operation op-"), "{stderr}");
    assert!(stderr.contains("(interrupted)"), "{stderr}");
    let status = project.cairn(&["--remote", &url, "status", "--json", slow]);
    assert_ne!(
        status.json_lines()[0]["state"],
        "built",
        "{}",
        status.stdout
    );
    std::fs::remove_file(project.file("slow-S002")).unwrap();

    // A refused token: one line naming the URL and the server's message.
    project.write("wrong.token", "0".repeat(64));
    let denied = project.cairn(&["--remote", &url, "--token-file", "wrong.token", "status"]);
    denied.assert_code(2);
    assert_eq!(denied.stderr.lines().count(), 1, "{}", denied.stderr);
    assert!(
        denied
            .stderr
            .starts_with(&format!("error: {url}/v1/status answered 401"))
            && denied.stderr.contains("(the token was refused"),
        "{}",
        denied.stderr
    );
    server.stop();
}

/// Runs `cairn ARGS` in `dir` on a pseudo-terminal (Python's `pty`, as
/// the Python client's test needs python3 anyway): waits for `ready` in
/// its output, types Ctrl-C, waits for the prompt, types `answer`; returns
/// the exit code and everything it printed.
fn on_a_terminal(dir: &std::path::Path, args: &[&str], ready: &str, answer: &str) -> (i32, String) {
    const DRIVER: &str = r#"
import os, pty, select, sys, time
ready, answer, argv = sys.argv[1].encode(), sys.argv[2].encode(), sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
out = b""
def until(text, limit):
    global out
    end = time.time() + limit
    while text not in out and time.time() < end:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                out += os.read(fd, 65536)
            except OSError:
                return
until(ready, 60)
os.write(fd, b"\x03")
until(b"cancel the operation or detach? [c/d]", 30)
os.write(fd, answer + b"\n")
until(b"\0never", 60)
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode("utf-8", "replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let output = std::process::Command::new("python3")
        .args(["-c", DRIVER, ready, answer, common::CAIRN])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("python3 runs the terminal");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn ctrl_c_on_a_terminal_asks_whether_to_cancel_or_detach() {
    let project = project(1, 2);
    let server = Server::start(project.path(), &[]);
    let url = server.url.clone();
    let slow = "clean/date=2024-01-01/station=S001";
    project.write("slow-S001", "");

    // d: the operation id, exit 0; the operation goes on and finishes.
    let (code, shown) = on_a_terminal(
        project.path(),
        &["--remote", &url, "build", slow],
        "running 1: clean",
        "d",
    );
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains("cancel the operation or detach? [c/d]"),
        "{shown}"
    );
    assert!(shown.contains("detached: operation op-"), "{shown}");
    std::fs::remove_file(project.file("slow-S001")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while project
        .cairn(&["--remote", &url, "status", "--json", slow])
        .json_lines()[0]["state"]
        != "built"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the detached build never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // c: cancelled, exit 130, nothing built.
    project.write("slow-S002", "");
    let other = "clean/date=2024-01-01/station=S002";
    let (code, shown) = on_a_terminal(
        project.path(),
        &["--remote", &url, "build", other],
        "running 1: clean",
        "c",
    );
    assert_eq!(code, 130, "{shown}");
    assert!(shown.contains("cancelling operation op-"), "{shown}");
    assert!(shown.contains("(interrupted)"), "{shown}");
    let state = project
        .cairn(&["--remote", &url, "status", "--json", other])
        .json_lines()[0]["state"]
        .clone();
    assert_ne!(state, "built");
    std::fs::remove_file(project.file("slow-S002")).unwrap();
    server.stop();
}

#[test]
fn a_remote_backfill_prints_and_exits_as_a_local_backfill() {
    let local = project(2, 2);
    let served = project(2, 2);
    let config = "target = \"daily/date={date}\"\nreason = \"#12 recompute\"\n\n\
                  [dimensions.date]\nstart = \"2024-01-01\"\nend = \"2024-01-02\"\n";
    local.write("backfills/days.toml", config);
    served.write("backfills/days.toml", config);
    let server = Server::start(served.path(), &[]);
    let url = server.url.clone();
    // A dry run first: the same lines and note as the local one (it was
    // refused with --remote before), text and JSON, recording nothing.
    for dry in [
        &["backfill", "backfills/days.toml", "--dry-run"][..],
        &["backfill", "backfills/days.toml", "--dry-run", "--json"][..],
    ] {
        let remote = served.cairn(&[&["--remote", url.as_str()][..], dry].concat());
        let here = local.cairn(dry);
        here.assert_code(0);
        remote.assert_code(0);
        assert!(
            here.stdout.contains("daily/date=2024-01-02"),
            "{}",
            here.stdout
        );
        assert_eq!(remote.stdout, here.stdout, "{dry:?}");
        // The note; the local command's first line describes the config
        // from the graph, which a remote client does not have (nor does a
        // remote backfill print it).
        assert_eq!(
            remote.stderr.lines().last(),
            here.stderr.lines().last(),
            "{dry:?}"
        );
    }
    let args = ["backfill", "backfills/days.toml", "--json"];
    let remote = served.cairn(&[&["--remote", url.as_str()][..], &args[..]].concat());
    let here = local.cairn(&args);
    here.assert_code(0);
    remote.assert_code(0);
    assert_eq!(build_lines(&remote), build_lines(&here));
    assert_eq!(summary_line(&remote.stderr), summary_line(&here.stderr));
    assert!(
        summary_line(&here.stderr).starts_with("backfill build 1: 10 actions: 10 executed"),
        "{}",
        here.stderr
    );

    // A failed partition: exit 1, listed.
    for project in [&local, &served] {
        project.write("fail-S001", "");
        project.append("inputs/2024-01-02/S001.txt", "ep0003,2\n");
    }
    let remote = served.cairn(&["--remote", &url, "backfill", "backfills/days.toml"]);
    let here = local.cairn(&["backfill", "backfills/days.toml"]);
    here.assert_code(1);
    remote.assert_code(1);
    let listed = |stderr: &str| -> Vec<String> {
        stderr
            .lines()
            .skip_while(|line| !line.starts_with("failed partitions ("))
            .take(2)
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(listed(&remote.stderr), listed(&here.stderr));
    assert_eq!(listed(&here.stderr).len(), 2, "{}", here.stderr);
    server.stop();
}

/// The outputs of the actions build `build` started, sorted.
fn started_in(project: &Project, build: u64) -> Vec<String> {
    let events = project.log(&["--build", &build.to_string(), "--kind", "ActionStarted"]);
    let mut outputs: Vec<String> = events
        .iter()
        .flat_map(|event| event["outputs"].as_array().cloned().unwrap_or_default())
        .filter_map(|output| output.as_str().map(str::to_owned))
        .collect();
    outputs.sort();
    outputs
}

/// `--retry-failed` with `--remote` (refused before): the server picks the
/// partitions to retry from its store as the local command does, and the
/// retry runs exactly the actions the local retry runs.
#[test]
fn a_remote_backfill_retry_failed_runs_just_what_failed_as_a_local_one() {
    let local = project(2, 2);
    let served = project(2, 2);
    let config = "target = \"daily/date={date}\"\nreason = \"#12 recompute\"\n\n\
                  [dimensions.date]\nstart = \"2024-01-01\"\nend = \"2024-01-02\"\n";
    for project in [&local, &served] {
        project.write("backfills/days.toml", config);
        project.write("fail-S001", "");
    }
    let server = Server::start(served.path(), &[]);
    let url = server.url.clone();
    let remote_args = |extra: &[&'static str]| -> Vec<String> {
        ["--remote", url.as_str(), "backfill", "backfills/days.toml"]
            .iter()
            .chain(extra)
            .map(|arg| (*arg).to_owned())
            .collect()
    };
    let run_remote = |extra: &[&'static str]| {
        let args = remote_args(extra);
        served.cairn(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let failed = run_remote(&["--json"]);
    failed.assert_code(1);
    local
        .cairn(&["backfill", "backfills/days.toml", "--json"])
        .assert_code(1);
    assert!(
        failed.stderr.contains(&format!(
            "`cairn --remote {url} backfill backfills/days.toml --retry-failed`"
        )),
        "{}",
        failed.stderr
    );

    // Fixed: the retry runs what failed (and what depends on it), nothing
    // else, as the local retry does, and exits 0.
    for project in [&local, &served] {
        std::fs::remove_file(project.file("fail-S001")).unwrap();
    }
    let remote = run_remote(&["--retry-failed", "--json"]);
    let here = local.cairn(&[
        "backfill",
        "backfills/days.toml",
        "--retry-failed",
        "--json",
    ]);
    here.assert_code(0);
    remote.assert_code(0);
    // The executed actions' lines and the summary (a remote client prints
    // no line for an action that was current before the build started).
    let executed = |run: &common::Run| {
        let (lines, summary) = build_lines(run);
        let lines: Vec<String> = lines
            .into_iter()
            .filter(|line| line.contains("\"outcome\":\"executed\""))
            .collect();
        (lines, summary)
    };
    assert_eq!(executed(&remote), executed(&here));
    assert_eq!(executed(&remote).0.len(), 4, "{}", remote.stdout);
    assert!(
        remote.stderr.contains("retrying 2 partitions"),
        "{}",
        remote.stderr
    );
    let build = |run: &common::Run| run.json_lines().last().unwrap()["build"].as_u64().unwrap();
    let ran = started_in(&served, build(&remote));
    assert_eq!(ran, started_in(&local, build(&here)));
    assert!(
        ran.contains(&"clean/date=2024-01-01/station=S001".to_owned())
            && ran.contains(&"clean/date=2024-01-02/station=S001".to_owned())
            && !ran.iter().any(|output| output.contains("S002")),
        "{ran:?}"
    );

    // Nothing is left to retry: said, exit 0, nothing submitted.
    let builds_before = served.log(&["--kind", "BuildRequested"]).len();
    let nothing = run_remote(&["--retry-failed"]);
    nothing.assert_code(0);
    assert!(
        nothing.stderr.contains("nothing to retry"),
        "{}",
        nothing.stderr
    );
    assert_eq!(
        served.log(&["--kind", "BuildRequested"]).len(),
        builds_before,
        "nothing to retry, nothing built"
    );
    server.stop();
}
