//! Read-only commands: `plan`, `status`, `log`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;

use cairn_engine::date::Date;
use cairn_engine::evaluate::{Verdict, evaluate};
use cairn_engine::plan::{InputSource, Plan};
use cairn_engine::ports::Catalog;
use cairn_engine::record::{Event, EventKind};
use cairn_engine::refs::{PartitionRef, Pattern};
use serde_json::{Value, json};

use crate::report::{count, json_line, note};
use crate::{Cli, Failure, PlanFormat};
use cairn_app::{Workspace, resumable_note};

pub fn plan(cli: &Cli, requests: &[String], format: PlanFormat) -> Result<u8, Failure> {
    let project = crate::open_workspace(cli)?;
    let refs = project.requested(requests)?;
    let plan = project.plan(&refs)?;
    // A script runs every action: it needs no verdicts (no store read).
    let verdicts = if format == PlanFormat::Sh {
        Vec::new()
    } else {
        project.read_context(|context| evaluate(context, &plan).map_err(Failure::from))?
    };
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
                    outputs(&plan, index)
                ));
            }
            let counts = Verdict::count(&verdicts);
            out.push_str(&format!(
                "{}: {} would run, {} up to date or restorable\n",
                count(plan.actions.len() as u64, "action"),
                counts.executed,
                counts.cached
            ));
        }
        PlanFormat::Json => {
            let actions: Vec<Value> = plan
                .order
                .iter()
                .map(|&index| {
                    let action = &plan.actions[index];
                    let (state, reason) = verdicts[index].describe();
                    json!({
                        "id": index,
                        "job": &*action.job,
                        "outputs": action.config.outputs,
                        "inputs": action.config.inputs,
                        "args": action.config.args,
                        "verdict": state,
                        "reason": reason,
                    })
                })
                .collect();
            out = json!({"requested": plan.requested, "actions": actions, "configure_calls": plan.configure_calls}).to_string();
            out.push('\n');
        }
        PlanFormat::Mermaid => out = mermaid(&plan, &verdicts),
        PlanFormat::Dot => out = dot(&plan, &verdicts),
        PlanFormat::Sh => {
            out = cairn_engine::script::shell_script(&project.graph, &plan)
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

pub fn status(cli: &Cli, requests: &[String], json: bool) -> Result<u8, Failure> {
    let project = crate::open_workspace(cli)?;
    let refs = project.requested(requests)?;
    let plan = project.plan(&refs)?;
    let live = crate::running::LiveBuild::find(&project)?;
    let rows = project.read_context(|context| {
        let verdicts = evaluate(context, &plan).map_err(Failure::from)?;
        let mut producer: HashMap<&PartitionRef, usize> = HashMap::new();
        for (index, action) in plan.actions.iter().enumerate() {
            for output in &action.config.outputs {
                producer.insert(output, index);
            }
        }
        let mut rows = Vec::new();
        for partition in &plan.requested {
            let Some(&index) = producer.get(partition) else {
                rows.push((
                    partition.clone(),
                    "source",
                    "a source partition, observed from its file".to_owned(),
                ));
                continue;
            };
            let state = context.catalog.partition(partition)?;
            let built_before = state.as_ref().is_some_and(|s| s.current.is_some());
            let failed = state.as_ref().and_then(|s| s.failed.clone());
            let running = match (&live, &verdicts[index]) {
                (_, Verdict::UpToDate { .. }) | (None, _) => None,
                (Some(live), _) => live.running(partition)?,
            };
            let (word, reason) = match &verdicts[index] {
                _ if running.is_some() => ("running", running.unwrap_or_default()),
                Verdict::UpToDate { built_by, key } => {
                    let versions = match context.catalog.action(key)? {
                        Some(manifest) => built_versions(&project, &manifest),
                        None => String::new(),
                    };
                    let code = context
                        .code_changes
                        .get(key)
                        .map(|change| format!("; {}", change.describe()))
                        .unwrap_or_default();
                    (
                        "built",
                        format!("up to date (build {built_by}){versions}{code}"),
                    )
                }
                Verdict::Restore { .. } => (
                    "stale",
                    "data path missing or altered; the next build restores it from the store"
                        .to_owned(),
                ),
                Verdict::Pending { input } => {
                    let input_verdict = producer.get(input).map(|&at| &verdicts[at]);
                    let waiting = crate::explain::waiting_on(
                        context.catalog,
                        partition,
                        state.as_ref(),
                        input,
                        input_verdict,
                    )?;
                    (waiting.word, waiting.reason)
                }
                verdict => {
                    let (_, mut reason) = verdict.describe();
                    // No key: the store records nothing, so no checkpoint.
                    if let Verdict::Run { key: Some(key), .. } = verdict {
                        reason.push_str(&resumable_note(context, key)?);
                    }
                    match (&failed, built_before) {
                        (Some((build, error)), _) => (
                            "failed",
                            format!("build {build}: {error}{}", resumable_suffix(&reason)),
                        ),
                        (None, false) => (
                            "missing",
                            format!("never built{}", resumable_suffix(&reason)),
                        ),
                        (None, true) => ("stale", reason),
                    }
                }
            };
            rows.push((partition.clone(), word, reason));
        }
        Ok::<_, Failure>(rows)
    })?;
    let mut rows = rows;
    // Everything asked for: the partitions built before and no longer
    // declared too.
    if requests.is_empty()
        && let Some(store) = project.open_reader()?
    {
        for (partition, build) in project.orphans(&store)? {
            rows.push((
                partition,
                "orphaned",
                format!(
                    "built by build {build}, but the graph no longer declares it: `cairn prune --reason TEXT` removes it"
                ),
            ));
        }
    }
    for (partition, state, reason) in &rows {
        if json {
            json_line(&json!({"ref": partition, "state": state, "reason": reason}));
        } else {
            let reason = crate::escape::escape(reason);
            print_stdout(&format!("{state:<8} {partition}  {reason}\n"));
        }
    }
    if !json {
        let number = |word: &str| rows.iter().filter(|(_, state, _)| *state == word).count();
        let orphaned = match number("orphaned") {
            0 => String::new(),
            orphaned => format!(", {orphaned} orphaned"),
        };
        note(&format!(
            "{}: {} built, {} stale, {} missing, {} failed, {} running{orphaned}",
            count(rows.len() as u64, "partition"),
            number("built"),
            number("stale"),
            number("missing"),
            number("failed"),
            number("running")
        ));
    }
    Ok(0)
}

/// `, built by 1.2.0 (code 3f2a…), graph now 1.3.0: valid` when the graph's
/// version moved within the same major.
fn built_versions(project: &Workspace, manifest: &cairn_engine::record::Manifest) -> String {
    let code = manifest
        .code_digest
        .map(|code| format!(" (code {})", code.short()))
        .unwrap_or_default();
    let mut notes = Vec::new();
    for (dataset, built) in &manifest.versions {
        if let Some(now) = project
            .graph
            .datasets
            .get(dataset)
            .and_then(|d| d.version.as_ref())
            && now.to_string() != *built
        {
            notes.push(format!(", built by {built}{code}, graph now {now}: valid"));
        }
    }
    notes.concat()
}

/// The resumable part of a reason, to keep on a failed partition's line.
fn resumable_suffix(reason: &str) -> &str {
    reason
        .find("; resumable from")
        .map_or("", |index| &reason[index..])
}

pub struct LogFilter {
    pub json: bool,
    pub since: Option<String>,
    pub until: Option<String>,
    pub build: Option<u64>,
    pub partition: Option<String>,
    pub job: Option<String>,
    pub kinds: Vec<String>,
}

/// Every event kind, as `cairn log --kind` accepts and prints them.
pub const EVENT_KINDS: [&str; 14] = [
    "BuildRequested",
    "Planned",
    "DatasetVersionChanged",
    "ActionStarted",
    "ActionCheckpointed",
    "ActionSucceeded",
    "ActionFailed",
    "ActionCached",
    "ActionSkipped",
    "PartitionMaterialized",
    "PartitionInvalidated",
    "BuildFinished",
    "DefsRefreshed",
    "PartitionPruned",
];

/// The entry of [`EVENT_KINDS`] for `kind`. The match lists every kind, so
/// adding one does not compile until it is added to the list (and so can be
/// selected with `--kind`).
fn listed_kind(kind: &EventKind) -> &'static str {
    let index = match kind {
        EventKind::BuildRequested { .. } => 0,
        EventKind::Planned { .. } => 1,
        EventKind::DatasetVersionChanged { .. } => 2,
        EventKind::ActionStarted { .. } => 3,
        EventKind::ActionCheckpointed { .. } => 4,
        EventKind::ActionSucceeded { .. } => 5,
        EventKind::ActionFailed { .. } => 6,
        EventKind::ActionCached { .. } => 7,
        EventKind::ActionSkipped { .. } => 8,
        EventKind::PartitionMaterialized { .. } => 9,
        EventKind::PartitionInvalidated { .. } => 10,
        EventKind::BuildFinished { .. } => 11,
        EventKind::DefsRefreshed { .. } => 12,
        EventKind::PartitionPruned { .. } => 13,
    };
    debug_assert_eq!(EVENT_KINDS[index], kind.name());
    EVENT_KINDS[index]
}

