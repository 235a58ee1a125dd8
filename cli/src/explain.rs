//! `cairn why` and `cairn invalidate`: rebuild decisions, explained and forced.

use cairn_engine::date::format_time_ms;
use cairn_engine::evaluate::{Verdict, evaluate_with_keys};
use cairn_engine::graph::Producer;
use cairn_engine::ports::Catalog;
use cairn_engine::record::{EventKind, PartitionState};
use cairn_engine::refs::PartitionRef;
use serde_json::json;

use crate::report::{json_line, note};
use crate::{Cli, Failure};
use cairn_app::{Workspace, resumable_note};

/// The explanation of one partition.
struct Explanation {
    state: &'static str,
    text: String,
    key: Option<String>,
    built_by: Option<u64>,
}

pub fn why(cli: &Cli, request: &str, json: bool) -> Result<u8, Failure> {
    let project = crate::open_workspace(cli)?;
    let partition =
        PartitionRef::parse(request).map_err(|error| Failure::usage(error.to_string()))?;
    project
        .graph
        .check_domain(&partition)
        .map_err(Failure::usage)?;
    if let Producer::Source { path, .. } =
        project.graph.lookup(&partition).map_err(Failure::usage)?
    {
        let text = format!(
            "{partition} is a source partition: cairn observes {} by content and never builds it",
            path.display()
        );
        print(
            json,
            &partition,
            &Explanation {
                state: "source",
                text,
                key: None,
                built_by: None,
            },
        );
        return Ok(0);
    }
    let plan = project.plan(std::slice::from_ref(&partition))?;
    let live = crate::running::LiveBuild::find(&project)?;
    let explanation = project.read_context(|context| {
        let verdicts = evaluate_with_keys(context, &plan).map_err(Failure::from)?;
        let producer = |partition: &PartitionRef| {
            plan.actions
                .iter()
                .position(|action| action.config.outputs.contains(partition))
        };
        let index = producer(&partition)
            .ok_or_else(|| Failure::usage(format!("no action of the plan produces {partition}")))?;
        let state = context.catalog.partition(&partition)?;
        let running = match (&live, &verdicts[index]) {
            (_, Verdict::UpToDate { .. }) | (None, _) => None,
            (Some(live), _) => live.running(&partition)?,
        };
        let explanation = match &verdicts[index] {
            _ if running.is_some() => Explanation {
                state: "running",
                text: format!(
                    "{partition} is being built now: {}",
                    running.unwrap_or_default()
                ),
                key: None,
                built_by: None,
            },
            Verdict::UpToDate { key, built_by } => {
                let manifest = context.catalog.action(key)?;
                let versions = manifest.as_ref().map(|m| version_note(&project, &m.versions)).unwrap_or_default();
                let code = context.code_changes.get(key).map(|change| format!("; {}", change.describe())).unwrap_or_default();
                Explanation {
                    state: "up-to-date",
                    text: format!("{partition} is up to date: it reuses the manifest of build {built_by} (key {}){versions}{code}", key.short()),
                    key: Some(key.to_hex()),
                    built_by: Some(*built_by),
                }
            }
            Verdict::Restore { key } => Explanation {
                state: "restore",
                text: format!(
                    "{partition} was built under key {} but its data path is missing or altered: the next build restores it from the store without running the job",
                    key.short()
                ),
                key: Some(key.to_hex()),
                built_by: None,
            },
            Verdict::Run { key, reason } => Explanation {
                state: "rebuild",
                text: format!(
                    "{partition} will be rebuilt: {reason}{}",
                    match key {
                        Some(key) => resumable_note(context, key)?,
                        None => String::new(),
                    }
                ),
                key: key.map(|key| key.to_hex()),
                built_by: None,
            },
            Verdict::Pending { input } => {
                let input_verdict = producer(input).map(|at| &verdicts[at]);
                let waiting =
                    waiting_on(context.catalog, &partition, state.as_ref(), input, input_verdict)?;
                Explanation { state: "rebuild", text: waiting.sentence, key: None, built_by: None }
            }
            Verdict::Blocked { reason } => Explanation {
                state: "blocked",
                text: format!("{partition} cannot be built: {reason}"),
                key: None,
                built_by: None,
            },
        };
        Ok::<_, Failure>(explanation)
    })?;
    print(json, &partition, &explanation);
    Ok(0)
}

