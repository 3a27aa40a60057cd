//! A non-blocking log writer: request threads format a line and hand it to
//! a channel; one thread writes the lines to stderr through a buffer.
//!
//! The access log writes a line per request. Written straight to stderr,
//! each line is a `write` system call on the worker thread, and a slow
//! reader of the pipe (a container runtime's log shipper) stalls requests.
//! Here a worker pays for formatting and a channel send; the writer thread
//! batches whatever is queued into one buffered write. When the queue is
//! full the line is dropped and counted (reported once the queue drains),
//! like Envoy's access log buffers: a log must never hold up traffic.
//! Lines still queued when the process exits are lost.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use tracing_subscriber::fmt::MakeWriter;

/// Lines queued at most before new ones are dropped.
const QUEUE_LINES: usize = 16 * 1024;
/// Room a line starts with (a typical access log line fits).
const LINE_CAPACITY: usize = 256;
/// Buffer of the writer thread.
const WRITE_BUFFER: usize = 64 * 1024;

/// The `MakeWriter` of the subscriber: cheap to clone, shared by all threads.
#[derive(Clone)]
pub struct NonBlocking {
    lines: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl NonBlocking {
    /// Starts the writer thread over stderr. Falls back to `None` when the
    /// thread cannot start (the caller then writes to stderr directly).
    pub fn stderr() -> Option<Self> {
        let (lines, receiver) = sync_channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_lines(&receiver, &counter, io::stderr()))
            .ok()?;
        Some(Self { lines, dropped })
    }
}

/// Writes every line received, one buffered write per batch.
fn write_lines(receiver: &Receiver<Vec<u8>>, dropped: &AtomicU64, out: impl Write) {
    let mut out = io::BufWriter::with_capacity(WRITE_BUFFER, out);
    while let Ok(line) = receiver.recv() {
        let _ = out.write_all(&line);
        while let Ok(line) = receiver.try_recv() {
            let _ = out.write_all(&line);
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = writeln!(out, "portico-gateway: {lost} log lines dropped (the log writer fell behind)");
        }
        let _ = out.flush();
    }
}

/// One event's line, sent when the event has been formatted.
pub struct LineWriter<'a> {
    line: Vec<u8>,
    sink: &'a NonBlocking,
}

impl<'a> MakeWriter<'a> for NonBlocking {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { line: Vec::with_capacity(LINE_CAPACITY), sink: self }
    }
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter<'_> {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        match self.sink.lines.try_send(std::mem::take(&mut self.line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.sink.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The writer thread is gone (it only ends with the process).
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_arrive_whole_and_in_order() {
        let (lines, receiver) = sync_channel(4);
        let sink = NonBlocking { lines, dropped: Arc::new(AtomicU64::new(0)) };
        for i in 0..3 {
            let mut writer = sink.make_writer();
            write!(writer, "line ").unwrap();
            writeln!(writer, "{i}").unwrap();
        }
        drop(sink);
        let mut out = Vec::new();
        write_lines(&receiver, &AtomicU64::new(0), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "line 0\nline 1\nline 2\n");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (lines, _receiver) = sync_channel(1);
        let sink = NonBlocking { lines, dropped: Arc::new(AtomicU64::new(0)) };
        for _ in 0..3 {
            writeln!(sink.make_writer(), "x").unwrap();
        }
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 2);
    }
}
