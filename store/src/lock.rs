//! The one-writer lock of a store: a kernel file lock (`flock` through
//! [`std::fs::File::try_lock`]) on `.cairn/lock`.
//!
//! Invariants:
//! - The lock is the kernel's, never a pid file: it is released when the
//!   [`StoreLock`] is dropped or the holder dies, so a killed build never
//!   leaves a stale lock behind.
//! - After acquiring, the holder writes `pid=<pid>\nsince_ms=<unix ms>\n` into
//!   the file (then `build=<id>` of the build it runs, and `server=<url>`
//!   when `cairn serve` holds it), only so that a process refused the lock
//!   can name the holder.
//!   The content is informational: it is read without the lock and may be
//!   empty or stale, and nothing but the message depends on it.
//! - A file system that cannot lock is refused: two writers on one store
//!   without a lock would interleave their logs.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use cairn_engine::ports::StoreError;

use crate::now_ms;

/// The held writer lock of a store; dropping it releases the lock.
#[derive(Debug)]
pub struct StoreLock {
    // Kept open: closing the file releases the kernel lock.
    _file: File,
    path: PathBuf,
    since_ms: u64,
    /// What the file says besides the pid and the time: the build and the
    /// server URL last recorded (one writer of the file at a time: the
    /// builds of a held store record theirs concurrently).
    details: std::sync::Mutex<Details>,
}

/// The optional lines of the lock file.
#[derive(Debug, Default, Clone)]
struct Details {
    build: Option<u64>,
    server: Option<String>,
}

impl StoreLock {
    /// Takes the writer lock of the store at `dir` (which exists). When
    /// another process holds it, fails with [`StoreError::Locked`], or with
    /// `wait` reports the holder through `on_wait` once and blocks until the
    /// lock is free.
    pub fn acquire(
        dir: &Path,
        wait: bool,
        on_wait: &mut dyn FnMut(&str),
    ) -> Result<StoreLock, StoreError> {
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| StoreError::io(&path, source))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let held = held_message(dir, &path);
                if !wait {
                    return Err(StoreError::Locked(held));
                }
                on_wait(&format!("{held}; waiting… (--no-wait to fail)"));
                file.lock().map_err(|error| lock_failure(dir, &error))?;
            }
            Err(TryLockError::Error(error)) => return Err(lock_failure(dir, &error)),
        }
        let since_ms = now_ms();
        write_holder(&file, since_ms, &Details::default())
            .map_err(|source| StoreError::io(&path, source))?;
        Ok(StoreLock {
            _file: file,
            path,
            since_ms,
            details: std::sync::Mutex::default(),
        })
    }

    /// Adds the build id the holder is running to the lock file, so that a
    /// process refused the lock can name it too (informational, like the
    /// pid).
    pub fn record_build(&self, build: u64) -> Result<(), StoreError> {
        self.record(|details| details.build = Some(build))
    }

    /// Says in the lock file that `cairn serve`, answering at `url`, holds
    /// the store: a local command refused the lock tells the user to use
    /// `cairn --remote URL` instead.
    pub fn record_server(&self, url: &str) -> Result<(), StoreError> {
        let url = url.trim().replace(['\n', '\r'], "");
        self.record(|details| details.server = Some(url))
    }

    fn record(&self, change: impl FnOnce(&mut Details)) -> Result<(), StoreError> {
        let mut details = self
            .details
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut details);
        write_holder(&self._file, self.since_ms, &details)
            .map_err(|source| StoreError::io(&self.path, source))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StoreLock {
    /// Empties the lock file before the lock is released (when the file
    /// closes, just after), so that the next process refused the lock never
    /// names this one, gone, as its holder.
    fn drop(&mut self) {
        let _ = self._file.set_len(0);
    }
}

/// The process holding the writer lock of a store, as another process
/// sees it ([`holder`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// The build it runs, once it has named one ([`StoreLock::record_build`]).
    pub build: Option<u64>,
    /// The URL of the `cairn serve` holding it ([`StoreLock::record_server`]).
    pub server: Option<String>,
}