/// What `status` and `why` both say of a partition whose job waits on its
/// input (a [`Verdict::Pending`]).
pub struct Waiting {
    /// `status`'s word: `failed`, `missing` or `stale`.
    pub word: &'static str,
    /// `status`'s reason.
    pub reason: String,
    /// `why`'s sentence: the same facts, naming the partition.
    pub sentence: String,
}

/// [`Waiting`] for `partition`, whose job waits on `input`.
/// `input_verdict`: the verdict of the action producing `input`, when it is
/// planned, to say why that input is rebuilt.
pub fn waiting_on(
    catalog: &dyn Catalog,
    partition: &PartitionRef,
    state: Option<&PartitionState>,
    input: &PartitionRef,
    input_verdict: Option<&Verdict>,
) -> Result<Waiting, Failure> {
    let built = state.is_some_and(|state| state.current.is_some());
    let own_failure = state.and_then(|state| state.failed.clone());
    let upstream_failure = catalog.partition(input)?.and_then(|state| state.failed);
    let word = match (&own_failure, built) {
        (Some(_), _) => "failed",
        (None, false) => "missing",
        (None, true) => "stale",
    };
    let input_reason = match input_verdict {
        Some(verdict @ (Verdict::Run { .. } | Verdict::Pending { .. })) => {
            format!(" ({})", verdict.reason())
        }
        _ => String::new(),
    };
    let (reason, sentence) = match (upstream_failure, own_failure) {
        (Some((build, error)), _) => {
            let reason =
                format!("waiting on upstream {input}, which failed in build {build}: {error}");
            let sentence = format!("{partition} is {reason}");
            (reason, sentence)
        }
        (None, Some((build, error))) => {
            let rerun = format!("it runs again once its input {input} is rebuilt{input_reason}");
            (
                format!("build {build}: {error}; {rerun}"),
                format!("{partition} failed in build {build}: {error}; {rerun}"),
            )
        }
        (None, None) if !built => (
            "never built".to_owned(),
            format!(
                "{partition} will be built: never built (it needs {input}, which is not built yet)"
            ),
        ),
        (None, None) => {
            let reason = format!(
                "its input {input} will be rebuilt first{input_reason}; \
                 it is rebuilt if that changes the input's content"
            );
            let sentence = format!("{partition} is stale: {reason}");
            (reason, sentence)
        }
    };
    Ok(Waiting {
        word,
        reason,
        sentence,
    })
}

/// `, built by clean 1.2.0, graph now 1.3.0: still valid` when versions moved.
fn version_note(project: &Workspace, versions: &[(String, String)]) -> String {
    let mut notes = Vec::new();
    for (dataset, built) in versions {
        match project
            .graph
            .datasets
            .get(dataset)
            .and_then(|d| d.version.as_ref())
        {
            Some(now) if now.to_string() != *built => notes.push(format!(
                "built by {dataset} {built}, graph now {now}: still valid (same major)"
            )),
            Some(_) => notes.push(format!("built by {dataset} {built}")),
            None => {}
        }
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!("; {}", notes.join("; "))
    }
}

fn print(json: bool, partition: &PartitionRef, explanation: &Explanation) {
    if json {
        json_line(&json!({
            "ref": partition,
            "state": explanation.state,
            "reason": explanation.text,
            "key": explanation.key,
            "built_by": explanation.built_by,
        }));
    } else {
        use std::io::Write;
        let text = crate::escape::escape(&explanation.text);
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }
}

