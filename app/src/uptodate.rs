//! The build's quick path: confirming "nothing to do" from the up-to-date
//! snapshot the last build that found everything current left
//! (engine/src/uptodate.rs: what it holds and why believing it is sound;
//! docs/internals.md, "The up-to-date snapshot"), and taking that snapshot.
//!
//! The build use case (app/src/build.rs) calls this module; this module
//! knows nothing of it (what it finds goes back as a [`Quick`]).

use std::collections::HashMap;
use std::time::Instant;

use cairn_engine::digest::{ActionKey, ContentDigest};
use cairn_engine::exec::{AllCurrent, BuildReport, code_digests};
use cairn_engine::observe::Observer;
use cairn_engine::plan::Plan;
use cairn_engine::ports::EventLog;
use cairn_engine::record::{BuildCounts, EventKind};
use cairn_engine::uptodate::{
    Confirmation, CurrentAction, FingerprintInputs, LastEvent, Observed, Snapshot, SnapshotPatch,
    confirm_paths, fingerprint, graph_allows, merge_entries, output_parents, presume, sorted_codes,
};
use cairn_store::{SnapshotFile, SnapshotReader, SnapshotWrite, Store};

use crate::error::AppError;
use crate::workspace::{StoreHandle, Workspace};

/// The fingerprint of `cairn build REFS` in `project`.
pub fn build_fingerprint(project: &Workspace, requested: &[String]) -> ContentDigest {
    fingerprint(&FingerprintInputs {
        graph: &project.graph,
        store_dir: &project.store_dir,
        command: "build",
        requested,
        passed_env: &project.environment.passed,
    })
}

/// What `cairn build` needs to try the quick path.
pub struct Asked<'a> {
    pub requested: &'a [String],
    pub jobs: usize,
    pub no_wait: bool,
    /// Recorded in the `BuildRequested` of a build the snapshot finishes,
    /// as a build that runs records them.
    pub reason: Option<&'a str>,
    pub submission: Option<&'a cairn_engine::record::Submission>,
}

/// More changed paths than this and a build does not use its snapshot at
/// all (checking which actions they concern is then not worth it).
const CHANGED_AT_MOST: usize = 1024;

/// What the snapshot says about a `cairn build`.
pub enum Quick {
    /// Every action is current: the build is done (recorded).
    Done(Done),
    /// Everything the snapshot holds is as it was but for a few changed
    /// paths, or a failed build since left actions to check: the build
    /// plans, and takes the actions neither concerns as current
    /// (`cairn_engine::uptodate::presume`).
    Assist(Assisted),
    /// No snapshot, or one that cannot be believed: the full path.
    Full,
}

/// A build the snapshot finished: recorded, its store still open.
pub struct Done {
    pub report: BuildReport,
    pub store: StoreHandle,
    /// The snapshot that confirmed it (all but its recorded paths, which
    /// stay in its file): every action current, in the plan's order.
    pub snapshot: Snapshot,
    /// The new stats of touched files, to be written over the snapshot's
    /// file while the store closes; if none, its header already moved on.
    pub patch: Option<(SnapshotFile, SnapshotPatch)>,
}

/// A snapshot confirmed but for its changed paths, with the store whose
/// log it was checked against (held since: nothing can append meanwhile).
pub struct Assisted {
    /// All but its recorded paths, which stay in `file`.
    pub snapshot: Snapshot,
    pub file: SnapshotFile,
    /// The changed paths (`changed`, sorted) and the touched ones.
    pub found: Confirmation,
    /// By plan index, what a failed build since the snapshot left to
    /// check ([`cairn_engine::uptodate::Recheck`]); empty if none ran.
    pub recheck: Vec<u32>,
    /// The kept plan the snapshot names, if it was read already (`None`
    /// inside: missing or damaged).
    pub kept_plan: Option<Option<Plan>>,
    pub store: StoreHandle,
}