/// One end of a `--since`/`--until` range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Seq(u64),
    /// Milliseconds since the Unix epoch.
    Time(u64),
}

const MS_PER_DAY: i64 = 86_400_000;

/// Parses `SEQ`, a date `YYYY-MM-DD` (midnight UTC: a bare date is never
/// local time, so a command line means the same on every machine), or an
/// RFC 3339 time with `Z` or an offset (`2024-06-01T10:00:00+02:00`, read by
/// `jiff::Timestamp`). As the end of a range (`until`), a date means the end
/// of that day and a time without fractional seconds the end of that second,
/// so both are inclusive.
pub fn parse_bound(flag: &str, text: &str, until: bool) -> Result<Bound, Failure> {
    if let Ok(seq) = text.parse::<u64>() {
        return Ok(Bound::Seq(seq));
    }
    let bad = |detail: String| {
        Failure::usage(format!(
            "{flag} {text:?}: expected a sequence number, a date YYYY-MM-DD (UTC) or an \
             RFC 3339 time such as 2024-06-01T10:00:00Z or 2024-06-01T10:00:00+02:00: {detail}"
        ))
    };
    // Before 1970 nothing was recorded: such a bound is the epoch.
    let at = |ms: i64| Bound::Time(u64::try_from(ms).unwrap_or(0));
    if text.len() <= 10 {
        let date = Date::parse(text).map_err(bad)?;
        let day_start = date.unix_day() * MS_PER_DAY;
        return Ok(at(if until {
            day_start + MS_PER_DAY - 1
        } else {
            day_start
        }));
    }
    // The RFC 3339 shape, checked first: jiff also reads ISO 8601 forms
    // cairn has always refused (`12:34Z`, a space for the `T`).
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[10] != b'T' || bytes[13] != b':' || bytes[16] != b':' {
        return Err(bad(
            "a time is YYYY-MM-DDTHH:MM:SS, then Z or an offset like +02:00".to_owned(),
        ));
    }
    let time: jiff::Timestamp = text
        .parse()
        .map_err(|error: jiff::Error| bad(error.to_string()))?;
    let ms = time.as_millisecond();
    Ok(at(if until && time.subsec_nanosecond() == 0 {
        ms + 999
    } else {
        ms
    }))
}

