//! Identifiers and timestamps in the shapes Jupyter uses: uuid-like hex ids
//! for kernels, sessions and messages, RFC 3339 dates.
//!
//! No `rand` or `chrono`: a per-process seed from std's randomly keyed
//! hasher plus a counter is unique enough for a fake, and costs nothing.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Generates distinct uuid-like ids (`8-4-4-4-12` lower-case hex, version 4 shape).
#[derive(Debug)]
pub struct IdGenerator {
    seed: u64,
    counter: AtomicU64,
}

impl Default for IdGenerator {
    fn default() -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
        let seed = RandomState::new().hash_one((nanos, std::process::id()));
        IdGenerator { seed, counter: AtomicU64::new(0) }
    }
}

impl IdGenerator {
    /// The next id; never repeats within this generator.
    pub fn next_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let high = splitmix64(self.seed ^ n);
        let low = splitmix64(high ^ n.rotate_left(32));
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            high >> 32,
            (high >> 16) & 0xffff,
            high & 0x0fff,
            0x8000 | ((low >> 48) & 0x3fff),
            low & 0xffff_ffff_ffff
        )
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `now` as RFC 3339 in UTC with microseconds, like Jupyter's message dates.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// `time` as RFC 3339 in UTC with microseconds (`1970-01-01T00:00:00.000000Z`).
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        (rest / 60) % 60,
        rest % 60,
        since.subsec_micros()
    )
}

/// Howard Hinnant's days-to-civil for days since 1970-01-01 (non-negative).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    #[test]
    fn ids_are_uuid_shaped_and_distinct() {
        let ids = IdGenerator::default();
        let all: HashSet<String> = (0..1000).map(|_| ids.next_id()).collect();
        assert_eq!(all.len(), 1000);
        for id in &all {
            let parts: Vec<usize> = id.split('-').map(str::len).collect();
            assert_eq!(parts, [8, 4, 4, 4, 12], "{id}");
            assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{id}");
        }
    }

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + Duration::from_micros(951_782_400_000_001); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000001Z");
        let later = UNIX_EPOCH + Duration::from_secs(1_767_225_599); // 2025-12-31T23:59:59
        assert_eq!(rfc3339(later), "2025-12-31T23:59:59.000000Z");
    }
}
