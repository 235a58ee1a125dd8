//! The staging root (`<data>/.cairn-tmp/`): what actions leave in it to be
//! removed, and the run directories of their jobs' attempts
//! (`run/<key>/<id>/`, with the `current` marker of the attempt a
//! checkpoint describes: see exec/run.rs).
//!
//! Emptied attempt and key directories are not removed but kept in
//! `<root>/spare/` for the next attempts ([`reuse_dir`]; an attempt alone
//! in its key's directory is kept with it as one pair, [`reuse_pair`]): on ext4 without
//! a journal an inode freed in the last minute (six while its inode table
//! block is dirty) is skipped, one by one, by every later allocation in
//! its group, so removing three directories and two logs per action made
//! every file and directory created during a build, the jobs' own
//! included, walk past all those freed before it, and each `rmdir` on a
//! file system mounted `discard` waits for its discard on the worker
//! (docs/internals.md, "Staging"; benches/e2e/notes.md, thirteenth round).
//! The spares go with the staging root at the end of the build
//! ([`clear_staging`]).

use std::fs;
use std::path::{Path, PathBuf};

/// The names of an attempt's logs in its run directory (exec/run.rs).
const LOG_STDOUT: &str = "stdout";
const LOG_STDERR: &str = "stderr";

/// Where a staging root keeps its spare directories.
const SPARE: &str = "spare";

/// Something an action left in the staging root to be removed.
#[derive(Debug)]
pub enum Leftover {
    /// A partition's earlier content, moved aside when it was replaced.
    MovedAside(PathBuf),
    /// A run directory whose outputs were moved out of it.
    EmptiedRunDir(PathBuf),
}