/// What a build leaves of the up-to-date snapshot, written while its store
/// closes.
pub enum Leave {
    /// A new snapshot.
    Whole(Snapshot),
    /// What changed of the one read as `file` (`head`: all of it but its
    /// recorded paths), written over it in place.
    Patch {
        head: Snapshot,
        file: SnapshotFile,
        patch: SnapshotPatch,
    },
}

impl Leave {
    /// How the store writes it.
    pub fn write(&self) -> SnapshotWrite<'_> {
        match self {
            Leave::Whole(snapshot) => SnapshotWrite::Whole(snapshot),
            Leave::Patch { head, file, patch } => SnapshotWrite::Patch { file, head, patch },
        }
    }

    /// For `-vv`.
    pub fn describe(&self) -> String {
        match self {
            Leave::Whole(snapshot) => format!("{} paths", snapshot.entries.len()),
            Leave::Patch { patch, .. } => format!(
                "patched: {} entries, {} actions",
                patch.entries.len(),
                patch.actions.len()
            ),
        }
    }
}

/// Finishes the build from the snapshot if it confirms that every action
/// is current: records the build (the same three events a full no-op
/// records, with the stat updates of touched files).
pub fn try_quick(project: &Workspace, asked: &Asked<'_>) -> Result<Quick, AppError> {
    let started = Instant::now();
    let Some((snapshot, mut reader)) = recorded_for(project, asked.requested, "") else {
        return Ok(Quick::Full);
    };
    let unconfirmed = |why: &str| {
        tracing::debug!("up-to-date snapshot not confirmed: {why}");
        Ok(Quick::Full)
    };
    let store = project.open_writer(!asked.no_wait)?;
    let mut updates = Vec::new();
    let recheck = match since_snapshot(&snapshot, &store)? {
        Ok(recheck) => recheck,
        Err(why) => return unconfirmed(why),
    };
    if let Some(why) = code_differs(project, &snapshot, &store, &mut updates) {
        return unconfirmed(why);
    }
    // With actions to check again the build needs the kept plan whatever
    // the paths say: it is read on a thread of its own while they are
    // checked (at 10^6 partitions 1 s of one core, beside a stat pass
    // that does not keep both busy all the time).
    let (confirmed, kept_plan) = std::thread::scope(|scope| {
        let reading = snapshot
            .plan
            .as_ref()
            .filter(|_| !recheck.is_empty())
            .map(|digest| scope.spawn(|| store.read_plan(digest)));
        let confirmed = confirm_paths(
            &snapshot.directories,
            &mut reader,
            asked.jobs,
            CHANGED_AT_MOST,
        );
        let kept_plan = reading.map(|reading| {
            reading
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        (confirmed, kept_plan)
    });
    let Some((found, file)) = finished(reader, confirmed, "") else {
        return Ok(Quick::Full);
    };
    if !found.changed.is_empty() || !recheck.is_empty() {
        match found.changed.first() {
            Some(first) => tracing::debug!(
                "up-to-date snapshot confirmed but for {} changed paths ({first} first; {:.2?})",
                found.changed.len(),
                started.elapsed()
            ),
            None => tracing::debug!(
                "up-to-date snapshot confirmed, no path changed ({:.2?})",
                started.elapsed()
            ),
        }
        return Ok(Quick::Assist(Assisted {
            snapshot,
            file,
            found,
            recheck,
            kept_plan,
            store,
        }));
    }
    let touched = &found.touched;
    tracing::debug!(
        "up-to-date snapshot confirmed: {} paths, {} touched ({:.2?})",
        found.paths,
        touched.len(),
        started.elapsed()
    );

    let catalog = store.catalog();
    let build = catalog.next_build_id()?;
    store.record_build(build);
    let total = snapshot.actions.len() as u64;
    let counts = BuildCounts {
        cached: total,
        ..BuildCounts::default()
    };
    updates.extend(touched.iter().cloned());
    let appended = catalog.append(
        build,
        vec![
            EventKind::BuildRequested {
                requested: asked.requested.to_vec(),
                command: "build".to_owned(),
                reason: asked.reason.map(str::to_owned),
                submission: asked.submission.cloned(),
            },
            EventKind::Planned {
                actions: total,
                sources: snapshot.sources,
            },
            EventKind::BuildFinished {
                counts,
                interrupted: false,
            },
        ],
        updates,
    )?;
    // The next build checks against this one's events (and new stats):
    // the header moved on, or (touched files) their entries written over
    // the snapshot in place while the store closes. Only if this build's three events came right
    // after the ones the snapshot was confirmed against and nothing came
    // since: another build of a held store (docs/architecture.md) may have
    // appended in between (an invalidation, say), which the snapshot must
    // not be moved past. The next build then takes the full path.
    let mut patch = None;
    let contiguous = appended == snapshot.last_event.seq + 3;
    match store.last_event()? {
        Some(last) if !contiguous || last.seq != appended => tracing::debug!(
            "another build appended events beside this one: the up-to-date snapshot stays at event {}",
            snapshot.last_event.seq
        ),
        Some(last) if touched.is_empty() => {
            if let Err(error) = store.advance_snapshot(&file, &last) {
                tracing::warn!("could not update the up-to-date snapshot: {error}");
            }
        }
        Some(last) => {
            let entries = found.touched_entries();
            patch = Some((
                file,
                SnapshotPatch {
                    last_event: last,
                    entries,
                    actions: Vec::new(),
                },
            ));
        }
        None => tracing::warn!("the log is empty after recording a build"),
    }
    let report = BuildReport {
        build,
        counts,
        interrupted: false,
        failures: Vec::new(),
        all_current: None,
        unpresumed: Vec::new(),
    };
    Ok(Quick::Done(Done {
        report,
        store,
        snapshot,
        patch,
    }))
}

/// What checking a snapshot's paths found, and its file, once its body is
/// verified (nothing read is believed before its digest is); `None` if it
/// was not confirmed (`-vv` says why, ending with `for_what`) or is
/// damaged (`-v` says so: a cache that fails its checks is a miss).
fn finished(
    reader: SnapshotReader,
    confirmed: Result<Confirmation, cairn_engine::uptodate::Unconfirmed>,
    for_what: &str,
) -> Option<(Confirmation, SnapshotFile)> {
    let damaged = |why: String| {
        tracing::info!("up-to-date snapshot ignored: {why}");
        None
    };
    match confirmed {
        Ok(found) => match reader.finish() {
            Ok(file) => Some((found, file)),
            Err(why) => damaged(why),
        },
        Err(_) if reader.failed() => reader.finish().err().and_then(damaged),
        Err(why) => {
            tracing::debug!("up-to-date snapshot not confirmed{for_what}: {}", why.0);
            None
        }
    }
}

/// The snapshot recorded for `cairn build REQUESTED`, if there is one to
/// try: the graph can have one, a readable one exists, and its
/// fingerprint is this command's (if not, the debug line says so, ending
/// with `for_what`). Looked at before the store is opened: refs the full
/// path would refuse never match a snapshot, and must leave the store
/// untouched.
fn recorded_for(
    project: &Workspace,
    requested: &[String],
    for_what: &str,
) -> Option<(Snapshot, SnapshotReader)> {
    recorded_for_any(project, &[requested], for_what)
}

/// [`recorded_for`] the `cairn build` of any of `requested`.
fn recorded_for_any(
    project: &Workspace,
    requested: &[&[String]],
    for_what: &str,
) -> Option<(Snapshot, SnapshotReader)> {
    if !graph_allows(&project.graph) {
        return None;
    }
    let found = Store::read_snapshot_in(&project.store_dir)?;
    if !requested
        .iter()
        .any(|requested| found.0.fingerprint == build_fingerprint(project, requested))
    {
        tracing::debug!(
            "up-to-date snapshot not confirmed{for_what}: the graph, the refs asked for or the environment differ"
        );
        return None;
    }
    Some(found)
}

/// What `store`'s log recorded since `snapshot`: nothing (an empty list),
/// or only a failed build that presumed actions from it, whose list of
/// the actions it did not presume is returned
/// ([`cairn_engine::uptodate::Recheck`]); `Err` why else not.
fn since_snapshot(
    snapshot: &Snapshot,
    store: &Store,
) -> Result<Result<Vec<u32>, &'static str>, AppError> {
    let last = store.last_event()?;
    if last == Some(snapshot.last_event) {
        return Ok(Ok(Vec::new()));
    }
    Ok(match store.read_recheck() {
        Some(recheck) if recheck.from == snapshot.last_event && Some(recheck.to) == last => {
            tracing::debug!(
                "the failed build since the up-to-date snapshot left {} actions to check",
                recheck.actions.len()
            );
            Ok(recheck.actions)
        }
        _ => Err("events were recorded since"),
    })
}

/// Why the project's code is not what `snapshot` recorded (a job's code
/// changed), or `None`; the stat-cache updates of code files hashed again
/// go to `updates`.
fn code_differs(
    project: &Workspace,
    snapshot: &Snapshot,
    store: &Store,
    updates: &mut Vec<cairn_engine::observe::StatUpdate>,
) -> Option<&'static str> {
    let observer = Observer::new(store.catalog());
    let codes = code_digests(
        &project.graph,
        snapshot.codes.iter().map(|(job, _)| job.as_str()),
        &observer,
        updates,
    );
    if !codes.is_ok_and(|codes| sorted_codes(&codes) == snapshot.codes) {
        return Some("a job's code changed");
    }
    None
}

