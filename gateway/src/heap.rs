//! The gateway's heap: mimalloc, set for a small resident set.
//!
//! **Why mimalloc, not glibc** (bench/RESULTS.md, session 13). glibc's
//! arenas were capped at two to keep the 10,000-notebook gateway under
//! 64 MiB, and which arena each data-plane worker got was a draw made at
//! every start: in 2 starts of 5 both `http.80` workers shared one, and
//! contended on its lock (1.6-1.8 `futex` per request against 0.4-0.6).
//! glibc offers no way to choose. mimalloc gives every thread its own heap
//! and frees across threads without a lock, so there is no draw; a plain
//! request also costs ~11k fewer instructions (callgrind: 106.3k -> 95.4k).
//!
//! **Memory.** Two settings keep the 10,000-notebook gateway where glibc
//! had it (`route_scale`, RSS in KiB: 80,652 with mimalloc's defaults,
//! 65,912 without huge pages, 62,124 with immediate purging too):
//! - no transparent huge pages: mimalloc asks for them on its 1 GiB arena
//!   reservations, and a 2 MiB page that a few small objects keep alive
//!   stays resident whole. The `no_thp` build feature stops mimalloc asking
//!   (enough where the kernel's THP mode is `madvise`, Debian's and
//!   Ubuntu's default); [`configure`] also turns them off for the process,
//!   for kernels set to `always`. The feature matters even so: mimalloc
//!   maps and touches its first pages before `main` (63,820 KiB with the
//!   prctl alone, 61,944 with both);
//! - freed pages handed back at once (`purge_delay` 0, mimalloc's default
//!   is a second): the route table's translation frees a few hundred MiB of
//!   intermediates in bursts, and a delayed purge runs only when the same
//!   thread allocates again, which an idle source thread may not.
//!
//! And after each full table, [`release_free_memory`] collects the calling
//! thread's heap, whose free pages would otherwise wait for its next
//! allocation.

use libmimalloc_sys::{mi_collect, mi_option_set, mi_option_t};

/// mimalloc 3's `mi_option_purge_delay` (`mimalloc.h`), which the Rust
/// bindings, written for mimalloc 2's list, do not name. The workspace pins
/// libmimalloc-sys to the version whose C source has this list; a test
/// checks the option's default so a bump that moves it fails.
const PURGE_DELAY: mi_option_t = 15;

/// Sets the heap up; call first thing in `main`, before any thread starts.
#[allow(unsafe_code)]
pub fn configure() {
    // An operator's MIMALLOC_PURGE_DELAY, which mimalloc has read by now,
    // stands.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set only stores an option's value; mimalloc
        // reads purge_delay each time it considers a purge, so setting it
        // after the first allocations (the Rust runtime's) is fine.
        unsafe { mi_option_set(PURGE_DELAY, 0) };
    }
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process's memory
    // map; later faults then never back a mapping with a huge page. Set
    // here rather than through mimalloc's `allow_thp`, which mimalloc reads
    // once, before `main`, from the environment only.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Returns the calling thread's free heap pages to the system (after a full
/// route table, whose translation's garbage this thread freed).
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: mi_collect has no preconditions: it walks the calling
    // thread's own heap and mimalloc's arenas under their own
    // synchronisation, touching no memory the program owns.
    unsafe { mi_collect(true) };
    tracing::debug!("free heap collected");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_mimallocs_purge_delay() {
        // No test calls configure(), so this is mimalloc 3's default for
        // purge_delay (1,000 ms), which no neighbouring option has.
        // SAFETY: mi_option_get only reads an option's value.
        let value = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert_eq!(value, 1000);
    }
}