/// The canonical names of `--kind` values (case-insensitive), or a usage
/// error listing the kinds.
fn parse_kinds(kinds: &[String]) -> Result<Vec<&'static str>, Failure> {
    kinds
        .iter()
        .map(|wanted| {
            EVENT_KINDS
                .iter()
                .find(|kind| kind.eq_ignore_ascii_case(wanted))
                .copied()
                .ok_or_else(|| {
                    Failure::usage(format!(
                        "--kind {wanted:?} is not an event kind; the kinds are: {}",
                        EVENT_KINDS.join(", ")
                    ))
                })
        })
        .collect()
}

/// The partitions and job an event is about.
fn subjects(kind: &EventKind) -> (Vec<&PartitionRef>, Option<&str>) {
    match kind {
        EventKind::ActionStarted { job, outputs, .. }
        | EventKind::ActionFailed { job, outputs, .. }
        | EventKind::ActionCached { job, outputs, .. }
        | EventKind::ActionSkipped { job, outputs, .. } => (outputs.iter().collect(), Some(job)),
        EventKind::ActionSucceeded { manifest } => (
            manifest.outputs.iter().map(|o| &o.partition).collect(),
            Some(&manifest.job),
        ),
        EventKind::PartitionMaterialized { partition, .. }
        | EventKind::PartitionInvalidated { partition, .. }
        | EventKind::PartitionPruned { partition, .. } => (vec![partition], None),
        EventKind::ActionCheckpointed { job, .. } => (Vec::new(), Some(job)),
        _ => (Vec::new(), None),
    }
}

