//! The event log's tail, and the server-sent event streams that follow it
//! (docs/api.md, "Server-sent events").
//!
//! One tailer reads the events committed since it last looked (woken by a
//! finished operation, else every 100 ms when the catalog file changed)
//! and keeps the latest of them in memory; `head` is the last seq it read.
//! A stream reads only up to `head`, from memory when it can and from the
//! log when it fell behind (or resumes from an old `Last-Event-ID`), in
//! seq order: no event is missed or sent twice. The tailer gives a running
//! operation its build id when it reads the build's `BuildRequested`,
//! before it moves `head`: a stream never sees an operation's events
//! before it can tell they are the operation's.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cairn_app::Workspace;
use cairn_engine::record::{Event, EventKind};

use crate::registry::{Registry, lock};

/// Events kept in memory for the streams: those that keep up read from
/// here; one that fell further behind reads the log, [`BATCH`] at a time.
/// An event with its manifest is about half a KiB in memory: 65,536 of
/// them held 30-odd MiB after a 365x30 build, half the idle server's
/// budget (issue 22: 64 MiB), for streams that seldom lag that far.
const KEPT: usize = 4 * BATCH;
/// Events read from the log at once (for a stream that fell behind, too).
pub const BATCH: usize = 2_048;

pub struct Feed {
    catalog: PathBuf,
    /// The latest events read, in seq order (contiguous seqs).
    kept: Mutex<VecDeque<Arc<Event>>>,
    /// The last seq read.
    pub head: tokio::sync::watch::Sender<u64>,
    /// Wakes the tailer at once.
    pub poke: tokio::sync::Notify,
    /// The catalog file's length and time when last read, and when.
    stamp: Mutex<(Option<(u64, SystemTime)>, Instant)>,
    /// Set when the server stops: streams end.
    pub closed: tokio::sync::watch::Sender<bool>,
}

impl Feed {
    pub fn new(workspace: &Workspace) -> Result<Feed, cairn_app::AppError> {
        let last = match workspace.open_reader()? {
            Some(store) => store.catalog().last_seq()?,
            None => 0,
        };
        Ok(Feed {
            catalog: workspace.store_dir.join("catalog.redb"),
            kept: Mutex::new(VecDeque::new()),
            head: tokio::sync::watch::Sender::new(last),
            poke: tokio::sync::Notify::new(),
            stamp: Mutex::new((None, Instant::now())),
            closed: tokio::sync::watch::Sender::new(false),
        })
    }

    /// The last seq the tailer read.
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Wakes the tailer: something was committed.
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// Ends every stream (the server is stopping).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// The store's last seq, read now (0 if nothing was built or it cannot
    /// be read).
    pub fn last_seq_in_store(workspace: &Workspace) -> u64 {
        match workspace.open_reader() {
            Ok(Some(store)) => store.catalog().last_seq().unwrap_or(0),
            _ => 0,
        }
    }

    /// Reads what was committed since `head` (blocking), gives running
    /// operations of `registry` their build ids, keeps the events and
    /// moves `head`. Whether anything was read.
    /// Unless `poked` (something was just committed), an unchanged catalog
    /// file is not read.
    pub fn read_new(&self, workspace: &Workspace, registry: &Mutex<Registry>, poked: bool) -> bool {
        let stamp = std::fs::metadata(&self.catalog)
            .ok()
            .and_then(|metadata| Some((metadata.len(), metadata.modified().ok()?)));
        {
            let mut last = lock(&self.stamp);
            // Unchanged file: nothing new, but look anyway once a second
            // (a time stamp's granularity could hide a commit).
            if !poked
                && stamp.is_some()
                && last.0 == stamp
                && last.1.elapsed() < Duration::from_secs(1)
            {
                return false;
            }
            *last = (stamp, Instant::now());
        }
        let Ok(Some(store)) = workspace.open_reader() else {
            return false;
        };
        let mut read = false;
        loop {
            let from = self.head() + 1;
            let mut batch: Vec<Event> = Vec::new();
            let scanned =
                cairn_engine::ports::EventLog::scan_events(store.catalog(), from, &mut |event| {
                    batch.push(event);
                    batch.len() < BATCH
                });
            if let Err(error) = scanned {
                tracing::warn!("cannot read the event log: {error}");
                return read;
            }
            let Some(last) = batch.last().map(|event| event.seq) else {
                return read;
            };
            read = true;
            {
                let mut registry = lock(registry);
                for event in &batch {
                    if let EventKind::BuildRequested {
                        submission: Some(submission),
                        ..
                    } = &event.kind
                    {
                        registry.recognize(event.build, &submission.operation);
                    }
                }
            }
            {
                let mut kept = lock(&self.kept);
                kept.extend(batch.into_iter().map(Arc::new));
                while kept.len() > KEPT {
                    kept.pop_front();
                }
            }
            self.head.send_replace(last);
        }
    }

    /// Events after `cursor` up to `head`, at most [`BATCH`]: from memory
    /// if it holds them, else `None` (read them from the log).
    pub fn kept_after(&self, cursor: u64, head: u64) -> Option<Vec<Arc<Event>>> {
        let kept = lock(&self.kept);
        let first = kept.front()?.seq;
        if cursor + 1 < first {
            return None;
        }
        let start = usize::try_from(cursor + 1 - first).ok()?;
        Some(
            kept.iter()
                .skip(start)
                .take_while(|event| event.seq <= head)
                .take(BATCH)
                .cloned()
                .collect(),
        )
    }
}
