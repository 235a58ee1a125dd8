//! `cairn backfill CONFIG.toml`: build every partition a checked-in config
//! names (docs/backfill.md), through the same build as `cairn build`
//! ([`crate::build::execute`]).
//!
//! The config is validated against the graph before anything runs (exit 2,
//! nothing recorded). The build records `command = "backfill"` and a reason
//! made of the config's reason, its path and its content digest, so `cairn
//! log --build ID` says why it ran. Running the same config again builds
//! only what has no recorded result: that is how an interrupted backfill
//! resumes.

use std::path::Path;

use cairn_engine::evaluate::{Verdict, evaluate};
use cairn_engine::plan::{InputSource, Plan};
use cairn_engine::ports::Projections;
use cairn_engine::record::BuildCounts;
use cairn_engine::refs::PartitionRef;

pub use cairn_engine::backfill::Backfill;

use crate::build::{BuildObserver, Built, Execution, execute};
use crate::error::AppError;
use crate::workspace::Workspace;

/// Reads the backfill config at `file` and checks it against the graph.
pub fn load(workspace: &Workspace, file: &Path) -> Result<Backfill, AppError> {
    Ok(Backfill::load(file, &workspace.graph)?)
}

/// How to run a backfill.
#[derive(Debug, Clone, Default)]
pub struct BackfillRequest {
    /// Jobs at once (default: the number of cores).
    pub jobs: Option<usize>,
    /// Stop starting new actions after the first failure (backfills keep
    /// going by default).
    pub fail_fast: bool,
    /// Fail at once if another cairn holds the store, instead of waiting.
    pub no_wait: bool,
    /// Extra attempts for a failing job (overrides each job's `retries`).
    pub retries: Option<u32>,
    /// Stops the backfill when cancelled; `None`: SIGINT/SIGTERM do (see
    /// [`crate::build::BuildRequest::cancel`]).
    pub cancel: Option<crate::build::Cancel>,
    /// The server operation this backfill runs, recorded in its
    /// `BuildRequested` (store format 9).
    pub submission: Option<crate::build::Submission>,
}

/// The partitions a backfill builds.
pub enum Targets {
    /// Every partition the config names.
    All(Vec<PartitionRef>),
    /// `--retry-failed`: those whose action, or an upstream action, has an
    /// output whose last attempt failed (may be empty: nothing to retry).
    Retry(Vec<PartitionRef>),
}

impl Targets {
    pub fn refs(&self) -> &[PartitionRef] {
        match self {
            Targets::All(refs) | Targets::Retry(refs) => refs,
        }
    }
}

/// The partitions `backfill` builds: all of them, or with `retry_failed`
/// those whose last attempt (or an input's) failed.
pub fn targets(
    workspace: &Workspace,
    backfill: &Backfill,
    retry_failed: bool,
) -> Result<Targets, AppError> {
    let refs = backfill.refs();
    if !retry_failed {
        return Ok(Targets::All(refs));
    }
    let all = workspace.plan(&refs)?;
    Ok(Targets::Retry(failed_targets(workspace, &all)?))
}

/// The requested refs of `plan` whose action, or an upstream action, has an
/// output whose last attempt failed.
fn failed_targets(workspace: &Workspace, plan: &Plan) -> Result<Vec<PartitionRef>, AppError> {
    workspace.read_context(|context| {
        let mut affected = vec![false; plan.actions.len()];
        for &index in &plan.order {
            let action = &plan.actions[index];
            let mut hit = action.inputs.iter().any(|input| match input {
                InputSource::Action { action, .. } => affected[*action],
                InputSource::Source { .. } => false,
            });
            for output in &action.config.outputs {
                if hit {
                    break;
                }
                hit = context
                    .catalog
                    .partition(output)?
                    .is_some_and(|state| state.failed.is_some());
            }
            affected[index] = hit;
        }
        let producer = plan.producers();
        Ok(plan
            .requested
            .iter()
            .filter(|partition| {
                producer
                    .get(partition)
                    .is_some_and(|&index| affected[index])
            })
            .cloned()
            .collect())
    })
}

/// One requested partition of a backfill's dry run.
#[derive(Debug, Clone)]
pub struct PartitionVerdict {
    pub partition: PartitionRef,
    /// `built`, or what the build would do: `run`, `restore`, `blocked`.
    pub verdict: &'static str,
    pub reason: String,
}