/// Who holds the writer lock of the store at `dir` right now, without
/// taking it (a reader that tried the lock, even for an instant, could
/// make a `--no-wait` writer fail): the lock file names the holder, and
/// the kernel's lock table (`/proc/locks`) confirms that this process
/// holds an exclusive `flock` on that very file, so a holder that was
/// killed (its details left behind) or a reused pid is not taken for a
/// live one. Without `/proc/locks`, a live pid is believed. `None`: no
/// live holder (or none that has written its details yet).
pub fn holder(dir: &Path) -> Option<Holder> {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join("lock");
    let text = std::fs::read_to_string(&path).ok()?;
    let (pid, _) = parse_holder(&text)?;
    let inode = std::fs::metadata(&path).ok()?.ino();
    let held = match std::fs::read_to_string("/proc/locks") {
        Ok(locks) => holds_flock(&locks, pid, inode),
        Err(_) => Path::new(&format!("/proc/{pid}")).exists(),
    };
    held.then(|| Holder {
        pid,
        build: parse_build(&text),
        server: parse_server(&text),
    })
}

/// Whether `/proc/locks` lists a granted exclusive `flock` of `pid` on the
/// file with `inode`: `1: FLOCK  ADVISORY  WRITE 4242 fd:01:131090 0 EOF`
/// (a waiter's line has `->` after the number, and is not a holder).
fn holds_flock(locks: &str, pid: u32, inode: u64) -> bool {
    locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 6
            && fields[1] == "FLOCK"
            && fields[3] == "WRITE"
            && fields[4].parse::<u32>().ok() == Some(pid)
            && fields[5]
                .rsplit(':')
                .next()
                .and_then(|number| number.parse::<u64>().ok())
                == Some(inode)
    })
}

/// Replaces the lock file's content with this process's id, the time it
/// took the lock and, once known, the build it runs.
fn write_holder(mut file: &File, since_ms: u64, details: &Details) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    let mut text = format!("pid={}\nsince_ms={since_ms}\n", std::process::id());
    if let Some(build) = details.build {
        text.push_str(&format!("build={build}\n"));
    }
    if let Some(server) = &details.server {
        text.push_str(&format!("server={server}\n"));
    }
    file.write_all(text.as_bytes())
}

/// `store DIR is locked by another cairn process (pid P, for Ns)`, naming as
/// much of the holder as its lock file tells.
fn held_message(dir: &Path, lock_path: &Path) -> String {
    let prefix = format!("store {} is locked by another cairn process", dir.display());
    // The holder writes its details just after it acquires the lock, so they
    // may be missing for a moment (two builds started together), or still
    // name a holder that was killed before it could empty the file: wait up
    // to a second for the details of a live process; after that the message
    // says less.
    let mut text = String::new();
    let live = |text: &str| {
        parse_holder(text).filter(|(pid, _)| Path::new(&format!("/proc/{pid}")).exists())
    };
    for _ in 0..100 {
        text = std::fs::read_to_string(lock_path).unwrap_or_default();
        if live(&text).is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    match live(&text) {
        Some((pid, _)) if let Some(url) = parse_server(&text) => format!(
            "the store {} is held by `cairn serve` (pid {pid}) at {url}: \
             use `cairn --remote {url} build …`",
            dir.display()
        ),
        Some((pid, since_ms)) => {
            let seconds = now_ms().saturating_sub(since_ms) / 1000;
            let build = parse_build(&text)
                .map(|build| format!(", build {build}"))
                .unwrap_or_default();
            format!("{prefix} (pid {pid}{build}, for {seconds}s)")
        }
        None => prefix,
    }
}

fn parse_holder(text: &str) -> Option<(u32, u64)> {
    let mut pid = None;
    let mut since_ms = None;
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("pid=") {
            pid = value.trim().parse().ok();
        } else if let Some(value) = line.strip_prefix("since_ms=") {
            since_ms = value.trim().parse().ok();
        }
    }
    Some((pid?, since_ms?))
}

/// The `server=` line of a lock file, if a `cairn serve` holds it.
fn parse_server(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("server="))
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty())
}

/// The `build=` line of a lock file, if the holder wrote one.
fn parse_build(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("build="))
        .and_then(|value| value.trim().parse().ok())
}

/// The claim of one store's build on a data directory: a kernel lock
/// (`flock`) on `<data>/.cairn-owner`, held while the build runs and removed
/// when it ends. Two stores (`--store`) building into one `data/` at the
/// same time would remove each other's staging and replace each other's
/// partitions under running jobs; the second is refused, naming both stores.
/// Builds of one store are serialized by the store's own lock before they
/// get here; builds of two stores one after the other are allowed (each
/// restores or reruns what the other changed). A build killed with `kill -9`
/// leaves the file, unlocked, for the next build to take over.
#[derive(Debug)]
pub struct DataRootLock {
    /// Kept open: closing the file releases the kernel lock. `None` on a
    /// file system without locks: the check is skipped there, not the build.
    file: Option<(File, PathBuf)>,
}

