//! `invalidate` and `prune`: recorded decisions about partitions. Both
//! take the store's writer lock and append one event per partition in one
//! commit.

use cairn_engine::graph::Producer;
use cairn_engine::ports::EventLog;
use cairn_engine::record::EventKind;
use cairn_engine::refs::PartitionRef;

use crate::{AppError, Workspace};

/// Where an appended commit ended in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The build id the events carry.
    pub build: u64,
    /// The seq of the last event appended.
    pub seq: u64,
    /// When (ms since the Unix epoch), as the caller's clock read it after
    /// the commit.
    pub time_ms: u64,
}

/// What `invalidate` did, or would do (`recorded` is `None` for a dry
/// run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidated {
    pub partitions: Vec<PartitionRef>,
    pub recorded: Option<Recorded>,
}

/// A `--reason` that says nothing is refused.
fn check_reason(reason: &str) -> Result<(), AppError> {
    if reason.trim().is_empty() {
        return Err(AppError::Usage("--reason must say why".to_owned()));
    }
    Ok(())
}

/// Marks the partitions `requests` names (refs or patterns; none: every
/// declared one) invalid, so that the next build rebuilds them: one
/// `PartitionInvalidated` each, by `by` (a user name), for `reason`.
/// `dry_run` resolves them and records nothing; `wait` waits for the lock.
pub fn invalidate(
    workspace: &Workspace,
    requests: &[String],
    reason: &str,
    by: Option<&str>,
    dry_run: bool,
    wait: bool,
) -> Result<Invalidated, AppError> {
    check_reason(reason)?;
    let partitions = workspace.requested(requests)?;
    for partition in &partitions {
        if let Producer::Source { .. } = workspace
            .graph
            .lookup(partition)
            .map_err(AppError::Request)?
        {
            return Err(AppError::Usage(format!(
                "{partition} is a source partition: change its file instead of invalidating it"
            )));
        }
    }
    if dry_run {
        return Ok(Invalidated {
            partitions,
            recorded: None,
        });
    }
    let store = workspace.open_writer(wait)?;
    let events = partitions
        .iter()
        .map(|partition| EventKind::PartitionInvalidated {
            partition: partition.clone(),
            reason: reason.to_owned(),
            by: by.map(str::to_owned),
        })
        .collect();
    let build = store.catalog().next_build_id()?;
    let seq = store.catalog().append(build, events, Vec::new())?;
    Ok(Invalidated {
        partitions,
        recorded: Some(Recorded {
            build,
            seq,
            time_ms: cairn_engine::action::now_ms(),
        }),
    })
}

/// What `prune` removed, or would remove (`recorded` is `None` for a dry
/// run, and when there was nothing to prune).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// The orphaned partitions, each with the build that made its content.
    pub partitions: Vec<(PartitionRef, u64)>,
    pub recorded: Option<Recorded>,
}

/// Removes the data of every built partition the graph no longer declares
/// (`data/REF`, and parents left empty), then records a `PartitionPruned`
/// for each, by `by`, for `reason`. `dry_run` lists them and changes
/// nothing.
pub fn prune(
    workspace: &Workspace,
    reason: &str,
    by: Option<&str>,
    dry_run: bool,
    wait: bool,
) -> Result<Pruned, AppError> {
    check_reason(reason)?;
    let store = if dry_run {
        workspace.open_reader()?
    } else {
        Some(workspace.open_writer(wait)?)
    };
    let orphans = match &store {
        Some(store) => workspace.orphans(store)?,
        None => Vec::new(),
    };
    let store = match store {
        Some(store) if !dry_run && !orphans.is_empty() => store,
        _ => {
            return Ok(Pruned {
                partitions: orphans,
                recorded: None,
            });
        }
    };
    // The data first, then the record: a crash in between leaves
    // partitions recorded as built whose data is gone, which `status` still
    // lists as orphaned and the next prune records.
    for (partition, _) in &orphans {
        let path = workspace.graph.data_path(&workspace.data_root, partition);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(AppError::StoreProblem(format!(
                    "cannot remove {}: {error}; nothing was recorded",
                    path.display()
                )));
            }
        }
        // Parent directories left empty (`data/raw/date=D`) go too.
        let mut parent = path.parent();
        while let Some(directory) = parent {
            if directory == workspace.data_root || std::fs::remove_dir(directory).is_err() {
                break;
            }
            parent = directory.parent();
        }
    }
    let events = orphans
        .iter()
        .map(|(partition, _)| EventKind::PartitionPruned {
            partition: partition.clone(),
            reason: reason.to_owned(),
            by: by.map(str::to_owned),
        })
        .collect();
    let build = store.catalog().next_build_id()?;
    let seq = store.catalog().append(build, events, Vec::new())?;
    Ok(Pruned {
        partitions: orphans,
        recorded: Some(Recorded {
            build,
            seq,
            time_ms: cairn_engine::action::now_ms(),
        }),
    })
}
