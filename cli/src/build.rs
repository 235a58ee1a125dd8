//! `cairn build`: calls cairn_app::build and renders what it reports
//! (progress and JSON lines as actions finish, then the summary).

use std::io::Write;

use cairn_app::build::{BuildRequest, DryRun};
use cairn_app::dto::Refs;
use cairn_app::dto::build::{DryActionLine, DrySummary};
use cairn_engine::evaluate::Verdict;
use cairn_engine::plan::PlannedAction;
use cairn_engine::record::BuildCounts;
use rayon::prelude::*;

use crate::report::{BuildReporter, count, json_line, note};
use crate::{BuildArgs, Cli, Failure};

pub fn run(cli: &Cli, args: &BuildArgs) -> Result<u8, Failure> {
    let started = std::time::Instant::now();
    let mut workspace = crate::open_running_workspace(cli, args.executor)?;
    workspace.remote_cache = args.remote_cache.choice();
    if args.dry_run {
        let dry = cairn_app::build::dry_run(&workspace, &args.refs, args.jobs)?;
        dry_run(&dry, args.json);
        left_for_exit(dry);
        return Ok(0);
    }
    let request = BuildRequest {
        refs: args.refs.clone(),
        jobs: args.jobs,
        keep_going: args.keep_going,
        no_wait: args.no_wait,
        retries: args.retries,
        cancel: None,
        submission: None,
        reason: None,
        plan: None,
    };
    let reporter = BuildReporter::new(args.json);
    let mut built = cairn_app::build::build(&workspace, &request, &reporter)?;
    if args.json {
        json_line(&built.summary(started.elapsed()));
    }
    note(&crate::report::build_summary_text(
        &built,
        started.elapsed(),
    ));
    let code = built.exit_code();
    let plan = built.plan.take();
    let closing = std::time::Instant::now();
    drop(built);
    tracing::debug!("closed the store ({:.2?})", closing.elapsed());
    left_for_exit(plan);
    Ok(code)
}

/// Leaves `value`'s memory to the process's exit instead of freeing it:
/// `cairn build` returns to `main` and exits right after, and freeing a
/// million-action plan one allocation at a time took half a second. Only
/// for plain data (no files, locks or children to release).
fn left_for_exit<T>(value: T) {
    std::mem::forget(value);
}

/// Prints a dry run: one line per action (JSON, or for humans those that
/// would not be reused), then the summary.
fn dry_run(dry: &DryRun, json: bool) {
    match dry {
        DryRun::Current(snapshot) => {
            // Humans get the summary alone.
            if json {
                let mut out = listing();
                for action in &snapshot.actions {
                    let verdict = Verdict::UpToDate {
                        key: action.key,
                        built_by: action.built_by,
                    };
                    let job = &snapshot.jobs[action.job as usize];
                    let line = DryActionLine::new(job, Refs::from(&action.outputs[..]), &verdict);
                    if serde_json::to_writer(&mut out, &line).is_err() || writeln!(out).is_err() {
                        break;
                    }
                }
                let _ = out.flush();
            }
        }
        DryRun::Planned { plan, verdicts } => {
            let mut out = listing();
            // Lines are formatted in parallel, a batch at a time (a million
            // lines held at once would be a hundred megabytes), and written
            // in order.
            'listing: for batch in plan.order.chunks(LISTING_BATCH) {
                let parts: Vec<Vec<u8>> = batch
                    .par_chunks(LISTING_BATCH / 16)
                    .map(|indices| {
                        let mut part = Vec::with_capacity(indices.len() * 96);
                        for &index in indices {
                            dry_line(&mut part, &plan.actions[index], &verdicts[index], json);
                        }
                        part
                    })
                    .collect();
                for part in parts {
                    // A closed pipe (`| head`) ends the listing; the summary
                    // still goes to stderr.
                    if out.write_all(&part).is_err() {
                        break 'listing;
                    }
                }
            }
            let _ = out.flush();
        }
    }
    let (total, counts) = dry.counts();
    dry_summary(total, &counts, json);
}

/// Actions listed per parallel step of a dry run: a batch's lines (about
/// 100 bytes each) are held at once, beside the plan and its verdicts at
/// the very end of the dry run (131,072 of them were 12 to 25 MB there).
const LISTING_BATCH: usize = 16_384;

/// One action's line of a dry run into `out`. Humans are not told of
/// up-to-date actions: their reason (a million of them in a large no-op)
/// is not even made.
fn dry_line(out: &mut Vec<u8>, action: &PlannedAction, verdict: &Verdict, json: bool) {
    // Writing into a vector cannot fail.
    let _ = if json {
        let line = DryActionLine::new(&action.job, Refs::from(&action.config.outputs[..]), verdict);
        let _ = serde_json::to_writer(&mut *out, &line);
        writeln!(out)
    } else if matches!(verdict, Verdict::UpToDate { .. }) {
        Ok(())
    } else {
        let _ = write!(out, "{:>10} ", verdict.state());
        for (position, output) in action.config.outputs.iter().enumerate() {
            if position > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(output.as_str().as_bytes());
        }
        let reason = verdict.reason().to_string();
        writeln!(out, " ({}): {}", action.job, crate::escape::escape(&reason))
    };
}

/// One buffered writer for all of a dry run's lines, on stdout (the plan is
/// the command's data, as `backfill --dry-run` prints it; the summary note
/// goes to stderr): a million actions would otherwise be a million writes
/// through line-buffered stdout.
fn listing() -> impl Write {
    std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock())
}

/// A dry run's last line(s): the JSON summary with `--json`, and the note.
fn dry_summary(total: u64, counts: &BuildCounts, json: bool) {
    if json {
        json_line(&DrySummary::new(total, counts));
    }
    note(&format!(
        "dry run: {}: {} would run, {} up to date or restorable, {} blocked",
        count(total, "action"),
        counts.executed,
        counts.cached,
        counts.skipped
    ));
}
