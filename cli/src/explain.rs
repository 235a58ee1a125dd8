//! `cairn why`, `cairn invalidate` and `cairn prune`: rebuild decisions,
//! explained and forced (cairn_app::status and cairn_app::invalidate do
//! the work; this renders it).

use cairn_app::dto::status::WhyLine;
use cairn_engine::date::format_time_ms;

use crate::report::{count, json_line, note};
use crate::{Cli, Failure};

pub fn why(cli: &Cli, request: &str, json: bool) -> Result<u8, Failure> {
    let workspace = crate::open_workspace(cli)?;
    let explanation = cairn_app::status::why(&workspace, request)?;
    if json {
        json_line(&WhyLine::from(&explanation));
    } else {
        use std::io::Write;
        let text = crate::escape::escape(&explanation.text);
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }
    Ok(0)
}

/// Who records an invalidation or a prune: the user name from the
/// environment, if any.
fn user() -> Option<String> {
    std::env::var("USER")
        .ok()
        .or_else(|| std::env::var("LOGNAME").ok())
}

pub fn invalidate(
    cli: &Cli,
    requests: &[String],
    reason: &str,
    dry_run: bool,
    no_wait: bool,
) -> Result<u8, Failure> {
    let workspace = crate::open_workspace(cli)?;
    let user = user();
    let invalidated = cairn_app::invalidate::invalidate(
        &workspace,
        requests,
        reason,
        user.as_deref(),
        dry_run,
        !no_wait,
    )?;
    let partitions = invalidated.partitions.len();
    let Some(recorded) = invalidated.recorded else {
        for partition in &invalidated.partitions {
            println_stdout(partition.as_str());
        }
        note(&format!(
            "would invalidate {} (dry run: nothing recorded)",
            count(partitions as u64, "partition")
        ));
        return Ok(0);
    };
    note(&format!(
        "invalidated {} at {} (log up to seq {}); the next build rebuilds {}",
        count(partitions as u64, "partition"),
        format_time_ms(recorded.time_ms),
        recorded.seq,
        if partitions == 1 { "it" } else { "them" }
    ));
    Ok(0)
}

/// `cairn prune`: removes the data of every built partition the graph no
/// longer declares and records a `PartitionPruned` for each.
pub fn prune(cli: &Cli, reason: &str, dry_run: bool, no_wait: bool) -> Result<u8, Failure> {
    let workspace = crate::open_workspace(cli)?;
    let user = user();
    let pruned =
        cairn_app::invalidate::prune(&workspace, reason, user.as_deref(), dry_run, !no_wait)?;
    for (partition, _) in &pruned.partitions {
        println_stdout(partition.as_str());
    }
    let orphans = count(pruned.partitions.len(), "orphaned partition");
    match pruned.recorded {
        _ if dry_run => note(&format!(
            "would prune {orphans} (dry run: nothing removed or recorded)"
        )),
        None => note("no orphaned partitions: nothing to prune"),
        Some(recorded) => note(&format!(
            "pruned {orphans} at {} (log up to seq {})",
            format_time_ms(recorded.time_ms),
            recorded.seq
        )),
    }
    Ok(0)
}

fn println_stdout(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{}", crate::escape::escape(line));
}
