//! Bench-only (cargo feature `count-allocs`): a global allocator that counts
//! allocations, so `bench/run` can report allocations per request.
//!
//! It wraps the gateway's allocator, mimalloc (the settings of `heap.rs`
//! still apply), and adds one relaxed atomic increment per allocation. The
//! default build never compiles this file; the benchmark runs a second,
//! counting copy of the gateway and of the minimal Pingora proxy next to the
//! measured ones, so the counter's cost never shows in rps or CPU figures.
//!
//! The count leaves the process through a file: with
//! `PORTICO_ALLOC_REPORT=PATH` in the environment, a thread rewrites PATH
//! with the current count every 20 ms (without allocating, so reading it
//! does not move it). One mechanism for both binaries: the minimal proxy has
//! no admin port.

use mimalloc::MiMalloc;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often the report file is rewritten.
const REPORT_EVERY: Duration = Duration::from_millis(20);

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// mimalloc, counting `alloc`, `alloc_zeroed` and `realloc`.
pub struct Counting;

// SAFETY: every call is forwarded unchanged to `MiMalloc`, which upholds
// `GlobalAlloc`'s contract; counting touches no allocated memory.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is MiMalloc's.
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is MiMalloc's.
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is MiMalloc's.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is MiMalloc's.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
}

/// Allocations (and reallocations) since the process started.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Starts the report thread when `PORTICO_ALLOC_REPORT` names a file.
pub fn report_from_env() {
    let Some(path) = std::env::var_os("PORTICO_ALLOC_REPORT") else { return };
    let file = match std::fs::File::create(&path) {
        Ok(file) => file,
        Err(error) => {
            eprintln!("count-allocs: cannot create {}: {error}", path.to_string_lossy());
            return;
        }
    };
    let spawned = std::thread::Builder::new().name("alloc-report".into()).spawn(move || {
        use std::io::Write;
        use std::os::unix::fs::FileExt;
        let mut text = [b' '; 24];
        loop {
            // A fixed-width line rewritten in place: no allocation, and a
            // reader never sees a shorter, truncated file.
            text.fill(b' ');
            let mut cursor = std::io::Cursor::new(&mut text[..23]);
            let _ = write!(cursor, "{}", allocations());
            text[23] = b'\n';
            let _ = file.write_at(&text, 0);
            std::thread::sleep(REPORT_EVERY);
        }
    });
    if let Err(error) = spawned {
        eprintln!("count-allocs: cannot start the report thread: {error}");
    }
}
