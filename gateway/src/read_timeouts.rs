//! Request header and body read timeouts: slow clients (slowloris) are cut
//! off instead of holding connections and descriptors forever.
//!
//! Pingora bounds each single read (60 s, or the keep-alive timeout) but not
//! a whole request head or body, so a client sending one byte every few
//! seconds keeps a connection open indefinitely. This module adds Apache
//! `mod_reqtimeout` semantics for HTTP/1.x:
//!
//! * a request head must be complete within `header` of its first byte (of
//!   the accept, for a connection's first request: a client that connects
//!   and sends nothing is cut off too);
//! * a request body gets `body`, plus one second for every `body_min_rate`
//!   bytes received, so uploads of any size pass at a modest rate while a
//!   trickle is cut off;
//! * between keep-alive requests, a connection idle for `idle` is closed,
//!   as if the client had closed it. Pingora can do this one too, but arms
//!   a timer for every request's wait (2.8k instructions and 2.5
//!   allocations a request, bench/RESULTS.md).
//!
//! No connection has a timer of its own: one thread looks at every
//! connection's deadline ten times a second and wakes the overdue ones
//! ([`deadlines`], which says why).
//!
//! Three pieces:
//!
//! * [`TimedApp`] wraps the proxy service: it wraps each accepted stream in
//!   a [`TimedStream`], which holds the connection's [`ReadClock`].
//! * [`RequestClock`], held by each request's context, tells the clock when
//!   a head has been parsed, when the body ended and when the request is
//!   over (a plain field, not a Pingora module: a module costs a boxed
//!   object and a boxed future per filter call on every request). It finds
//!   the clock in the session's stream, not in a task-local: a task-local
//!   future swaps a thread-local in and out on every poll of the
//!   connection (~0.3 % of a request's CPU, perf).
//! * [`TimedStream`] fails a read that is pending past the current deadline.
//!
//! HTTP/2 connections are left alone here (h2's own limits and Pingora's
//! `h2_idle_timeout` apply): streams are multiplexed, so no single read
//! belongs to one request.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::header;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType,
};
use pingora_core::server::ShutdownWatch;
use pingora_http::RequestHeader;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

mod deadlines;

/// The HTTP/2 connection preface (what Pingora peeks at for h2c).
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

/// How long a client may take to send a request head and body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadTimeouts {
    pub header: Duration,
    pub body: Duration,
    /// Bytes per second that earn a body one more second (0: no extension).
    pub body_min_rate: u64,
    /// How long a keep-alive connection may wait for its next request
    /// (None: as long as the client likes).
    pub idle: Option<Duration>,
}

/// Where a connection is in its current request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Reading a request head, which must be complete by `deadline`.
    Head { deadline: Instant },
    /// Between keep-alive requests, closed at `deadline`; the next byte
    /// starts a head.
    Idle { deadline: Option<Instant> },
    /// Reading a body that started at `started`.
    Body { started: Instant, received: u64 },
    /// Waiting for the response, upgraded, or HTTP/2: no limit here.
    Unlimited,
    /// Spliced by [`crate::tunnel`] for the rest of the connection's life:
    /// never limited again, whatever the request's modules report.
    Tunnel,
}

/// The read deadline of one connection, shared by its stream and the
/// modules of its requests.
pub struct ReadClock {
    timeouts: ReadTimeouts,
    phase: Mutex<Phase>,
    /// The task of the read that went pending, for the deadline watch.
    waiting: Mutex<Option<Waker>>,
    /// Set by the watch when it found the deadline passed: only then does a
    /// pending read look at the time.
    flagged: AtomicBool,
}

/// Why a pending read ends at its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Overdue {
    /// Waiting between keep-alive requests: closed quietly.
    Idle,
    /// In the middle of a request head or body: a failed read.
    Reading,
}

impl fmt::Debug for ReadClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadClock").field("phase", &*self.phase()).finish()
    }
}

impl ReadClock {
    /// A new connection: its first head is due `header` after the accept.
    fn new(timeouts: ReadTimeouts, now: Instant) -> Self {
        Self {
            timeouts,
            phase: Mutex::new(Phase::Head { deadline: now + timeouts.header }),
            waiting: Mutex::new(None),
            flagged: AtomicBool::new(false),
        }
    }

    /// A read went pending: `None` to wait (the watch wakes `waker` at the
    /// deadline), or why the read ends now. `given` is the stream's copy of
    /// the waker last given to the clock: a connection's reads nearly
    /// always come from the same task, so the clock's lock is taken only
    /// when the task changed.
    fn pending(&self, waker: &Waker, given: &mut Option<Waker>) -> Option<Overdue> {
        if self.flagged.load(Ordering::Relaxed) {
            self.flagged.store(false, Ordering::Relaxed);
            // The flag may be older than the current deadline: check.
            if self.is_overdue(Instant::now()) {
                return Some(if self.is_idle() { Overdue::Idle } else { Overdue::Reading });
            }
        }
        if !given.as_ref().is_some_and(|given| given.will_wake(waker)) {
            self.wait(waker);
            *given = Some(waker.clone());
        }
        None
    }