/// An event as one flat JSON object: `seq`, `time_ms`, `build`, `kind`,
/// then the event's own fields.
pub fn event_json(event: &Event) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("seq".into(), json!(event.seq));
    object.insert("time_ms".into(), json!(event.time_ms));
    object.insert("build".into(), json!(event.build));
    object.insert("kind".into(), json!(event.kind.name()));
    if let Ok(Value::Object(outer)) = serde_json::to_value(&event.kind) {
        for (_, inner) in outer {
            if let Value::Object(fields) = inner {
                object.extend(fields);
            }
        }
    }
    Value::Object(object)
}

/// Appends [`event_json`]'s object for `event` and a newline to `out`,
/// serializing straight into the buffer (`cairn log --json` over millions
/// of events: no `Value` tree, no map, one reused buffer). The keys are
/// `seq`, `time_ms`, `build`, `kind`, then the event's fields in their
/// declared order; `scratch` is a reusable buffer.
pub fn write_event_json(event: &Event, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
    use std::io::Write;
    let start = out.len();
    let name = event.kind.name();
    let _ = write!(
        out,
        "{{\"seq\":{},\"time_ms\":{},\"build\":{},\"kind\":\"{name}\"",
        event.seq, event.time_ms, event.build
    );
    scratch.clear();
    // Every kind is a struct variant: serde writes {"Name":{fields}}.
    let fields = serde_json::to_writer(&mut *scratch, &event.kind)
        .ok()
        .and_then(|()| {
            let inner = scratch
                .strip_prefix(b"{\"")?
                .strip_prefix(name.as_bytes())?;
            inner.strip_prefix(b"\":{")?.strip_suffix(b"}}")
        });
    match fields {
        Some(fields) => {
            if !fields.is_empty() {
                out.push(b',');
                out.extend_from_slice(fields);
            }
            out.extend_from_slice(b"}\n");
        }
        None => {
            // Not the shape above (cannot happen for today's kinds): the
            // general path.
            out.truncate(start);
            let _ = writeln!(out, "{}", event_json(event));
        }
    }
}