/// What the up-to-date snapshot says about `cairn build --dry-run`.
pub enum Dry {
    /// Every action `cairn build REQUESTED` would plan is current and
    /// nothing it observed changed: the dry run lists them from it,
    /// without planning or evaluating.
    Current(Box<Snapshot>),
    /// Current but for a few changed paths, or what a failed build since
    /// left to check: the dry run takes the actions neither concerns as
    /// current, and plans and evaluates the others with their upstream
    /// (app/src/build.rs, `dry_run_presumed`).
    Changed(Box<Confirmed>),
    /// No snapshot, or one that cannot be believed: the full dry run.
    Full,
}

/// What the snapshot says about the dry run of `cairn build REQUESTED`
/// ([`Dry`]). Only reads: the store is opened as a reader, and the new
/// stats of touched files (same content) are checked, not kept.
pub fn try_dry(project: &Workspace, requested: &[String], threads: usize) -> Result<Dry, AppError> {
    let Some(confirmed) = confirmed_for(project, &[requested], threads, " for the dry run")? else {
        return Ok(Dry::Full);
    };
    Ok(
        if confirmed.changed.is_empty() && confirmed.recheck.is_empty() {
            Dry::Current(Box::new(confirmed.snapshot))
        } else {
            Dry::Changed(Box::new(confirmed))
        },
    )
}

