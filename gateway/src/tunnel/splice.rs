//! The splice of an upgraded connection: both directions copied until
//! both ended, on a task of its own.
//!
//! [`Splice`] is a future written by hand, not an `async fn`: it is the
//! whole task of an idle websocket, and a generated future keeps its
//! arguments and every future it awaits side by side (a future passed into
//! an `async fn` and awaited there is stored twice), so the nested `async`
//! version took a 1.8 KiB task cell per websocket where this one takes a
//! few hundred bytes.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Client, Upstream};
use crate::activity::WebsocketWatch;

/// Bytes read at once by a splice (one buffer per worker thread).
const SCRATCH_SIZE: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// Copies both ways until both directions ended, starting with bytes each
/// side sent along with its head; resolves to the bytes sent (client to
/// endpoint, endpoint to client). `websockets` counts it while it exists;
/// `watch` sees every byte each way (and counts the websocket as open for
/// its destination until the splice is dropped). `hold` lives as long as
/// the splice (e.g. what marks a CHP route active while it is open).
pub struct Splice<H> {
    client: Client,
    upstream: Upstream,
    up: Pump,
    down: Pump,
    websockets: IntGauge,
    watch: Option<Box<WebsocketWatch>>,
    _hold: H,
}

impl<H> Splice<H> {
    pub fn new(
        client: Client,
        upstream: Upstream,
        early_from_client: Vec<u8>,
        early_from_upstream: Vec<u8>,
        websockets: IntGauge,
        mut watch: Option<Box<WebsocketWatch>>,
        hold: H,
    ) -> Self {
        websockets.inc();
        if let Some(watch) = watch.as_mut() {
            watch.client_sent(&early_from_client);
            watch.server_sent(&early_from_upstream);
        }
        Self {
            client,
            upstream,
            up: Pump { pending: early_from_client, ..Pump::default() },
            down: Pump { pending: early_from_upstream, ..Pump::default() },
            websockets,
            watch,
            _hold: hold,
        }
    }
}

impl<H> Drop for Splice<H> {
    fn drop(&mut self) {
        self.websockets.dec();
    }
}

impl<H: Unpin> Future for Splice<H> {
    type Output = (u64, u64);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let watch = &mut this.watch;
        let up = this.up.poll(cx, &mut this.client, &mut this.upstream, |data| {
            if let Some(watch) = watch.as_mut() {
                watch.client_sent(data);
            }
        });
        let down = this.down.poll(cx, &mut this.upstream, &mut this.client, |data| {
            if let Some(watch) = watch.as_mut() {
                watch.server_sent(data);
            }
        });
        match (up, down) {
            (Poll::Ready(Err(error)), _) | (_, Poll::Ready(Err(error))) => {
                tracing::debug!(%error, "upgraded connection ended");
            }
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => {}
            _ => return Poll::Pending,
        }
        Poll::Ready((this.up.bytes, this.down.bytes))
    }
}

/// One direction of a splice.
#[derive(Default)]
pub(super) struct Pump {
    /// Bytes read but not yet taken by the receiver (empty, and unallocated, when idle).
    pending: Vec<u8>,
    written: usize,
    flush: bool,
    eof: bool,
    done: bool,
    bytes: u64,
}

impl Pump {
    /// Ready once the sender closed and everything it sent was delivered.
    /// `observe` sees each byte read, once, before it is written on.
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        mut observe: impl FnMut(&[u8]),
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            while self.written < self.pending.len() {
                let written = ready!(Pin::new(&mut *to).poll_write(cx, &self.pending[self.written..]))?;
                if written == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.written += written;
                self.flush = true;
            }
            if !self.pending.is_empty() {
                // Free it: an idle connection holds no buffer.
                self.pending = Vec::new();
                self.written = 0;
            }
            if self.flush {
                ready!(Pin::new(&mut *to).poll_flush(cx))?;
                self.flush = false;
            }
            if self.eof {
                ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_read_through(cx, from, to, &mut observe))?;
        }
    }

    /// Reads into the thread's scratch buffer and writes what it can
    /// straight on; the rest becomes `pending`.
    fn poll_read_through<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        observe: &mut impl FnMut(&[u8]),
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        SCRATCH.with_borrow_mut(|scratch| {
            let mut buffer = ReadBuf::new(scratch);
            ready!(Pin::new(&mut *from).poll_read(cx, &mut buffer))?;
            let data = buffer.filled();
            if data.is_empty() {
                self.eof = true;
                return Poll::Ready(Ok(()));
            }
            self.bytes += data.len() as u64;
            observe(data);
            let written = match Pin::new(&mut *to).poll_write(cx, data) {
                Poll::Ready(Ok(written)) => written,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => 0,
            };
            self.flush |= written > 0;
            if written < data.len() {
                self.pending = data[written..].to_vec();
                self.written = 0;
            }
            Poll::Ready(Ok(()))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn pump_delivers_everything_then_closes() {
        let (mut client, mut proxy_side) = tokio::io::duplex(64);
        let (mut upstream_side, mut server) = tokio::io::duplex(64);
        let sender = tokio::spawn(async move {
            // More than the duplex holds, so writes block and bytes go pending.
            client.write_all(&vec![7u8; 100_000]).await.unwrap();
            AsyncWriteExt::shutdown(&mut client).await.unwrap();
        });
        let receiver = tokio::spawn(async move {
            let mut received = Vec::new();
            server.read_to_end(&mut received).await.unwrap();
            received
        });
        let mut pump = Pump::default();
        let mut observed = 0;
        poll_fn(|cx| pump.poll(cx, &mut proxy_side, &mut upstream_side, |data| observed += data.len())).await.unwrap();
        drop(upstream_side);
        sender.await.unwrap();
        let received = receiver.await.unwrap();
        assert_eq!(received.len(), 100_000);
        assert_eq!(pump.bytes, 100_000);
        assert_eq!(observed, 100_000, "every byte observed once");
        assert!(pump.pending.capacity() == 0, "no buffer is held once everything was delivered");
    }

    #[test]
    fn an_idle_splice_is_small() {
        // What an idle websocket's task holds besides its sockets.
        assert!(std::mem::size_of::<Splice<()>>() <= 256, "{}", std::mem::size_of::<Splice<()>>());
    }
}
