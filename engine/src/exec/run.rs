//! Running an action's job: attempts (with retries and backoff), the staging
//! directory, checkpoints (docs/checkpoints.md), then ingesting and placing the
//! outputs.
//!
//! Each attempt stages in a directory of its own,
//! `<data>/.cairn-tmp/run/<key>/<id>/`, where `<id>` is random and the
//! directory is created exclusively: no earlier attempt (nor a process it
//! left behind) can know it. A resumed attempt gets the last checkpoint in
//! `CAIRN_RESUME` and a copy of the partial output of the attempt that
//! recorded it (named in `run/<key>/current`), never that attempt's files
//! themselves. Without a usable checkpoint an attempt starts from empty
//! directories, and the key's earlier attempts are removed.
//!
//! A run that exited 0 is stored only if every input still has the content
//! its key was computed with (a job that edited an input, or an input edited
//! while the job ran, fails the run naming it) and the job left nothing in
//! `out/` beside its output directories (`$CAIRN_OUT/../x`).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use super::context::{Context, Finished, Outcome, ResolvedInput, now_ms, record_stats};
use super::staging::{CURRENT, Leftover, remove_attempt};
use crate::digest::{ActionKey, ContentDigest};
use crate::job::{Ended, Invocation, JobRun};
use crate::local::describe_status;
use crate::observe::{Observer, StatUpdate, file_entry, list_files};
use crate::plan::PlannedAction;
use crate::record::{
    CheckpointRecord, EventKind, InputRecord, Manifest, OutputRecord, partition_digest,
};
use crate::refs::PartitionRef;

/// Checkpoints larger than this are ignored (with a warning in the job's log).
pub const CHECKPOINT_LIMIT: u64 = 1024 * 1024;

/// How many lines of a failed job's stderr its failure message shows.
pub const STDERR_TAIL_LINES: usize = 10;
/// At most this much of the end of its stderr is read for them, and a
/// line is cut at [`TAIL_LINE_CHARS`] characters: a failure message stays
/// short whatever the job printed.
pub const TAIL_BYTES: u64 = 16 * 1024;
const TAIL_LINE_CHARS: usize = 400;

/// The last [`STDERR_TAIL_LINES`] non-blank lines of the captured log at
/// `path` (already redacted by [`Context::store_logs`]), lossily decoded.
fn log_tail(path: &Path) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = fs::File::open(path) else {
        return Vec::new();
    };
    let length = file.metadata().map_or(0, |metadata| metadata.len());
    let start = length.saturating_sub(TAIL_BYTES);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err()
        || file.take(TAIL_BYTES).read_to_end(&mut bytes).is_err()
    {
        return Vec::new();
    }
    tail_lines(&bytes, start > 0)
}

/// The tail a failure shows of `bytes`, the end of a captured stderr: its
/// last [`STDERR_TAIL_LINES`] non-blank lines, lossily decoded, each cut
/// at [`TAIL_LINE_CHARS`] characters. `cut`: the stream went on before
/// `bytes`, so their first line may be the end of a longer one, and is
/// dropped. Also what `cairn_app::logs` gives for a stored stderr.
pub fn tail_lines(bytes: &[u8], cut: bool) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if cut && lines.len() > 1 {
        lines.remove(0);
    }
    let mut tail: Vec<String> = lines
        .iter()
        .rev()
        .filter(|line| !line.trim().is_empty())
        .take(STDERR_TAIL_LINES)
        .map(|line| {
            let mut kept: String = line.chars().take(TAIL_LINE_CHARS).collect();
            if kept.len() < line.len() {
                kept.push('…');
            }
            kept
        })
        .collect();
    tail.reverse();
    tail
}

/// Emits events of a running action to the scheduler (from any thread).
pub type Emit<'a> = &'a (dyn Fn(EventKind) + Sync);

/// What one attempt left behind.
struct Attempt {
    status: std::io::Result<Ended>,
    logs: (Option<ContentDigest>, Option<ContentDigest>),
    /// The last lines of its (redacted) stderr.
    stderr_tail: Vec<String>,
    checkpoint: Option<CheckpointRecord>,
}

