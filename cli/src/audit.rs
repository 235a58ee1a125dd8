//! The audit trail: `cairn history`, `cairn logs`, `cairn replay` and
//! `cairn store verify|gc|stats`, rendered (the use cases are
//! cairn_app::history, cairn_app::logs and cairn_app::maintenance).

use std::io::{Read, Write};

use cairn_app::dto::history::{DispatchLine, HistoryLine};
use cairn_app::dto::store::{StatsLine, VerifyLine};
use cairn_app::history::{Dispatch, History, HistoryEntry};
use cairn_app::logs::{Logs, Stream};
use cairn_app::maintenance::{Keep, ReplayCheck, Replayed, Verification};
use cairn_engine::date::format_time_ms;
use cairn_engine::refs::PartitionRef;
use cairn_store::{BlobProblem, Damage, RepairReport};

use crate::escape::escape;
use crate::report::{count, count_as, json_line, note};
use crate::{Cli, Failure};

pub fn stdout_text(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// The note for a source partition: cairn never runs a job for it, so it
/// has no history and no logs.
pub fn source_note(partition: &str, path: &std::path::Path) {
    note(&format!(
        "{partition} is a source partition: cairn observes {} by content and never runs a job for it",
        path.display()
    ));
}

// ---------------------------------------------------------------- history

pub fn history(cli: &Cli, request: &str, json: bool) -> Result<u8, Failure> {
    let workspace = crate::open_workspace(cli)?;
    let entries = match cairn_app::history::history(&workspace, request)? {
        History::Source { path } => {
            source_note(request, &path);
            return Ok(0);
        }
        History::NothingBuilt => {
            note("nothing was built here yet: there is no history");
            return Ok(0);
        }
        History::Entries(entries) => entries,
    };
    let partition = request;
    if entries.is_empty() {
        note(&format!(
            "{partition} has no history here: it was never built, failed or invalidated"
        ));
        return Ok(0);
    }
    if json {
        for entry in &entries {
            json_line(&HistoryLine::new(partition, entry));
        }
        return Ok(0);
    }
    let mut out = history_heading(partition, |kind| {
        entries
            .iter()
            .filter(|entry| match entry {
                HistoryEntry::Materialization(_) => kind == "materialization",
                HistoryEntry::Failure(_) => kind == "failure",
                HistoryEntry::Invalidation(_) => kind == "invalidation",
                HistoryEntry::Joined(_) => kind == "joined",
            })
            .count()
    });
    for entry in &entries {
        out.push('\n');
        out.push_str(&entry_text(entry));
    }
    stdout_text(&out);
    Ok(0)
}

/// `  because  REASON`: the reason the build was asked for (a backfill's,
/// `cairn build` has none), under the entry's first line.
fn because(out: &mut String, build_reason: Option<&String>) {
    if let Some(reason) = build_reason {
        out.push_str(&format!("  because  {}\n", escape(reason)));
    }
}

/// The lines under a failed run in `history`, the same for a local entry
/// and for the server's JSON line (`--remote`): its key (or that it never
/// had one), job, reason, exit status and where its logs are.
#[expect(
    clippy::too_many_arguments,
    reason = "the fields of one failed run, as both forms hold them"
)]
fn failure_details(
    out: &mut String,
    key: Option<&str>,
    job: &str,
    reason: Option<&str>,
    exit_code: Option<i32>,
    has_logs: bool,
    build: u64,
    ran_in: Option<String>,
) {
    let key = key.unwrap_or("none (it never ran)");
    out.push_str(&format!("  key      {key}  job {job}\n"));
    if let Some(reason) = reason {
        out.push_str(&format!("  reason   {}\n", escape(reason)));
    }
    ran_in_line(out, ran_in);
    if let Some(code) = exit_code {
        out.push_str(&format!("  exit     {code}\n"));
    }
    if has_logs {
        out.push_str(&format!("  logs     cairn logs <ref> --build {build}\n"));
    }
}

/// `  ran in   Slurm job 42`: the job of another system a run was in.
fn ran_in_line(out: &mut String, ran_in: Option<String>) {
    if let Some(title) = ran_in {
        out.push_str(&format!("  ran in   {}\n", escape(&title)));
    }
}

