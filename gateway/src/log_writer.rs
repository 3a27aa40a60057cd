//! A non-blocking log writer: request threads append their formatted line to
//! a shared queue; one thread writes the queue to stderr in batches.
//!
//! The access log writes a line per request. Written straight to stderr,
//! each line is a `write` system call on the worker thread, and a slow
//! reader of the pipe (a container runtime's log shipper) stalls requests.
//! Here a worker pays for formatting and one short lock to append its line.
//! The writer thread is not woken per line (a wake-up is a futex call on
//! the worker and a context switch, more than the line's formatting): it
//! writes whatever is queued every [`INTERVAL`], sooner once [`WAKE_BYTES`]
//! are queued, and parks when the queue is empty, so that the first line
//! after a quiet spell is written at once. When the queue is full the line
//! is dropped and counted (reported once the queue drains), like Envoy's
//! access log buffers: a log must never hold up traffic. Lines still queued
//! when the process exits are lost.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, Thread};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Bytes queued at most before new lines are dropped (~16k access lines).
const QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Queued bytes that wake the writer before its interval is up.
const WAKE_BYTES: usize = 128 * 1024;
/// How long lines gather while they keep coming.
const INTERVAL: Duration = Duration::from_millis(10);
/// Capacity a buffer keeps after a burst (the rest is returned).
const KEEP_CAPACITY: usize = 256 * 1024;

/// The `MakeWriter` of the subscriber, and the access log's sink: cheap to
/// clone, shared by all threads.
#[derive(Clone)]
pub struct NonBlocking {
    shared: Arc<Shared>,
    writer: Thread,
}

struct Shared {
    queue: Mutex<Queue>,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    /// The writer found the queue empty and parked until a line comes.
    writer_idle: bool,
}

impl NonBlocking {
    /// Starts the writer thread over stderr. Falls back to `None` when the
    /// thread cannot start (the caller then writes to stderr directly).
    pub fn stderr() -> Option<Self> {
        let shared = Arc::new(Shared { queue: Mutex::default(), dropped: AtomicU64::new(0) });
        let theirs = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                let mut spare = Vec::new();
                loop {
                    match theirs.drain(&mut spare, io::stderr().lock()) {
                        true => thread::park_timeout(INTERVAL),
                        false => thread::park(),
                    }
                }
            })
            .ok()?;
        Some(Self { shared, writer: handle.thread().clone() })
    }

    /// Queues one whole line (with its newline), or drops it when the queue
    /// is full.
    pub fn push(&self, line: &[u8]) {
        let mut queue = self.shared.lock();
        if queue.bytes.len() + line.len() > QUEUE_BYTES {
            drop(queue);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = queue.bytes.len();
        queue.bytes.extend_from_slice(line);
        self.queued(queue, before);
    }

    /// Wakes the writer after an append when it is parked with nothing to
    /// do, or when the queue has grown past [`WAKE_BYTES`].
    fn queued(&self, mut queue: MutexGuard<'_, Queue>, before: usize) {
        let wake = std::mem::take(&mut queue.writer_idle) || (before < WAKE_BYTES && queue.bytes.len() >= WAKE_BYTES);
        drop(queue);
        if wake {
            self.writer.unpark();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding the lock but an allocation failure,
        // which aborts; a poisoned queue is still a valid queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes what is queued to `out`, swapping the queue with `spare` so
    /// the lock is held only for the swap. `false` when there was nothing:
    /// the writer is then marked idle, and the next line wakes it.
    fn drain(&self, spare: &mut Vec<u8>, mut out: impl Write) -> bool {
        {
            let mut queue = self.lock();
            if queue.bytes.is_empty() {
                queue.writer_idle = true;
                return false;
            }
            std::mem::swap(&mut queue.bytes, spare);
        }
        let _ = out.write_all(spare);
        let lost = self.dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = writeln!(out, "portico-gateway: {lost} log lines dropped (the log writer fell behind)");
        }
        let _ = out.flush();
        spare.clear();
        spare.shrink_to(KEEP_CAPACITY);
        true
    }
}

/// One event of the `tracing` subscriber, appended to the queue as it is
/// written (tracing-subscriber writes a formatted event with one
/// `write_all`; the lock is held until the writer is dropped, so even an
/// event written in pieces stays whole).
pub struct LineWriter<'a> {
    sink: &'a NonBlocking,
    queue: Option<MutexGuard<'a, Queue>>,
    /// Queue length before this event, to undo it when it does not fit.
    start: usize,
    full: bool,
}

impl<'a> MakeWriter<'a> for NonBlocking {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { sink: self, queue: None, start: 0, full: false }
    }
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let queue = match &mut self.queue {
            Some(queue) => queue,
            None => {
                let queue = self.sink.shared.lock();
                self.start = queue.bytes.len();
                self.queue.insert(queue)
            }
        };
        if !self.full {
            if queue.bytes.len() + bytes.len() > QUEUE_BYTES {
                self.full = true;
            } else {
                queue.bytes.extend_from_slice(bytes);
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter<'_> {
    fn drop(&mut self) {
        let Some(mut queue) = self.queue.take() else { return };
        if self.full {
            queue.bytes.truncate(self.start);
            drop(queue);
            self.sink.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.sink.queued(queue, self.start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> NonBlocking {
        let shared = Arc::new(Shared { queue: Mutex::default(), dropped: AtomicU64::new(0) });
        NonBlocking { shared, writer: thread::current() }
    }

    fn drained(sink: &NonBlocking) -> String {
        let mut out = Vec::new();
        sink.shared.drain(&mut Vec::new(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_arrive_whole_and_in_order() {
        let sink = sink();
        for i in 0..3 {
            let mut writer = sink.make_writer();
            write!(writer, "line ").unwrap();
            writeln!(writer, "{i}").unwrap();
        }
        sink.push(b"pushed\n");
        assert_eq!(drained(&sink), "line 0\nline 1\nline 2\npushed\n");
        assert_eq!(drained(&sink), "", "drained once");
    }

    #[test]
    fn a_full_queue_drops_whole_lines_and_counts() {
        let sink = sink();
        sink.push(&vec![b'x'; QUEUE_BYTES - 4]);
        sink.push(b"abc\n");
        sink.push(b"too long\n");
        let mut writer = sink.make_writer();
        write!(writer, "a").unwrap();
        writeln!(writer, "nd more").unwrap();
        drop(writer);
        assert_eq!(sink.shared.dropped.load(Ordering::Relaxed), 2);
        let out = drained(&sink);
        assert!(out.ends_with("xabc\nportico-gateway: 2 log lines dropped (the log writer fell behind)\n"));
    }

    #[test]
    fn an_idle_writer_is_woken_by_the_next_line_only() {
        let sink = sink();
        assert!(!sink.shared.drain(&mut Vec::new(), io::sink()), "nothing queued: the writer parks");
        assert!(sink.shared.lock().writer_idle);
        sink.push(b"wakes\n");
        assert!(!sink.shared.lock().writer_idle, "the first line woke it");
        sink.push(b"queued\n");
        assert!(sink.shared.drain(&mut Vec::new(), io::sink()));
    }
}