impl Leftover {
    pub fn remove(self) {
        match self {
            Leftover::MovedAside(path) => {
                // A symlink moved aside is removed, never followed.
                let _ = if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
            Leftover::EmptiedRunDir(run_dir) => remove_emptied_run_dir(&run_dir),
        }
    }
}

/// Keeps the run directory of a job whose outputs were moved out of it (and
/// then its key's directory) as a spare when it holds only its logs and an
/// empty `out/`; else removes what is normally left (its logs and an empty
/// `out`) by name, four calls where a walk makes about twenty, anything
/// else by the walk, then the key's directory if nothing else is left in
/// it.
pub(crate) fn remove_emptied_run_dir(run_dir: &Path) {
    if keep_spare_pair(run_dir) {
        return;
    }
    if keep_spare_attempt(run_dir) {
        if let Some(key_dir) = run_dir.parent()
            && !keep_spare_key_dir(key_dir)
        {
            remove_key_dir_if_done(run_dir);
        }
        return;
    }
    let _ = fs::remove_file(run_dir.join(LOG_STDOUT));
    let _ = fs::remove_file(run_dir.join(LOG_STDERR));
    let _ = fs::remove_dir(run_dir.join("out"));
    if fs::remove_dir(run_dir).is_err() {
        let _ = fs::remove_dir_all(run_dir);
    }
    remove_key_dir_if_done(run_dir);
}

std::thread_local! {
    /// The emptied run directories this thread (a worker) put off.
    static DEFERRED: std::cell::RefCell<Vec<PathBuf>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Puts off [`remove_emptied_run_dir`] of `run_dir` until this thread's
/// next job has started ([`handle_deferred`], which the job runner calls
/// once the process runs: exec/run.rs), so that keeping it as a spare (its
/// listings, a rename, the next `out/0` made) is done while that job runs
/// instead of before it starts; in a chain every action waits for it
/// otherwise. The worker hands its result back first, and calls
/// [`handle_deferred`] itself once the next attempt is over and before it
/// waits for work or stops, so nothing deferred outlives the build.
pub(crate) fn defer_emptied_run_dir(run_dir: PathBuf) {
    DEFERRED.with(|deferred| deferred.borrow_mut().push(run_dir));
}

/// Whether this thread put off a run directory ([`defer_emptied_run_dir`]).
pub(crate) fn has_deferred() -> bool {
    DEFERRED.with(|deferred| !deferred.borrow().is_empty())
}

/// Handles the run directories this thread deferred
/// ([`defer_emptied_run_dir`]).
pub(crate) fn handle_deferred() {
    let taken = DEFERRED.with(|deferred| std::mem::take(&mut *deferred.borrow_mut()));
    for run_dir in taken {
        remove_emptied_run_dir(&run_dir);
    }
}

/// Emptied directories kept for reuse in `<root>/spare/`: attempt
/// directories (with their empty `out/` and their logs, which the next
/// job's truncate) and key directories. A new one is renamed from there
/// into place instead of being made ([`reuse_dir`]), and an emptied one
/// renamed there instead of being removed: neither allocates nor frees an
/// inode (see the module doc for why that matters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SpareDir {
    Attempt,
    Key,
    /// A key directory holding one emptied attempt directory, kept whole:
    /// one rename out and one back instead of two each (named
    /// `p<n>-<attempt id>`).
    Pair,
}

/// The most spares of each kind kept per staging root: one for each
/// attempt that ended while others ran, so about one per job slot; past
/// it a directory is removed.
const MAX_SPARE_DIRS: usize = 64;

type SpareDirs = std::collections::HashMap<(PathBuf, SpareDir), Vec<PathBuf>>;
static SPARE_DIRS: std::sync::LazyLock<std::sync::Mutex<SpareDirs>> =
    std::sync::LazyLock::new(std::sync::Mutex::default);

fn spare_dirs() -> std::sync::MutexGuard<'static, SpareDirs> {
    SPARE_DIRS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The staging root of a key directory `<root>/run/<key>` (`Key`, `Pair`)
/// or an attempt directory `<root>/run/<key>/<id>` (`Attempt`).
fn root_of(kind: SpareDir, dir: &Path) -> Option<&Path> {
    let run = match kind {
        SpareDir::Key | SpareDir::Pair => dir.parent()?,
        SpareDir::Attempt => dir.parent()?.parent()?,
    };
    (run.file_name()? == "run").then(|| run.parent())?
}

/// Makes `target` (a new attempt or key directory, which must not exist)
/// from a spare of its staging root, if there is one: whether it did.
pub(crate) fn reuse_dir(kind: SpareDir, target: &Path) -> bool {
    let Some(root) = root_of(kind, target) else {
        return false;
    };
    loop {
        let Some(spare) = spare_dirs()
            .get_mut(&(root.to_owned(), kind))
            .and_then(Vec::pop)
        else {
            return false;
        };
        match fs::rename(&spare, target) {
            Ok(()) if kind == SpareDir::Key || empty_logs(target) => return true,
            Ok(()) => {
                let _ = fs::remove_dir_all(target);
                return false;
            }
            // Gone (its root was cleared): the next one.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && !spare.exists() => {}
            Err(_) => {
                let _ = fs::remove_dir_all(&spare);
                return false;
            }
        }
    }
}

/// Empties the logs a reused attempt directory brought along, now rather
/// than by the next job's own create: an attempt that fails before its
/// job starts (or a runner that writes no log) must never find the
/// previous job's output there and store it as its own. Truncated in
/// place, which frees no inode, and only when not empty already (most
/// jobs print nothing, and on ext4 a truncate dirties the inode even at
/// length 0). Whether both are empty regular files (or absent): anything
/// else under a log's name is not reused.
fn empty_logs(run_dir: &Path) -> bool {
    [LOG_STDOUT, LOG_STDERR].iter().all(|log| {
        let path = run_dir.join(log);
        match fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.is_file() && metadata.len() == 0 => true,
            Ok(metadata) if metadata.is_file() => fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&path)
                .is_ok(),
            Ok(_) => false,
            Err(error) => error.kind() == std::io::ErrorKind::NotFound,
        }
    })
}

