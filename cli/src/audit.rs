//! The audit trail: `cairn history`, `cairn logs`, `cairn replay` and
//! `cairn store verify|gc|stats`.
//!
//! `history` and `logs` read a partition's events through the catalog's
//! `partition_events` index, so their cost grows with the partition's
//! history, not with the log. `replay`, `store verify --repair` and
//! `store gc` take the writer lock; the others read beside a running build.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;

use cairn_engine::date::format_time_ms;
use cairn_engine::digest::{ActionKey, ContentDigest};
use cairn_engine::graph::Producer;
use cairn_engine::ports::Catalog;
use cairn_engine::record::{Event, EventKind, Manifest};
use cairn_engine::refs::PartitionRef;
use cairn_store::{BlobProblem, Damage, GcKeep, Store};
use serde_json::{Value, json};

use crate::escape::escape;
use crate::report::{count, count_as, json_line, note};
use crate::{Cli, Failure};
use cairn_app::Workspace;

/// Who `store verify --repair` records as the author of its invalidations.
const REPAIRER: &str = "cairn store verify";

fn parse_ref(text: &str) -> Result<PartitionRef, Failure> {
    PartitionRef::parse(text).map_err(|error| Failure::usage(error.to_string()))
}

/// A note and `Ok(true)` when `partition` is a source: cairn never runs a
/// job for it, so it has no history and no logs.
fn is_source(project: &Workspace, partition: &PartitionRef) -> bool {
    if let Ok(Producer::Source { path, .. }) = project.graph.lookup(partition) {
        note(&format!(
            "{partition} is a source partition: cairn observes {} by content and never runs a job for it",
            path.display()
        ));
        return true;
    }
    false
}

/// Every event about `partition`, oldest first.
fn partition_events(store: &Store, partition: &PartitionRef) -> Result<Vec<Event>, Failure> {
    let mut events = Vec::new();
    store
        .catalog()
        .partition_events(partition, 1, &mut |event| {
            events.push(event);
            true
        })?;
    Ok(events)
}

