//! Named upstreams and the secrets injected into their requests.

use std::fmt;

use http::header::{HeaderName, HeaderValue};
use http::Method;

/// A header value held by the server and injected into upstream requests, such as an API key.
///
/// Its `Debug` shows `Secret(<redacted>)`; it has no `Display`; the header value is marked
/// sensitive, so HTTP/2 never puts it in a compression table. The forwarder never writes it into a
/// log, an error message or a response.
///
/// ```
/// use sandbox_gateway::forward::Secret;
///
/// let key = Secret::bearer("sk-demo")?;
/// assert_eq!(format!("{key:?}"), "Secret(<redacted>)");
/// # Ok::<(), sandbox_gateway::forward::SecretError>(())
/// ```
#[derive(Clone)]
pub struct Secret(HeaderValue);

impl Secret {
    /// A secret header value, used as it is.
    ///
    /// # Errors
    /// When the value is empty or not a valid header value (control characters, newlines).
    pub fn new(value: impl AsRef<str>) -> Result<Secret, SecretError> {
        let value = value.as_ref();
        if value.trim().is_empty() {
            return Err(SecretError::Invalid);
        }
        let mut v = HeaderValue::from_str(value).map_err(|_| SecretError::Invalid)?;
        v.set_sensitive(true);
        Ok(Secret(v))
    }

    /// `Bearer {token}`, for an `Authorization` header.
    ///
    /// # Errors
    /// When the token is empty or not valid in a header value.
    pub fn bearer(token: impl AsRef<str>) -> Result<Secret, SecretError> {
        let token = token.as_ref().trim();
        if token.is_empty() {
            return Err(SecretError::Invalid);
        }
        Secret::new(format!("Bearer {token}"))
    }

    /// The value of the environment variable `var`, used as it is.
    ///
    /// # Errors
    /// When the variable is not set, not Unicode, or not a valid header value. The error names the
    /// variable, never its value.
    pub fn from_env(var: &str) -> Result<Secret, SecretError> {
        Secret::new(read_env(var)?).map_err(|_| SecretError::InvalidEnv(var.to_owned()))
    }

    /// `Bearer {value of var}`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn bearer_from_env(var: &str) -> Result<Secret, SecretError> {
        Secret::bearer(read_env(var)?).map_err(|_| SecretError::InvalidEnv(var.to_owned()))
    }

    pub(crate) fn value(&self) -> &HeaderValue {
        &self.0
    }
}

fn read_env(var: &str) -> Result<String, SecretError> {
    std::env::var(var).map_err(|_| SecretError::MissingEnv(var.to_owned()))
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A [`Secret`] could not be made. The message never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The value is empty or not valid in an HTTP header.
    #[error("the secret is empty or not a valid header value")]
    Invalid,
    /// The environment variable is not set (or not Unicode).
    #[error("environment variable `{0}` is not set")]
    MissingEnv(String),
    /// The environment variable's value is empty or not valid in an HTTP header.
    #[error("environment variable `{0}` is empty or not a valid header value")]
    InvalidEnv(String),
}

/// One named upstream of an [`ApiForward`](super::ApiForward): its base URL and what browsers may
/// do with it. Everything is denied until allowed: the methods, the path prefixes.
///
/// The configuration is checked when the forwarder is built
/// ([`Builder::build`](super::Builder::build)).
///
/// ```
/// use http::{header, Method};
/// use sandbox_gateway::forward::{Secret, Upstream};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let openai = Upstream::new("openai", "https://api.openai.com/v1")
///     .allow_methods([Method::GET, Method::POST])
///     .allow_paths(["/chat/completions", "/models"])
///     .inject_header(header::AUTHORIZATION, Secret::bearer("sk-…")?);
/// # let _ = openai;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Upstream {
    pub(crate) name: String,
    pub(crate) base: String,
    pub(crate) methods: Vec<Method>,
    pub(crate) paths: Vec<String>,
    pub(crate) inject: Vec<(HeaderName, Secret)>,
    pub(crate) allow_private: bool,
    pub(crate) own_key: bool,
    pub(crate) body_limit: Option<u64>,
}

