/// A rewrite setting that cannot be used; returned when it is built, never at request time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// A trusted network is not `address/prefix` (`10.0.0.0/8`, `::1/128`) or a bare address, or
    /// has bits set past its prefix.
    #[error("invalid trusted network `{value}`: {reason}")]
    InvalidNetwork {
        /// The entry as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A fixed Host is not `name[:port]`.
    #[error("invalid fixed Host `{0}`")]
    InvalidHost(String),
    /// An obfuscated node identifier is not `_` followed by letters, digits, `.`, `_` or `-`
    /// (RFC 7239 §6.3).
    #[error("invalid obfuscated identifier `{0}`: `_` then letters, digits, `.`, `_` or `-`")]
    InvalidObfuscated(String),
    /// A cookie `Path` or `Domain` setting holds characters a cookie attribute cannot carry.
    #[error("invalid cookie attribute value `{0}`")]
    InvalidCookieAttribute(String),
    /// A cookie name given to [`CookieFirewall`](super::CookieFirewall) is not a token (RFC 6265
    /// §4.1.1), or a shared name is one the gateway reserves.
    #[error("invalid cookie name `{0}`")]
    InvalidCookieName(String),
}

impl RewriteError {
    /// The HTTP status matching this error: a configuration mistake, so 500 if it ever reaches a
    /// response.
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::INTERNAL_SERVER_ERROR
    }
}
