//! `cairn --remote URL status|why|history|logs|log`: the server's JSON,
//! read into the `cairn_app::dto` types and printed by the local
//! commands' renderers.

use cairn_app::dto::history::HistoryLine;
use cairn_app::dto::status::{StatusLine, WhyLine};
use serde::Deserialize;

use super::http::{Remote, encode};
use crate::Failure;
use crate::audit::Streams;
use crate::report::{count, json_line, note};

/// `text` on stdout as it is.
pub fn stdout_text(text: &str) {
    crate::audit::stdout_text(text);
}

/// `line` and a newline on stdout.
pub fn stdout_line(line: &str) {
    stdout_text(&format!("{line}\n"));
}

#[derive(Debug, Deserialize)]
struct StatusAnswer {
    partitions: Vec<StatusLine>,
}

/// `GET /v1/status?ref=…`.
pub fn status(remote: &Remote, refs: &[String], json: bool) -> Result<u8, Failure> {
    let query: Vec<(&str, &str)> = refs.iter().map(|r| ("ref", r.as_str())).collect();
    let answer: StatusAnswer = remote.get_json("/v1/status", &query)?;
    let rows = &answer.partitions;
    if json {
        for row in rows {
            json_line(row);
        }
        return Ok(0);
    }
    let mut out = String::new();
    for row in rows {
        out.push_str(&crate::inspect::status_line_text(
            &row.state,
            &row.partition,
            &row.reason,
        ));
    }
    stdout_text(&out);
    note(&crate::inspect::status_summary_text(rows.len(), |word| {
        rows.iter().filter(|row| row.state == word).count()
    }));
    Ok(0)
}

/// `GET /v1/partitions/{ref}/why`.
pub fn why(remote: &Remote, partition: &str, json: bool) -> Result<u8, Failure> {
    let path = format!("/v1/partitions/{}/why", encode(partition));
    let why: WhyLine = remote.get_json(&path, &[])?;
    if json {
        json_line(&why);
    } else {
        stdout_line(&crate::escape::escape(&why.reason));
    }
    Ok(0)
}

/// `GET /v1/partitions/{ref}/history`.
pub fn history(remote: &Remote, partition: &str, json: bool) -> Result<u8, Failure> {
    let path = format!("/v1/partitions/{}/history", encode(partition));
    let answer: HistoryAnswer = remote.get_json(&path, &[])?;
    let entries = match answer {
        HistoryAnswer::Lines(lines) => lines,
        HistoryAnswer::Object(object) => object.entries,
    };
    if entries.is_empty() {
        note(&format!(
            "{partition} has no history here: it was never built, failed or invalidated"
        ));
        return Ok(0);
    }
    if json {
        for entry in &entries {
            json_line(entry);
        }
        return Ok(0);
    }
    let mut out = crate::audit::history_heading(partition, |kind| {
        entries
            .iter()
            .filter(|entry| match entry {
                HistoryLine::Materialization(_) => kind == "materialization",
                HistoryLine::Failure(_) => kind == "failure",
                HistoryLine::Invalidation(_) => kind == "invalidation",
                HistoryLine::Joined(_) => kind == "joined",
            })
            .count()
    });
    for entry in &entries {
        out.push('\n');
        out.push_str(&crate::audit::line_text(entry));
    }
    stdout_text(&out);
    Ok(0)
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum HistoryAnswer {
    Lines(Vec<HistoryLine>),
    Object(HistoryObject),
}

#[derive(Debug, Deserialize)]
struct HistoryObject {
    #[serde(default)]
    entries: Vec<HistoryLine>,
}

/// `GET /v1/partitions/{ref}/logs?stream=…`: each stream's bytes as
/// captured, printed as `cairn logs` prints them.
pub fn logs(
    remote: &Remote,
    partition: &str,
    build: Option<u64>,
    streams: Streams,
) -> Result<u8, Failure> {
    let path = format!("/v1/partitions/{}/logs", encode(partition));
    let build_text = build.map(|build| build.to_string());
    let selected: &[&str] = match streams {
        Streams::Both => &["stdout", "stderr"],
        Streams::Stdout => &["stdout"],
        Streams::Stderr => &["stderr"],
    };
    let labelled = streams == Streams::Both;
    for &name in selected {
        let mut query = vec![("stream", name)];
        if let Some(build) = &build_text {
            query.push(("build", build.as_str()));
        }
        let bytes = remote.get_bytes(&path, &query)?;
        let label = if bytes.is_empty() {
            format!("--- {name}: empty ---")
        } else {
            format!("--- {name} ({}) ---", count(bytes.len() as u64, "byte"))
        };
        if labelled {
            stdout_text(&format!("{label}\n"));
        } else {
            note(&label);
        }
        {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&bytes);
            if labelled && bytes.last().is_some_and(|last| *last != b'\n') {
                let _ = stdout.write_all(b"\n");
            }
            let _ = stdout.flush();
        }
    }
    Ok(0)
}
