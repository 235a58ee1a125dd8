//! Starting a job process without `fork`.
//!
//! A job must lead its own process group and die with cairn (even on
//! `kill -9`, through `PR_SET_PDEATHSIG`). `std::process::Command` can only
//! do the latter in a `pre_exec` hook, and a hook makes it `fork` the whole
//! multi-threaded process: the kernel copies every page table of cairn, then
//! both sides take copy-on-write faults until the child's `exec` throws the
//! copy away. Profiles of cold builds showed that as the largest cost of
//! cairn's own threads (`copy_page_range`, `do_wp_page`, `exit_mmap`).
//!
//! This module starts the child the way `posix_spawn` does inside glibc:
//! `clone(CLONE_VM | CLONE_VFORK)` on a small private stack, the child
//! making only raw system calls (no allocation, no lock) before `execve`,
//! and the parent's thread suspended until then. `CLONE_PIDFD` gives a
//! descriptor that becomes readable when the job exits, so a worker can wait
//! for its job and watch its checkpoint file on one thread.
//!
//! On x86-64 the child is made with `clone3` and `CLONE_CLEAR_SIGHAND`
//! (Linux 5.5), as glibc's `posix_spawn` does where it can: the kernel
//! resets cairn's signal handlers in the child, which otherwise asks for
//! each of the 64 signals' disposition itself (62 system calls on every
//! job start, glibc answering for its own two; about 40 µs on a VM with
//! costly kernel entries, docs/benchmarks.md). Where `clone3` or the flag is refused (an older
//! kernel, a seccomp filter), and on other architectures, `clone` and the
//! child's own reset are used.

#![expect(
    unsafe_code,
    reason = "clone(2), execve(2) and the child's system calls have no safe wrapper"
)]

use std::collections::HashMap;
use std::ffi::{CString, c_char, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
#[cfg(target_arch = "x86_64")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// What to start.
pub(crate) struct Spec<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    /// The whole environment of the child, in order; a later entry of the
    /// same name wins.
    pub env: &'a [(&'a str, &'a str)],
    pub cwd: &'a Path,
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
}

/// A started child: its pid and a descriptor that is readable once it has
/// exited (it stays a zombie, its pid reserved, until [`Process::reap`]).
pub(crate) struct Process {
    pub pid: u32,
    pidfd: OwnedFd,
    /// Whether the kernel reset the child's signal handlers (`clone3`).
    #[cfg(test)]
    handlers_cleared: bool,
}

/// Which step of the child failed, for the error message.
const STEP_SIGNALS: c_int = 1;
const STEP_GROUP: c_int = 2;
const STEP_DEATHSIG: c_int = 3;
const STEP_PARENT_GONE: c_int = 4;
const STEP_FDS: c_int = 5;
const STEP_CHDIR: c_int = 6;
const STEP_EXEC: c_int = 7;

/// Shared with the child (same memory): read by the parent after `clone`
/// returns, which is after the child's `execve` or `_exit`.
#[repr(C)]
struct ChildArgs {
    path: *const c_char,
    argv: *const *const c_char,
    sh_argv: *const *const c_char,
    envp: *const *const c_char,
    cwd: *const c_char,
    fds: [c_int; 3],
    parent: libc::pid_t,
    /// Whether the kernel already reset the child's signal handlers
    /// (`CLONE_CLEAR_SIGHAND`); the child then only restores SIGPIPE.
    handlers_cleared: c_int,
    failed_step: c_int,
    errno: c_int,
}

