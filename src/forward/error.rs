use http::StatusCode;

use super::{CallerRefusal, QuotaExceeded, SsrfRefusal};
use crate::proxy::ProxyError;

/// Why a request was not forwarded. [`ApiForward`](super::ApiForward) answers each with one status
/// ([`ForwardError::status`]) and a short JSON body in the shape API SDKs read,
/// `{"error":{"type":"…","message":"…"}}` ([`ForwardError::kind`] and the message); no message
/// ever contains an injected secret or a caller's token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The first path segment names no configured upstream (404).
    #[error("no upstream of that name")]
    UnknownUpstream,
    /// The method is not allowed for this upstream (405, with `Allow`).
    #[error("method {0} is not allowed for this upstream")]
    MethodNotAllowed(http::Method),
    /// The path is not under an allowed prefix of this upstream (403).
    #[error("path {0} is not allowed for this upstream")]
    PathNotAllowed(String),
    /// The path or the request framing cannot be forwarded safely (400).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request body is larger than the upstream's limit (413).
    #[error("request body larger than the limit of {0} bytes")]
    PayloadTooLarge(u64),
    /// The caller presented no valid credential (401) or may not use this upstream (403).
    #[error("{0}")]
    Caller(CallerRefusal),
    /// The caller is over its quota (429, with `Retry-After`).
    #[error("{0}")]
    Quota(QuotaExceeded),
    /// The quota store cannot be reached (503).
    #[error("{0}")]
    QuotaUnavailable(String),
    /// The upstream address is not public and not allowed (403).
    #[error("refused by the SSRF guard: {0}")]
    Ssrf(SsrfRefusal),
    /// The upstream could not be reached or failed (502; 504 on timeouts).
    #[error(transparent)]
    Upstream(ProxyError),
}

impl ForwardError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ForwardError::UnknownUpstream => StatusCode::NOT_FOUND,
            ForwardError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ForwardError::PathNotAllowed(_) | ForwardError::Ssrf(_) => StatusCode::FORBIDDEN,
            ForwardError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ForwardError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ForwardError::Caller(r) => r.status(),
            ForwardError::Quota(_) => StatusCode::TOO_MANY_REQUESTS,
            ForwardError::QuotaUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ForwardError::Upstream(e) => e.status(),
        }
    }

    /// The `type` of the JSON error body: `not_found`, `method_not_allowed`, `forbidden`,
    /// `bad_request`, `payload_too_large`, `unauthorized`, `rate_limited`, `unavailable`,
    /// `upstream_error` or `upstream_timeout`.
    pub fn kind(&self) -> &'static str {
        match self.status() {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::GATEWAY_TIMEOUT => "upstream_timeout",
            _ => "upstream_error",
        }
    }
}

/// An [`ApiForward`](super::ApiForward) configuration was refused when built.
#[derive(Debug, thiserror::Error)]
#[error("invalid forward configuration: {0}")]
pub struct BuildError(pub(crate) String);
