//! `cairn plan`: renders the plan cairn_app::plan makes as text, JSON,
//! Mermaid, DOT or a shell script.

use std::collections::HashMap;

use cairn_engine::evaluate::Verdict;
use cairn_engine::plan::{InputSource, Plan};
use cairn_engine::refs::PartitionRef;

use crate::report::count;
use crate::{Cli, Failure, PlanFormat};

pub fn plan(cli: &Cli, requests: &[String], format: PlanFormat) -> Result<u8, Failure> {
    let workspace = crate::open_workspace(cli)?;
    // A script runs every action: it needs no verdicts (no store read).
    let planned = cairn_app::plan::plan(&workspace, requests, format != PlanFormat::Sh)?;
    let (plan, verdicts) = (&planned.plan, &planned.verdicts);
    let mut out = String::new();
    match format {
        PlanFormat::Text => {
            for &index in &plan.order {
                let action = &plan.actions[index];
                let (state, reason) = verdicts[index].describe();
                let reason = crate::escape::escape(&reason);
                out.push_str(&format!(
                    "{state:>10}  {:<10} {}  ({reason})\n",
                    action.job,
                    outputs(plan, index)
                ));
            }
            let counts = Verdict::count(verdicts);
            out.push_str(&format!(
                "{}: {} would run, {} up to date or restorable\n",
                count(plan.actions.len() as u64, "action"),
                counts.executed,
                counts.cached
            ));
        }
        PlanFormat::Json => {
            out = serde_json::to_string(&planned.json())
                .map_err(|error| Failure::usage(format!("cannot write the plan: {error}")))?;
            out.push('\n');
        }
        PlanFormat::Mermaid => out = mermaid(plan, verdicts),
        PlanFormat::Dot => out = dot(plan, verdicts),
        PlanFormat::Sh => {
            out = cairn_engine::script::shell_script(&workspace.graph, plan)
                .map_err(|error| Failure::usage(error.to_string()))?;
        }
    }
    print_stdout(&out);
    Ok(0)
}

fn print_stdout(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
}

fn outputs(plan: &Plan, index: usize) -> String {
    plan.actions[index]
        .config
        .outputs
        .iter()
        .map(PartitionRef::as_str)
        .collect::<Vec<_>>()
        .join(", ")
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
