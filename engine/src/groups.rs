//! Keeping every process a job starts inside its attempt (docs/internals.md,
//! "Job processes": each job leads its own process group, dies with cairn,
//! and what it leaves in its group is killed when it exits).
//!
//! Three things, beyond the group and `PR_SET_PDEATHSIG` that
//! `spawn.rs` sets up:
//!
//! - **A record of what runs.** Before the first job (or defs source) of a
//!   cairn starts, a file named after its session id is created in the
//!   store's `running/` directory; it goes when the build is over and its
//!   processes are gone. Every process of a run carries
//!   `CAIRN_RUN_ID=<session>-<run>` in its environment. If cairn is killed
//!   (`kill -9`), the kernel SIGKILLs each job's leader, but the rest of its
//!   group lives on: the next cairn that takes the writer lock finds the
//!   files ([`stop_leftovers`]) and SIGKILLs every process whose run id
//!   belongs to one of their sessions, with its group. One record per
//!   session, not per job: a file created and removed for each of
//!   thousands of tiny jobs cost the cold build measurable time on ext4.
//! - **A subreaper.** cairn marks itself `PR_SET_CHILD_SUBREAPER`
//!   ([`become_subreaper`]), so a process whose parent exits while cairn
//!   runs is re-parented to cairn instead of init: after each job,
//!   [`reap_orphans`] SIGKILLs and reaps the orphans of that run (in its
//!   group, or carrying its run id) and reaps every other orphan that has
//!   already exited.
//! - **Job leaders are known.** The pids cairn started itself are
//!   registered while it starts them ([`starting`]): the orphan reaper never
//!   reaps one (its worker reaps it, and reads its exit status).
//!
//! Orphans are looked for in `/proc/self/task/<pid>/children` (the main
//! thread's children: the kernel re-parents orphans to a subreaper's first
//! live thread) and `/proc/<pid>/{stat,environ}`.

#![expect(
    unsafe_code,
    reason = "kill(2), waitpid(2), getpgrp(2) and prctl(2) have no safe wrapper for what is done here"
)]

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

/// The variable naming a run in the environment of each of its processes.
pub const RUN_ID_VAR: &str = "CAIRN_RUN_ID";

/// Held (shared) while a job is started and registered, (exclusively)
/// while orphans are looked for: a pid that is being started is never taken
/// for an orphan.
static GATE: RwLock<()> = RwLock::new(());

/// The job leaders cairn started and has not reaped yet.
static LEADERS: LazyLock<Mutex<HashSet<u32>>> = LazyLock::new(Mutex::default);

/// A run id no other run of this machine has: 64 random bits (std's
/// per-process random hash keys, over a counter and the time), in hex. The
/// files and directories named after it are created exclusively, so a
/// collision is an error, never a shared directory.
pub fn unique_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    format!("{:016x}", hasher.finish())
}

/// Makes cairn the reaper of its descendants' orphans (see the module doc).
/// Process-wide, done once however many builds call it; a failure (a
/// kernel before 3.4) is only logged.
pub fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            tracing::warn!(
                "cannot become a child subreaper ({}): orphans of jobs are re-parented to init",
                io::Error::last_os_error()
            );
        }
    });
}

/// Shared hold of the start gate: keep it from before the start of a job
/// until its pid is [`register`]ed.
pub(crate) fn starting() -> RwLockReadGuard<'static, ()> {
    GATE.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn register(pid: u32) {
    LEADERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(pid);
}

/// After the leader was reaped.
pub(crate) fn unregister(pid: u32) {
    LEADERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&pid);
}

/// Sends `signal` to the process group `pgid`.
pub(crate) fn signal_group(pgid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and has no memory-safety
    // preconditions. Callers pass the group of a job whose leader they have
    // not reaped (its pid, the group id, cannot be reused meanwhile).
    unsafe {
        libc::kill(-pgid, signal);
    }
}

fn signal_process(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes plain integers.
    unsafe {
        libc::kill(pid, signal);
    }
}

fn own_group() -> u32 {
    // cairn never changes its own group: asked once, not after every job.
    static GROUP: LazyLock<u32> = LazyLock::new(|| {
        // SAFETY: getpgrp cannot fail.
        unsafe { libc::getpgrp() as u32 }
    });
    *GROUP
}

