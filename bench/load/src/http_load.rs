//! `portico-load http`: GET load over keep-alive connections.
//!
//! Closed loop by default (each connection sends its next request when the
//! previous answer is in). With `--rate`, every connection follows a fixed
//! schedule. A request that is late because the previous answer was late
//! counts from its *intended* send time, so a server that stalls is charged
//! for the requests that queued behind the stall (coordinated omission, as
//! wrk2 corrects it); one sent on time counts from its send, so the timer's
//! own lateness is not charged to the server. Loops wait with a timer of
//! their own, to the microsecond (`pacer`), so they do not fire in bursts.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::Common;
use crate::cli::{Engine, HttpArgs, Pacing};
use crate::error::{OpError, SetupError};
use crate::h1::{H1Conn, build_request};
use crate::pacer::Pacer;
use crate::report::Report;
use crate::stats::{Live, Recorder};
use crate::target::Target;
use crate::workers::{Progress, RateMeter, Workers};

/// Operation name in the report.
const OP: &str = "request";
/// Time given to threads and connections to come up before the clock starts.
const WARM_UP: Duration = Duration::from_millis(200);
/// Pause after a failed connect, so a refusing server is not spun on.
const CONNECT_BACKOFF: Duration = Duration::from_millis(50);

/// Everything the request loops share.
struct Plan {
    targets: Vec<Target>,
    raw_requests: Vec<Bytes>,
    origin_uris: Vec<Uri>,
    absolute_uris: Vec<Uri>,
    /// Index into `addrs` of each target's server.
    slot_of: Vec<usize>,
    addrs: Vec<SocketAddr>,
    connections: usize,
    streams: usize,
    interval: Option<Duration>,
    pacing: Pacing,
    engine: Engine,
    h2: bool,
    timeout: Duration,
    threads: usize,
}

/// Runs the load and reports.
pub fn run(args: &HttpArgs, common: &Common) -> Result<Report, SetupError> {
    if args.connections == 0 || args.streams == 0 {
        return Err(SetupError::Usage("--connections and --streams must be at least 1".into()));
    }
    let targets = common.resolve_all(&args.urls)?;
    let streams = if args.h2 { args.streams } else { 1 };
    let loops = args.connections * streams;
    let interval = match args.rate {
        Some(rate) if rate > 0.0 && rate.is_finite() => Some(Duration::from_secs_f64(loops as f64 / rate)),
        Some(_) => return Err(SetupError::Usage("--rate must be a positive number".into())),
        None => None,
    };
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let slot_of = targets
        .iter()
        .map(|t| {
            addrs.iter().position(|a| *a == t.addr).unwrap_or_else(|| {
                addrs.push(t.addr);
                addrs.len() - 1
            })
        })
        .collect();
    let uri = |text: String, url: &str| {
        text.parse::<Uri>().map_err(|e| SetupError::Url { url: url.to_string(), reason: e.to_string() })
    };
    if !args.headers.is_empty() && (args.engine != Engine::Raw || args.h2) {
        return Err(SetupError::Usage("--header needs the raw HTTP/1.1 engine".into()));
    }
    let headers: Vec<(&str, &str)> = args.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let plan = Arc::new(Plan {
        raw_requests: targets
            .iter()
            .map(|t| Bytes::from(build_request("GET", &t.path, &t.authority, &headers, None)))
            .collect(),
        origin_uris: targets.iter().map(|t| uri(t.path.clone(), &t.url)).collect::<Result<_, _>>()?,
        absolute_uris: targets
            .iter()
            .map(|t| uri(format!("http://{}{}", t.authority, t.path), &t.url))
            .collect::<Result<_, _>>()?,
        targets,
        slot_of,
        addrs,
        connections: args.connections,
        streams,
        interval,
        pacing: args.pacing,
        engine: args.engine,
        h2: args.h2,
        timeout: common.timeout,
        threads: common.threads.min(args.connections),
    });

    let live = Arc::new(Live::default());
    let start = std::time::Instant::now() + WARM_UP;
    let duration = args.duration;
    let workers = {
        let (plan, live) = (plan.clone(), live.clone());
        Workers::spawn(plan.threads, move |index| worker(index, plan.clone(), live.clone(), start, duration))?
    };
    let mut progress = Progress::new(live.clone(), common.quiet);
    let meter = RateMeter::default();
    let recorder = workers.join(&mut progress, |live, _| {
        let (done, errors, _) = live.snapshot();
        format!("requests {done} ({:.0}/s)  errors {errors}", meter.rate(done))
    })?;

    let settings = json!({
        "connections": args.connections,
        "duration_s": duration.as_secs_f64(),
        "rate": args.rate,
        "pacing": match args.pacing { Pacing::Exact => "exact", Pacing::Millisecond => "millisecond" },
        "protocol": if args.h2 { "h2c" } else { "http/1.1" },
        "streams": streams,
        "engine": if args.h2 { "hyper" } else { match args.engine { Engine::Raw => "raw", Engine::Hyper => "hyper" } },
        "threads": plan.threads,
        "timeout_s": common.timeout.as_secs_f64(),
    });
    let urls = plan.targets.iter().map(|t| t.url.clone()).collect();
    let mut report = Report::new("http", urls, settings, duration, &recorder);
    let (count, rps) = report.op(OP).map_or((0, 0.0), |op| (op.count, op.rate_per_s));
    report.detail("requests", json!(count), None);
    report.detail("requests_per_s", json!(rps), Some(format!("requests/s {rps:.1}  responses {count}")));
    Ok(report)
}

