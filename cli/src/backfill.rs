//! `cairn backfill CONFIG.toml`: build every partition a checked-in config
//! names (design.md §8), through the same engine build as `cairn build`.
//!
//! The config is validated against the graph before anything runs (exit 2,
//! nothing recorded). The build records `command = "backfill"` and a reason
//! made of the config's reason, its path and its content digest, so `cairn
//! log --build ID` says why it ran. Running the same config again builds
//! only what has no recorded result: that is how an interrupted backfill
//! resumes.

use std::collections::HashMap;

use cairn_engine::backfill::Backfill;
use cairn_engine::evaluate::{Verdict, evaluate};
use cairn_engine::plan::{InputSource, Plan};
use cairn_engine::ports::Catalog;
use cairn_engine::refs::PartitionRef;
use serde_json::json;

use crate::build::{Execution, execute};
use crate::report::{count, json_line, note};
use crate::{BackfillArgs, Cli, Failure};
use cairn_app::Workspace;

pub fn run(cli: &Cli, args: &BackfillArgs) -> Result<u8, Failure> {
    let started = std::time::Instant::now();
    let project = crate::open_workspace(cli)?;
    let backfill = Backfill::load(&args.config, &project.graph)
        .map_err(|error| Failure::usage(error.to_string()))?;
    for entry in &backfill.entries {
        let sizes: Vec<String> = entry
            .dimensions
            .iter()
            .map(|(name, count)| format!("{count} {name}"))
            .collect();
        note(&format!(
            "backfill {}: {}: {}{}; reason: {}",
            backfill.file.display(),
            entry.target,
            count(entry.refs.len() as u64, "partition"),
            if sizes.is_empty() {
                String::new()
            } else {
                format!(" ({})", sizes.join(" x "))
            },
            crate::escape::escape(&entry.reason)
        ));
    }
    let mut refs = backfill.refs();
    if args.retry_failed {
        let all = project.plan(&refs)?;
        refs = failed_targets(&project, &all)?;
        if refs.is_empty() {
            note("nothing to retry: no partition of this backfill has a failed last attempt");
            if args.json {
                json_line(
                    &json!({"type": "summary", "total": 0, "executed": 0, "cached": 0, "failed": 0, "skipped": 0, "interrupted": false, "failed_partitions": []}),
                );
            }
            return Ok(0);
        }
        note(&format!(
            "retrying {} whose last attempt failed (or whose inputs' did)",
            count(refs.len() as u64, "partition")
        ));
    }
    let plan = project.plan(&refs)?;
    if args.dry_run {
        return dry_run(&project, &plan, args.json);
    }
    let executed = execute(
        &project,
        &plan,
        &Execution {
            jobs: args.jobs,
            keep_going: !args.fail_fast,
            json: args.json,
            no_wait: args.no_wait,
            retries: args.retries,
            requested: backfill.targets(),
            command: "backfill",
            reason: Some(backfill.reason()),
            snapshot: false,
        },
        None,
    )?;
    // The partitions whose attempt failed in this build.
    let build = executed.report.build;
    let mut failed: Vec<(PartitionRef, String)> = Vec::new();
    for action in &plan.actions {
        for output in &action.config.outputs {
            if let Some(state) = executed.store().catalog().partition(output)?
                && let Some((failed_build, error)) = state.failed
                && failed_build == build
            {
                failed.push((output.clone(), error));
            }
        }
    }
    failed.sort();
    if args.json {
        let mut summary = executed.summary_json(started.elapsed());
        summary["failed_partitions"] = json!(failed.iter().map(|(p, _)| p).collect::<Vec<_>>());
        json_line(&summary);
    }
    note(&format!(
        "backfill {}",
        executed.summary_text(started.elapsed())
    ));
    if !failed.is_empty() {
        note(&format!("failed partitions ({}):", failed.len()));
        for (partition, error) in &failed {
            note(&format!("  {partition}: {}", crate::escape::escape(error)));
        }
        note(&format!(
            "fix the cause, then `cairn backfill {} --retry-failed` reruns just those (and what depends on them)",
            args.config.display()
        ));
    } else if executed.report.interrupted {
        note(&format!(
            "run `cairn backfill {}` again to finish: it builds only what is missing",
            args.config.display()
        ));
    }
    Ok(executed.exit_code())
}

/// The requested refs of `plan` whose action, or an upstream action, has an
/// output whose last attempt failed.
fn failed_targets(project: &Workspace, plan: &Plan) -> Result<Vec<PartitionRef>, Failure> {
    project.read_context(|context| {
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
        let producer = producers(plan);
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

/// The action producing each output of `plan`.
fn producers(plan: &Plan) -> HashMap<&PartitionRef, usize> {
    let mut producer = HashMap::new();
    for (index, action) in plan.actions.iter().enumerate() {
        for output in &action.config.outputs {
            producer.insert(output, index);
        }
    }
    producer
}

/// Prints each requested partition with what a build would do for it, then
/// the counts; runs and records nothing.
fn dry_run(project: &Workspace, plan: &Plan, json: bool) -> Result<u8, Failure> {
    let verdicts =
        project.read_context(|context| evaluate(context, plan).map_err(Failure::from))?;
    let producer = producers(plan);
    let (mut built, mut to_build) = (0usize, 0usize);
    let mut out = String::new();
    for partition in &plan.requested {
        let Some(&index) = producer.get(partition) else {
            continue;
        };
        let (state, reason) = verdicts[index].describe();
        let word = match &verdicts[index] {
            Verdict::UpToDate { .. } => {
                built += 1;
                "built"
            }
            _ => {
                to_build += 1;
                state
            }
        };
        if json {
            json_line(
                &json!({"type": "partition", "ref": partition, "verdict": word, "reason": reason}),
            );
        } else {
            let reason = crate::escape::escape(&reason);
            out.push_str(&format!("{word:<10} {partition}  ({reason})\n"));
        }
    }
    if !json {
        use std::io::Write;
        let _ = std::io::stdout().lock().write_all(out.as_bytes());
    }
    let counts = Verdict::count(&verdicts);
    if json {
        json_line(&json!({
            "type": "summary",
            "dry_run": true,
            "partitions": plan.requested.len(),
            "built": built,
            "to_build": to_build,
            "total": plan.actions.len(),
            "executed": counts.executed,
            "cached": counts.cached,
            "failed": 0,
            "skipped": counts.skipped,
        }));
    }
    note(&format!(
        "dry run: {}: {built} built, {to_build} to build; {}: {} would run, {} up to date or restorable, {} blocked",
        count(plan.requested.len() as u64, "partition"),
        count(plan.actions.len() as u64, "action"),
        counts.executed,
        counts.cached,
        counts.skipped
    ));
    Ok(0)
}
