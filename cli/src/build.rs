//! `cairn build`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use cairn_engine::action::Context;
use cairn_engine::evaluate::{Verdict, evaluate};
use cairn_engine::exec::{BuildOptions, build};
use cairn_engine::runner::Children;
use serde_json::json;

use crate::project::Project;
use crate::report::{BuildReporter, json_line, note, outputs_text};
use crate::{BuildArgs, Cli, Failure};

pub fn run(cli: &Cli, args: &BuildArgs) -> Result<u8, Failure> {
    let project = Project::load(cli)?;
    let refs = project.requested(&args.refs)?;
    let plan = project.plan(&refs)?;
    if args.dry_run {
        return dry_run(&project, &plan, args.json);
    }
    let store = project.open_writer(!args.no_wait)?;
    let interrupt = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupt)).map_err(|error| {
            Failure::usage(format!("cannot install the signal handler: {error}"))
        })?;
    }
    let build_id = cairn_engine::ports::Catalog::next_build_id(store.catalog())?;
    let children = Children::default();
    let context = Context {
        graph: &project.graph,
        data_root: project.data_root.clone(),
        staging_root: project.data_root.join(".cairn-tmp"),
        catalog: store.catalog(),
        blobs: store.blobs(),
        environment: &project.environment,
        children: &children,
        build: build_id,
        retries: args.retries,
    };
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    let options = BuildOptions {
        jobs,
        keep_going: args.keep_going,
        interrupt: &interrupt,
        requested: args.refs.clone(),
        command: "build".into(),
        reason: None,
    };
    let reporter = BuildReporter::new(args.json);
    let report = build(&context, &plan, &options, &reporter)
        .map_err(|error| Failure::store(error.to_string()))?;
    reporter.finish();
    let counts = report.counts;
    if args.json {
        json_line(&json!({
            "type": "summary",
            "build": report.build,
            "total": plan.actions.len(),
            "executed": counts.executed,
            "cached": counts.cached,
            "failed": counts.failed,
            "skipped": counts.skipped,
            "interrupted": report.interrupted,
        }));
    }
    note(&format!(
        "build {}: {} actions: {} executed, {} cached, {} failed, {} skipped{}",
        report.build,
        plan.actions.len(),
        counts.executed,
        counts.cached,
        counts.failed,
        counts.skipped,
        if report.interrupted {
            " (interrupted)"
        } else {
            ""
        }
    ));
    if report.interrupted {
        return Ok(130);
    }
    Ok(if counts.failed > 0 { 1 } else { 0 })
}

fn dry_run(project: &Project, plan: &cairn_engine::plan::Plan, json: bool) -> Result<u8, Failure> {
    let verdicts = project.read_context(|context| {
        evaluate(context, plan).map_err(|error| Failure::store(error.to_string()))
    })?;
    for &index in &plan.order {
        let action = &plan.actions[index];
        let (state, reason) = verdicts[index].describe();
        if json {
            json_line(
                &json!({"type": "action", "job": action.job, "outputs": action.config.outputs, "verdict": state, "reason": reason}),
            );
        } else if state != "up-to-date" {
            note(&format!(
                "{state:>10} {} ({}): {reason}",
                outputs_text(action),
                action.job
            ));
        }
    }
    let counts = Verdict::count(&verdicts);
    if json {
        json_line(
            &json!({"type": "summary", "dry_run": true, "total": plan.actions.len(), "executed": counts.executed, "cached": counts.cached, "failed": 0, "skipped": counts.skipped}),
        );
    }
    note(&format!(
        "dry run: {} actions: {} would run, {} up to date or restorable, {} blocked",
        plan.actions.len(),
        counts.executed,
        counts.cached,
        counts.skipped
    ));
    Ok(0)
}