/// A snapshot [`confirmed_for`] found current but for its `changed` paths.
pub struct Confirmed {
    /// All but its recorded paths.
    pub snapshot: Snapshot,
    /// The paths that changed (sorted), at most the number asked for.
    pub changed: Vec<String>,
    /// What a failed build since the snapshot left to check (by plan
    /// index; empty if none ran).
    pub recheck: Vec<u32>,
    /// The store it was checked against, opened for reading.
    pub store: StoreHandle,
}

impl Confirmed {
    /// The kept plan the snapshot names, and by plan index the snapshot's
    /// key of every action that a build would take as current from it
    /// ([`presume`]: none that the changed paths or the actions a failed
    /// build left concern, nor anything downstream). `None` without a kept
    /// plan or where the two disagree: the caller takes the full path.
    pub fn presume(self, data_root: &std::path::Path) -> Option<Presumed> {
        let Confirmed {
            snapshot,
            changed,
            recheck,
            store,
        } = self;
        let plan = snapshot
            .plan
            .as_ref()
            .and_then(|digest| store.read_plan(digest))?;
        drop(store);
        let keys = presume(&snapshot, &changed, &recheck, &plan, data_root)?;
        // `presume` checked that the snapshot's actions are the plan's, one
        // for each index.
        let mut built_by = vec![0; plan.actions.len()];
        for current in &snapshot.actions {
            built_by[current.index as usize] = current.built_by;
        }
        Some(Presumed {
            plan,
            keys,
            built_by,
            changed: changed.len(),
            recheck: recheck.len(),
        })
    }
}

