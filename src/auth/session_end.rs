//! Where a session that ended sends the browser: logout, and the redirect of page navigations.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

use super::cookie::ConfigError;

/// A URL the browser is sent to when its IDE session ends: a path on the host's origin
/// (`/dashboard`) or an absolute URL (`https://app.example.com/sandboxes/{id}`), with `{id}`
/// replaced by the sandbox id — typically the dashboard's "open IDE" page, which mints a new
/// link.
///
/// ```
/// use sandbox_gateway::auth::SessionRedirect;
///
/// let to = SessionRedirect::new("https://app.example.com/sandboxes/{id}?reopen=1")?;
/// assert!(SessionRedirect::new("//evil.example").is_err());
/// # let _ = to;
/// # Ok::<(), sandbox_gateway::auth::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRedirect(String);

impl SessionRedirect {
    /// Checks `url`: a path starting with `/` but not `//` (a protocol-relative URL would leave
    /// the origin), or `http://` / `https://` followed by a host; visible ASCII only.
    pub fn new(url: impl Into<String>) -> Result<Self, ConfigError> {
        let url = url.into();
        let visible = !url.is_empty() && url.bytes().all(|b| b.is_ascii_graphic());
        let path = url.starts_with('/') && !url.starts_with("//") && !url.starts_with("/\\");
        let absolute = ["http://", "https://"].iter().any(|scheme| {
            url.get(..scheme.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
                && url.len() > scheme.len()
                && !url[scheme.len()..].starts_with('/')
        });
        if visible && (path || absolute) {
            Ok(Self(url))
        } else {
            Err(ConfigError::Redirect(url))
        }
    }

    /// The `Location` for sandbox `id` (a valid sandbox id: visible ASCII).
    pub(crate) fn location(&self, id: &str) -> HeaderValue {
        HeaderValue::try_from(self.0.replace("{id}", id))
            .expect("checked visible ASCII and a valid sandbox id")
    }
}

/// The logout route inside every tunnel: a request for `path` (relative to the tunnel: under
/// `/__ide/{id}` on the shared origin, the origin's root on a sandbox's own host) is answered by
/// [`TunnelAuth`](super::TunnelAuth) itself, never by the sandbox. It revokes the session its
/// cookie carries (with a [`RevocationStore`](super::RevocationStore) configured), clears the
/// cookie with the exact name, `Path` and attributes the [`Bootstrap`](super::Bootstrap) set, and
/// answers `303` to `redirect`.
///
/// Being inside the tunnel, it receives the cookie on both origin styles (on the shared origin
/// the cookie's `Path` is the tunnel mount). `GET` and `POST` are accepted, so a plain link logs
/// out; another site can at most end a session (it cannot open one).
///
/// ```
/// use sandbox_gateway::auth::{Logout, SessionRedirect};
///
/// let logout = Logout::new("/.gateway/logout", SessionRedirect::new("/dashboard")?)?;
/// # let _ = logout;
/// # Ok::<(), sandbox_gateway::auth::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logout {
    path: String,
    redirect: SessionRedirect,
}

impl Logout {
    /// A logout route at `path` (starting with `/`, unreserved characters and `/` only).
    pub fn new(path: impl Into<String>, redirect: SessionRedirect) -> Result<Self, ConfigError> {
        let path = path.into();
        let ok = path.len() > 1
            && path.starts_with('/')
            && !path.contains("//")
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b));
        if !ok {
            return Err(ConfigError::LogoutPath(path));
        }
        Ok(Self { path, redirect })
    }

    /// The path inside the tunnel.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn is_logout(&self, method: &Method, tunnel_path: &str) -> bool {
        (method == Method::GET || method == Method::POST) && tunnel_path == self.path
    }

    pub(crate) fn redirect(&self) -> &SessionRedirect {
        &self.redirect
    }
}

/// Whether a request is a page navigation that a person sees (and can be sent elsewhere), rather
/// than a script's fetch, a subresource or a WebSocket: `GET`/`HEAD`, no `Upgrade`, and
/// `Sec-Fetch-Mode: navigate` — or, from a browser that sends no fetch metadata, an `Accept`
/// naming `text/html`.
pub(crate) fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    if !(method == Method::GET || method == Method::HEAD) || headers.contains_key(header::UPGRADE) {
        return false;
    }
    match headers.get("sec-fetch-mode") {
        Some(mode) => mode.as_bytes().eq_ignore_ascii_case(b"navigate"),
        None => headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/html"))
            }),
    }
}

/// A `303 See Other` to `location`, not cached.
pub(crate) fn see_other<B: From<bytes::Bytes>>(location: HeaderValue) -> http::Response<B> {
    let mut res = crate::util::text_response(StatusCode::SEE_OTHER, "See other.");
    res.headers_mut().insert(header::LOCATION, location);
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn navigations_and_the_rest() {
        let get = Method::GET;
        assert!(is_navigation(
            &get,
            &headers(&[("sec-fetch-mode", "navigate")])
        ));
        assert!(is_navigation(
            &get,
            &headers(&[("accept", "text/html,application/xhtml+xml;q=0.9")])
        ));
        // Fetch metadata wins over Accept: a fetch() asking for HTML is not a navigation.
        assert!(!is_navigation(
            &get,
            &headers(&[("sec-fetch-mode", "cors"), ("accept", "text/html")])
        ));
        assert!(!is_navigation(
            &get,
            &headers(&[("accept", "application/json")])
        ));
        assert!(!is_navigation(&get, &headers(&[])));
        assert!(!is_navigation(
            &Method::POST,
            &headers(&[("sec-fetch-mode", "navigate")])
        ));
        assert!(!is_navigation(
            &get,
            &headers(&[("sec-fetch-mode", "navigate"), ("upgrade", "websocket")])
        ));
    }

    #[test]
    fn redirects_are_checked() {
        for ok in [
            "/",
            "/dashboard?x={id}",
            "https://app.example.com",
            "HTTP://a/b",
        ] {
            assert!(SessionRedirect::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "//evil",
            "/\\evil",
            "https:///x",
            "javascript:alert(1)",
            "/a b",
            "dash",
        ] {
            assert_eq!(
                SessionRedirect::new(bad),
                Err(ConfigError::Redirect(bad.to_owned())),
                "{bad}"
            );
        }
        let to = SessionRedirect::new("/open/{id}").unwrap();
        assert_eq!(to.location("demo"), "/open/demo");
    }

    #[test]
    fn logout_paths_are_checked() {
        let to = SessionRedirect::new("/").unwrap();
        assert!(Logout::new("/.gateway/logout", to.clone()).is_ok());
        for bad in ["", "/", "logout", "//x", "/a?b", "/a b"] {
            assert!(Logout::new(bad, to.clone()).is_err(), "{bad}");
        }
        let l = Logout::new("/.gateway/logout", to).unwrap();
        assert!(l.is_logout(&Method::GET, "/.gateway/logout"));
        assert!(l.is_logout(&Method::POST, "/.gateway/logout"));
        assert!(!l.is_logout(&Method::PUT, "/.gateway/logout"));
        assert!(!l.is_logout(&Method::GET, "/.gateway/logout/x"));
    }
}