/// Keeps `dir` as a spare of `kind` (renamed into `<root>/spare/`, its
/// name ending in `suffix`): whether it did.
fn keep_dir(kind: SpareDir, dir: &Path, suffix: &str) -> bool {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let Some(root) = root_of(kind, dir) else {
        return false;
    };
    let key = (root.to_owned(), kind);
    if spare_dirs()
        .get(&key)
        .is_some_and(|kept| kept.len() >= MAX_SPARE_DIRS)
    {
        return false;
    }
    let spare = root.join(SPARE).join(format!(
        "{}{}{suffix}",
        match kind {
            SpareDir::Attempt => "a",
            SpareDir::Key => "k",
            SpareDir::Pair => "p",
        },
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let moved = match fs::rename(dir, &spare) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && dir.exists() => {
            let _ = fs::create_dir(root.join(SPARE));
            fs::rename(dir, &spare)
        }
        moved => moved,
    };
    if moved.is_err() {
        return false;
    }
    spare_dirs().entry(key).or_default().push(spare);
    true
}

/// Whether `dir` holds nothing (or cannot be read).
fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

/// Keeps an attempt directory whose outputs were moved out as a spare,
/// when it holds only an empty `out/` and its logs (a checkpoint or a
/// resume file is removed first: a reused attempt must not show the next
/// job one).
fn keep_spare_attempt(run_dir: &Path) -> bool {
    attempt_is_spare(run_dir) && keep_dir(SpareDir::Attempt, run_dir, "")
}

/// Whether an attempt directory holds only its logs and an empty `out/`
/// (a checkpoint or resume file is removed on the way).
fn attempt_is_spare(run_dir: &Path) -> bool {
    // One listing: a checkpoint or resume file is removed where it is
    // found (most jobs leave none, and a blind unlink of each is two
    // failed system calls per action).
    let only_logs = fs::read_dir(run_dir).is_ok_and(|entries| {
        entries.flatten().all(|entry| {
            let name = entry.file_name();
            if name == "checkpoint.json" || name == "resume.json" {
                return fs::remove_file(entry.path()).is_ok();
            }
            name == LOG_STDOUT || name == LOG_STDERR || name == "out"
        })
    });
    only_logs && is_empty_dir(&run_dir.join("out"))
}

/// Keeps the key directory of `run_dir` whole as a spare pair when it
/// holds only this attempt, and the attempt only its logs and an empty
/// `out/` ([`attempt_is_spare`]), with the next attempt's `out/0` made in
/// it (every action has a first output: one `mkdir` less when the pair is
/// reused, on the next action's path). The next key's attempt keeps the
/// directory's name; its job's `CAIRN_RUN_ID` is its own (exec/run.rs).
fn keep_spare_pair(run_dir: &Path) -> bool {
    let (Some(key_dir), Some(id)) = (
        run_dir.parent(),
        run_dir.file_name().and_then(|name| name.to_str()),
    ) else {
        return false;
    };
    // The attempt id follows a `-` in the spare's name: found again by
    // name when the pair is reused.
    let first_output = run_dir.join("out").join("0");
    if !(only_entry(key_dir).is_some_and(|only| only == id)
        && attempt_is_spare(run_dir)
        && fs::create_dir(&first_output).is_ok())
    {
        return false;
    }
    if keep_dir(SpareDir::Pair, key_dir, &format!("-{id}")) {
        return true;
    }
    // Kept otherwise (an attempt alone, or removed): as it was.
    let _ = fs::remove_dir(&first_output);
    false
}

/// The name of the one entry in `dir`, if it holds exactly one.
fn only_entry(dir: &Path) -> Option<String> {
    let mut entries = fs::read_dir(dir).ok()?;
    let first = entries.next()?.ok()?.file_name().into_string().ok()?;
    entries.next().is_none().then_some(first)
}

/// Makes `key_dir` (which must not exist) from a spare pair of its
/// staging root, if there is one: the attempt id and directory inside it,
/// its logs emptied and its `out/` holding only an empty `out/0`.
pub(crate) fn reuse_pair(key_dir: &Path) -> Option<(String, PathBuf)> {
    let root = root_of(SpareDir::Pair, key_dir)?;
    loop {
        let spare = spare_dirs()
            .get_mut(&(root.to_owned(), SpareDir::Pair))
            .and_then(Vec::pop)?;
        let id = spare.file_name()?.to_str()?.split_once('-')?.1.to_owned();
        match fs::rename(&spare, key_dir) {
            Ok(()) => {
                let run_dir = key_dir.join(&id);
                if empty_logs(&run_dir) {
                    return Some((id, run_dir));
                }
                let _ = fs::remove_dir_all(key_dir);
                return None;
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && !spare.exists() => {}
            Err(_) => {
                let _ = fs::remove_dir_all(&spare);
                return None;
            }
        }
    }
}

/// Keeps a key directory with nothing left in it as a spare.
fn keep_spare_key_dir(key_dir: &Path) -> bool {
    is_empty_dir(key_dir) && keep_dir(SpareDir::Key, key_dir, "")
}

/// Removes an attempt's directory, and the key's if it is left empty.
pub(crate) fn remove_attempt(run_dir: &Path) {
    let _ = fs::remove_dir_all(run_dir);
    remove_key_dir_if_done(run_dir);
}

/// Removes the key directory above `run_dir` once no attempt is left in
/// it (and with it the `current` marker, which names a removed attempt).
fn remove_key_dir_if_done(run_dir: &Path) {
    let Some(key_dir) = run_dir.parent() else {
        return;
    };
    if fs::remove_dir(key_dir).is_ok() {
        return;
    }
    let current = key_dir.join(CURRENT);
    let attempts = fs::read_dir(key_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| entry.file_name() != CURRENT)
                .count()
        })
        .unwrap_or(1);
    if attempts == 0 {
        let _ = fs::remove_file(current);
        let _ = fs::remove_dir(key_dir);
    }
}