    /// Keeps `waker` to wake at the deadline.
    fn wait(&self, waker: &Waker) {
        *self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(waker.clone());
    }

    fn is_overdue(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|deadline| deadline <= now)
    }

    /// For the watch: the task to wake when the deadline has passed by
    /// `now`. The clock keeps its waker (a stream does not give it again),
    /// so an overdue connection is woken at every tick until it ends.
    fn overdue(&self, now: Instant) -> Option<Waker> {
        if !self.is_overdue(now) {
            return None;
        }
        self.flagged.store(true, Ordering::Relaxed);
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        // The phase is plain data: a panic elsewhere cannot leave it torn.
        self.phase.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// When a pending read must give up, if at all.
    fn deadline(&self) -> Option<Instant> {
        match *self.phase() {
            Phase::Head { deadline } => Some(deadline),
            Phase::Body { started, received } => {
                let rate = self.timeouts.body_min_rate;
                let earned =
                    if rate == 0 { Duration::ZERO } else { Duration::from_secs_f64(received as f64 / rate as f64) };
                Some(started + self.timeouts.body + earned)
            }
            Phase::Idle { deadline } => deadline,
            Phase::Unlimited | Phase::Tunnel => None,
        }
    }

    /// `count` bytes arrived. The clock is read only when they start a
    /// head: most reads are not the first of a request.
    fn on_read(&self, count: usize, now: impl FnOnce() -> Instant) {
        let mut phase = self.phase();
        match &mut *phase {
            Phase::Idle { .. } if count > 0 => *phase = Phase::Head { deadline: now() + self.timeouts.header },
            Phase::Body { received, .. } => *received = received.saturating_add(count as u64),
            _ => {}
        }
    }

    /// The head was parsed; a body follows or not.
    fn head_done(&self, body_follows: bool, now: Instant) {
        self.set(if body_follows { Phase::Body { started: now, received: 0 } } else { Phase::Unlimited });
    }

    /// The body ended: what follows is the wait for the response.
    fn body_done(&self) {
        self.set(Phase::Unlimited);
    }

    /// The request is over; the connection may wait for the next one.
    fn request_done(&self, now: Instant) {
        self.set(Phase::Idle { deadline: self.timeouts.idle.map(|idle| now + idle) });
    }

    /// Whether the connection is waiting between requests (a deadline
    /// passed then closes it quietly instead of failing a read).
    fn is_idle(&self) -> bool {
        matches!(*self.phase(), Phase::Idle { .. })
    }

    fn set(&self, next: Phase) {
        let mut phase = self.phase();
        if *phase != Phase::Tunnel {
            *phase = next;
        }
    }
}

/// Wraps a server app (the proxy) so that its connections are timed.
pub struct TimedApp<A> {
    inner: Arc<A>,
    timeouts: ReadTimeouts,
}

impl<A> TimedApp<A> {
    pub fn new(inner: A, timeouts: ReadTimeouts) -> Self {
        Self { inner: Arc::new(inner), timeouts }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for TimedApp<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let clock = Arc::new(ReadClock::new(self.timeouts, Instant::now()));
        if stream.selected_alpn_proto() == Some(ALPN::H2) {
            clock.body_done();
        }
        let watch = deadlines::watch(&clock);
        let timed = TimedStream { inner: stream, clock, given: None, _watch: watch, h2: false };
        self.inner.process_new(Box::new(timed), shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// One request's view of its connection's clock (none for HTTP/2 streams,
/// which run on tasks of their own). Dropped with the request's context:
/// the connection may then wait for its next request.
#[derive(Debug, Default)]
pub struct RequestClock {
    clock: Option<Arc<ReadClock>>,
}

impl RequestClock {
    /// The clock of the connection `stream` is (none for HTTP/2, whose
    /// session has no stream of its own).
    pub fn of(stream: Option<&Stream>) -> Self {
        // `**`: the boxed stream itself, not the box, is the TimedStream.
        let timed = stream.and_then(|stream| (**stream).as_any().downcast_ref::<TimedStream>());
        Self { clock: timed.map(|timed| Arc::clone(&timed.clock)) }
    }

    /// The connection is spliced from now on: its reads are never limited
    /// again.
    pub fn tunnel_started(&self) {
        if let Some(clock) = &self.clock {
            *clock.phase() = Phase::Tunnel;
        }
    }

    /// Whether this request's connection closes itself when idle between
    /// requests (HTTP/1.x with an idle timeout), so Pingora need not.
    pub fn closes_idle(&self) -> bool {
        self.clock.as_ref().is_some_and(|clock| clock.timeouts.idle.is_some())
    }

    /// The head was parsed: a declared body (not an upgrade's) is timed next.
    pub fn head_parsed(&self, request: &RequestHeader) {
        if let Some(clock) = &self.clock {
            clock.head_done(announces_body(request) && !request.headers.contains_key(header::UPGRADE), Instant::now());
        }
    }

    /// The request body ended: what follows is the wait for the response.
    pub fn body_ended(&self) {
        if let Some(clock) = &self.clock {
            clock.body_done();
        }
    }
}

impl Drop for RequestClock {
    fn drop(&mut self) {
        if let Some(clock) = &self.clock {
            clock.request_done(Instant::now());
        }
    }
}

fn announces_body(request: &RequestHeader) -> bool {
    let length = request
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    length.is_some_and(|length| length > 0) || request.headers.contains_key(header::TRANSFER_ENCODING)
}

/// A client stream whose reads fail once pending past the clock's deadline.
pub struct TimedStream {
    inner: Stream,
    clock: Arc<ReadClock>,
    /// The waker this stream last gave its clock.
    given: Option<Waker>,
    /// Watched for its deadlines as long as it lives.
    _watch: deadlines::Registration,
    /// Set once the client spoke HTTP/2: the clock no longer applies.
    h2: bool,
}

impl fmt::Debug for TimedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedStream").field("inner", &self.inner).field("clock", &self.clock).finish()
    }
}

impl TimedStream {
    /// The client stream itself: a spliced upgrade is past every deadline
    /// this wrapper enforces, and its timer and clock need not live on.
    pub fn into_inner(self) -> Stream {
        self.inner
    }
}

fn too_slow() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "client sent the request too slowly")
}

