//! `status` and `why`: the state of partitions, classified and explained,
//! read-only (beside a running build too).

use std::fmt;
use std::path::PathBuf;

use cairn_engine::digest::{ActionKey, ContentDigest};
use cairn_engine::evaluate::{Verdict, evaluate, evaluate_with_keys};
use cairn_engine::graph::Producer;
use cairn_engine::plan::Plan;
use cairn_engine::ports::Catalog;
use cairn_engine::record::{Manifest, PartitionState};
use cairn_engine::refs::PartitionRef;
use rayon::prelude::*;

use crate::running::{LiveBuild, RunningJob};
use crate::{AppError, Workspace, resumable_note};

/// What `status` says of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// A source partition: observed from its file, never built.
    Source,
    /// Up to date.
    Built,
    /// It would be rebuilt or restored.
    Stale,
    /// Never built.
    Missing,
    /// Its last attempt failed.
    Failed,
    /// A build running now is running its job.
    Running,
    /// Built, but the graph no longer declares it.
    Orphaned,
}

impl State {
    /// The word `status` prints (`built`, `stale`, ...).
    pub fn word(self) -> &'static str {
        match self {
            State::Source => "source",
            State::Built => "built",
            State::Stale => "stale",
            State::Missing => "missing",
            State::Failed => "failed",
            State::Running => "running",
            State::Orphaned => "orphaned",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// One partition's status: its state and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    pub partition: PartitionRef,
    pub state: State,
    /// Why, in one sentence (`up to date (build 3)`, `never built`, ...).
    pub reason: String,
    /// The job running for it now ([`State::Running`]).
    pub running: Option<RunningJob>,
    /// The build whose result is current ([`State::Built`]), or that made
    /// an orphaned partition's content ([`State::Orphaned`]).
    pub built_by: Option<u64>,
}

impl PartitionStatus {
    fn new(partition: PartitionRef, state: State, reason: String) -> PartitionStatus {
        PartitionStatus {
            partition,
            state,
            reason,
            running: None,
            built_by: None,
        }
    }
}

/// Which action keys a status computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Only those a store record can match ([`evaluate`]): an action none
    /// of whose outputs an event ever named is "never built" without one,
    /// its sources listed rather than hashed. What [`status`] does.
    Needed,
    /// Every key whose inputs are known ([`evaluate_with_keys`], as `why`
    /// does): the reference the tests hold [`status`] to.
    Every,
}

/// The status of every partition `requests` names (refs or patterns;
/// none: every declared partition, then every orphaned one), in ref order.
pub fn status(
    workspace: &Workspace,
    requests: &[String],
) -> Result<Vec<PartitionStatus>, AppError> {
    status_with(workspace, requests, Keys::Needed)
}

/// [`status`], computing the action keys `keys` says: both give the same
/// rows.
pub fn status_with(
    workspace: &Workspace,
    requests: &[String],
    keys: Keys,
) -> Result<Vec<PartitionStatus>, AppError> {
    let started = std::time::Instant::now();
    let refs = workspace.requested(requests)?;
    tracing::debug!(
        "status: {} refs requested ({:.2?})",
        refs.len(),
        started.elapsed()
    );
    let mut rows = rows_of(workspace, &refs, keys)?;
    // Everything asked for: the partitions built before and no longer
    // declared too.
    if requests.is_empty()
        && let Some(store) = workspace.open_reader()?
    {
        for (partition, build) in workspace.orphans(&store)? {
            rows.push(PartitionStatus {
                built_by: Some(build),
                ..PartitionStatus::new(
                    partition,
                    State::Orphaned,
                    format!(
                        "built by build {build}, but the graph no longer declares it: `cairn prune --reason TEXT` removes it"
                    ),
                )
            });
        }
    }
    Ok(rows)
}

/// The rows of `refs` (declared partitions), in their order.
fn rows_of(
    workspace: &Workspace,
    refs: &[PartitionRef],
    keys: Keys,
) -> Result<Vec<PartitionStatus>, AppError> {
    // The phases at -vv, as a build's (docs/benchmarks.md).
    let started = std::time::Instant::now();
    let plan = workspace.plan(refs)?;
    rows_of_plan(workspace, &plan, keys, started)
}

