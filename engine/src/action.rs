//! The work of one action on a worker thread: compute its key, decide whether
//! it is up to date, restore it from the blob store, or run its job, ingest
//! the outputs and materialize them — returning the events to record.
//!
//! Invariants: nothing from a failed run is stored or materialized; outputs
//! are placed at their data paths only after every file is in the blob store;
//! a materialized partition holds only regular files and directories.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::digest::{ActionKey, ContentDigest};
use crate::graph::Graph;
use crate::key::{KeyInputs, OutputIdentity, action_key};
use crate::observe::{Observer, StatUpdate, list_files, now_ns};
use crate::plan::PlannedAction;
use crate::ports::{BlobStore, Catalog, StoreError};
use crate::record::{
    EventKind, FileEntry, InputRecord, Manifest, OutputRecord, StatEntry, partition_digest,
};
use crate::refs::PartitionRef;
use crate::runner::{Children, Invocation, JobEnvironment, describe_status, run_process};

/// What an action needs from the build around it.
pub struct Context<'a> {
    pub graph: &'a Graph,
    /// Where partitions are materialized: `data/` beside the graph file.
    pub data_root: PathBuf,
    /// Scratch space on the data root's file system, so renames are atomic.
    pub staging_root: PathBuf,
    pub catalog: &'a dyn Catalog,
    pub blobs: &'a dyn BlobStore,
    pub environment: &'a JobEnvironment,
    pub children: &'a Children,
    pub build: u64,
}

/// An input as the action sees it.
#[derive(Debug, Clone)]
pub struct ResolvedInput {
    pub partition: PartitionRef,
    pub digest: ContentDigest,
    pub path: PathBuf,
}

/// How an action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Executed { duration_ms: u64 },
    Cached { restored: bool },
    Failed { error: String },
    Skipped { reason: String },
}

/// Whether an action must run, given its key.
#[derive(Debug, Clone)]
pub enum Decision {
    /// The key was built before and every output's data path holds it.
    UpToDate { manifest: Box<Manifest> },
    /// The key was built before; these outputs must be rewritten from the store.
    Restore {
        manifest: Box<Manifest>,
        outputs: Vec<usize>,
    },
    /// No usable result: the job must run, for this reason.
    Run { reason: String },
}

/// The result of one action, to be recorded by the scheduler.
pub struct Finished {
    pub key: Option<ActionKey>,
    pub events: Vec<EventKind>,
    pub updates: Vec<StatUpdate>,
    pub outcome: Outcome,
    /// Content digests of the outputs, when they are known.
    pub outputs: Option<Vec<ContentDigest>>,
}

