//! The access log: one line per request, in the format of the `tracing`
//! event it has always been (`target: "access"`, text or JSON), written
//! without `tracing`'s field machinery.
//!
//! Formatting the event through tracing-subscriber cost ~17k instructions a
//! request (callgrind): a `fmt::write` per field, each field name painted
//! through `nu-ansi-term` even with colours off, the timestamp's calendar
//! computed on every line. Here the line is written byte by byte into a
//! per-thread buffer, the date part of the timestamp once per second, and
//! handed to the log writer's queue ([`NonBlocking::push`]). The bytes are
//! the same as the subscriber's (a test compares both, text and JSON), the
//! `RUST_LOG` filter still decides (`access=info`), and where this path
//! does not apply (colours on a terminal, no writer thread) the event goes
//! through `tracing` as before.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cli::LogFormat;
use crate::log_writer::NonBlocking;

/// Where lines go when they are formatted here (set by [`install`]).
static SINK: OnceLock<(LogFormat, NonBlocking)> = OnceLock::new();

/// Formats access lines here from now on, in `format`, into `sink`. Only
/// for a subscriber without colours writing into `sink`.
pub fn install(format: LogFormat, sink: NonBlocking) {
    let _ = SINK.set((format, sink));
}

/// One request's line.
pub struct AccessRecord<'a> {
    pub method: &'a str,
    pub path: &'a [u8],
    pub status: u16,
    pub flags: &'a str,
    pub route: &'a str,
    pub destination: &'a str,
    pub upstream: Option<SocketAddr>,
    pub duration_ms: u64,
    pub bytes_received: usize,
    pub bytes_sent: usize,
    /// The error's text, when the request failed.
    pub error: Option<&'a dyn std::fmt::Display>,
}

/// Logs `record` when the `access` target is enabled at INFO.
pub fn log(record: &AccessRecord<'_>) {
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return;
    }
    thread_local! {
        static LINE: RefCell<Line> = RefCell::new(Line::default());
    }
    let Some((format, sink)) = SINK.get() else { return log_event(record) };
    let written = LINE.with(|line| {
        let Ok(mut line) = line.try_borrow_mut() else { return false };
        let line = &mut *line;
        line.bytes.clear();
        if !line.format(*format, SystemTime::now(), record) {
            return false;
        }
        sink.push(&line.bytes);
        true
    });
    if !written {
        log_event(record);
    }
}

/// The same line through `tracing` (the subscriber formats it).
fn log_event(record: &AccessRecord<'_>) {
    let upstream = record.upstream.map(|a| a.to_string());
    let error = record.error.map(ToString::to_string);
    tracing::info!(
        target: "access",
        method = %record.method,
        path = %String::from_utf8_lossy(record.path),
        status = record.status,
        flags = record.flags,
        route = record.route,
        destination = record.destination,
        upstream = upstream.as_deref().unwrap_or("-"),
        duration_ms = record.duration_ms,
        bytes_received = record.bytes_received,
        bytes_sent = record.bytes_sent,
        error = error.as_deref().unwrap_or("-"),
    );
}

/// A thread's line buffer, and the date part of its last timestamp.
#[derive(Default)]
struct Line {
    bytes: Vec<u8>,
    /// `YYYY-MM-DDTHH:MM:SS.` of second `second` since the epoch.
    date: Option<(u64, [u8; 20])>,
}