/// [`rows_of`], with the plan of the refs made already (at `started`):
/// the rows of its requested refs.
fn rows_of_plan(
    workspace: &Workspace,
    plan: &Plan,
    keys: Keys,
    started: std::time::Instant,
) -> Result<Vec<PartitionStatus>, AppError> {
    tracing::debug!(
        "status: planned {} actions, {} sources ({:.2?})",
        plan.actions.len(),
        plan.sources.len(),
        started.elapsed()
    );
    let live = LiveBuild::find(workspace)?;
    workspace.read_context(|context| {
        let verdicts = match keys {
            Keys::Needed => evaluate(context, plan)?,
            Keys::Every => evaluate_with_keys(context, plan)?,
        };
        tracing::debug!("status: evaluated ({:.2?})", started.elapsed());
        let producer = plan.producers();
        // Each row is a few catalog lookups and a sentence, independent of
        // the others: on rayon's pool, in order (at 10⁶ partitions this
        // loop took 1.5 s on one thread).
        let row = |partition: &PartitionRef| -> Result<PartitionStatus, AppError> {
            let Some(&index) = producer.get(partition) else {
                return Ok(PartitionStatus::new(
                    partition.clone(),
                    State::Source,
                    "a source partition, observed from its file".to_owned(),
                ));
            };
            let state = context.catalog.partition(partition)?;
            let built_before = state.as_ref().is_some_and(|s| s.current.is_some());
            let failed = state.as_ref().and_then(|s| s.failed.clone());
            let running = match (&live, &verdicts[index]) {
                (_, Verdict::UpToDate { .. }) | (None, _) => None,
                (Some(live), _) => live.running(partition)?,
            };
            let row = match &verdicts[index] {
                _ if running.is_some() => {
                    let job = running.unwrap_or_else(|| unreachable!("checked above"));
                    PartitionStatus {
                        reason: job.to_string(),
                        running: Some(job),
                        ..PartitionStatus::new(partition.clone(), State::Running, String::new())
                    }
                }
                Verdict::UpToDate { built_by, key } => {
                    let versions = match context.catalog.action(key)? {
                        Some(manifest) => built_versions(workspace, &manifest),
                        None => String::new(),
                    };
                    let code = context
                        .code_changes
                        .get(key)
                        .map(|change| format!("; {}", change.describe()))
                        .unwrap_or_default();
                    PartitionStatus {
                        built_by: Some(*built_by),
                        ..PartitionStatus::new(
                            partition.clone(),
                            State::Built,
                            format!("up to date (build {built_by}){versions}{code}"),
                        )
                    }
                }
                Verdict::Restore { .. } => PartitionStatus::new(
                    partition.clone(),
                    State::Stale,
                    "data path missing or altered; the next build restores it from the store"
                        .to_owned(),
                ),
                Verdict::Pending { input } => {
                    let input_verdict = producer.get(input).map(|&at| &verdicts[at]);
                    let waiting = waiting_on(
                        context.catalog,
                        partition,
                        state.as_ref(),
                        input,
                        input_verdict,
                    )?;
                    PartitionStatus::new(partition.clone(), waiting.state, waiting.reason)
                }
                verdict => {
                    let (_, mut reason) = verdict.describe();
                    // No key: the store records nothing, so no checkpoint.
                    if let Verdict::Run { key: Some(key), .. } = verdict {
                        reason.push_str(&resumable_note(context, key)?);
                    }
                    let (state, reason) = match (&failed, built_before) {
                        (Some((build, error)), _) => (
                            State::Failed,
                            format!("build {build}: {error}{}", resumable_suffix(&reason)),
                        ),
                        (None, false) => (
                            State::Missing,
                            format!("never built{}", resumable_suffix(&reason)),
                        ),
                        (None, true) => (State::Stale, reason),
                    };
                    PartitionStatus::new(partition.clone(), state, reason)
                }
            };
            Ok(row)
        };
        let rows = plan
            .requested
            .par_iter()
            .map(row)
            .collect::<Result<Vec<_>, AppError>>()?;
        tracing::debug!("status: {} rows ({:.2?})", rows.len(), started.elapsed());
        Ok::<_, AppError>(rows)
    })
}