fn entry_text(entry: &HistoryEntry) -> String {
    match entry {
        HistoryEntry::Materialization(m) => {
            let mut out = format!("build {}  {}  ", m.build, format_time_ms(m.time_ms));
            match (&m.manifest, m.executed) {
                (Some(manifest), true) => {
                    out.push_str(&format!(
                        "executed in {} ms",
                        cairn_app::history::duration_ms(manifest)
                    ));
                }
                (Some(_), false) if m.remote.is_some() => out.push_str(&format!(
                    "restored from the remote cache ({})",
                    m.remote.as_deref().unwrap_or_default()
                )),
                (Some(manifest), false) => out.push_str(&format!(
                    "reused the run of build {}{}",
                    manifest.build,
                    if m.restored {
                        ", restored from the store"
                    } else {
                        ""
                    }
                )),
                (None, _) => out.push_str("materialized (its manifest is no longer recorded)"),
            }
            if let Some(url) = &m.uploaded {
                out.push_str(&format!(", uploaded to the remote cache ({url})"));
            }
            if m.current {
                out.push_str("  [current]");
            }
            out.push('\n');
            because(&mut out, m.build_reason.as_ref());
            let job = m.manifest.as_ref().map_or("?", |manifest| &manifest.job);
            out.push_str(&format!("  key      {}  job {job}\n", m.key));
            if let Some(reason) = &m.reason {
                out.push_str(&format!("  reason   {}\n", escape(reason)));
            }
            ran_in_line(&mut out, m.dispatched.as_ref().map(Dispatch::title));
            if let Some(manifest) = &m.manifest {
                let code = manifest
                    .code_digest
                    .map_or_else(|| "none".to_owned(), |code| code.to_hex());
                out.push_str(&format!("  code     {code}\n"));
                let versions: Vec<String> = manifest
                    .versions
                    .iter()
                    .map(|(dataset, version)| format!("{dataset} {version}"))
                    .collect();
                if !versions.is_empty() {
                    out.push_str(&format!("  version  {}\n", versions.join(", ")));
                }
                if !m.executed {
                    out.push_str(&format!(
                        "  manifest build {}, ran {} ms\n",
                        manifest.build,
                        cairn_app::history::duration_ms(manifest)
                    ));
                }
                for input in &manifest.inputs {
                    let changed = if m.changed.contains(&input.partition) {
                        "  (changed)"
                    } else {
                        ""
                    };
                    out.push_str(&format!(
                        "  input    {}  {}{changed}\n",
                        input.partition, input.digest
                    ));
                }
            }
            let files = m
                .manifest
                .as_ref()
                .and_then(|manifest| manifest.outputs.iter().find(|o| o.digest == m.digest))
                .map(|output| format!("  ({})", count(output.files.len(), "file")))
                .unwrap_or_default();
            out.push_str(&format!("  output   {}{files}\n", m.digest));
            out
        }
        HistoryEntry::Failure(f) => {
            let mut out = format!(
                "build {}  {}  FAILED: {}\n",
                f.build,
                format_time_ms(f.time_ms),
                escape(&f.error)
            );
            because(&mut out, f.build_reason.as_ref());
            let key = f.key.map(|key| key.to_string());
            failure_details(
                &mut out,
                key.as_deref(),
                &f.job,
                f.reason.as_deref(),
                f.exit_code,
                f.stdout.is_some() || f.stderr.is_some(),
                f.build,
                f.dispatched.as_ref().map(Dispatch::title),
            );
            out
        }
        HistoryEntry::Joined(j) => format!(
            "build {}  {}  joined the run of build {} (job {}, not built twice)\n",
            j.build,
            format_time_ms(j.time_ms),
            j.joined_build,
            escape(&j.job)
        ),
        HistoryEntry::Invalidation(i) => {
            let by =
                i.by.as_deref()
                    .map(|by| format!(" by {}", escape(by)))
                    .unwrap_or_default();
            format!(
                "build {}  {}  invalidated{by}: {}\n",
                i.build,
                format_time_ms(i.time_ms),
                escape(&i.reason)
            )
        }
    }
}

