//! Lanes: one copy per CPU of what every request writes.
//!
//! Why: an atomic read-modify-write on a cache line that another CPU wrote
//! last waits for that line to cross over. A counter every request adds to
//! does that on nearly every request once two workers serve at once, and
//! no instruction count shows it (callgrind runs one thread at a time).
//! Envoy keeps per-worker stats for this reason. Portico keeps its
//! per-request metrics and its read-deadline registrations in lanes, each
//! thread using its own. (A snapshot handle per lane was measured and not
//! kept: its indirection cost more than the contention it saved,
//! bench/RESULTS.md, session 14.)
//!
//! Threads are numbered in the order they first ask, so the proxy's workers,
//! which ask on their first request, get lanes of their own; any further
//! thread shares one, which is correct, only slower.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Lanes at most, whatever the CPU count.
const MAX_LANES: usize = 16;

/// How many lanes to keep: one per CPU, at least one.
pub fn count() -> usize {
    std::thread::available_parallelism().map_or(1, |cpus| cpus.get()).clamp(1, MAX_LANES)
}

/// The calling thread's number (its lane is this modulo the lane count).
pub fn this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: Cell<Option<usize>> = const { Cell::new(None) };
    }
    NUMBER.with(|number| {
        number.get().unwrap_or_else(|| {
            let next = NEXT.fetch_add(1, Ordering::Relaxed);
            number.set(Some(next));
            next
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_number_and_threads_get_different_ones() {
        let here = this_thread();
        assert_eq!(this_thread(), here);
        let there = std::thread::spawn(this_thread).join().unwrap();
        assert_ne!(there, here);
        assert!((1..=MAX_LANES).contains(&count()));
    }
}