/// The state of every partition `requests` names (refs or patterns), as
/// [`status`] gives it, in ref order, without the reasons: what a grid
/// shows. A partition a job produces that no event ever named
/// ([`EventLog::never_named`](cairn_engine::ports::EventLog::never_named))
/// is missing, whatever its upstream: status's reason for it varies
/// (never built, waiting on an input, blocked), its state cannot (no
/// state, no failure, no job started for it). Only the named ones are
/// planned and evaluated, with their upstream, so a dataset never built is
/// not planned at all. What planning the unnamed ones would report (a
/// configure or code error) is not reported here; status reports it.
pub fn states(
    workspace: &Workspace,
    requests: &[String],
) -> Result<Vec<(PartitionRef, State)>, AppError> {
    let started = std::time::Instant::now();
    let refs = workspace.requested(requests)?;
    if let Some(states) = from_snapshot(workspace, requests, &refs)? {
        tracing::debug!(
            "states: {} refs from the up-to-date snapshot ({:.2?})",
            states.len(),
            started.elapsed()
        );
        return Ok(states);
    }
    let graph = &workspace.graph;
    let known: Vec<Option<State>> = workspace.read_context(|context| {
        refs.par_iter()
            .map(|partition| {
                Ok(match graph.lookup(partition) {
                    Ok(Producer::Source { .. }) => Some(State::Source),
                    Ok(Producer::Job { .. }) if context.catalog.never_named(partition)? => {
                        Some(State::Missing)
                    }
                    _ => None,
                })
            })
            .collect::<Result<_, AppError>>()
    })?;
    let named: Vec<PartitionRef> = refs
        .iter()
        .zip(&known)
        .filter(|(_, known)| known.is_none())
        .map(|(partition, _)| partition.clone())
        .collect();
    tracing::debug!(
        "states: {} of {} refs named ({:.2?})",
        named.len(),
        refs.len(),
        started.elapsed()
    );
    let mut evaluated = if named.is_empty() {
        Vec::new()
    } else {
        rows_of(workspace, &named, Keys::Needed)?
    }
    .into_iter();
    let mut states = Vec::with_capacity(refs.len());
    for (partition, known) in refs.into_iter().zip(known) {
        let state = match known {
            Some(state) => state,
            None => match evaluated.next() {
                Some(row) if row.partition == partition => row.state,
                _ => {
                    return Err(AppError::Usage(format!(
                        "the status of {partition} was not evaluated"
                    )));
                }
            },
        };
        states.push((partition, state));
    }
    Ok(states)
}

/// [`states`] as the up-to-date snapshot gives them, or `None` when it
/// cannot: what a grid of a built store is answered from.
pub fn snapshot_states(
    workspace: &Workspace,
    requests: &[String],
) -> Result<Option<Vec<(PartitionRef, State)>>, AppError> {
    let refs = workspace.requested(requests)?;
    from_snapshot(workspace, requests, &refs)
}