/// The human text of `cairn --remote URL history`: the text of
/// [`entry_text`] made from an entry's JSON line. The JSON does not carry
/// the output's file count, so the `output` line goes without it (and a
/// dataset's version is listed once).
pub fn line_text(line: &HistoryLine) -> String {
    match line {
        HistoryLine::Joined(j) => format!(
            "build {}  {}  joined the run of build {} (job {}, not built twice)\n",
            j.build,
            format_time_ms(j.time_ms),
            j.joined_build,
            escape(&j.job)
        ),
        HistoryLine::Materialization(m) => {
            let mut out = format!("build {}  {}  ", m.build, format_time_ms(m.time_ms));
            let has_manifest = m.job.is_some();
            let executed = m.outcome == "executed";
            let duration = m.duration_ms.unwrap_or(0);
            match (has_manifest, executed) {
                (true, true) => out.push_str(&format!("executed in {duration} ms")),
                (true, false) if m.remote.is_some() => out.push_str(&format!(
                    "restored from the remote cache ({})",
                    m.remote.as_deref().unwrap_or_default()
                )),
                (true, false) => out.push_str(&format!(
                    "reused the run of build {}{}",
                    m.manifest_build.unwrap_or(0),
                    if m.restored {
                        ", restored from the store"
                    } else {
                        ""
                    }
                )),
                (false, _) => out.push_str("materialized (its manifest is no longer recorded)"),
            }
            if let Some(url) = &m.uploaded {
                out.push_str(&format!(", uploaded to the remote cache ({url})"));
            }
            if m.current {
                out.push_str("  [current]");
            }
            out.push('\n');
            because(&mut out, m.build_reason.as_ref());
            let job = m.job.as_deref().unwrap_or("?");
            out.push_str(&format!("  key      {}  job {job}\n", m.key));
            if let Some(reason) = &m.reason {
                out.push_str(&format!("  reason   {}\n", escape(reason)));
            }
            ran_in_line(&mut out, m.dispatched.as_ref().map(DispatchLine::title));
            if has_manifest {
                let code = m.code_digest.as_deref().unwrap_or("none");
                out.push_str(&format!("  code     {code}\n"));
                let versions: Vec<String> = m
                    .versions
                    .iter()
                    .flatten()
                    .map(|(dataset, version)| format!("{dataset} {version}"))
                    .collect();
                if !versions.is_empty() {
                    out.push_str(&format!("  version  {}\n", versions.join(", ")));
                }
                if !executed {
                    out.push_str(&format!(
                        "  manifest build {}, ran {duration} ms\n",
                        m.manifest_build.unwrap_or(0)
                    ));
                }
                for input in m.inputs.iter().flatten() {
                    let changed = if input.changed { "  (changed)" } else { "" };
                    out.push_str(&format!(
                        "  input    {}  {}{changed}\n",
                        input.partition, input.digest
                    ));
                }
            }
            out.push_str(&format!("  output   {}\n", m.digest));
            out
        }
        HistoryLine::Failure(f) => {
            let mut out = format!(
                "build {}  {}  FAILED: {}\n",
                f.build,
                format_time_ms(f.time_ms),
                escape(&f.error)
            );
            because(&mut out, f.build_reason.as_ref());
            failure_details(
                &mut out,
                f.key.as_deref(),
                &f.job,
                f.reason.as_deref(),
                f.exit_code,
                f.stdout.is_some() || f.stderr.is_some(),
                f.build,
                f.dispatched.as_ref().map(DispatchLine::title),
            );
            out
        }
        HistoryLine::Invalidation(i) => {
            let by =
                i.by.as_deref()
                    .map(|by| format!(" by {}", escape(by)))
                    .unwrap_or_default();
            format!(
                "build {}  {}  invalidated{by}: {}\n",
                i.build,
                format_time_ms(i.time_ms),
                escape(&i.reason)
            )
        }
    }
}

/// The first line of `cairn history`'s text: the counts of each kind of
/// entry (`materialization`, `failure`, `invalidation`).
pub fn history_heading(partition: &str, number: impl Fn(&str) -> usize) -> String {
    format!(
        "{partition}: {}, {}, {} (newest first)\n",
        count(number("materialization"), "materialization"),
        count(number("failure"), "failed run"),
        count(number("invalidation"), "invalidation"),
    )
}

// ------------------------------------------------------------------- logs

/// Which captured streams `cairn logs` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streams {
    /// Both, each after a label line on stdout, so that a pipe keeps them
    /// apart.
    Both,
    /// One, as captured; its label goes to stderr.
    Stdout,
    Stderr,
}

