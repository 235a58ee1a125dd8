//! `cairn plan`: the action graph that would build the requested
//! partitions, with each action's verdict. Rendering it (text, JSON,
//! Mermaid, DOT, a shell script) is the front end's; the JSON is
//! [`crate::dto::plan::PlanJson`].

use cairn_engine::evaluate::{Verdict, evaluate};
use cairn_engine::plan::Plan;

use crate::dto::plan::{PlanAction, PlanInput, PlanJson};
use crate::error::AppError;
use crate::workspace::Workspace;

/// A plan and the verdict of each of its actions, by plan index.
pub struct Planned {
    pub plan: Plan,
    /// Empty when not asked for (a shell script runs every action).
    pub verdicts: Vec<Verdict>,
}

/// Plans `requests` (refs or patterns), reusing cached configure answers
/// and writing none; with `verdicts`, evaluates each action against the
/// store (read only).
pub fn plan(
    workspace: &Workspace,
    requests: &[String],
    verdicts: bool,
) -> Result<Planned, AppError> {
    let refs = workspace.requested(requests)?;
    let plan = workspace.plan(&refs)?;
    let verdicts = if verdicts {
        workspace.read_context(|context| evaluate(context, &plan).map_err(AppError::from))?
    } else {
        Vec::new()
    };
    Ok(Planned { plan, verdicts })
}

impl Planned {
    /// What `cairn plan --format json` prints (needs the verdicts).
    pub fn json(&self) -> PlanJson<'_> {
        let plan = &self.plan;
        let actions = plan
            .order
            .iter()
            .map(|&index| {
                let action = &plan.actions[index];
                let (state, reason) = self.verdicts[index].describe();
                PlanAction {
                    args: &action.config.args,
                    id: index as u64,
                    inputs: action
                        .config
                        .inputs
                        .iter()
                        .map(|input| PlanInput {
                            dep: input.dep,
                            partition: &input.partition,
                        })
                        .collect(),
                    job: &action.job,
                    outputs: &action.config.outputs,
                    reason,
                    verdict: state,
                }
            })
            .collect();
        PlanJson {
            actions,
            configure_calls: plan.configure_calls as u64,
            requested: &plan.requested,
            schema: crate::dto::SCHEMA,
        }
    }
}