/// Watches `CAIRN_CHECKPOINT` while a job runs and records each new valid
/// version: blob first, then an `ActionCheckpointed` event.
struct CheckpointWatch<'a> {
    context: &'a Context<'a>,
    key: ActionKey,
    job: &'a str,
    path: PathBuf,
    /// The key's directory and this attempt's id, named in `current` once
    /// the attempt records a checkpoint.
    attempt: (&'a Path, &'a str),
    emit: Emit<'a>,
    state: Mutex<WatchState>,
}

#[derive(Default)]
struct WatchState {
    seen: Option<(u64, i64, i64, u64)>,
    last: Option<CheckpointRecord>,
    /// `current` names this attempt.
    current: bool,
    warnings: Vec<String>,
}

impl CheckpointWatch<'_> {
    fn poll(&self) {
        let Ok(metadata) = fs::metadata(&self.path) else {
            return;
        };
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let signature = (
            metadata.len(),
            metadata.mtime(),
            metadata.mtime_nsec(),
            metadata.ino(),
        );
        if state.seen == Some(signature) {
            return;
        }
        state.seen = Some(signature);
        if metadata.len() > CHECKPOINT_LIMIT {
            state.warnings.push(format!(
                "cairn: ignored a checkpoint of {} bytes (the limit is {CHECKPOINT_LIMIT} bytes)",
                metadata.len()
            ));
            return;
        }
        let Ok(bytes) = fs::read(&self.path) else {
            return;
        };
        if let Err(error) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            state.warnings.push(format!(
                "cairn: ignored a checkpoint that is not JSON ({error})"
            ));
            return;
        }
        let digest = ContentDigest::of(&bytes);
        if state.last.is_some_and(|last| last.digest == digest) {
            return;
        }
        let stored = match self.context.blobs.put_bytes(&bytes) {
            Ok(stored) => stored,
            Err(error) => {
                state
                    .warnings
                    .push(format!("cairn: could not store a checkpoint: {error}"));
                return;
            }
        };
        // A resumed attempt must find the output this checkpoint describes:
        // this attempt's, named before the checkpoint is recorded.
        if !state.current {
            let (key_dir, id) = self.attempt;
            if let Err(error) = mark_current(key_dir, id) {
                state.warnings.push(format!(
                    "cairn: could not record the attempt of a checkpoint: {}: {error}",
                    key_dir.display()
                ));
                return;
            }
            state.current = true;
        }
        let sequence = state.last.map_or(1, |last| last.sequence + 1);
        state.last = Some(CheckpointRecord {
            sequence,
            digest: stored,
            build: self.context.build,
        });
        (self.emit)(EventKind::ActionCheckpointed {
            key: self.key,
            job: self.job.to_owned(),
            sequence,
            digest: stored,
            size: bytes.len() as u64,
        });
    }
}

/// Makes a fresh attempt directory under `key_dir` (created if missing),
/// named by a random id and created exclusively, with `out/` and the
/// `output_count` output directories in it (top down: one mkdir per level,
/// where `create_dir_all` tries the deepest first). `(id, directory)`.
fn new_attempt_dir(key_dir: &Path, output_count: usize) -> Result<(String, PathBuf), String> {
    let text = |path: &Path, error: std::io::Error| format!("{}: {error}", path.display());
    loop {
        let id = crate::groups::unique_id();
        let run_dir = key_dir.join(&id);
        if super::staging::reuse_dir(super::staging::SpareDir::Attempt, &run_dir) {
            make_output_dirs(&run_dir, 0..output_count)?;
            return Ok((id, run_dir));
        }
        match fs::create_dir(&run_dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(key_dir).map_err(|error| text(key_dir, error))?;
                continue;
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(text(&run_dir, error)),
        }
        let out = run_dir.join("out");
        fs::create_dir(&out).map_err(|error| text(&out, error))?;
        make_output_dirs(&run_dir, 0..output_count)?;
        return Ok((id, run_dir));
    }
}

/// Makes `out/<i>` for each `i` of `indices` in an attempt directory whose
/// `out/` exists and holds none of them.
fn make_output_dirs(run_dir: &Path, indices: std::ops::Range<usize>) -> Result<(), String> {
    let out = run_dir.join("out");
    for index in indices {
        let directory = out.join(index.to_string());
        fs::create_dir(&directory).map_err(|error| format!("{}: {error}", directory.display()))?;
    }
    Ok(())
}

