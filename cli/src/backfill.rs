//! `cairn backfill CONFIG.toml`: calls cairn_app::backfill and renders what
//! it reports (docs/backfill.md).

use cairn_app::backfill::{BackfillRequest, Targets};
use cairn_app::dto::backfill::BackfillSummary;
use cairn_engine::record::BuildCounts;

use crate::report::{BuildReporter, count, json_line, note};
use crate::{BackfillArgs, Cli, Failure};

pub fn run(cli: &Cli, args: &BackfillArgs) -> Result<u8, Failure> {
    let started = std::time::Instant::now();
    let mut workspace = crate::open_running_workspace(cli, args.executor)?;
    workspace.remote_cache = args.remote_cache.choice();
    let backfill = cairn_app::backfill::load(&workspace, &args.config)?;
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
    let targets = cairn_app::backfill::targets(&workspace, &backfill, args.retry_failed)?;
    if let Targets::Retry(refs) = &targets {
        if refs.is_empty() {
            return Ok(nothing_to_retry(args.json));
        }
        note(&format!(
            "retrying {} whose last attempt failed (or whose inputs' did)",
            count(refs.len() as u64, "partition")
        ));
    }
    let plan = workspace.plan(targets.refs())?;
    if args.dry_run {
        return dry_run(&workspace, &plan, args.json);
    }
    let reporter = BuildReporter::new(args.json);
    let backfilled = cairn_app::backfill::run(
        &workspace,
        &backfill,
        &plan,
        &BackfillRequest {
            jobs: args.jobs,
            fail_fast: args.fail_fast,
            no_wait: args.no_wait,
            retries: args.retries,
            cancel: None,
            submission: None,
        },
        &reporter,
    )?;
    if args.json {
        json_line(&backfilled.summary(started.elapsed()));
    }
    note(&format!(
        "backfill {}",
        crate::report::build_summary_text(&backfilled.built, started.elapsed())
    ));
    let failed = &backfilled.failed;
    if !failed.is_empty() {
        note(&format!("failed partitions ({}):", failed.len()));
        for (partition, error) in failed {
            note(&format!("  {partition}: {}", crate::escape::escape(error)));
        }
        note(&format!(
            "fix the cause, then `cairn backfill {} --retry-failed` reruns just those (and what depends on them)",
            args.config.display()
        ));
    } else if backfilled.built.interrupted() {
        note(&format!(
            "run `cairn backfill {}` again to finish: it builds only what is missing",
            args.config.display()
        ));
    }
    Ok(backfilled.built.exit_code())
}

/// Prints each requested partition with what a build would do for it, then
/// the counts; runs and records nothing.
fn dry_run(
    workspace: &cairn_app::Workspace,
    plan: &cairn_engine::plan::Plan,
    json: bool,
) -> Result<u8, Failure> {
    let dry = cairn_app::backfill::dry_run(workspace, plan)?;
    let mut out = String::new();
    for partition in &dry.partitions {
        if json {
            json_line(&partition.json());
        } else {
            let reason = crate::escape::escape(&partition.reason);
            out.push_str(&format!(
                "{:<10} {}  ({reason})\n",
                partition.verdict, partition.partition
            ));
        }
    }
    if !json {
        use std::io::Write;
        let _ = std::io::stdout().lock().write_all(out.as_bytes());
    }
    if json {
        json_line(&dry.summary());
    }
    note(&format!(
        "dry run: {}: {} built, {} to build; {}: {} would run, {} up to date or restorable, {} blocked",
        count(dry.partitions.len() as u64, "partition"),
        dry.built,
        dry.to_build,
        count(dry.total, "action"),
        dry.counts.executed,
        dry.counts.cached,
        dry.counts.skipped
    ));
    Ok(0)
}

/// `backfill --retry-failed` found no partition to retry: says so (and,
/// with `--json`, prints an empty summary) and returns the exit code, 0.
/// The same for a local and a `--remote` backfill.
pub(crate) fn nothing_to_retry(json: bool) -> u8 {
    note("nothing to retry: no partition of this backfill has a failed last attempt");
    if json {
        json_line(&BackfillSummary::new(
            None,
            0,
            BuildCounts::default(),
            false,
            None,
            Vec::new(),
        ));
    }
    0
}