/// What [`Confirmed::presume`] found.
pub struct Presumed {
    /// The kept plan.
    pub plan: Plan,
    /// By plan index, the key of each action taken as current; `None` for
    /// the others.
    pub keys: Vec<Option<ActionKey>>,
    /// By plan index, the build whose result the snapshot says each action
    /// reuses (what a dry run reports of a presumed one).
    pub built_by: Vec<u64>,
    /// How many paths changed, and how many actions a failed build left.
    pub changed: usize,
    pub recheck: usize,
}

/// By index of `own` (a plan of some of the partitions the kept plan
/// `kept` holds, with their upstream), its action's index in `kept`, if
/// every action of `own` is in `kept` with the same job and config: the
/// same key recipe. A configure may answer differently for another set of
/// refs (docs/job-protocol.md: it may read its request), and then a verdict
/// of `own` is not the one the build of `kept` would find: `None`, and the
/// caller takes the full path.
pub fn agrees_with_kept(kept: &Plan, own: &Plan) -> Option<Vec<usize>> {
    let mut wanted: HashMap<&str, usize> = HashMap::with_capacity(own.actions.len());
    for (index, action) in own.actions.iter().enumerate() {
        wanted.insert(action.config.outputs.first()?.as_str(), index);
    }
    let mut found: Vec<Option<usize>> = vec![None; own.actions.len()];
    for (index, action) in kept.actions.iter().enumerate() {
        if let Some(&at) = action
            .config
            .outputs
            .first()
            .and_then(|first| wanted.get(first.as_str()))
        {
            found[at] = Some(index);
        }
    }
    own.actions
        .iter()
        .zip(found)
        .map(|(action, index)| {
            let index = index?;
            let same = kept.actions[index].job == action.job
                && kept.actions[index].config == action.config;
            same.then_some(index)
        })
        .collect()
}

/// `refs` (the first outputs of the actions a change concerns) planned
/// again with their upstream, and by index of that plan its action's
/// index in `kept` ([`agrees_with_kept`]); `None`, said at `-vv` after
/// `for_what`, where they disagree (the caller takes the full path).
pub fn plan_agreeing(
    workspace: &Workspace,
    kept: &Plan,
    refs: &[cairn_engine::refs::PartitionRef],
    for_what: &str,
) -> Result<Option<(Plan, Vec<usize>)>, AppError> {
    let own = workspace.plan(refs)?;
    let Some(at) = agrees_with_kept(kept, &own) else {
        tracing::debug!(
            "{for_what}: the concerned actions planned again differ from the kept plan"
        );
        return Ok(None);
    };
    Ok(Some((own, at)))
}

/// The snapshot of `cairn build` of any of `requested`, if it confirms, as
/// [`try_dry`] does, that every action that build would plan is current
/// (but for what a failed build since left to check) and that nothing it
/// observed changed but for at most [`CHANGED_AT_MOST`] paths: read-only
/// (`-vv`'s lines end with `for_what`).
pub fn confirmed_for(
    project: &Workspace,
    requested: &[&[String]],
    threads: usize,
    for_what: &str,
) -> Result<Option<Confirmed>, AppError> {
    let started = Instant::now();
    let Some((snapshot, mut reader)) = recorded_for_any(project, requested, for_what) else {
        return Ok(None);
    };
    let unconfirmed = |why: &str| {
        tracing::debug!("up-to-date snapshot not confirmed{for_what}: {why}");
        Ok(None)
    };
    let Some(store) = project.open_reader()? else {
        return unconfirmed("no store");
    };
    let recheck = match since_snapshot(&snapshot, &store)? {
        Ok(recheck) => recheck,
        Err(why) => return unconfirmed(why),
    };
    if let Some(why) = code_differs(project, &snapshot, &store, &mut Vec::new()) {
        return unconfirmed(why);
    }
    tracing::debug!(
        "up-to-date snapshot read: {} actions, checking its paths{for_what} ({:.2?})",
        snapshot.actions.len(),
        started.elapsed()
    );
    let confirmed = confirm_paths(&snapshot.directories, &mut reader, threads, CHANGED_AT_MOST);
    let Some((found, _)) = finished(reader, confirmed, for_what) else {
        return Ok(None);
    };
    tracing::debug!(
        "up-to-date snapshot confirmed{for_what}: {} paths, {} changed ({:.2?})",
        found.paths,
        found.changed.len(),
        started.elapsed()
    );
    Ok(Some(Confirmed {
        snapshot,
        changed: found.changed,
        recheck,
        store,
    }))
}

