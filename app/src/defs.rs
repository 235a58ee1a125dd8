//! `cairn defs refresh|show|diff`: definitions fetched from external
//! sources (docs/defs.md), persisted as records.
//!
//! [`refresh`] is the only use case that runs a `[sources.NAME]` command.
//! It runs it like a job (graph directory, clean environment, its own
//! process group, killed if cairn dies or the source's `timeout` passes),
//! validates what it printed, stores the bytes as a blob and appends one
//! `DefsRefreshed`. A failing or malformed source appends nothing: the
//! previous record stays in force and every build keeps using it.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_engine::ContentDigest;
use cairn_engine::defs::{diff as diff_values, parse_values};
use cairn_engine::graph::Source;
use cairn_engine::ports::{BlobStore, EventLog};
use cairn_engine::record::{DefsRecord, EventKind};
use cairn_engine::runner::{Children, Invocation, describe_status, run_process};
use cairn_store::Store;

use crate::error::AppError;
use crate::workspace::Workspace;

pub use crate::records::{read_record, record_values};

/// The sources named (all of them when `name` is `None`).
fn selected<'g>(workspace: &'g Workspace, name: Option<&str>) -> Result<Vec<&'g Source>, AppError> {
    let graph = &workspace.graph;
    match name {
        Some(name) => graph
            .sources
            .get(name)
            .map(|source| vec![source])
            .ok_or_else(|| {
                AppError::Usage(format!(
                    "{}: no [sources.{name}] is declared (sources: {})",
                    graph.file.display(),
                    if graph.sources.is_empty() {
                        "none".to_owned()
                    } else {
                        graph.sources.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                ))
            }),
        None if graph.sources.is_empty() => Err(AppError::Usage(format!(
            "{}: no [sources.NAME] is declared",
            graph.file.display()
        ))),
        None => Ok(graph.sources.values().collect()),
    }
}

/// A source's record before a refresh.
#[derive(Debug, Clone)]
pub enum Previous {
    /// It was never refreshed.
    None,
    /// Its latest record.
    Record(DefsRecord),
    /// It has one that cannot be read, and why.
    Unreadable(String),
}

impl Previous {
    /// The record in force, if it can be read.
    pub fn record(&self) -> Option<&DefsRecord> {
        match self {
            Previous::Record(record) => Some(record),
            Previous::None | Previous::Unreadable(_) => None,
        }
    }
}

/// What refreshing one source did.
#[derive(Debug, Clone)]
pub enum SourceRefresh {
    /// Its output was recorded: event `seq` of build `build`, blob `digest`.
    Recorded {
        source: String,
        seq: u64,
        build: u64,
        digest: ContentDigest,
        /// How many values were recorded.
        values: u64,
        /// Against the previous record's values (all added if there was
        /// none or it cannot be read).
        added: Vec<String>,
        removed: Vec<String>,
        previous: Previous,
    },
    /// It failed (could not run, exited non-zero, timed out, printed too
    /// much or something malformed): nothing was recorded. `error` is
    /// redacted of the `[env] secret` values.
    Failed {
        source: String,
        error: String,
        previous: Previous,
    },
}

impl SourceRefresh {
    /// The line `defs refresh --json` prints for it.
    pub fn json(&self) -> RefreshLine<'_> {
        match self {
            SourceRefresh::Recorded {
                source,
                seq,
                build,
                digest,
                values,
                added,
                removed,
                ..
            } => RefreshLine::Recorded(crate::dto::defs::Refreshed {
                added,
                build: *build,
                digest,
                ok: true,
                removed,
                seq: *seq,
                source,
                values: *values,
            }),
            SourceRefresh::Failed {
                source,
                error,
                previous,
            } => RefreshLine::Failed(crate::dto::defs::RefreshFailed {
                error,
                in_force: previous.record().map(|record| record.seq),
                ok: false,
                source,
            }),
        }
    }
}

