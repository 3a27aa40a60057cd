//! Command line: one subcommand per kind of load.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Notebook-session load generator: HTTP keep-alive load, idle kernel
/// websockets (memory per connection) and full Jupyter sessions, against a
/// real Jupyter Server, the fake notebook or a gateway in front of either.
#[derive(Debug, Parser)]
#[command(name = "portico-load", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Worker threads, each with its own event loop (default: the number of CPUs).
    #[arg(long, global = true)]
    pub threads: Option<usize>,

    /// Bound on every network operation: connect, request, handshake, execute.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Also write the report as JSON to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,

    /// No progress lines on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// GET load over keep-alive connections: closed loop, or a fixed rate
    /// with latency measured from each request's intended send time.
    Http(HttpArgs),
    /// Open and hold idle kernel websockets; report a process's RSS per connection.
    WsIdle(WsIdleArgs),
    /// Notebook sessions: page, status, contents, kernel, websocket, executions.
    Sessions(SessionsArgs),
}

#[derive(Debug, Args)]
pub struct HttpArgs {
    /// URL(s) to GET, used round-robin (comma-separated or repeated).
    #[arg(long = "url", required = true, value_delimiter = ',')]
    pub urls: Vec<String>,

    /// Keep-alive connections.
    #[arg(long, short = 'c', default_value_t = 64)]
    pub connections: usize,

    /// How long to send requests (e.g. 10s, 500ms, 1m).
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Total requests per second (fixed rate); latency then counts from each
    /// request's intended send time, so a stalled server cannot hide its
    /// queueing (coordinated omission). Default: closed loop, as fast as possible.
    #[arg(long)]
    pub rate: Option<f64>,

    /// How a fixed-rate loop waits for its next send: `exact` (a timerfd per
    /// loop, microsecond precision) or `millisecond` (tokio's timer: loops
    /// due in the same millisecond fire together, in bursts; the pacing of
    /// runs before 2026-12-07).
    #[arg(long, value_enum, default_value_t = Pacing::Exact)]
    pub pacing: Pacing,

    /// HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1.
    #[arg(long)]
    pub h2: bool,

    /// Concurrent streams per HTTP/2 connection.
    #[arg(long, default_value_t = 1)]
    pub streams: usize,

    /// HTTP/1.1 client: `raw` (prebuilt requests on a raw socket, fastest) or `hyper`.
    #[arg(long, value_enum, default_value_t = Engine::Raw)]
    pub engine: Engine,

    /// Extra request header, "Name: value" (repeatable; the `raw` engine
    /// only): e.g. a bearer token for an authenticated route.
    #[arg(long = "header", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once(':').ok_or_else(|| format!("{text:?} is not \"Name: value\""))?;
    Ok((name.trim().to_string(), value.trim().to_string()))
}

/// How fixed-rate loops keep their schedule (see `pacer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Pacing {
    Exact,
    Millisecond,
}

/// Which HTTP/1.1 client implementation sends the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    Raw,
    Hyper,
}

#[derive(Debug, Args)]
pub struct WsIdleArgs {
    /// Kernel channels websocket URL(s), ws://.../api/kernels/<id>/channels,
    /// used round-robin.
    #[arg(long = "url", value_delimiter = ',', conflicts_with = "base", required_unless_present = "base")]
    pub urls: Vec<String>,

    /// Notebook base URL (http://.../notebook/<ns>/<name>/): kernels are
    /// created there first and their channels opened.
    #[arg(long)]
    pub base: Option<String>,

    /// Kernels to create with --base; the websockets are spread over them.
    #[arg(long, default_value_t = 1)]
    pub kernels: usize,

    /// Websockets to open and hold.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub count: usize,

    /// Process(es) whose RSS (/proc/PID/status VmRSS) is sampled before and after.
    #[arg(long = "pid")]
    pub pids: Vec<u32>,

    /// How long to hold the websockets open once all are open.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub hold: Duration,

    /// Handshakes in flight at once while ramping up.
    #[arg(long, default_value_t = 64)]
    pub parallel: usize,

