//! `cairn defs refresh|show|diff`: definitions fetched from external sources
//! (design.md §9), persisted as records.
//!
//! `refresh` is the only command that runs a `[sources.NAME]` command. It
//! runs it like a job (graph directory, clean environment, its own process
//! group, killed if cairn dies or the source's `timeout` passes), validates
//! what it printed, stores the bytes as a blob and appends one
//! `DefsRefreshed`. A failing or malformed source appends nothing: the
//! previous record stays in force and every build keeps using it.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_app::defs::{read_record, record_values};
use cairn_engine::date::format_time_ms;
use cairn_engine::defs::{diff, parse_values};
use cairn_engine::graph::Source;
use cairn_engine::ports::{BlobStore, Catalog};
use cairn_engine::record::{DefsRecord, EventKind};
use cairn_engine::runner::{Children, Invocation, describe_status, run_process};
use cairn_store::Store;
use serde_json::json;

use crate::report::{error_line, json_line, note};
use crate::{Cli, Failure};
use cairn_app::Workspace;

/// The sources named (all of them when `name` is `None`).
fn selected<'g>(project: &'g Workspace, name: Option<&str>) -> Result<Vec<&'g Source>, Failure> {
    let graph = &project.graph;
    match name {
        Some(name) => graph
            .sources
            .get(name)
            .map(|source| vec![source])
            .ok_or_else(|| {
                Failure::usage(format!(
                    "{}: no [sources.{name}] is declared (sources: {})",
                    graph.file.display(),
                    if graph.sources.is_empty() {
                        "none".to_owned()
                    } else {
                        graph.sources.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                ))
            }),
        None if graph.sources.is_empty() => Err(Failure::usage(format!(
            "{}: no [sources.NAME] is declared",
            graph.file.display()
        ))),
        None => Ok(graph.sources.values().collect()),
    }
}

/// `seq 12, 3 values, refreshed 2024-01-31 12:00:00 UTC`.
fn describe(record: &DefsRecord) -> String {
    format!(
        "seq {}, {}, refreshed {}",
        record.seq,
        crate::report::count(record.values, "value"),
        format_time_ms(record.time_ms)
    )
}