impl DataRootLock {
    /// Claims `data_root` (created if missing) for a build of the store at
    /// `store_dir`, or fails with [`StoreError::Locked`] naming the store
    /// whose build holds it.
    pub fn acquire(data_root: &Path, store_dir: &Path) -> Result<DataRootLock, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let path = data_root.join(DATA_OWNER_FILE);
        let store = std::path::absolute(store_dir).unwrap_or_else(|_| store_dir.to_owned());
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
        };
        // The holder removes the file when it is done: a lock taken on a
        // file that was removed (or replaced) meanwhile is taken again.
        let file = loop {
            let file = match open() {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir_all(data_root)
                        .map_err(|source| StoreError::io(data_root, source))?;
                    open()
                }
                other => other,
            }
            .map_err(|source| StoreError::io(&path, source))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(StoreError::Locked(data_root_held_message(
                        data_root, &path, &store,
                    )));
                }
                Err(TryLockError::Error(error)) => {
                    tracing::warn!(
                        "{}: cannot lock ({error}); builds of other stores into this data directory are not detected",
                        path.display()
                    );
                    return Ok(DataRootLock { file: None });
                }
            }
            let locked = file
                .metadata()
                .map_err(|source| StoreError::io(&path, source))?;
            match std::fs::symlink_metadata(&path) {
                Ok(named) if (named.dev(), named.ino()) == (locked.dev(), locked.ino()) => {
                    break file;
                }
                _ => continue,
            }
        };
        let text = format!("store={}\npid={}\n", store.display(), std::process::id());
        (|| -> std::io::Result<()> {
            file.set_len(0)?;
            (&file).seek(SeekFrom::Start(0))?;
            (&file).write_all(text.as_bytes())
        })()
        .map_err(|source| StoreError::io(&path, source))?;
        Ok(DataRootLock {
            file: Some((file, path)),
        })
    }
}

impl Drop for DataRootLock {
    /// Removes the file, then releases the lock (the file closes just
    /// after): `data/` is left as the build made it.
    fn drop(&mut self) {
        if let Some((_, path)) = &self.file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `data directory D is in use by a build of store S (pid P); this build's
/// store is T: …`, naming as much of the holder as its file tells.
fn data_root_held_message(data_root: &Path, path: &Path, store: &Path) -> String {
    // The holder writes its details just after it locks: give it a moment.
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains("pid=") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::to_owned)
    };
    let holder = field("store=").map_or_else(
        || "another store".to_owned(),
        |other| format!("store {other}"),
    );
    let pid = field("pid=")
        .map(|pid| format!(" (pid {pid})"))
        .unwrap_or_default();
    format!(
        "data directory {} is in use by a build of {holder}{pid}; this build's store is {}: \
         two stores must not build into one data directory at the same time \
         (use one --store for this project, or wait for that build to finish)",
        data_root.display(),
        store.display()
    )
}

/// The file in a data directory that [`DataRootLock`] locks.
pub const DATA_OWNER_FILE: &str = ".cairn-owner";

