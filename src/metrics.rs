//! What the gateway counts, through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! Every recording call of the crate is a function here, called where the crate already decides
//! the outcome. With the `metrics` feature off each function is empty and compiles to nothing; with
//! it on they record into whatever recorder the application installed (none installed: nothing is
//! kept). Labels have a handful of fixed values each: no path, host, sandbox id or address is ever a
//! label. README's "Operating" section lists the names.

use std::future::Future;
use std::time::Duration;

use http::{Response, StatusCode};

/// Open client connections of a `serve::Server`.
#[cfg(feature = "serve")]
pub(crate) const CONNECTIONS: &str = "sandbox_gateway_connections";
/// Open tunnels (after `101 Switching Protocols`).
pub(crate) const TUNNELS: &str = "sandbox_gateway_tunnels";
/// Open upstream connections (pooled or in use).
pub(crate) const UPSTREAM_CONNECTIONS: &str = "sandbox_gateway_upstream_connections";

/// Runs `answer` (the whole handling of one request by a `route` kind: `proxy` or `api`) and
/// counts its status class and the time to its response head.
pub(crate) fn request<B>(
    route: &'static str,
    answer: impl Future<Output = Response<B>>,
) -> impl Future<Output = Response<B>> {
    #[cfg(feature = "metrics")]
    {
        let start = std::time::Instant::now();
        async move {
            let res = answer.await;
            let status = status_class(res.status());
            metrics::counter!("sandbox_gateway_requests_total", "route" => route, "status" => status)
                .increment(1);
            metrics::histogram!("sandbox_gateway_response_seconds", "route" => route)
                .record(start.elapsed().as_secs_f64());
            res
        }
    }
    #[cfg(not(feature = "metrics"))]
    {
        let _ = route;
        answer
    }
}

/// `2xx`, `4xx`…
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// An upstream connection was opened after `took`.
pub(crate) fn connected(took: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!("sandbox_gateway_upstream_connect_seconds").record(took.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = took;
}

/// No upstream connection could be opened, for `cause`.
pub(crate) fn connect_failed(cause: crate::connect::ConnectErrorKind) {
    #[cfg(feature = "metrics")]
    {
        use crate::connect::ConnectErrorKind as K;
        let cause = match cause {
            K::Refused => "refused",
            K::TimedOut => "timed_out",
            K::Dns => "dns",
            K::Tls => "tls",
            _ => "other",
        };
        metrics::counter!("sandbox_gateway_upstream_connect_failures_total", "cause" => cause)
            .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = cause;
}

/// Holds one unit of a gauge while it lives: `+1` when made, `-1` when dropped, so the gauge returns
/// to zero whichever way the thing it counts ends.
#[derive(Debug)]
pub(crate) struct Open(#[cfg_attr(not(feature = "metrics"), allow(dead_code))] &'static str);

impl Open {
    /// One more of `gauge` ([`TUNNELS`], [`UPSTREAM_CONNECTIONS`]) until the value is dropped.
    pub(crate) fn new(gauge: &'static str) -> Open {
        #[cfg(feature = "metrics")]
        metrics::gauge!(gauge).increment(1.0);
        Open(gauge)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        metrics::gauge!(self.0).decrement(1.0);
    }
}

/// `n` bytes moved through a tunnel, `up` from the browser to the upstream or down.
pub(crate) fn tunnel_bytes(up: bool, n: usize) {
    #[cfg(feature = "metrics")]
    metrics::counter!("sandbox_gateway_tunnel_bytes_total", "direction" => if up { "up" } else { "down" })
        .increment(n as u64);
    #[cfg(not(feature = "metrics"))]
    let _ = (up, n);
}

/// `n` bytes of an HTTP body proxied to or from an upstream, `up` from the browser to the
/// upstream or down.
pub(crate) fn body_bytes(up: bool, n: usize) {
    #[cfg(feature = "metrics")]
    metrics::counter!("sandbox_gateway_body_bytes_total", "direction" => if up { "up" } else { "down" })
        .increment(n as u64);
    #[cfg(not(feature = "metrics"))]
    let _ = (up, n);
}

/// A token of `kind` (`bootstrap`: an IDE link; `cookie`: the tunnel's session) was checked:
/// `Ok` when accepted, else why not (`None`: there was none).
#[cfg(feature = "auth")]
pub(crate) fn token(kind: &'static str, outcome: Result<(), Option<crate::auth::TokenError>>) {
    #[cfg(feature = "metrics")]
    {
        use crate::auth::TokenError as E;
        let outcome = match outcome {
            Ok(()) => "ok",
            Err(None) => "missing",
            Err(Some(E::Expired)) => "expired",
            Err(Some(E::Replayed)) => "replayed",
            Err(Some(E::Revoked)) => "revoked",
            Err(Some(E::BadSignature)) => "bad_signature",
            Err(Some(E::WrongSandbox)) => "wrong_sandbox",
            Err(Some(E::WrongAudience)) => "wrong_audience",
            Err(Some(_)) => "malformed",
        };
        metrics::counter!("sandbox_gateway_token_verifications_total", "kind" => kind, "outcome" => outcome)
            .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (kind, outcome);
}

/// A request was refused by a wall, for `reason`: `host` (Host allowlist), `cors` (preflight),
/// `ssrf` (an API upstream's address), `caller` (an API call without a valid caller), `quota` (a
/// caller over its budget), `isolation` (a sandbox's tunnel without its session, a WebSocket from
/// an origin not allowed).
pub(crate) fn refused(reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("sandbox_gateway_refusals_total", "reason" => reason).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}