/// The snapshot a build presumed actions from, as it read it: all but
/// its recorded paths (`head`), its file, and what its check found.
pub struct Base {
    pub head: Snapshot,
    pub file: SnapshotFile,
    pub found: Confirmation,
}

/// Takes the snapshot of a build that ended with every action current (see
/// [`cairn_engine::exec::BuildReport::all_current`]), from what its witness
/// observed, over the snapshot it presumed actions from (`base`) if it
/// did; the caller writes it. A failure to take or write it only costs the
/// next build its quick path.
pub fn record(
    project: &Workspace,
    store: &Store,
    plan: &Plan,
    requested: &[String],
    all_current: AllCurrent,
    entries: Vec<Observed>,
    base: Option<Base>,
) -> Option<Leave> {
    let started = Instant::now();
    let last_event = match store.last_event() {
        Ok(Some(last)) => last,
        Ok(None) => return None,
        Err(error) => {
            tracing::warn!("no up-to-date snapshot: {error}");
            return None;
        }
    };
    let leave = match base {
        // The same plan (the base was confirmed against it): its actions,
        // with the keys of this build, and its entries where this build
        // did not observe them again.
        Some(base) => update(store, plan, last_event, all_current, entries, base)?,
        None => {
            let made = new_snapshot(
                project,
                store,
                plan,
                requested,
                last_event,
                all_current,
                entries,
            );
            let Some(snapshot) = made else {
                tracing::debug!("no up-to-date snapshot: an action reuses no known build");
                return None;
            };
            Leave::Whole(snapshot)
        }
    };
    tracing::debug!(
        "took the up-to-date snapshot: {} ({:.2?})",
        leave.describe(),
        started.elapsed()
    );
    Some(leave)
}

