//! `portico-load ws-idle`: opens N kernel websockets (ramped, a bounded
//! number of handshakes in flight), holds them idle, and reports how much
//! resident memory a process (the gateway) grew per open websocket.
//!
//! RSS is sampled before the first handshake, once all are open, at the end
//! of the hold (the figure per connection uses this one: allocators settle
//! during the hold) and after all are closed again.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, timeout};

use crate::Common;
use crate::cli::WsIdleArgs;
use crate::error::{OpError, SetupError};
use crate::jupyter::{KernelSocket, Notebook};
use crate::report::Report;
use crate::rss::rss_kib;
use crate::stats::{Live, Recorder};
use crate::target::{Target, with_trailing_slash};
use crate::workers::{Progress, Workers};

/// Bound on the closing handshake of one websocket.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Page loaded before creating or deleting kernels, for Jupyter's `_xsrf` cookie.
pub const PAGE: &str = "lab";
/// Pause after closing before the last RSS sample.
const SETTLE: Duration = Duration::from_millis(500);

struct Plan {
    targets: Vec<Target>,
    headers: Vec<(&'static str, String)>,
    count: usize,
    parallel: usize,
    timeout: Duration,
    threads: usize,
}

/// Runs the hold and reports.
pub fn run(args: &WsIdleArgs, common: &Common) -> Result<Report, SetupError> {
    if args.count == 0 || args.parallel == 0 || args.kernels == 0 {
        return Err(SetupError::Usage("--count, --parallel and --kernels must be at least 1".into()));
    }
    let started = std::time::Instant::now();
    let mut created = None;
    let (targets, headers) = match &args.base {
        Some(base) => {
            let mut notebook = Notebook::new(common.resolve(&with_trailing_slash(base))?, args.token.clone());
            let ids = common.block_on(create_kernels(&mut notebook, args.kernels, common.timeout))?;
            let targets = ids.iter().map(|id| notebook.channels(id)).collect();
            let headers = notebook.ws_headers();
            created = Some((notebook, ids));
            (targets, headers)
        }
        None => {
            let headers = args.token.iter().map(|t| ("Authorization", format!("token {t}"))).collect();
            (common.resolve_all(&args.urls)?, headers)
        }
    };
    let mut samples: Vec<Sample> = args
        .pids
        .iter()
        .map(|&pid| {
            rss_kib(pid)
                .map(|before| Sample { pid, before, open: 0, held: 0, closed: 0 })
                .map_err(|e| SetupError::Usage(format!("--pid {pid}: {e}")))
        })
        .collect::<Result<_, _>>()?;

    let plan = Arc::new(Plan {
        targets,
        headers,
        count: args.count,
        parallel: args.parallel,
        timeout: common.timeout,
        threads: common.threads.min(args.count),
    });
    let live = Arc::new(Live::default());
    let (stop, stopped) = watch::channel(false);
    let workers = {
        let (plan, live) = (plan.clone(), live.clone());
        Workers::spawn(plan.threads, move |index| worker(index, plan.clone(), live.clone(), stopped.clone()))?
    };
    let count = args.count;
    let line = |phase: &'static str| {
        move |live: &Live, _: Duration| {
            let (opened, failed, open) = live.snapshot();
            format!("{phase}: opened {opened}/{count}  open {open}  failed {failed}")
        }
    };
    let mut progress = Progress::new(live.clone(), common.quiet);
    // Ramp: until every handshake has succeeded or failed.
    loop {
        let (opened, failed, _) = live.snapshot();
        if opened + failed >= count as u64 || workers.finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        progress.tick(line("opening"));
    }
    let ramp = started.elapsed();
    sample_all(&mut samples, |s, rss| s.open = rss);
    progress.sleep(args.hold, line("holding"));
    let open_at_end = live.snapshot().2.max(0) as u64;
    sample_all(&mut samples, |s, rss| s.held = rss);
    // The receivers live as long as the workers; a send error only means
    // they are all gone already.
    let _ = stop.send(true);
    let recorder = workers.join(&mut progress, line("closing"))?;
    std::thread::sleep(SETTLE);
    sample_all(&mut samples, |s, rss| s.closed = rss);

    let mut cleanup = None;
    if let Some((mut notebook, ids)) = created.filter(|_| !args.keep_kernels) {
        cleanup = Some(common.block_on(delete_kernels(&mut notebook, PAGE, &ids, common.timeout)));
    }

    let settings = json!({
        "count": args.count,
        "hold_s": args.hold.as_secs_f64(),
        "parallel": args.parallel,
        "kernels": args.base.as_ref().map(|_| args.kernels),
        "threads": plan.threads,
        "timeout_s": common.timeout.as_secs_f64(),
    });
    let urls = match &args.base {
        Some(base) => vec![base.clone()],
        None => plan.targets.iter().map(|t| t.url.clone()).collect(),
    };
    let mut report = Report::new("ws-idle", urls, settings, started.elapsed(), &recorder);
    let opened = report.op("ws_connect").map_or(0, |op| op.count);
    let failed = report.op("ws_connect").map_or(0, |op| op.errors);
    report.detail(
        "websockets",
        json!({ "requested": count, "opened": opened, "failed": failed, "open_at_end_of_hold": open_at_end, "ramp_s": ramp.as_secs_f64() }),
        Some(format!(
            "websockets opened {opened}/{count} in {:.2} s (failed {failed}), {open_at_end} still open after holding {:.1} s",
            ramp.as_secs_f64(),
            args.hold.as_secs_f64()
        )),
    );
    let memory: Vec<Value> = samples
        .iter()
        .map(|s| {
            let per = (open_at_end > 0).then(|| (s.held as f64 - s.before as f64) / open_at_end as f64);
            report.summary.push(format!(
                "pid {}: RSS {} KiB before, {} KiB all open, {} KiB after hold, {} KiB after close => {} KiB per websocket",
                s.pid,
                s.before,
                s.open,
                s.held,
                s.closed,
                per.map_or_else(|| "n/a".to_string(), |p| format!("{p:.1}"))
            ));
            json!({
                "pid": s.pid, "rss_before_kib": s.before, "rss_all_open_kib": s.open,
                "rss_after_hold_kib": s.held, "rss_after_close_kib": s.closed, "per_connection_kib": per,
            })
        })
        .collect();
    report.detail("memory", Value::Array(memory), None);
    if let Some(cleanup) = cleanup {
        report.detail("kernels_deleted", json!(cleanup), Some(format!("kernels deleted: {cleanup}")));
    }
    Ok(report)
}

