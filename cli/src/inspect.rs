//! Read-only commands: `status`, `log`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;

use cairn_app::dto::events::EventLine;
use cairn_app::dto::status::StatusLine;
use cairn_app::events::{EventQuery, Scanned};
use cairn_app::status::State;
use cairn_engine::record::{Event, EventKind};

use crate::report::{count, json_line, note};
use crate::{Cli, Failure};

pub fn print_stdout(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
}

pub fn status(cli: &Cli, requests: &[String], json: bool) -> Result<u8, Failure> {
    let workspace = crate::open_workspace(cli)?;
    let rows = cairn_app::status::status(&workspace, requests)?;
    for row in &rows {
        if json {
            json_line(&StatusLine::from(row));
        } else {
            print_stdout(&status_line_text(
                row.state.word(),
                row.partition.as_str(),
                &row.reason,
            ));
        }
    }
    if !json {
        note(&status_summary_text(rows.len(), |word| {
            rows.iter().filter(|row| row.state.word() == word).count()
        }));
    }
    Ok(0)
}

/// A partition's line of `cairn status` (local or `--remote`).
pub fn status_line_text(state: &str, partition: &str, reason: &str) -> String {
    let reason = crate::escape::escape(reason);
    format!("{state:<8} {partition}  {reason}\n")
}

/// The last line of `cairn status`: `rows` partitions, `number(state)` of
/// them in each state (by its word).
pub fn status_summary_text(rows: usize, number: impl Fn(&str) -> usize) -> String {
    let orphaned = match number(State::Orphaned.word()) {
        0 => String::new(),
        orphaned => format!(", {orphaned} orphaned"),
    };
    format!(
        "{}: {} built, {} stale, {} missing, {} failed, {} running{orphaned}",
        count(rows as u64, "partition"),
        number(State::Built.word()),
        number(State::Stale.word()),
        number(State::Missing.word()),
        number(State::Failed.word()),
        number(State::Running.word())
    )
}

/// The second stage of `cairn log`: renders the batches it receives and
/// writes them to stdout. A closed pipe (`cairn log | head`) is not an
/// error of the log: it sets `closed`, which stops the scan.
fn print_batches(receiver: Receiver<Vec<Event>>, json: bool, closed: &AtomicBool) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let mut buffer: Vec<u8> = Vec::with_capacity(256 * 1024);
    for batch in receiver {
        for event in &batch {
            if json {
                EventLine(event).write(&mut buffer);
            } else {
                buffer.extend_from_slice(event_text(event).as_bytes());
                buffer.push(b'\n');
            }
        }
        if stdout.write_all(&buffer).is_err() {
            closed.store(true, Ordering::Relaxed);
            return;
        }
        buffer.clear();
    }
    let _ = stdout.flush();
}

pub fn log(cli: &Cli, query: &EventQuery, json: bool) -> Result<u8, Failure> {
    let workspace = crate::open_workspace(cli)?;
    // Two stages, so that reading and decoding the log (this thread) and
    // rendering and writing it (a second one) overlap: batches of events go
    // through a small bounded channel, so memory stays flat.
    const BATCH: usize = 1024;
    let closed = AtomicBool::new(false);
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<Event>>(4);
    let scanned = std::thread::scope(|scope| {
        let closed = &closed;
        scope.spawn(move || print_batches(receiver, json, closed));
        let mut batch: Vec<Event> = Vec::with_capacity(BATCH);
        let mut visit = |event: Event| {
            batch.push(event);
            if batch.len() >= BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if sender.send(full).is_err() {
                    return false;
                }
            }
            !closed.load(Ordering::Relaxed)
        };
        let scanned = cairn_app::events::scan(&workspace, query, &mut visit);
        if !batch.is_empty() {
            let _ = sender.send(batch);
        }
        drop(sender);
        scanned
    })?;
    if scanned == Scanned::NothingBuilt {
        note("nothing was built here yet: the event log is empty");
    }
    Ok(0)
}