async fn worker(
    index: usize,
    plan: Arc<Plan>,
    live: Arc<Live>,
    start: std::time::Instant,
    duration: Duration,
) -> Result<Recorder, SetupError> {
    let recorder = Rc::new(RefCell::new(Recorder::new()?));
    let start = Instant::from_std(start);
    let deadline = start + duration;
    let total_loops = plan.connections * plan.streams;
    let mut tasks = Vec::new();
    for connection in (index..plan.connections).step_by(plan.threads) {
        let shared_h2: SharedH2 = Rc::new(RefCell::new(vec![None; plan.addrs.len()]));
        for stream in 0..plan.streams {
            let number = connection * plan.streams + stream;
            // Fixed-rate loops start staggered so the total rate is smooth.
            let first = plan.interval.map(|iv| start + iv.mul_f64(number as f64 / total_loops as f64));
            let ctx = LoopCtx {
                plan: plan.clone(),
                recorder: recorder.clone(),
                live: live.clone(),
                number,
                start,
                first,
                deadline,
            };
            let task = match (plan.h2, plan.engine) {
                (true, _) => {
                    tokio::task::spawn_local(ctx.run(Hyper2 { plan: plan.clone(), shared: shared_h2.clone() }))
                }
                (false, Engine::Raw) => {
                    tokio::task::spawn_local(ctx.run(Raw { plan: plan.clone(), conns: empty_slots(&plan) }))
                }
                (false, Engine::Hyper) => {
                    tokio::task::spawn_local(ctx.run(Hyper1 { plan: plan.clone(), senders: empty_slots(&plan) }))
                }
            };
            tasks.push(task);
        }
    }
    for task in tasks {
        // A panicking loop loses only its own requests.
        let _ = task.await;
    }
    let recorder = Rc::try_unwrap(recorder).map_or_else(|shared| shared.borrow().clone(), RefCell::into_inner);
    Ok(recorder)
}

fn empty_slots<T>(plan: &Plan) -> Vec<Option<T>> {
    std::iter::repeat_with(|| None).take(plan.addrs.len()).collect()
}

/// One request loop's context.
struct LoopCtx {
    plan: Arc<Plan>,
    recorder: Rc<RefCell<Recorder>>,
    live: Arc<Live>,
    number: usize,
    start: Instant,
    first: Option<Instant>,
    deadline: Instant,
}

impl LoopCtx {
    async fn run(self, mut transport: impl Transport) {
        let plan = &self.plan;
        // Connect before the clock starts (failures show up on first use).
        for slot in 0..plan.addrs.len() {
            let _ =
                tokio::time::timeout_at(self.start.min(Instant::now() + plan.timeout), transport.connect(slot)).await;
        }
        tokio::time::sleep_until(self.start).await;
        let mut pacer = Pacer::new(plan.pacing);
        let mut next_target = self.number % plan.targets.len();
        let mut intended = self.first;
        loop {
            let sent_at = match (intended, plan.interval) {
                (Some(at), Some(interval)) => {
                    if at >= self.deadline {
                        break;
                    }
                    intended = Some(at + interval);
                    if Instant::now() < at {
                        // Ahead of schedule: wait. A timer wakes a little
                        // late (a millisecond with tokio's); that delay is
                        // the client's, so the clock starts at the send.
                        pacer.sleep_until(at).await;
                        Instant::now()
                    } else {
                        // Behind schedule because the previous answer came
                        // late: that wait is the server's and counts.
                        at
                    }
                }
                _ => Instant::now(),
            };
            if sent_at >= self.deadline {
                break;
            }
            let target = next_target;
            next_target = (next_target + 1) % plan.targets.len();
            let bound = (Instant::now() + plan.timeout).min(self.deadline);
            let outcome = tokio::time::timeout_at(bound, transport.request(target)).await;
            let now = Instant::now();
            let error = match outcome {
                Ok(Ok(status)) => {
                    self.recorder.borrow_mut().ok(OP, now - sent_at);
                    self.live.done();
                    if status < 400 {
                        continue;
                    }
                    OpError::Status(status)
                }
                Ok(Err(error)) => {
                    transport.reset();
                    error
                }
                Err(_) if now >= self.deadline => break, // cut off by the end of the run, not a failure
                Err(_) => {
                    transport.reset();
                    OpError::Timeout(plan.timeout)
                }
            };
            self.recorder.borrow_mut().error(OP, &error);
            self.live.error();
            if matches!(error, OpError::Connect { .. }) {
                tokio::time::sleep_until((now + CONNECT_BACKOFF).min(self.deadline)).await;
            }
        }
    }
}

