//! How the process asks its allocator for memory.

/// The allocator keeps one arena per core (glibc's `M_ARENA_MAX`), instead
/// of up to eight per core.
///
/// glibc gives each new thread an arena of its own until there are eight
/// per core, and an arena keeps what its threads freed for their next
/// allocations. At 10⁶ partitions a command's threads (the main one, the
/// rayon pool, the committer) hold and free tens of megabytes of vectors
/// in turn, and how much stayed behind in arenas no thread used again
/// depended on timing: the peak RSS of the same dry run fell in two groups
/// 8 MB apart, the higher over the 512 MiB that docs/benchmarks.md holds it
/// to in most runs, and a build after one changed input peaked at 1.044 GB,
/// 4 MB under its 1 GiB. With one arena per core, in the same windows: the
/// dry run in the lower group in twelve runs of thirteen, the changed input
/// 1.027–1.043 GB, in the same time. It narrows the spread of the heap; in
/// a later window the peak RSS was 8 MB higher with and without the cap,
/// those 8 MB being the executable's own mapped pages (`RssFile`), not
/// heap (docs/benchmarks.md, "Eighteenth round", item 54). No more threads
/// than cores run at once, so a thread rarely finds its arena taken.
///
/// Not a fixed mmap threshold, which kept every run low: each block of
/// 1 MiB or more then comes in fresh pages, and a remote-cache upload
/// allocates one of 8 MiB per part (about 0.4 s of page faults per GiB on
/// the VM of that round).
///
/// Called first thing in `main`, before any other thread starts (an arena
/// made before stays). Elsewhere than glibc, nothing.
pub(crate) fn one_arena_per_core() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    set_arena_max(std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(
    unsafe_code,
    reason = "mallopt(3) has no safe wrapper; it only sets a malloc parameter"
)]
fn set_arena_max(arenas: usize) {
    let arenas = libc::c_int::try_from(arenas).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt takes a parameter number and a value and touches no
    // memory of ours. It returns 0 when the value is refused, which leaves
    // glibc's default in place.
    let _ = unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use std::sync::{Arc, Barrier};

    const CHILD: &str = "CAIRN_TEST_ARENA_CHILD";
    const NAME: &str = "memory::tests::threads_beyond_the_cores_share_their_arenas";

    /// Many threads allocating at once get no more arenas than cores
    /// (and the one the test's own thread had before the call). Run in a
    /// process of its own: the cap applies to arenas made after it, and
    /// other tests' threads make theirs.
    #[test]
    fn threads_beyond_the_cores_share_their_arenas() {
        if std::env::var_os(CHILD).is_some() {
            return in_a_process_of_its_own();
        }
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--test-threads=1", "--nocapture"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("arenas:"),
            "the child ran nothing: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }

    fn in_a_process_of_its_own() {
        let cores = std::thread::available_parallelism().unwrap().get();
        super::one_arena_per_core();
        // Without the cap each of these would get a new arena.
        let threads = 4 * cores + 4;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let block = std::hint::black_box(vec![1u8; 4096]);
                    barrier.wait();
                    drop(block);
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        let arenas = arenas();
        // Read by the parent, which checks that this ran.
        std::io::Write::write_all(
            &mut std::io::stdout(),
            format!("arenas: {arenas} for {threads} threads on {cores} cores\n").as_bytes(),
        )
        .unwrap();
        assert!(
            arenas <= cores + 1,
            "{arenas} arenas for {threads} threads on {cores} cores"
        );
    }

    /// The number of arenas, from `malloc_info`'s `<heap nr=…>` elements.
    #[expect(unsafe_code, reason = "malloc_info(3) writes to a C stream")]
    fn arenas() -> usize {
        use std::io::{Read, Seek};
        use std::os::fd::FromRawFd;
        // SAFETY: tmpfile returns an open stream or null (checked);
        // malloc_info writes to it; fflush hands its buffer to the file,
        // whose descriptor is duplicated before fclose closes the stream.
        let mut file = unsafe {
            let stream = libc::tmpfile();
            assert!(!stream.is_null(), "tmpfile failed");
            assert_eq!(libc::malloc_info(0, stream), 0, "malloc_info failed");
            assert_eq!(libc::fflush(stream), 0, "fflush failed");
            let fd = libc::dup(libc::fileno(stream));
            assert!(fd >= 0, "dup failed");
            libc::fclose(stream);
            std::fs::File::from_raw_fd(fd)
        };
        file.rewind().unwrap();
        let mut xml = String::new();
        file.read_to_string(&mut xml).unwrap();
        xml.matches("<heap nr=").count()
    }
}
