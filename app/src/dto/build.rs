//! `cairn build --json`: one [`ActionLine`] per action once it is recorded,
//! then a [`BuildSummary`]; `--dry-run --json`: one [`DryActionLine`] per
//! action, then a [`DrySummary`] (docs/cli.md, "cairn build").

use cairn_engine::action::Outcome;
use cairn_engine::digest::ActionKey;
use cairn_engine::evaluate::Verdict;
use cairn_engine::record::BuildCounts;
use serde::Serialize;

use super::{LineType, Refs, SCHEMA};

/// `{"duration_ms":3,"job":"clean","key":"4be1…","outcome":"executed","outputs":[…],"type":"action"}`.
#[derive(Debug, Clone, Serialize)]
pub struct ActionLine<'a> {
    /// How long the job ran (`executed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Why it failed (`failed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    pub job: &'a str,
    /// The action's key, when it has one (a skipped action has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a ActionKey>,
    /// The build whose run this action joined (`joined` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined_build: Option<u64>,
    /// `executed`, `cached`, `restored`, `joined`, `failed` or `skipped`.
    pub outcome: &'static str,
    pub outputs: Refs<'a>,
    /// Why it was skipped (`skipped` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// The last lines of the job's stderr (`failed` only; empty when it
    /// printed nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<&'a [String]>,
    #[serde(rename = "type")]
    pub line: LineType,
}

impl<'a> ActionLine<'a> {
    /// The line of an action of `job` with `outputs` that ended with
    /// `outcome`.
    pub fn new(
        job: &'a str,
        outputs: Refs<'a>,
        outcome: &'a Outcome,
        key: Option<&'a ActionKey>,
    ) -> Self {
        let mut line = ActionLine {
            duration_ms: None,
            error: None,
            job,
            key,
            joined_build: None,
            outcome: outcome_word(outcome),
            outputs,
            reason: None,
            stderr_tail: None,
            line: LineType::Action,
        };
        match outcome {
            Outcome::Executed { duration_ms } => line.duration_ms = Some(*duration_ms),
            Outcome::Failed { error, stderr_tail } => {
                line.error = Some(error);
                line.stderr_tail = Some(stderr_tail);
            }
            Outcome::Skipped { reason } => line.reason = Some(reason),
            Outcome::Cached { .. } => {}
            Outcome::Joined { build } => line.joined_build = Some(*build),
        }
        line
    }
}

/// `executed`, `cached`, `restored`, `joined`, `failed` or `skipped`.
pub fn outcome_word(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Joined { .. } => "joined",
        Outcome::Executed { .. } => "executed",
        Outcome::Cached { restored: false } => "cached",
        Outcome::Cached { restored: true } => "restored",
        Outcome::Failed { .. } => "failed",
        Outcome::Skipped { .. } => "skipped",
    }
}

/// The last line of `cairn build --json`:
/// `{"build":3,"cached":1827,"duration_ms":412,"executed":3,"failed":0,"interrupted":false,"schema":1,"skipped":0,"total":1830,"type":"summary"}`.
#[derive(Debug, Clone, Serialize)]
pub struct BuildSummary {
    pub build: u64,
    pub cached: u64,
    /// The command's wall time.
    pub duration_ms: u64,
    pub executed: u64,
    pub failed: u64,
    pub interrupted: bool,
    /// Actions whose run by another build of the same server this build
    /// joined (present only when there were any: a local build never
    /// joins).
    #[serde(skip_serializing_if = "is_zero")]
    pub joined: u64,
    /// What the shared remote cache did (present only when the build used
    /// one: docs/remote-cache.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteLine>,
    pub schema: u32,
    pub skipped: u64,
    /// Actions in the plan: `executed + cached + joined + failed + skipped`.
    pub total: u64,
    #[serde(rename = "type")]
    pub line: LineType,
}

impl BuildSummary {
    pub fn new(
        build: u64,
        total: u64,
        counts: BuildCounts,
        interrupted: bool,
        elapsed: std::time::Duration,
    ) -> Self {
        BuildSummary {
            build,
            cached: counts.cached,
            duration_ms: super::millis(elapsed),
            executed: counts.executed,
            failed: counts.failed,
            interrupted,
            joined: counts.joined,
            remote: None,
            schema: SCHEMA,
            skipped: counts.skipped,
            total,
            line: LineType::Summary,
        }
    }
}

/// `BuildSummary.remote`.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteLine {
    pub url: String,
    pub hits: u64,
    pub misses: u64,
    pub refused: u64,
    pub errors: u64,
    pub uploaded: u64,
    pub downloaded_bytes: u64,
    pub uploaded_bytes: u64,
    pub abandoned: u64,
    pub tripped: bool,
}

impl From<&cairn_engine::remote::RemoteSummary> for RemoteLine {
    fn from(summary: &cairn_engine::remote::RemoteSummary) -> Self {
        RemoteLine {
            url: summary.url.clone(),
            hits: summary.hits,
            misses: summary.misses,
            refused: summary.refused,
            errors: summary.errors,
            uploaded: summary.uploaded,
            downloaded_bytes: summary.downloaded_bytes,
            uploaded_bytes: summary.uploaded_bytes,
            abandoned: summary.abandoned,
            tripped: summary.tripped,
        }
    }
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// A dry run's line for one action:
/// `{"job":"clean","outputs":[…],"reason":"…","type":"action","verdict":"run"}`.
#[derive(Debug, Clone, Serialize)]
pub struct DryActionLine<'a> {
    pub job: &'a str,
    pub outputs: Refs<'a>,
    pub reason: String,
    #[serde(rename = "type")]
    pub line: LineType,
    /// `run`, `up-to-date`, `restore` or `blocked`.
    pub verdict: &'static str,
}

impl<'a> DryActionLine<'a> {
    pub fn new(job: &'a str, outputs: Refs<'a>, verdict: &Verdict) -> Self {
        DryActionLine {
            job,
            outputs,
            reason: verdict.reason().to_string(),
            line: LineType::Action,
            verdict: verdict.state(),
        }
    }
}

/// The last line of a dry run (`build --dry-run --json`, and `backfill
/// --dry-run --json` with the partition counts).
#[derive(Debug, Clone, Serialize)]
pub struct DrySummary {
    /// Requested partitions already built (backfill only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub built: Option<u64>,
    /// Actions up to date or restorable.
    pub cached: u64,
    pub dry_run: bool,
    /// Actions that would run.
    pub executed: u64,
    /// Always 0: a dry run runs nothing.
    pub failed: u64,
    /// Requested partitions (backfill only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u64>,
    pub schema: u32,
    /// Actions blocked.
    pub skipped: u64,
    /// Requested partitions that would be built (backfill only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_build: Option<u64>,
    pub total: u64,
    #[serde(rename = "type")]
    pub line: LineType,
}

impl DrySummary {
    /// The summary of a build's dry run of `total` actions.
    pub fn new(total: u64, counts: &BuildCounts) -> Self {
        DrySummary {
            built: None,
            cached: counts.cached,
            dry_run: true,
            executed: counts.executed,
            failed: 0,
            partitions: None,
            schema: SCHEMA,
            skipped: counts.skipped,
            to_build: None,
            total,
            line: LineType::Summary,
        }
    }
}
