//! Whether a partition is being built right now, by a build in another
//! process: what `status` and `why` say instead of the state the catalog
//! projects (a retried job's failed attempt would otherwise read `failed`
//! while its next attempt runs).
//!
//! A partition is running when the store's writer lock is held by a live
//! build (`cairn_store::holder`: the lock file names the build, the
//! kernel's lock table confirms the holder) and that build's last event
//! about the partition is an `ActionStarted` (no success, failure, cache
//! hit or skip after it), or an `ActionRetrying`: a failed attempt whose
//! next one starts after the job's backoff. The build commits its events
//! every few milliseconds, so a reader sees an action's start while it
//! runs.

use std::fmt;
use std::time::Duration;

use cairn_engine::date::format_time_ms;
use cairn_engine::digest::ActionKey;
use cairn_engine::ports::Projections;
use cairn_engine::record::EventKind;
use cairn_engine::refs::PartitionRef;

use crate::{AppError, Workspace};

/// The live build of a store, and a reader of its log.
pub struct LiveBuild {
    /// The (latest) live build.
    pub build: u64,
    pub pid: u32,
    /// Every live build: one from another process's lock file, or the
    /// builds running now on this process's held workspace.
    builds: Vec<u64>,
    store: crate::StoreHandle,
}

/// A job that a live build is running now for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningJob {
    pub job: String,
    pub key: ActionKey,
    /// The build running it, and that build's process.
    pub build: u64,
    pub pid: u32,
    /// 1 for the first attempt in this build.
    pub attempt: u32,
    /// When this attempt started (ms since the Unix epoch).
    pub started_ms: u64,
    /// The sequence of the last checkpoint this build recorded for it.
    pub checkpoint: Option<u64>,
    /// Set while the build waits out the backoff before `attempt`: when
    /// that attempt starts (ms since the Unix epoch); `started_ms` is then
    /// when the wait began.
    pub retry_at_ms: Option<u64>,
}

impl fmt::Display for RunningJob {
    /// `job feed in build 7 (pid 4242), attempt 2, started 2024-01-31
    /// 12:00:03 UTC (1m 5s ago), checkpoint 4` (the time since the start
    /// is taken when displayed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "job {} in build {} (pid {})",
            self.job, self.build, self.pid
        )?;
        if let Some(retry_at_ms) = self.retry_at_ms {
            // `, attempt 1 failed, attempt 2 starts 2024-01-31 12:00:08 UTC
            // (in 4.2s)`: the build waits out the job's retry backoff.
            let now = cairn_engine::action::now_ms();
            write!(
                f,
                ", attempt {} failed, attempt {} starts {} (in {})",
                self.attempt.saturating_sub(1),
                self.attempt,
                format_time_ms(retry_at_ms),
                duration_text(Duration::from_millis(retry_at_ms.saturating_sub(now)))
            )?;
            if let Some(sequence) = self.checkpoint {
                write!(f, ", checkpoint {sequence}")?;
            }
            return Ok(());
        }
        if self.attempt > 1 {
            write!(f, ", attempt {}", self.attempt)?;
        }
        let elapsed = cairn_engine::action::now_ms().saturating_sub(self.started_ms);
        write!(
            f,
            ", started {} ({} ago)",
            format_time_ms(self.started_ms),
            duration_text(Duration::from_millis(elapsed))
        )?;
        if let Some(sequence) = self.checkpoint {
            write!(f, ", checkpoint {sequence}")?;
        }
        Ok(())
    }
}

impl LiveBuild {
    /// The build running in `workspace`'s store now, if any.
    pub fn find(workspace: &Workspace) -> Result<Option<LiveBuild>, AppError> {
        // A held workspace runs its builds in this process, several at once.
        if let Some(builds) = workspace.running_builds() {
            let (Some(&build), Some(store)) = (builds.last(), workspace.open_reader()?) else {
                return Ok(None);
            };
            return Ok(Some(LiveBuild {
                build,
                pid: std::process::id(),
                builds,
                store,
            }));
        }
        let Some(holder) = cairn_store::holder(&workspace.store_dir) else {
            return Ok(None);
        };
        let Some(build) = holder.build else {
            return Ok(None);
        };
        let Some(store) = workspace.open_reader()? else {
            return Ok(None);
        };
        Ok(Some(LiveBuild {
            build,
            pid: holder.pid,
            builds: vec![build],
            store,
        }))
    }

    /// The job this build is running for `partition` now, if any.
    pub fn running(&self, partition: &PartitionRef) -> Result<Option<RunningJob>, AppError> {
        let catalog = self.store.catalog();
        let mut last = None;
        catalog.partition_events(partition, 0, &mut |event| {
            if self.builds.contains(&event.build)
                && matches!(
                    event.kind,
                    EventKind::ActionStarted { .. }
                        | EventKind::ActionSucceeded { .. }
                        | EventKind::ActionFailed { .. }
                        | EventKind::ActionCached { .. }
                        | EventKind::ActionSkipped { .. }
                        | EventKind::ActionRetrying { .. }
                )
            {
                last = Some(event);
            }
            true
        })?;
        let Some(event) = last else {
            return Ok(None);
        };
        let (key, job, attempt, retry_at_ms) = match event.kind {
            EventKind::ActionStarted {
                key, job, attempt, ..
            } => (key, job, attempt, None),
            EventKind::ActionRetrying {
                key,
                job,
                attempt,
                delay_ms,
                ..
            } => (
                key,
                job,
                attempt,
                Some(event.time_ms.saturating_add(delay_ms)),
            ),
            _ => return Ok(None),
        };
        let checkpoint = match catalog.checkpoint(&key)? {
            Some(record) if record.build == event.build => Some(record.sequence),
            _ => None,
        };
        Ok(Some(RunningJob {
            job,
            key,
            build: event.build,
            pid: self.pid,
            attempt,
            started_ms: event.time_ms,
            checkpoint,
            retry_at_ms,
        }))
    }
}

/// `812ms`, `4.2s`, `1m 5s`, `2h 3m 4s`: a duration as people read it
/// (jiff's friendly format, compact designators).
pub fn duration_text(duration: Duration) -> String {
    use jiff::fmt::friendly::{Designator, FractionalUnit, Spacing, SpanPrinter};
    if duration < Duration::from_secs(1) {
        return format!("{}ms", duration.as_millis());
    }
    let printer = SpanPrinter::new()
        .designator(Designator::Compact)
        .spacing(Spacing::BetweenUnits);
    if duration < Duration::from_secs(60) {
        printer
            .fractional(Some(FractionalUnit::Second))
            .precision(Some(1))
            .unsigned_duration_to_string(&duration)
    } else {
        printer.unsigned_duration_to_string(&Duration::from_secs(duration.as_secs()))
    }
}