/// Makes `key_dir` exist and hold nothing: one mkdir in the usual case
/// (it is not there), else what earlier attempts left in it is removed
/// first.
fn fresh_key_dir(key_dir: &Path) -> Result<(), String> {
    let text = |error: std::io::Error| format!("{}: {error}", key_dir.display());
    if super::staging::reuse_dir(super::staging::SpareDir::Key, key_dir) {
        return Ok(());
    }
    match fs::create_dir(key_dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = fs::remove_dir_all(key_dir);
            fs::create_dir(key_dir).map_err(text)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(key_dir).map_err(text)
        }
        Err(error) => Err(text(error)),
    }
}

/// The attempt directory named in `key_dir/current`, if it is there.
fn current_attempt(key_dir: &Path) -> Option<PathBuf> {
    let id = fs::read_to_string(key_dir.join(CURRENT)).ok()?;
    let id = id.trim();
    if id.is_empty() || !id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    let run_dir = key_dir.join(id);
    run_dir.join("out").is_dir().then_some(run_dir)
}

/// Names `id` in `key_dir/current` (written aside, then renamed over it).
fn mark_current(key_dir: &Path, id: &str) -> std::io::Result<()> {
    let aside = key_dir.join(format!("{CURRENT}.{id}"));
    fs::write(&aside, id)?;
    fs::rename(&aside, key_dir.join(CURRENT))
}