/// RSS samples of one process, KiB.
struct Sample {
    pid: u32,
    before: u64,
    open: u64,
    held: u64,
    closed: u64,
}

fn sample_all(samples: &mut [Sample], set: impl Fn(&mut Sample, u64)) {
    for sample in samples {
        // A process that exited reads as 0.
        let rss = rss_kib(sample.pid).unwrap_or(0);
        set(sample, rss);
    }
}

/// Creates `count` kernels (bounded), after a page load that picks up
/// Jupyter's `_xsrf` cookie.
pub async fn create_kernels(notebook: &mut Notebook, count: usize, limit: Duration) -> Result<Vec<String>, SetupError> {
    let base = notebook_url(notebook);
    let prepare = |source| SetupError::Prepare { base: base.clone(), source };
    notebook.prime(PAGE, limit).await;
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let id = timeout(limit, notebook.create_kernel()).await.map_err(|_| OpError::Timeout(limit)).and_then(|r| r);
        ids.push(id.map_err(&prepare)?);
    }
    Ok(ids)
}

fn notebook_url(notebook: &Notebook) -> String {
    format!("http://{}{}", notebook.base.authority, notebook.base.path)
}

/// Deletes kernels (after loading `page` for the `_xsrf` cookie if need
/// be); returns how many went.
pub async fn delete_kernels(notebook: &mut Notebook, page: &str, ids: &[String], limit: Duration) -> usize {
    notebook.prime(page, limit).await;
    let mut deleted = 0;
    for id in ids {
        match timeout(limit, notebook.delete_kernel(id)).await {
            Ok(Ok(())) => deleted += 1,
            Ok(Err(_)) => {}
            Err(_) => notebook.reset(),
        }
    }
    deleted
}

async fn worker(
    index: usize,
    plan: Arc<Plan>,
    live: Arc<Live>,
    stop: watch::Receiver<bool>,
) -> Result<Recorder, SetupError> {
    let recorder = Rc::new(RefCell::new(Recorder::new()?));
    // Each thread gets its share of the handshakes in flight.
    let permits = Rc::new(Semaphore::new((plan.parallel / plan.threads).max(1)));
    let tasks: Vec<_> = (index..plan.count)
        .step_by(plan.threads)
        .map(|number| {
            let hold = Hold { plan: plan.clone(), recorder: recorder.clone(), live: live.clone(), stop: stop.clone() };
            tokio::task::spawn_local(hold.run(number, permits.clone()))
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    Ok(Rc::try_unwrap(recorder).map_or_else(|shared| shared.borrow().clone(), RefCell::into_inner))
}

struct Hold {
    plan: Arc<Plan>,
    recorder: Rc<RefCell<Recorder>>,
    live: Arc<Live>,
    stop: watch::Receiver<bool>,
}

impl Hold {
    fn failed(&self, op: &'static str, error: &OpError) {
        self.recorder.borrow_mut().error(op, error);
        self.live.error();
    }

    async fn run(mut self, number: usize, permits: Rc<Semaphore>) {
        let target = &self.plan.targets[number % self.plan.targets.len()];
        let socket = {
            let Ok(_permit) = permits.acquire().await else { return };
            let started = Instant::now();
            match timeout(self.plan.timeout, KernelSocket::connect(target, &self.plan.headers)).await {
                Ok(Ok(socket)) => {
                    self.recorder.borrow_mut().ok("ws_connect", started.elapsed());
                    self.live.done();
                    socket
                }
                Ok(Err(error)) => return self.failed("ws_connect", &error),
                Err(_) => return self.failed("ws_connect", &OpError::Timeout(self.plan.timeout)),
            }
        };
        let mut socket = socket;
        self.live.opened();
        let ended = tokio::select! {
            reason = socket.idle() => Some(reason),
            _ = self.stop.wait_for(|stop| *stop) => None,
        };
        self.live.closed();
        if let Some(reason) = ended {
            // The server (or gateway) closed an idle websocket. Not in the
            // live failure count, which tracks handshakes (the ramp's end).
            return self.recorder.borrow_mut().error("ws_hold", &reason);
        }
        let started = Instant::now();
        match timeout(CLOSE_TIMEOUT, socket.close()).await {
            Ok(()) => self.recorder.borrow_mut().ok("ws_close", started.elapsed()),
            Err(_) => self.failed("ws_close", &OpError::Timeout(CLOSE_TIMEOUT)),
        }
    }
}
