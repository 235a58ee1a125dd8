//! `cairn backfill --json`: the build's [`ActionLine`](super::build::ActionLine)s,
//! then a [`BackfillSummary`]; `--dry-run --json`: one [`PartitionLine`] per
//! requested partition, then a [`DrySummary`](super::build::DrySummary) with
//! the partition counts (docs/cli.md, "cairn backfill").

use cairn_engine::record::BuildCounts;
use cairn_engine::refs::PartitionRef;
use serde::Serialize;

use super::{LineType, SCHEMA};

/// The last line of `cairn backfill --json`: a build's summary with the
/// partitions whose attempt failed. `build` and `duration_ms` are absent
/// when nothing ran (`--retry-failed` with nothing to retry).
#[derive(Debug, Clone, Serialize)]
pub struct BackfillSummary<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<u64>,
    pub cached: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub executed: u64,
    pub failed: u64,
    /// The partitions whose attempt failed in this build, sorted.
    pub failed_partitions: Vec<&'a PartitionRef>,
    pub interrupted: bool,
    pub schema: u32,
    pub skipped: u64,
    pub total: u64,
    #[serde(rename = "type")]
    pub line: LineType,
}

impl<'a> BackfillSummary<'a> {
    /// The summary of backfill build `build` (`None`: nothing was built).
    pub fn new(
        build: Option<u64>,
        total: u64,
        counts: BuildCounts,
        interrupted: bool,
        elapsed: Option<std::time::Duration>,
        failed_partitions: Vec<&'a PartitionRef>,
    ) -> Self {
        BackfillSummary {
            build,
            cached: counts.cached,
            duration_ms: elapsed.map(super::millis),
            executed: counts.executed,
            failed: counts.failed,
            failed_partitions,
            interrupted,
            schema: SCHEMA,
            skipped: counts.skipped,
            total,
            line: LineType::Summary,
        }
    }
}

/// A backfill dry run's line for one requested partition:
/// `{"reason":"…","ref":"daily/…","type":"partition","verdict":"built"}`.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionLine<'a> {
    pub reason: &'a str,
    #[serde(rename = "ref")]
    pub partition: &'a PartitionRef,
    #[serde(rename = "type")]
    pub line: LineType,
    /// `built`, or what the build would do: `run`, `restore`, `blocked`.
    pub verdict: &'a str,
}
