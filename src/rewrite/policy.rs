//! What the upstream sees as `Host` and `Origin`: two separate, explicit choices.

use http::uri::Authority;
use http::HeaderValue;

use super::RewriteError;
use crate::cors::origin::{normalize_host, split_host_port};

/// The `Host` sent upstream.
///
/// Independent of [`OriginPolicy`]: an upstream that checks Origin against Host (code-server, Vite's
/// WebSocket server) needs the two to agree, which either preserving both or rewriting both
/// achieves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostPolicy {
    /// The browser's Host, unchanged (the default; what code-server and most dev servers expect
    /// behind a proxy, and what the proxy does on its own).
    #[default]
    Preserve,
    /// The upstream's authority (`localhost:5173`), as http-proxy's `changeOrigin` does: for
    /// upstreams that route or check by their own name (virtual hosts, CDNs, TLS SNI-bound
    /// servers).
    Upstream,
    /// A fixed value. Prefer [`HostPolicy::fixed`], which checks it is a host.
    Fixed(HeaderValue),
}

impl HostPolicy {
    /// A fixed Host, checked to be `name[:port]` with no user info.
    ///
    /// # Errors
    /// [`RewriteError::InvalidHost`] when it is not.
    ///
    /// ```
    /// use sandbox_gateway::rewrite::HostPolicy;
    ///
    /// assert!(HostPolicy::fixed("app.internal:8080").is_ok());
    /// assert!(HostPolicy::fixed("user@app").is_err());
    /// ```
    pub fn fixed(host: &str) -> Result<Self, RewriteError> {
        let bad = || RewriteError::InvalidHost(host.to_owned());
        if host.is_empty() || host.contains(['@', '/', '?', '#']) {
            return Err(bad());
        }
        let (name, _port) = split_host_port(host).ok_or_else(bad)?;
        normalize_host(name).ok_or_else(bad)?;
        host.parse::<Authority>().map_err(|_| bad())?;
        Ok(HostPolicy::Fixed(
            HeaderValue::from_str(host).map_err(|_| bad())?,
        ))
    }
}

/// The `Origin` sent upstream.
///
/// Whatever the choice, an `Origin` is never invented: a request without one (a same-origin `GET`,
/// a non-browser client) reaches the upstream without one.
///
/// The proxy's WebSocket [`OriginCheck`](crate::proxy::OriginCheck) runs after this layer and sees
/// the Origin it sends. Its default, `SameOrigin`, compares that Origin with the browser's host
/// (from `Forwarded: host=`, `X-Forwarded-Host` or `Host`), so with
/// [`RewriteToUpstream`](OriginPolicy::RewriteToUpstream) give the proxy
/// `OriginCheck::allow([upstream origin])` and check the browser's Origin in front of this layer;
/// with [`Drop`](OriginPolicy::Drop) the proxy's check has nothing left to refuse, so check before
/// this layer too.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OriginPolicy {
    /// The browser's Origin, unchanged when present (the default).
    #[default]
    PassThroughIfPresent,
    /// A present Origin becomes the upstream's origin (`http://localhost:5173`), as Vite's
    /// `rewriteWsOrigin` does, for upstreams that only accept their own origin.
    RewriteToUpstream,
    /// Origin is removed: the upstream sees a request with no Origin, as from a non-browser client.
    Drop,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_host_is_checked() {
        assert_eq!(
            HostPolicy::fixed("a.example:1").unwrap(),
            HostPolicy::Fixed(HeaderValue::from_static("a.example:1"))
        );
        assert!(HostPolicy::fixed("[::1]:80").is_ok());
        for bad in ["", "a b", "u@a", "a/b", "a:x", "http://a"] {
            assert!(HostPolicy::fixed(bad).is_err(), "{bad}");
        }
    }
}