impl AsyncRead for TimedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.clock.on_read(buf.filled().len() - before, Instant::now);
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.h2 => Poll::Pending,
            Poll::Pending => match this.clock.pending(cx.waker(), &mut this.given) {
                None => Poll::Pending,
                // Closed as an idle keep-alive: to Pingora, the end of the
                // stream, as when the client closes it.
                Some(Overdue::Idle) => Poll::Ready(Ok(())),
                Some(Overdue::Reading) => Poll::Ready(Err(too_slow())),
            },
            ready => ready,
        }
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for TimedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for TimedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for TimedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for TimedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for TimedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for TimedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for TimedStream {
    /// Pingora peeks for the h2c preface before reading anything: bounded
    /// by the head deadline too (a silent client would wait here forever).
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let (clock, given) = (&self.clock, &mut self.given);
        let peeked = {
            let mut peek = std::pin::pin!(self.inner.try_peek(buf));
            std::future::poll_fn(|cx| match peek.as_mut().poll(cx) {
                Poll::Pending => match clock.pending(cx.waker(), given) {
                    None => Poll::Pending,
                    Some(_) => Poll::Ready(Err(too_slow())),
                },
                ready => ready,
            })
            .await?
        };
        if peeked && buf.starts_with(H2_PREFACE_START) {
            self.h2 = true;
            self.clock.body_done();
        }
        Ok(peeked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: ReadTimeouts = ReadTimeouts {
        header: Duration::from_secs(10),
        body: Duration::from_secs(20),
        body_min_rate: 500,
        idle: Some(Duration::from_secs(60)),
    };

    #[tokio::test]
    async fn a_first_head_is_due_from_the_accept() {
        let now = Instant::now();
        let clock = ReadClock::new(TIMEOUTS, now);
        assert_eq!(clock.deadline(), Some(now + TIMEOUTS.header));
        clock.on_read(10, || now + Duration::from_secs(3));
        assert_eq!(clock.deadline(), Some(now + TIMEOUTS.header), "bytes do not extend a head");
    }

    #[tokio::test]
    async fn a_body_earns_time_with_every_byte() {
        let now = Instant::now();
        let clock = ReadClock::new(TIMEOUTS, now);
        clock.head_done(true, now);
        assert_eq!(clock.deadline(), Some(now + TIMEOUTS.body));
        clock.on_read(5_000, || now);
        assert_eq!(clock.deadline(), Some(now + TIMEOUTS.body + Duration::from_secs(10)));
        clock.body_done();
        assert_eq!(clock.deadline(), None, "waiting for the response is not the client's time");
    }

    #[tokio::test]
    async fn keep_alive_waits_get_the_idle_timeout_until_the_next_byte() {
        let now = Instant::now();
        let clock = ReadClock::new(TIMEOUTS, now);
        clock.head_done(false, now);
        assert_eq!(clock.deadline(), None);
        clock.request_done(now);
        assert_eq!(clock.deadline(), Some(now + Duration::from_secs(60)));
        assert!(clock.is_idle());
        let later = now + Duration::from_secs(30);
        clock.on_read(1, || later);
        assert_eq!(clock.deadline(), Some(later + TIMEOUTS.header));
        assert!(!clock.is_idle());
        let untimed = ReadClock::new(ReadTimeouts { idle: None, ..TIMEOUTS }, now);
        untimed.request_done(now);
        assert_eq!(untimed.deadline(), None);
    }

    #[test]
    fn only_declared_bodies_are_timed_as_bodies() {
        let mut request = RequestHeader::build("POST", b"/", None).unwrap();
        assert!(!announces_body(&request));
        request.insert_header("content-length", "0").unwrap();
        assert!(!announces_body(&request));
        request.insert_header("content-length", "3").unwrap();
        assert!(announces_body(&request));
    }
}