fn event_text(event: &Event) -> String {
    let (partitions, job) = subjects(&event.kind);
    let detail = match &event.kind {
        EventKind::BuildRequested {
            requested,
            command,
            reason,
        } => format!(
            "{command} {}{}",
            if requested.is_empty() {
                "(everything)".to_owned()
            } else {
                requested.join(" ")
            },
            reason
                .as_ref()
                .map(|reason| format!("  reason: {reason}"))
                .unwrap_or_default()
        ),
        EventKind::Planned { actions, sources } => {
            format!(
                "{}, {}",
                count(*actions, "action"),
                count(*sources, "source")
            )
        }
        EventKind::ActionStarted {
            reason,
            attempt,
            resumed_from,
            ..
        } => {
            let attempt = if *attempt > 1 {
                format!(" (attempt {attempt})")
            } else {
                String::new()
            };
            let resumed = resumed_from
                .map(|sequence| format!(", resuming from checkpoint {sequence}"))
                .unwrap_or_default();
            format!("{reason}{attempt}{resumed}")
        }
        EventKind::ActionCheckpointed {
            sequence,
            size,
            digest,
            ..
        } => {
            format!(
                "checkpoint {sequence} ({}, {})",
                count(*size, "byte"),
                digest.short()
            )
        }
        EventKind::ActionFailed { error, .. } => error.clone(),
        EventKind::ActionCached {
            built_by, restored, ..
        } => format!(
            "reused build {built_by}{}",
            if *restored { ", restored" } else { "" }
        ),
        EventKind::ActionSkipped { reason, .. } => reason.clone(),
        EventKind::PartitionMaterialized { digest, .. } => format!("content {}", digest.short()),
        EventKind::PartitionInvalidated { reason, by, .. }
        | EventKind::PartitionPruned { reason, by, .. } => match by {
            Some(by) => format!("by {by}: {reason}"),
            None => reason.clone(),
        },
        EventKind::BuildFinished {
            counts,
            interrupted,
        } => format!(
            "{} executed, {} cached, {} failed, {} skipped{}",
            counts.executed,
            counts.cached,
            counts.failed,
            counts.skipped,
            if *interrupted { ", interrupted" } else { "" }
        ),
        EventKind::DatasetVersionChanged { dataset, from, to } => format!(
            "{dataset}: {} -> {}",
            from.as_deref().unwrap_or("none"),
            to.as_deref().unwrap_or("none")
        ),
        EventKind::ActionSucceeded { manifest } => format!(
            "{} ms",
            manifest.finished_ms.saturating_sub(manifest.started_ms)
        ),
        EventKind::DefsRefreshed {
            source,
            digest,
            values,
        } => format!(
            "source {source}: {}, record {}",
            count(*values, "value"),
            digest.short()
        ),
    };
    let about: Vec<&str> = partitions.iter().map(|p| p.as_str()).collect();
    // One line per event: whatever the stored texts hold stays on it.
    let detail = crate::escape::escape(&detail);
    format!(
        "{:>6} b{:<4} {} {:<22} {}{}  {detail}",
        event.seq,
        event.build,
        log_time(event.time_ms),
        event.kind.name(),
        job.map(|job| format!("{job} ")).unwrap_or_default(),
        about.join(", ")
    )
}

/// An event's recorded time as `cairn log` shows it: UTC, to the second,
/// in the form `--since` and `--until` accept (`2024-02-01T09:12:44Z`).
fn log_time(ms: u64) -> String {
    let text = cairn_engine::date::format_time_ms(ms);
    match text.strip_suffix(" UTC") {
        Some(time) => format!("{}Z", time.replacen(' ', "T", 1)),
        None => text,
    }
}

/// What the log scan does with one event.
enum Step {
    Print,
    Skip,
    /// Past `--until SEQ`: nothing after it can match.
    Stop,
}

/// The parsed filters of `cairn log`.
struct Selection<'a> {
    since: Option<Bound>,
    until: Option<Bound>,
    build: Option<u64>,
    kinds: Vec<&'static str>,
    job: Option<&'a str>,
    partition: Option<Pattern>,
}

impl Selection<'_> {
    fn step(&self, event: &Event) -> Step {
        match self.until {
            // Seqs only grow along the scan: past the end, stop.
            Some(Bound::Seq(last)) if event.seq > last => return Step::Stop,
            Some(Bound::Time(last)) if event.time_ms > last => return Step::Skip,
            _ => {}
        }
        if let Some(Bound::Time(first)) = self.since
            && event.time_ms < first
        {
            return Step::Skip;
        }
        if self.build.is_some_and(|build| build != event.build) {
            return Step::Skip;
        }
        if !self.kinds.is_empty() && !self.kinds.contains(&listed_kind(&event.kind)) {
            return Step::Skip;
        }
        let (partitions, job) = subjects(&event.kind);
        if self.job.is_some_and(|wanted| job != Some(wanted)) {
            return Step::Skip;
        }
        if let Some(pattern) = &self.partition
            && !partitions
                .iter()
                .any(|partition| pattern.matches(partition).is_some())
        {
            return Step::Skip;
        }
        Step::Print
    }
}