impl Line {
    /// Writes `record`'s line as tracing-subscriber would. `false` for a
    /// time it does not format like the subscriber (before 1970).
    fn format(&mut self, format: LogFormat, now: SystemTime, record: &AccessRecord<'_>) -> bool {
        let Ok(since_epoch) = now.duration_since(UNIX_EPOCH) else { return false };
        let seconds = since_epoch.as_secs();
        let date = match self.date {
            Some((second, date)) if second == seconds => date,
            _ => {
                let Some(date) = date_part(seconds) else { return false };
                self.date = Some((seconds, date));
                date
            }
        };
        let out = &mut self.bytes;
        let micros = u64::from(since_epoch.subsec_micros());
        let error = record.error.map(ToString::to_string);
        let error = error.as_deref().unwrap_or("-");
        match format {
            LogFormat::Text => {
                out.extend_from_slice(&date);
                six_digits(out, micros);
                out.extend_from_slice(b"Z  INFO access: method=");
                out.extend_from_slice(record.method.as_bytes());
                out.extend_from_slice(b" path=");
                out.extend_from_slice(String::from_utf8_lossy(record.path).as_bytes());
                out.extend_from_slice(b" status=");
                decimal(out, u64::from(record.status));
                out.extend_from_slice(b" flags=");
                debug_str(out, record.flags);
                out.extend_from_slice(b" route=");
                debug_str(out, record.route);
                out.extend_from_slice(b" destination=");
                debug_str(out, record.destination);
                out.extend_from_slice(b" upstream=\"");
                upstream(out, record.upstream);
                out.extend_from_slice(b"\" duration_ms=");
                decimal(out, record.duration_ms);
                out.extend_from_slice(b" bytes_received=");
                decimal(out, record.bytes_received as u64);
                out.extend_from_slice(b" bytes_sent=");
                decimal(out, record.bytes_sent as u64);
                out.extend_from_slice(b" error=");
                debug_str(out, error);
                out.push(b'\n');
            }
            LogFormat::Json => {
                out.extend_from_slice(b"{\"timestamp\":\"");
                out.extend_from_slice(&date);
                six_digits(out, micros);
                out.extend_from_slice(b"Z\",\"level\":\"INFO\",\"method\":");
                json_str(out, record.method);
                out.extend_from_slice(b",\"path\":");
                json_str(out, &String::from_utf8_lossy(record.path));
                out.extend_from_slice(b",\"status\":");
                decimal(out, u64::from(record.status));
                out.extend_from_slice(b",\"flags\":");
                json_str(out, record.flags);
                out.extend_from_slice(b",\"route\":");
                json_str(out, record.route);
                out.extend_from_slice(b",\"destination\":");
                json_str(out, record.destination);
                out.extend_from_slice(b",\"upstream\":\"");
                upstream(out, record.upstream);
                out.extend_from_slice(b"\",\"duration_ms\":");
                decimal(out, record.duration_ms);
                out.extend_from_slice(b",\"bytes_received\":");
                decimal(out, record.bytes_received as u64);
                out.extend_from_slice(b",\"bytes_sent\":");
                decimal(out, record.bytes_sent as u64);
                out.extend_from_slice(b",\"error\":");
                json_str(out, error);
                out.extend_from_slice(b",\"target\":\"access\"}\n");
            }
        }
        true
    }
}

/// `YYYY-MM-DDTHH:MM:SS.` of a second since the epoch (UTC), for years
/// written with four digits, as tracing-subscriber's timestamp has them.
fn date_part(seconds: u64) -> Option<[u8; 20]> {
    let days = i64::try_from(seconds / 86_400).ok()?;
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let of_day = seconds % 86_400;
    let mut text = String::with_capacity(20);
    write!(text, "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.", of_day / 3600, of_day / 60 % 60, of_day % 60)
        .ok()?;
    text.into_bytes().try_into().ok()
}

/// Year, month, day of a day since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, the proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn six_digits(out: &mut Vec<u8>, value: u64) {
    let mut digits = [b'0'; 6];
    let mut rest = value;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits);
}

fn decimal(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(crate::decimal::digits(value, &mut [0; 20]));
}

/// Printable ASCII that neither Rust's `{:?}` nor JSON escapes.
fn plain(text: &str) -> bool {
    text.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// `text` quoted as `{:?}` quotes it (the subscriber's text format).
fn debug_str(out: &mut Vec<u8>, text: &str) {
    if plain(text) {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{text:?}");
    }
}

/// `text` as a JSON string, as serde_json writes it.
fn json_str(out: &mut Vec<u8>, text: &str) {
    if plain(text) {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// The upstream address as `Display` writes it, `-` without one (no
/// character of either needs quoting).
fn upstream(out: &mut Vec<u8>, address: Option<SocketAddr>) {
    match address {
        Some(SocketAddr::V4(v4)) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                decimal(out, u64::from(octet));
            }
            out.push(b':');
            decimal(out, u64::from(v4.port()));
        }
        Some(address) => {
            let _ = write!(out, "{address}");
        }
        None => out.push(b'-'),
    }
}

#[cfg(test)]
#[path = "access_log_tests.rs"]
mod tests;