/// One line of `defs refresh --json`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum RefreshLine<'a> {
    Recorded(crate::dto::defs::Refreshed<'a>),
    Failed(crate::dto::defs::RefreshFailed<'a>),
}

/// `cairn defs refresh [NAME]`: runs the source commands (all, or NAME's)
/// one after the other, each told to `each` once done; returns how many
/// failed (the command then exits 1).
pub fn refresh(
    workspace: &Workspace,
    name: Option<&str>,
    no_wait: bool,
    each: &mut dyn FnMut(&SourceRefresh),
) -> Result<usize, AppError> {
    let sources = selected(workspace, name)?;
    let store = workspace.open_writer(!no_wait)?;
    cairn_engine::groups::become_subreaper();
    let mut failed = 0;
    for source in sources {
        let (previous, old_values) = match read_record(&store, &source.name) {
            Ok(Some((record, values))) => (Previous::Record(record), values),
            Ok(None) => (Previous::None, Vec::new()),
            Err(problem) => (Previous::Unreadable(problem), Vec::new()),
        };
        let fetched = run_source(workspace, &store, source).and_then(|bytes| {
            parse_values(&bytes)
                .map(|values| (bytes, values))
                .map_err(|error| format!("malformed output: {error}"))
        });
        let (bytes, values) = match fetched {
            Ok(fetched) => fetched,
            Err(error) => {
                // What the source printed (its stderr, a piece of a
                // malformed output) may carry a secret: redacted.
                let error = workspace
                    .environment
                    .redactor
                    .redact_str(&error)
                    .into_owned();
                failed += 1;
                each(&SourceRefresh::Failed {
                    source: source.name.clone(),
                    error,
                    previous,
                });
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
        let (added, removed) = diff_values(&old_values, &values);
        each(&SourceRefresh::Recorded {
            source: source.name.clone(),
            seq,
            build,
            digest,
            values: values.len() as u64,
            added,
            removed,
            previous,
        });
    }
    Ok(failed)
}

/// Runs a source's command in the graph directory with the jobs' clean
/// environment and returns what it printed on stdout.
fn run_source(workspace: &Workspace, store: &Store, source: &Source) -> Result<Vec<u8>, String> {
    let tmp = store.tmp_dir();
    std::fs::create_dir_all(&tmp).map_err(|error| format!("{}: {error}", tmp.display()))?;
    let stem = format!("defs-{}-{}", source.name, std::process::id());
    let stdout_path = tmp.join(format!("{stem}.stdout"));
    let stderr_path = tmp.join(format!("{stem}.stderr"));
    let result = run_captured(workspace, store, source, &stdout_path, &stderr_path);
    let _ = std::fs::remove_file(&stdout_path);
    let _ = std::fs::remove_file(&stderr_path);
    result
}

fn run_captured(
    workspace: &Workspace,
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
            cwd: &workspace.graph.root,
            environment: &workspace.environment,
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

/// The store for reading `cairn defs show|diff`, or `None` when nothing
/// was recorded here yet.
fn reader(workspace: &Workspace) -> Result<Option<crate::StoreHandle>, AppError> {
    workspace.open_reader()
}

/// The error of a source whose latest record cannot be read.
fn unreadable(source: &str, problem: &str) -> AppError {
    AppError::StoreProblem(format!(
        "source {source}: {problem} (run `cairn defs refresh {source}` to record it again)"
    ))
}

/// A source's latest record and its values.
#[derive(Debug, Clone)]
pub struct Record {
    pub record: DefsRecord,
    pub values: Vec<String>,
}

impl Record {
    /// The line `defs show --json` prints for it.
    pub fn json<'a>(&'a self, source: &'a str) -> crate::dto::defs::Shown<'a> {
        crate::dto::defs::Shown {
            build: self.record.build,
            digest: &self.record.digest,
            previous: self.record.previous,
            seq: self.record.seq,
            source,
            time_ms: self.record.time_ms,
            values: &self.values,
        }
    }
}

/// One source of `cairn defs show`.
#[derive(Debug)]
pub struct SourceRecord {
    pub source: String,
    /// Its latest record, `None` if it was never refreshed, an error if it
    /// cannot be read.
    pub record: Result<Option<Record>, AppError>,
}

/// `cairn defs show [NAME]`: the latest record of each source named (all
/// when `name` is `None`), in name order; `None` when nothing was ever
/// recorded here.
pub fn show(
    workspace: &Workspace,
    name: Option<&str>,
) -> Result<Option<Vec<SourceRecord>>, AppError> {
    let sources = selected(workspace, name)?;
    let Some(store) = reader(workspace)? else {
        return Ok(None);
    };
    Ok(Some(
        sources
            .into_iter()
            .map(|source| SourceRecord {
                source: source.name.clone(),
                record: read_record(&store, &source.name)
                    .map(|found| found.map(|(record, values)| Record { record, values }))
                    .map_err(|problem| unreadable(&source.name, &problem)),
            })
            .collect(),
    ))
}

/// What `cairn defs diff NAME` compares.
#[derive(Debug, Clone)]
pub enum Diff {
    /// Nothing was ever recorded here.
    NoStore,
    /// The source was never refreshed.
    NoRecord,
    /// The values added and removed between record `from` (none: an empty
    /// list) and the latest, `to`.
    Values(ValuesDiff),
}

#[derive(Debug, Clone)]
pub struct ValuesDiff {
    pub source: String,
    pub from: Option<u64>,
    pub to: u64,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl ValuesDiff {
    /// The line `defs diff --json` prints.
    pub fn json(&self) -> crate::dto::defs::Diffed<'_> {
        crate::dto::defs::Diffed {
            added: &self.added,
            from: self.from,
            removed: &self.removed,
            source: &self.source,
            to: self.to,
        }
    }
}

/// `cairn defs diff NAME [--from SEQ]`: the values added and removed
/// between the previous record (or the record of event `from`) and the
/// latest one.
pub fn diff(workspace: &Workspace, name: &str, from: Option<u64>) -> Result<Diff, AppError> {
    selected(workspace, Some(name))?;
    let Some(store) = reader(workspace)? else {
        return Ok(Diff::NoStore);
    };
    let Some((current, values)) =
        read_record(&store, name).map_err(|problem| unreadable(name, &problem))?
    else {
        return Ok(Diff::NoRecord);
    };
    let base_seq = match from {
        Some(seq) => Some(seq),
        None => current.previous,
    };
    let base_values = match base_seq {
        None => Vec::new(),
        Some(seq) => {
            let event = store.catalog().event(seq)?.ok_or_else(|| {
                AppError::Usage(format!("--from {seq}: there is no event {seq} in the log"))
            })?;
            match &event.kind {
                EventKind::DefsRefreshed { source, digest, .. } if source == name => {
                    record_values(&store, digest, seq)
                        .map_err(|problem| unreadable(name, &problem))?
                }
                EventKind::DefsRefreshed { source, .. } => {
                    return Err(AppError::Usage(format!(
                        "--from {seq}: event {seq} is a record of source {source}, not {name}"
                    )));
                }
                other => {
                    return Err(AppError::Usage(format!(
                        "--from {seq}: event {seq} is {}, not a DefsRefreshed of {name} \
                         (`cairn log --kind DefsRefreshed` lists them)",
                        other.name()
                    )));
                }
            }
        }
    };
    let (added, removed) = diff_values(&base_values, &values);
    Ok(Diff::Values(ValuesDiff {
        source: name.to_owned(),
        from: base_seq,
        to: current.seq,
        added,
        removed,
    }))
}