/// A way to send one GET and get its status.
trait Transport {
    /// Opens the connection to server `slot` if it is not open.
    async fn connect(&mut self, slot: usize) -> Result<(), OpError>;
    /// Sends the GET for target `target`, reads the whole response.
    async fn request(&mut self, target: usize) -> Result<u16, OpError>;
    /// Drops connections after a failure or timeout.
    fn reset(&mut self);
}

/// Prebuilt requests on raw sockets.
struct Raw {
    plan: Arc<Plan>,
    conns: Vec<Option<H1Conn>>,
}

impl Transport for Raw {
    async fn connect(&mut self, slot: usize) -> Result<(), OpError> {
        if self.conns[slot].is_none() {
            self.conns[slot] = Some(H1Conn::connect(self.plan.addrs[slot]).await?);
        }
        Ok(())
    }

    async fn request(&mut self, target: usize) -> Result<u16, OpError> {
        let slot = self.plan.slot_of[target];
        self.connect(slot).await?;
        let Some(conn) = self.conns[slot].as_mut() else { return Err(OpError::Closed) };
        let response = conn.exchange(&self.plan.raw_requests[target], false, false).await?;
        if response.close {
            self.conns[slot] = None;
        }
        Ok(response.status)
    }

    fn reset(&mut self) {
        self.conns.iter_mut().for_each(|c| *c = None);
    }
}

fn hyper_error(error: hyper::Error) -> OpError {
    if error.is_closed() || error.is_canceled() || error.is_incomplete_message() {
        OpError::Closed
    } else {
        OpError::Protocol(error.to_string())
    }
}

async fn tcp(addr: SocketAddr) -> Result<TokioIo<TcpStream>, OpError> {
    let stream = TcpStream::connect(addr).await.map_err(|source| OpError::Connect { addr, source })?;
    stream.set_nodelay(true)?;
    Ok(TokioIo::new(stream))
}

/// Drains a response body, frame by frame, without keeping it.
async fn drain(response: http::Response<hyper::body::Incoming>) -> Result<u16, OpError> {
    let status = response.status().as_u16();
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(hyper_error)?;
    }
    Ok(status)
}

/// hyper's HTTP/1.1 client connection.
struct Hyper1 {
    plan: Arc<Plan>,
    senders: Vec<Option<http1::SendRequest<Empty<Bytes>>>>,
}

impl Transport for Hyper1 {
    async fn connect(&mut self, slot: usize) -> Result<(), OpError> {
        if self.senders[slot].as_ref().is_none_or(|s| s.is_closed()) {
            let (sender, connection) =
                http1::handshake(tcp(self.plan.addrs[slot]).await?).await.map_err(hyper_error)?;
            tokio::task::spawn_local(connection);
            self.senders[slot] = Some(sender);
        }
        Ok(())
    }

    async fn request(&mut self, target: usize) -> Result<u16, OpError> {
        let slot = self.plan.slot_of[target];
        self.connect(slot).await?;
        let Some(sender) = self.senders[slot].as_mut() else { return Err(OpError::Closed) };
        sender.ready().await.map_err(hyper_error)?;
        let request = Request::get(self.plan.origin_uris[target].clone())
            .header(header::HOST, self.plan.targets[target].authority.as_str())
            .body(Empty::new())
            .map_err(|e| OpError::Protocol(e.to_string()))?;
        drain(sender.send_request(request).await.map_err(hyper_error)?).await
    }

    fn reset(&mut self) {
        self.senders.iter_mut().for_each(|s| *s = None);
    }
}

/// One HTTP/2 connection per server, shared by the streams of one connection number.
type SharedH2 = Rc<RefCell<Vec<Option<http2::SendRequest<Empty<Bytes>>>>>>;

/// hyper's HTTP/2 client (h2c, prior knowledge); the streams of one
/// connection share it.
struct Hyper2 {
    plan: Arc<Plan>,
    shared: SharedH2,
}

impl Transport for Hyper2 {
    async fn connect(&mut self, slot: usize) -> Result<(), OpError> {
        let open = self.shared.borrow()[slot].as_ref().is_some_and(|s| !s.is_closed());
        if !open {
            let io = tcp(self.plan.addrs[slot]).await?;
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await.map_err(hyper_error)?;
            tokio::task::spawn_local(connection);
            self.shared.borrow_mut()[slot] = Some(sender);
        }
        Ok(())
    }

    async fn request(&mut self, target: usize) -> Result<u16, OpError> {
        let slot = self.plan.slot_of[target];
        self.connect(slot).await?;
        let Some(mut sender) = self.shared.borrow()[slot].clone() else { return Err(OpError::Closed) };
        sender.ready().await.map_err(hyper_error)?;
        let request = Request::get(self.plan.absolute_uris[target].clone())
            .body(Empty::new())
            .map_err(|e| OpError::Protocol(e.to_string()))?;
        drain(sender.send_request(request).await.map_err(hyper_error)?).await
    }

    fn reset(&mut self) {
        self.shared.borrow_mut().iter_mut().for_each(|s| *s = None);
    }
}