fn lock_failure(dir: &Path, error: &std::io::Error) -> StoreError {
    let message = if error.kind() == std::io::ErrorKind::Unsupported
        || error.raw_os_error() == Some(libc::ENOLCK)
    {
        format!(
            "store {}: the file system does not support file locks ({error}); \
             cairn refuses to run without one, move the store to a local disk",
            dir.display()
        )
    } else {
        format!(
            "store {}: cannot lock {}: {error}",
            dir.display(),
            dir.join("lock").display()
        )
    };
    StoreError::Locked(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_wait() -> impl FnMut(&str) {
        |message: &str| panic!("unexpected wait: {message}")
    }

    #[test]
    fn a_second_holder_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = StoreLock::acquire(dir.path(), false, &mut no_wait()).unwrap();
        let error = StoreLock::acquire(dir.path(), false, &mut no_wait()).unwrap_err();
        let StoreError::Locked(message) = error else {
            panic!("expected Locked, got {error:?}")
        };
        let expected = format!(
            "store {} is locked by another cairn process (pid {}, for 0s)",
            dir.path().display(),
            std::process::id()
        );
        assert_eq!(message, expected);
        drop(first);
        StoreLock::acquire(dir.path(), false, &mut no_wait()).unwrap();
    }

    #[test]
    fn a_waiting_holder_is_told_once_and_gets_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = StoreLock::acquire(dir.path(), false, &mut no_wait()).unwrap();
        let (ready_sender, ready_receiver) = std::sync::mpsc::channel();
        let path = dir.path().to_owned();
        let waiter = std::thread::spawn(move || {
            let mut messages = Vec::new();
            let lock = StoreLock::acquire(&path, true, &mut |message: &str| {
                messages.push(message.to_owned());
                ready_sender.send(()).unwrap();
            })
            .unwrap();
            (lock, messages)
        });
        ready_receiver.recv().unwrap();
        drop(first);
        let (lock, messages) = waiter.join().unwrap();
        assert_eq!(messages.len(), 1);
        assert!(
            messages[0].ends_with("; waiting… (--no-wait to fail)"),
            "{}",
            messages[0]
        );
        assert!(messages[0].contains(&format!("(pid {}, for ", std::process::id())));
        let text = std::fs::read_to_string(lock.path()).unwrap();
        assert!(text.starts_with(&format!("pid={}\nsince_ms=", std::process::id())));
    }

    #[test]
    fn a_recorded_build_is_named_with_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = StoreLock::acquire(dir.path(), false, &mut no_wait()).unwrap();
        first.record_build(17).unwrap();
        let error = StoreLock::acquire(dir.path(), false, &mut no_wait()).unwrap_err();
        let StoreError::Locked(message) = error else {
            panic!("expected Locked, got {error:?}")
        };
        let expected = format!("(pid {}, build 17, for 0s)", std::process::id());
        assert!(message.ends_with(&expected), "{message}");
        assert_eq!(parse_build("pid=1\nsince_ms=2\nbuild=x\n"), None);
    }

    #[test]
    fn the_live_holder_and_its_build_are_seen_from_outside() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder(dir.path()), None, "no lock file");
        let lock = StoreLock::acquire(dir.path(), false, &mut no_wait()).unwrap();
        let pid = std::process::id();
        assert_eq!(
            holder(dir.path()),
            Some(Holder {
                pid,
                build: None,
                server: None
            })
        );
        lock.record_build(9).unwrap();
        assert_eq!(
            holder(dir.path()),
            Some(Holder {
                pid,
                build: Some(9),
                server: None
            })
        );
        // Looking did not take the lock: a writer that does not wait gets it.
        drop(lock);
        assert_eq!(holder(dir.path()), None, "released");
        // Details left behind by a holder that died name no live holder.
        std::fs::write(
            dir.path().join("lock"),
            format!("pid={pid}\nsince_ms=1\nbuild=3\n"),
        )
        .unwrap();
        assert_eq!(holder(dir.path()), None, "stale details");
        let _lock = StoreLock::acquire(dir.path(), false, &mut no_wait()).unwrap();
    }

    #[test]
    fn a_store_held_by_a_server_says_to_use_remote() {
        let dir = tempfile::tempdir().unwrap();
        let lock = StoreLock::acquire(dir.path(), false, &mut no_wait()).unwrap();
        lock.record_server("http://127.0.0.1:8421").unwrap();
        // A build recorded since keeps the server line.
        lock.record_build(4).unwrap();
        let error = StoreLock::acquire(dir.path(), false, &mut no_wait()).unwrap_err();
        let StoreError::Locked(message) = error else {
            panic!("expected Locked, got {error:?}")
        };
        assert_eq!(
            message,
            format!(
                "the store {} is held by `cairn serve` (pid {}) at http://127.0.0.1:8421: \
                 use `cairn --remote http://127.0.0.1:8421 build …`",
                dir.path().display(),
                std::process::id()
            )
        );
        let seen = holder(dir.path()).unwrap();
        assert_eq!(seen.server.as_deref(), Some("http://127.0.0.1:8421"));
        assert_eq!(seen.build, Some(4));
    }

    #[test]
    fn the_kernel_lock_table_is_read_for_granted_exclusive_flocks() {
        let table = "1: FLOCK  ADVISORY  WRITE 42 fd:01:777 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 43 fd:01:777 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 44 fd:01:778 0 EOF\n";
        assert!(holds_flock(table, 42, 777));
        assert!(!holds_flock(table, 43, 777), "a waiter");
        assert!(!holds_flock(table, 42, 778), "another file");
        assert!(!holds_flock(table, 44, 778), "a POSIX lock");
    }

    #[test]
    fn holder_details_are_parsed_leniently() {
        assert_eq!(parse_holder("pid=42\nsince_ms=7\n"), Some((42, 7)));
        assert_eq!(parse_holder(""), None);
        assert_eq!(parse_holder("pid=x\nsince_ms=7\n"), None);
    }
}
