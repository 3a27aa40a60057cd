//! `portico-load sessions`: notebook users. Each session does what opening
//! a notebook tab does — GET the page (`--page`, default `lab`), `api/status`, `api/contents`,
//! start (or share) a kernel, open its channels websocket — then runs code
//! in bursts: `--burst` execute_requests `--execute-interval` apart, one
//! `api/status` poll, and an idle period sized so `--idle` of the session's
//! time is idle. Every result is checked (`a+b` must come back as its sum);
//! the execute latency is the round trip to the `execute_reply`.
//!
//! A failed step counts under its error kind and the session starts over
//! after a short pause, as a user reloading the tab would.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::json;
use tokio::sync::OnceCell;
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::Common;
use crate::cli::SessionsArgs;
use crate::error::{OpError, SetupError};
use crate::jupyter::{KernelSocket, Notebook};
use crate::report::Report;
use crate::stats::{Live, Recorder};
use crate::target::{Target, with_trailing_slash};
use crate::workers::{Progress, RateMeter, Workers};
use crate::ws_idle::delete_kernels;

/// Pause before a failed session starts over.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Bound on closing a websocket at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Code every session runs first; its result shows in the report.
const FIRST_CODE: &str = "1+1";

struct Plan {
    notebooks: Vec<Target>,
    /// Per notebook, per kernel slot: the kernel id once created.
    kernels: Vec<Vec<OnceCell<String>>>,
    token: Option<String>,
    page: String,
    sessions: usize,
    interval: Duration,
    burst: usize,
    idle_period: Duration,
    ramp: Duration,
    timeout: Duration,
    threads: usize,
    first_result: OnceLock<String>,
}

/// Runs the sessions and reports.
pub fn run(args: &SessionsArgs, common: &Common) -> Result<Report, SetupError> {
    if args.sessions == 0 || args.notebooks == 0 || args.kernels == 0 || args.burst == 0 {
        return Err(SetupError::Usage("--sessions, --notebooks, --kernels and --burst must be at least 1".into()));
    }
    if !(0.0..1.0).contains(&args.idle) {
        return Err(SetupError::Usage("--idle is a fraction of time: 0 <= IDLE < 1".into()));
    }
    let bases: Vec<String> = match (&args.base, &args.base_pattern) {
        (Some(base), _) => vec![with_trailing_slash(base)],
        (None, Some(pattern)) if pattern.contains("{i}") => {
            (0..args.notebooks).map(|i| with_trailing_slash(&pattern.replace("{i}", &i.to_string()))).collect()
        }
        (None, Some(_)) => {
            return Err(SetupError::Usage("--base-pattern needs {i} where the notebook number goes".into()));
        }
        (None, None) => return Err(SetupError::Usage("give --base or --base-pattern".into())),
    };
    let notebooks = common.resolve_all(&bases)?;
    let busy = args.interval_total();
    let plan = Arc::new(Plan {
        kernels: notebooks.iter().map(|_| (0..args.kernels).map(|_| OnceCell::new()).collect()).collect(),
        notebooks,
        token: args.token.clone(),
        page: args.page.clone(),
        sessions: args.sessions,
        interval: args.execute_interval,
        burst: args.burst,
        idle_period: busy.mul_f64(args.idle / (1.0 - args.idle)),
        ramp: args.ramp.unwrap_or_else(|| Duration::from_secs(1).min(args.duration / 4)),
        timeout: common.timeout,
        threads: common.threads.min(args.sessions),
        first_result: OnceLock::new(),
    });

    let live = Arc::new(Live::default());
    let start = std::time::Instant::now();
    let duration = args.duration;
    let workers = {
        let (plan, live) = (plan.clone(), live.clone());
        Workers::spawn(plan.threads, move |index| worker(index, plan.clone(), live.clone(), start, duration))?
    };
    let mut progress = Progress::new(live.clone(), common.quiet);
    let meter = RateMeter::default();
    let sessions = args.sessions;
    let recorder = workers.join(&mut progress, |live, _| {
        let (executes, errors, open) = live.snapshot();
        format!(
            "sessions connected {open}/{sessions}  executes {executes} ({:.0}/s)  errors {errors}",
            meter.rate(executes)
        )
    })?;
    let elapsed = start.elapsed().min(duration);

    // Shut down the kernels this run started (not measured).
    let mut created = 0;
    let mut deleted = 0;
    for (target, slots) in plan.notebooks.iter().zip(&plan.kernels) {
        let ids: Vec<String> = slots.iter().filter_map(|slot| slot.get().cloned()).collect();
        created += ids.len();
        if !args.keep_kernels && !ids.is_empty() {
            let mut notebook = Notebook::new(target.clone(), args.token.clone());
            deleted += common.block_on(delete_kernels(&mut notebook, &args.page, &ids, common.timeout));
        }
    }

    let settings = json!({
        "sessions": args.sessions,
        "notebooks": plan.notebooks.len(),
        "page": args.page,
        "duration_s": duration.as_secs_f64(),
        "execute_interval_s": args.execute_interval.as_secs_f64(),
        "burst": args.burst,
        "idle": args.idle,
        "idle_period_s": plan.idle_period.as_secs_f64(),
        "kernels_per_notebook": args.kernels,
        "ramp_s": plan.ramp.as_secs_f64(),
        "threads": plan.threads,
        "timeout_s": common.timeout.as_secs_f64(),
    });
    let urls = plan.notebooks.iter().map(|t| t.url.clone()).collect();
    let mut report = Report::new("sessions", urls, settings, elapsed, &recorder);
    let executes = report.op("execute").map_or(0, |op| op.count);
    let first = plan.first_result.get().cloned();
    report.detail("executes", json!(executes), None);
    report.detail(
        "first_execute",
        json!({ "code": FIRST_CODE, "result": first }),
        Some(format!("executes {executes}; {FIRST_CODE} -> {}", first.as_deref().unwrap_or("(none)"))),
    );
    report.detail(
        "kernels",
        json!({ "created": created, "deleted": deleted }),
        Some(format!("kernels created {created}, deleted {deleted}")),
    );
    Ok(report)
}

