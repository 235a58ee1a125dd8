//! Read-only evaluation of a plan: for each action, whether it is up to date,
//! would be restored, or would run and why — without running, restoring or
//! recording anything. Shared by `build --dry-run`, `plan` and `status`.

use crate::action::{Context, Decision};
use crate::digest::{ActionKey, ContentDigest};
use crate::exec::{ExecError, code_digests};
use crate::observe::Observer;
use crate::plan::{InputSource, Plan};
use crate::record::BuildCounts;
use crate::refs::PartitionRef;

/// What a build would do with one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Built under this key and intact: reused.
    UpToDate { key: ActionKey, built_by: u64 },
    /// Built under this key, but a data path is missing or altered: restored
    /// from the store without running the job.
    Restore { key: ActionKey },
    /// The job would run.
    Run { key: ActionKey, reason: String },
    /// The job would run if an upstream rebuild changes its input; the key is
    /// not known until then.
    Pending { input: PartitionRef, reason: String },
    /// An input cannot be produced (a missing source file).
    Blocked { reason: String },
}

impl Verdict {
    /// A short state word and a one-line reason.
    pub fn describe(&self) -> (&'static str, String) {
        match self {
            Verdict::UpToDate { built_by, .. } => (
                "up-to-date",
                format!("reuses the result of build {built_by}"),
            ),
            Verdict::Restore { .. } => (
                "restore",
                "data path missing or altered; restored from the store".to_owned(),
            ),
            Verdict::Run { reason, .. } => ("run", reason.clone()),
            Verdict::Pending { reason, .. } => ("run", reason.clone()),
            Verdict::Blocked { reason } => ("blocked", reason.clone()),
        }
    }

    /// Counts as `build` would report them if every job succeeded and every
    /// upstream rebuild changed its output (early cutoff can only lower them).
    pub fn count(verdicts: &[Verdict]) -> BuildCounts {
        let mut counts = BuildCounts::default();
        for verdict in verdicts {
            match verdict {
                Verdict::UpToDate { .. } | Verdict::Restore { .. } => counts.cached += 1,
                Verdict::Run { .. } | Verdict::Pending { .. } => counts.executed += 1,
                Verdict::Blocked { .. } => counts.skipped += 1,
            }
        }
        counts
    }
}

/// Evaluates every action of `plan`, in topological order.
pub fn evaluate(context: &Context<'_>, plan: &Plan) -> Result<Vec<Verdict>, ExecError> {
    let observer = Observer::new(context.catalog);
    let mut scratch = Vec::new();
    let codes = code_digests(
        context.graph,
        plan.actions.iter().map(|a| a.job.as_str()),
        &observer,
        &mut scratch,
    )?;
    let sources: Vec<Result<ContentDigest, String>> = plan
        .sources
        .iter()
        .map(
            |source| match observer.partition(&source.path, &mut scratch) {
                Ok(Some((digest, _))) => Ok(digest),
                Ok(None) => Err(format!(
                    "source {} is missing: {} does not exist",
                    source.partition,
                    source.path.display()
                )),
                Err(error) => Err(format!("source {}: {error}", source.partition)),
            },
        )
        .collect();
    let mut outputs: Vec<Option<Vec<ContentDigest>>> = vec![None; plan.actions.len()];
    let mut verdicts: Vec<Option<Verdict>> = vec![None; plan.actions.len()];
    for &index in &plan.order {
        let action = &plan.actions[index];
        let mut resolved = Vec::with_capacity(action.inputs.len());
        let mut verdict = None;
        for (dep, input) in action.config.inputs.iter().zip(&action.inputs) {
            match *input {
                InputSource::Source { source } => match &sources[source] {
                    Ok(digest) => resolved.push(crate::action::ResolvedInput {
                        partition: dep.partition.clone(),
                        digest: *digest,
                        path: plan.sources[source].path.clone(),
                    }),
                    Err(error) => {
                        verdict = Some(Verdict::Blocked {
                            reason: error.clone(),
                        });
                        break;
                    }
                },
                InputSource::Action {
                    action: upstream,
                    output,
                } => match (&outputs[upstream], &verdicts[upstream]) {
                    (Some(digests), _) => resolved.push(crate::action::ResolvedInput {
                        partition: dep.partition.clone(),
                        digest: digests[output],
                        path: context.data_path(&dep.partition),
                    }),
                    (None, Some(Verdict::Blocked { reason })) => {
                        verdict = Some(Verdict::Blocked {
                            reason: reason.clone(),
                        });
                        break;
                    }
                    (None, _) => {
                        verdict = Some(Verdict::Pending {
                            input: dep.partition.clone(),
                            reason: format!("input {} will be rebuilt", dep.partition),
                        });
                        break;
                    }
                },
            }
        }
        let verdict = match verdict {
            Some(verdict) => verdict,
            None => {
                let code = codes.get(&action.job).copied().flatten();
                let key = context.key(action, &resolved, code);
                match context
                    .decide(action, &key, &resolved, code, &mut scratch)
                    .map_err(ExecError::Code)?
                {
                    Decision::UpToDate { manifest } => {
                        outputs[index] = Some(manifest.outputs.iter().map(|o| o.digest).collect());
                        Verdict::UpToDate {
                            key,
                            built_by: manifest.build,
                        }
                    }
                    Decision::Restore { manifest, .. } => {
                        outputs[index] = Some(manifest.outputs.iter().map(|o| o.digest).collect());
                        Verdict::Restore { key }
                    }
                    Decision::Run { reason } => Verdict::Run { key, reason },
                }
            }
        };
        verdicts[index] = Some(verdict);
    }
    Ok(verdicts
        .into_iter()
        .map(|verdict| verdict.expect("every action is in the order"))
        .collect())
}
