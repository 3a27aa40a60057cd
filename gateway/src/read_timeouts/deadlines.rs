//! The read clocks' one timer: a thread that wakes the connections whose
//! read deadline has passed, every [`TICK`].
//!
//! Why not a tokio timer per connection, as before: while any timer is
//! pending, every worker parks in `epoll_wait` with a timeout, which arms
//! and cancels a kernel hrtimer at each wake-up, and every read that went
//! pending registered its waker with the timer wheel. Loaded side by side
//! at the same rate, the gateway spent 2.3 us less CPU per request (of
//! ~115) with no read timer pending, and 2.2 us less with this watch: 1.2,
//! then 1.0 more once a pending read stopped taking the clock's lock to
//! leave its waker (bench/RESULTS.md, session 14).
//! Looking at every connection ten times a second costs nothing per
//! request; a slow client is cut off at most one tick late.
//!
//! Connections are kept in shards, one per lane, so that the workers
//! registering and dropping connections at once rarely share a lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::ReadClock;
use crate::lanes;

/// How often deadlines are looked at: how late a deadline may be enforced.
pub const TICK: Duration = Duration::from_millis(100);

/// The timed connections, by shard and key.
struct Deadlines {
    shards: Box<[Mutex<Shard>]>,
}

#[derive(Default)]
struct Shard {
    next_key: u64,
    clocks: HashMap<u64, Arc<ReadClock>>,
}

/// A connection's place among the watched ones; dropping it stops the watch.
pub struct Registration {
    shard: usize,
    key: u64,
}

/// Watches `clock` until the returned registration is dropped. The first
/// call starts the watching thread.
pub fn watch(clock: &Arc<ReadClock>) -> Registration {
    let deadlines = deadlines();
    let shard = lanes::this_thread() % deadlines.shards.len();
    let mut entries = deadlines.lock(shard);
    let key = entries.next_key;
    entries.next_key = key.wrapping_add(1);
    entries.clocks.insert(key, Arc::clone(clock));
    Registration { shard, key }
}

impl Drop for Registration {
    fn drop(&mut self) {
        deadlines().lock(self.shard).clocks.remove(&self.key);
    }
}

fn deadlines() -> &'static Deadlines {
    static DEADLINES: OnceLock<Deadlines> = OnceLock::new();
    DEADLINES.get_or_init(|| {
        let shards = (0..lanes::count()).map(|_| Mutex::new(Shard::default())).collect();
        let spawned = std::thread::Builder::new().name("read-deadlines".into()).spawn(|| {
            loop {
                std::thread::sleep(TICK);
                deadlines().wake_overdue(Instant::now());
            }
        });
        if let Err(error) = spawned {
            // Only at the first connection, when the system is out of
            // threads: reads then wait without a deadline (as Pingora's
            // own do), which is logged rather than refusing to serve.
            tracing::error!(%error, "no thread for read deadlines: slow clients are not cut off");
        }
        Deadlines { shards }
    })
}

impl Deadlines {
    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // Plain bookkeeping: a panic elsewhere cannot leave it torn.
        self.shards[shard].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes every connection whose deadline is `now` or earlier, each
    /// outside the shard's lock (a wake may run the task right here).
    fn wake_overdue(&self, now: Instant) {
        for shard in 0..self.shards.len() {
            let overdue: Vec<_> = self.lock(shard).clocks.values().filter_map(|clock| clock.overdue(now)).collect();
            overdue.into_iter().for_each(std::task::Waker::wake);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use super::*;
    use crate::read_timeouts::ReadTimeouts;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn overdue_connections_are_woken_and_dropped_or_timely_ones_never() {
        let timeouts = ReadTimeouts {
            header: Duration::from_millis(50),
            body: Duration::from_secs(1),
            body_min_rate: 0,
            idle: None,
        };
        let (overdue, dropped, timely) = (counter(), counter(), counter());
        let clock = Arc::new(ReadClock::new(timeouts, Instant::now()));
        let _registration = watch(&clock);
        clock.wait(&Waker::from(Arc::clone(&overdue)));
        let gone = Arc::new(ReadClock::new(timeouts, Instant::now()));
        drop(watch(&gone));
        gone.wait(&Waker::from(Arc::clone(&dropped)));
        let later =
            Arc::new(ReadClock::new(ReadTimeouts { header: Duration::from_secs(60), ..timeouts }, Instant::now()));
        let _later_registration = watch(&later);
        later.wait(&Waker::from(Arc::clone(&timely)));
        let deadline = Instant::now() + 20 * TICK;
        while overdue.0.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(TICK / 4);
        }
        std::thread::sleep(2 * TICK);
        assert!(overdue.0.load(Ordering::SeqCst) >= 1, "the overdue connection was not woken");
        assert!(clock.is_overdue(Instant::now()));
        assert_eq!(dropped.0.load(Ordering::SeqCst), 0, "a dropped connection was woken");
        assert_eq!(timely.0.load(Ordering::SeqCst), 0, "a connection within its deadline was woken");
    }

    fn counter() -> Arc<CountingWaker> {
        Arc::new(CountingWaker(AtomicUsize::new(0)))
    }
}