/// The states of `refs` (what `requests` names) if the up-to-date
/// snapshot of `cairn build` (everything declared) or of `cairn build
/// REQUESTS` is confirmed as a dry run confirms it
/// ([`crate::uptodate::confirmed_for`]: the same graph, code and passed
/// environment, the log still ending with the snapshot's last event or a
/// failed build's after it, every observed path as it was), but for at most
/// 1,024 changed paths (as a build does not presume actions past that), and
/// no build is running. Every action that build plans was then current (but
/// for what a failed build since left to check), and every partition a job
/// produces among `refs` is one of its outputs (planning is deterministic).
/// With no path changed, each is built and a source a source. With changed
/// paths, the kept plan says which actions they concern (`presume`, as a
/// build with a changed input takes the others as current): the partitions
/// of those and of everything downstream get the full status's state
/// (planned and evaluated with their upstream alone, if that plan agrees
/// with the kept one: `plan_agreeing`), the others are built. At 10⁶
/// partitions this is one stat per path the snapshot records instead of
/// planning and evaluating everything (docs/web.md).
fn from_snapshot(
    workspace: &Workspace,
    requests: &[String],
    refs: &[PartitionRef],
) -> Result<Option<Vec<(PartitionRef, State)>>, AppError> {
    // A running build's jobs are `running`, which only the full path says.
    if LiveBuild::find(workspace)?.is_some() {
        return Ok(None);
    }
    let everything: &[String] = &[];
    let Some(confirmed) = crate::uptodate::confirmed_for(
        workspace,
        &[everything, requests],
        rayon::current_num_threads(),
        " for the states",
    )?
    else {
        return Ok(None);
    };
    let graph = &workspace.graph;
    let states: Option<Vec<(PartitionRef, State)>> = refs
        .par_iter()
        .map(|partition| {
            let state = match graph.lookup(partition) {
                Ok(Producer::Source { .. }) => State::Source,
                Ok(Producer::Job { .. }) => State::Built,
                // The build the snapshot is of planned it without error:
                // never here, but the full path says what it means.
                Err(_) => return None,
            };
            Some((partition.clone(), state))
        })
        .collect();
    let Some(mut states) = states else {
        return Ok(None);
    };
    if confirmed.changed.is_empty() && confirmed.recheck.is_empty() {
        return Ok(Some(states));
    }
    // What the changed paths concern, and what a failed build since the
    // snapshot left to check, by the kept plan.
    let Some(crate::uptodate::Presumed {
        plan,
        keys,
        changed,
        recheck,
        ..
    }) = confirmed.presume(&workspace.data_root)
    else {
        return Ok(None);
    };
    let concerned: std::collections::HashSet<&str> = plan
        .actions
        .iter()
        .zip(&keys)
        .filter(|(_, key)| key.is_none())
        .flat_map(|(action, _)| action.config.outputs.iter().map(PartitionRef::as_str))
        .collect();
    let checked: Vec<usize> = states
        .iter()
        .enumerate()
        .filter(|(_, (partition, state))| {
            *state == State::Built && concerned.contains(partition.as_str())
        })
        .map(|(at, _)| at)
        .collect();
    tracing::debug!(
        "states: {changed} changed paths and {recheck} actions to check concern {} actions, {} of the refs",
        keys.iter().filter(|key| key.is_none()).count(),
        checked.len()
    );
    drop(concerned);
    if checked.is_empty() {
        return Ok(Some(states));
    }
    let partitions: Vec<PartitionRef> = checked.iter().map(|&at| states[at].0.clone()).collect();
    let started = std::time::Instant::now();
    // Planned again for these partitions alone, a configure may answer
    // otherwise than for the kept plan's build: then the full status.
    let Some((own, _)) = crate::uptodate::plan_agreeing(workspace, &plan, &partitions, "states")?
    else {
        return Ok(None);
    };
    drop(plan);
    let rows = rows_of_plan(workspace, &own, Keys::Needed, started)?;
    if rows.len() != checked.len() {
        return Ok(None);
    }
    for (&at, row) in checked.iter().zip(rows) {
        if row.partition != states[at].0 {
            return Ok(None);
        }
        states[at].1 = row.state;
    }
    Ok(Some(states))
}

/// How many of `rows` are in each state, for the summary line.
pub fn count(rows: &[PartitionStatus], state: State) -> usize {
    rows.iter().filter(|row| row.state == state).count()
}

/// `, built by 1.2.0 (code 3f2a…), graph now 1.3.0: valid` when the graph's
/// version moved within the same major.
fn built_versions(workspace: &Workspace, manifest: &Manifest) -> String {
    let code = manifest
        .code_digest
        .map(|code| format!(" (code {})", code.short()))
        .unwrap_or_default();
    let mut notes = Vec::new();
    for (dataset, built) in &manifest.versions {
        if let Some(now) = workspace
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

// -------------------------------------------------------------------- why

/// What `why` concludes about a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WhyState {
    /// A source partition: observed, never built.
    Source,
    /// A build running now is running its job.
    Running,
    /// Up to date: it reuses a recorded manifest.
    UpToDate,
    /// Its key was built, but its data path must be restored from the store.
    Restore,
    /// The next build runs its job (or waits on an input first).
    Rebuild,
    /// It cannot be built (an input is missing).
    Blocked,
}

impl WhyState {
    /// The word `why --json` prints as `state`.
    pub fn word(self) -> &'static str {
        match self {
            WhyState::Source => "source",
            WhyState::Running => "running",
            WhyState::UpToDate => "up-to-date",
            WhyState::Restore => "restore",
            WhyState::Rebuild => "rebuild",
            WhyState::Blocked => "blocked",
        }
    }
}

impl fmt::Display for WhyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// Whether a partition is up to date and, if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub partition: PartitionRef,
    pub state: WhyState,
    /// The explanation in plain words, naming the partition.
    pub text: String,
    /// The action key it is (or would be) built under, when known.
    pub key: Option<ActionKey>,
    /// The build whose result it reuses ([`WhyState::UpToDate`]).
    pub built_by: Option<u64>,
    /// The job running for it now ([`WhyState::Running`]).
    pub running: Option<RunningJob>,
    /// The file a source partition is observed from ([`WhyState::Source`]).
    pub source_path: Option<PathBuf>,
}