fn stdout_text(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn hex(digest: Option<ContentDigest>) -> Value {
    digest.map_or(Value::Null, |digest| json!(digest.to_hex()))
}

// ---------------------------------------------------------------- history

/// One line of a partition's history.
enum Entry {
    Materialization(Box<Materialized>),
    Failure {
        event: Event,
        reason: Option<String>,
    },
    Invalidation(Event),
}

struct Materialized {
    seq: u64,
    build: u64,
    time_ms: u64,
    key: ActionKey,
    digest: ContentDigest,
    /// The job ran in this build (`ActionSucceeded`); otherwise the manifest
    /// of an earlier run was reused (`ActionCached`).
    executed: bool,
    restored: bool,
    /// The manifest of the run that produced the content (reused or not).
    manifest: Option<Manifest>,
    /// Why the job ran (`ActionStarted`), when it did.
    reason: Option<String>,
    /// Inputs whose content differs from the previous materialization's.
    changed: Vec<PartitionRef>,
    current: bool,
}

impl Entry {
    fn build(&self) -> u64 {
        match self {
            Entry::Materialization(m) => m.build,
            Entry::Failure { event, .. } | Entry::Invalidation(event) => event.build,
        }
    }

    fn seq(&self) -> u64 {
        match self {
            Entry::Materialization(m) => m.seq,
            Entry::Failure { event, .. } | Entry::Invalidation(event) => event.seq,
        }
    }
}

/// Pairs each `PartitionMaterialized` with the `ActionSucceeded` or
/// `ActionCached` of its build and key (both are indexed under the
/// partition, since the key's outputs include it), oldest first.
fn history_entries(
    store: &Store,
    events: Vec<Event>,
    current_seq: Option<u64>,
) -> Result<Vec<Entry>, Failure> {
    let mut started: HashMap<(u64, ActionKey), String> = HashMap::new();
    let mut succeeded: HashMap<ActionKey, Manifest> = HashMap::new();
    let mut executed_in: HashSet<(u64, ActionKey)> = HashSet::new();
    let mut cached: HashMap<(u64, ActionKey), bool> = HashMap::new();
    let mut entries = Vec::new();
    let mut previous_inputs: Option<BTreeMap<PartitionRef, ContentDigest>> = None;
    for event in events {
        let build = event.build;
        match &event.kind {
            EventKind::ActionStarted { key, reason, .. } => {
                started.insert((build, *key), reason.clone());
            }
            EventKind::ActionSucceeded { manifest } => {
                executed_in.insert((build, manifest.key));
                succeeded.insert(manifest.key, manifest.clone());
            }
            EventKind::ActionCached { key, restored, .. } => {
                cached.insert((build, *key), *restored);
            }
            EventKind::ActionFailed { key, .. } => {
                let reason = key.and_then(|key| started.get(&(build, key)).cloned());
                entries.push(Entry::Failure { event, reason });
            }
            EventKind::PartitionInvalidated { .. } => entries.push(Entry::Invalidation(event)),
            EventKind::PartitionMaterialized { key, digest, .. } => {
                let manifest = match succeeded.get(key) {
                    Some(manifest) => Some(manifest.clone()),
                    None => store.catalog().action(key)?,
                };
                let inputs: Option<BTreeMap<PartitionRef, ContentDigest>> =
                    manifest.as_ref().map(|manifest| {
                        manifest
                            .inputs
                            .iter()
                            .map(|input| (input.partition.clone(), input.digest))
                            .collect()
                    });
                let changed = match (&previous_inputs, &inputs) {
                    (Some(before), Some(now)) => now
                        .iter()
                        .filter(|(partition, digest)| before.get(*partition) != Some(*digest))
                        .map(|(partition, _)| partition.clone())
                        .collect(),
                    _ => Vec::new(),
                };
                if inputs.is_some() {
                    previous_inputs = inputs;
                }
                entries.push(Entry::Materialization(Box::new(Materialized {
                    seq: event.seq,
                    build,
                    time_ms: event.time_ms,
                    key: *key,
                    digest: *digest,
                    executed: executed_in.contains(&(build, *key)),
                    restored: cached.get(&(build, *key)).copied().unwrap_or(false),
                    manifest,
                    reason: started.get(&(build, *key)).cloned(),
                    changed,
                    current: current_seq == Some(event.seq),
                })));
            }
            _ => {}
        }
    }
    entries.sort_by_key(Entry::seq);
    Ok(entries)
}

pub fn history(cli: &Cli, request: &str, json: bool) -> Result<u8, Failure> {
    let project = crate::open_workspace(cli)?;
    let partition = parse_ref(request)?;
    if is_source(&project, &partition) {
        return Ok(0);
    }
    let Some(store) = project.open_reader()? else {
        note("nothing was built here yet: there is no history");
        return Ok(0);
    };
    let current_seq = store
        .catalog()
        .partition(&partition)?
        .and_then(|state| state.current)
        .map(|current| current.seq);
    let events = partition_events(&store, &partition)?;
    let mut entries = history_entries(&store, events, current_seq)?;
    entries.reverse();
    if entries.is_empty() {
        note(&format!(
            "{partition} has no history here: it was never built, failed or invalidated"
        ));
        return Ok(0);
    }
    let requested = build_reasons(&store, &entries)?;
    if json {
        for entry in &entries {
            let mut line = entry_json(&partition, entry);
            if let Value::Object(fields) = &mut line
                && !matches!(entry, Entry::Invalidation(_))
            {
                fields.insert("build_reason".into(), json!(requested.get(&entry.build())));
            }
            json_line(&line);
        }
        return Ok(0);
    }
    let number = |what: fn(&Entry) -> bool| entries.iter().filter(|e| what(e)).count();
    let mut out = format!(
        "{partition}: {}, {}, {} (newest first)\n",
        count(
            number(|e| matches!(e, Entry::Materialization(_))),
            "materialization"
        ),
        count(number(|e| matches!(e, Entry::Failure { .. })), "failed run"),
        count(
            number(|e| matches!(e, Entry::Invalidation(_))),
            "invalidation"
        ),
    );
    for entry in &entries {
        out.push('\n');
        let mut text = entry_text(entry);
        // The reason the build was asked for (a backfill's, `cairn build`
        // has none), under the entry's first line.
        if let (Some(reason), Some(first_line_end), false) = (
            requested.get(&entry.build()),
            text.find('\n'),
            matches!(entry, Entry::Invalidation(_)),
        ) {
            text.insert_str(
                first_line_end + 1,
                &format!("  because  {}\n", escape(reason)),
            );
        }
        out.push_str(&text);
    }
    stdout_text(&out);
    Ok(0)
}

/// The reason each build of `entries` was requested with (its
/// `BuildRequested`, the first event of the build, found by binary search
/// over seq: build ids grow along the log), for the builds that have one.
fn build_reasons(store: &Store, entries: &[Entry]) -> Result<HashMap<u64, String>, Failure> {
    let mut reasons = HashMap::new();
    let builds: BTreeSet<u64> = entries
        .iter()
        .filter(|entry| !matches!(entry, Entry::Invalidation(_)))
        .map(Entry::build)
        .collect();
    for build in builds {
        let seq = store
            .catalog()
            .first_seq_reaching(&|event| event.build >= build)?;
        if let Some(Event {
            build: found,
            kind:
                EventKind::BuildRequested {
                    reason: Some(reason),
                    ..
                },
            ..
        }) = store.catalog().event(seq)?
            && found == build
        {
            reasons.insert(build, reason);
        }
    }
    Ok(reasons)
}

fn duration_ms(manifest: &Manifest) -> u64 {
    manifest.finished_ms.saturating_sub(manifest.started_ms)
}

fn entry_text(entry: &Entry) -> String {
    match entry {
        Entry::Materialization(m) => {
            let mut out = format!("build {}  {}  ", m.build, format_time_ms(m.time_ms));
            match (&m.manifest, m.executed) {
                (Some(manifest), true) => {
                    out.push_str(&format!("executed in {} ms", duration_ms(manifest)));
                }
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
            if m.current {
                out.push_str("  [current]");
            }
            out.push('\n');
            let job = m.manifest.as_ref().map_or("?", |manifest| &manifest.job);
            out.push_str(&format!("  key      {}  job {job}\n", m.key));
            if let Some(reason) = &m.reason {
                out.push_str(&format!("  reason   {}\n", escape(reason)));
            }
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
                        duration_ms(manifest)
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
        Entry::Failure { event, reason } => {
            let EventKind::ActionFailed {
                key,
                job,
                error,
                exit_code,
                stdout,
                stderr,
                ..
            } = &event.kind
            else {
                return String::new();
            };
            let mut out = format!(
                "build {}  {}  FAILED: {}\n",
                event.build,
                format_time_ms(event.time_ms),
                escape(error)
            );
            let key = key.map_or_else(|| "none (it never ran)".to_owned(), |key| key.to_string());
            out.push_str(&format!("  key      {key}  job {job}\n"));
            if let Some(reason) = reason {
                out.push_str(&format!("  reason   {}\n", escape(reason)));
            }
            if let Some(code) = exit_code {
                out.push_str(&format!("  exit     {code}\n"));
            }
            if stdout.is_some() || stderr.is_some() {
                out.push_str(&format!(
                    "  logs     cairn logs <ref> --build {}\n",
                    event.build
                ));
            }
            out
        }
        Entry::Invalidation(event) => {
            let EventKind::PartitionInvalidated { reason, by, .. } = &event.kind else {
                return String::new();
            };
            let by = by
                .as_deref()
                .map(|by| format!(" by {}", escape(by)))
                .unwrap_or_default();
            format!(
                "build {}  {}  invalidated{by}: {}\n",
                event.build,
                format_time_ms(event.time_ms),
                escape(reason)
            )
        }
    }
}

fn entry_json(partition: &PartitionRef, entry: &Entry) -> Value {
    match entry {
        Entry::Materialization(m) => {
            let manifest = m.manifest.as_ref();
            json!({
                "type": "materialization",
                "ref": partition,
                "seq": m.seq,
                "build": m.build,
                "time_ms": m.time_ms,
                "outcome": if m.executed { "executed" } else { "reused" },
                "restored": m.restored,
                "current": m.current,
                "key": m.key.to_hex(),
                "digest": m.digest.to_hex(),
                "job": manifest.map(|manifest| manifest.job.clone()),
                "reason": m.reason,
                "code_digest": hex(manifest.and_then(|manifest| manifest.code_digest)),
                "versions": manifest.map(|manifest| {
                    manifest
                        .versions
                        .iter()
                        .map(|(dataset, version)| (dataset.clone(), json!(version)))
                        .collect::<serde_json::Map<_, _>>()
                }),
                "inputs": manifest.map(|manifest| {
                    manifest
                        .inputs
                        .iter()
                        .map(|input| json!({
                            "ref": input.partition,
                            "digest": input.digest.to_hex(),
                            "changed": m.changed.contains(&input.partition),
                        }))
                        .collect::<Vec<_>>()
                }),
                "manifest_build": manifest.map(|manifest| manifest.build),
                "duration_ms": manifest.map(duration_ms),
                "stdout": hex(manifest.and_then(|manifest| manifest.stdout)),
                "stderr": hex(manifest.and_then(|manifest| manifest.stderr)),
            })
        }
        Entry::Failure { event, reason } => {
            let EventKind::ActionFailed {
                key,
                job,
                error,
                exit_code,
                stdout,
                stderr,
                ..
            } = &event.kind
            else {
                return Value::Null;
            };
            json!({
                "type": "failure",
                "ref": partition,
                "seq": event.seq,
                "build": event.build,
                "time_ms": event.time_ms,
                "key": key.map(|key| key.to_hex()),
                "job": job,
                "reason": reason,
                "error": error,
                "exit_code": exit_code,
                "stdout": hex(*stdout),
                "stderr": hex(*stderr),
            })
        }
        Entry::Invalidation(event) => {
            let EventKind::PartitionInvalidated { reason, by, .. } = &event.kind else {
                return Value::Null;
            };
            json!({
                "type": "invalidation",
                "ref": partition,
                "seq": event.seq,
                "build": event.build,
                "time_ms": event.time_ms,
                "reason": reason,
                "by": by,
            })
        }
    }
}

// ------------------------------------------------------------------- logs

/// A job run whose output was captured.
#[derive(Clone)]
struct Run {
    build: u64,
    time_ms: u64,
    job: String,
    key: ActionKey,
    /// `None`: it succeeded; `Some(error)`: it failed.
    error: Option<String>,
    stdout: Option<ContentDigest>,
    stderr: Option<ContentDigest>,
}

impl Run {
    fn of_manifest(manifest: &Manifest) -> Run {
        Run {
            build: manifest.build,
            time_ms: manifest.finished_ms,
            job: manifest.job.clone(),
            key: manifest.key,
            error: None,
            stdout: manifest.stdout,
            stderr: manifest.stderr,
        }
    }

    fn of_event(event: &Event) -> Option<Run> {
        match &event.kind {
            EventKind::ActionSucceeded { manifest } => Some(Run::of_manifest(manifest)),
            EventKind::ActionFailed {
                key,
                job,
                error,
                stdout,
                stderr,
                ..
            } => Some(Run {
                build: event.build,
                time_ms: event.time_ms,
                job: job.clone(),
                // No key: it failed before running (a missing source).
                key: (*key)?,
                error: Some(error.clone()),
                stdout: *stdout,
                stderr: *stderr,
            }),
            _ => None,
        }
    }
}

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
    let project = crate::open_workspace(cli)?;
    let partition = parse_ref(request)?;
    if is_source(&project, &partition) {
        return Ok(0);
    }
    let Some(store) = project.open_reader()? else {
        note(&format!(
            "{partition} was never run: nothing was built here yet"
        ));
        return Ok(0);
    };
    let runs: Vec<Run> = partition_events(&store, &partition)?
        .iter()
        .filter_map(Run::of_event)
        .collect();
    let run = match build {
        Some(build) => match runs.iter().rev().find(|run| run.build == build) {
            Some(run) => Some(run.clone()),
            None => {
                let mut builds: Vec<String> = runs.iter().map(|r| r.build.to_string()).collect();
                builds.dedup();
                let ran = if builds.is_empty() {
                    "it never ran here".to_owned()
                } else {
                    format!("it ran in builds {}", builds.join(", "))
                };
                return Err(Failure::usage(format!(
                    "{partition} did not run in build {build}: {ran}"
                )));
            }
        },
        None => {
            // The run behind the current content, unless a failure came since.
            let state = store.catalog().partition(&partition)?;
            let failed_since = state.as_ref().is_some_and(|state| state.failed.is_some());
            let current = state.and_then(|state| state.current);
            match (failed_since, current) {
                (false, Some(current)) => match store.catalog().action(&current.key)? {
                    Some(manifest) => Some(Run::of_manifest(&manifest)),
                    None => runs.last().cloned(),
                },
                _ => runs.last().cloned(),
            }
        }
    };
    let Some(run) = run else {
        note(&format!(
            "{partition} was never run here: no job run is recorded for it"
        ));
        return Ok(0);
    };
    let outcome = match &run.error {
        None => "succeeded".to_owned(),
        Some(error) => format!("failed: {error}"),
    };
    note(&format!(
        "{partition}: job {} in build {} ({}), key {}, {outcome}",
        run.job,
        run.build,
        format_time_ms(run.time_ms),
        run.key.short()
    ));
    if run.stdout.is_none() && run.stderr.is_none() {
        note("the run produced no output (stdout and stderr were empty)");
        return Ok(0);
    }
    let selected: &[(&str, Option<ContentDigest>)] = match streams {
        Streams::Both => &[("stdout", run.stdout), ("stderr", run.stderr)],
        Streams::Stdout => &[("stdout", run.stdout)],
        Streams::Stderr => &[("stderr", run.stderr)],
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
    for &(name, digest) in selected {
        let Some(digest) = digest else {
            label(&format!("--- {name}: empty ---"));
            continue;
        };
        let unreadable = |error: cairn_engine::ports::StoreError| {
            Failure::store(format!(
                "the {name} of this run cannot be read: {error} (`cairn store verify` checks the store)"
            ))
        };
        // Verified first, then streamed: a log of any size is printed through
        // a small buffer (never loaded whole), and a corrupt one never.
        store.blobs().verify(&digest).map_err(unreadable)?;
        // Opened without blocking, a regular file only (a FIFO planted
        // under the blob's name since the check would block forever).
        let (mut file, length) = store.blobs().open(&digest).map_err(unreadable)?;
        label(&format!("--- {name} ({}) ---", count(length, "byte")));
        let mut stdout = std::io::stdout().lock();
        let _ = std::io::copy(&mut file, &mut stdout);
        if labelled && length > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut last = [0u8; 1];
            let ends_line = file.seek(SeekFrom::Start(length - 1)).is_ok()
                && file.read_exact(&mut last).is_ok()
                && last[0] == b'\n';
            if !ends_line {
                let _ = stdout.write_all(b"\n");
            }
        }
        let _ = stdout.flush();
    }
    Ok(0)
}

// ----------------------------------------------------------------- replay

pub fn replay(cli: &Cli, check: bool, no_wait: bool) -> Result<u8, Failure> {
    let project = crate::open_workspace(cli)?;
    if check {
        let Some(store) = project.open_reader()? else {
            note("nothing was built here yet: the log is empty");
            return Ok(0);
        };
        let events = store.catalog().last_seq()?;
        let differences = store.catalog().replay_check()?;
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
    if project.open_reader()?.is_none() {
        note("nothing was built here yet: the log is empty");
        return Ok(0);
    }
    let store = project.open_writer(!no_wait)?;
    // Rebuilt projections appended no event: a snapshot taken from the old
    // ones must not vouch for the new.
    store.forget_snapshot()?;
    let differences = store.catalog().replay_check()?;
    let report = store.catalog().replay()?;
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
    let project = crate::open_workspace(cli)?;
    if project.open_reader()?.is_none() {
        note("nothing was built here yet: there is no store to verify");
        return Ok(0);
    }
    let mut store = project.open_writer(!no_wait)?;
    let catalog_sound = store
        .check_catalog_integrity()
        .map_err(|error| Failure::store(format!("the catalog is damaged: {error}")))?;
    let report = store.verify()?;
    let repaired = if repair && !report.is_clean() {
        Some(store.repair(&report, REPAIRER)?)
    } else {
        None
    };
    let problems = report.problems.len()
        + report.orphans.len()
        + report.caches.len()
        + usize::from(!catalog_sound);
    if json {
        for problem in &report.problems {
            json_line(&problem_json(problem, repair));
        }
        for orphan in &report.orphans {
            json_line(&json!({
                "type": "problem",
                "damage": "manifest-missing",
                "partition": orphan.partition,
                "key": orphan.key.to_hex(),
                "partitions": [orphan.partition],
            }));
        }
        for cache in &report.caches {
            json_line(&json!({
                "type": "problem",
                "damage": "cache",
                "cache": cache.kind.word(),
                "file": cache.file,
                "problem": cache.problem,
                "removed": repair,
                "partitions": [],
            }));
        }
        let (removed, removed_caches, invalidated, build) = match &repaired {
            Some(r) => (
                r.removed.len(),
                r.removed_caches.len(),
                r.invalidated.clone(),
                Some(r.build),
            ),
            None => (0, 0, Vec::new(), None),
        };
        json_line(&json!({
            "type": "summary",
            "blobs": report.blobs,
            "bytes": report.bytes,
            "problems": problems,
            "catalog": if catalog_sound { "sound" } else { "repaired" },
            "superseded_missing": report.superseded_missing,
            "unreferenced": report.unreferenced,
            "repaired": repaired.is_some(),
            "removed": removed,
            "removed_caches": removed_caches,
            "invalidated": invalidated,
            "build": build,
        }));
    } else {
        let mut out = String::new();
        if !catalog_sound {
            out.push_str(&format!(
                "catalog {} had damaged pages; redb repaired the file\n",
                store.catalog().path().display()
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
        stdout_text(&out);
    }
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
    let caches = |repaired: &cairn_store::RepairReport| match repaired.removed_caches.len() {
        0 => String::new(),
        n => format!(
            " and {} (builds recompute them)",
            count_as(n, "damaged cache file", "damaged cache files")
        ),
    };
    match repaired {
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
            caches(&repaired)
        ))),
        Some(repaired) => Err(Failure::store(format!(
            "{} found and repaired: removed {}{}, invalidated {} \
             (build {}); run `cairn build` to rebuild them",
            count(problems, "problem"),
            count(repaired.removed.len(), "damaged blob"),
            caches(&repaired),
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

fn problem_json(problem: &BlobProblem, repair: bool) -> Value {
    let (actual, length, expected_length) = match problem.damage {
        Damage::Missing => (None, None, None),
        Damage::Corrupt { actual } => (Some(actual), None, None),
        Damage::Truncated {
            length,
            expected,
            actual,
        }
        | Damage::Grown {
            length,
            expected,
            actual,
        } => (Some(actual), Some(length), Some(expected)),
        Damage::NotAFile { .. } => (None, None, None),
    };
    let superseded: Vec<&PartitionRef> = problem
        .owners
        .iter()
        .filter(|owner| !owner.current)
        .map(|owner| &owner.partition)
        .collect();
    json!({
        "type": "problem",
        "damage": problem.damage.word(),
        "blob": problem.digest.to_hex(),
        "actual": hex(actual),
        "length": length,
        "expected_length": expected_length,
        "partitions": problem.current_partitions(),
        "superseded": superseded,
        "uses": problem.uses,
        "removed": repair && problem.damage != Damage::Missing,
    })
}

// --------------------------------------------------------------------- gc

/// `30d`, `12h`, `1.5h`, `45m`, `90s`, `2w` in milliseconds: the graph
/// file's duration syntax (humantime's).
pub fn parse_duration(text: &str) -> Result<u64, Failure> {
    let duration = cairn_engine::graph::parse_duration(text)
        .map_err(|problem| Failure::usage(format!("--older-than {problem}")))?;
    u64::try_from(duration.as_millis())
        .map_err(|_| Failure::usage(format!("--older-than {text:?}: too long")))
}

pub fn gc(
    cli: &Cli,
    keep_builds: Option<u64>,
    older_than: Option<&str>,
    dry_run: bool,
    no_wait: bool,
) -> Result<u8, Failure> {
    let project = crate::open_workspace(cli)?;
    let keep = match (keep_builds, older_than) {
        (Some(builds), _) => GcKeep::Builds(builds),
        (None, Some(text)) => {
            GcKeep::Since(cairn_engine::action::now_ms().saturating_sub(parse_duration(text)?))
        }
        (None, None) => GcKeep::Current,
    };
    let Some(reader) = project.open_reader()? else {
        note("nothing was built here yet: there is nothing to collect");
        return Ok(0);
    };
    let store = if dry_run {
        reader
    } else {
        drop(reader);
        project.open_writer(!no_wait)?
    };
    let report = store.gc(keep, dry_run)?;
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
    let project = crate::open_workspace(cli)?;
    let Some(store) = project.open_reader()? else {
        if json {
            json_line(&json!({
                "events": 0, "builds": 0, "actions": 0, "partitions": 0, "materialized": 0,
                "index_entries": 0, "blobs": 0, "blob_bytes": 0, "catalog_bytes": 0,
            }));
        } else {
            note("nothing was built here yet: the store is empty");
        }
        return Ok(0);
    };
    let catalog = store.catalog().stats()?;
    let blobs = store.blob_usage()?;
    if json {
        json_line(&json!({
            "events": catalog.events,
            "builds": catalog.builds,
            "actions": catalog.actions,
            "partitions": catalog.partitions,
            "materialized": catalog.materialized,
            "index_entries": catalog.indexed,
            "blobs": blobs.blobs,
            "blob_bytes": blobs.bytes,
            "catalog_bytes": catalog.file_bytes,
        }));
        return Ok(0);
    }
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
        store.catalog().path().display()
    ));
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
    fn durations_and_sizes() {
        assert_eq!(parse_duration("30d").unwrap(), 30 * 86_400_000);
        assert_eq!(parse_duration("12h").unwrap(), 12 * 3_600_000);
        assert_eq!(parse_duration("2w").unwrap(), 14 * 86_400_000);
        assert_eq!(parse_duration("90s").unwrap(), 90_000);
        assert_eq!(parse_duration("1.5h").unwrap(), 5_400_000);
        assert_eq!(parse_duration("1h 30m").unwrap(), 5_400_000);
        for bad in ["", "d", "30", "30x", "-1d", "99999999999999999999d"] {
            assert_eq!(parse_duration(bad).unwrap_err().code, 2, "{bad}");
        }
        assert_eq!(size(812), "812 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn log_bounds_are_seqs_dates_or_rfc3339_times() {
        use crate::inspect::{Bound, parse_bound};
        let day = 19_753 * 86_400_000; // 2024-01-31
        assert_eq!(parse_bound("--since", "42", false).unwrap(), Bound::Seq(42));
        assert_eq!(parse_bound("--until", "42", true).unwrap(), Bound::Seq(42));
        assert_eq!(
            parse_bound("--since", "2024-01-31", false).unwrap(),
            Bound::Time(day)
        );
        assert_eq!(
            parse_bound("--until", "2024-01-31", true).unwrap(),
            Bound::Time(day + 86_400_000 - 1)
        );
        let time = day + (12 * 3600 + 34 * 60 + 56) * 1000;
        assert_eq!(
            parse_bound("--since", "2024-01-31T12:34:56Z", false).unwrap(),
            Bound::Time(time)
        );
        assert_eq!(
            parse_bound("--until", "2024-01-31T12:34:56Z", true).unwrap(),
            Bound::Time(time + 999)
        );
        assert_eq!(
            parse_bound("--since", "1960-01-01", false).unwrap(),
            Bound::Time(0)
        );
        // RFC 3339 offsets: 14:34:56+02:00 is 12:34:56Z.
        for same in [
            "2024-01-31T14:34:56+02:00",
            "2024-01-31T07:04:56-05:30",
            "2024-01-31T12:34:56+00:00",
        ] {
            assert_eq!(
                parse_bound("--since", same, false).unwrap(),
                Bound::Time(time),
                "{same}"
            );
            assert_eq!(
                parse_bound("--until", same, true).unwrap(),
                Bound::Time(time + 999),
                "{same}"
            );
        }
        // Across midnight: the UTC day is the one before.
        assert_eq!(
            parse_bound("--since", "2024-02-01T01:00:00+02:00", false).unwrap(),
            Bound::Time(day + 23 * 3_600_000)
        );
        // Fractional seconds are exact, also as the end of a range.
        assert_eq!(
            parse_bound("--until", "2024-01-31T12:34:56.250Z", true).unwrap(),
            Bound::Time(time + 250)
        );
        assert_eq!(
            parse_bound("--since", "2024-02-29", false).unwrap(),
            Bound::Time(day + 29 * 86_400_000)
        );
        for bad in [
            "",
            "-1",
            "2024-1-31",
            "2024-02-30",
            "2024-01-31T12:34:56",
            "2024-01-31T24:00:00Z",
            "2024-01-31T12:34Z",
            "2024-01-31T12:34:5Z",
            "2024-01-31 12:34:56Z",
            "2023-02-29",
            "2024-02-30T10:00:00Z",
            "2024-01-31t12:34:56Z",
            "yesterday",
        ] {
            let failure = parse_bound("--since", bad, false).unwrap_err();
            assert_eq!(failure.code, 2, "{bad}");
            assert!(
                failure.message.starts_with(&format!("--since {bad:?}: ")),
                "{}",
                failure.message
            );
        }
    }
}
