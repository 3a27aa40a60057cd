//! The access line formatted here must be byte for byte what the `tracing`
//! subscriber wrote for the same event: log pipelines parse it.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use super::*;

/// The subscriber's timestamp, fixed to the one the line gets.
struct Fixed(String);

impl FormatTime for Fixed {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        w.write_str(&self.0)
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the subscriber (as `logging::init` builds it, without colours)
/// writes for `record`'s event at `timestamp`.
fn subscriber_line(format: LogFormat, timestamp: &str, record: &AccessRecord<'_>) -> String {
    let capture = Capture::default();
    let writer = capture.clone();
    let builder = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_timer(Fixed(timestamp.to_string()))
        .with_writer(move || writer.clone());
    match format {
        LogFormat::Text => tracing::subscriber::with_default(builder.finish(), || log_event(record)),
        LogFormat::Json => {
            tracing::subscriber::with_default(builder.json().flatten_event(true).finish(), || log_event(record))
        }
    }
    String::from_utf8(capture.0.lock().unwrap().clone()).unwrap()
}

fn our_line(format: LogFormat, now: SystemTime, record: &AccessRecord<'_>) -> String {
    let mut line = Line::default();
    assert!(line.format(format, now, record));
    String::from_utf8(line.bytes).unwrap()
}

fn records(error: &dyn std::fmt::Display) -> Vec<AccessRecord<'_>> {
    let plain = AccessRecord {
        method: "GET",
        path: b"/notebook/ns/nb/api/kernels?token=x&b=%20",
        status: 200,
        flags: "-",
        route: "notebook-ns-nb",
        destination: "nb.ns.svc.cluster.local",
        upstream: Some("10.1.2.3:8888".parse().unwrap()),
        duration_ms: 12,
        bytes_received: 0,
        bytes_sent: 1_234_567,
        error: None,
    };
    let odd = AccessRecord {
        method: "PROPFIND",
        path: b"/caf\xc3\xa9/\xff\"q\"\\",
        status: 502,
        flags: "UF",
        route: "r\"oute\\\u{e9}\t",
        destination: "",
        upstream: Some("[::1]:80".parse().unwrap()),
        duration_ms: u64::MAX,
        bytes_received: usize::MAX,
        bytes_sent: 0,
        error: Some(error),
    };
    let unrouted = AccessRecord {
        method: "GET",
        path: b"/",
        status: 404,
        flags: "NR",
        route: "-",
        destination: "",
        upstream: None,
        duration_ms: 0,
        bytes_received: 3,
        bytes_sent: 10,
        error: None,
    };
    vec![plain, odd, unrouted]
}

#[test]
fn lines_are_the_subscribers_own() {
    let error = "connection refused\n\u{1b}[31m \u{85} \"x\" \u{7f}";
    let now = UNIX_EPOCH + Duration::new(1_764_988_576, 123_456_789);
    for format in [LogFormat::Text, LogFormat::Json] {
        for record in records(&error) {
            let expected = subscriber_line(format, "2025-12-06T02:36:16.123456Z", &record);
            assert_eq!(our_line(format, now, &record), expected, "{format:?}");
        }
    }
}

#[test]
fn timestamps_are_the_subscribers_own() {
    use tracing_subscriber::fmt::time::SystemTime as Subscribers;
    for (seconds, expected) in [
        (0, "1970-01-01T00:00:00."),
        (951_782_400, "2000-02-29T00:00:00."),
        (1_764_988_576, "2025-12-06T02:36:16."),
        (4_107_542_399, "2100-02-28T23:59:59."),
        (253_402_300_799, "9999-12-31T23:59:59."),
    ] {
        assert_eq!(date_part(seconds).map(|d| String::from_utf8(d.to_vec()).unwrap()).as_deref(), Some(expected));
    }
    assert_eq!(date_part(253_402_300_800), None, "year 10000 is left to the subscriber");
    // The current second, as the subscriber formats it.
    loop {
        let mut theirs = String::new();
        let before = SystemTime::now();
        Subscribers.format_time(&mut Writer::new(&mut theirs)).unwrap();
        let since = before.duration_since(UNIX_EPOCH).unwrap();
        let ours = String::from_utf8(date_part(since.as_secs()).unwrap().to_vec()).unwrap();
        if theirs.starts_with(&ours) {
            assert_eq!(theirs.len(), ours.len() + 7, "{theirs}");
            break;
        }
        assert_ne!(theirs[..19], ours[..19], "only a second boundary may differ");
    }
}

#[test]
fn nothing_is_formatted_when_the_target_is_off() {
    // No subscriber: `access` is not enabled, and nothing panics.
    log(&records(&"-")[0]);
}
