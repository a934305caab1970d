//! Response headers that name URLs or paths of the upstream — `Location`, `Content-Location`,
//! `Refresh`, `Set-Cookie` — mapped back to what the browser sees under a mount.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, Scheme};
use http::StatusCode;

use super::cookies::{CookieFirewall, Namespace};
use super::RewriteError;

static SERVICE_WORKER_ALLOWED: header::HeaderName =
    header::HeaderName::from_static("service-worker-allowed");
static CLEAR_SITE_DATA: header::HeaderName = header::HeaderName::from_static("clear-site-data");

/// What happens to the `Path` of cookies the upstream sets (like http-proxy's
/// `cookiePathRewrite`).
///
/// ```
/// use sandbox_gateway::rewrite::CookiePath;
///
/// let p = CookiePath::fixed("/app/").unwrap();
/// # let _ = (p, CookiePath::under_mount(), CookiePath::unchanged());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CookiePath(PathMode);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum PathMode {
    #[default]
    UnderMount,
    Unchanged,
    Fixed(Arc<str>),
}

impl CookiePath {
    /// Scoped under the mount (the default): `Path=/` becomes `Path=/proxy/5173/`, `Path=/app`
    /// `Path=/proxy/5173/app`, a path already under the mount is kept, and a cookie with no (or an
    /// invalid) `Path` gets the upstream's default path (RFC 6265 §5.1.4) under the mount, so it
    /// never leaks to other mounts on the same host. Without a mount, paths are kept.
    pub fn under_mount() -> Self {
        CookiePath(PathMode::UnderMount)
    }

    /// Paths are left as the upstream set them.
    pub fn unchanged() -> Self {
        CookiePath(PathMode::Unchanged)
    }

    /// Every `Path` attribute the upstream sets is replaced with `path` (cookies without one keep
    /// the browser's default).
    ///
    /// # Errors
    /// [`RewriteError::InvalidCookieAttribute`] unless `path` starts with `/` and is printable
    /// ASCII without `;`.
    pub fn fixed(path: &str) -> Result<Self, RewriteError> {
        if !path.starts_with('/') || !valid_attribute(path) {
            return Err(RewriteError::InvalidCookieAttribute(path.to_owned()));
        }
        Ok(CookiePath(PathMode::Fixed(path.into())))
    }
}

/// What happens to the `Domain` of cookies the upstream sets (like http-proxy's
/// `cookieDomainRewrite`).
///
/// The upstream's domain (`localhost`, a container name) is not the one the browser uses: a browser
/// rejects such a cookie, or, worse, a `Domain=preview.example.com` from one sandbox would reach
/// every other sandbox's subdomain. The default drops the attribute, which makes the cookie
/// host-only on the gateway's host.
///
/// ```
/// use sandbox_gateway::rewrite::CookieDomain;
///
/// let d = CookieDomain::map([("localhost", "gateway.example.com"), ("*", "")]).unwrap();
/// # let _ = (d, CookieDomain::drop(), CookieDomain::unchanged());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CookieDomain(DomainMode);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum DomainMode {
    #[default]
    Drop,
    Unchanged,
    Map(Arc<[(String, String)]>),
}

impl CookieDomain {
    /// `Domain` attributes are removed (the default).
    pub fn drop() -> Self {
        CookieDomain(DomainMode::Drop)
    }

    /// `Domain` attributes are left as the upstream set them.
    pub fn unchanged() -> Self {
        CookieDomain(DomainMode::Unchanged)
    }

    /// Every `Domain` attribute becomes `domain` (an empty string drops it).
    ///
    /// # Errors
    /// As [`map`](Self::map).
    pub fn rewrite(domain: &str) -> Result<Self, RewriteError> {
        Self::map([("*", domain)])
    }