/// The file in a key's directory naming the attempt whose partial output the
/// key's last checkpoint describes.
pub(crate) const CURRENT: &str = "current";

/// Removes what earlier builds left in the staging root, except `run/`:
/// the staging directories of actions that checkpointed, kept for resuming.
/// The spares go too (and are forgotten).
pub(crate) fn clear_staging(root: &std::path::Path) {
    spare_dirs().retain(|(spare_root, _), _| spare_root != root);
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name() != "run" {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    // Empty directories go; a non-empty `run/` stays (remove_dir refuses).
    let _ = std::fs::remove_dir(root.join("run"));
    let _ = std::fs::remove_dir(root);
}

#[cfg(test)]
mod tests {
    use super::{Leftover, SpareDir, clear_staging, reuse_dir, reuse_pair};
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    fn inode(path: &std::path::Path) -> u64 {
        fs::metadata(path).unwrap().ino()
    }

    /// An attempt directory as a job that printed something leaves it once
    /// its outputs were moved out: an empty `out/` and its two logs.
    fn emptied_attempt(attempt: &std::path::Path) -> std::path::PathBuf {
        fs::create_dir_all(attempt.join("out")).unwrap();
        fs::write(attempt.join("stdout"), "printed").unwrap();
        fs::write(attempt.join("stderr"), "").unwrap();
        attempt.to_owned()
    }

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// An emptied attempt directory alone in its key directory is the next
    /// action's with it, as one pair (renamed, not removed and made again:
    /// the same inodes), a checkpoint left in it removed first, its logs
    /// emptied and its first output directory made.
    #[test]
    fn an_emptied_key_and_attempt_directory_are_reused_as_a_pair() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join(".cairn-tmp");
        let attempt = emptied_attempt(&root.join("run/k1/a1"));
        fs::write(attempt.join("checkpoint.json"), "{}").unwrap();
        let (attempt_inode, key_inode) = (inode(&attempt), inode(&root.join("run/k1")));
        Leftover::EmptiedRunDir(attempt).remove();
        assert!(!root.join("run/k1").exists(), "the key directory went too");
        assert_eq!(names(&root.join("spare")).len(), 1, "one pair");

        let key = root.join("run/k2");
        let (id, next) = reuse_pair(&key).expect("the pair is reused");
        assert_eq!((id.as_str(), next.clone()), ("a1", key.join("a1")));
        assert_eq!((inode(&key), inode(&next)), (key_inode, attempt_inode));
        assert_eq!(names(&key), ["a1"]);
        assert_eq!(
            names(&next),
            ["out", "stderr", "stdout"],
            "no checkpoint came along"
        );
        assert_eq!(
            fs::read_to_string(next.join("stdout")).unwrap(),
            "",
            "the last job's output did not come along"
        );
        assert_eq!(names(&next.join("out")), ["0"], "the next out/0 made");
        assert!(names(&next.join("out/0")).is_empty());
        assert!(reuse_pair(&root.join("run/k3")).is_none(), "none left");
    }

    /// A log that is no longer a regular file (a job replaced its own
    /// with a link) is never followed: the pair is not reused, and what the
    /// link named keeps its content.
    #[test]
    fn a_pair_whose_log_is_a_link_is_not_reused_and_the_link_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join(".cairn-tmp");
        let attempt = emptied_attempt(&root.join("run/k1/a1"));
        let elsewhere = dir.path().join("elsewhere.csv");
        fs::write(&elsewhere, "kept").unwrap();
        fs::remove_file(attempt.join("stdout")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, attempt.join("stdout")).unwrap();
        Leftover::EmptiedRunDir(attempt).remove();
        assert!(reuse_pair(&root.join("run/k2")).is_none());
        assert!(!root.join("run/k2").exists(), "removed, not reused");
        assert_eq!(fs::read_to_string(&elsewhere).unwrap(), "kept");
    }

    /// An emptied attempt directory whose key directory holds more (here
    /// the `current` marker) is kept alone, and the key directory removed
    /// once nothing but the marker is left; one with anything beside its
    /// logs is removed; clearing the staging root forgets the spares.
    #[test]
    fn emptied_attempt_and_key_directories_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join(".cairn-tmp");
        let attempt = emptied_attempt(&root.join("run/k1/a1"));
        fs::write(root.join("run/k1").join(super::CURRENT), "a0").unwrap();
        let attempt_inode = inode(&attempt);
        Leftover::EmptiedRunDir(attempt).remove();
        assert!(!root.join("run/k1").exists(), "the key directory went too");
        assert_eq!(names(&root.join("spare")).len(), 1, "the attempt alone");
        assert!(reuse_pair(&root.join("run/k2")).is_none(), "not a pair");

        fs::create_dir_all(root.join("run/k2")).unwrap();
        let next = root.join("run/k2/a2");
        assert!(reuse_dir(SpareDir::Attempt, &next));
        assert_eq!(inode(&next), attempt_inode);
        assert_eq!(names(&next), ["out", "stderr", "stdout"]);
        assert_eq!(fs::read_to_string(next.join("stdout")).unwrap(), "");
        assert!(
            !reuse_dir(SpareDir::Attempt, &root.join("run/k2/a3")),
            "none left"
        );

        // Something beside the logs: removed, not kept.
        fs::write(next.join("stray"), "").unwrap();
        Leftover::EmptiedRunDir(next.clone()).remove();
        assert!(!next.exists());
        assert!(!reuse_dir(SpareDir::Attempt, &root.join("run/k3/a4")));
        assert!(reuse_pair(&root.join("run/k3")).is_none());

        // Cleared with the staging root, and forgotten.
        let last = root.join("run/k4/a5");
        fs::create_dir_all(last.join("out")).unwrap();
        Leftover::EmptiedRunDir(last).remove();
        clear_staging(&root);
        assert!(!root.exists());
        fs::create_dir_all(root.join("run")).unwrap();
        assert!(reuse_pair(&root.join("run/k5")).is_none());
        assert!(!reuse_dir(SpareDir::Key, &root.join("run/k5")));
        assert!(!reuse_dir(SpareDir::Attempt, &root.join("run/k5/a6")));
    }

    #[test]
    fn a_leftover_is_removed_and_a_link_moved_aside_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // A partition's earlier content, moved aside.
        let aside = root.join("trash-a");
        fs::create_dir_all(aside.join("sub")).unwrap();
        fs::write(aside.join("sub/file.csv"), "old").unwrap();
        Leftover::MovedAside(aside.clone()).remove();
        assert!(!aside.exists());
        // A link moved aside goes; what it pointed at stays.
        let kept = root.join("elsewhere");
        fs::create_dir(&kept).unwrap();
        fs::write(kept.join("file.csv"), "keep").unwrap();
        let link = root.join("trash-b");
        std::os::unix::fs::symlink(&kept, &link).unwrap();
        Leftover::MovedAside(link.clone()).remove();
        assert!(fs::symlink_metadata(&link).is_err());
        assert_eq!(fs::read_to_string(kept.join("file.csv")).unwrap(), "keep");
        // A run directory: its logs, an empty `out`, and anything else.
        let run = root.join("run/key");
        fs::create_dir_all(run.join("out")).unwrap();
        fs::write(run.join("stdout"), "").unwrap();
        fs::write(run.join("stderr"), "").unwrap();
        fs::write(run.join("stray"), "").unwrap();
        Leftover::EmptiedRunDir(run.clone()).remove();
        assert!(!run.exists());
    }
}
