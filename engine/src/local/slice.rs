//! A short scheduler slice for the threads that start jobs.
//!
//! Linux's fair scheduler (EEVDF; custom slices since 6.12) lets a thread
//! ask for a shorter slice: the same share of the CPU, handed out in
//! smaller pieces, so that the thread is picked sooner when it wakes up. A
//! worker is such a thread: it sleeps while its job runs, then does a
//! little work (hash the output, place it, start the next job) that every
//! dependent waits for. On a machine whose CPUs are busy with other work,
//! each of those wake-ups otherwise may wait for a running task's slice to
//! end (1.4 ms by default here), at every step of a chain of tiny jobs
//! (docs/benchmarks.md, "Fourteenth round, shapes": the worst of five
//! loaded 1,000-deep chains went from 7.4 to 4.3 s, the median 6% down).
//!
//! The request is `sched_attr.sched_runtime` of `sched_setattr(2)` under
//! `SCHED_OTHER` (no privilege needed, nice unchanged), with
//! `SCHED_FLAG_RESET_ON_FORK`, so the jobs the thread starts get the
//! default slice: only cairn's own waiting is shortened. A kernel without
//! custom slices ignores the field; any failure is ignored, the thread
//! keeping the default.

#![expect(unsafe_code, reason = "sched_setattr(2) has no wrapper in libc or std")]

/// The slice asked for, in nanoseconds: the shortest the kernel accepts.
const SLICE_NS: u64 = 100_000;

/// `struct sched_attr` of `sched_setattr(2)` (SCHED_ATTR_SIZE_VER1).
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

/// Asks for a short slice for the calling thread; true if the kernel took
/// the request. `CAIRN_SHORT_SLICE=0` leaves the default.
pub fn request_short_slice() -> bool {
    if std::env::var_os("CAIRN_SHORT_SLICE").is_some_and(|value| value == "0") {
        return false;
    }
    let attr = SchedAttr {
        size: size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: SCHED_FLAG_RESET_ON_FORK,
        nice: current_nice(),
        priority: 0,
        runtime: SLICE_NS,
        deadline: 0,
        period: 0,
        util_min: 0,
        util_max: 0,
    };
    // SAFETY: `attr` is a valid `sched_attr` of the size it declares, alive
    // for the call; pid 0 is the calling thread.
    unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0) == 0 }
}

/// The calling thread's nice value (kept as it is by the request).
fn current_nice() -> i32 {
    // SAFETY: getpriority has no memory arguments; errno is cleared first
    // because -1 is also a valid nice value.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        if nice == -1 && *libc::__errno_location() != 0 {
            0
        } else {
            nice
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slice holds for the thread and is not inherited by what it starts.
    #[test]
    #[expect(
        clippy::print_stderr,
        reason = "a loud SKIPPED line on a kernel without EEVDF"
    )]
    fn the_thread_gets_the_short_slice_and_its_children_do_not() {
        let slice = |path: &str| -> Option<u64> {
            let text = std::fs::read_to_string(path).ok()?;
            let line = text.lines().find(|line| line.starts_with("se.slice"))?;
            line.split(':').nth(1)?.trim().parse().ok()
        };
        std::thread::spawn(move || {
            let tid = unsafe { libc::gettid() };
            let path = format!("/proc/self/task/{tid}/sched");
            let Some(before) = slice(&path) else {
                eprintln!(
                    "SKIPPED: no se.slice in {path} (a kernel before 6.6 has no EEVDF slice)"
                );
                return;
            };
            assert!(
                request_short_slice(),
                "sched_setattr refused the short slice"
            );
            assert_eq!(slice(&path), Some(SLICE_NS), "the thread's slice");
            let child = std::process::Command::new("sh")
                .args(["-c", "grep ^se.slice /proc/self/sched"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&child.stdout);
            let child_slice: u64 = text.split(':').nth(1).unwrap().trim().parse().unwrap();
            assert_eq!(
                child_slice, before,
                "a child must get the default slice: {text}"
            );
        })
        .join()
        .unwrap();
    }
}