/// The child, between `clone` and `execve`. It shares cairn's memory and
/// runs on its own stack with every signal blocked: it may only make system
/// calls, never allocate or take a lock.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    let args = arg.cast::<ChildArgs>();
    // SAFETY: `args` points to the parent's `ChildArgs`, alive and not
    // touched by the parent until this child has exec'd or exited
    // (CLONE_VFORK). Every call below is an async-signal-safe system call on
    // pointers prepared by the parent.
    unsafe {
        let fail = |step: c_int| -> ! {
            (*args).errno = *libc::__errno_location();
            (*args).failed_step = step;
            libc::_exit(127)
        };
        // Handlers installed by cairn must not run in this child (it shares
        // cairn's memory): back to the default, except what is ignored on
        // purpose. SIGPIPE is ignored by the Rust runtime, not by choice:
        // jobs get it at its default, as std's Command does.
        if (*args).handlers_cleared != 0 {
            // CLONE_CLEAR_SIGHAND reset every handler and kept what is
            // ignored: only SIGPIPE is left to restore.
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            if libc::sigaction(libc::SIGPIPE, &raw const default, std::ptr::null_mut()) != 0 {
                fail(STEP_SIGNALS);
            }
        } else {
            for signal in 1..65 {
                let mut current: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, std::ptr::null(), &raw mut current) != 0 {
                    continue;
                }
                let ignored = current.sa_sigaction == libc::SIG_IGN;
                if (current.sa_sigaction != libc::SIG_DFL && !ignored)
                    || (ignored && signal == libc::SIGPIPE)
                {
                    let mut default: libc::sigaction = std::mem::zeroed();
                    default.sa_sigaction = libc::SIG_DFL;
                    if libc::sigaction(signal, &raw const default, std::ptr::null_mut()) != 0 {
                        fail(STEP_SIGNALS);
                    }
                }
            }
        }
        if libc::setpgid(0, 0) != 0 {
            fail(STEP_GROUP);
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            fail(STEP_DEATHSIG);
        }
        // cairn may have died before prctl took effect.
        if libc::getppid() != (*args).parent {
            fail(STEP_PARENT_GONE);
        }
        for (target, &fd) in (*args).fds.iter().enumerate() {
            if libc::dup2(fd, target as c_int) < 0 {
                fail(STEP_FDS);
            }
        }
        if libc::chdir((*args).cwd) != 0 {
            fail(STEP_CHDIR);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const empty, std::ptr::null_mut());
        libc::execve((*args).path, (*args).argv, (*args).envp);
        if *libc::__errno_location() == libc::ENOEXEC {
            // A script without `#!`: what execvp (and so Command) does.
            libc::execve(c"/bin/sh".as_ptr(), (*args).sh_argv, (*args).envp);
        }
        fail(STEP_EXEC)
    }
}