pub fn refresh(cli: &Cli, name: Option<&str>, no_wait: bool, json: bool) -> Result<u8, Failure> {
    let project = crate::open_workspace(cli)?;
    let sources = selected(&project, name)?;
    let store = project.open_writer(!no_wait)?;
    cairn_engine::groups::become_subreaper();
    let mut failed = 0;
    for source in sources {
        let previous = read_record(&store, &source.name);
        let in_force = match &previous {
            Ok(Some((record, _))) => {
                format!("the previous record stays in force ({})", describe(record))
            }
            Ok(None) => format!(
                "there is still no record of {}: builds that need it fail until a refresh succeeds",
                source.name
            ),
            Err(problem) => format!("the previous record cannot be read either ({problem})"),
        };
        let fetched = run_source(&project, &store, source).and_then(|bytes| {
            parse_values(&bytes)
                .map(|values| (bytes, values))
                .map_err(|error| format!("malformed output: {error}"))
        });
        let (bytes, values) = match fetched {
            Ok(fetched) => fetched,
            Err(error) => {
                // What the source printed (its stderr, a piece of a
                // malformed output) may carry a secret: redacted.
                let error = project.environment.redactor.redact_str(&error).into_owned();
                failed += 1;
                error_line(&format!(
                    "defs refresh {}: {error}; nothing was recorded and {in_force}",
                    source.name
                ));
                if json {
                    json_line(&json!({
                        "source": source.name,
                        "ok": false,
                        "error": error,
                        "in_force": previous.as_ref().ok().and_then(|p| p.as_ref()).map(|(record, _)| record.seq),
                    }));
                }
                continue;
            }
        };
        let digest = store.blobs().put_bytes(&bytes)?;
        store.blobs().sync()?;
        let build = store.catalog().next_build_id()?;
        let seq = store.catalog().append(
            build,
            vec![EventKind::DefsRefreshed {
                source: source.name.clone(),
                digest,
                values: values.len() as u64,
            }],
            Vec::new(),
        )?;
        let old_values = match &previous {
            Ok(Some((_, old))) => old.clone(),
            _ => Vec::new(),
        };
        let (added, removed) = diff(&old_values, &values);
        let change = match &previous {
            Ok(Some((record, _))) if added.is_empty() && removed.is_empty() => {
                format!("unchanged since seq {}", record.seq)
            }
            Ok(Some((record, _))) => format!(
                "since seq {}: {} added{}, {} removed{}",
                record.seq,
                added.len(),
                list(&added),
                removed.len(),
                list(&removed)
            ),
            Ok(None) => "the first record".to_owned(),
            Err(_) => "the previous record could not be read".to_owned(),
        };
        note(&format!(
            "{}: recorded {} (seq {seq}, blob {}); {change}",
            source.name,
            crate::report::count(values.len() as u64, "value"),
            digest.short()
        ));
        if json {
            json_line(&json!({
                "source": source.name,
                "ok": true,
                "seq": seq,
                "build": build,
                "digest": digest,
                "values": values.len(),
                "added": added,
                "removed": removed,
            }));
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

/// ` (a, b)` or ` (a, b, c and 4 more)`; empty for no values.
fn list(values: &[String]) -> String {
    const SHOWN: usize = 5;
    if values.is_empty() {
        return String::new();
    }
    let mut text = values
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if values.len() > SHOWN {
        text.push_str(&format!(" and {} more", values.len() - SHOWN));
    }
    format!(" ({text})")
}

/// Runs a source's command in the graph directory with the jobs' clean
/// environment and returns what it printed on stdout.
fn run_source(project: &Workspace, store: &Store, source: &Source) -> Result<Vec<u8>, String> {
    let tmp = store.tmp_dir();
    std::fs::create_dir_all(&tmp).map_err(|error| format!("{}: {error}", tmp.display()))?;
    let stem = format!("defs-{}-{}", source.name, std::process::id());
    let stdout_path = tmp.join(format!("{stem}.stdout"));
    let stderr_path = tmp.join(format!("{stem}.stderr"));
    let result = run_captured(project, store, source, &stdout_path, &stderr_path);
    let _ = std::fs::remove_file(&stdout_path);
    let _ = std::fs::remove_file(&stderr_path);
    result
}

fn run_captured(
    project: &Workspace,
    store: &Store,
    source: &Source,
    stdout_path: &Path,
    stderr_path: &Path,
) -> Result<Vec<u8>, String> {
    let children = Children::recorded_in(store.dir().join("running"));
    // What the source prints is bounded (docs/reliability.md, "Limits"):
    // past the limit it is stopped, and the output is read with that bound.
    let limit = &cairn_engine::limits::DEFS_OUTPUT_BYTES;
    let max = limit.value()?;
    let too_long = AtomicBool::new(false);
    let poll = || {
        if !too_long.load(Ordering::Relaxed)
            && std::fs::metadata(stdout_path).is_ok_and(|metadata| metadata.len() > max)
        {
            too_long.store(true, Ordering::Relaxed);
            children.interrupt();
        }
    };
    let label = format!("source {}", source.name);
    let ended = run_process(
        &Invocation {
            argv: &source.command,
            cwd: &project.graph.root,
            environment: &project.environment,
            extra_env: &[],
            stdout: stdout_path,
            stderr: stderr_path,
            run_id: &cairn_engine::groups::unique_id(),
            label: &label,
            timeout: Some(source.timeout),
        },
        &children,
        Some(&poll),
    )
    .map_err(|error| {
        format!(
            "the command could not run ({}): {error}",
            source.command.join(" ")
        )
    })?;
    let printed = || {
        limit.exceeded(
            &format!("the output of the command ({})", source.command.join(" ")),
            max,
        )
    };
    if too_long.load(Ordering::Relaxed) {
        return Err(format!("{}; it was stopped", printed()));
    }
    if ended.timed_out {
        return Err(format!(
            "the command did not finish within its timeout of {} and was stopped{} ({})",
            cairn_engine::graph::format_duration(source.timeout),
            if ended.escalated {
                " with SIGKILL: it ignored SIGTERM"
            } else {
                ""
            },
            source.command.join(" ")
        ));
    }
    let status = ended.status;
    if !status.success() {
        let stderr = std::fs::read(stderr_path).unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr);
        let lines: Vec<&str> = stderr.trim().lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n");
        let tail = if tail.is_empty() {
            " and printed nothing on stderr".to_owned()
        } else {
            format!(": {tail}")
        };
        return Err(format!(
            "the command {} ({}){tail}",
            describe_status(status),
            source.command.join(" ")
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(stdout_path)
        .and_then(|file| file.take(max.saturating_add(1)).read_to_end(&mut bytes))
        .map_err(|error| format!("{}: {error}", stdout_path.display()))?;
    if bytes.len() as u64 > max {
        return Err(printed());
    }
    Ok(bytes)
}

/// The store for reading `cairn defs show|diff`, or `None` (and a note)
/// when nothing was recorded here yet.
fn reader(project: &Workspace) -> Result<Option<Store>, Failure> {
    let store = project.open_reader()?;
    if store.is_none() {
        note("nothing was recorded here yet: run `cairn defs refresh`");
    }
    Ok(store)
}

pub fn show(cli: &Cli, name: Option<&str>, json: bool) -> Result<u8, Failure> {
    let project = crate::open_workspace(cli)?;
    let sources = selected(&project, name)?;
    let Some(store) = reader(&project)? else {
        return Ok(0);
    };
    for source in sources {
        let Some((record, values)) = read_record(&store, &source.name).map_err(|problem| {
            Failure::store(format!(
                "source {}: {problem} (run `cairn defs refresh {}` to record it again)",
                source.name, source.name
            ))
        })?
        else {
            if json {
                json_line(&json!({"source": source.name, "seq": null}));
            } else {
                note(&format!(
                    "source {:?} has no record yet: run `cairn defs refresh {}`",
                    source.name, source.name
                ));
            }
            continue;
        };
        if json {
            json_line(&json!({
                "source": source.name,
                "seq": record.seq,
                "build": record.build,
                "time_ms": record.time_ms,
                "digest": record.digest,
                "previous": record.previous,
                "values": values,
            }));
        } else if name.is_some() {
            note(&format!(
                "{}: {}, blob {}{}",
                source.name,
                describe(&record),
                record.digest,
                record
                    .previous
                    .map(|seq| format!("; previous record seq {seq}"))
                    .unwrap_or_default()
            ));
            print_stdout(&values.iter().map(|v| format!("{v}\n")).collect::<String>());
        } else {
            print_stdout(&format!(
                "{}  {}  ({})\n",
                source.name,
                describe(&record),
                values.join(", ")
            ));
        }
    }
    Ok(0)
}

pub fn diff_command(cli: &Cli, name: &str, from: Option<u64>, json: bool) -> Result<u8, Failure> {
    let project = crate::open_workspace(cli)?;
    selected(&project, Some(name))?;
    let Some(store) = reader(&project)? else {
        return Ok(0);
    };
    let unreadable = |problem: String| {
        Failure::store(format!(
            "source {name}: {problem} (run `cairn defs refresh {name}` to record it again)"
        ))
    };
    let Some((current, values)) = read_record(&store, name).map_err(unreadable)? else {
        note(&format!(
            "source {name:?} has no record yet: run `cairn defs refresh {name}`"
        ));
        return Ok(0);
    };
    let base_seq = match from {
        Some(seq) => Some(seq),
        None => current.previous,
    };
    let base_values = match base_seq {
        None => Vec::new(),
        Some(seq) => {
            let event = store.catalog().event(seq)?.ok_or_else(|| {
                Failure::usage(format!("--from {seq}: there is no event {seq} in the log"))
            })?;
            match &event.kind {
                EventKind::DefsRefreshed { source, digest, .. } if source == name => {
                    record_values(&store, digest, seq).map_err(unreadable)?
                }
                EventKind::DefsRefreshed { source, .. } => {
                    return Err(Failure::usage(format!(
                        "--from {seq}: event {seq} is a record of source {source}, not {name}"
                    )));
                }
                other => {
                    return Err(Failure::usage(format!(
                        "--from {seq}: event {seq} is {}, not a DefsRefreshed of {name} \
                         (`cairn log --kind DefsRefreshed` lists them)",
                        other.name()
                    )));
                }
            }
        }
    };
    let (added, removed) = diff(&base_values, &values);
    if json {
        json_line(&json!({
            "source": name,
            "from": base_seq,
            "to": current.seq,
            "added": added,
            "removed": removed,
        }));
    } else {
        let mut out = String::new();
        for value in &added {
            out.push_str(&format!("+{value}\n"));
        }
        for value in &removed {
            out.push_str(&format!("-{value}\n"));
        }
        print_stdout(&out);
        note(&format!(
            "{name}: {} -> seq {}: {} added, {} removed",
            base_seq.map_or_else(|| "no record".to_owned(), |seq| format!("seq {seq}")),
            current.seq,
            added.len(),
            removed.len()
        ));
    }
    Ok(0)
}

fn print_stdout(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(crate::escape::escape_lines(text).as_bytes());
}
