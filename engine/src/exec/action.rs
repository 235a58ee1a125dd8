//! The work of one action on a worker thread: compute its key, decide whether
//! it is up to date, restore it from the blob store, or run its job, ingest
//! the outputs and materialize them — returning the events to record.
//!
//! Invariants: nothing from a failed run is stored or materialized; outputs
//! are placed at their data paths only after every file is in the blob store;
//! a materialized partition holds only regular files and directories.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::digest::{ActionKey, ContentDigest};
use crate::key::{KeyInputs, OutputIdentity, action_key};
use crate::observe::{Observer, StatUpdate};
use crate::plan::PlannedAction;
use crate::ports::StoreError;
use crate::record::{CommandRecord, EventKind, MODE_BITS, Manifest, ProgramRecord};
use crate::refs::PartitionRef;

pub use super::context::{Context, Decision, Finished, Outcome, RealDirs, ResolvedInput, now_ms};
use super::context::{NEVER_BUILT, record_stats};
use super::run::{Emit, describe};
pub use super::staging::Leftover;

/// How a built manifest is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reuse {
    /// Every output's current materialization is already this key.
    Current,
    /// The data paths hold it, but some partition's current materialization
    /// is another key (switching a version back).
    InPlace,
    /// Outputs were rewritten from the store.
    Restored,
}

