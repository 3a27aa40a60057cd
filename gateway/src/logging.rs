//! `tracing` setup: human-readable text or JSON lines, filtered by
//! `RUST_LOG` (else by the level given: `info`, or CHP's `--log-level`),
//! written off the request threads ([`NonBlocking`]); access lines are
//! formatted by [`access_log`] in the same format.

use tracing_subscriber::EnvFilter;

use crate::access_log;
use crate::cli::LogFormat;
use crate::log_writer::NonBlocking;

/// Installs the global subscriber. Pingora logs through the `log` crate;
/// tracing-subscriber bridges those records too.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let result = match NonBlocking::stderr() {
        Some(writer) => {
            let sink = writer.clone();
            let result =
                install(tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(writer), format);
            // Access lines are formatted without the subscriber, in its
            // format, where that format has no colours.
            if result.is_ok() && !ansi {
                access_log::install(format, sink);
            }
            result
        }
        None => install(
            tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr),
            format,
        ),
    };
    if let Err(error) = result {
        eprintln!("portico-gateway: cannot install the logger: {error}");
    }
}

fn install<W>(
    builder: tracing_subscriber::fmt::SubscriberBuilder<
        tracing_subscriber::fmt::format::DefaultFields,
        tracing_subscriber::fmt::format::Format,
        EnvFilter,
        W,
    >,
    format: LogFormat,
) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>>
where
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + Send + Sync + 'static,
{
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
}