impl PartitionVerdict {
    /// The line `backfill --dry-run --json` prints for it.
    pub fn json(&self) -> crate::dto::backfill::PartitionLine<'_> {
        crate::dto::backfill::PartitionLine {
            reason: &self.reason,
            partition: &self.partition,
            line: crate::dto::LineType::Partition,
            verdict: self.verdict,
        }
    }
}

/// What a backfill would do; nothing was run or recorded.
#[derive(Debug, Clone)]
pub struct DryRun {
    /// Each requested partition, in the plan's requested order.
    pub partitions: Vec<PartitionVerdict>,
    /// Requested partitions already built, and to build.
    pub built: u64,
    pub to_build: u64,
    /// Actions in the plan, and how many would run, are up to date or
    /// restorable, or are blocked.
    pub total: u64,
    pub counts: BuildCounts,
}

impl DryRun {
    /// The summary line of `backfill --dry-run --json`.
    pub fn summary(&self) -> crate::dto::build::DrySummary {
        crate::dto::build::DrySummary {
            built: Some(self.built),
            partitions: Some(self.partitions.len() as u64),
            to_build: Some(self.to_build),
            ..crate::dto::build::DrySummary::new(self.total, &self.counts)
        }
    }
}

/// Each requested partition of `plan` with what a build would do for it;
/// runs and records nothing.
pub fn dry_run(workspace: &Workspace, plan: &Plan) -> Result<DryRun, AppError> {
    let verdicts =
        workspace.read_context(|context| evaluate(context, plan).map_err(AppError::from))?;
    let producer = plan.producers();
    let (mut built, mut to_build) = (0, 0);
    let mut partitions = Vec::with_capacity(plan.requested.len());
    for partition in &plan.requested {
        let Some(&index) = producer.get(partition) else {
            continue;
        };
        let (state, reason) = verdicts[index].describe();
        let verdict = match &verdicts[index] {
            Verdict::UpToDate { .. } => {
                built += 1;
                "built"
            }
            _ => {
                to_build += 1;
                state
            }
        };
        partitions.push(PartitionVerdict {
            partition: partition.clone(),
            verdict,
            reason,
        });
    }
    Ok(DryRun {
        partitions,
        built,
        to_build,
        total: plan.actions.len() as u64,
        counts: Verdict::count(&verdicts),
    })
}

/// A finished (or interrupted) backfill build.
pub struct Backfilled {
    pub built: Built,
    /// The partitions whose attempt failed in this build, with the error,
    /// sorted.
    pub failed: Vec<(PartitionRef, String)>,
}

impl Backfilled {
    /// The summary line of `backfill --json`; `elapsed`: the command's wall
    /// time.
    pub fn summary(
        &self,
        elapsed: std::time::Duration,
    ) -> crate::dto::backfill::BackfillSummary<'_> {
        crate::dto::backfill::BackfillSummary::new(
            Some(self.built.build()),
            self.built.total,
            self.built.counts(),
            self.built.interrupted(),
            Some(elapsed),
            self.failed.iter().map(|(partition, _)| partition).collect(),
        )
    }
}

/// Builds `plan` (of `backfill`'s targets) as a backfill: recorded with
/// `command = "backfill"` and the config's reason, past failures unless
/// `fail_fast`, no up-to-date snapshot left.
pub fn run(
    workspace: &Workspace,
    backfill: &Backfill,
    plan: &Plan,
    request: &BackfillRequest,
    observer: &dyn BuildObserver,
) -> Result<Backfilled, AppError> {
    let built = execute(
        workspace,
        plan,
        &Execution {
            jobs: request.jobs,
            keep_going: !request.fail_fast,
            no_wait: request.no_wait,
            retries: request.retries,
            requested: backfill.targets(),
            command: "backfill",
            reason: Some(backfill.reason()),
            snapshot: false,
            cancel: request.cancel.clone(),
            submission: request.submission.clone(),
        },
        observer,
    )?;
    // The partitions whose attempt failed in this build.
    let build = built.build();
    let mut failed: Vec<(PartitionRef, String)> = Vec::new();
    for action in &plan.actions {
        for output in &action.config.outputs {
            if let Some(state) = built.store().catalog().partition(output)?
                && let Some((failed_build, error)) = state.failed
                && failed_build == build
            {
                failed.push((output.clone(), error));
            }
        }
    }
    failed.sort();
    Ok(Backfilled { built, failed })
}
