//! `logs`: what a partition's job printed, captured and stored as blobs
//! (docs/cli.md, "`cairn logs`"), read verified and streamed.

use std::io::Read;
use std::path::PathBuf;

use cairn_engine::digest::{ActionKey, ContentDigest};
use cairn_engine::ports::{BlobStore, Projections};
use cairn_engine::record::{Event, EventKind, Manifest};
use cairn_engine::refs::PartitionRef;

use crate::history::{parse_ref, partition_events, source_path};
use crate::{AppError, Workspace};

/// A job run whose output was captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    pub build: u64,
    /// When it finished (a success) or failed.
    pub time_ms: u64,
    pub job: String,
    pub key: ActionKey,
    /// `None`: it succeeded; `Some(error)`: it failed.
    pub error: Option<String>,
    pub stdout: Option<ContentDigest>,
    pub stderr: Option<ContentDigest>,
    /// The job of another system it ran in (the Slurm job), if any.
    pub dispatched: Option<crate::history::Dispatch>,
}

impl JobRun {
    fn of_manifest(manifest: &Manifest) -> JobRun {
        JobRun {
            build: manifest.build,
            time_ms: manifest.finished_ms,
            job: manifest.job.clone(),
            key: manifest.key,
            error: None,
            stdout: manifest.stdout,
            stderr: manifest.stderr,
            dispatched: None,
        }
    }

    fn of_event(event: &Event) -> Option<JobRun> {
        match &event.kind {
            EventKind::ActionSucceeded { manifest } => Some(JobRun::of_manifest(manifest)),
            EventKind::ActionFailed {
                key,
                job,
                error,
                stdout,
                stderr,
                ..
            } => Some(JobRun {
                build: event.build,
                time_ms: event.time_ms,
                job: job.clone(),
                // No key: it failed before running (a missing source).
                key: (*key)?,
                error: Some(error.clone()),
                stdout: *stdout,
                stderr: *stderr,
                dispatched: None,
            }),
            _ => None,
        }
    }

    /// The blob of `stream`, `None` when it was empty.
    pub fn blob(&self, stream: Stream) -> Option<ContentDigest> {
        match stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        }
    }
}

/// One of the two captured streams of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Which run `logs` found for a partition, or why there is none.
pub enum Logs {
    /// A source partition: cairn observes `path` and never runs a job for it.
    Source { path: PathBuf },
    /// Nothing was built here yet.
    NothingBuilt,
    /// No job run is recorded for it.
    NeverRun,
    /// The run, and the store to read its output from.
    Run(Box<JobLogs>),
}

/// A run whose captured output can be read.
pub struct JobLogs {
    pub run: JobRun,
    store: crate::StoreHandle,
}

/// The run of `request` (one ref) whose output `logs` shows: with
/// `build`, its run in that build (a usage error naming the builds it ran
/// in otherwise); else its last run if that run failed after the last
/// materialization, else the run whose manifest produced its current
/// content, else its last run.
pub fn logs(workspace: &Workspace, request: &str, build: Option<u64>) -> Result<Logs, AppError> {
    let partition = parse_ref(request)?;
    if let Some(path) = source_path(workspace, &partition) {
        return Ok(Logs::Source { path });
    }
    let Some(store) = workspace.open_reader()? else {
        return Ok(Logs::NothingBuilt);
    };
    let events = partition_events(&store, &partition)?;
    let mut dispatched = crate::history::dispatches(&events);
    let runs: Vec<JobRun> = events
        .iter()
        .filter_map(|event| {
            let mut run = JobRun::of_event(event)?;
            run.dispatched = dispatched.remove(&event.seq);
            Some(run)
        })
        .collect();
    let run = match build {
        Some(build) => match runs.iter().rev().find(|run| run.build == build) {
            Some(run) => Some(run.clone()),
            None => return Err(not_run_in(&partition, build, &runs)),
        },
        None => {
            // The run behind the current content, unless a failure came since.
            let state = store.catalog().partition(&partition)?;
            let failed_since = state.as_ref().is_some_and(|state| state.failed.is_some());
            let current = state.and_then(|state| state.current);
            match (failed_since, current) {
                (false, Some(current)) => match store.catalog().action(&current.key)? {
                    Some(manifest) => {
                        let mut run = JobRun::of_manifest(&manifest);
                        // Its run's dispatch, when the run is in REF's events.
                        run.dispatched = runs
                            .iter()
                            .rev()
                            .find(|r| r.error.is_none() && r.build == run.build && r.key == run.key)
                            .and_then(|r| r.dispatched.clone());
                        Some(run)
                    }
                    None => runs.last().cloned(),
                },
                _ => runs.last().cloned(),
            }
        }
    };
    Ok(match run {
        Some(run) => Logs::Run(Box::new(JobLogs { run, store })),
        None => Logs::NeverRun,
    })
}

fn not_run_in(partition: &PartitionRef, build: u64, runs: &[JobRun]) -> AppError {
    let mut builds: Vec<String> = runs.iter().map(|r| r.build.to_string()).collect();
    builds.dedup();
    let ran = if builds.is_empty() {
        "it never ran here".to_owned()
    } else {
        format!("it ran in builds {}", builds.join(", "))
    };
    AppError::Usage(format!("{partition} did not run in build {build}: {ran}"))
}