/// Removes every attempt directory in `key_dir` but `keep`.
fn remove_other_attempts(key_dir: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(key_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path != keep && entry.file_name() != CURRENT && path.is_dir() {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// Something the job wrote in `<run_dir>/out` beside its output
/// directories (`$CAIRN_OUT/../x`): `Some(error)` naming it.
fn stray_output(run_dir: &Path, outputs: usize) -> Option<String> {
    let out = run_dir.join("out");
    let expected: Vec<String> = (0..outputs).map(|index| index.to_string()).collect();
    let mut stray: Vec<std::ffi::OsString> = fs::read_dir(&out)
        .ok()?
        .flatten()
        .map(|entry| entry.file_name())
        .filter(|name| !expected.iter().any(|expected| name == expected.as_str()))
        .collect();
    stray.sort();
    let first = stray.first()?;
    Some(format!(
        "wrote {} outside its output directories (through $CAIRN_OUT/..); cairn stores only what is under CAIRN_OUTPUT_<i>, so the run is discarded",
        out.join(first).display()
    ))
}

/// Copies the partial output an earlier attempt left in `from` into a
/// resumed attempt's `to` (both output directories; `to` exists and is
/// empty): directories, regular files with their modes, and links. The
/// resumed job gets files of its own: nothing the earlier attempt (or a
/// process it left) still holds open is shared, and a file an earlier ingest
/// adopted into the blob store (cairn died between storing and placing it:
/// read-only, with a second name in the store) comes back writable, so the
/// job may rewrite it without failing on it or writing into a blob.
fn copy_partial_output(from: &Path, to: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let text = |path: &Path, error: std::io::Error| format!("{}: {error}", path.display());
    let entries = fs::read_dir(from).map_err(|error| text(from, error))?;
    for entry in entries {
        let entry = entry.map_err(|error| text(from, error))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let metadata = fs::symlink_metadata(&source).map_err(|error| text(&source, error))?;
        let kind = metadata.file_type();
        if kind.is_dir() {
            fs::create_dir(&target).map_err(|error| text(&target, error))?;
            copy_partial_output(&source, &target)?;
        } else if kind.is_symlink() {
            let link = fs::read_link(&source).map_err(|error| text(&source, error))?;
            std::os::unix::fs::symlink(link, &target).map_err(|error| text(&target, error))?;
        } else if kind.is_file() {
            fs::copy(&source, &target).map_err(|error| text(&source, error))?;
            let mode = metadata.permissions().mode() & 0o7777;
            if metadata.nlink() > 1 && mode & 0o200 == 0 {
                fs::set_permissions(&target, fs::Permissions::from_mode(mode | 0o200))
                    .map_err(|error| text(&target, error))?;
            }
        } else {
            return Err(format!(
                "{} is not a regular file, directory or link",
                source.display()
            ));
        }
    }
    Ok(())
}

pub(crate) fn describe(outputs: &[PartitionRef]) -> String {
    outputs
        .iter()
        .map(PartitionRef::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Context<'_> {
    /// The directory of an action's attempts: each stages in a fresh
    /// `<this>/<id>/`; kept across attempts and builds while a checkpoint
    /// exists for the key.
    pub fn run_dir(&self, key: &ActionKey) -> PathBuf {
        self.staging_root.join("run").join(key.to_hex())
    }

    /// A fresh attempt directory for `action` under `key_dir`, with a copy
    /// of the partial output of `previous` (the attempt that recorded
    /// `resume`) when there is one: `(id, directory, resume)`, `resume`
    /// dropped when the copy failed (the attempt then starts over). Without
    /// a resume, the key's earlier attempts are removed first.
    fn prepare_attempt(
        &self,
        action: &PlannedAction,
        key_dir: &Path,
        previous: Option<&Path>,
        resume: Option<CheckpointRecord>,
    ) -> Result<(String, PathBuf, Option<CheckpointRecord>), String> {
        let outputs = action.config.outputs.len();
        if let (Some(record), Some(previous)) = (resume, previous) {
            let (id, run_dir) = new_attempt_dir(key_dir, outputs)?;
            let copied = (0..outputs)
                .try_for_each(|index| {
                    let index = index.to_string();
                    copy_partial_output(
                        &previous.join("out").join(&index),
                        &run_dir.join("out").join(&index),
                    )
                })
                .and_then(|()| {
                    mark_current(key_dir, &id)
                        .map_err(|error| format!("{}: {error}", key_dir.display()))
                });
            match copied {
                Ok(()) => {
                    remove_other_attempts(key_dir, &run_dir);
                    return Ok((id, run_dir, Some(record)));
                }
                Err(error) => tracing::warn!(
                    "job {} ({}): cannot resume from checkpoint {} ({error}); starting over",
                    action.job,
                    describe(&action.config.outputs),
                    record.sequence
                ),
            }
        }
        if let Some((id, run_dir)) = super::staging::reuse_pair(key_dir) {
            make_output_dirs(&run_dir, 1..outputs)?;
            return Ok((id, run_dir, None));
        }
        fresh_key_dir(key_dir)?;
        let (id, run_dir) = new_attempt_dir(key_dir, outputs)?;
        Ok((id, run_dir, None))
    }

    /// Runs the job until it succeeds or its attempts are used up.
    #[expect(
        clippy::too_many_arguments,
        reason = "the pieces of one action, passed once"
    )]
    pub(crate) fn execute(
        &self,
        action: &PlannedAction,
        key: ActionKey,
        inputs: &[ResolvedInput],
        code: Option<ContentDigest>,
        reason: &str,
        emit: Emit<'_>,
        mut updates: Vec<StatUpdate>,
    ) -> Finished {
        let job = &self.graph.jobs[&*action.job];
        let attempts = 1 + self.retries.unwrap_or(job.retries);
        let key_dir = self.run_dir(&key);
        let mut checkpoint = match self.catalog.checkpoint(&key) {
            Ok(checkpoint) => checkpoint,
            Err(error) => return self.failed(action, key, error.to_string(), None, updates),
        };
        let mut attempt = 1;
        loop {
            // Resume only when the partial output the checkpoint describes
            // is there (in the attempt `current` names).
            let previous = checkpoint.and_then(|_| current_attempt(&key_dir));
            let prepared = self.prepare_attempt(action, &key_dir, previous.as_deref(), checkpoint);
            let (id, run_dir, resume) = match prepared {
                Ok(prepared) => prepared,
                Err(error) => return self.failed(action, key, error, None, updates),
            };
            emit(EventKind::ActionStarted {
                key,
                job: action.job.to_string(),
                outputs: action.config.outputs.to_vec(),
                reason: reason.to_owned(),
                attempt,
                resumed_from: resume.map(|record| record.sequence),
            });
            let started_ms = now_ms();
            let clock = Instant::now();
            let result = self.attempt(
                action,
                key,
                inputs,
                (&key_dir, &id, attempt),
                &run_dir,
                resume,
                emit,
            );
            let duration_ms = clock.elapsed().as_millis() as u64;
            let result = match result {
                Ok(attempt) => attempt,
                Err(error) => {
                    remove_attempt(&run_dir);
                    return self.failed(action, key, error, None, updates);
                }
            };
            if result.checkpoint.is_some() {
                checkpoint = result.checkpoint;
            }
            let what = || format!("job {} ({})", action.job, describe(&action.config.outputs));
            let failure = match &result.status {
                Ok(ended) if ended.succeeded() => None,
                Ok(ended) if ended.timed_out => Some((
                    format!(
                        "{} timed out after {} and was stopped{}",
                        what(),
                        crate::graph::format_duration(job.timeout.unwrap_or_default()),
                        if ended.escalated {
                            " (SIGKILL: it ignored SIGTERM)"
                        } else {
                            ""
                        }
                    ),
                    None,
                )),
                Ok(_) if self.children.is_interrupted() => {
                    Some((format!("{} was interrupted", what()), None))
                }
                // Stopped by someone else than this build (Slurm ended its
                // job: a time limit, a preemption, a cancel).
                Ok(ended) if ended.stopped && ended.status.success() => Some((
                    format!(
                        "{} was stopped before it ended (exit 0 after SIGTERM)",
                        what()
                    ),
                    None,
                )),
                Ok(ended) => Some((
                    format!("{} {}", what(), describe_status(ended.status)),
                    ended.status.code(),
                )),
                Err(error) => Some((format!("{}: {error}", what()), None)),
            };
            let Some((error, exit_code)) = failure else {
                return self.succeed(
                    action,
                    key,
                    inputs,
                    code,
                    &run_dir,
                    started_ms,
                    duration_ms,
                    result.logs,
                    updates,
                );
            };
            if checkpoint.is_none() {
                remove_attempt(&run_dir);
            }
            // A runner's InvalidInput: the attempt cannot succeed as
            // configured (a Slurm node that does not see the project,
            // docs/slurm.md): another attempt would only repeat it.
            let permanent = matches!(&result.status,
                Err(error) if error.kind() == std::io::ErrorKind::InvalidInput);
            if attempt >= attempts || permanent || self.children.is_interrupted() {
                let mut finished =
                    self.failed_with_logs(action, key, error, exit_code, result.logs, updates);
                if let Outcome::Failed { stderr_tail, .. } = &mut finished.outcome {
                    *stderr_tail = result.stderr_tail;
                }
                return finished;
            }
            // A failed attempt that will be retried is a fact of its own.
            emit(EventKind::ActionFailed {
                key: Some(key),
                job: action.job.to_string(),
                outputs: action.config.outputs.to_vec(),
                error: format!("{error} (attempt {attempt} of {attempts}; retrying)"),
                exit_code,
                stdout: result.logs.0,
                stderr: result.logs.1,
            });
            // ... and so is the wait before the next one (what `status`
            // shows as running meanwhile).
            emit(EventKind::ActionRetrying {
                key,
                job: action.job.to_string(),
                outputs: action.config.outputs.to_vec(),
                attempt: attempt + 1,
                delay_ms: u64::try_from(job.retry_backoff.as_millis()).unwrap_or(u64::MAX),
            });
            // The backoff ends at once on an interrupt.
            if !self.children.sleep(job.retry_backoff) {
                return self.failed_with_logs(
                    action,
                    key,
                    format!("{} was interrupted", what()),
                    None,
                    (None, None),
                    updates,
                );
            }
            attempt += 1;
            updates.shrink_to_fit();
        }
    }

    /// One run of the job process, with its checkpoint watched.
    #[expect(
        clippy::too_many_arguments,
        reason = "the pieces of one attempt, passed once"
    )]
    fn attempt(
        &self,
        action: &PlannedAction,
        key: ActionKey,
        inputs: &[ResolvedInput],
        (key_dir, id, attempt): (&Path, &str, u32),
        run_dir: &Path,
        resume: Option<CheckpointRecord>,
        emit: Emit<'_>,
    ) -> Result<Attempt, String> {
        let job = &self.graph.jobs[&*action.job];
        let output_dirs: Vec<PathBuf> = (0..action.config.outputs.len())
            .map(|i| run_dir.join("out").join(i.to_string()))
            .collect();
        let (stdout_path, stderr_path) = (run_dir.join("stdout"), run_dir.join("stderr"));
        // The job's `CAIRN_RUN_ID` is this attempt's own (docs/job-protocol.md),
        // not the name of its directory, which a spare pair carries from one
        // attempt to the next (exec/staging.rs).
        let run_id = crate::groups::unique_id();
        let checkpoint_path = run_dir.join("checkpoint.json");
        let resume_path = run_dir.join("resume.json");
        let path_text = |path: &Path| path.to_string_lossy().into_owned();
        let mut env: Vec<(String, String)> = action
            .config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
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
        env.push(("CAIRN_CHECKPOINT".into(), path_text(&checkpoint_path)));
        if let Some(record) = resume {
            let bytes = self
                .blobs
                .read(&record.digest)
                .map_err(|error| format!("reading checkpoint {}: {error}", record.sequence))?;
            fs::write(&resume_path, bytes)
                .map_err(|error| format!("{}: {error}", resume_path.display()))?;
            env.push(("CAIRN_RESUME".into(), path_text(&resume_path)));
        }
        let argv: Vec<String> = job.run.iter().chain(&action.config.args).cloned().collect();
        let watch = CheckpointWatch {
            context: self,
            key,
            job: &action.job,
            path: checkpoint_path,
            attempt: (key_dir, id),
            emit,
            state: Mutex::new(WatchState {
                last: resume,
                current: resume.is_some(),
                ..WatchState::default()
            }),
        };
        let poll = || watch.poll();
        let label = format!("job {} ({})", action.job, describe(&action.config.outputs));
        let shield = self
            .in_flight
            .and_then(|in_flight| in_flight.shield(&key, self.build));
        // A runner that runs the job elsewhere names the job it runs in
        // there (the Slurm job id), for the log.
        let dispatched = |executor: &str, job_id: &str| {
            emit(EventKind::ActionDispatched {
                key,
                job: action.job.to_string(),
                outputs: action.config.outputs.to_vec(),
                attempt,
                executor: executor.to_owned(),
                id: job_id.to_owned(),
            });
        };
        // The one dynamic call of an attempt: the job runner (job/).
        let status = self.runner.run(
            &JobRun {
                job: &action.job,
                outputs: &action.config.outputs,
                invocation: Invocation {
                    argv: &argv,
                    cwd: &self.graph.root,
                    environment: self.environment,
                    extra_env: &env,
                    stdout: &stdout_path,
                    stderr: &stderr_path,
                    run_id: &run_id,
                    label: &label,
                    timeout: job.timeout,
                },
                shield: shield.as_ref(),
                dispatched: Some(&dispatched),
                started: Some(&super::staging::handle_deferred),
            },
            self.children,
            Some(&poll),
        );
        // A checkpoint written just before the job exited still counts.
        watch.poll();
        let state = watch.state.into_inner().unwrap_or_default();
        if !state.warnings.is_empty() {
            use std::io::Write;
            if let Ok(mut file) = fs::OpenOptions::new().append(true).open(&stderr_path) {
                for warning in &state.warnings {
                    let _ = writeln!(file, "{warning}");
                }
            }
        }
        let checkpoint = state
            .last
            .filter(|last| Some(last.sequence) != resume.map(|r| r.sequence));
        let logs = self.store_logs(&stdout_path, &stderr_path);
        let stderr_tail = match &status {
            Ok(ended) if ended.succeeded() => Vec::new(),
            _ => log_tail(&stderr_path),
        };
        Ok(Attempt {
            status,
            logs,
            stderr_tail,
            checkpoint: checkpoint.or(resume),
        })
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the pieces of one action, passed once"
    )]
    fn succeed(
        &self,
        action: &PlannedAction,
        key: ActionKey,
        inputs: &[ResolvedInput],
        code: Option<ContentDigest>,
        run_dir: &Path,
        started_ms: u64,
        duration_ms: u64,
        logs: (Option<ContentDigest>, Option<ContentDigest>),
        mut updates: Vec<StatUpdate>,
    ) -> Finished {
        let output_dirs: Vec<PathBuf> = (0..action.config.outputs.len())
            .map(|i| run_dir.join("out").join(i.to_string()))
            .collect();
        // A job that edited an input ran on other content than its key
        // names, and one that wrote beside its output directories did
        // something cairn does not store: neither result may be cached.
        let refusal = self
            .changed_input(inputs, &mut updates)
            .or_else(|| stray_output(run_dir, output_dirs.len()));
        if let Some(error) = refusal {
            remove_attempt(run_dir);
            let error = format!(
                "job {} ({}) {error}",
                action.job,
                describe(&action.config.outputs)
            );
            return self.failed_with_logs(action, key, error, Some(0), logs, updates);
        }
        let records = match self.ingest(action, &output_dirs) {
            Ok(records) => records,
            Err(error) => {
                remove_attempt(run_dir);
                let error = format!(
                    "job {} ({}) {error}",
                    action.job,
                    describe(&action.config.outputs)
                );
                return self.failed_with_logs(action, key, error, Some(0), logs, updates);
            }
        };
        // Blob durability is the scheduler's job: one sync per group commit.
        // What is left to remove is removed once the action is reported.
        let mut leftovers = Vec::new();
        for (directory, record) in output_dirs.iter().zip(&records) {
            let target = self.data_path(&record.partition);
            match self.place(directory, &target) {
                Ok(aside) => leftovers.extend(aside),
                Err(error) => {
                    remove_attempt(run_dir);
                    for leftover in leftovers {
                        leftover.remove();
                    }
                    return self.failed_with_logs(action, key, error, Some(0), logs, updates);
                }
            }
            record_stats(&target, &record.files, &mut updates);
        }
        leftovers.push(Leftover::EmptiedRunDir(run_dir.to_owned()));
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
            job: action.job.to_string(),
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
            command: Some(Box::new(self.command_record(action))),
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
            built_by: None,
            leftovers,
        }
    }

    /// Re-observes every input after the job exited: `Some(error)` naming
    /// the first input whose content is no longer the one the action's key
    /// was computed with (the job, or someone else, changed it while the job
    /// ran).
    fn changed_input(
        &self,
        inputs: &[ResolvedInput],
        updates: &mut Vec<StatUpdate>,
    ) -> Option<String> {
        let observer = Observer::new(self.catalog);
        for input in inputs {
            let now = match observer.partition(&input.path, updates) {
                Ok(Some((digest, _))) => digest,
                Ok(None) => {
                    return Some(format!(
                        "exited 0, but its input {} ({}) disappeared while the job ran; the run is discarded",
                        input.partition,
                        input.path.display()
                    ));
                }
                Err(error) => {
                    return Some(format!(
                        "exited 0, but its input {} cannot be read after the job ran ({error}); the run is discarded",
                        input.partition
                    ));
                }
            };
            if now != input.digest {
                return Some(format!(
                    "exited 0, but its input {} changed while the job ran (content {} in the action's key, {} after the job exited); the run is discarded",
                    input.partition,
                    input.digest.short(),
                    now.short()
                ));
            }
        }
        None
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
                // The job and its process group are gone and the staging
                // directory is cairn's: the store may take the file itself
                // (a large one becomes a read-only link to its blob). The
                // stat cache records the output only after `place`, so it
                // sees the ctime of that change.
                let digest = self
                    .blobs
                    .adopt_file(&file.path)
                    .map_err(|error| error.to_string())?;
                files.push(file_entry(file.relative, &file.metadata, digest));
            }
            records.push(OutputRecord {
                partition: partition.clone(),
                digest: partition_digest(&files),
                files,
            });
        }
        Ok(records)
    }

    /// Stores the job's captured output. Copied, never adopted: a retry
    /// truncates these very files for its own output (and a warning may be
    /// appended to stderr), which must neither fail on a read-only file nor
    /// write through into a blob.
    fn store_logs(
        &self,
        stdout: &Path,
        stderr: &Path,
    ) -> (Option<ContentDigest>, Option<ContentDigest>) {
        let store = |path: &Path| match fs::metadata(path) {
            Ok(metadata) if metadata.len() > 0 => {
                self.redact_log(path).ok()?;
                self.blobs.put_file(path).ok()
            }
            _ => None,
        };
        (store(stdout), store(stderr))
    }

    /// Replaces the captured log at `path` by its redacted copy (the secret
    /// values of `[env] secret` replaced, see `redact.rs`), so that neither
    /// the blob nor the run directory keeps them. Streamed: a log may be
    /// large. An error leaves the log unstored rather than stored raw.
    fn redact_log(&self, path: &Path) -> std::io::Result<()> {
        let redactor = &self.environment.redactor;
        if redactor.is_empty() {
            return Ok(());
        }
        let mut redacted_name = path.as_os_str().to_owned();
        redacted_name.push(".redacted");
        let redacted_path = PathBuf::from(redacted_name);
        let copied = (|| {
            let mut source = std::io::BufReader::new(fs::File::open(path)?);
            let mut target = std::io::BufWriter::new(fs::File::create(&redacted_path)?);
            redactor.copy(&mut source, &mut target)?;
            std::io::Write::flush(&mut target)?;
            fs::rename(&redacted_path, path)
        })();
        if copied.is_err() {
            let _ = fs::remove_file(&redacted_path);
            let _ = fs::remove_file(path);
        }
        copied
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_resumed_job_gets_a_private_copy_of_the_partial_output() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("old").join("0");
        fs::create_dir_all(output.join("pages")).unwrap();
        // What an ingest cut short leaves: a read-only file whose inode is
        // also a blob, beside files it did not take.
        let adopted = output.join("pages").join("1.csv");
        let blob = dir.path().join("blob");
        fs::write(&adopted, "page 1\n").unwrap();
        fs::set_permissions(&adopted, fs::Permissions::from_mode(0o555)).unwrap();
        fs::hard_link(&adopted, &blob).unwrap();
        let plain = output.join("2.csv");
        fs::write(&plain, "page 2\n").unwrap();
        fs::set_permissions(&plain, fs::Permissions::from_mode(0o444)).unwrap();
        std::os::unix::fs::symlink("2.csv", output.join("link")).unwrap();
        let new = dir.path().join("new").join("0");
        fs::create_dir_all(&new).unwrap();

        copy_partial_output(&output, &new).unwrap();

        let copied = new.join("pages").join("1.csv");
        assert_eq!(fs::read(&copied).unwrap(), b"page 1\n");
        assert_eq!(mode(&copied), 0o755, "an adopted file comes back writable");
        assert_eq!(fs::read(new.join("2.csv")).unwrap(), b"page 2\n");
        assert_eq!(mode(&new.join("2.csv")), 0o444, "a file's own mode is kept");
        assert_eq!(fs::read_link(new.join("link")).unwrap(), Path::new("2.csv"));
        // Nothing is shared with the earlier attempt or the blob.
        for (old, new) in [(&adopted, &copied), (&plain, &new.join("2.csv"))] {
            assert_ne!(
                fs::metadata(old).unwrap().ino(),
                fs::metadata(new).unwrap().ino()
            );
        }
        assert_eq!(mode(&blob), 0o555);
        assert_eq!(fs::metadata(&blob).unwrap().nlink(), 2);
        // Something else than a file, directory or link is refused.
        let fifo = output.join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let again = dir.path().join("again");
        fs::create_dir(&again).unwrap();
        let error = copy_partial_output(&output, &again).unwrap_err();
        assert!(error.contains("fifo"), "{error}");
    }

    #[test]
    fn attempts_stage_in_fresh_directories_and_current_names_one() {
        let dir = tempfile::tempdir().unwrap();
        let key_dir = dir.path().join("run").join("k");
        let (first_id, first) = new_attempt_dir(&key_dir, 2).unwrap();
        let (second_id, second) = new_attempt_dir(&key_dir, 2).unwrap();
        assert_ne!(first, second);
        assert!(first.join("out/1").is_dir() && second.join("out/0").is_dir());
        assert_eq!(current_attempt(&key_dir), None);
        mark_current(&key_dir, &first_id).unwrap();
        assert_eq!(current_attempt(&key_dir), Some(first.clone()));
        remove_other_attempts(&key_dir, &second);
        assert!(!first.exists() && second.exists());
        // `current` names a removed attempt: none.
        assert_eq!(current_attempt(&key_dir), None);
        mark_current(&key_dir, &second_id).unwrap();
        assert_eq!(current_attempt(&key_dir), Some(second.clone()));
        remove_attempt(&second);
        assert!(
            !key_dir.exists(),
            "the key's directory goes with its last attempt"
        );
    }
}