impl Context<'_> {
    pub fn data_path(&self, partition: &PartitionRef) -> PathBuf {
        self.data_root.join(partition.relative_path())
    }

    /// The action key from the resolved inputs (design.md §5).
    pub fn key(
        &self,
        action: &PlannedAction,
        inputs: &[ResolvedInput],
        code: Option<ContentDigest>,
    ) -> ActionKey {
        let job = &self.graph.jobs[&action.job];
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
        let mut input_digests: Vec<(PartitionRef, ContentDigest)> = inputs
            .iter()
            .map(|input| (input.partition.clone(), input.digest))
            .collect();
        input_digests.sort();
        input_digests.dedup();
        action_key(&KeyInputs {
            job: &job.name,
            run: &job.run,
            config: &action.config,
            passed_env: &self.environment.passed,
            output_datasets: &output_datasets,
            inputs: &input_digests,
        })
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
        for output in &action.config.outputs {
            if let Some(state) = self.catalog.partition(output).map_err(store_error)?
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
        let observer = Observer::new(self.catalog);
        let mut stale = Vec::new();
        for (index, output) in manifest.outputs.iter().enumerate() {
            let path = self.data_path(&output.partition);
            let current = observer.partition(&path, updates);
            match current {
                Ok(Some((digest, _))) if digest == output.digest => {}
                // Missing, altered, or holding something we refuse: rewrite it.
                _ => stale.push(index),
            }
        }
        let manifest = Box::new(manifest);
        if stale.is_empty() {
            Ok(Decision::UpToDate { manifest })
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
            return Ok("never built".to_owned());
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
        Ok("the job's command, arguments or environment changed".to_owned())
    }

    /// Runs the whole action: decide, then reuse, restore or execute.
    pub fn perform(
        &self,
        index: usize,
        action: &PlannedAction,
        inputs: &[ResolvedInput],
        code: Option<ContentDigest>,
        started: &dyn Fn(EventKind),
    ) -> Finished {
        let key = self.key(action, inputs, code);
        let mut updates = Vec::new();
        let decision = match self.decide(action, &key, inputs, code, &mut updates) {
            Ok(decision) => decision,
            Err(error) => return self.failed(action, key, error, None, updates),
        };
        match decision {
            Decision::UpToDate { manifest } => self.reuse(action, key, &manifest, false, updates),
            Decision::Restore { manifest, outputs } => {
                match self.restore(&manifest, &outputs, &mut updates) {
                    Ok(()) => self.reuse(action, key, &manifest, true, updates),
                    Err(error) => {
                        tracing::warn!("{error}; running the job instead");
                        let reason = format!("restoring from the store failed: {error}");
                        self.execute(index, action, key, inputs, code, reason, started, updates)
                    }
                }
            }
            Decision::Run { reason } => {
                self.execute(index, action, key, inputs, code, reason, started, updates)
            }
        }
    }

    fn reuse(
        &self,
        action: &PlannedAction,
        key: ActionKey,
        manifest: &Manifest,
        restored: bool,
        updates: Vec<StatUpdate>,
    ) -> Finished {
        let mut events = vec![EventKind::ActionCached {
            key,
            job: action.job.clone(),
            outputs: action.config.outputs.clone(),
            built_by: manifest.build,
            restored,
        }];
        for output in &manifest.outputs {
            let current = self
                .catalog
                .partition(&output.partition)
                .ok()
                .flatten()
                .and_then(|state| state.current);
            if restored || current.is_none_or(|current| current.key != key) {
                events.push(EventKind::PartitionMaterialized {
                    partition: output.partition.clone(),
                    digest: output.digest,
                    key,
                });
            }
        }
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
            let staged =
                self.staging_root
                    .join(format!("restore-{}-{}", manifest.key.short(), index));
            let _ = fs::remove_dir_all(&staged);
            fs::create_dir_all(&staged)
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
                        let _ = fs::remove_dir_all(&staged);
                        format!("{error} (partition {})", output.partition)
                    })?;
                let mode = if file.executable { 0o755 } else { 0o644 };
                fs::set_permissions(&destination, fs::Permissions::from_mode(mode))
                    .map_err(|error| format!("{}: {error}", destination.display()))?;
            }
            let target = self.data_path(&output.partition);
            self.place(&staged, &target)?;
            record_stats(&target, &output.files, updates);
        }
        Ok(())
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the pieces of one action, passed once"
    )]
    fn execute(
        &self,
        index: usize,
        action: &PlannedAction,
        key: ActionKey,
        inputs: &[ResolvedInput],
        code: Option<ContentDigest>,
        reason: String,
        started: &dyn Fn(EventKind),
        mut updates: Vec<StatUpdate>,
    ) -> Finished {
        started(EventKind::ActionStarted {
            key,
            job: action.job.clone(),
            outputs: action.config.outputs.clone(),
            reason,
        });
        let job = &self.graph.jobs[&action.job];
        let staging = self.staging_root.join(format!("b{}-a{index}", self.build));
        let _ = fs::remove_dir_all(&staging);
        let output_dirs: Vec<PathBuf> = (0..action.config.outputs.len())
            .map(|i| staging.join("out").join(i.to_string()))
            .collect();
        for directory in &output_dirs {
            if let Err(error) = fs::create_dir_all(directory) {
                return self.failed(
                    action,
                    key,
                    format!("{}: {error}", directory.display()),
                    None,
                    updates,
                );
            }
        }
        let (stdout_path, stderr_path) = (staging.join("stdout"), staging.join("stderr"));
        let mut env: Vec<(String, String)> = action
            .config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let path_text = |path: &Path| path.to_string_lossy().into_owned();
        for (i, (directory, partition)) in
            output_dirs.iter().zip(&action.config.outputs).enumerate()
        {
            env.push((format!("CAIRN_OUTPUT_{i}"), path_text(directory)));
            env.push((format!("CAIRN_OUTPUT_REF_{i}"), partition.to_string()));
        }
        env.push(("CAIRN_OUT".into(), path_text(&output_dirs[0])));
        env.push(("CAIRN_OUTPUT_COUNT".into(), output_dirs.len().to_string()));
        for (i, input) in inputs.iter().enumerate() {
            env.push((format!("CAIRN_INPUT_{i}"), path_text(&input.path)));
            env.push((format!("CAIRN_INPUT_REF_{i}"), input.partition.to_string()));
        }
        if let Some(first) = inputs.first() {
            env.push(("CAIRN_IN".into(), path_text(&first.path)));
        }
        env.push(("CAIRN_INPUT_COUNT".into(), inputs.len().to_string()));
        let argv: Vec<String> = job.run.iter().chain(&action.config.args).cloned().collect();
        let started_ms = now_ms();
        let clock = Instant::now();
        let status = run_process(
            &Invocation {
                argv: &argv,
                cwd: &self.graph.root,
                environment: self.environment,
                extra_env: &env,
                stdout: &stdout_path,
                stderr: &stderr_path,
            },
            self.children,
        );
        let duration_ms = clock.elapsed().as_millis() as u64;
        let logs = self.store_logs(&stdout_path, &stderr_path);
        let describe = |outputs: &[PartitionRef]| {
            outputs
                .iter()
                .map(PartitionRef::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let status = match status {
            Ok(status) => status,
            Err(error) => {
                let _ = fs::remove_dir_all(&staging);
                let error = format!(
                    "job {} ({}): {error}",
                    action.job,
                    describe(&action.config.outputs)
                );
                return self.failed_with_logs(action, key, error, None, logs, updates);
            }
        };
        if !status.success() {
            let _ = fs::remove_dir_all(&staging);
            let error = if self.children.is_interrupted() {
                format!(
                    "job {} ({}) was interrupted",
                    action.job,
                    describe(&action.config.outputs)
                )
            } else {
                format!(
                    "job {} ({}) {}",
                    action.job,
                    describe(&action.config.outputs),
                    describe_status(status)
                )
            };
            return self.failed_with_logs(action, key, error, status.code(), logs, updates);
        }
        let ingested = self.ingest(action, &output_dirs);
        let records = match ingested {
            Ok(records) => records,
            Err(error) => {
                let _ = fs::remove_dir_all(&staging);
                let error = format!(
                    "job {} ({}) {error}",
                    action.job,
                    describe(&action.config.outputs)
                );
                return self.failed_with_logs(action, key, error, Some(0), logs, updates);
            }
        };
        // Blob durability is the scheduler's job: one sync per group commit.
        for (directory, record) in output_dirs.iter().zip(&records) {
            let target = self.data_path(&record.partition);
            if let Err(error) = self.place(directory, &target) {
                let _ = fs::remove_dir_all(&staging);
                return self.failed_with_logs(action, key, error, Some(0), logs, updates);
            }
            record_stats(&target, &record.files, &mut updates);
        }
        let _ = fs::remove_dir_all(&staging);
        let versions = action
            .config
            .outputs
            .iter()
            .filter_map(|output| {
                let version = self
                    .graph
                    .datasets
                    .get(output.dataset())?
                    .version
                    .as_ref()?;
                Some((output.dataset().to_owned(), version.to_string()))
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let manifest = Manifest {
            key,
            job: action.job.clone(),
            outputs: records,
            inputs: inputs
                .iter()
                .map(|input| InputRecord {
                    partition: input.partition.clone(),
                    digest: input.digest,
                })
                .collect(),
            code_digest: code,
            versions,
            build: self.build,
            started_ms,
            finished_ms: now_ms(),
            stdout: logs.0,
            stderr: logs.1,
        };
        let digests = manifest
            .outputs
            .iter()
            .map(|output| output.digest)
            .collect();
        let mut events = Vec::with_capacity(1 + manifest.outputs.len());
        for output in &manifest.outputs {
            events.push(EventKind::PartitionMaterialized {
                partition: output.partition.clone(),
                digest: output.digest,
                key,
            });
        }
        events.insert(0, EventKind::ActionSucceeded { manifest });
        Finished {
            key: Some(key),
            events,
            updates,
            outcome: Outcome::Executed { duration_ms },
            outputs: Some(digests),
        }
    }

    /// Checks and stores the outputs a job wrote into its staging dirs.
    fn ingest(
        &self,
        action: &PlannedAction,
        output_dirs: &[PathBuf],
    ) -> Result<Vec<OutputRecord>, String> {
        let mut records = Vec::with_capacity(output_dirs.len());
        for (directory, partition) in output_dirs.iter().zip(&action.config.outputs) {
            let listed = list_files(directory)
                .map_err(|error| format!("wrote a bad output for {partition}: {error}"))?;
            let listed = match listed {
                Some(listed) if !listed.is_empty() => listed,
                Some(_) => {
                    return Err(format!("exited 0 but did not write its output {partition}"));
                }
                None => {
                    return Err(format!(
                        "exited 0 but removed its output directory for {partition}"
                    ));
                }
            };
            let mut files = Vec::with_capacity(listed.len());
            for file in listed {
                let digest = self
                    .blobs
                    .put_file(&file.path)
                    .map_err(|error| error.to_string())?;
                files.push(FileEntry {
                    path: file.relative,
                    executable: file.metadata.permissions().mode() & 0o111 != 0,
                    size: file.metadata.len(),
                    digest,
                });
            }
            records.push(OutputRecord {
                partition: partition.clone(),
                digest: partition_digest(&files),
                files,
            });
        }
        Ok(records)
    }

    fn store_logs(
        &self,
        stdout: &Path,
        stderr: &Path,
    ) -> (Option<ContentDigest>, Option<ContentDigest>) {
        let store = |path: &Path| match fs::metadata(path) {
            Ok(metadata) if metadata.len() > 0 => self.blobs.put_file(path).ok(),
            _ => None,
        };
        (store(stdout), store(stderr))
    }

    /// Moves `staged` to `target`, replacing whatever is there.
    fn place(&self, staged: &Path, target: &Path) -> Result<(), String> {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|error| format!("{}: {error}", parent.display()))?;
        }
        if fs::symlink_metadata(target).is_ok() {
            let trash = self.staging_root.join(format!(
                "trash-{}",
                ContentDigest::of(target.to_string_lossy().as_bytes()).short()
            ));
            let _ = fs::remove_dir_all(&trash);
            fs::rename(target, &trash).map_err(|error| format!("{}: {error}", target.display()))?;
            let _ = if trash.is_dir() {
                fs::remove_dir_all(&trash)
            } else {
                fs::remove_file(&trash)
            };
        }
        fs::rename(staged, target).map_err(|error| format!("{}: {error}", target.display()))
    }

    fn failed(
        &self,
        action: &PlannedAction,
        key: ActionKey,
        error: String,
        exit_code: Option<i32>,
        updates: Vec<StatUpdate>,
    ) -> Finished {
        self.failed_with_logs(action, key, error, exit_code, (None, None), updates)
    }

    fn failed_with_logs(
        &self,
        action: &PlannedAction,
        key: ActionKey,
        error: String,
        exit_code: Option<i32>,
        logs: (Option<ContentDigest>, Option<ContentDigest>),
        updates: Vec<StatUpdate>,
    ) -> Finished {
        Finished {
            key: Some(key),
            events: vec![EventKind::ActionFailed {
                key,
                job: action.job.clone(),
                outputs: action.config.outputs.clone(),
                error: error.clone(),
                exit_code,
                stdout: logs.0,
                stderr: logs.1,
            }],
            updates,
            outcome: Outcome::Failed { error },
            outputs: None,
        }
    }
}

/// Stat-cache entries for files just placed at `target` with known digests,
/// so the next build need not re-read them.
fn record_stats(target: &Path, files: &[FileEntry], updates: &mut Vec<StatUpdate>) {
    use std::os::unix::fs::MetadataExt;
    let recorded_ns = now_ns();
    for file in files {
        let path = if file.path.is_empty() {
            target.to_owned()
        } else {
            target.join(&file.path)
        };
        if let Ok(metadata) = fs::symlink_metadata(&path) {
            updates.push((
                path.to_string_lossy().into_owned(),
                StatEntry {
                    size: metadata.len(),
                    mtime_ns: i128::from(metadata.mtime()) * 1_000_000_000
                        + i128::from(metadata.mtime_nsec()),
                    ctime_ns: i128::from(metadata.ctime()) * 1_000_000_000
                        + i128::from(metadata.ctime_nsec()),
                    inode: metadata.ino(),
                    recorded_ns,
                    digest: file.digest,
                },
            ));
        }
    }
}

pub fn now_ms() -> u64 {
    (now_ns() / 1_000_000) as u64
}
