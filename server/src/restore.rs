//! Operations of earlier servers, rebuilt from the event log when the
//! server starts (docs/api.md, "The Operation resource"): every build a
//! server ran records its submission (operation id, idempotency key, body
//! digest) in its `BuildRequested`, and how it ended in its
//! `BuildFinished`, so a restarted server answers for its earlier
//! operations and keeps honouring their idempotency keys.
//!
//! Only the last [`KEPT`] operations (`cairn serve --keep-operations`)
//! are rebuilt, and the log is read backwards from its end until their
//! `BuildRequested` events are found: startup reads the events since
//! those operations began, however long the log grew before them. Older
//! builds stay in the log (`GET /v1/events?build=N`, `cairn log`).

use std::collections::HashMap;

use cairn_app::{AppError, Workspace};
use cairn_engine::record::{Event, EventKind};

use crate::registry::{FailedPartition, Operation, Registry};

/// How many operations a restarted server rebuilds by default.
pub const KEPT: usize = 1_000;

/// How the error of a failed attempt that is retried ends
/// (engine/src/exec/run.rs).
const RETRYING: &str = "; retrying)";

/// What startup rebuilt.
pub struct Restored {
    /// The last operations the log records, oldest first.
    pub registry: Registry,
    /// The events read to find them (the `cairn_restored_events_read`
    /// metric).
    pub events_read: u64,
}

/// The last `kept` operations the log records, oldest first.
pub fn operations(workspace: &Workspace, kept: usize) -> Result<Restored, AppError> {
    let mut restored = Restored {
        registry: Registry::default(),
        events_read: 0,
    };
    if kept == 0 {
        return Ok(restored);
    }
    let Some(store) = workspace.open_reader()? else {
        return Ok(restored);
    };
    // Read newest first: a build's events come before its `BuildRequested`,
    // so those an operation needs are kept by build until it is reached
    // (then replayed oldest first), and dropped when the build turns out
    // not to be a server's.
    let mut pending: HashMap<u64, Vec<Event>> = HashMap::new();
    let mut found: Vec<Operation> = Vec::new();
    let mut events_read = 0u64;
    store.catalog().scan_events_back(&mut |event| {
        events_read += 1;
        match &event.kind {
            EventKind::BuildRequested {
                requested,
                command,
                reason,
                submission,
            } => {
                let events = pending.remove(&event.build).unwrap_or_default();
                let Some(submission) = submission else {
                    return true;
                };
                let mut op = Operation::restored(
                    submission,
                    command,
                    requested,
                    reason.as_deref(),
                    event.build,
                    event.time_ms,
                );
                for event in events.iter().rev() {
                    apply(workspace, &mut op, event);
                }
                found.push(op);
                found.len() < kept
            }
            EventKind::ActionFailed { .. }
            | EventKind::ActionSkipped { .. }
            | EventKind::BuildFinished { .. } => {
                pending.entry(event.build).or_default().push(event);
                true
            }
            _ => true,
        }
    })?;
    restored.events_read = events_read;
    for op in found.into_iter().rev() {
        restored.registry.restore(op);
    }
    restored.registry.close_restored();
    Ok(restored)
}

/// What `event`, of `op`'s build, says of it.
fn apply(workspace: &Workspace, op: &mut Operation, event: &Event) {
    match &event.kind {
        EventKind::ActionFailed {
            job,
            outputs,
            error,
            ..
        } => {
            // A failed attempt that was retried: the action went on (the
            // running server's observer never heard of it).
            if error.ends_with(RETRYING) {
                return;
            }
            let log_tail = failure_tail(workspace, event);
            for output in outputs {
                op.failed.push(FailedPartition {
                    partition: output.as_str().to_owned(),
                    job: job.clone(),
                    error: error.clone(),
                    log_tail: log_tail.clone(),
                });
                op.unfinished.push(output.as_str().to_owned());
            }
        }
        EventKind::ActionSkipped { outputs, .. } => op
            .unfinished
            .extend(outputs.iter().map(|output| output.as_str().to_owned())),
        EventKind::BuildFinished {
            counts,
            interrupted,
        } => op.ended_in_log(*counts, *interrupted, event.seq, event.time_ms),
        _ => {}
    }
}

/// The tail of the stderr of the failure `event` records, as the build's
/// observer gave it to the running server (`Outcome::Failed`'s
/// `stderr_tail`, joined by newlines): read from the store through the
/// logs use case. Empty when the job printed nothing, never ran, or its
/// log cannot be read (`GET /v1/partitions/{ref}/logs` says why).
fn failure_tail(workspace: &Workspace, event: &Event) -> String {
    let Ok(Some(store)) = workspace.open_reader() else {
        return String::new();
    };
    cairn_app::logs::JobLogs::of_failure(store, event)
        .and_then(|logs| logs.stderr_tail().ok())
        .unwrap_or_default()
        .join("\n")
}
