//! `cairn defs refresh|show|diff`: renders what cairn_app::defs finds
//! (docs/defs.md).

use cairn_app::defs::{Diff, Previous, SourceRefresh};
use cairn_engine::date::format_time_ms;
use cairn_engine::record::DefsRecord;

use crate::report::{error_line, json_line, note};
use crate::{Cli, Failure};

/// `seq 12, 3 values, refreshed 2024-01-31 12:00:00 UTC`.
fn describe(record: &DefsRecord) -> String {
    format!(
        "seq {}, {}, refreshed {}",
        record.seq,
        crate::report::count(record.values, "value"),
        format_time_ms(record.time_ms)
    )
}

pub fn refresh(cli: &Cli, name: Option<&str>, no_wait: bool, json: bool) -> Result<u8, Failure> {
    let workspace = crate::open_workspace(cli)?;
    let failed = cairn_app::defs::refresh(&workspace, name, no_wait, &mut |refreshed| {
        render_refresh(refreshed);
        if json {
            json_line(&refreshed.json());
        }
    })?;
    Ok(if failed > 0 { 1 } else { 0 })
}

/// The stderr line of one refreshed source.
fn render_refresh(refreshed: &SourceRefresh) {
    match refreshed {
        SourceRefresh::Failed {
            source,
            error,
            previous,
        } => {
            let in_force = match previous {
                Previous::Record(record) => {
                    format!("the previous record stays in force ({})", describe(record))
                }
                Previous::None => format!(
                    "there is still no record of {source}: builds that need it fail until a refresh succeeds"
                ),
                Previous::Unreadable(problem) => {
                    format!("the previous record cannot be read either ({problem})")
                }
            };
            error_line(&format!(
                "defs refresh {source}: {error}; nothing was recorded and {in_force}"
            ));
        }
        SourceRefresh::Recorded {
            source,
            seq,
            digest,
            values,
            added,
            removed,
            previous,
            ..
        } => {
            let change = match previous {
                Previous::Record(record) if added.is_empty() && removed.is_empty() => {
                    format!("unchanged since seq {}", record.seq)
                }
                Previous::Record(record) => format!(
                    "since seq {}: {} added{}, {} removed{}",
                    record.seq,
                    added.len(),
                    list(added),
                    removed.len(),
                    list(removed)
                ),
                Previous::None => "the first record".to_owned(),
                Previous::Unreadable(_) => "the previous record could not be read".to_owned(),
            };
            note(&format!(
                "{source}: recorded {} (seq {seq}, blob {}); {change}",
                crate::report::count(*values, "value"),
                digest.short()
            ));
        }
    }
}

/// ` (a, b)` or ` (a, b, c and 4 more)`; empty for no values.
fn list(values: &[String]) -> String {
    const SHOWN: usize = 5;
    if values.is_empty() {
        return String::new();
    }
    let mut text = values
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if values.len() > SHOWN {
        text.push_str(&format!(" and {} more", values.len() - SHOWN));
    }
    format!(" ({text})")
}

/// The note when nothing was recorded here yet.
fn nothing_recorded() {
    note("nothing was recorded here yet: run `cairn defs refresh`");
}

pub fn show(cli: &Cli, name: Option<&str>, json: bool) -> Result<u8, Failure> {
    let workspace = crate::open_workspace(cli)?;
    let Some(sources) = cairn_app::defs::show(&workspace, name)? else {
        nothing_recorded();
        return Ok(0);
    };
    for source in sources {
        let Some(record) = source.record? else {
            if json {
                json_line(&cairn_app::dto::defs::NoRecord::new(&source.source));
            } else {
                note(&format!(
                    "source {:?} has no record yet: run `cairn defs refresh {}`",
                    source.source, source.source
                ));
            }
            continue;
        };
        if json {
            json_line(&record.json(&source.source));
        } else if name.is_some() {
            note(&format!(
                "{}: {}, blob {}{}",
                source.source,
                describe(&record.record),
                record.record.digest,
                record
                    .record
                    .previous
                    .map(|seq| format!("; previous record seq {seq}"))
                    .unwrap_or_default()
            ));
            print_stdout(
                &record
                    .values
                    .iter()
                    .map(|v| format!("{v}\n"))
                    .collect::<String>(),
            );
        } else {
            print_stdout(&format!(
                "{}  {}  ({})\n",
                source.source,
                describe(&record.record),
                record.values.join(", ")
            ));
        }
    }
    Ok(0)
}

pub fn diff_command(cli: &Cli, name: &str, from: Option<u64>, json: bool) -> Result<u8, Failure> {
    let workspace = crate::open_workspace(cli)?;
    let diff = match cairn_app::defs::diff(&workspace, name, from)? {
        Diff::NoStore => {
            nothing_recorded();
            return Ok(0);
        }
        Diff::NoRecord => {
            note(&format!(
                "source {name:?} has no record yet: run `cairn defs refresh {name}`"
            ));
            return Ok(0);
        }
        Diff::Values(diff) => diff,
    };
    if json {
        json_line(&diff.json());
    } else {
        let mut out = String::new();
        for value in &diff.added {
            out.push_str(&format!("+{value}\n"));
        }
        for value in &diff.removed {
            out.push_str(&format!("-{value}\n"));
        }
        print_stdout(&out);
        note(&format!(
            "{name}: {} -> seq {}: {} added, {} removed",
            diff.from
                .map_or_else(|| "no record".to_owned(), |seq| format!("seq {seq}")),
            diff.to,
            diff.added.len(),
            diff.removed.len()
        ));
    }
    Ok(0)
}

fn print_stdout(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(crate::escape::escape_lines(text).as_bytes());
}
