use http::StatusCode;

use super::SsrfRefusal;
use crate::proxy::ProxyError;

/// Why a request was not forwarded. [`ApiForward`](super::ApiForward) answers each with one status
/// ([`ForwardError::status`]) and its message as a short plain-text body; no message ever contains
/// an injected secret.
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
    /// The request body is larger than the limit (413).
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(u64),
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
            ForwardError::Upstream(e) => e.status(),
        }
    }
}

/// An [`ApiForward`](super::ApiForward) configuration was refused when built.
#[derive(Debug, thiserror::Error)]
#[error("invalid forward configuration: {0}")]
pub struct BuildError(pub(crate) String);
