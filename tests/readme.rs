//! The README's tour, run as written (issue 26 §9): its code block is read
//! from README.md, and each command runs in order, through `sh`, with the
//! `cairn` under test first on PATH and the tour's directory replaced by a
//! temporary one. Every command must exit 0, and what its comment promises
//! must be in its output: `N executed` (the build summary), a quoted
//! "phrase", or `{"key":value,...}` fields of a JSON line. So the README
//! cannot drift from what cairn prints.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::CAIRN;

/// The first ```sh block after `## A short tour`.
fn tour() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let section = &readme[readme.find("## A short tour").expect("the tour section")..];
    let start = section.find("```sh\n").expect("the tour's code block") + "```sh\n".len();
    let block = &section[start..];
    let block = &block[..block.find("```").expect("the end of the block")];
    // (command, its comment, continued on the lines that are only a comment)
    let mut commands: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            let (_, last) = commands.last_mut().expect("a comment after a command");
            last.push(' ');
            last.push_str(comment.trim());
            continue;
        }
        let (command, comment) = match line.find("  #").or_else(|| line.find(" # ")) {
            Some(at) => (
                line[..at].trim(),
                line[at..].trim().trim_start_matches('#').trim(),
            ),
            None => (trimmed, ""),
        };
        commands.push((command.to_owned(), comment.to_owned()));
    }
    commands
}

/// What a comment promises the output contains.
fn promises(comment: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(json) = comment.strip_prefix('{') {
        // `{"build":4,"cached":1827,...,"executed":3,...}`: the line
        // starts as written up to the first `...`, and has each
        // `"key":value`.
        let json = &json[..json.find('}').unwrap_or(json.len())];
        let start = &comment[..json.find(",...").map_or(comment.len(), |at| at + 2)];
        out.push(start.to_owned());
        for field in json.split(',') {
            if field.starts_with('"') && field.contains(':') {
                out.push(field.to_owned());
            }
        }
        return out;
    }
    // Quoted phrases.
    let mut rest = comment;
    while let Some(open) = rest.find('"') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('"') else { break };
        out.push(after[..close].to_owned());
        rest = &after[close + 1..];
    }
    // `N executed`.
    let words: Vec<&str> = comment.split_whitespace().collect();
    for pair in words.windows(2) {
        if pair[1].trim_end_matches([':', ',', ';']) == "executed"
            && pair[0].bytes().all(|b| b.is_ascii_digit())
        {
            out.push(format!("{} executed", pair[0]));
        }
    }
    out
}

#[test]
fn the_tour_runs_as_written() {
    let commands = tour();
    assert!(
        commands.len() > 10,
        "the tour has {} commands",
        commands.len()
    );
    let repository = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = Path::new(CAIRN).parent().expect("the binary's directory");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let temp = tempfile::tempdir().expect("a temporary directory");
    let mut tour_dir: Option<String> = None;
    let mut cwd = repository;
    let mut checked = 0;
    for (command, comment) in &commands {
        // Building cairn and putting it on PATH: the test has its own.
        if command.starts_with("cargo ") || command.starts_with("export PATH=") {
            continue;
        }
        let mut line = command.clone();
        if let Some(generate) = line.strip_prefix("fixtures/podcast/generate ") {
            let dir = generate.split_whitespace().next().expect("a directory");
            tour_dir = Some(dir.to_owned());
        }
        if let Some(dir) = &tour_dir {
            line = line.replace(
                dir.as_str(),
                &temp.path().join("tour").display().to_string(),
            );
        }
        if let Some(dir) = line.strip_prefix("cd ") {
            cwd = cwd.join(dir.trim());
            continue;
        }
        let output = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .current_dir(&cwd)
            .env("PATH", &path)
            .env("NO_COLOR", "1")
            .env_remove("CAIRN_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run sh");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "README tour: `{command}` failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status
        );
        for promise in promises(comment) {
            assert!(
                stdout.contains(&promise) || stderr.contains(&promise),
                "README tour: `{command}` promises {promise:?} (# {comment})\nstdout:\n{stdout}\nstderr:\n{stderr}"
            );
            checked += 1;
        }
    }
    assert!(tour_dir.is_some(), "the tour generates no project");
    assert!(checked >= 5, "only {checked} promises checked");
}

#[test]
fn promises_are_read_from_comments() {
    assert_eq!(
        promises(r#"{"build":4,...,"executed":3,...,"type":"summary"}"#),
        [
            r#"{"build":4,"#,
            r#""build":4"#,
            r#""executed":3"#,
            r#""type":"summary""#
        ]
    );
    assert_eq!(
        promises(r#""up-to-date snapshot confirmed": no planning"#),
        ["up-to-date snapshot confirmed"]
    );
    assert_eq!(
        promises("0 executed: every key is already built"),
        ["0 executed"]
    );
    assert!(promises("says what would run and why").is_empty());
}