pub fn invalidate(
    cli: &Cli,
    requests: &[String],
    reason: &str,
    dry_run: bool,
    no_wait: bool,
) -> Result<u8, Failure> {
    let project = crate::open_workspace(cli)?;
    if reason.trim().is_empty() {
        return Err(Failure::usage("--reason must say why"));
    }
    let refs = project.requested(requests)?;
    for partition in &refs {
        if let Producer::Source { .. } = project.graph.lookup(partition).map_err(Failure::usage)? {
            return Err(Failure::usage(format!(
                "{partition} is a source partition: change its file instead of invalidating it"
            )));
        }
    }
    if dry_run {
        for partition in &refs {
            println_stdout(partition.as_str());
        }
        note(&format!(
            "would invalidate {} (dry run: nothing recorded)",
            crate::report::count(refs.len() as u64, "partition")
        ));
        return Ok(0);
    }
    let store = project.open_writer(!no_wait)?;
    let by = std::env::var("USER")
        .ok()
        .or_else(|| std::env::var("LOGNAME").ok());
    let events = refs
        .iter()
        .map(|partition| EventKind::PartitionInvalidated {
            partition: partition.clone(),
            reason: reason.to_owned(),
            by: by.clone(),
        })
        .collect();
    let build = store.catalog().next_build_id()?;
    let seq = store.catalog().append(build, events, Vec::new())?;
    note(&format!(
        "invalidated {} at {} (log up to seq {seq}); the next build rebuilds {}",
        crate::report::count(refs.len() as u64, "partition"),
        format_time_ms(cairn_engine::action::now_ms()),
        if refs.len() == 1 { "it" } else { "them" }
    ));
    Ok(0)
}

/// `cairn prune`: removes the data of every built partition the graph no
/// longer declares and records a `PartitionPruned` for each.
pub fn prune(cli: &Cli, reason: &str, dry_run: bool, no_wait: bool) -> Result<u8, Failure> {
    let project = crate::open_workspace(cli)?;
    if reason.trim().is_empty() {
        return Err(Failure::usage("--reason must say why"));
    }
    let store = if dry_run {
        project.open_reader()?
    } else {
        Some(project.open_writer(!no_wait)?)
    };
    let orphans = match &store {
        Some(store) => project.orphans(store)?,
        None => Vec::new(),
    };
    for (partition, _) in &orphans {
        println_stdout(partition.as_str());
    }
    if dry_run {
        note(&format!(
            "would prune {} (dry run: nothing removed or recorded)",
            crate::report::count(orphans.len(), "orphaned partition")
        ));
        return Ok(0);
    }
    let Some(store) = store.filter(|_| !orphans.is_empty()) else {
        note("no orphaned partitions: nothing to prune");
        return Ok(0);
    };
    // The data first, then the record: a crash in between leaves
    // partitions recorded as built whose data is gone, which `status` still
    // lists as orphaned and the next prune records.
    for (partition, _) in &orphans {
        let path = project.graph.data_path(&project.data_root, partition);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(Failure::store(format!(
                    "cannot remove {}: {error}; nothing was recorded",
                    path.display()
                )));
            }
        }
        // Parent directories left empty (`data/raw/date=D`) go too.
        let mut parent = path.parent();
        while let Some(directory) = parent {
            if directory == project.data_root || std::fs::remove_dir(directory).is_err() {
                break;
            }
            parent = directory.parent();
        }
    }
    let by = std::env::var("USER")
        .ok()
        .or_else(|| std::env::var("LOGNAME").ok());
    let events = orphans
        .iter()
        .map(|(partition, _)| EventKind::PartitionPruned {
            partition: partition.clone(),
            reason: reason.to_owned(),
            by: by.clone(),
        })
        .collect();
    let build = store.catalog().next_build_id()?;
    let seq = store.catalog().append(build, events, Vec::new())?;
    note(&format!(
        "pruned {} at {} (log up to seq {seq})",
        crate::report::count(orphans.len(), "orphaned partition"),
        format_time_ms(cairn_engine::action::now_ms())
    ));
    Ok(0)
}

fn println_stdout(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{}", crate::escape::escape(line));
}
