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
                for output in outputs {
                    op.failed.push(FailedPartition {
                        partition: output.as_str().to_owned(),
                        job: job.clone(),
                        error: error.clone(),
                        // The captured stderr is in the store: `GET
                        // /v1/partitions/{ref}/logs`.
                        log_tail: String::new(),
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