/// The snapshot `base` updated by a build that presumed actions from it:
/// its actions with this build's keys, its recorded paths with the touched
/// ones' new stats and this build's observations over them (every changed
/// path must have been observed again). Written over its file in place
/// when every path this build observed is one it records (an input
/// edited, outputs rewritten under the same names): memory and time grow
/// with what changed, not with the graph. A path recorded anew (a file
/// added to an output) means the whole snapshot, read again and written.
fn update(
    store: &Store,
    plan: &Plan,
    last_event: LastEvent,
    all_current: AllCurrent,
    entries: Vec<Observed>,
    base: Base,
) -> Option<Leave> {
    let Base {
        mut head,
        file,
        found,
    } = base;
    let observed_again = |changed: &String| {
        entries
            .binary_search_by(|(key, _)| key.as_str().cmp(changed))
            .is_ok()
    };
    if !found.changed.iter().all(observed_again) {
        tracing::debug!("no up-to-date snapshot: a changed path was not observed again");
        return None;
    }
    let keys = keys_by_index(&all_current, plan);
    let mut actions = Vec::new();
    for (position, action) in head.actions.iter().enumerate() {
        let (key, built_by) = keys.get(action.index as usize).copied().flatten()?;
        // Presumed current (no manifest read): the result of the build
        // the base snapshot names.
        let built_by = built_by.unwrap_or(action.built_by);
        if key != action.key || built_by != action.built_by {
            actions.push((position, key, built_by));
        }
    }
    let keys: Vec<&str> = entries.iter().map(|(key, _)| key.as_str()).collect();
    let places = file
        .find(&keys)
        .inspect_err(|error| tracing::debug!("the snapshot's paths cannot be read again: {error}"))
        .ok();
    let patchable = head.plan.is_some() && all_current.codes == head.codes;
    if let Some(places) = places.filter(|places| patchable && places.iter().all(Option::is_some)) {
        let mut patched = found.touched_entries();
        patched.extend(
            places
                .into_iter()
                .flatten()
                .zip(&entries)
                .map(|((at, _), (_, seen))| (at, *seen)),
        );
        return Some(Leave::Patch {
            head,
            file,
            patch: SnapshotPatch {
                last_event,
                entries: patched,
                actions,
            },
        });
    }
    tracing::debug!("the up-to-date snapshot is written anew: a path recorded anew");
    let Some(mut whole) = file.read_whole() else {
        tracing::debug!("no up-to-date snapshot: the one presumed from cannot be read again");
        return None;
    };
    whole.apply(&found.touched);
    let entries = merge_entries(std::mem::take(&mut whole.entries), &found.changed, entries)?;
    for (position, key, built_by) in actions {
        let action = &mut head.actions[position];
        action.key = key;
        action.built_by = built_by;
    }
    Some(Leave::Whole(Snapshot {
        last_event,
        codes: all_current.codes,
        entries,
        plan: head.plan.take().or_else(|| keep_plan(store, plan)),
        ..head
    }))
}

/// Each plan action's key and the build whose result it reuses, by plan
/// index (`None` for an action not found current).
fn keys_by_index(
    all_current: &AllCurrent,
    plan: &Plan,
) -> Vec<Option<(cairn_engine::digest::ActionKey, Option<u64>)>> {
    let mut keys = vec![None; plan.actions.len()];
    for &(index, key, built_by) in &all_current.keys {
        keys[index] = Some((key, built_by));
    }
    keys
}

/// Keeps `plan` beside the snapshot: its digest, or `None` if it could not
/// be written (the next build with changed paths plans again).
fn keep_plan(store: &Store, plan: &Plan) -> Option<ContentDigest> {
    store
        .write_plan(plan)
        .inspect_err(|error| tracing::warn!("could not keep the plan: {error}"))
        .ok()
}

/// A snapshot of `plan` from scratch, its plan kept beside it (`None` if
/// an action's result is of no known build).
fn new_snapshot(
    project: &Workspace,
    store: &Store,
    plan: &Plan,
    requested: &[String],
    last_event: LastEvent,
    all_current: AllCurrent,
    entries: Vec<Observed>,
) -> Option<Snapshot> {
    let mut jobs: Vec<String> = Vec::new();
    let mut job_index = std::collections::HashMap::new();
    let keys = keys_by_index(&all_current, plan);
    // In the plan's order, the order a dry run lists them in.
    let actions = plan
        .order
        .iter()
        .map(|&index| {
            let action = &plan.actions[index];
            let job = *job_index.entry(action.job.clone()).or_insert_with(|| {
                jobs.push(action.job.to_string());
                (jobs.len() - 1) as u32
            });
            // Only a build that presumed actions from a snapshot (not this
            // path) finds one current without reading its manifest.
            let (key, built_by) = keys[index]?;
            Some(CurrentAction::of(index, job, (key, built_by?), action))
        })
        .collect::<Option<_>>()?;
    Some(Snapshot {
        fingerprint: build_fingerprint(project, requested),
        last_event,
        sources: plan.sources.len() as u64,
        codes: all_current.codes,
        jobs,
        actions,
        directories: output_parents(
            &project.data_root,
            plan.actions
                .iter()
                .flat_map(|action| &action.config.outputs),
        ),
        entries,
        plan: keep_plan(store, plan),
    })
}
