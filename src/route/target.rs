//! Where one request goes: the upstream and the path it is sent to.

use std::fmt;
use std::str::FromStr;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;

use super::RouteError;

/// An upstream base: scheme, authority and an optional base path (`http://localhost:5173`,
/// `https://api.example.com/v1`).
///
/// Parsed once, at configuration time; a bad URL is an error then, not at request time.
///
/// ```
/// use sandbox_gateway::route::Upstream;
///
/// let up: Upstream = "http://localhost:5173".parse().unwrap();
/// let target = up.target("/src/main.ts?t=1".parse().unwrap());
/// assert_eq!(target.uri().to_string(), "http://localhost:5173/src/main.ts?t=1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    base_path: String,
}

impl Upstream {
    /// Builds an upstream from its parts; `base_path` is joined in front of every request path.
    pub fn new(scheme: Scheme, authority: Authority) -> Self {
        Upstream {
            scheme,
            authority,
            base_path: String::new(),
        }
    }

    /// The scheme (`http` or `https`).
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// The authority (`host:port`).
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The base path joined in front of request paths, without a trailing slash (may be empty).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The target for a request path (`/a/b?q`), joined under the base path.
    pub fn target(&self, path_and_query: PathAndQuery) -> Target {
        let path_and_query = if self.base_path.is_empty() {
            path_and_query
        } else {
            let joined = format!("{}{}", self.base_path, path_and_query.as_str());
            PathAndQuery::from_maybe_shared(joined).unwrap_or(path_and_query)
        };
        Target {
            scheme: self.scheme.clone(),
            authority: self.authority.clone(),
            path_and_query,
            mount: None,
        }
    }
}

impl FromStr for Upstream {
    type Err = RouteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| RouteError::Config(format!("upstream `{s}`: {why}"));
        let uri: Uri = s.parse().map_err(|_| bad("not a valid URL"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| bad("missing scheme (http:// or https://)"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(bad("scheme must be http or https"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| bad("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user info is not allowed in an upstream URL"));
        }
        if uri.query().is_some() {
            return Err(bad("an upstream URL cannot carry a query"));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Upstream {
            scheme,
            authority,
            base_path,
        })
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

/// The resolved destination of one request: the upstream's scheme and authority, the path and query
/// sent to it, and the mount prefix the browser saw (if the request came in under a mount such as
/// `/proxy/5173`).
///
/// A `Target` is resolved once per request and travels with it in the request extensions, so the
/// proxy, the rewrite layers and a WebSocket upgrade all use the same one: there is no default
/// address to fall back to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    scheme: Scheme,
    authority: Authority,
    path_and_query: PathAndQuery,
    mount: Option<String>,
}

impl Target {
    /// A target with no mount prefix.
    pub fn new(scheme: Scheme, authority: Authority, path_and_query: PathAndQuery) -> Self {
        Target {
            scheme,
            authority,
            path_and_query,
            mount: None,
        }
    }

    /// Records the mount prefix the browser saw (`/proxy/5173`, no trailing slash).
    pub fn with_mount(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.mount = Some(prefix.trim_end_matches('/').to_owned());
        self
    }

    /// The upstream scheme.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// The upstream authority (`host:port`).
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The path and query sent upstream.
    pub fn path_and_query(&self) -> &PathAndQuery {
        &self.path_and_query
    }

    /// The mount prefix the browser saw, without a trailing slash, if any.
    pub fn mount(&self) -> Option<&str> {
        self.mount.as_deref()
    }

    /// The upstream port, explicit or the scheme's default.
    pub fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.scheme == Scheme::HTTPS {
                443
            } else {
                80
            })
    }

    /// The absolute URI of the upstream request.
    pub fn uri(&self) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(self.path_and_query.clone());
        Uri::from_parts(parts).expect("scheme, authority and path are each valid")
    }
}

impl fmt::Display for Target {
    /// Shows scheme, authority and path without the query (queries may carry secrets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme,
            self.authority,
            self.path_and_query.path()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_parses_and_joins_base_path() {
        let up: Upstream = "https://api.example.com/v1/".parse().unwrap();
        assert_eq!(up.base_path(), "/v1");
        let t = up.target("/chat?x=1".parse().unwrap());
        assert_eq!(t.uri().to_string(), "https://api.example.com/v1/chat?x=1");
        assert_eq!(t.port(), 443);
    }

    #[test]
    fn upstream_rejects_bad_urls() {
        for bad in [
            "localhost:5173",
            "ftp://x",
            "http://u:p@x",
            "http://x/?q=1",
            "not a url",
        ] {
            assert!(bad.parse::<Upstream>().is_err(), "{bad}");
        }
    }

    #[test]
    fn display_hides_query() {
        let up: Upstream = "http://localhost:1".parse().unwrap();
        let t = up.target("/a?token=secret".parse().unwrap());
        assert_eq!(t.to_string(), "http://localhost:1/a");
    }
}