pub fn logs(cli: &Cli, request: &str, build: Option<u64>, streams: Streams) -> Result<u8, Failure> {
    let workspace = crate::open_workspace(cli)?;
    let logs = match cairn_app::logs::logs(&workspace, request, build)? {
        Logs::Source { path } => {
            source_note(request, &path);
            return Ok(0);
        }
        Logs::NothingBuilt => {
            note(&format!(
                "{request} was never run: nothing was built here yet"
            ));
            return Ok(0);
        }
        Logs::NeverRun => {
            note(&format!(
                "{request} was never run here: no job run is recorded for it"
            ));
            return Ok(0);
        }
        Logs::Run(logs) => logs,
    };
    let run = &logs.run;
    let outcome = match &run.error {
        None => "succeeded".to_owned(),
        Some(error) => format!("failed: {error}"),
    };
    let ran_in = run
        .dispatched
        .as_ref()
        .map(|dispatch| format!(" in {}", dispatch.title()))
        .unwrap_or_default();
    note(&format!(
        "{request}: job {} in build {} ({}){ran_in}, key {}, {outcome}",
        run.job,
        run.build,
        format_time_ms(run.time_ms),
        run.key.short()
    ));
    if run.stdout.is_none() && run.stderr.is_none() {
        note("the run produced no output (stdout and stderr were empty)");
        return Ok(0);
    }
    let selected: &[Stream] = match streams {
        Streams::Both => &[Stream::Stdout, Stream::Stderr],
        Streams::Stdout => &[Stream::Stdout],
        Streams::Stderr => &[Stream::Stderr],
    };
    // With both streams the labels are part of the output (stdout), and a
    // stream that does not end its last line gets a line break before the
    // next label; one stream alone is printed byte for byte.
    let labelled = streams == Streams::Both;
    let label = |text: &str| {
        if labelled {
            stdout_text(&format!("{text}\n"));
        } else {
            note(text);
        }
    };
    for &stream in selected {
        let name = stream.name();
        let Some(mut captured) = logs.open(stream)? else {
            label(&format!("--- {name}: empty ---"));
            continue;
        };
        label(&format!(
            "--- {name} ({}) ---",
            count(captured.length, "byte")
        ));
        let mut stdout = std::io::stdout().lock();
        // The blob was verified when opened; a read error now means it
        // changed since (the verifying reader fails the last read).
        let last = copy_remembering_last(&mut captured, &mut stdout)
            .map_err(|error| cairn_app::logs::unreadable(stream, &error))?;
        if labelled && captured.length > 0 && last != Some(b'\n') {
            let _ = stdout.write_all(b"\n");
        }
        let _ = stdout.flush();
    }
    Ok(0)
}

/// Copies `from` to `to` through a small buffer (memory stays small
/// whatever the size), and returns the last byte copied. A closed pipe
/// ends the copy quietly; a read error is returned.
fn copy_remembering_last(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<Option<u8>> {
    let mut buffer = [0u8; 64 * 1024];
    let mut last = None;
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) => return Ok(last),
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        last = Some(buffer[read - 1]);
        if to.write_all(&buffer[..read]).is_err() {
            return Ok(last);
        }
    }
}

// ----------------------------------------------------------------- replay

pub fn replay(cli: &Cli, check: bool, no_wait: bool) -> Result<u8, Failure> {
    let workspace = crate::open_workspace(cli)?;
    if check {
        let (events, differences) = match cairn_app::maintenance::replay_check(&workspace)? {
            ReplayCheck::NothingBuilt => {
                note("nothing was built here yet: the log is empty");
                return Ok(0);
            }
            ReplayCheck::Checked {
                events,
                differences,
            } => (events, differences),
        };
        if differences.is_empty() {
            stdout_text(&format!(
                "projections equal the log ({})\n",
                count(events, "event")
            ));
            return Ok(0);
        }
        stdout_text(&lines(&differences));
        return Err(Failure::store(format!(
            "the projections differ from the log ({}) in {}; \
             `cairn replay` rebuilds them from the log",
            count(events, "event"),
            count(differences.len(), "place")
        )));
    }
    let (differences, report) = match cairn_app::maintenance::replay(&workspace, !no_wait)? {
        Replayed::NothingBuilt => {
            note("nothing was built here yet: the log is empty");
            return Ok(0);
        }
        Replayed::Rebuilt {
            differences,
            report,
        } => (differences, report),
    };
    if !differences.is_empty() {
        stdout_text(&lines(&differences));
    }
    stdout_text(&format!(
        "rebuilt the projections from {}: {}, {}, {}, {}; {} fixed\n",
        count(report.events, "event"),
        count(report.actions, "action"),
        count(report.partitions, "partition"),
        count(report.datasets, "dataset"),
        count_as(report.indexed, "index entry", "index entries"),
        count(differences.len(), "difference")
    ));
    Ok(0)
}

