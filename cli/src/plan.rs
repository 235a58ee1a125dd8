//! `cairn plan`: renders the plan cairn_app::plan makes as text, JSON,
//! Mermaid, DOT or a shell script.

use cairn_engine::evaluate::Verdict;
use cairn_engine::plan::Plan;
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
        PlanFormat::Mermaid => out = planned.mermaid(),
        PlanFormat::Dot => out = planned.dot(),
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
