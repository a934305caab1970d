use std::error::Error as StdError;
use std::time::Duration;

use http::StatusCode;

use crate::connect::{ConnectError, ConnectErrorKind};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a request could not be proxied. The [`ReverseProxy`](super::ReverseProxy) answers each with one
/// status ([`ProxyError::status`]) and its message as a short plain-text body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// No [`Target`](crate::route::Target) was attached to the request and the proxy has no fixed
    /// upstream (500): a configuration mistake, never a silent fall-back to some default address.
    #[error("no upstream target was resolved for this request")]
    NoTarget,
    /// The request cannot be forwarded safely (400): ambiguous framing, a bad `Host`.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// A WebSocket (or other upgrade) from an Origin this route does not accept (403).
    #[error("upgrade from origin {0} is not allowed")]
    OriginRejected(String),
    /// An upgrade arrived while the proxy's tunnels are closed
    /// ([`close_tunnels`](super::ReverseProxy::close_tunnels)), so it is refused before any upstream
    /// connection is opened (503).
    #[error("the proxy is shutting down and accepts no new upgrades")]
    TunnelsClosed,
    /// An upgrade over the proxy's tunnel caps ([`Builder::max_tunnels`](super::Builder::max_tunnels),
    /// [`Builder::max_tunnels_per_client`](super::Builder::max_tunnels_per_client)), refused before
    /// any upstream connection is opened (503).
    #[error("too many open WebSockets {}: the limit is {limit}; close one and retry", if *.per_client { "from this client" } else { "through this gateway" })]
    TooManyTunnels {
        /// The cap that was reached.
        limit: usize,
        /// Whether it is the per-client cap (else the total).
        per_client: bool,
    },
    /// The request body arrived slower than the proxy's minimum upload rate
    /// ([`Builder::min_upload_rate`](super::Builder::min_upload_rate)) (408).
    #[error("the request body arrived slower than {min_rate} bytes/s; the upload was cut off")]
    UploadTooSlow {
        /// The configured minimum rate, in bytes per second.
        min_rate: u64,
    },
    /// No connection could be opened (502; 504 when the connect timed out).
    #[error(transparent)]
    Connect(ConnectError),
    /// The upstream sent no response head in time (504).
    #[error("upstream {upstream} sent no response within {}s", .after.as_secs_f32())]
    Timeout {
        /// The upstream authority.
        upstream: String,
        /// The configured response-head timeout.
        after: Duration,
    },
    /// The upstream broke the exchange: closed early, or sent a malformed response (502).
    #[error("upstream {upstream} {reason}")]
    Upstream {
        /// The upstream authority.
        upstream: String,
        /// What went wrong, in a few words.
        reason: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

impl ProxyError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoTarget => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::OriginRejected(_) => StatusCode::FORBIDDEN,
            ProxyError::TunnelsClosed | ProxyError::TooManyTunnels { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::UploadTooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Connect(e) if e.kind() == ConnectErrorKind::TimedOut => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::Connect(_) | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Classifies an error of hyper-util's client for `upstream`.
    #[cfg(feature = "forward")]
    pub(crate) fn from_client(upstream: &str, err: hyper_util::client::legacy::Error) -> Self {
        let mut cur: Option<&(dyn StdError + 'static)> = Some(&err);
        while let Some(e) = cur {
            if e.is::<ConnectError>() {
                break;
            }
            cur = e.source();
        }
        if cur.is_some() {
            let boxed: BoxError = Box::new(err);
            // Walk again on the owned value to take the ConnectError out.
            return match find_owned_connect(boxed) {
                Ok(ce) => ProxyError::Connect(ce),
                Err(other) => ProxyError::Upstream {
                    upstream: upstream.to_owned(),
                    reason: "could not be reached",
                    source: other,
                },
            };
        }
        let reason = match hyper_error(&err).map(hyper_reason) {
            Some(r) if r != FAILED => r,
            _ if err.is_connect() => "could not be reached",
            _ => FAILED,
        };
        ProxyError::Upstream {
            upstream: upstream.to_owned(),
            reason,
            source: Box::new(err),
        }
    }

    /// Classifies an error of hyper's connection-level client for `upstream`.
    pub(crate) fn from_hyper(upstream: &str, err: hyper::Error) -> Self {
        ProxyError::Upstream {
            upstream: upstream.to_owned(),
            reason: hyper_reason(&err),
            source: Box::new(err),
        }
    }
}

fn hyper_reason(err: &hyper::Error) -> &'static str {
    if err.is_incomplete_message() {
        "closed the connection before answering"
    } else if err.is_parse() || err.is_parse_status() {
        "sent a malformed response"
    } else if err.is_timeout() {
        "timed out"
    } else {
        FAILED
    }
}

const FAILED: &str = "failed while answering";

#[cfg(feature = "forward")]
fn hyper_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a hyper::Error> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            return Some(h);
        }
        cur = e.source();
    }
    None
}

/// hyper-util keeps the connector's error as the boxed source of its own; rebuild an owned
/// `ConnectError` from it (its fields are all owned data).
#[cfg(feature = "forward")]
fn find_owned_connect(err: BoxError) -> Result<ConnectError, BoxError> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(&*err);
    while let Some(e) = cur {
        if let Some(ce) = e.downcast_ref::<ConnectError>() {
            return Ok(ce.duplicate());
        }
        cur = e.source();
    }
    Err(err)
}
