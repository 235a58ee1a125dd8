//! Operations of earlier servers, rebuilt from the event log when the
//! server starts (docs/api.md, "The Operation resource"): every build a
//! server ran records its submission (operation id, idempotency key, body
//! digest) in its `BuildRequested`, and how it ended in its
//! `BuildFinished`, so a restarted server answers for its earlier
//! operations and keeps honouring their idempotency keys.

use std::collections::HashMap;

use cairn_app::{AppError, Workspace};
use cairn_engine::record::EventKind;

use crate::registry::{FailedPartition, Operation, Registry};

/// How the error of a failed attempt that is retried ends
/// (engine/src/exec/run.rs).
const RETRYING: &str = "; retrying)";

/// The tail of the stderr of the failure `event` records, as the build's
/// observer gave it to the running server (`Outcome::Failed`'s
/// `stderr_tail`, joined by newlines): read from the store through the
/// logs use case. Empty when the job printed nothing, never ran, or its
/// log cannot be read (`GET /v1/partitions/{ref}/logs` says why).
fn failure_tail(workspace: &Workspace, event: &cairn_engine::record::Event) -> String {
    let Ok(Some(store)) = workspace.open_reader() else {
        return String::new();
    };
    cairn_app::logs::JobLogs::of_failure(store, event)
        .and_then(|logs| logs.stderr_tail().ok())
        .unwrap_or_default()
        .join("\n")
}

/// The operations the log records, oldest first.
pub fn operations(workspace: &Workspace) -> Result<Registry, AppError> {
    let mut registry = Registry::default();
    let Some(store) = workspace.open_reader()? else {
        return Ok(registry);
    };
    let mut by_build: HashMap<u64, String> = HashMap::new();
    cairn_engine::ports::EventLog::scan_events(store.catalog(), 1, &mut |event| {
        if let EventKind::BuildRequested {
            requested,
            command,
            submission: Some(submission),
            ..
        } = &event.kind
        {
            registry.restore(Operation::restored(
                submission,
                command,
                requested,
                event.build,
                event.time_ms,
            ));
            by_build.insert(event.build, submission.operation.clone());
            return true;
        }
        let Some(op) = by_build
            .get(&event.build)
            .and_then(|id| registry.get_mut(id))
        else {
            return true;
        };
        match &event.kind {
            EventKind::ActionFailed {
                job,
                outputs,
                error,
                ..
            } => {
                // A failed attempt that was retried: the action went on
                // (the running server's observer never heard of it).
                if error.ends_with(RETRYING) {
                    return true;
                }
                let log_tail = failure_tail(workspace, &event);
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
        true
    })?;
    registry.close_restored();
    Ok(registry)
}
