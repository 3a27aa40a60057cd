//! The final report: a table on stdout for people and, with `--json FILE`,
//! the same numbers as JSON for scripts (latencies in milliseconds).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::error::SetupError;
use crate::stats::Recorder;

/// Everything a run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub targets: Vec<String>,
    /// The settings the run used.
    pub settings: Value,
    pub elapsed_s: f64,
    pub operations: Vec<OpReport>,
    /// Failed operations by kind (`connect`, `timeout`, `status_503`, ...).
    pub errors: BTreeMap<String, u64>,
    pub error_total: u64,
    /// The first message of each error kind.
    pub error_examples: BTreeMap<String, String>,
    /// Mode-specific results (memory per websocket, execution checks, ...).
    pub details: Value,
    /// Lines printed above the table (already in `details`).
    #[serde(skip)]
    pub summary: Vec<String>,
}

/// One operation's count, rate, errors and latency.
#[derive(Debug, Serialize)]
pub struct OpReport {
    pub name: String,
    pub count: u64,
    pub errors: u64,
    pub rate_per_s: f64,
    pub latency_ms: Latency,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl Report {
    /// A report of `recorder` over `elapsed`.
    pub fn new(
        mode: &'static str,
        targets: Vec<String>,
        settings: Value,
        elapsed: Duration,
        recorder: &Recorder,
    ) -> Report {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let ms = |us: u64| us as f64 / 1000.0;
        let operations = recorder
            .ops
            .iter()
            .map(|(name, stats)| {
                let h = &stats.latency_us;
                OpReport {
                    name: (*name).to_string(),
                    count: h.len(),
                    errors: stats.errors,
                    rate_per_s: h.len() as f64 / seconds,
                    latency_ms: Latency {
                        mean: h.mean() / 1000.0,
                        p50: ms(h.value_at_quantile(0.5)),
                        p90: ms(h.value_at_quantile(0.9)),
                        p99: ms(h.value_at_quantile(0.99)),
                        p99_9: ms(h.value_at_quantile(0.999)),
                        max: ms(h.max()),
                    },
                }
            })
            .collect();
        Report {
            mode,
            targets,
            settings,
            elapsed_s: elapsed.as_secs_f64(),
            operations,
            errors: recorder.errors.clone(),
            error_total: recorder.error_count(),
            error_examples: recorder.examples.clone(),
            details: Value::Object(serde_json::Map::new()),
            summary: Vec::new(),
        }
    }

    /// Adds a mode-specific result: a `details` entry and a summary line.
    pub fn detail(&mut self, key: &str, value: Value, line: Option<String>) {
        if let Value::Object(map) = &mut self.details {
            map.insert(key.to_string(), value);
        }
        self.summary.extend(line);
    }

    /// The operation named `name`, if it ran.
    pub fn op(&self, name: &str) -> Option<&OpReport> {
        self.operations.iter().find(|op| op.name == name)
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let targets = match self.targets.as_slice() {
            [first, .., last] if self.targets.len() > 3 => {
                format!("{first} ... {last} ({} targets)", self.targets.len())
            }
            all => all.join(", "),
        };
        let _ = writeln!(out, "portico-load {} against {targets}", self.mode);
        let _ = writeln!(out, "  {}", settings_line(&self.settings));
        let _ = writeln!(out, "  elapsed {:.2} s", self.elapsed_s);
        for line in &self.summary {
            let _ = writeln!(out, "  {line}");
        }
        let _ = writeln!(
            out,
            "\n{:<14} {:>10} {:>11} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "operation", "count", "rate/s", "errors", "mean ms", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for op in &self.operations {
            let l = &op.latency_ms;
            let _ = writeln!(
                out,
                "{:<14} {:>10} {:>11.1} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                op.name, op.count, op.rate_per_s, op.errors, l.mean, l.p50, l.p90, l.p99, l.p99_9, l.max
            );
        }
        if self.errors.is_empty() {
            let _ = writeln!(out, "\nerrors: none");
        } else {
            let kinds: Vec<String> = self.errors.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
            let _ = writeln!(out, "\nerrors: {} ({})", self.error_total, kinds.join(", "));
            for (kind, example) in &self.error_examples {
                let _ = writeln!(out, "  first {kind}: {example}");
            }
        }
        out
    }

    /// Writes the JSON report to `path`.
    pub fn write_json(&self, path: &Path) -> Result<(), SetupError> {
        let write_error = |source| SetupError::Write { path: path.display().to_string(), source };
        let text = serde_json::to_string_pretty(self).map_err(|e| write_error(std::io::Error::other(e)))?;
        std::fs::write(path, text + "\n").map_err(write_error)
    }
}

fn settings_line(settings: &Value) -> String {
    match settings {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::OpError;
    use serde_json::json;

    #[test]
    fn tables_and_json_carry_the_same_numbers() {
        let mut recorder = Recorder::new().unwrap();
        for ms in 1..=100 {
            recorder.ok("request", Duration::from_millis(ms));
        }
        recorder.error("request", &OpError::Status(502));
        let mut report =
            Report::new("http", vec!["http://h/".into()], json!({"connections": 2}), Duration::from_secs(2), &recorder);
        report.detail("note", json!(1), Some("note 1".into()));
        let table = report.table();
        assert!(table.contains("connections=2"), "{table}");
        assert!(table.contains("request"), "{table}");
        assert!(table.contains("status_502 1"), "{table}");
        assert!(table.contains("first status_502: request: HTTP status 502"), "{table}");
        assert!(table.contains("note 1"), "{table}");
        let value = serde_json::to_value(&report).unwrap();
        assert_eq!(value["operations"][0]["count"], 100);
        assert_eq!(value["operations"][0]["rate_per_s"], 50.0);
        assert!((value["operations"][0]["latency_ms"]["p50"].as_f64().unwrap() - 50.0).abs() < 0.1);
        assert_eq!(value["errors"]["status_502"], 1);
        assert_eq!(value["details"]["note"], 1);
    }
}
