//! How the process asks its allocator for memory.

/// Allocations of 1 MiB or more are mapped on their own and given back to
/// the system as soon as they are freed (glibc's `M_MMAP_THRESHOLD`).
///
/// By default glibc raises that threshold each time such a block is freed,
/// up to 32 MiB, so that later blocks of that size come from a heap that
/// keeps what is freed. At 10⁶ partitions a command holds and frees
/// vectors of tens of megabytes one after the other (the plan's lists, the
/// verdicts, a snapshot's batches), and which of them were kept depended
/// on the order the threads freed them in: the peak RSS of the same dry
/// run moved by 8 MB from run to run, across the 512 MiB that
/// docs/benchmarks.md holds it to, and a build after one changed input
/// peaked 62 MB higher (1.044 GB against 0.981 GB; docs/benchmarks.md,
/// "Eighteenth round"). A fixed threshold also stops glibc adjusting its
/// trim threshold, which then stays at its default.
///
/// Called first thing in `main`, before any thread starts. Elsewhere than
/// glibc, nothing.
pub(crate) fn large_blocks_return_when_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    set_mmap_threshold(1 << 20);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(
    unsafe_code,
    reason = "mallopt(3) has no safe wrapper; it only sets a malloc parameter"
)]
fn set_mmap_threshold(bytes: libc::c_int) {
    // SAFETY: mallopt takes a parameter number and a value and touches no
    // memory of ours; called before any other thread exists. It returns 0
    // when the value is refused, which leaves glibc's default in place.
    let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) };
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    /// Under glibc's default, freeing a mapped block of 8 MiB raises the
    /// threshold above it, and the next block of that size comes from the
    /// heap, which keeps it when it is freed. Under the fixed threshold it
    /// is mapped again, as its own.
    #[test]
    #[expect(unsafe_code, reason = "mallinfo2(3) reads glibc's counters")]
    fn a_large_block_after_a_freed_one_is_still_mapped_on_its_own() {
        const SIZE: usize = 8 << 20;
        super::large_blocks_return_when_freed();
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let mapped = || unsafe { libc::mallinfo2() }.hblkhd;
        // The counters are the process's: another test's thread freeing a
        // mapped block at the same moment could hide this one, so a few
        // tries, any of which shows it.
        let mut seen = Vec::new();
        for _ in 0..5 {
            drop(std::hint::black_box(vec![1u8; SIZE]));
            let before = mapped();
            let block = std::hint::black_box(vec![1u8; SIZE]);
            let during = mapped();
            drop(block);
            if during >= before + SIZE {
                return;
            }
            seen.push((before, during));
        }
        panic!(
            "an 8 MiB block after a freed one came from the heap (mapped bytes before and with it: {seen:?})"
        );
    }
}