fn lines(items: &[String]) -> String {
    let mut out = items.join("\n");
    out.push('\n');
    out
}

// ----------------------------------------------------------------- verify

pub fn verify(cli: &Cli, repair: bool, json: bool, no_wait: bool) -> Result<u8, Failure> {
    let workspace = crate::open_workspace(cli)?;
    let Some(verification) = cairn_app::maintenance::verify(&workspace, repair, !no_wait)? else {
        note("nothing was built here yet: there is no store to verify");
        return Ok(0);
    };
    let report = &verification.report;
    if json {
        for line in VerifyLine::all(&verification) {
            json_line(&line);
        }
    } else {
        stdout_text(&verify_text(&verification, repair));
    }
    let problems = verification.problems();
    let collected = if report.superseded_missing > 0 {
        format!(
            "; {} of superseded manifests {} collected (not needed)",
            count(report.superseded_missing, "blob"),
            if report.superseded_missing == 1 {
                "was"
            } else {
                "were"
            }
        )
    } else {
        String::new()
    };
    if problems == 0 {
        note(&format!(
            "store verified: {} ({}) intact, every current partition's blobs present, caches intact, catalog sound{collected}",
            count(report.blobs, "blob"),
            size(report.bytes)
        ));
        return Ok(0);
    }
    let caches = |repaired: &RepairReport| match repaired.removed_caches.len() {
        0 => String::new(),
        n => format!(
            " and {} (builds recompute them)",
            count_as(n, "damaged cache file", "damaged cache files")
        ),
    };
    match &verification.repaired {
        Some(repaired) if repaired.invalidated.is_empty() && repaired.removed.is_empty() => {
            Err(Failure::store(format!(
                "{} found: removed {} (builds recompute them)",
                count(problems, "problem"),
                count_as(
                    repaired.removed_caches.len(),
                    "damaged cache file",
                    "damaged cache files"
                )
            )))
        }
        Some(repaired) if repaired.invalidated.is_empty() => Err(Failure::store(format!(
            "{} found: removed {}{}; no partition needs them \
             (a definitions source whose record is gone needs `cairn defs refresh`)",
            count(problems, "problem"),
            count(repaired.removed.len(), "damaged blob"),
            caches(repaired)
        ))),
        Some(repaired) => Err(Failure::store(format!(
            "{} found and repaired: removed {}{}, invalidated {} \
             (build {}); run `cairn build` to rebuild them",
            count(problems, "problem"),
            count(repaired.removed.len(), "damaged blob"),
            caches(repaired),
            count(repaired.invalidated.len(), "partition"),
            repaired.build
        ))),
        None if report.is_clean() => Err(Failure::store(format!(
            "{} found: the catalog was repaired by redb; run `cairn replay --check`",
            count(problems, "problem")
        ))),
        None => Err(Failure::store(format!(
            "{} found; `cairn store verify --repair` deletes the damaged blobs \
             and cache files and invalidates the affected partitions so that the next build \
             rebuilds them",
            count(problems, "problem")
        ))),
    }
}

/// One line per problem, as `store verify` prints them for humans.
fn verify_text(verification: &Verification, repair: bool) -> String {
    let report = &verification.report;
    let mut out = String::new();
    if !verification.catalog_sound {
        out.push_str(&format!(
            "catalog {} had damaged pages; redb repaired the file\n",
            verification.catalog.display()
        ));
    }
    for problem in &report.problems {
        out.push_str(&problem_text(problem, repair));
        out.push('\n');
    }
    let fate = if repair {
        "will be rebuilt"
    } else {
        "is affected"
    };
    for orphan in &report.orphans {
        out.push_str(&format!(
            "the manifest of key {}… is missing from the catalog; partition {} {fate}\n",
            orphan.key.short(),
            orphan.partition
        ));
    }
    for cache in &report.caches {
        out.push_str(&cache.describe());
        out.push_str(if repair { " (file removed)\n" } else { "\n" });
    }
    out
}

