//! What the pulling workers did, as one thread of the coordinator sees it.
//!
//! A worker claims a queue entry by renaming it into `claimed/<seq>@<its
//! Slurm job id>`, and marks `done/<seq>` once it has written the attempt's
//! outcome (worker.rs). One thread reads those two directories every
//! [`super::OUTCOME_POLL`] and wakes the waiting attempts, which then look
//! at what it saw, in memory. Before, every waiting attempt (64 or more
//! at once) looked for its claim and its outcome with a `stat` of its own
//! every 10 ms: a third of the coordinator's CPU in a 30×30 build
//! (docs/slurm.md, "Batching").
//!
//! The marks are hints, never the truth: the outcome file is, and an
//! attempt still reads it every [`super::STATE_INTERVAL`] without a mark.
//! The coordinator removes an attempt's claim and mark once it has its
//! outcome, so both directories hold only what is in flight.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The directory of the workers' marks (`done/<seq>`) in the build's Slurm
/// directory.
pub const DONE: &str = "done";

/// What the watch thread saw.
#[derive(Default)]
pub struct Seen {
    /// Queue entry → the Slurm job id of the worker that claimed it.
    pub claims: HashMap<String, u64>,
    /// Queue entries whose outcome a worker marked as written.
    pub done: HashSet<String>,
    /// Counts the looks that saw something new.
    generation: u64,
    /// Set when the runner goes: the thread ends.
    stop: bool,
}

pub struct Watch {
    seen: Mutex<Seen>,
    changed: Condvar,
    claimed: PathBuf,
    done: PathBuf,
}

impl Watch {
    /// Starts the thread watching `dir`'s `claimed/` and `done/` every
    /// `every`.
    pub fn start(dir: &Path, claimed: &str, every: Duration) -> Arc<Watch> {
        let watch = Arc::new(Watch {
            seen: Mutex::new(Seen::default()),
            changed: Condvar::new(),
            claimed: dir.join(claimed),
            done: dir.join(DONE),
        });
        let thread = Arc::clone(&watch);
        let started = std::thread::Builder::new()
            .name("cairn-slurm-watch".to_owned())
            .spawn(move || {
                while thread.look() {
                    std::thread::sleep(every);
                }
            });
        if let Err(error) = started {
            // Without it, the attempts still read their outcome files every
            // STATE_INTERVAL: slower, never wrong.
            tracing::warn!("cannot start the Slurm watch thread: {error}");
        }
        watch
    }

    /// One look at both directories: wakes the waiting attempts if
    /// something new is there. Whether to go on.
    fn look(&self) -> bool {
        let claims: Vec<(String, u64)> = names(&self.claimed)
            .into_iter()
            .filter_map(|name| {
                let (entry, id) = name.rsplit_once('@')?;
                Some((entry.to_owned(), id.parse().ok()?))
            })
            .collect();
        let done = names(&self.done);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.stop {
            return false;
        }
        let mut new = false;
        for (entry, id) in claims {
            new |= seen.claims.insert(entry, id) != Some(id);
        }
        for entry in done {
            new |= seen.done.insert(entry);
        }
        if new {
            seen.generation += 1;
            drop(seen);
            self.changed.notify_all();
        }
        true
    }

    /// Waits up to `most` for a look newer than `generation` (one taken
    /// with [`Watch::with`] before the waiter looked at what was seen, so
    /// no news is missed in between).
    pub fn wait_after(&self, generation: u64, most: Duration) {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .changed
            .wait_timeout_while(seen, most, |seen| {
                seen.generation == generation && !seen.stop
            })
            .unwrap_or_else(|e| e.into_inner());
    }

    /// `check` of what was seen, now, and the look's generation.
    pub fn with<T>(&self, check: impl FnOnce(&Seen) -> T) -> (T, u64) {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        (check(&seen), seen.generation)
    }

    /// The attempt of queue entry `entry` has its outcome: its claim (by
    /// worker `id`) and its mark go, in memory and on disk.
    pub fn forget(&self, entry: &str, id: Option<u64>) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.claims.remove(entry);
        seen.done.remove(entry);
        drop(seen);
        if let Some(id) = id {
            let _ = fs::remove_file(self.claimed.join(format!("{entry}@{id}")));
        }
        let _ = fs::remove_file(self.done.join(entry));
    }

    /// Ends the thread (at its next look).
    pub fn stop(&self) {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
    }
}

/// The names in `dir` (none if it cannot be read).
fn names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| entry.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A claim and a mark written by a worker are seen by a waiter, and a
    /// forgotten attempt leaves nothing behind.
    #[test]
    fn claims_and_marks_are_seen_and_forgotten() {
        let temp = tempfile::tempdir().unwrap();
        fs::create_dir_all(temp.path().join("claimed")).unwrap();
        fs::create_dir_all(temp.path().join(DONE)).unwrap();
        let watch = Watch::start(temp.path(), "claimed", Duration::from_millis(5));
        fs::write(temp.path().join("claimed/0000000007@42"), b"spec").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let until = |what: &str, seen: &dyn Fn(&Seen) -> bool| loop {
            let (yes, generation) = watch.with(|s| seen(s));
            if yes {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{what} is seen");
            watch.wait_after(generation, Duration::from_secs(1));
        };
        until("the claim", &|seen| {
            seen.claims.get("0000000007") == Some(&42)
        });
        assert!(!watch.with(|seen| seen.done.contains("0000000007")).0);
        fs::write(temp.path().join("done/0000000007"), b"").unwrap();
        until("the mark", &|seen| seen.done.contains("0000000007"));
        watch.forget("0000000007", Some(42));
        assert!(!temp.path().join("claimed/0000000007@42").exists());
        assert!(!temp.path().join("done/0000000007").exists());
        assert!(
            watch
                .with(|seen| seen.claims.is_empty() && seen.done.is_empty())
                .0
        );
        watch.stop();
    }
}