    /// Jupyter token (sent as `Authorization: token ...`).
    #[arg(long)]
    pub token: Option<String>,

    /// Leave the kernels created with --base running.
    #[arg(long)]
    pub keep_kernels: bool,
}

#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// Notebook base URL, http://host/notebook/<ns>/<name>/.
    #[arg(long, conflicts_with = "base_pattern", required_unless_present = "base_pattern")]
    pub base: Option<String>,

    /// Base URL with `{i}` standing for the notebook number 0..N-1, e.g.
    /// http://host/notebook/ns/nb-{i}/ (with --notebooks N).
    #[arg(long)]
    pub base_pattern: Option<String>,

    /// Notebooks behind --base-pattern; sessions are spread over them.
    #[arg(long, default_value_t = 1)]
    pub notebooks: usize,

    /// Page each session loads first, relative to the base (JupyterLab's `lab`;
    /// `tree` for the classic notebook UI).
    #[arg(long, default_value = "lab")]
    pub page: String,

    /// Concurrent sessions (a browser tab each: one keep-alive connection and one kernel websocket).
    #[arg(long, short = 's', default_value_t = 10)]
    pub sessions: usize,

    /// How long the sessions run.
    #[arg(long, short = 'd', default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Time between execute_requests within a burst.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub execute_interval: Duration,

    /// Share of each session's time spent idle (websocket open, nothing
    /// sent) between bursts, 0 <= IDLE < 1.
    #[arg(long, default_value_t = 0.2)]
    pub idle: f64,

    /// execute_requests per burst (then one api/status poll and an idle period).
    #[arg(long, default_value_t = 5)]
    pub burst: usize,

    /// Kernels per notebook; sessions share them round-robin (1 = every
    /// session of a notebook uses the same kernel, as tabs of one notebook do).
    #[arg(long, default_value_t = 1)]
    pub kernels: usize,

    /// Session starts are spread over this long (default: min(1s, duration / 4)).
    #[arg(long, value_parser = parse_duration)]
    pub ramp: Option<Duration>,

    /// Jupyter token (sent as `Authorization: token ...`).
    #[arg(long)]
    pub token: Option<String>,

    /// Leave the kernels this run created running.
    #[arg(long)]
    pub keep_kernels: bool,
}

/// `10s`, `500ms`, `1.5m`, `2h`, `250us`, or bare seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 10s or 500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {text:?} (use us, ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 days").is_err());
    }

    #[test]
    fn parses_each_mode() {
        let cli = Cli::try_parse_from([
            "portico-load",
            "http",
            "--url",
            "http://a/,http://b/",
            "-c",
            "8",
            "-d",
            "2s",
            "--rate",
            "100",
            "--json",
            "r.json",
        ])
        .unwrap();
        let Command::Http(http) = cli.command else { panic!("not http") };
        assert_eq!(http.urls.len(), 2);
        assert_eq!((http.connections, http.rate), (8, Some(100.0)));
        assert!(cli.json.is_some());

        let cli = Cli::try_parse_from([
            "portico-load",
            "ws-idle",
            "--base",
            "http://h/nb/",
            "--count",
            "5",
            "--pid",
            "1",
            "--pid",
            "2",
        ])
        .unwrap();
        let Command::WsIdle(idle) = cli.command else { panic!("not ws-idle") };
        assert_eq!(idle.pids, [1, 2]);
        assert!(Cli::try_parse_from(["portico-load", "ws-idle", "--count", "5"]).is_err(), "needs --url or --base");

        let cli = Cli::try_parse_from([
            "portico-load",
            "sessions",
            "--base-pattern",
            "http://h/notebook/ns/nb-{i}/",
            "--notebooks",
            "3",
            "--idle",
            "0.5",
        ])
        .unwrap();
        let Command::Sessions(sessions) = cli.command else { panic!("not sessions") };
        assert_eq!((sessions.notebooks, sessions.idle), (3, 0.5));
    }
}