/// A process's state letter and process group, from
/// `/proc/<pid>/stat`.
struct Stat {
    state: u8,
    group: u32,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp ...`; comm may hold spaces and ')'.
    let end = text.iter().rposition(|&byte| byte == b')')?;
    let rest = std::str::from_utf8(text.get(end + 2..)?).ok()?;
    let mut fields = rest.split(' ');
    let state = fields.next()?.bytes().next()?;
    let _parent = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    Some(Stat { state, group })
}

/// The run id in a process's environment, if it has one.
fn run_id_of(pid: u32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{RUN_ID_VAR}=");
    environ
        .split(|&byte| byte == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// The children of cairn's main thread (where the kernel re-parents
/// orphans).
///
/// The file stays open and is read again from its start after every job
/// (procfs makes its text afresh for a read at offset 0): opening it each
/// time cost an open, a stat and a close per action, about 7 µs on a VM
/// with costly kernel entries, against 1 µs for the read. One read returns
/// whole records ("pid ", at most 11 bytes) and stops before one that
/// would overflow the kernel's one-page buffer, so a read is known to hold
/// the whole list only when it left more room than a record takes
/// ([`RECORD_ROOM`]); a longer list is read from a fresh open to its end,
/// as before (reads of one shared descriptor at other offsets could cut a
/// pid in two).
fn main_thread_children() -> Vec<u32> {
    main_thread_children_read().0
}

/// More room than one record of the children file takes: a read that left
/// this much of its buffer unfilled reached the end of the list.
const RECORD_ROOM: usize = 64;

/// [`main_thread_children`], and whether the kept descriptor answered (not
/// the fresh read of a long list).
fn main_thread_children_read() -> (Vec<u32>, bool) {
    use std::os::unix::fs::FileExt as _;
    static PATH: LazyLock<String> = LazyLock::new(|| {
        let pid = std::process::id();
        format!("/proc/{pid}/task/{pid}/children")
    });
    static FILE: LazyLock<Option<std::fs::File>> =
        LazyLock::new(|| std::fs::File::open(&*PATH).ok());
    let mut buffer = [0u8; 4096];
    let whole = FILE.as_ref().and_then(|file| {
        loop {
            match file.read_at(&mut buffer, 0) {
                Ok(count) if count + RECORD_ROOM <= buffer.len() => break Some(count),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                _ => break None,
            }
        }
    });
    let kept = whole.is_some();
    let text = match whole {
        Some(count) => String::from_utf8_lossy(&buffer[..count]).into_owned(),
        None => std::fs::read_to_string(&*PATH).unwrap_or_default(),
    };
    let pids = text
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect();
    (pids, kept)
}

/// Waits for (reaps) a child of cairn.
fn reap(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    loop {
        let mut status = 0;
        // SAFETY: waitpid on a child of this process, valid out pointer.
        let result = unsafe { libc::waitpid(pid, &raw mut status, 0) };
        if result >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// After a job's leader exited and its group was SIGKILLed: SIGKILLs and
/// reaps the orphans re-parented to cairn that belong to this run (in the
/// group `pgid`, or carrying `run_id`), and reaps every orphan that already
/// exited. Children cairn started itself (registered leaders, and
/// `std::process` children, which stay in cairn's own group) are left
/// alone. Repeated until no orphan of the run is left, since killing one
/// re-parents its own children.
pub(crate) fn reap_orphans(pgid: u32, run_id: &str) {
    reap_orphans_where(|child, stat| {
        if stat.state != b'Z' && stat.group != pgid && run_id_of(child).as_deref() != Some(run_id) {
            return None;
        }
        Some(false)
    });
}

/// Kills every orphan re-parented to cairn that is still running, whatever
/// run it belongs to; for the end of a build, when no job runs any more.
pub fn reap_all_orphans() {
    reap_orphans_where(|_, _| Some(true));
}

/// Kills (with their groups) the orphans re-parented to cairn that carry a
/// run id of `session` (a build's [`Children::session`](crate::job::Children::session)),
/// and reaps every orphan that already exited; the orphans of other
/// sessions are left alone. For the end of a build while other builds of
/// the same process still run jobs (a held workspace): their orphans are
/// theirs to reap.
pub fn reap_session_orphans(session: &str) {
    if session.is_empty() {
        // Runs not recorded carry no session: only the exited are reaped.
        reap_orphans_where(|_, stat| (stat.state == b'Z').then_some(false));
        return;
    }
    let prefix = format!("{session}-");
    reap_orphans_where(|child, stat| {
        if stat.state == b'Z' {
            return Some(false);
        }
        run_id_of(child)
            .is_some_and(|run| run.starts_with(&prefix))
            .then_some(true)
    });
}

/// The loop both reapers share: for each child of cairn that is neither a
/// registered leader nor in cairn's own group, `choose` says whether to
/// leave it (`None`) or to kill and reap it, its whole group too
/// (`Some(true)`) or itself alone (`Some(false)`). An exited child is only
/// reaped. Repeated until a pass finds nothing, since killing one orphan
/// re-parents its own children.
fn reap_orphans_where(choose: impl Fn(u32, &Stat) -> Option<bool>) {
    let _gate = GATE
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let own = own_group();
    for _ in 0..1000 {
        let leaders = LEADERS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut found = false;
        for child in main_thread_children() {
            if leaders.contains(&child) {
                continue;
            }
            let Some(stat) = stat(child) else {
                continue;
            };
            if stat.group == own {
                continue;
            }
            let Some(whole_group) = choose(child, &stat) else {
                continue;
            };
            if stat.state != b'Z' {
                if whole_group {
                    signal_group(stat.group, libc::SIGKILL);
                }
                signal_process(child, libc::SIGKILL);
            }
            reap(child);
            found = true;
        }
        if !found {
            return;
        }
    }
}

/// The record of one session's runs in the store's `running/` directory:
/// created before its first run starts, removed when dropped (after the
/// runs and their groups are gone).
pub(crate) struct Record {
    path: PathBuf,
}

impl Record {
    /// Creates `<dir>/<run_id>` (exclusively). No fsync: the record guards
    /// against cairn being killed, and processes do not survive a power
    /// loss.
    pub(crate) fn create(dir: &Path, run_id: &str) -> io::Result<Record> {
        let path = dir.join(run_id);
        let open = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
        };
        match open() {
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                open()
            }
            other => other,
        }
        .map_err(|error| io::Error::new(error.kind(), format!("{}: {error}", path.display())))?;
        Ok(Record { path })
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What [`stop_leftovers`] found and killed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Runs recorded as running by a cairn that is gone.
    pub runs: usize,
    /// Processes of those runs that were still alive, now killed.
    pub killed: Vec<u32>,
}

/// Called by the holder of the writer lock before it starts anything: every
/// record in `dir` was left by a cairn that died while its runs were going
/// (a live cairn holds the lock). SIGKILLs every process whose run id
/// belongs to one of the recorded sessions (`<session>-<run>`, or a
/// record's whole name: a record of a cairn before sessions named one
/// run), with its group unless that is cairn's own. Waits (up to 5 s) until
/// they are gone, then removes the records.
pub fn stop_leftovers(dir: &Path) -> io::Result<Leftovers> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Leftovers::default()),
        Err(error) => {
            return Err(io::Error::new(
                error.kind(),
                format!("{}: {error}", dir.display()),
            ));
        }
    };
    let mut records: Vec<(PathBuf, String)> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        records.push((entry.path(), name));
    }
    if records.is_empty() {
        return Ok(Leftovers::default());
    }
    let ids: HashSet<&str> = records.iter().map(|(_, id)| id.as_str()).collect();
    let recorded = |run_id: &str| {
        ids.contains(run_id)
            || run_id
                .split_once('-')
                .is_some_and(|(session, _)| ids.contains(session))
    };
    let me = std::process::id();
    let own = own_group();
    let mut marked: Vec<(u32, u32)> = Vec::new();
    if let Ok(processes) = std::fs::read_dir("/proc") {
        for entry in processes.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Some(id) = run_id_of(pid) else {
                continue;
            };
            if !recorded(&id) {
                continue;
            }
            if let Some(stat) = stat(pid)
                && stat.state != b'Z'
            {
                marked.push((pid, stat.group));
            }
        }
    }
    let mut killed = Vec::new();
    for &(pid, group) in &marked {
        // The recorded group, or the one a marked process moved to: never
        // cairn's own.
        if group != own {
            signal_group(group, libc::SIGKILL);
        }
        signal_process(pid, libc::SIGKILL);
        killed.push(pid);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && killed
            .iter()
            .any(|&pid| stat(pid).is_some_and(|stat| stat.state != b'Z'))
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    for (path, _) in &records {
        let _ = std::fs::remove_file(path);
    }
    killed.sort_unstable();
    Ok(Leftovers {
        runs: records.len(),
        killed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_reads_the_state_and_group() {
        let me = stat(std::process::id()).expect("own stat");
        assert_eq!(me.group, own_group());
        assert!(matches!(me.state, b'R' | b'S'));
    }

    /// Orphans of `count` background sleeps, re-parented to this process
    /// (a subreaper): their pids.
    fn orphans(count: usize) -> Vec<u32> {
        become_subreaper();
        let script =
            format!("for i in $(seq {count}); do sleep 60 >/dev/null 2>&1 & echo $!; done");
        let output = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|pid| pid.parse().unwrap())
            .collect()
    }

    fn kill_and_reap(pids: &[u32]) {
        for &pid in pids {
            signal_process(pid, libc::SIGKILL);
            reap(pid);
        }
    }

    /// The kept descriptor of the main thread's children is read afresh
    /// each time: an orphan re-parented to cairn appears, and is gone once
    /// reaped.
    #[test]
    fn the_main_threads_children_are_read_afresh() {
        let _alone = CHILDREN_TESTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (_, kept) = main_thread_children_read();
        assert!(kept, "the kept descriptor did not answer");
        let orphan = orphans(1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !main_thread_children().contains(&orphan[0]) {
            assert!(Instant::now() < deadline, "{orphan:?} never listed");
            std::thread::sleep(Duration::from_millis(5));
        }
        kill_and_reap(&orphan);
        assert!(!main_thread_children().contains(&orphan[0]));
    }

    /// A list longer than one read of the kept descriptor is read whole
    /// (1,200 pids of 4 or more digits and a space: over 4 KiB).
    #[test]
    fn a_long_list_of_children_is_read_whole() {
        let _alone = CHILDREN_TESTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let orphans = orphans(1200);
        let deadline = Instant::now() + Duration::from_secs(10);
        let (listed, kept) = loop {
            let (listed, kept) = main_thread_children_read();
            if orphans.iter().all(|pid| listed.contains(pid)) {
                break (listed, kept);
            }
            if Instant::now() > deadline {
                kill_and_reap(&orphans);
                panic!(
                    "{} of {} orphans listed",
                    orphans.iter().filter(|pid| listed.contains(pid)).count(),
                    orphans.len()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        kill_and_reap(&orphans);
        let text_length: usize = listed.iter().map(|pid| pid.to_string().len() + 1).sum();
        assert!(text_length > 4096, "the list is only {text_length} bytes");
        assert!(!kept, "a list of {} pids came from one read", listed.len());
    }

    /// The tests that make orphans of this process, one at a time.
    static CHILDREN_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn unique_ids_differ() {
        let ids: HashSet<String> = (0..1000).map(|_| unique_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 16));
    }

    /// Processes whose run ids belong to a recorded session, each in a
    /// group of its own, are killed; one of another session is not; the
    /// records are removed.
    #[test]
    fn leftovers_of_recorded_sessions_are_killed_and_others_kept() {
        use std::os::unix::process::CommandExt as _;
        let dir = tempfile::tempdir().unwrap();
        let running = dir.path().join("running");
        let (ours, theirs) = (unique_id(), unique_id());
        let start = |id: &str| {
            std::process::Command::new("sleep")
                .arg("60")
                .env(RUN_ID_VAR, id)
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let (first_id, second_id) = (
            format!("{ours}-{}", unique_id()),
            format!("{ours}-{}", unique_id()),
        );
        let other_id = format!("{theirs}-{}", unique_id());
        let mut first = start(&first_id);
        let mut second = start(&second_id);
        let mut other = start(&other_id);
        std::mem::forget(Record::create(&running, &ours).unwrap());
        // Wait until the children have exec'd (their environ is sleep's).
        let deadline = Instant::now() + Duration::from_secs(5);
        while run_id_of(first.id()).as_deref() != Some(first_id.as_str())
            || run_id_of(second.id()).as_deref() != Some(second_id.as_str())
            || run_id_of(other.id()).as_deref() != Some(other_id.as_str())
        {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        let found = stop_leftovers(&running).unwrap();
        assert_eq!(found.runs, 1);
        let mut expected = vec![first.id(), second.id()];
        expected.sort_unstable();
        assert_eq!(found.killed, expected);
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(first.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert_eq!(second.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert!(
            other.try_wait().unwrap().is_none(),
            "another session's process was killed"
        );
        assert_eq!(std::fs::read_dir(&running).unwrap().count(), 0);
        other.kill().unwrap();
        other.wait().unwrap();
        assert_eq!(stop_leftovers(&running).unwrap(), Leftovers::default());
    }
}