/// A captured stream, verified, to read (streamed: memory stays small
/// whatever its size).
pub struct Captured<'a> {
    /// Its length in bytes.
    pub length: u64,
    reader: Box<dyn Read + Send + 'a>,
}

impl Read for Captured<'_> {
    /// Reads through the store's verifying reader: the read that reaches
    /// the end fails if the blob changed since it was checked.
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buffer)
    }
}

/// The error of a captured `stream` that cannot be read (missing, corrupt,
/// not a regular file): exit 3, pointing at `cairn store verify`.
pub fn unreadable(stream: Stream, error: &dyn std::fmt::Display) -> AppError {
    AppError::StoreProblem(format!(
        "the {} of this run cannot be read: {error} (`cairn store verify` checks the store)",
        stream.name()
    ))
}

impl JobLogs {
    /// The captured `stream` of the run, read through the store's port
    /// ([`BlobStore::open_verified`]) and verified before it is handed out
    /// (a corrupt blob is an error, exit 3, never served); `None` when the
    /// stream was empty.
    pub fn open(&self, stream: Stream) -> Result<Option<Captured<'_>>, AppError> {
        let Some(digest) = self.run.blob(stream) else {
            return Ok(None);
        };
        let blobs: &dyn BlobStore = self.store.blobs();
        // Verified first, then streamed: the first pass reads the blob to
        // its end through the verifying reader (the read that reaches the
        // end fails on a corrupt blob) and counts its bytes, so that
        // nothing of a corrupt blob is served; the second streams it.
        // Either opens without blocking, a regular file only (a FIFO
        // planted under the blob's name would block forever).
        let mut check = blobs
            .open_verified(&digest)
            .map_err(|error| unreadable(stream, &error))?;
        let length = std::io::copy(&mut check, &mut std::io::sink())
            .map_err(|error| unreadable(stream, &error))?;
        let reader = blobs
            .open_verified(&digest)
            .map_err(|error| unreadable(stream, &error))?;
        Ok(Some(Captured { length, reader }))
    }
}

/// How much of the end of a stderr its tail is taken from, as the engine
/// takes it.
const TAIL_BYTES: usize = cairn_engine::exec::run::TAIL_BYTES as usize;

pub use cairn_engine::exec::run::tail_lines;

/// The tail of a whole captured stderr (`bytes`), as [`tail_lines`]
/// takes it from its last 16 KiB.
pub fn tail_of(bytes: &[u8]) -> Vec<String> {
    let start = bytes.len().saturating_sub(TAIL_BYTES);
    tail_lines(&bytes[start..], start > 0)
}

impl JobLogs {
    /// The run of a failure `event` (an `ActionFailed`), to read from
    /// `store`; `None` for another event, or a failure before the job ran
    /// (no key).
    pub fn of_failure(store: crate::StoreHandle, event: &Event) -> Option<JobLogs> {
        match &event.kind {
            EventKind::ActionFailed { .. } => Some(JobLogs {
                run: JobRun::of_event(event)?,
                store,
            }),
            _ => None,
        }
    }

    /// The tail of the run's stderr that its build showed when it failed
    /// (the observer's `stderr_tail`, [`tail_lines`]): read through the
    /// verifying reader, keeping only the last 16 KiB in memory. Empty
    /// when nothing was printed.
    pub fn stderr_tail(&self) -> Result<Vec<String>, AppError> {
        let Some(mut captured) = self.open(Stream::Stderr)? else {
            return Ok(Vec::new());
        };
        let mut kept: Vec<u8> = Vec::with_capacity(2 * TAIL_BYTES);
        let mut cut = false;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = captured
                .read(&mut buffer)
                .map_err(|error| unreadable(Stream::Stderr, &error))?;
            if read == 0 {
                break;
            }
            kept.extend_from_slice(&buffer[..read]);
            if kept.len() > 2 * TAIL_BYTES {
                kept.drain(..kept.len() - TAIL_BYTES);
                cut = true;
            }
        }
        if kept.len() > TAIL_BYTES {
            kept.drain(..kept.len() - TAIL_BYTES);
            cut = true;
        }
        Ok(tail_lines(&kept, cut))
    }
}

#[cfg(test)]
mod tail_tests {
    use super::*;

    #[test]
    fn the_tail_is_the_last_non_blank_lines_of_the_last_16_kib() {
        let text: String = (1..=30).map(|n| format!("line {n}\n\n")).collect();
        let tail = tail_of(text.as_bytes());
        assert_eq!(tail.len(), 10);
        assert_eq!(tail[0], "line 21");
        assert_eq!(tail[9], "line 30");
        assert!(tail_of(b"").is_empty());
        // Longer than 16 KiB: the partial first line read is dropped.
        let long = format!("{}\nend\n", "x".repeat(20_000));
        assert_eq!(tail_of(long.as_bytes()), ["end"]);
        let wide = "y".repeat(500);
        assert_eq!(tail_of(wide.as_bytes())[0].chars().count(), 401);
    }
}