    /// `Domain` attributes matching a key (case-insensitive, leading dot ignored; `*` matches any)
    /// become its value, an empty value dropping the attribute; domains matching no key are kept.
    ///
    /// # Errors
    /// [`RewriteError::InvalidCookieAttribute`] for a key or value that is not a domain name.
    pub fn map<I, K, V>(pairs: I) -> Result<Self, RewriteError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut out = Vec::new();
        for (k, v) in pairs {
            let (k, v) = (k.as_ref(), v.as_ref());
            let is_domain = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            };
            if !(k == "*" || is_domain(k)) {
                return Err(RewriteError::InvalidCookieAttribute(k.to_owned()));
            }
            if !(v.is_empty() || is_domain(v)) {
                return Err(RewriteError::InvalidCookieAttribute(v.to_owned()));
            }
            out.push((k.trim_start_matches('.').to_ascii_lowercase(), v.to_owned()));
        }
        Ok(CookieDomain(DomainMode::Map(out.into())))
    }

    fn apply(&self, domain: &str) -> Option<Option<String>> {
        match &self.0 {
            DomainMode::Unchanged => None,
            DomainMode::Drop => Some(None),
            DomainMode::Map(pairs) => {
                let d = domain.trim_start_matches('.');
                let (_, to) = pairs
                    .iter()
                    .find(|(from, _)| from == "*" || from.eq_ignore_ascii_case(d))?;
                Some((!to.is_empty()).then(|| to.clone()))
            }
        }
    }
}

fn valid_attribute(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b';')
}

/// Everything the response side needs about one request.
#[derive(Debug)]
pub(crate) struct ResponseRewrite {
    /// The mount prefix, no trailing slash; empty when there is none (or path rewriting is off).
    pub(crate) mount: String,
    pub(crate) upstream_scheme: Scheme,
    pub(crate) upstream: Authority,
    /// The host the browser used (`name[:port]`, lower-case), if known.
    pub(crate) browser_host: Option<String>,
    /// The Host this gateway sent upstream in place of the browser's (lower-case), if it did: the
    /// upstream may build absolute URLs with it.
    pub(crate) sent_host: Option<String>,
    /// The path sent upstream, for cookies' default path.
    pub(crate) upstream_path: String,
    pub(crate) cookie_path: CookiePath,
    pub(crate) cookie_domain: CookieDomain,
    /// Which cookie names pass, and the route's namespace (`None`: names unchanged).
    pub(crate) firewall: CookieFirewall,
    pub(crate) namespace: Option<Namespace>,
    /// The route's mount (empty for a host route) when responses are sanitised: no
    /// `Clear-Site-Data`, `Service-Worker-Allowed` kept within the mount.
    pub(crate) sanitize: Option<String>,
}

impl ResponseRewrite {
    /// Rewrites the headers of a response, in place.
    pub(crate) fn apply(&self, status: StatusCode, headers: &mut HeaderMap) {
        if let Some(mount) = &self.sanitize {
            // Its `cookies` directive wipes cookies of the whole registrable domain, the host's
            // session included; storage and cache of the whole origin on a shared one.
            headers.remove(&CLEAR_SITE_DATA);
            if !mount.is_empty() {
                if let header::Entry::Occupied(mut e) = headers.entry(&SERVICE_WORKER_ALLOWED) {
                    let capped = e
                        .get()
                        .to_str()
                        .ok()
                        .and_then(|v| service_worker_scope(mount, v))
                        .and_then(|v| HeaderValue::from_str(&v).ok());
                    match capped {
                        Some(v) if e.iter().count() == 1 => {
                            e.insert(v);
                        }
                        _ => {
                            e.remove();
                        }
                    }
                }
            }
        }
        if !self.mount.is_empty() {
            if status.is_redirection() || status == StatusCode::CREATED {
                self.rewrite_one(headers, header::LOCATION, |s| self.map_url(s));
            }
            self.rewrite_one(headers, header::CONTENT_LOCATION, |s| self.map_url(s));
            self.rewrite_one(headers, header::REFRESH, |s| self.map_refresh(s));
        }
        if headers.contains_key(header::SET_COOKIE) {
            self.rewrite_cookies(headers);
        }
    }

    fn rewrite_one(
        &self,
        headers: &mut HeaderMap,
        name: header::HeaderName,
        f: impl Fn(&str) -> Option<String>,
    ) {
        if let header::Entry::Occupied(mut e) = headers.entry(name) {
            for v in e.iter_mut() {
                let new = v.to_str().ok().and_then(&f);
                if let Some(new) = new.and_then(|n| HeaderValue::from_str(&n).ok()) {
                    *v = new;
                }
            }
        }
    }