impl Explanation {
    fn new(partition: &PartitionRef, state: WhyState, text: String) -> Explanation {
        Explanation {
            partition: partition.clone(),
            state,
            text,
            key: None,
            built_by: None,
            running: None,
            source_path: None,
        }
    }
}

/// `; build 8 joined the run of build 7 (not built twice)`: the builds of
/// a server that took `built_by`'s run of `key` (`ActionJoined`), if any.
fn joined_note(
    workspace: &Workspace,
    partition: &PartitionRef,
    key: &cairn_engine::digest::ActionKey,
    built_by: u64,
) -> Result<String, AppError> {
    let Some(store) = workspace.open_reader()? else {
        return Ok(String::new());
    };
    use cairn_engine::record::EventKind;
    let mut builds = Vec::new();
    // The shared remote cache (docs/remote-cache.md): where the manifest
    // came from, and where it was uploaded.
    let mut remote = String::new();
    store
        .catalog()
        .partition_events(partition, 1, &mut |event| {
            match &event.kind {
                EventKind::ActionJoined {
                    key: joined,
                    joined_build,
                    ..
                } if joined == key && *joined_build == built_by => {
                    builds.push(event.build.to_string());
                }
                EventKind::ActionCached {
                    key: cached,
                    remote: Some(origin),
                    ..
                } if cached == key && event.build == built_by => {
                    remote.push_str(&format!(
                        "; restored from the remote cache ({}), built by {}",
                        origin.url, origin.producer
                    ));
                }
                EventKind::ActionUploaded {
                    key: uploaded, url, ..
                } if uploaded == key => {
                    remote.push_str(&format!(
                        "; uploaded to the remote cache ({url}) by build {}",
                        event.build
                    ));
                }
                _ => {}
            }
            true
        })?;
    Ok(remote
        + &match builds.len() {
            0 => String::new(),
            1 => format!(
                "; build {} joined the run of build {built_by} (not built twice)",
                builds[0]
            ),
            _ => format!(
                "; builds {} joined the run of build {built_by} (not built twice)",
                builds.join(", ")
            ),
        })
}

/// Explains whether `request` (one ref) is up to date, and which key input
/// changed if not.
pub fn why(workspace: &Workspace, request: &str) -> Result<Explanation, AppError> {
    let partition =
        PartitionRef::parse(request).map_err(|error| AppError::Request(error.to_string()))?;
    workspace
        .graph
        .check_domain(&partition)
        .map_err(AppError::Request)?;
    if let Producer::Source { path, .. } = workspace
        .graph
        .lookup(&partition)
        .map_err(AppError::Request)?
    {
        let text = format!(
            "{partition} is a source partition: cairn observes {} by content and never builds it",
            path.display()
        );
        return Ok(Explanation {
            source_path: Some(path),
            ..Explanation::new(&partition, WhyState::Source, text)
        });
    }
    let plan = workspace.plan(std::slice::from_ref(&partition))?;
    let live = LiveBuild::find(workspace)?;
    workspace.read_context(|context| {
        let verdicts = evaluate_with_keys(context, &plan)?;
        let producer = |partition: &PartitionRef| {
            plan.actions
                .iter()
                .position(|action| action.config.outputs.contains(partition))
        };
        let index = producer(&partition).ok_or_else(|| {
            AppError::Usage(format!("no action of the plan produces {partition}"))
        })?;
        let state = context.catalog.partition(&partition)?;
        let running = match (&live, &verdicts[index]) {
            (_, Verdict::UpToDate { .. }) | (None, _) => None,
            (Some(live), _) => live.running(&partition)?,
        };
        let explanation = match &verdicts[index] {
            _ if running.is_some() => {
                let job = running.unwrap_or_else(|| unreachable!("checked above"));
                Explanation {
                    running: Some(job.clone()),
                    ..Explanation::new(
                        &partition,
                        WhyState::Running,
                        format!("{partition} is being built now: {job}"),
                    )
                }
            }
            Verdict::UpToDate { key, built_by } => {
                let manifest = context.catalog.action(key)?;
                let versions = manifest
                    .as_ref()
                    .map(|m| version_note(workspace, &m.versions))
                    .unwrap_or_default();
                let code = context
                    .code_changes
                    .get(key)
                    .map(|change| format!("; {}", change.describe()))
                    .unwrap_or_default();
                let joined = joined_note(workspace, &partition, key, *built_by)?;
                Explanation {
                    key: Some(*key),
                    built_by: Some(*built_by),
                    ..Explanation::new(
                        &partition,
                        WhyState::UpToDate,
                        format!(
                            "{partition} is up to date: it reuses the manifest of build {built_by} (key {}){versions}{code}{joined}",
                            key.short()
                        ),
                    )
                }
            }
            Verdict::Restore { key } => Explanation {
                key: Some(*key),
                ..Explanation::new(
                    &partition,
                    WhyState::Restore,
                    format!(
                        "{partition} was built under key {} but its data path is missing or altered: the next build restores it from the store without running the job",
                        key.short()
                    ),
                )
            },
            Verdict::Run { key, reason } => Explanation {
                key: *key,
                ..Explanation::new(
                    &partition,
                    WhyState::Rebuild,
                    format!(
                        "{partition} will be rebuilt: {reason}{}",
                        match key {
                            Some(key) => resumable_note(context, key)?,
                            None => String::new(),
                        }
                    ),
                )
            },
            Verdict::Pending { input } => {
                let input_verdict = producer(input).map(|at| &verdicts[at]);
                let waiting = waiting_on(
                    context.catalog,
                    &partition,
                    state.as_ref(),
                    input,
                    input_verdict,
                )?;
                Explanation::new(&partition, WhyState::Rebuild, waiting.sentence)
            }
            Verdict::Blocked { reason } => Explanation::new(
                &partition,
                WhyState::Blocked,
                format!("{partition} cannot be built: {reason}"),
            ),
        };
        Ok(explanation)
    })
}

