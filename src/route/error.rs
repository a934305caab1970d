use http::StatusCode;

/// Why a request could not be routed, or why a route could not be configured.
///
/// Each variant maps to one HTTP status ([`RouteError::status`]) and a short message that says what
/// was wrong; the [`Route`](super::Route) service answers with it as plain text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// No route matches the request (404).
    #[error("no route for this path")]
    NotFound,
    /// The request path could escape its mount or is malformed (400).
    #[error("bad request path: {0}")]
    BadPath(&'static str),
    /// The port in the path is not on the allowlist (403).
    #[error("port {0} is not allowed through this gateway")]
    PortNotAllowed(u16),
    /// The mount was requested without its trailing slash; the answer is a redirect to the slash
    /// form, so cookies scoped to the mount match (308).
    #[error("redirecting to {0}")]
    AddSlash(String),
    /// The request is refused for a reason the resolver states (403).
    #[error("{0}")]
    Forbidden(String),
    /// The resolver could not find where the request goes right now, e.g. an unknown or stopped
    /// sandbox (502).
    #[error("{0}")]
    Unavailable(String),
    /// A route or upstream was configured wrongly; returned when it is built, never at request time.
    #[error("invalid route configuration: {0}")]
    Config(String),
    /// The request's Host is missing, repeated or malformed, so a host route cannot match it (400).
    #[error("bad request: {0}")]
    BadHost(&'static str),
    /// A port browsers will see is on the Fetch standard's bad-port list; returned when the route is
    /// built (see [`is_bad_port`](super::is_bad_port)).
    #[error(
        "port {0} is on the Fetch standard's bad-port list: browsers refuse to load URLs with it \
         (ERR_UNSAFE_PORT); publish the gateway on another port"
    )]
    UnsafePort(u16),
}

impl RouteError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            RouteError::NotFound => StatusCode::NOT_FOUND,
            RouteError::BadPath(_) | RouteError::BadHost(_) => StatusCode::BAD_REQUEST,
            RouteError::PortNotAllowed(_) | RouteError::Forbidden(_) => StatusCode::FORBIDDEN,
            RouteError::AddSlash(_) => StatusCode::PERMANENT_REDIRECT,
            RouteError::Unavailable(_) => StatusCode::BAD_GATEWAY,
            RouteError::Config(_) | RouteError::UnsafePort(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The answer for this error, as a short plain-text response (with `Location` for redirects).
    pub fn into_response<B: From<bytes::Bytes>>(self) -> http::Response<B> {
        let status = self.status();
        let mut res = crate::util::text_response(status, self.to_string());
        if let RouteError::AddSlash(location) = self {
            if let Ok(v) = http::HeaderValue::from_str(&location) {
                res.headers_mut().insert(http::header::LOCATION, v);
            }
        }
        res
    }
}