/// `blob 3f2a… is corrupt (expected 3f2a…, read 9c1d…); partition P will be rebuilt`.
fn problem_text(problem: &BlobProblem, repair: bool) -> String {
    let current: Vec<String> = problem
        .current_partitions()
        .into_iter()
        .map(PartitionRef::to_string)
        .collect();
    let mut out = problem.describe();
    if !current.is_empty() {
        let (noun, fate) = match (current.len(), repair) {
            (1, true) => ("partition", "will be rebuilt"),
            (1, false) => ("partition", "is affected"),
            (_, true) => ("partitions", "will be rebuilt"),
            (_, false) => ("partitions", "are affected"),
        };
        out.push_str(&format!("; {noun} {} {fate}", current.join(", ")));
    } else if !problem.uses.is_empty() {
        out.push_str(&format!("; {} needs it", problem.uses.join(", ")));
    } else if let Some(owner) = problem.owners.first() {
        out.push_str(&format!(
            "; only a superseded manifest uses it (partition {}, build {})",
            owner.partition, owner.build
        ));
    } else {
        out.push_str("; no manifest refers to it");
    }
    if repair && problem.damage != Damage::Missing {
        out.push_str(" (blob removed)");
    }
    out
}

// --------------------------------------------------------------------- gc

pub fn gc(
    cli: &Cli,
    keep_builds: Option<u64>,
    older_than: Option<&str>,
    dry_run: bool,
    no_wait: bool,
) -> Result<u8, Failure> {
    let workspace = crate::open_workspace(cli)?;
    let keep = match (keep_builds, older_than) {
        (Some(builds), _) => Keep::Builds(builds),
        (None, Some(text)) => Keep::YoungerThan(text.to_owned()),
        (None, None) => Keep::Current,
    };
    let Some(report) = cairn_app::maintenance::gc(&workspace, &keep, dry_run, !no_wait)? else {
        note("nothing was built here yet: there is nothing to collect");
        return Ok(0);
    };
    let verb = if dry_run { "would remove" } else { "removed" };
    stdout_text(&format!(
        "{verb} {} ({}); kept {} ({}) of {}\n",
        count(report.removed, "blob"),
        size(report.removed_bytes),
        count(report.kept, "blob"),
        size(report.kept_bytes),
        count(report.kept_manifests, "manifest")
    ));
    if dry_run {
        note("dry run: nothing was removed");
    }
    Ok(0)
}

// ------------------------------------------------------------------ stats

pub fn stats(cli: &Cli, json: bool) -> Result<u8, Failure> {
    let workspace = crate::open_workspace(cli)?;
    let stats = cairn_app::maintenance::stats(&workspace)?;
    if json {
        json_line(&StatsLine::from(stats.as_ref()));
        return Ok(0);
    }
    let Some(stats) = stats else {
        note("nothing was built here yet: the store is empty");
        return Ok(0);
    };
    let (catalog, blobs) = (&stats.catalog, &stats.blobs);
    stdout_text(&format!(
        "events      {}\n\
         builds      {}\n\
         actions     {} (manifests of successful runs)\n\
         partitions  {} ({} materialized)\n\
         blobs       {} ({})\n\
         catalog     {} ({})\n",
        catalog.events,
        catalog.builds,
        catalog.actions,
        catalog.partitions,
        catalog.materialized,
        blobs.blobs,
        size(blobs.bytes),
        size(catalog.file_bytes),
        stats.catalog_file.display()
    ));
    if stats.remote.any() {
        let remote = &stats.remote;
        stdout_text(&format!(
            "remote      {} restored, {} refused, {} uploaded ({})\n",
            remote.restored,
            remote.refused,
            remote.uploaded,
            size(remote.uploaded_bytes)
        ));
    }
    Ok(0)
}

/// `812 B`, `1.5 KiB`, `3.0 MiB`: binary units, one decimal (bytesize's
/// IEC display, as users' other tools print sizes).
fn size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(812), "812 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn a_copy_remembers_the_last_byte() {
        let mut out = Vec::new();
        assert_eq!(
            copy_remembering_last(&mut &b"two\nlines"[..], &mut out).unwrap(),
            Some(b's')
        );
        assert_eq!(out, b"two\nlines");
        assert_eq!(
            copy_remembering_last(&mut &b""[..], &mut out).unwrap(),
            None
        );
    }
}