fn c_string(text: &[u8], what: &str) -> io::Result<CString> {
    CString::new(text).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// A NULL-terminated array of pointers into `strings`.
fn pointers(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Where `program` is: as given when it names a path (resolved by the
/// kernel against the child's working directory), else the first
/// executable file of that name on `path` (the child's PATH, or cairn's),
/// as `execvp` looks it up.
///
/// A program found is remembered for the process (by name, PATH and
/// working directory) and looked up again only if it is no longer an
/// executable file there: a build spawning `sh` for 22,265 jobs searched
/// a nine-entry PATH 22,265 times.
pub(crate) fn resolve(program: &str, path: Option<&str>, cwd: &Path) -> io::Result<PathBuf> {
    type Found = HashMap<(String, String, PathBuf), PathBuf>;
    static FOUND: LazyLock<Mutex<Found>> = LazyLock::new(Mutex::default);
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let inherited = std::env::var("PATH").ok();
    let search = path
        .or(inherited.as_deref())
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    let key = (program.to_owned(), search.to_owned(), cwd.to_owned());
    let remembered = FOUND
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
        .cloned();
    if let Some(found) = remembered.filter(|found| is_executable(found)) {
        return Ok(found);
    }
    let found = search_path(program, search, cwd)?;
    FOUND
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(key, found.clone());
    Ok(found)
}

/// Whether `path` is a file with an execute bit (following links).
fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// The first executable file named `program` on `search`, as `execvp`
/// looks it up.
fn search_path(program: &str, search: &str, cwd: &Path) -> io::Result<PathBuf> {
    for directory in search.split(':') {
        let directory = if directory.is_empty() { "." } else { directory };
        let candidate = Path::new(directory).join(program);
        let absolute = if candidate.is_absolute() {
            candidate
        } else {
            cwd.join(candidate)
        };
        if is_executable(&absolute) {
            return Ok(absolute);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "No such file or directory (not found on PATH)",
    ))
}

/// The child's stack, with a guard page below it. Each thread keeps its
/// own for its next start ([`with_stack`]): mapping one per start, and the
/// child faulting its fresh pages in, cost about a tenth of a worker's time
/// in a chain of tiny jobs (docs/benchmarks.md).
struct Stack {
    base: *mut c_void,
    len: usize,
}

const STACK_BYTES: usize = 64 * 1024;
const GUARD_BYTES: usize = 4096;

impl Stack {
    fn new() -> io::Result<Stack> {
        let len = STACK_BYTES + GUARD_BYTES;
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // SAFETY: the lowest page of the mapping made above.
        if unsafe { libc::mprotect(base, GUARD_BYTES, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The top of the stack (it grows down), 16-byte aligned.
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of the mapping, which is page-aligned.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; the child that used it has
        // exec'd or exited (CLONE_VFORK) and no pointer into it remains.
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

std::thread_local! {
    /// The calling thread's spare stack, if it has made one.
    static SPARE_STACK: std::cell::RefCell<Option<Stack>> = const { std::cell::RefCell::new(None) };
}

/// Runs `start` with this thread's spare stack (made on first use), kept
/// for the next start afterwards. A start on the same thread while one is
/// under way cannot happen (CLONE_VFORK suspends the thread until the
/// child has exec'd or exited), and would get a fresh stack if it did.
fn with_stack<T>(start: impl FnOnce(&Stack) -> T) -> io::Result<T> {
    let stack = match SPARE_STACK.with(|spare| spare.borrow_mut().take()) {
        Some(stack) => stack,
        None => Stack::new()?,
    };
    let result = start(&stack);
    // A thread being torn down has no slot left: the stack is unmapped.
    let _ = SPARE_STACK.try_with(|spare| *spare.borrow_mut() = Some(stack));
    Ok(result)
}

/// `CLONE_CLEAR_SIGHAND`, the kernel's value (the libc crate's constant
/// overflows its type).
#[cfg(target_arch = "x86_64")]
const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;

/// Whether `clone3` with `CLONE_CLEAR_SIGHAND` was refused once in this
/// process (then `clone` is used from there on).
#[cfg(target_arch = "x86_64")]
static CLONE3_REFUSED: AtomicBool = AtomicBool::new(false);

#[cfg(test)]
std::thread_local! {
    /// Tests take the `clone` path on their own thread with this set.
    static FORCE_CLONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Clones the child that runs [`child_main`] on `stack` with `args`:
/// its pid (negative on failure) and the error of the call. `clone3` with
/// `CLONE_CLEAR_SIGHAND` where the kernel takes it (`args` records it for
/// the child), else `clone`.
///
/// # Safety
/// Every signal is blocked on the calling thread, and `args`, `pidfd` and
/// `stack` stay alive and untouched until this returns (CLONE_VFORK: after
/// the child's `execve` or exit).
unsafe fn clone_child(
    stack: &Stack,
    args: *mut ChildArgs,
    pidfd: *mut c_int,
) -> (c_int, io::Error) {
    #[cfg(all(test, target_arch = "x86_64"))]
    let forced = FORCE_CLONE.with(std::cell::Cell::get);
    #[cfg(all(not(test), target_arch = "x86_64"))]
    let forced = false;
    #[cfg(target_arch = "x86_64")]
    if !forced && !CLONE3_REFUSED.load(Ordering::Relaxed) {
        // SAFETY: as this function's, passed on.
        unsafe {
            (*args).handlers_cleared = 1;
            let result = clone3_child(stack, args, pidfd);
            if result >= 0 {
                return (
                    c_int::try_from(result).unwrap_or(c_int::MAX),
                    io::Error::from_raw_os_error(0),
                );
            }
            (*args).handlers_cleared = 0;
            let errno = c_int::try_from(-result).unwrap_or(libc::EINVAL);
            // ENOSYS: no clone3 (before Linux 5.3, or a seccomp filter that
            // hides it); EINVAL: no CLONE_CLEAR_SIGHAND (before 5.5); EPERM:
            // a filter that refuses it. Anything else is the start's own
            // failure (EAGAIN, ENOMEM), reported as `clone` would.
            if ![libc::ENOSYS, libc::EINVAL, libc::EPERM].contains(&errno) {
                return (-1, io::Error::from_raw_os_error(errno));
            }
            CLONE3_REFUSED.store(true, Ordering::Relaxed);
        }
    }
    // SAFETY: as this function's; the child's stack grows down from its top.
    unsafe {
        let pid = libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            args.cast(),
            pidfd,
        );
        (pid, io::Error::last_os_error())
    }
}

/// `clone3(CLONE_VM | CLONE_VFORK | CLONE_PIDFD | CLONE_CLEAR_SIGHAND)`
/// with the child calling `child_main(args)` on `stack`, as glibc's
/// `clone3` wrapper does it (no wrapper is exported): the raw result, the
/// child's pid or a negated errno.
///
/// # Safety
/// As [`clone_child`]'s.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_child(stack: &Stack, args: *mut ChildArgs, pidfd: *mut c_int) -> libc::c_long {
    // SAFETY: a plain C struct of integers; zero is "not asked" for each.
    let mut clone_args: libc::clone_args = unsafe { std::mem::zeroed() };
    clone_args.flags =
        (libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD) as u64 | CLONE_CLEAR_SIGHAND;
    clone_args.pidfd = pidfd as u64;
    clone_args.exit_signal = libc::SIGCHLD as u64;
    clone_args.stack = stack.base as u64;
    clone_args.stack_size = stack.len as u64;
    let entry: extern "C" fn(*mut c_void) -> c_int = child_main;
    let result: libc::c_long;
    // SAFETY: the parent returns from the system call with only rax, rcx
    // and r11 changed (declared). The child starts on its own stack (the
    // kernel sets rsp to `stack + stack_size`, aligned to 16 bytes below
    // before the call, as glibc's clone3 does), shares no frame with
    // the parent and never comes back here: it calls `child_main`, which
    // ends in `execve` or `_exit`, and exits itself should it return.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "and rsp, -16",
            "mov rdi, r12",
            "call r13",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_clone3 => result,
            in("rdi") &raw mut clone_args,
            in("rsi") std::mem::size_of::<libc::clone_args>(),
            in("r12") args,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    result
}

/// Starts `spec`'s program as the leader of a new process group that the
/// kernel kills when cairn dies.
pub(crate) fn spawn(spec: &Spec<'_>) -> io::Result<Process> {
    let path_var = spec
        .env
        .iter()
        .rev()
        .find(|(name, _)| *name == "PATH")
        .map(|(_, value)| *value);
    let path = resolve(spec.program, path_var, spec.cwd)?;
    let c_path = c_string(path.as_os_str().as_bytes(), "the program")?;
    let mut argv = Vec::with_capacity(spec.args.len() + 1);
    argv.push(c_string(spec.program.as_bytes(), "the program")?);
    for arg in spec.args {
        argv.push(c_string(arg.as_bytes(), "an argument")?);
    }
    let mut sh_argv = vec![c"/bin/sh".to_owned(), c_path.clone()];
    sh_argv.extend(argv[1..].iter().cloned());
    // Later entries win, as with Command::env (a daily job with a thousand
    // inputs has thousands of variables: found through a set, not a scan).
    let mut seen: std::collections::HashSet<&str> =
        std::collections::HashSet::with_capacity(spec.env.len());
    let mut kept: Vec<&(&str, &str)> = spec
        .env
        .iter()
        .rev()
        .filter(|(name, _)| seen.insert(name))
        .collect();
    kept.reverse();
    let mut envp = Vec::with_capacity(kept.len());
    for (name, value) in kept {
        let mut entry = Vec::with_capacity(name.len() + value.len() + 1);
        entry.extend_from_slice(name.as_bytes());
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
        envp.push(c_string(&entry, "an environment variable")?);
    }
    let cwd = c_string(spec.cwd.as_os_str().as_bytes(), "the working directory")?;
    let argv_pointers = pointers(&argv);
    let sh_argv_pointers = pointers(&sh_argv);
    let envp_pointers = pointers(&envp);
    let mut args = ChildArgs {
        path: c_path.as_ptr(),
        argv: argv_pointers.as_ptr(),
        sh_argv: sh_argv_pointers.as_ptr(),
        envp: envp_pointers.as_ptr(),
        cwd: cwd.as_ptr(),
        fds: [spec.stdin, spec.stdout, spec.stderr],
        parent: libc::pid_t::try_from(std::process::id()).unwrap_or(0),
        handlers_cleared: 0,
        failed_step: 0,
        errno: 0,
    };
    let mut pidfd: c_int = -1;
    // SAFETY: all signals are blocked around clone so that no handler of
    // cairn runs on the child's stack before it resets them; the child runs
    // `child_main` on `stack` with `args`, both alive until clone returns
    // (CLONE_VFORK suspends this thread until the child exec'd or exited).
    let (pid, clone_error) = with_stack(|stack| unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&raw mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const all, &raw mut previous);
        let (pid, clone_error) = clone_child(stack, &raw mut args, &raw mut pidfd);
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const previous, std::ptr::null_mut());
        (pid, clone_error)
    })?;
    if pid < 0 {
        if clone_error.raw_os_error() == Some(libc::EINVAL) {
            return Err(io::Error::new(
                clone_error.kind(),
                format!(
                    "clone with a pidfd failed ({clone_error}): cairn needs Linux 5.2 or newer"
                ),
            ));
        }
        return Err(clone_error);
    }
    // SAFETY: with CLONE_PIDFD the kernel stored a new descriptor, ours.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let process = Process {
        pid: pid as u32,
        pidfd,
        #[cfg(test)]
        handlers_cleared: args.handlers_cleared != 0,
    };
    if args.failed_step != 0 {
        let _ = process.reap();
        let error = io::Error::from_raw_os_error(args.errno);
        let step = match args.failed_step {
            STEP_SIGNALS => "resetting signal handlers".to_owned(),
            STEP_GROUP => "starting a process group".to_owned(),
            STEP_DEATHSIG => "setting the parent-death signal".to_owned(),
            STEP_PARENT_GONE => "cairn exited while starting the job".to_owned(),
            STEP_FDS => "redirecting stdin, stdout and stderr".to_owned(),
            STEP_CHDIR => format!("changing to the working directory {}", spec.cwd.display()),
            _ => format!("running {}", path.display()),
        };
        return Err(io::Error::new(error.kind(), format!("{step}: {error}")));
    }
    Ok(process)
}

impl Process {
    /// Waits until the child has exited, without reaping it (its pid, the
    /// group id, stays reserved), calling `tick` every `interval` meanwhile.
    pub(crate) fn wait_exited(&self, interval: Duration, tick: Option<&(dyn Fn() + Sync)>) {
        let timeout = match tick {
            Some(_) => c_int::try_from(interval.as_millis()).unwrap_or(c_int::MAX),
            None => -1,
        };
        loop {
            let mut poll = libc::pollfd {
                fd: self.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let ready = unsafe { libc::poll(&raw mut poll, 1, timeout) };
            if ready > 0 {
                return;
            }
            if ready == 0 {
                if let Some(tick) = tick {
                    tick();
                }
                continue;
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                // poll cannot fail on one valid descriptor but for EINTR;
                // if it ever does, block in waitid instead.
                self.wait_exited_blocking();
                return;
            }
        }
    }

    fn wait_exited_blocking(&self) {
        loop {
            // SAFETY: `info` is a plain C struct that waitid fills.
            let result = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(
                    libc::P_PID,
                    self.pid,
                    &raw mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if result == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return;
            }
        }
    }

    /// Reaps the child (waiting for it if it has not exited) and returns
    /// how it ended.
    pub(crate) fn reap(&self) -> io::Result<ExitStatus> {
        let pid = libc::pid_t::try_from(self.pid).map_err(io::Error::other)?;
        loop {
            let mut status: c_int = 0;
            // SAFETY: waitpid on our own child with a valid out pointer.
            let result = unsafe { libc::waitpid(pid, &raw mut status, 0) };
            if result == pid {
                return Ok(ExitStatus::from_raw(status));
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn run(program: &str, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> (ExitStatus, String) {
        let dir = tempfile::tempdir().unwrap();
        let out_path = dir.path().join("out");
        let stdin = File::open("/dev/null").unwrap();
        let stdout = File::create(&out_path).unwrap();
        let stderr = File::create(dir.path().join("err")).unwrap();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let process = spawn(&Spec {
            program,
            args: &args,
            env,
            cwd,
            stdin: stdin.as_raw_fd(),
            stdout: stdout.as_raw_fd(),
            stderr: stderr.as_raw_fd(),
        })
        .unwrap();
        process.wait_exited(Duration::from_millis(10), None);
        let status = process.reap().unwrap();
        (status, std::fs::read_to_string(out_path).unwrap())
    }

    /// The error of starting `program` in `cwd` (it must fail).
    fn start_error(program: &str, cwd: &Path) -> io::Error {
        spawn(&Spec {
            program,
            args: &[],
            env: &[("PATH", "/usr/bin:/bin")],
            cwd,
            stdin: 0,
            stdout: 1,
            stderr: 2,
        })
        .err()
        .expect("the start fails")
    }

    /// A program found on a PATH is remembered, and searched for again
    /// once it is no longer there (or no longer executable).
    #[test]
    fn a_remembered_program_is_searched_again_once_gone() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("a"), dir.path().join("b"));
        for directory in [&first, &second] {
            std::fs::create_dir(directory).unwrap();
            let program = directory.join("cairn-test-prog");
            std::fs::write(&program, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let search = format!("{}:{}", first.display(), second.display());
        let found = |search: &str| resolve("cairn-test-prog", Some(search), dir.path()).unwrap();
        assert_eq!(found(&search), first.join("cairn-test-prog"));
        assert_eq!(found(&search), first.join("cairn-test-prog"));
        std::fs::set_permissions(
            first.join("cairn-test-prog"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert_eq!(found(&search), second.join("cairn-test-prog"));
        std::fs::remove_file(second.join("cairn-test-prog")).unwrap();
        let error = resolve("cairn-test-prog", Some(&search), dir.path()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        // Another PATH is another search.
        let reversed = format!("{}:{}", second.display(), first.display());
        assert!(resolve("cairn-test-prog", Some(&reversed), dir.path()).is_err());
    }

    #[test]
    fn runs_with_exactly_the_given_environment_directory_and_group() {
        let dir = tempfile::tempdir().unwrap();
        let (status, out) = run(
            "sh",
            &[
                "-c",
                "echo \"$A $B $HOME\"; pwd; set -- $(cat /proc/$$/stat); \
                 test \"$5\" = $$ && echo leader; grep SigIgn /proc/$$/status",
            ],
            &[
                ("PATH", "/usr/bin:/bin"),
                ("A", "1"),
                ("B", "2"),
                ("A", "3"),
            ],
            dir.path(),
        );
        assert!(status.success(), "{out}");
        let canonical = dir.path().canonicalize().unwrap();
        let (head, ignored) = out.split_once("SigIgn:").unwrap();
        assert_eq!(
            head,
            format!("3 2 \n{}\nleader\n", canonical.display()),
            "later variables win, nothing else is passed, the job leads its group"
        );
        let ignored = u64::from_str_radix(ignored.trim(), 16).unwrap();
        assert_eq!(
            ignored & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE is not ignored"
        );
    }

    /// The signal dispositions a job starts with, by either way of
    /// cloning: nothing blocked, SIGPIPE at its default though cairn
    /// ignores it, and a signal cairn ignores on purpose still ignored.
    /// On x86-64 with Linux 5.5 or newer and no seccomp filter, the kernel
    /// resets the handlers (`clone3`); the test fails if that path is lost
    /// (it would under a tool that refuses `clone3` on such a kernel, as
    /// valgrind and qemu-user do). Whether handlers were reset cannot be
    /// seen from the job: `execve` resets them too.
    #[test]
    fn both_ways_of_cloning_give_the_job_the_same_signals() {
        // SAFETY: ignoring a signal no test of this binary sends or looks
        // at; no handler is involved. It stays ignored for the binary.
        unsafe {
            libc::signal(libc::SIGUSR2, libc::SIG_IGN);
        }
        let dir = tempfile::tempdir().unwrap();
        // `exec`: the masks the job was started with, read by the process
        // that inherits them (sh blocks every signal for a moment around
        // each fork, so reading sh's own from a child would race it).
        let script = "exec grep -E '^Sig(Blk|Ign)' /proc/self/status";
        let env = [("PATH", "/usr/bin:/bin")];
        let mut seen = Vec::new();
        for force_clone in [false, true] {
            let seen_here = std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        FORCE_CLONE.with(|force| force.set(force_clone));
                        let stdin = File::open("/dev/null").unwrap();
                        let out_path = dir.path().join(format!("out-{force_clone}"));
                        let stdout = File::create(&out_path).unwrap();
                        let args = ["-c".to_owned(), script.to_owned()];
                        let process = spawn(&Spec {
                            program: "sh",
                            args: &args,
                            env: &env,
                            cwd: dir.path(),
                            stdin: stdin.as_raw_fd(),
                            stdout: stdout.as_raw_fd(),
                            stderr: stdout.as_raw_fd(),
                        })
                        .unwrap();
                        process.wait_exited(Duration::from_millis(10), None);
                        assert!(process.reap().unwrap().success());
                        (
                            process.handlers_cleared,
                            std::fs::read_to_string(out_path).unwrap(),
                        )
                    })
                    .join()
                    .unwrap()
            });
            seen.push(seen_here);
        }
        assert!(!seen[1].0, "the forced path is clone's");
        if clone3_expected() {
            assert!(seen[0].0, "clone3 with CLONE_CLEAR_SIGHAND was not used");
        }
        for (_, out) in &seen {
            let mask = |name: &str| {
                let line = out.lines().find(|line| line.starts_with(name)).unwrap();
                u64::from_str_radix(line[name.len()..].trim(), 16).unwrap()
            };
            assert_eq!(mask("SigBlk:"), 0, "{out}");
            let ignored = mask("SigIgn:");
            assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "{out}");
            assert_ne!(ignored & (1 << (libc::SIGUSR2 - 1)), 0, "{out}");
        }
        assert_eq!(seen[0].1, seen[1].1);
    }

    /// Whether this machine should take the `clone3` path: x86-64, Linux
    /// 5.5 or newer, no seccomp filter on this process.
    fn clone3_expected() -> bool {
        if !cfg!(target_arch = "x86_64") {
            return false;
        }
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut numbers = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|part| part.parse::<u32>().unwrap_or(0));
        let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let filtered = status
            .lines()
            .any(|line| line.starts_with("Seccomp:") && line.trim_end() != "Seccomp:\t0");
        version >= (5, 5) && !filtered
    }

    #[test]
    fn exit_codes_signals_and_missing_programs_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let env = [("PATH", "/usr/bin:/bin")];
        let (status, _) = run("sh", &["-c", "exit 3"], &env, dir.path());
        assert_eq!(status.code(), Some(3));
        let (status, _) = run("sh", &["-c", "kill -9 $$"], &env, dir.path());
        assert_eq!(status.signal(), Some(9));
        let error = start_error("no-such-program-anywhere", dir.path());
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        let error = start_error("sh", &dir.path().join("missing"));
        assert!(
            error.to_string().contains(&format!(
                "changing to the working directory {}",
                dir.path().join("missing").display()
            )),
            "{error}"
        );
    }

    #[test]
    fn a_script_without_a_shebang_runs_under_sh() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "echo from-script \"$1\"\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (status, out) = run("./script", &["x"], &[("PATH", "/usr/bin:/bin")], dir.path());
        assert!(status.success());
        assert_eq!(out, "from-script x\n");
        // Not executable: the error names the file exec refused.
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = start_error("./script", dir.path());
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied, "{error}");
        assert!(
            error.to_string().starts_with("running ./script: "),
            "{error}"
        );
    }
}