impl Context<'_> {
    pub fn data_path(&self, partition: &PartitionRef) -> PathBuf {
        self.data_root.join(partition.relative_path())
    }

    /// The first directory between the data root and `target` that is not a
    /// real directory (a symbolic link, a file): writing through it could
    /// land outside the data root. The data root itself may be a link.
    fn unsafe_parent(&self, target: &Path) -> Option<PathBuf> {
        let relative = target.strip_prefix(&self.data_root).ok()?;
        let mut path = self.data_root.clone();
        let mut components: Vec<_> = relative.components().collect();
        components.pop();
        for component in components {
            path.push(component);
            if self.real_dirs.contains(&path) {
                continue;
            }
            match fs::symlink_metadata(&path) {
                Ok(metadata) if metadata.is_dir() => self.real_dirs.insert(&path),
                Ok(_) => return Some(path),
                Err(_) => return None,
            }
        }
        None
    }

    /// Creates the directories between the data root and `target`, one by
    /// one and without following links; refuses a link or file on the way.
    fn prepare_parents(&self, target: &Path) -> Result<(), String> {
        let relative = target.strip_prefix(&self.data_root).map_err(|_| {
            format!(
                "{} is outside the data root {}",
                target.display(),
                self.data_root.display()
            )
        })?;
        fs::create_dir_all(&self.data_root)
            .map_err(|error| format!("{}: {error}", self.data_root.display()))?;
        let mut path = self.data_root.clone();
        let mut components: Vec<_> = relative.components().collect();
        components.pop();
        for component in components {
            path.push(component);
            match fs::symlink_metadata(&path) {
                Ok(metadata) if metadata.is_dir() => {}
                Ok(_) => {
                    return Err(format!(
                        "{} is not a directory (a symbolic link or file): cairn never writes outside the data root through it; remove it",
                        path.display()
                    ));
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    match fs::create_dir(&path) {
                        Ok(()) => {}
                        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(error) => return Err(format!("{}: {error}", path.display())),
                    }
                }
                Err(error) => return Err(format!("{}: {error}", path.display())),
            }
        }
        Ok(())
    }

    /// The action key from the resolved inputs (docs/internals.md, "Action keys").
    pub fn key(
        &self,
        action: &PlannedAction,
        inputs: &[ResolvedInput],
        code: Option<ContentDigest>,
    ) -> ActionKey {
        let job = &self.graph.jobs[&*action.job];
        let mut output_datasets: BTreeMap<&str, OutputIdentity> = BTreeMap::new();
        for output in &action.config.outputs {
            let identity = match self
                .graph
                .datasets
                .get(output.dataset())
                .and_then(|d| d.version.as_ref())
            {
                Some(version) => OutputIdentity::Major(version.major),
                None => OutputIdentity::Code(code),
            };
            output_datasets.insert(output.dataset(), identity);
        }
        let output_datasets: Vec<(String, OutputIdentity)> = output_datasets
            .into_iter()
            .map(|(name, identity)| (name.to_owned(), identity))
            .collect();
        // In the order the job sees them (`CAIRN_INPUT_<i>`), repeats kept:
        // the key covers everything the job can observe (key.rs, v2).
        let input_digests: Vec<(PartitionRef, ContentDigest)> = inputs
            .iter()
            .map(|input| (input.partition.clone(), input.digest))
            .collect();
        let program = self.program(job);
        action_key(&KeyInputs {
            job: &job.name,
            run: &job.run,
            program: &program,
            config: &action.config,
            passed_env: self.keyed_env(),
            output_datasets: &output_datasets,
            inputs: &input_digests,
        })
    }

    /// What `job`'s `run[0]` resolves to on the jobs' `PATH`.
    pub fn program(&self, job: &crate::graph::Job) -> std::sync::Arc<ProgramRecord> {
        let path = self
            .environment
            .passed
            .iter()
            .find(|(name, _)| name == "PATH")
            .map(|(_, value)| value.as_str());
        let program = job.run.first().map_or("", String::as_str);
        self.programs
            .record(self.graph, program, path, self.catalog)
    }

    /// The allow-listed variables that enter keys (`PATH` only if listed).
    pub fn keyed_env(&self) -> &[(String, String)] {
        self.programs
            .keyed_env(self.graph, &self.environment.passed)
    }

    /// The command of `action` as its key sees it, for its manifest.
    pub fn command_record(&self, action: &PlannedAction) -> CommandRecord {
        let job = &self.graph.jobs[&*action.job];
        CommandRecord {
            run: job.run.clone(),
            args: action.config.args.clone(),
            env: action
                .config
                .env
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            passed_env: self.keyed_env().to_vec(),
            program: (*self.program(job)).clone(),
        }
    }

    /// Decides what to do with `key` without changing anything.
    pub fn decide(
        &self,
        action: &PlannedAction,
        key: &ActionKey,
        inputs: &[ResolvedInput],
        code: Option<ContentDigest>,
        updates: &mut Vec<StatUpdate>,
    ) -> Result<Decision, String> {
        let store_error = |error: StoreError| error.to_string();
        let mut current = true;
        for output in &action.config.outputs {
            let state = self.catalog.partition(output).map_err(store_error)?;
            current &= state
                .as_ref()
                .and_then(|state| state.current.as_ref())
                .is_some_and(|materialization| materialization.key == *key);
            if let Some(state) = state
                && let Some(invalidation) = state.invalidated
            {
                return Ok(Decision::Run {
                    reason: format!(
                        "{output} was invalidated{} at {}: {}",
                        invalidation
                            .by
                            .map(|by| format!(" by {by}"))
                            .unwrap_or_default(),
                        crate::date::format_time_ms(invalidation.time_ms),
                        invalidation.reason
                    ),
                });
            }
        }
        let Some(manifest) = self.catalog.action(key).map_err(store_error)? else {
            return Ok(Decision::Run {
                reason: self.explain_miss(action, inputs, code)?,
            });
        };
        if let Some(change) = crate::codechange::unacknowledged(
            self.graph,
            &action.job,
            &action.config.outputs,
            &manifest,
            code,
        ) {
            if change.mode == crate::graph::OnCodeChange::Rebuild {
                return Ok(Decision::Run {
                    reason: change.rebuilt(),
                });
            }
            self.code_changes
                .note(*key, change, action.config.outputs.len());
        }
        let observer = Observer::new(self.catalog);
        let mut stale = Vec::new();
        for (index, output) in manifest.outputs.iter().enumerate() {
            let path = self.data_path(&output.partition);
            if self.unsafe_parent(&path).is_some() {
                // Never read through a link out of the data root; rewriting
                // the partition reports the problem.
                stale.push(index);
                continue;
            }
            let current = observer.partition_expecting(&path, &output.files, updates);
            match current {
                Ok(Some((digest, _))) if digest == output.digest => {}
                // Missing, altered, or holding something we refuse: rewrite it.
                _ => stale.push(index),
            }
        }
        let manifest = Box::new(manifest);
        if stale.is_empty() {
            Ok(Decision::UpToDate { manifest, current })
        } else {
            Ok(Decision::Restore {
                manifest,
                outputs: stale,
            })
        }
    }

    /// Why a key has no result: compares with the last materialization of
    /// the action's first output.
    fn explain_miss(
        &self,
        action: &PlannedAction,
        inputs: &[ResolvedInput],
        code: Option<ContentDigest>,
    ) -> Result<String, String> {
        let first = &action.config.outputs[0];
        let state = self
            .catalog
            .partition(first)
            .map_err(|error| error.to_string())?;
        let Some(current) = state.and_then(|state| state.current) else {
            return Ok(NEVER_BUILT.to_owned());
        };
        let Some(previous) = self
            .catalog
            .action(&current.key)
            .map_err(|error| error.to_string())?
        else {
            return Ok("no record of the last build of this partition".to_owned());
        };
        for input in inputs {
            match previous
                .inputs
                .iter()
                .find(|old| old.partition == input.partition)
            {
                None => return Ok(format!("new input {}", input.partition)),
                Some(old) if old.digest != input.digest => {
                    return Ok(format!(
                        "input {} content changed from {} to {}",
                        input.partition,
                        old.digest.short(),
                        input.digest.short()
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(old) = previous
            .inputs
            .iter()
            .find(|old| !inputs.iter().any(|input| input.partition == old.partition))
        {
            return Ok(format!("input {} is no longer used", old.partition));
        }
        // The same refs, by content, but at other positions (or repeated
        // another number of times): the job sees them by position.
        if let Some(change) = positions_changed(
            "input",
            previous.inputs.iter().map(|old| &old.partition),
            inputs.iter().map(|input| &input.partition),
        ) {
            return Ok(change);
        }
        if let Some(change) = positions_changed(
            "output",
            previous.outputs.iter().map(|old| &old.partition),
            action.config.outputs.iter(),
        ) {
            return Ok(change);
        }
        for (dataset, old_version) in &previous.versions {
            if let Some(version) = self
                .graph
                .datasets
                .get(dataset)
                .and_then(|d| d.version.as_ref())
                && let Ok(old) = semver::Version::parse(old_version)
                && old.major != version.major
            {
                return Ok(format!(
                    "dataset {dataset} major version changed: {} -> {} (built by {old_version}, graph now {version})",
                    old.major, version.major
                ));
            }
        }
        for output in &action.config.outputs {
            let now_versioned = self
                .graph
                .datasets
                .get(output.dataset())
                .and_then(|d| d.version.as_ref());
            let was_versioned = previous
                .versions
                .iter()
                .find(|(dataset, _)| dataset == output.dataset());
            match (was_versioned, now_versioned) {
                (Some((_, old)), None) => {
                    return Ok(format!(
                        "dataset {} is no longer versioned (was {old})",
                        output.dataset()
                    ));
                }
                (None, Some(version)) => {
                    return Ok(format!(
                        "dataset {} is now versioned ({version})",
                        output.dataset()
                    ));
                }
                _ => {}
            }
        }
        if previous.code_digest != code {
            let short = |digest: Option<ContentDigest>| {
                digest.map_or_else(|| "none".to_owned(), |d| d.short())
            };
            return Ok(format!(
                "the job's code digest changed from {} to {} (dataset {} has no version)",
                short(previous.code_digest),
                short(code),
                first.dataset()
            ));
        }
        if let Some(old) = &previous.command
            && let Some(change) = command_changed(old, &self.command_record(action))
        {
            return Ok(change);
        }
        if previous.job != *action.job {
            return Ok(format!(
                "it was built by job {}, now job {}",
                previous.job, action.job
            ));
        }
        Ok("the job's command, arguments or environment changed".to_owned())
    }

    /// Runs the whole action: decide, then reuse, restore or execute.
    pub fn perform(
        &self,
        action: &PlannedAction,
        inputs: &[ResolvedInput],
        code: Option<ContentDigest>,
        emit: Emit<'_>,
    ) -> Finished {
        let key = self.key(action, inputs, code);
        // The stat-cache entries of a program hashed for a key, if this
        // action is the first to take them.
        let mut updates = self.programs.take_updates();
        let decision = match self.decide(action, &key, inputs, code, &mut updates) {
            Ok(decision) => decision,
            Err(error) => return self.failed(action, key, error, None, updates),
        };
        if !matches!(decision, Decision::Run { .. })
            && let Some(refused) = self.refused(&key)
        {
            let error = format!(
                "job {} ({}): {refused}",
                action.job,
                describe(&action.config.outputs)
            );
            return self.failed(action, key, error, None, updates);
        }
        match decision {
            Decision::UpToDate { manifest, current } => {
                let reuse = if current {
                    Reuse::Current
                } else {
                    Reuse::InPlace
                };
                self.reuse(action, key, &manifest, reuse, updates)
            }
            Decision::Restore { manifest, outputs } => {
                let restore = |mut updates: Vec<StatUpdate>| match self.restore(
                    &manifest,
                    &outputs,
                    &mut updates,
                ) {
                    Ok(()) => self.reuse(action, key, &manifest, Reuse::Restored, updates),
                    Err(error) => {
                        tracing::warn!("{error}; running the job instead");
                        let reason = format!("restoring from the store failed: {error}");
                        self.execute(action, key, inputs, code, &reason, emit, updates)
                    }
                };
                match self.in_flight {
                    None => restore(updates),
                    // Two builds restoring one key would write the same
                    // partitions: once, the other joins.
                    Some(in_flight) => {
                        self.run_shared(in_flight, action, key, false, emit, updates, restore)
                    }
                }
            }
            Decision::Run { reason } => {
                let run = |updates: Vec<StatUpdate>| {
                    if let Some(remote) = self.remote
                        && let Some(mut finished) =
                            self.restore_from_remote(remote, action, key, inputs, emit)
                    {
                        finished.updates.extend(updates);
                        return finished;
                    }
                    self.execute(action, key, inputs, code, &reason, emit, updates)
                };
                match self.in_flight {
                    None => run(updates),
                    Some(in_flight) => {
                        self.run_shared(in_flight, action, key, true, emit, updates, run)
                    }
                }
            }
        }
    }

    /// Runs (or restores) the action once across the builds of the process
    /// (exec/inflight.rs): claims its key, then does `work` (in a job slot
    /// when `slot`) or waits on the build that claimed it first.
    #[expect(
        clippy::too_many_arguments,
        reason = "the pieces of one action, passed once"
    )]
    fn run_shared(
        &self,
        in_flight: &super::inflight::InFlight,
        action: &PlannedAction,
        key: ActionKey,
        slot: bool,
        emit: Emit<'_>,
        updates: Vec<StatUpdate>,
        work: impl FnOnce(Vec<StatUpdate>) -> Finished,
    ) -> Finished {
        use super::inflight::{Claim, RunResult};
        let stop = || self.children.is_interrupted();
        let mut work = Some(work);
        loop {
            match in_flight.claim(key, self.build) {
                Claim::Run(running) => {
                    // Interrupted while waiting for a slot: the runner
                    // refuses to start the job, and says so.
                    let _slot = if slot { in_flight.slot(&stop) } else { None };
                    let work = work.take().expect("a claim to run is the loop's last");
                    let finished = work(updates);
                    let result = match (&finished.outcome, &finished.outputs) {
                        (_, Some(outputs)) => RunResult::Succeeded {
                            outputs: outputs.clone(),
                        },
                        _ if self.children.is_interrupted() => RunResult::Interrupted,
                        (Outcome::Failed { error, stderr_tail }, None) => {
                            let (exit_code, stdout, stderr) = finished
                                .events
                                .iter()
                                .find_map(|event| match event {
                                    EventKind::ActionFailed {
                                        exit_code,
                                        stdout,
                                        stderr,
                                        ..
                                    } => Some((*exit_code, *stdout, *stderr)),
                                    _ => None,
                                })
                                .unwrap_or_default();
                            RunResult::Failed {
                                error: error.clone(),
                                exit_code,
                                stdout,
                                stderr,
                                stderr_tail: stderr_tail.clone(),
                            }
                        }
                        _ => RunResult::Interrupted,
                    };
                    running.finish(result);
                    return finished;
                }
                Claim::Join(joining) => {
                    let build = joining.build();
                    emit(EventKind::ActionJoined {
                        key,
                        job: action.job.to_string(),
                        outputs: action.config.outputs.to_vec(),
                        joined_build: build,
                    });
                    match joining.wait(&stop) {
                        None => {
                            let mut skipped =
                                super::skipped(action, "the build was interrupted".to_owned());
                            skipped.updates = updates;
                            return skipped;
                        }
                        Some(RunResult::Succeeded { outputs }) => {
                            return Finished {
                                key: Some(key),
                                events: Vec::new(),
                                updates,
                                outcome: Outcome::Joined { build },
                                outputs: Some(outputs),
                                built_by: Some(build),
                                leftovers: Vec::new(),
                            };
                        }
                        Some(RunResult::Failed {
                            error,
                            exit_code,
                            stdout,
                            stderr,
                            stderr_tail,
                        }) => {
                            let error =
                                format!("joined the run of build {build}, which failed: {error}");
                            return Finished {
                                key: Some(key),
                                events: vec![EventKind::ActionFailed {
                                    key: Some(key),
                                    job: action.job.to_string(),
                                    outputs: action.config.outputs.to_vec(),
                                    error: error.clone(),
                                    exit_code,
                                    stdout,
                                    stderr,
                                }],
                                updates,
                                outcome: Outcome::Failed { error, stderr_tail },
                                outputs: None,
                                built_by: None,
                                leftovers: Vec::new(),
                            };
                        }
                        // The build running it was interrupted first: run
                        // it here.
                        Some(RunResult::Interrupted) => continue,
                    }
                }
            }
        }
    }

    /// The outcome of an action whose outputs are current and intact: the
    /// reuse [`Context::perform`] would report, with nothing to run,
    /// restore or record. `None` when anything else applies, or when
    /// deciding failed: `perform` then decides again and acts on it.
    pub fn finish_if_current(
        &self,
        action: &PlannedAction,
        inputs: &[ResolvedInput],
        code: Option<ContentDigest>,
    ) -> Option<Finished> {
        let key = self.key(action, inputs, code);
        let mut updates = Vec::new();
        match self.decide(action, &key, inputs, code, &mut updates) {
            Ok(Decision::UpToDate {
                manifest,
                current: true,
            }) if self.refused(&key).is_none() => {
                updates.append(&mut self.programs.take_updates());
                Some(self.reuse(action, key, &manifest, Reuse::Current, updates))
            }
            _ => None,
        }
    }

    /// Why reusing `key` is refused: its job's code changed under a kept
    /// versioned dataset with `on_code_change = "error"` (noted by
    /// [`Context::decide`]).
    fn refused(&self, key: &ActionKey) -> Option<String> {
        self.code_changes
            .get(key)
            .filter(|change| change.mode == crate::graph::OnCodeChange::Error)
            .map(|change| change.refused())
    }

    fn reuse(
        &self,
        action: &PlannedAction,
        key: ActionKey,
        manifest: &Manifest,
        reuse: Reuse,
        updates: Vec<StatUpdate>,
    ) -> Finished {
        let restored = reuse == Reuse::Restored;
        let mut materialized = Vec::new();
        // Already current (decide read the partition states): nothing to
        // look up, nothing to record.
        if reuse != Reuse::Current {
            for output in &manifest.outputs {
                let current = self
                    .catalog
                    .partition(&output.partition)
                    .ok()
                    .flatten()
                    .and_then(|state| state.current);
                if restored || current.is_none_or(|current| current.key != key) {
                    materialized.push(EventKind::PartitionMaterialized {
                        partition: output.partition.clone(),
                        digest: output.digest,
                        key,
                    });
                }
            }
        }
        // An action whose outputs are already current, untouched, is a
        // non-event: the build's `BuildFinished` counts it. Logging it would
        // grow the log by every action of every no-op build (design §11:
        // nothing on the hot path the log does not need). A reuse that
        // changes something (restored data, another manifest made current)
        // is a fact, and is recorded.
        let events = if materialized.is_empty() {
            Vec::new()
        } else {
            let mut events = vec![EventKind::ActionCached {
                key,
                job: action.job.to_string(),
                outputs: action.config.outputs.to_vec(),
                built_by: manifest.build,
                restored,
                remote: None,
            }];
            events.append(&mut materialized);
            events
        };
        Finished {
            key: Some(key),
            events,
            updates,
            outcome: Outcome::Cached { restored },
            outputs: Some(
                manifest
                    .outputs
                    .iter()
                    .map(|output| output.digest)
                    .collect(),
            ),
            built_by: Some(manifest.build),
            leftovers: Vec::new(),
        }
    }

    /// Whether running `action` under `key` asks the remote cache first:
    /// the local store has no result for the key, and none of its outputs
    /// was invalidated. What the build's lookahead asks ahead for
    /// (exec/mod.rs).
    pub fn asks_remote(&self, action: &PlannedAction, key: &ActionKey) -> bool {
        matches!(self.catalog.action(key), Ok(None))
            && !action.config.outputs.iter().any(|output| {
                self.catalog
                    .partition(output)
                    .ok()
                    .flatten()
                    .is_some_and(|state| state.invalidated.is_some())
            })
    }

    /// Looks the action up in the remote cache when the local store has no
    /// result for its key (not when an output was invalidated or its code
    /// changed under `on_code_change = "rebuild"`: those run). `None`: run
    /// the job (a `RemoteRefused` event is emitted if an entry was
    /// refused). `Some`: restored, the outputs placed as a local restore
    /// places them.
    fn restore_from_remote(
        &self,
        remote: &crate::remote::Remote,
        action: &PlannedAction,
        key: ActionKey,
        inputs: &[ResolvedInput],
        emit: Emit<'_>,
    ) -> Option<Finished> {
        if !self.asks_remote(action, &key) {
            return None;
        }
        let inputs: Vec<_> = inputs
            .iter()
            .map(|input| (&input.partition, input.digest))
            .collect();
        match remote.lookup(self.blobs, action, &key, &inputs, self.build) {
            crate::remote::Lookup::Miss => None,
            crate::remote::Lookup::Refused(reason) => {
                emit(EventKind::RemoteRefused {
                    key,
                    job: action.job.to_string(),
                    outputs: action.config.outputs.to_vec(),
                    url: remote.url().to_owned(),
                    reason,
                });
                None
            }
            crate::remote::Lookup::Hit { manifest, producer } => {
                let mut updates = Vec::new();
                let all: Vec<usize> = (0..manifest.outputs.len()).collect();
                if let Err(error) = self.restore(&manifest, &all, &mut updates) {
                    tracing::warn!("{error}; running the job instead");
                    return None;
                }
                let mut events = vec![EventKind::ActionCached {
                    key,
                    job: action.job.to_string(),
                    outputs: action.config.outputs.to_vec(),
                    built_by: manifest.build,
                    restored: true,
                    remote: Some(Box::new(crate::record::RemoteOrigin {
                        url: remote.url().to_owned(),
                        producer,
                        manifest: (*manifest).clone(),
                    })),
                }];
                events.extend(manifest.outputs.iter().map(|output| {
                    EventKind::PartitionMaterialized {
                        partition: output.partition.clone(),
                        digest: output.digest,
                        key,
                    }
                }));
                Some(Finished {
                    key: Some(key),
                    events,
                    updates,
                    outcome: Outcome::Cached { restored: true },
                    outputs: Some(
                        manifest
                            .outputs
                            .iter()
                            .map(|output| output.digest)
                            .collect(),
                    ),
                    built_by: Some(manifest.build),
                    leftovers: Vec::new(),
                })
            }
        }
    }

    /// Rewrites the given outputs from the blob store, verifying every blob.
    fn restore(
        &self,
        manifest: &Manifest,
        outputs: &[usize],
        updates: &mut Vec<StatUpdate>,
    ) -> Result<(), String> {
        for &index in outputs {
            let output = &manifest.outputs[index];
            // The files are written into `partition` inside a private (0700)
            // directory, and get their recorded mode before `place` moves
            // the partition out: a 0600 file is never readable by others,
            // even while it is being written with the default mode.
            let private =
                self.staging_root
                    .join(format!("restore-{}-{}", manifest.key.short(), index));
            let _ = fs::remove_dir_all(&private);
            let staged = private.join("partition");
            fs::create_dir_all(&self.staging_root)
                .and_then(|()| fs::DirBuilder::new().mode(0o700).create(&private))
                .and_then(|()| fs::create_dir(&staged))
                .map_err(|error| format!("{}: {error}", staged.display()))?;
            for file in &output.files {
                // Produced partitions are directories; only sources (never
                // restored) are single files with an empty path.
                if file.path.is_empty() {
                    return Err(format!(
                        "{} is a single file and cannot be restored",
                        output.partition
                    ));
                }
                let destination = staged.join(&file.path);
                if let Some(parent) = destination.parent() {
                    fs::create_dir_all(parent)
                        .map_err(|error| format!("{}: {error}", parent.display()))?;
                }
                self.blobs
                    .restore(&file.digest, &destination)
                    .map_err(|error| {
                        let _ = fs::remove_dir_all(&private);
                        format!("{error} (partition {})", output.partition)
                    })?;
                // Exactly the mode the job left (manifests of format 6 and
                // older: 0755 or 0644), whatever the blob's.
                fs::set_permissions(
                    &destination,
                    fs::Permissions::from_mode(file.mode & MODE_BITS),
                )
                .map_err(|error| format!("{}: {error}", destination.display()))?;
            }
            let target = self.data_path(&output.partition);
            if let Some(aside) = self.place(&staged, &target)? {
                aside.remove();
            }
            let _ = fs::remove_dir(&private);
            record_stats(&target, &output.files, updates);
        }
        Ok(())
    }

    /// Moves `staged` to `target`, replacing whatever is there; what was
    /// there is moved aside into the staging root, for the caller to remove.
    pub(crate) fn place(&self, staged: &Path, target: &Path) -> Result<Option<Leftover>, String> {
        self.prepare_parents(target)?;
        let mut aside = None;
        if fs::symlink_metadata(target).is_ok() {
            let trash = self.staging_root.join(format!(
                "trash-{}",
                ContentDigest::of(target.to_string_lossy().as_bytes()).short()
            ));
            // One left by a build that died before removing it.
            if fs::symlink_metadata(&trash).is_ok() {
                Leftover::MovedAside(trash.clone()).remove();
            }
            // A symlink at the target is moved, never followed.
            fs::rename(target, &trash).map_err(|error| format!("{}: {error}", target.display()))?;
            aside = Some(Leftover::MovedAside(trash));
        }
        fs::rename(staged, target).map_err(|error| format!("{}: {error}", target.display()))?;
        Ok(aside)
    }

    pub(crate) fn failed(
        &self,
        action: &PlannedAction,
        key: ActionKey,
        error: String,
        exit_code: Option<i32>,
        updates: Vec<StatUpdate>,
    ) -> Finished {
        self.failed_with_logs(action, key, error, exit_code, (None, None), updates)
    }

    pub(crate) fn failed_with_logs(
        &self,
        action: &PlannedAction,
        key: ActionKey,
        error: String,
        exit_code: Option<i32>,
        logs: (Option<ContentDigest>, Option<ContentDigest>),
        updates: Vec<StatUpdate>,
    ) -> Finished {
        failure(action, Some(key), error, exit_code, logs, updates)
    }
}

/// `action` failed with `error`: its `ActionFailed` event and outcome.
/// `key` is `None` when the action failed before its key was known (a
/// missing source, or cairn itself failing to run it).
pub(crate) fn failure(
    action: &PlannedAction,
    key: Option<ActionKey>,
    error: String,
    exit_code: Option<i32>,
    logs: (Option<ContentDigest>, Option<ContentDigest>),
    updates: Vec<StatUpdate>,
) -> Finished {
    Finished {
        key,
        events: vec![EventKind::ActionFailed {
            key,
            job: action.job.to_string(),
            outputs: action.config.outputs.to_vec(),
            error: error.clone(),
            exit_code,
            stdout: logs.0,
            stderr: logs.1,
        }],
        updates,
        outcome: Outcome::Failed {
            error,
            stderr_tail: Vec::new(),
        },
        outputs: None,
        built_by: None,
        leftovers: Vec::new(),
    }
}

/// What differs between the command an action was built with and the one
/// it would run now, naming the graph-file field, variable or program:
/// `args[0] changed from "a" to "b"`, `environment variable TZ changed
/// from "UTC" to "CET"`, `the job's program /usr/bin/python3 changed
/// (content 3f2a… -> 9b1c…)`. `None` if nothing does.
pub fn command_changed(old: &CommandRecord, new: &CommandRecord) -> Option<String> {
    if old.program.path != new.program.path {
        return Some(format!(
            "the job's program changed from {} to {}",
            old.program.path, new.program.path
        ));
    }
    if old.program.digest != new.program.digest {
        let short = |digest: Option<ContentDigest>| {
            digest.map_or_else(|| "none".to_owned(), |digest| digest.short())
        };
        return Some(format!(
            "the job's program {} changed (content {} -> {})",
            new.program.path,
            short(old.program.digest),
            short(new.program.digest)
        ));
    }
    if let Some(change) = list_changed("run", &old.run, &new.run)
        .or_else(|| list_changed("args", &old.args, &new.args))
    {
        return Some(change);
    }
    variables_changed("env ", &old.env, &new.env)
        .or_else(|| variables_changed("environment variable ", &old.passed_env, &new.passed_env))
}

/// `run[2] changed from "a" to "b"`, `args[1] was added ("x")`.
fn list_changed(field: &str, old: &[String], new: &[String]) -> Option<String> {
    let index = old
        .iter()
        .zip(new)
        .position(|(old, new)| old != new)
        .or_else(|| (old.len() != new.len()).then(|| old.len().min(new.len())))?;
    Some(match (old.get(index), new.get(index)) {
        (Some(old), Some(new)) => format!("{field}[{index}] changed from {old:?} to {new:?}"),
        (None, Some(new)) => format!("{field}[{index}] was added ({new:?})"),
        (Some(old), None) => format!("{field}[{index}] was removed (was {old:?})"),
        (None, None) => return None,
    })
}

/// The first variable, by name, set, unset or changed between two sorted
/// lists.
fn variables_changed(
    what: &str,
    old: &[(String, String)],
    new: &[(String, String)],
) -> Option<String> {
    let mut names: Vec<&str> = old
        .iter()
        .chain(new)
        .map(|(name, _)| name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    let value = |list: &'_ [(String, String)], name: &str| {
        list.iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.clone())
    };
    names
        .into_iter()
        .find_map(|name| match (value(old, name), value(new, name)) {
            (Some(old), Some(new)) if old != new => {
                Some(format!("{what}{name} changed from {old:?} to {new:?}"))
            }
            (None, Some(new)) => Some(format!("{what}{name} is now set ({new:?})")),
            (Some(old), None) => Some(format!("{what}{name} is no longer set (was {old:?})")),
            _ => None,
        })
}

/// Why a list of refs the job sees by position (`CAIRN_INPUT_<i>`,
/// `CAIRN_OUTPUT_<i>`) differs from the one it was built with, naming the
/// first position that differs; `None` if they are equal.
fn positions_changed<'r>(
    what: &str,
    old: impl Iterator<Item = &'r PartitionRef>,
    new: impl Iterator<Item = &'r PartitionRef>,
) -> Option<String> {
    let old: Vec<&PartitionRef> = old.collect();
    let new: Vec<&PartitionRef> = new.collect();
    if old == new {
        return None;
    }
    let variable = what.to_uppercase();
    let index = old
        .iter()
        .zip(&new)
        .position(|(old, new)| old != new)
        .unwrap_or(old.len().min(new.len()));
    let name = |list: &[&PartitionRef]| {
        list.get(index)
            .map_or_else(|| "nothing".to_owned(), |partition| partition.to_string())
    };
    let (mut sorted_old, mut sorted_new) = (old.clone(), new.clone());
    sorted_old.sort();
    sorted_new.sort();
    let change = if sorted_old == sorted_new {
        format!("the order of the {what}s changed")
    } else {
        format!(
            "the {what}s changed ({} before, {} now)",
            old.len(),
            new.len()
        )
    };
    Some(format!(
        "{change}: CAIRN_{variable}_{index} was {}, is now {}",
        name(&old),
        name(&new)
    ))
}