impl SessionsArgs {
    /// Time one burst of executions takes.
    fn interval_total(&self) -> Duration {
        self.execute_interval.saturating_mul(u32::try_from(self.burst).unwrap_or(u32::MAX))
    }
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
    let tasks: Vec<_> = (index..plan.sessions)
        .step_by(plan.threads)
        .map(|number| {
            let session =
                Session { plan: plan.clone(), recorder: recorder.clone(), live: live.clone(), number, deadline };
            let begin = start + plan.ramp.mul_f64(number as f64 / plan.sessions as f64);
            tokio::task::spawn_local(session.run(begin))
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    Ok(Rc::try_unwrap(recorder).map_or_else(|shared| shared.borrow().clone(), RefCell::into_inner))
}

/// Why a session cycle ended.
enum End {
    /// The run is over.
    Deadline,
    /// A step failed (already counted): start over.
    Failed,
}

struct Session {
    plan: Arc<Plan>,
    recorder: Rc<RefCell<Recorder>>,
    live: Arc<Live>,
    number: usize,
    deadline: Instant,
}

impl Session {
    async fn run(self, begin: Instant) {
        sleep_until(begin.min(self.deadline)).await;
        let notebook_index = self.number % self.plan.notebooks.len();
        let slot = (self.number / self.plan.notebooks.len()) % self.plan.kernels[notebook_index].len();
        let mut notebook = Notebook::new(self.plan.notebooks[notebook_index].clone(), self.plan.token.clone());
        let mut executions = 0u64;
        while Instant::now() < self.deadline {
            match self.cycle(&mut notebook, notebook_index, slot, &mut executions).await {
                End::Deadline => break,
                End::Failed => {
                    notebook.reset();
                    sleep_until((Instant::now() + RETRY_PAUSE).min(self.deadline)).await;
                }
            }
        }
    }

    /// Runs `op` bounded by the timeout and the end of the run; records it.
    /// `Err(End)` stops the cycle.
    async fn step<T>(&self, op: &'static str, future: impl Future<Output = Result<T, OpError>>) -> Result<T, End> {
        let started = Instant::now();
        if started >= self.deadline {
            return Err(End::Deadline);
        }
        let error = match timeout_at((started + self.plan.timeout).min(self.deadline), future).await {
            Ok(Ok(value)) => {
                self.recorder.borrow_mut().ok(op, started.elapsed());
                return Ok(value);
            }
            Ok(Err(error)) => error,
            Err(_) if Instant::now() >= self.deadline => return Err(End::Deadline),
            Err(_) => OpError::Timeout(self.plan.timeout),
        };
        self.failed(op, &error);
        Err(End::Failed)
    }

    fn failed(&self, op: &'static str, error: &OpError) {
        self.recorder.borrow_mut().error(op, error);
        self.live.error();
    }

    async fn cycle(&self, notebook: &mut Notebook, notebook_index: usize, slot: usize, executions: &mut u64) -> End {
        match self.open(notebook, notebook_index, slot).await {
            Ok(mut socket) => {
                self.live.opened();
                let end = self.work(notebook, &mut socket, executions).await;
                self.live.closed();
                if matches!(end, End::Deadline) {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.close()).await;
                }
                end
            }
            Err(end) => end,
        }
    }

    /// Page load, kernel, websocket.
    async fn open(&self, notebook: &mut Notebook, notebook_index: usize, slot: usize) -> Result<KernelSocket, End> {
        self.step("page", notebook.call("GET", &self.plan.page, None)).await?;
        self.step("status", notebook.call("GET", "api/status", None)).await?;
        self.step("contents", notebook.call("GET", "api/contents", None)).await?;
        let cell = &self.plan.kernels[notebook_index][slot];
        let kernel = match cell.get() {
            Some(id) => id.clone(),
            None => {
                // Only the first session of a slot creates; the others wait for its id.
                let created = cell.get_or_try_init(|| self.step("kernel_create", notebook.create_kernel())).await;
                created?.clone()
            }
        };
        let channels = notebook.channels(&kernel);
        let headers = notebook.ws_headers();
        self.step("ws_connect", KernelSocket::connect(&channels, &headers)).await
    }

    /// Bursts of executions with idle periods, until the end of the run.
    async fn work(&self, notebook: &mut Notebook, socket: &mut KernelSocket, executions: &mut u64) -> End {
        let mut first = true;
        loop {
            for _ in 0..self.plan.burst {
                let next = Instant::now() + self.plan.interval;
                let (code, expected) = if first {
                    (FIRST_CODE.to_string(), "2".to_string())
                } else {
                    let (a, b) = (self.number as u64, *executions);
                    (format!("{a}+{b}"), (u128::from(a) + u128::from(b)).to_string())
                };
                *executions += 1;
                let sent = Instant::now();
                let bound = (sent + self.plan.timeout).min(self.deadline);
                let error = match timeout_at(bound, socket.execute(&code)).await {
                    Ok(Ok(execution)) if execution.result.as_deref() == Some(expected.as_str()) => {
                        self.recorder.borrow_mut().ok("execute", execution.round_trip);
                        self.live.done();
                        if first {
                            let _ = self.plan.first_result.set(execution.result.unwrap_or_default());
                            first = false;
                        }
                        None
                    }
                    Ok(Ok(execution)) => {
                        Some(OpError::Kernel(format!("{code} gave {:?}, not {expected}", execution.result)))
                    }
                    Ok(Err(error)) => Some(error),
                    Err(_) if Instant::now() >= self.deadline => return End::Deadline,
                    Err(_) => Some(OpError::Timeout(self.plan.timeout)),
                };
                if let Some(error) = error {
                    self.failed("execute", &error);
                    return End::Failed;
                }
                if next >= self.deadline {
                    // Stay connected (idle) until the end, like an open tab.
                    sleep_until(self.deadline).await;
                    return End::Deadline;
                }
                sleep_until(next).await;
            }
            // JupyterLab polls the server while a notebook is open.
            if let Err(end) = self.step("status", notebook.call("GET", "api/status", None)).await {
                return end;
            }
            let wake = Instant::now() + self.plan.idle_period;
            if wake >= self.deadline {
                sleep_until(self.deadline).await;
                return End::Deadline;
            }
            sleep_until(wake).await;
        }
    }
}
