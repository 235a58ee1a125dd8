//! Whether a partition is being built right now, by a build in another
//! process: what `status` and `why` say instead of the state the catalog
//! projects (a retried job's failed attempt would otherwise read `failed`
//! while its next attempt runs).
//!
//! A partition is running when the store's writer lock is held by a live
//! build (`cairn_store::holder`: the lock file names the build, the
//! kernel's lock table confirms the holder) and that build's last event
//! about the partition is an `ActionStarted` (no success, failure, cache
//! hit or skip after it). The build commits its events every few
//! milliseconds, so a reader sees an action's start while it runs.

use cairn_engine::date::format_time_ms;
use cairn_engine::ports::Catalog;
use cairn_engine::record::EventKind;
use cairn_engine::refs::PartitionRef;
use cairn_store::Store;

use crate::Failure;
use crate::report::duration_text;
use cairn_app::Workspace;

/// The live build of a store, and a reader of its log.
pub struct LiveBuild {
    pub build: u64,
    pub pid: u32,
    store: Store,
}

impl LiveBuild {
    /// The build running in `project`'s store now, if any.
    pub fn find(project: &Workspace) -> Result<Option<LiveBuild>, Failure> {
        let Some(holder) = cairn_store::holder(&project.store_dir) else {
            return Ok(None);
        };
        let Some(build) = holder.build else {
            return Ok(None);
        };
        let Some(store) = project.open_reader()? else {
            return Ok(None);
        };
        Ok(Some(LiveBuild {
            build,
            pid: holder.pid,
            store,
        }))
    }

    /// `build 7 (pid 4242), attempt 2, for 1m 5s, checkpoint 4` when
    /// this build is running the job of `partition`, else `None`.
    pub fn running(&self, partition: &PartitionRef) -> Result<Option<String>, Failure> {
        let catalog = self.store.catalog();
        let mut last = None;
        catalog.partition_events(partition, 0, &mut |event| {
            if event.build == self.build
                && matches!(
                    event.kind,
                    EventKind::ActionStarted { .. }
                        | EventKind::ActionSucceeded { .. }
                        | EventKind::ActionFailed { .. }
                        | EventKind::ActionCached { .. }
                        | EventKind::ActionSkipped { .. }
                )
            {
                last = Some(event);
            }
            true
        })?;
        let Some(event) = last else {
            return Ok(None);
        };
        let EventKind::ActionStarted {
            key, job, attempt, ..
        } = &event.kind
        else {
            return Ok(None);
        };
        let attempt = if *attempt > 1 {
            format!(", attempt {attempt}")
        } else {
            String::new()
        };
        let checkpoint = match catalog.checkpoint(key)? {
            Some(record) if record.build == self.build => {
                format!(", checkpoint {}", record.sequence)
            }
            _ => String::new(),
        };
        let elapsed = cairn_engine::action::now_ms().saturating_sub(event.time_ms);
        Ok(Some(format!(
            "job {job} in build {} (pid {}){attempt}, started {} ({} ago){checkpoint}",
            self.build,
            self.pid,
            format_time_ms(event.time_ms),
            duration_text(std::time::Duration::from_millis(elapsed)),
        )))
    }
}