/// What `status` and `why` both say of a partition whose job waits on its
/// input (a [`Verdict::Pending`]).
struct Waiting {
    /// `status`'s state: failed, missing or stale.
    state: State,
    /// `status`'s reason.
    reason: String,
    /// `why`'s sentence: the same facts, naming the partition.
    sentence: String,
}

/// [`Waiting`] for `partition`, whose job waits on `input`.
/// `input_verdict`: the verdict of the action producing `input`, when it is
/// planned, to say why that input is rebuilt.
fn waiting_on(
    catalog: &dyn Catalog,
    partition: &PartitionRef,
    state: Option<&PartitionState>,
    input: &PartitionRef,
    input_verdict: Option<&Verdict>,
) -> Result<Waiting, AppError> {
    let built = state.is_some_and(|state| state.current.is_some());
    let own_failure = state.and_then(|state| state.failed.clone());
    let upstream_failure = catalog.partition(input)?.and_then(|state| state.failed);
    let word = match (&own_failure, built) {
        (Some(_), _) => State::Failed,
        (None, false) => State::Missing,
        (None, true) => State::Stale,
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
        state: word,
        reason,
        sentence,
    })
}

/// `; built by clean 1.2.0, graph now 1.3.0: still valid (same major)`
/// when versions moved.
fn version_note(workspace: &Workspace, versions: &[(String, String)]) -> String {
    let mut notes = Vec::new();
    for (dataset, built) in versions {
        match workspace
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

/// What a status of `requests` is a function of, files aside: the
/// up-to-date snapshot's fingerprint of command `status` (the graph file's
/// bytes and place, the store, the requests, the environment passed to
/// jobs, the key recipes, cairn's version) and the log's last event (seq,
/// build, time). Rows kept under an equal stamp (`cairn serve`'s grids
/// between two runs, server/src/grids.rs) are current unless a source,
/// code or data file changed meanwhile. The log's last seq comes with it.
pub fn stamp(workspace: &Workspace, requests: &[String]) -> Result<(u64, ContentDigest), AppError> {
    let fingerprint =
        cairn_engine::uptodate::fingerprint(&cairn_engine::uptodate::FingerprintInputs {
            graph: &workspace.graph,
            store_dir: &workspace.store_dir,
            command: "status",
            requested: requests,
            passed_env: &workspace.environment.passed,
        });
    let last = match workspace.open_reader()? {
        Some(store) => store.last_event()?,
        None => None,
    };
    let (seq, build, time_ms) = last.map_or((0, 0, 0), |last| (last.seq, last.build, last.time_ms));
    let mut bytes = fingerprint.0.to_vec();
    for number in [seq, build, time_ms] {
        bytes.extend_from_slice(&number.to_le_bytes());
    }
    Ok((seq, ContentDigest::of(&bytes)))
}