pub fn event_text(event: &Event) -> String {
    let (partitions, job) = cairn_app::events::subjects(&event.kind);
    let detail = match &event.kind {
        EventKind::BuildRequested {
            requested,
            command,
            reason,
            submission,
        } => format!(
            "{command} {}{}{}",
            if requested.is_empty() {
                "(everything)".to_owned()
            } else {
                requested.join(" ")
            },
            reason
                .as_ref()
                .map(|reason| format!("  reason: {reason}"))
                .unwrap_or_default(),
            submission
                .as_ref()
                .map(|submission| format!(
                    "  operation: {}{}",
                    submission.operation,
                    submission
                        .idempotency_key
                        .as_ref()
                        .map(|key| format!(" (idempotency key {key})"))
                        .unwrap_or_default()
                ))
                .unwrap_or_default()
        ),
        EventKind::Planned { actions, sources } => {
            format!(
                "{}, {}",
                count(*actions, "action"),
                count(*sources, "source")
            )
        }
        EventKind::ActionStarted {
            reason,
            attempt,
            resumed_from,
            ..
        } => {
            let attempt = if *attempt > 1 {
                format!(" (attempt {attempt})")
            } else {
                String::new()
            };
            let resumed = resumed_from
                .map(|sequence| format!(", resuming from checkpoint {sequence}"))
                .unwrap_or_default();
            format!("{reason}{attempt}{resumed}")
        }
        EventKind::ActionCheckpointed {
            sequence,
            size,
            digest,
            ..
        } => {
            format!(
                "checkpoint {sequence} ({}, {})",
                count(*size, "byte"),
                digest.short()
            )
        }
        EventKind::ActionFailed { error, .. } => error.clone(),
        EventKind::ActionCached {
            built_by,
            restored,
            remote: None,
            ..
        } => format!(
            "reused build {built_by}{}",
            if *restored { ", restored" } else { "" }
        ),
        EventKind::ActionCached {
            remote: Some(origin),
            ..
        } => format!(
            "restored from the remote cache ({}), built by {}",
            origin.url, origin.producer
        ),
        EventKind::RemoteRefused { url, reason, .. } => {
            format!("refused the remote cache's entry ({url}): {reason}")
        }
        EventKind::ActionUploaded {
            url,
            blobs,
            bytes,
            created,
            ..
        } => format!(
            "uploaded to the remote cache ({url}): {}, {}{}",
            count(*blobs, "blob"),
            count(*bytes, "byte"),
            if *created {
                ""
            } else {
                "; another writer's entry was there first and was kept"
            }
        ),
        EventKind::ActionDispatched {
            attempt,
            executor,
            id,
            ..
        } => format!(
            "attempt {attempt} runs in {} job {id}",
            cairn_app::events::executor_title(executor)
        ),
        EventKind::ActionSkipped { reason, .. } => reason.clone(),
        EventKind::ActionRetrying {
            attempt, delay_ms, ..
        } => format!(
            "attempt {attempt} in {}",
            cairn_app::running::duration_text(std::time::Duration::from_millis(*delay_ms))
        ),
        EventKind::ActionJoined { joined_build, .. } => {
            format!("joined the run of build {joined_build}")
        }
        EventKind::PartitionMaterialized { digest, .. } => format!("content {}", digest.short()),
        EventKind::PartitionInvalidated { reason, by, .. }
        | EventKind::PartitionPruned { reason, by, .. } => match by {
            Some(by) => format!("by {by}: {reason}"),
            None => reason.clone(),
        },
        EventKind::BuildFinished {
            counts,
            interrupted,
        } => format!(
            "{} executed, {} cached, {}{} failed, {} skipped{}",
            counts.executed,
            counts.cached,
            if counts.joined > 0 {
                format!("{} joined, ", counts.joined)
            } else {
                String::new()
            },
            counts.failed,
            counts.skipped,
            if *interrupted { ", interrupted" } else { "" }
        ),
        EventKind::DatasetVersionChanged { dataset, from, to } => format!(
            "{dataset}: {} -> {}",
            from.as_deref().unwrap_or("none"),
            to.as_deref().unwrap_or("none")
        ),
        EventKind::ActionSucceeded { manifest } => format!(
            "{} ms",
            manifest.finished_ms.saturating_sub(manifest.started_ms)
        ),
        EventKind::DefsRefreshed {
            source,
            digest,
            values,
        } => format!(
            "source {source}: {}, record {}",
            count(*values, "value"),
            digest.short()
        ),
    };
    let about: Vec<&str> = partitions.iter().map(|p| p.as_str()).collect();
    // One line per event: whatever the stored texts hold stays on it.
    let detail = crate::escape::escape(&detail);
    format!(
        "{:>6} b{:<4} {} {:<22} {}{}  {detail}",
        event.seq,
        event.build,
        log_time(event.time_ms),
        event.kind.name(),
        job.map(|job| format!("{job} ")).unwrap_or_default(),
        about.join(", ")
    )
}

/// An event's recorded time as `cairn log` shows it: UTC, to the second,
/// in the form `--since` and `--until` accept (`2024-02-01T09:12:44Z`).
fn log_time(ms: u64) -> String {
    let text = cairn_engine::date::format_time_ms(ms);
    match text.strip_suffix(" UTC") {
        Some(time) => format!("{}Z", time.replacen(' ', "T", 1)),
        None => text,
    }
}
