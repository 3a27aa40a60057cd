//! Waiting for a fixed-rate loop's next send time, to the microsecond.
//!
//! tokio's timer wheel has a millisecond's resolution: every loop whose send
//! time falls in the same millisecond wakes at once, so 16 loops at 5,000
//! requests/s fire about five requests together every millisecond, and the
//! last of each burst waits behind the others' CPU in the server. That makes
//! a server's tail latency a measure of its cost per burst rather than of
//! the rate asked for. A `timerfd` per loop wakes at its own time (a
//! high-resolution timer, with this thread's timer slack cut from the
//! default 50 us to 1 us), through the same event loop as the sockets.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::cli::Pacing;

/// Timer slack asked for the load threads (Linux's default is 50 us).
const TIMER_SLACK_NS: u64 = 1_000;

/// One loop's timer.
pub enum Pacer {
    Exact(AsyncFd<Timer>),
    Millisecond,
}

/// A `TimerFd` as tokio registers it (by raw descriptor).
pub struct Timer(TimerFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Pacer {
    /// A timer for `pacing`; `Millisecond` when a timerfd cannot be had.
    pub fn new(pacing: Pacing) -> Pacer {
        if pacing == Pacing::Millisecond {
            return Pacer::Millisecond;
        }
        // Per thread; every loop on this thread asks the same.
        let _ = nix::sys::prctl::set_timerslack(TIMER_SLACK_NS);
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC);
        let Ok(timer) = timer else { return Pacer::Millisecond };
        // SAFETY: `register` asks that the descriptor stay open, and not be
        // replaced, for as long as it is registered. The `AsyncFd` owns the
        // `TimerFd` (an `OwnedFd`) and deregisters it before dropping it;
        // nothing else can reach the descriptor.
        #[allow(unsafe_code)]
        let registered = unsafe { AsyncFd::register(Timer(timer)) };
        registered.map_or(Pacer::Millisecond, Pacer::Exact)
    }

    /// Returns at `at` (or at once if it has passed).
    pub async fn sleep_until(&mut self, at: Instant) {
        let Pacer::Exact(timer) = self else {
            return tokio::time::sleep_until(at).await;
        };
        let wait = at.saturating_duration_since(Instant::now());
        // A zero expiration would disarm the timer instead of firing it.
        if wait < Duration::from_micros(1) {
            return;
        }
        let armed =
            timer.get_ref().0.set(Expiration::OneShot(TimeSpec::from_duration(wait)), TimerSetTimeFlags::empty());
        if armed.is_err() {
            return tokio::time::sleep_until(at).await;
        }
        loop {
            let Ok(mut ready) = timer.readable().await else {
                return tokio::time::sleep_until(at).await;
            };
            // Reading clears the expiration; `WouldBlock` means not yet.
            match ready.try_io(|timer| timer.get_ref().0.wait().map_err(std::io::Error::from)) {
                Ok(_) => return,
                Err(_would_block) => continue,
            }
        }
    }
}
