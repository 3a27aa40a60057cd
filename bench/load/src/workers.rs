//! Worker threads, each with its own single-threaded tokio runtime (as wrk
//! runs one event loop per thread): the tasks of one thread share its
//! [`Recorder`] without locks, and no task migrates between cores.
//!
//! The main thread stays free to print progress and, for `ws-idle`, to
//! sample the target's memory while the workers hold their connections.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::SetupError;
use crate::stats::{Live, Recorder};

/// Running worker threads.
pub struct Workers {
    handles: Vec<JoinHandle<Result<Recorder, SetupError>>>,
}

impl Workers {
    /// Starts `threads` workers; worker `i` runs `work(i)` to completion on
    /// its own current-thread runtime inside a `LocalSet` (so it can
    /// `spawn_local`), and hands back what it recorded.
    pub fn spawn<F, Fut>(threads: usize, work: F) -> Result<Workers, SetupError>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Recorder, SetupError>> + 'static,
    {
        let work = Arc::new(work);
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads {
            let work = work.clone();
            let handle = std::thread::Builder::new()
                .name(format!("portico-load-{index}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(SetupError::Runtime)?;
                    tokio::task::LocalSet::new().block_on(&runtime, work(index))
                })
                .map_err(SetupError::Runtime)?;
            handles.push(handle);
        }
        Ok(Workers { handles })
    }

    /// Whether every worker has returned.
    pub fn finished(&self) -> bool {
        self.handles.iter().all(JoinHandle::is_finished)
    }

    /// Waits for every worker, printing `progress` about once a second,
    /// and merges what they recorded.
    pub fn join(
        self,
        progress: &mut Progress,
        line: impl Fn(&Live, Duration) -> String,
    ) -> Result<Recorder, SetupError> {
        while !self.finished() {
            std::thread::sleep(Duration::from_millis(20));
            progress.tick(&line);
        }
        let mut total = Recorder::new()?;
        for handle in self.handles {
            let recorder = handle.join().map_err(|_| SetupError::WorkerPanicked)??;
            total.merge(&recorder);
        }
        Ok(total)
    }
}

/// The once-a-second progress line on stderr.
pub struct Progress {
    pub live: Arc<Live>,
    pub start: Instant,
    next: Instant,
    quiet: bool,
}

impl Progress {
    pub fn new(live: Arc<Live>, quiet: bool) -> Progress {
        let start = Instant::now();
        Progress { live, start, next: start + Duration::from_secs(1), quiet }
    }

    /// Prints `line(live, elapsed)` if a second has passed since the last line.
    pub fn tick(&mut self, line: impl Fn(&Live, Duration) -> String) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        while self.next <= now {
            self.next += Duration::from_secs(1);
        }
        if !self.quiet {
            let elapsed = now - self.start;
            let mut stderr = std::io::stderr().lock();
            // Progress is best effort: a closed stderr must not stop the run.
            let _ = writeln!(stderr, "[{:>4.0}s] {}", elapsed.as_secs_f64(), line(&self.live, elapsed));
        }
    }

    /// Sleeps `duration` on the main thread, ticking.
    pub fn sleep(&mut self, duration: Duration, line: impl Fn(&Live, Duration) -> String) {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(20)));
            self.tick(&line);
        }
    }
}

/// A rate from a delta over the time since the previous call.
#[derive(Debug)]
pub struct RateMeter {
    last: std::sync::Mutex<Option<(Instant, u64)>>,
}

impl Default for RateMeter {
    /// Starts counting from 0 now.
    fn default() -> Self {
        RateMeter { last: std::sync::Mutex::new(Some((Instant::now(), 0))) }
    }
}

impl RateMeter {
    /// Per-second rate of `count` since the last call.
    pub fn rate(&self, count: u64) -> f64 {
        let now = Instant::now();
        let Ok(mut last) = self.last.lock() else { return 0.0 };
        let rate = match *last {
            Some((then, before)) if now > then => (count.saturating_sub(before)) as f64 / (now - then).as_secs_f64(),
            _ => 0.0,
        };
        *last = Some((now, count));
        rate
    }
}
