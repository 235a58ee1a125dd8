//! `cairn plan`: the action graph that would build the requested
//! partitions, with each action's verdict. Rendering it as text or a shell
//! script is the front end's; the JSON is [`crate::dto::plan::PlanJson`],
//! and the Mermaid and DOT graphs ([`Planned::mermaid`], [`Planned::dot`])
//! are made here, for every front end (`cairn plan`, `cairn serve`).

use std::collections::HashMap;

use cairn_engine::evaluate::{Verdict, evaluate};
use cairn_engine::plan::{InputSource, Plan};

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
    /// What `cairn plan --format mermaid` prints (needs the verdicts).
    pub fn mermaid(&self) -> String {
        mermaid(&self.plan, &self.verdicts)
    }

    /// What `cairn plan --format dot` prints (needs the verdicts).
    pub fn dot(&self) -> String {
        dot(&self.plan, &self.verdicts)
    }

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

/// Every partition in the plan, numbered for graph output: sources, then
/// action outputs.
fn graph_nodes(plan: &Plan) -> Vec<(String, &'static str)> {
    let mut nodes: Vec<(String, &'static str)> = plan
        .sources
        .iter()
        .map(|s| (s.partition.to_string(), "source"))
        .collect();
    for action in &plan.actions {
        for output in &action.config.outputs {
            nodes.push((output.to_string(), "partition"));
        }
    }
    nodes
}

fn edges(plan: &Plan) -> Vec<(usize, usize, String)> {
    // Node ids: sources first, then outputs in action order.
    let mut first_output = Vec::with_capacity(plan.actions.len());
    let mut next = plan.sources.len();
    for action in &plan.actions {
        first_output.push(next);
        next += action.config.outputs.len();
    }
    let mut out = Vec::new();
    for (index, action) in plan.actions.iter().enumerate() {
        for input in &action.inputs {
            let from = match *input {
                InputSource::Source { source } => source,
                InputSource::Action { action, output } => first_output[action] + output,
            };
            for output in 0..action.config.outputs.len() {
                out.push((from, first_output[index] + output, action.job.to_string()));
            }
        }
    }
    out
}

fn mermaid(plan: &Plan, verdicts: &[Verdict]) -> String {
    let mut out = String::from("graph LR\n");
    let nodes = graph_nodes(plan);
    let state = node_states(plan, verdicts);
    for (id, (label, kind)) in nodes.iter().enumerate() {
        let label = label.replace('"', "'");
        if *kind == "source" {
            out.push_str(&format!("  n{id}[(\"{label}\")]\n"));
        } else {
            out.push_str(&format!(
                "  n{id}[\"{label}\"]:::{}\n",
                state.get(&id).copied().unwrap_or("run")
            ));
        }
    }
    for (from, to, job) in edges(plan) {
        out.push_str(&format!("  n{from} -->|{job}| n{to}\n"));
    }
    out.push_str("  classDef run fill:#fde2b5\n  classDef uptodate fill:#c8e6c9\n  classDef blocked fill:#f8bbd0\n");
    out
}

fn dot(plan: &Plan, verdicts: &[Verdict]) -> String {
    let mut out = String::from("digraph cairn {\n  rankdir=LR;\n  node [shape=box];\n");
    let state = node_states(plan, verdicts);
    for (id, (label, kind)) in graph_nodes(plan).iter().enumerate() {
        let label = label.replace('\\', "\\\\").replace('"', "\\\"");
        let style = match (*kind, state.get(&id).copied()) {
            ("source", _) => "shape=cylinder",
            (_, Some("uptodate")) => "style=filled, fillcolor=\"#c8e6c9\"",
            (_, Some("blocked")) => "style=filled, fillcolor=\"#f8bbd0\"",
            _ => "style=filled, fillcolor=\"#fde2b5\"",
        };
        out.push_str(&format!("  n{id} [label=\"{label}\", {style}];\n"));
    }
    for (from, to, job) in edges(plan) {
        out.push_str(&format!("  n{from} -> n{to} [label=\"{job}\"];\n"));
    }
    out.push_str("}\n");
    out
}

fn node_states(plan: &Plan, verdicts: &[Verdict]) -> HashMap<usize, &'static str> {
    let mut states = HashMap::new();
    let mut next = plan.sources.len();
    for (index, action) in plan.actions.iter().enumerate() {
        let state = match verdicts[index] {
            Verdict::UpToDate { .. } | Verdict::Restore { .. } => "uptodate",
            Verdict::Blocked { .. } => "blocked",
            _ => "run",
        };
        for _ in &action.config.outputs {
            states.insert(next, state);
            next += 1;
        }
    }
    states
}