    fn rewrite_cookies(&self, headers: &mut HeaderMap) {
        let values: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| {
                // A cookie whose name cannot be read cannot be judged: it goes.
                let s = v.to_str().ok()?;
                let named = self.firewall.outbound(s, self.namespace.as_ref())?;
                let s = named.as_deref().unwrap_or(s);
                match self.map_cookie(s) {
                    Some(mapped) => HeaderValue::from_str(&mapped).ok(),
                    None if named.is_some() => HeaderValue::from_str(s).ok(),
                    None => Some(v.clone()),
                }
            })
            .collect();
        headers.remove(header::SET_COOKIE);
        for v in values {
            headers.append(header::SET_COOKIE, v);
        }
    }

    fn under_mount(&self, path: &str) -> bool {
        path.strip_prefix(self.mount.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// A root-relative path (`/x?q#f`, possibly empty or just `?q`) mapped under the mount.
    fn map_path(&self, rest: &str) -> Option<String> {
        let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
        if self.under_mount(&rest[..path_end]) {
            return None;
        }
        if rest.starts_with('/') {
            Some(format!("{}{}", self.mount, rest))
        } else {
            Some(format!("{}/{}", self.mount, rest))
        }
    }

    /// A URL from a `Location`-like header mapped back to what the browser sees; `None` when it
    /// stays as it is (relative, foreign, already under the mount).
    pub(crate) fn map_url(&self, url: &str) -> Option<String> {
        if url.starts_with('/') && !url.starts_with("//") {
            return self.map_path(url);
        }
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("//") {
            (None, rest)
        } else {
            let (scheme, rest) = url.split_once("://")?;
            let known = ["http", "https", "ws", "wss"]
                .iter()
                .any(|s| s.eq_ignore_ascii_case(scheme));
            if !known {
                return None;
            }
            (Some(scheme), rest)
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return None;
        }
        let named_sent_host = self
            .sent_host
            .as_deref()
            .is_some_and(|h| h.eq_ignore_ascii_case(authority));
        if named_sent_host || self.is_upstream(scheme, authority) {
            // The browser cannot reach the upstream: the same path on the browser's origin.
            return Some(self.map_path(tail).unwrap_or_else(|| {
                if tail.starts_with('/') {
                    tail.to_owned()
                } else {
                    format!("/{tail}")
                }
            }));
        }
        if self
            .browser_host
            .as_deref()
            .is_some_and(|h| h.eq_ignore_ascii_case(authority))
        {
            let mapped = self.map_path(tail)?;
            let prefix = &url[..url.len() - rest.len()];
            return Some(format!("{prefix}{authority}{mapped}"));
        }
        None
    }

    fn is_upstream(&self, scheme: Option<&str>, authority: &str) -> bool {
        // `http://localhost` for an upstream at `localhost:80`, and the reverse.
        let upstream_default = if self.upstream_scheme == Scheme::HTTPS {
            443
        } else {
            80
        };
        let url_default = match scheme.map(str::to_ascii_lowercase).as_deref() {
            Some("https") | Some("wss") => 443,
            Some(_) => 80,
            None => upstream_default,
        };
        let Ok(a) = authority.parse::<Authority>() else {
            return false;
        };
        a.host().eq_ignore_ascii_case(self.upstream.host())
            && a.port_u16().unwrap_or(url_default)
                == self.upstream.port_u16().unwrap_or(upstream_default)
    }

    /// `Refresh: 0; url=/x` (also `URL='/x'`, `,` as separator).
    fn map_refresh(&self, value: &str) -> Option<String> {
        let sep = value.find([';', ','])?;
        let after = &value[sep + 1..];
        let trimmed = after.trim_start();
        let mut start = value.len() - trimmed.len();
        let rest = &value[start..];
        if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case("url") {
            let eq = rest[3..].trim_start();
            if let Some(v) = eq.strip_prefix('=') {
                let v2 = v.trim_start();
                start = value.len() - v2.len();
            }
        }
        let quote = value[start..]
            .chars()
            .next()
            .filter(|c| *c == '\'' || *c == '"');
        let end = match quote {
            Some(q) => {
                start += 1;
                start + value[start..].find(q).unwrap_or(value.len() - start)
            }
            None => start + value[start..].trim_end().len(),
        };
        let url = &value[start..end];
        let mapped = self.map_url(url)?;
        Some(format!("{}{}{}", &value[..start], mapped, &value[end..]))
    }

    /// One `Set-Cookie` value with its `Path` and `Domain` rewritten; `None` when unchanged.
    pub(crate) fn map_cookie(&self, cookie: &str) -> Option<String> {
        let mut parts = cookie.split(';');
        let first = parts.next()?;
        let mut out = String::with_capacity(cookie.len() + self.mount.len() + 8);
        out.push_str(first.trim_end());
        let mut changed = false;
        let mut saw_path = false;
        for attr in parts {
            let attr = attr.trim();
            if attr.is_empty() {
                changed = true;
                continue;
            }
            let (name, value) = match attr.split_once('=') {
                Some((n, v)) => (n.trim(), v.trim()),
                None => (attr, ""),
            };
            if name.eq_ignore_ascii_case("path") {
                saw_path = true;
                if let Some(new) = self.map_cookie_path(value) {
                    changed = true;
                    out.push_str("; Path=");
                    out.push_str(&new);
                    continue;
                }
            } else if name.eq_ignore_ascii_case("domain") {
                if let Some(new) = self.cookie_domain.apply(value) {
                    changed = true;
                    if let Some(d) = new {
                        out.push_str("; Domain=");
                        out.push_str(&d);
                    }
                    continue;
                }
            }
            out.push_str("; ");
            out.push_str(attr);
        }
        if !saw_path && !self.mount.is_empty() && self.cookie_path.0 == PathMode::UnderMount {
            let default = default_path(&self.upstream_path);
            out.push_str("; Path=");
            out.push_str(&self.map_path(default).unwrap_or_else(|| default.to_owned()));
            changed = true;
        }
        changed.then_some(out)
    }

    fn map_cookie_path(&self, value: &str) -> Option<String> {
        match &self.cookie_path.0 {
            PathMode::Unchanged => None,
            PathMode::Fixed(p) => (**p != *value).then(|| p.to_string()),
            PathMode::UnderMount if self.mount.is_empty() => None,
            PathMode::UnderMount => {
                // A Path not starting with `/` counts as absent (RFC 6265 §5.2.4).
                let path = if value.starts_with('/') {
                    value
                } else {
                    default_path(&self.upstream_path)
                };
                match self.map_path(path) {
                    Some(p) => Some(p),
                    None if path != value => Some(path.to_owned()),
                    None => None,
                }
            }
        }
    }
}

/// The `Service-Worker-Allowed` value a sandbox under `mount` may send: its root-relative path
/// mapped under the mount (`/` → `/proxy/5173/`), so no worker it registers controls pages outside
/// it; `None` (the header goes) for any other form — a relative or absolute URL, dot segments,
/// encoded dots, backslashes — whose resolution the gateway would have to second-guess.
fn service_worker_scope(mount: &str, value: &str) -> Option<String> {
    let v = value.trim();
    let plain = v.starts_with('/')
        && !v.starts_with("//")
        && !v.contains(['\\', '?', '#'])
        && !v.to_ascii_lowercase().contains("%2e")
        && v.split('/').all(|seg| seg != "." && seg != "..");
    if !plain {
        return None;
    }
    let under = v
        .strip_prefix(mount)
        .is_some_and(|rest| rest.starts_with('/'));
    Some(if under {
        v.to_owned()
    } else {
        format!("{mount}{v}")
    })
}

/// The default cookie path of a request path (RFC 6265 §5.1.4).
fn default_path(path: &str) -> &str {
    if !path.starts_with('/') {
        return "/";
    }
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(mount: &str, upstream_path: &str) -> ResponseRewrite {
        ResponseRewrite {
            mount: mount.to_owned(),
            upstream_scheme: Scheme::HTTP,
            upstream: "localhost:5173".parse().unwrap(),
            browser_host: Some("gw.example.com:8080".to_owned()),
            sent_host: None,
            upstream_path: upstream_path.to_owned(),
            cookie_path: CookiePath::default(),
            cookie_domain: CookieDomain::default(),
            firewall: CookieFirewall::off(),
            namespace: None,
            sanitize: None,
        }
    }

    #[test]
    fn locations_map_back_under_the_mount() {
        let c = ctx("/proxy/5173", "/");
        for (from, to) in [
            ("/login?next=/a#top", Some("/proxy/5173/login?next=/a#top")),
            ("/", Some("/proxy/5173/")),
            ("/proxy/5173/x", None),
            ("/proxy/5173", None),
            ("/proxy/51734/x", Some("/proxy/5173/proxy/51734/x")),
            ("http://localhost:5173/a?b", Some("/proxy/5173/a?b")),
            ("HTTP://LOCALHOST:5173", Some("/proxy/5173/")),
            ("http://localhost:5173?x=1", Some("/proxy/5173/?x=1")),
            ("//localhost:5173/a", Some("/proxy/5173/a")),
            ("ws://localhost:5173/hmr", Some("/proxy/5173/hmr")),
            ("http://localhost:5173/proxy/5173/a", Some("/proxy/5173/a")),
            (
                "https://gw.example.com:8080/a#f",
                Some("https://gw.example.com:8080/proxy/5173/a#f"),
            ),
            ("https://gw.example.com:8080/proxy/5173/a", None),
            ("http://localhost:3000/a", None),
            ("https://accounts.example.org/auth", None),
            ("http://user@localhost:5173/a", None),
            ("relative/path", None),
            ("../up", None),
            ("?q=1", None),
            ("mailto:a@b", None),
        ] {
            assert_eq!(c.map_url(from).as_deref(), to, "{from}");
        }
        let mut fixed = ctx("/m", "/");
        fixed.sent_host = Some("app.internal".to_owned());
        assert_eq!(
            fixed.map_url("https://APP.internal/a").as_deref(),
            Some("/m/a")
        );
        assert_eq!(fixed.map_url("https://app.internal.evil/a"), None);
        let mut c80 = ctx("/m", "/");
        c80.upstream = "example.internal".parse().unwrap();
        assert_eq!(
            c80.map_url("http://example.internal:80/a").as_deref(),
            Some("/m/a")
        );
        assert_eq!(c80.map_url("https://example.internal/a"), None);
    }

    #[test]
    fn refresh_urls() {
        let c = ctx("/p/1", "/");
        for (from, to) in [
            ("0; url=/x", Some("0; url=/p/1/x")),
            ("5;URL='/x?y'", Some("5;URL='/p/1/x?y'")),
            (
                "0; url=\"http://localhost:5173/z\"",
                Some("0; url=\"/p/1/z\""),
            ),
            ("3, /x", Some("3, /p/1/x")),
            ("0; url=https://example.org/", None),
            ("10", None),
        ] {
            assert_eq!(c.map_refresh(from).as_deref(), to, "{from}");
        }
    }

    #[test]
    fn cookie_paths_under_the_mount() {
        let c = ctx("/proxy/5173", "/app/page");
        for (from, to) in [
            ("a=1; Path=/", Some("a=1; Path=/proxy/5173/")),
            (
                "a=1; path=/app; HttpOnly",
                Some("a=1; Path=/proxy/5173/app; HttpOnly"),
            ),
            ("a=1; Path=/proxy/5173/x", None),
            ("a=1", Some("a=1; Path=/proxy/5173/app")),
            ("a=1; Path=x", Some("a=1; Path=/proxy/5173/app")),
            (
                "a=1; Domain=localhost; Path=/; Secure",
                Some("a=1; Path=/proxy/5173/; Secure"),
            ),
            (
                "a=b=c; Max-Age=5; Path=/",
                Some("a=b=c; Max-Age=5; Path=/proxy/5173/"),
            ),
        ] {
            assert_eq!(c.map_cookie(from).as_deref(), to, "{from}");
        }
        let top = ctx("/proxy/5173", "/page");
        assert_eq!(
            top.map_cookie("a=1").as_deref(),
            Some("a=1; Path=/proxy/5173/")
        );
        let keep = ctx("/absproxy/3000", "/absproxy/3000/a/b");
        assert_eq!(
            keep.map_cookie("a=1").as_deref(),
            Some("a=1; Path=/absproxy/3000/a")
        );
        assert_eq!(keep.map_cookie("a=1; Path=/absproxy/3000/"), None);
    }

    #[test]
    fn cookie_settings() {
        let mut c = ctx("/m", "/");
        c.cookie_path = CookiePath::unchanged();
        c.cookie_domain = CookieDomain::unchanged();
        assert_eq!(c.map_cookie("a=1; Path=/; Domain=localhost"), None);
        c.cookie_path = CookiePath::fixed("/fixed/").unwrap();
        c.cookie_domain = CookieDomain::map([("localhost", "gw.example.com")]).unwrap();
        assert_eq!(
            c.map_cookie("a=1; Path=/; Domain=.LOCALHOST").as_deref(),
            Some("a=1; Path=/fixed/; Domain=gw.example.com")
        );
        assert_eq!(c.map_cookie("a=1; Domain=other.example"), None);
        c.cookie_domain = CookieDomain::rewrite("").unwrap();
        assert_eq!(c.map_cookie("a=1; Domain=x").as_deref(), Some("a=1"));
        // No mount: paths stay, domains still follow the domain setting.
        let mut c = ctx("", "/a/b");
        assert_eq!(c.map_cookie("a=1"), None);
        assert_eq!(
            c.map_cookie("a=1; Path=/; Domain=localhost").as_deref(),
            Some("a=1; Path=/")
        );
        c.cookie_domain = CookieDomain::unchanged();
        assert_eq!(c.map_cookie("a=1; Path=/; Domain=localhost"), None);
        assert!(CookiePath::fixed("x").is_err());
        assert!(CookiePath::fixed("/a;b").is_err());
        assert!(CookieDomain::rewrite("a;b").is_err());
        assert!(CookieDomain::map([("", "x")]).is_err());
    }

    #[test]
    fn headers_by_status_and_several_cookies() {
        let c = ctx("/p", "/");
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, HeaderValue::from_static("/a"));
        h.insert(header::CONTENT_LOCATION, HeaderValue::from_static("/b"));
        h.append(header::SET_COOKIE, HeaderValue::from_static("a=1; Path=/"));
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("b=2, c=3; Path=/x"),
        );
        let mut ok = h.clone();
        c.apply(StatusCode::OK, &mut ok);
        assert_eq!(ok[header::LOCATION], "/a");
        assert_eq!(ok[header::CONTENT_LOCATION], "/p/b");
        let cookies: Vec<_> = ok.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1; Path=/p/", "b=2, c=3; Path=/p/x"]);
        for s in [
            StatusCode::FOUND,
            StatusCode::CREATED,
            StatusCode::PERMANENT_REDIRECT,
        ] {
            let mut r = h.clone();
            c.apply(s, &mut r);
            assert_eq!(r[header::LOCATION], "/p/a", "{s}");
        }
    }

    #[test]
    fn sandbox_answers_are_sanitised() {
        let mut c = ctx("/proxy/5173", "/sw.js");
        c.firewall = CookieFirewall::new();
        c.namespace = c.firewall.namespace(Some("/proxy/5173"));
        c.sanitize = Some("/proxy/5173".to_owned());
        let mut h = HeaderMap::new();
        h.insert(
            "clear-site-data",
            HeaderValue::from_static("\"cookies\", \"storage\""),
        );
        h.insert("service-worker-allowed", HeaderValue::from_static("/"));
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("session=1; Path=/; Domain=gw"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("sgw_ide_v=forged; Path=/__ide/v/"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("=nameless; Path=/"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("__Host-id=2; Secure; Path=/"),
        );
        c.apply(StatusCode::OK, &mut h);
        assert!(!h.contains_key("clear-site-data"));
        assert_eq!(h["service-worker-allowed"], "/proxy/5173/");
        let cookies: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(
            cookies,
            [
                "sgw.proxy.5173~session=1; Path=/proxy/5173/",
                "__Secure-sgw.proxy.5173~__Host-id=2; Secure; Path=/proxy/5173/"
            ]
        );
        for (from, to) in [
            ("/", Some("/proxy/5173/")),
            ("/app/", Some("/proxy/5173/app/")),
            ("/proxy/5173/x/", Some("/proxy/5173/x/")),
            ("/proxy/51734/", Some("/proxy/5173/proxy/51734/")),
            ("/proxy/5173/../../", None),
            ("/proxy/5173/%2E%2E/", None),
            ("/a\\..\\", None),
            ("../../", None),
            ("//evil.example/", None),
            ("https://gw/", None),
            ("/a?x", None),
        ] {
            assert_eq!(
                service_worker_scope("/proxy/5173", from).as_deref(),
                to,
                "{from}"
            );
        }
        // On a route of its own origin the scope is the sandbox's business; Clear-Site-Data is
        // not (its `cookies` reach the whole registrable domain).
        c.sanitize = Some(String::new());
        let mut h = HeaderMap::new();
        h.insert("clear-site-data", HeaderValue::from_static("\"*\""));
        h.insert("service-worker-allowed", HeaderValue::from_static("/"));
        c.apply(StatusCode::OK, &mut h);
        assert!(!h.contains_key("clear-site-data"));
        assert_eq!(h["service-worker-allowed"], "/");
    }

    #[test]
    fn default_paths() {
        for (p, d) in [
            ("/", "/"),
            ("/a", "/"),
            ("/a/b", "/a"),
            ("/a/b/", "/a/b"),
            ("", "/"),
        ] {
            assert_eq!(default_path(p), d, "{p}");
        }
    }
}