impl Upstream {
    /// An upstream called `name` (the first path segment under the mount: letters, digits, `-`,
    /// `_`, `.`) at `base` (`https://api.example.com/v1`: scheme, host, optional port and base
    /// path; no user info, no query).
    pub fn new(name: impl Into<String>, base: impl Into<String>) -> Self {
        Upstream {
            name: name.into(),
            base: base.into(),
            methods: Vec::new(),
            paths: Vec::new(),
            inject: Vec::new(),
            allow_private: false,
            own_key: false,
            body_limit: None,
        }
    }

    /// Allows these methods (others are answered 405 with `Allow`).
    pub fn allow_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        for m in methods {
            if !self.methods.contains(&m) {
                self.methods.push(m);
            }
        }
        self
    }

    /// Allows request paths under these prefixes, relative to the base URL, matched by whole
    /// segments: `/chat` allows `/chat` and `/chat/x`, not `/chatty`. `/` allows every path.
    /// Others are answered 403.
    pub fn allow_paths<I, S>(mut self, prefixes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.paths.extend(prefixes.into_iter().map(Into::into));
        self
    }

    /// Sends `name: secret` on every request to this upstream, replacing whatever the browser sent
    /// under that name. Callers present their API token under the same name (or as
    /// `Authorization: Bearer`), where their SDK puts the key: an upstream injecting `x-api-key`
    /// takes the token in `x-api-key`.
    pub fn inject_header(mut self, name: HeaderName, secret: Secret) -> Self {
        self.inject.retain(|(n, _)| *n != name);
        self.inject.push((name, secret));
        self
    }

    /// Lets this upstream's host resolve to (or be) a non-public address — loopback, private,
    /// link-local… — cloud metadata excepted. For tests and on-premises services; off by default.
    pub fn allow_private(mut self, yes: bool) -> Self {
        self.allow_private = yes;
        self
    }

    /// Bring your own key: the caller's own credential (`Authorization` and the upstream's key
    /// headers) goes to this upstream unchanged, no server secret is injected, and the
    /// forwarder's caller check and quotas do not apply (no server key is spent; the upstream's
    /// own account limits apply). Methods, paths, the body limit and the SSRF guard still do.
    /// Cannot be combined with [`inject_header`](Self::inject_header). Off by default.
    pub fn bring_your_own_key(mut self, yes: bool) -> Self {
        self.own_key = yes;
        self
    }

    /// The largest request body forwarded to this upstream, in bytes; larger ones are answered
    /// 413 with the limit. Defaults to the forwarder's
    /// [`body_limit`](super::Builder::body_limit) (20 MiB: chat requests with images).
    pub fn body_limit(mut self, bytes: u64) -> Self {
        self.body_limit = Some(bytes);
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Whether `path` lies under `prefix`, by whole segments.
pub(crate) fn under_prefix(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_redacts_and_values_are_checked() {
        let s = Secret::bearer("abc").unwrap();
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(s.value(), "Bearer abc");
        assert!(s.value().is_sensitive());
        assert_eq!(Secret::new("a\nb").unwrap_err(), SecretError::Invalid);
        assert_eq!(Secret::bearer(" ").unwrap_err(), SecretError::Invalid);
        let e = Secret::from_env("SANDBOX_GATEWAY_SURELY_UNSET_VAR").unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment variable `SANDBOX_GATEWAY_SURELY_UNSET_VAR` is not set"
        );
    }

    #[test]
    fn prefixes() {
        assert!(under_prefix("/chat", "/chat"));
        assert!(under_prefix("/chat/x", "/chat"));
        assert!(!under_prefix("/chatty", "/chat"));
        assert!(under_prefix("/anything", "/"));
        assert!(!under_prefix("/", "/chat"));
    }
}