/// The second stage of `cairn log`: renders the batches it receives and
/// writes them to stdout. A closed pipe (`cairn log | head`) is not an
/// error of the log: it sets `closed`, which stops the scan.
fn print_batches(receiver: Receiver<Vec<Event>>, json: bool, closed: &AtomicBool) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let mut buffer: Vec<u8> = Vec::with_capacity(256 * 1024);
    let mut scratch: Vec<u8> = Vec::with_capacity(4096);
    for batch in receiver {
        for event in &batch {
            if json {
                write_event_json(event, &mut buffer, &mut scratch);
            } else {
                buffer.extend_from_slice(event_text(event).as_bytes());
                buffer.push(b'\n');
            }
        }
        if stdout.write_all(&buffer).is_err() {
            closed.store(true, Ordering::Relaxed);
            return;
        }
        buffer.clear();
    }
    let _ = stdout.flush();
}

pub fn log(cli: &Cli, filter: &LogFilter) -> Result<u8, Failure> {
    let project = crate::open_workspace(cli)?;
    let partition: Option<Pattern> = match &filter.partition {
        Some(text) => {
            Some(Pattern::parse(text).map_err(|error| Failure::usage(error.to_string()))?)
        }
        None => None,
    };
    let since = match &filter.since {
        Some(text) => Some(parse_bound("--since", text, false)?),
        None => None,
    };
    let until = match &filter.until {
        Some(text) => Some(parse_bound("--until", text, true)?),
        None => None,
    };
    let selection = Selection {
        since,
        until,
        build: filter.build,
        kinds: parse_kinds(&filter.kinds)?,
        job: filter.job.as_deref(),
        partition,
    };
    let Some(store) = project.open_reader()? else {
        note("nothing was built here yet: the event log is empty");
        return Ok(0);
    };
    // `--since DATE` starts the scan at the first event recorded at or
    // after DATE, found by binary search over seq: recorded times grow
    // with seq (one writer appends, each group stamped when it commits)
    // unless the system clock is stepped back, so the log needs no time
    // index (docs/audit.md says what a clock stepped back means for it).
    let from = match since {
        Some(Bound::Seq(seq)) => seq.max(1),
        Some(Bound::Time(first)) => {
            let from = store
                .catalog()
                .first_seq_reaching(&|event| event.time_ms >= first)?;
            tracing::debug!("log: --since starts the scan at seq {from} (binary search over seq)");
            from
        }
        None => 1,
    };
    // One partition: read its events through the partition index instead of
    // the whole log. Otherwise stream the log from `from` on.
    let concrete = selection
        .partition
        .as_ref()
        .filter(|pattern| pattern.is_concrete())
        .and_then(|pattern| PartitionRef::parse(pattern.as_str()).ok());
    // Two stages, so that reading and decoding the log (this thread) and
    // rendering and writing it (a second one) overlap: batches of events go
    // through a small bounded channel, so memory stays flat.
    const BATCH: usize = 1024;
    let closed = AtomicBool::new(false);
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<Event>>(4);
    std::thread::scope(|scope| {
        let closed = &closed;
        scope.spawn(move || print_batches(receiver, filter.json, closed));
        let mut batch: Vec<Event> = Vec::with_capacity(BATCH);
        let mut visit = |event: Event| {
            match selection.step(&event) {
                Step::Stop => return false,
                Step::Skip => return true,
                Step::Print => batch.push(event),
            }
            if batch.len() >= BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if sender.send(full).is_err() {
                    return false;
                }
            }
            !closed.load(Ordering::Relaxed)
        };
        let scanned = match concrete {
            Some(partition) => store
                .catalog()
                .partition_events(&partition, from, &mut visit),
            None => store.catalog().scan_events(from, &mut visit),
        };
        if !batch.is_empty() {
            let _ = sender.send(batch);
        }
        drop(sender);
        scanned
    })?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_engine::ContentDigest;
    use cairn_engine::digest::ActionKey;
    use cairn_engine::record::{BuildCounts, InputRecord, Manifest, OutputRecord};

    /// One event of every kind, with text that needs escaping.
    fn every_kind() -> Vec<EventKind> {
        let partition = PartitionRef::parse("clean/date=2024-01-01/station=S001").unwrap();
        let key = ActionKey([7; 32]);
        let digest = ContentDigest([9; 32]);
        let tricky = "quote \" backslash \\ newline \n tab \t é".to_owned();
        let kinds = vec![
            EventKind::BuildRequested {
                requested: vec![tricky.clone()],
                command: "build".into(),
                reason: Some(tricky.clone()),
            },
            EventKind::Planned {
                actions: 3,
                sources: 2,
            },
            EventKind::DatasetVersionChanged {
                dataset: "clean".into(),
                from: None,
                to: Some("1.2.0".into()),
            },
            EventKind::ActionStarted {
                key,
                job: "clean".into(),
                outputs: vec![partition.clone()],
                reason: tricky.clone(),
                attempt: 2,
                resumed_from: Some(4),
            },
            EventKind::ActionCheckpointed {
                key,
                job: "clean".into(),
                sequence: 3,
                digest,
                size: 10,
            },
            EventKind::ActionSucceeded {
                manifest: Manifest {
                    key,
                    job: "clean".into(),
                    outputs: vec![OutputRecord {
                        partition: partition.clone(),
                        digest,
                        files: Vec::new(),
                    }],
                    inputs: vec![InputRecord {
                        partition: partition.clone(),
                        digest,
                    }],
                    code_digest: None,
                    versions: vec![("clean".into(), "1.0.0".into())],
                    build: 5,
                    started_ms: 1,
                    finished_ms: 2,
                    stdout: Some(digest),
                    stderr: None,
                    command: None,
                },
            },
            EventKind::ActionFailed {
                key: Some(key),
                job: "clean".into(),
                outputs: vec![partition.clone()],
                error: tricky.clone(),
                exit_code: Some(-1),
                stdout: None,
                stderr: Some(digest),
            },
            EventKind::ActionCached {
                key,
                job: "clean".into(),
                outputs: vec![partition.clone()],
                built_by: 1,
                restored: true,
            },
            EventKind::ActionSkipped {
                job: "clean".into(),
                outputs: vec![partition.clone()],
                reason: tricky.clone(),
            },
            EventKind::PartitionMaterialized {
                partition: partition.clone(),
                digest,
                key,
            },
            EventKind::PartitionInvalidated {
                partition,
                reason: tricky,
                by: None,
            },
            EventKind::BuildFinished {
                counts: BuildCounts {
                    executed: 1,
                    cached: 2,
                    failed: 3,
                    skipped: 4,
                },
                interrupted: false,
            },
            EventKind::DefsRefreshed {
                source: "stations".into(),
                digest,
                values: 8,
            },
            EventKind::PartitionPruned {
                partition: PartitionRef::parse("raw/date=1/station=gone").unwrap(),
                reason: "station retired".into(),
                by: Some("ana".into()),
            },
        ];
        assert_eq!(kinds.len(), EVENT_KINDS.len(), "one event of every kind");
        kinds
    }

    #[test]
    fn streamed_json_is_the_documented_object_for_every_kind() {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        for (seq, kind) in every_kind().into_iter().enumerate() {
            let event = Event {
                seq: seq as u64 + 1,
                time_ms: 1_700_000_000_000,
                build: 5,
                kind,
            };
            out.clear();
            write_event_json(&event, &mut out, &mut scratch);
            assert_eq!(out.last(), Some(&b'\n'));
            assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1, "one line");
            let streamed: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(streamed, event_json(&event), "{}", event.kind.name());
            let text = String::from_utf8(out.clone()).unwrap();
            assert!(
                text.starts_with(&format!(
                    "{{\"seq\":{},\"time_ms\":1700000000000,\"build\":5,\"kind\":\"{}\"",
                    event.seq,
                    event.kind.name()
                )),
                "{text}"
            );
        }
    }
}
