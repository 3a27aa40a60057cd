//! glibc heap settings: fewer arenas, and freed memory handed back to the
//! system after a route table change.
//!
//! **Arenas.** glibc gives threads up to 8 x cores arenas; Pingora runs a
//! runtime per service, so the gateway's threads spread their allocations
//! over many half-empty heaps. Two arenas (`bench/RESULTS.md`, step 12):
//! keep-alive 18-24k -> 21-27k rps in alternating runs, and 5.6 -> 4.9 KiB
//! per idle spliced websocket.
//!
//! **Trimming.**
//! Reading and translating a folder of 10,000 notebooks allocates and frees
//! a few hundred MiB of intermediate objects. glibc keeps freed memory in
//! its arenas and only returns the top of each heap, so the gateway's RSS
//! stayed at the translation's peak (heaptrack: 198 MiB of heap at the peak,
//! 22 MiB in use after it; RSS 462 MiB with 10,000 notebook routes).
//! `malloc_trim(0)` returns every whole free page of every arena
//! (`madvise(MADV_DONTNEED)`), after each table a source delivers.

/// Arenas glibc may create: one per data-plane worker of a 2-core pod.
const ARENAS: i32 = 2;

/// Caps glibc's arenas; call first thing in `main`, before any thread starts.
#[allow(unsafe_code)]
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a glibc tunable; M_ARENA_MAX takes any
    // positive count and is read when a thread first allocates.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Free memory at the top of a heap that glibc keeps rather than hands
/// back at once. A fixed mmap threshold also fixes this one at glibc's
/// default, 128 KiB (the dynamic rule would have made it twice the mmap
/// threshold), and the request path's buffers then moved the main heap's
/// top across it all the time: `brk` down and up again ~85 times a second
/// under keep-alive load, each regrowth page-faulting in zeroed pages
/// (strace, bench/RESULTS.md). 1 MiB stops that; 4 MiB (with 4 arenas)
/// raised the 10k-notebook gateway's RSS to 65 MiB. Big frees are still
/// handed back by [`release_free_memory`].
const TRIM_THRESHOLD: i32 = 1 << 20;

/// Allocations from this size on get their own mapping, returned to the
/// system when freed. Set, it also stops glibc's dynamic threshold: after
/// the 7 MB text of a big folder file was freed, glibc had raised the
/// threshold to 7 MB and its trim threshold to 14, so the same text read
/// again (every rescan hashes each file) came from the heap and stayed
/// resident once freed: 7 MiB of the 10k-notebook gateway's RSS. Request
/// buffers (64 KiB at most) stay below it.
const MMAP_THRESHOLD: i32 = 256 << 10;

/// Free heap worth a trim. Trimming walks every arena under its lock, which
/// stalls the workers' allocations meanwhile: a small table's translation
/// leaves a few MiB, not worth that.
const TRIM_ABOVE_BYTES: usize = 32 << 20;

/// Returns free heap pages to the system when there are many (glibc only;
/// elsewhere a no-op).
#[allow(unsafe_code)]
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallinfo2 and malloc_trim have no preconditions: they walk
    // glibc's own arenas under their locks and touch no memory the program
    // owns.
    unsafe {
        let free = libc::mallinfo2().fordblks;
        let trimmed = free >= TRIM_ABOVE_BYTES && libc::malloc_trim(0) == 1;
        tracing::debug!(free_mib = free >> 20, trimmed, "free heap");
    }
}
