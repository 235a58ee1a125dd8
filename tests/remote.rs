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
