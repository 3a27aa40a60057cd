//! Errors to statuses, in one place: what a client sees when something
//! between it and the notebook fails.

use std::time::Duration;

use pingora_core::protocols::l4::ext::TcpKeepalive;

use pingora_error::{Error, ErrorSource, ErrorType};

/// Istio's default upstream connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keep-alive of upstream connections: how pooled connections to an
/// endpoint that vanished (a deleted pod, a lost node) are reaped.
///
/// Pingora's pool `idle_timeout` would arm a timer on every return of a
/// connection to the pool, i.e. on every proxied request; idle connections
/// are instead closed by the endpoint's own idle timeout (the pool sees the
/// close and drops them), evicted least-recently-used past
/// `upstream_keepalive_pool_size`, and, when the far end is gone without a
/// word, found dead by the kernel's probes: 60 s idle, then 6 probes 10 s
/// apart (Envoy's upstream connections have no idle timeout below 1 h).
pub fn upstream_tcp_keepalive() -> TcpKeepalive {
    TcpKeepalive {
        idle: Duration::from_secs(60),
        interval: Duration::from_secs(10),
        count: 6,
        #[cfg(target_os = "linux")]
        user_timeout: Duration::ZERO,
    }
}

/// Status, Envoy-style response flag and body for a failed request.
pub struct Outcome {
    /// 0 when the client is gone and nothing can be sent.
    pub status: u16,
    pub flags: &'static str,
    pub body: &'static str,
}

/// Maps a proxy error. `flags` is what earlier phases already know (e.g. `UH`).
pub fn outcome(error: &Error, flags: &'static str) -> Outcome {
    use ErrorType::*;
    match (error.esource(), error.etype()) {
        (_, HTTPStatus(503)) if flags == "UH" => Outcome { status: 503, flags, body: "no healthy upstream\n" },
        (_, HTTPStatus(code)) => Outcome { status: *code, flags, body: "" },
        (
            _,
            ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | TLSHandshakeFailure | HandshakeError,
        ) => Outcome { status: 503, flags: "UF", body: "upstream connect error\n" },
        (ErrorSource::Upstream, ReadTimedout | WriteTimedout) => {
            Outcome { status: 504, flags: "UT", body: "upstream request timeout\n" }
        }
        (ErrorSource::Upstream, _) => Outcome { status: 502, flags: "UC", body: "upstream connection error\n" },
        (ErrorSource::Downstream, ReadError | WriteError | ConnectionClosed) => {
            Outcome { status: 0, flags: "DC", body: "" }
        }
        (ErrorSource::Downstream, ReadTimedout) => Outcome { status: 408, flags: "DC", body: "request timeout\n" },
        (ErrorSource::Downstream, _) => Outcome { status: 400, flags: "DPE", body: "bad request\n" },
        (ErrorSource::Internal | ErrorSource::Unset, _) => {
            Outcome { status: 500, flags: "-", body: "internal error\n" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(etype: ErrorType, source: ErrorSource) -> u16 {
        let mut error = Error::new(etype);
        error.esource = source;
        outcome(&error, "-").status
    }

    #[test]
    fn maps_errors_like_envoy() {
        assert_eq!(status_of(ErrorType::ConnectRefused, ErrorSource::Upstream), 503);
        assert_eq!(status_of(ErrorType::ConnectTimedout, ErrorSource::Upstream), 503);
        assert_eq!(status_of(ErrorType::ReadTimedout, ErrorSource::Upstream), 504);
        assert_eq!(status_of(ErrorType::InvalidHTTPHeader, ErrorSource::Downstream), 400);
        assert_eq!(status_of(ErrorType::ConnectionClosed, ErrorSource::Downstream), 0);
        assert_eq!(status_of(ErrorType::H1Error, ErrorSource::Upstream), 502);
    }
}
