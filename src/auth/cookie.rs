//! The tunnel cookie: its name, attributes and mount path, and `Cookie` header handling.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Scheme;
use http::{Request, Uri};

use super::sandbox_hosts::SandboxHosts;
use crate::host::{is_loopback_host, request_host};
use crate::route::RouteError;
use crate::util::{cookie_pairs as pairs, split_cookie_pair as split_pair};

/// When the tunnel cookie gets the `Secure` attribute (and the `__Host-` / `__Secure-` name
/// prefix).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecureCookie {
    /// `Secure` everywhere except plain HTTP on a loopback host (`localhost`, `*.localhost`,
    /// `127.0.0.0/8`, `[::1]`).
    ///
    /// A request counts as HTTPS when its URI has the `https` scheme (as HTTP/2 requests do) or,
    /// with [`trust_forwarded_proto`](CookieConfigBuilder::trust_forwarded_proto), when the
    /// nearest `X-Forwarded-Proto` / `Forwarded: proto=` says `https`. Any other request is
    /// `Secure` too unless its Host is a loopback name: a gateway behind a TLS terminator that
    /// sends no `X-Forwarded-Proto` still issues `Secure` cookies, and only a local development
    /// setup on `http://localhost` gets plain ones.
    #[default]
    Auto,
    /// Always `Secure`. Browsers drop `Secure` cookies set over plain `http://`, except that
    /// Chromium and Firefox accept them on `http://localhost`.
    Always,
    /// Never `Secure` (plain-HTTP development setups on another host than a loopback name).
    Never,
}

/// The configuration was refused when built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The cookie name is empty, too long, carries a `__Host-`/`__Secure-` prefix (added by the
    /// gateway itself) or characters outside `A-Z a-z 0-9 _ -`.
    #[error("invalid cookie name {0:?}: 1 to 64 characters of A-Z a-z 0-9 _ -, without a __Host-/__Secure- prefix")]
    CookieName(String),
    /// The tunnel prefix must look like `/__ide`: starting with `/`, no trailing `/`, no empty,
    /// `.` or `..` segment, only unreserved characters.
    #[error("invalid tunnel prefix {0:?}: expected a path like /__ide (no trailing slash, no dot segments)")]
    TunnelPrefix(String),
    /// The bootstrap path pattern must look like `/api/dev/{id}/ide`, with `{id}` once, as a
    /// whole segment.
    #[error("invalid bootstrap path pattern {0:?}: expected a path like /api/dev/{{id}}/ide with {{id}} once, as a whole segment")]
    PathPattern(String),
    /// The cookie lifetime must be between one second and 400 days (the cap browsers apply).
    #[error("cookie max-age must be between 1 second and 400 days")]
    MaxAge,
    /// A third-party embed cookie (`SameSite=None; Partitioned`) must be `Secure`.
    #[error("a third-party embed cookie (SameSite=None; Partitioned) requires Secure; SecureCookie::Never is not allowed with it")]
    EmbedNeedsSecure,
    /// The per-sandbox host pattern is malformed or does not capture exactly `{id}`.
    #[error("invalid sandbox hosts: {0}")]
    SandboxHosts(String),
    /// A session redirect must be a path starting with `/` (not `//`) or an absolute `http(s)://`
    /// URL, in visible ASCII.
    #[error(
        "invalid session redirect {0:?}: expected /a/path or https://host/path in visible ASCII"
    )]
    Redirect(String),
    /// A logout path must start with `/` and hold only unreserved characters and `/`.
    #[error("invalid logout path {0:?}: expected a path like /.gateway/logout")]
    LogoutPath(String),
}

/// How the tunnel cookie is named, scoped and flagged. Shared by [`Bootstrap`](super::Bootstrap)
/// (which sets it) and [`TunnelAuthLayer`](super::TunnelAuthLayer) (which checks and strips it):
/// give both the same value.
///
/// For sandbox `demo` with the defaults, on the shared origin, the cookie is
/// `__Secure-sgw_ide_demo=<token>; Path=/__ide/demo/; Max-Age=43200; HttpOnly; Secure; SameSite=Lax`,
/// and `sgw_ide_demo=<token>; Path=/__ide/demo/; …` (no `Secure`, no prefix) on plain-HTTP
/// loopback hosts ([`SecureCookie::Auto`]).
///
/// On a sandbox's own host ([`sandbox_hosts`](CookieConfigBuilder::sandbox_hosts)) the cookie is
/// host-only and covers the whole origin: `__Host-sgw_ide_demo=<token>; Path=/; …; Secure`, or
/// `sgw_ide_demo=<token>; Path=/; …` on `http://demo.ide.localhost`.
///
/// - `SameSite=Lax`, not `Strict`: a bootstrap link opened from another site (a dashboard on
///   another domain) would lose a `Strict` cookie on the 303's follow-up request.
/// - On the shared origin the name takes `__Secure-`, not `__Host-`: that prefix requires
///   `Path=/`, and this cookie is scoped to the sandbox's tunnel, `Path=/__ide/{id}/`.
/// - The tunnel accepts only the name it would set for the request in hand: once the gateway
///   issues `__Host-`/`__Secure-` names, a cookie of the bare name (which a sibling host or a
///   plain-HTTP page could plant) is not a credential.
/// - The value is itself a signed token with [`Audience::Cookie`](super::Audience::Cookie), bound
///   to the sandbox id and expiring with `Max-Age`.
///
/// ```
/// use std::time::Duration;
/// use sandbox_gateway::auth::{CookieConfig, SecureCookie};
///
/// let cookie = CookieConfig::builder()
///     .tunnel_prefix("/__ide")
///     .secure(SecureCookie::Auto)
///     .trust_forwarded_proto(true)
///     .max_age(Duration::from_secs(8 * 3600))
///     .build()?;
/// assert_eq!(cookie.mount("demo"), "/__ide/demo/");
/// # Ok::<(), sandbox_gateway::auth::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct CookieConfig {
    name: String,
    tunnel_prefix: String,
    secure: SecureCookie,
    trust_forwarded_proto: bool,
    max_age: Duration,
    third_party_embed: bool,
    sandbox_hosts: Option<SandboxHosts>,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfigBuilder::default()
            .build()
            .expect("the default cookie configuration is valid")
    }
}

/// Builds a [`CookieConfig`]; see its documentation.
#[derive(Clone, Debug)]
pub struct CookieConfigBuilder {
    config: CookieConfig,
}

impl Default for CookieConfigBuilder {
    fn default() -> Self {
        Self {
            config: CookieConfig {
                name: "sgw_ide".to_owned(),
                tunnel_prefix: "/__ide".to_owned(),
                secure: SecureCookie::Auto,
                trust_forwarded_proto: false,
                max_age: Duration::from_secs(12 * 3600),
                third_party_embed: false,
                sandbox_hosts: None,
            },
        }
    }
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn valid_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() > 1
        && p[1..].split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        })
}

impl CookieConfigBuilder {
    /// The cookie's base name (default `sgw_ide`); the cookie for sandbox `id` is named
    /// `{name}_{id}`, prefixed with `__Secure-` when `Secure`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// The tunnel's path prefix (default `/__ide`): sandbox `id` is served under
    /// `{prefix}/{id}/`, which is also the cookie's `Path`.
    pub fn tunnel_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.tunnel_prefix = prefix.into();
        self
    }

    /// When to set `Secure` (default [`SecureCookie::Auto`]).
    pub fn secure(mut self, secure: SecureCookie) -> Self {
        self.config.secure = secure;
        self
    }

    /// Whether [`SecureCookie::Auto`] believes `X-Forwarded-Proto` and `Forwarded: proto=`
    /// (default `false`). Turn on only behind a proxy that sets them; the value added by the
    /// nearest proxy (the last one) is used.
    pub fn trust_forwarded_proto(mut self, trust: bool) -> Self {
        self.config.trust_forwarded_proto = trust;
        self
    }

    /// The session's lifetime (default 12 hours): the cookie's `Max-Age` and its token's expiry.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.config.max_age = max_age;
        self
    }

    /// For an IDE embedded in an iframe on another site (default `false`): the cookie becomes
    /// `SameSite=None; Secure; Partitioned` (CHIPS), as browsers block third-party cookies
    /// otherwise. The cookie is then always `Secure`.
    pub fn third_party_embed(mut self, embed: bool) -> Self {
        self.config.third_party_embed = embed;
        self
    }

    /// Serves each sandbox on a host of its own as well (see [`SandboxHosts`]): on a matching
    /// Host, the bootstrap and the tunnel take the sandbox id from the Host and the cookie is
    /// host-only (`Path=/`, `__Host-` when `Secure`). Other hosts keep the path mount.
    pub fn sandbox_hosts(mut self, hosts: SandboxHosts) -> Self {
        self.config.sandbox_hosts = Some(hosts);
        self
    }

    /// Checks and returns the configuration.
    pub fn build(self) -> Result<CookieConfig, ConfigError> {
        let c = self.config;
        let lower = c.name.to_ascii_lowercase();
        if c.name.is_empty()
            || c.name.len() > 64
            || !c.name.bytes().all(is_name_char)
            || lower.starts_with("__host-")
            || lower.starts_with("__secure-")
        {
            return Err(ConfigError::CookieName(c.name));
        }
        if !valid_path(&c.tunnel_prefix) {
            return Err(ConfigError::TunnelPrefix(c.tunnel_prefix));
        }
        if c.max_age < Duration::from_secs(1) || c.max_age > Duration::from_secs(400 * 86400) {
            return Err(ConfigError::MaxAge);
        }
        if c.third_party_embed && c.secure == SecureCookie::Never {
            return Err(ConfigError::EmbedNeedsSecure);
        }
        Ok(c)
    }
}

const SECURE_PREFIX: &str = "__Secure-";
const HOST_PREFIX: &str = "__Host-";

impl CookieConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> CookieConfigBuilder {
        CookieConfigBuilder::default()
    }

    /// The tunnel mount of sandbox `id` on the shared origin: `{prefix}/{id}/`, the 303 target and
    /// the cookie `Path` there (on a sandbox's own host both are `/`).
    pub fn mount(&self, id: &str) -> String {
        format!("{}/{}/", self.tunnel_prefix, id)
    }

    /// The session lifetime.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The per-sandbox hosts, when configured.
    pub fn sandbox_hosts(&self) -> Option<&SandboxHosts> {
        self.sandbox_hosts.as_ref()
    }

    pub(crate) fn tunnel_prefix(&self) -> &str {
        &self.tunnel_prefix
    }

    /// The sandbox whose own host the request is addressed to, when per-sandbox hosts are
    /// configured and the Host matches; `Err` for a missing, repeated or malformed Host.
    pub(crate) fn sandbox_host(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Option<String>, RouteError> {
        match &self.sandbox_hosts {
            Some(hosts) => hosts.id_of_head(uri, headers),
            None => Ok(None),
        }
    }

    /// The cookie name for sandbox `id`: `__Host-` when `Secure` on the sandbox's own host,
    /// `__Secure-` when `Secure` on the shared origin, bare otherwise.
    pub(crate) fn cookie_name(&self, id: &str, secure: bool, own_host: bool) -> String {
        match (secure, own_host) {
            (true, true) => format!("{HOST_PREFIX}{}_{id}", self.name),
            (true, false) => format!("{SECURE_PREFIX}{}_{id}", self.name),
            (false, _) => format!("{}_{id}", self.name),
        }
    }

    /// Whether a cookie of this name belongs to the gateway (for any sandbox).
    pub(crate) fn is_gateway_cookie(&self, name: &[u8]) -> bool {
        let strip = |name: &'_ [u8], prefix: &str| -> Option<usize> {
            name.get(..prefix.len())
                .filter(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
                .map(|_| prefix.len())
        };
        let skip = strip(name, SECURE_PREFIX)
            .or_else(|| strip(name, HOST_PREFIX))
            .unwrap_or(0);
        let name = &name[skip..];
        name.len() > self.name.len()
            && name.starts_with(self.name.as_bytes())
            && name[self.name.len()] == b'_'
    }

    /// Whether the cookie set in answer to `req` is `Secure`.
    pub(crate) fn is_secure<B>(&self, req: &Request<B>) -> bool {
        self.is_secure_head(req.uri(), req.headers())
    }

    /// As [`is_secure`](Self::is_secure), from a request's URI and headers.
    pub(crate) fn is_secure_head(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        if self.third_party_embed {
            return true;
        }
        match self.secure {
            SecureCookie::Always => true,
            SecureCookie::Never => false,
            _ => {
                uri.scheme() == Some(&Scheme::HTTPS)
                    || (self.trust_forwarded_proto && forwarded_https(headers))
                    // Plain HTTP is only assumed on loopback hosts; an unreadable Host is not one.
                    || !request_host(uri, headers)
                        .is_ok_and(|host| is_loopback_host(&host))
            }
        }
    }

    /// The `Set-Cookie` value carrying `value` for sandbox `id`: scoped to the tunnel mount on
    /// the shared origin, to the whole origin (`Path=/`, host-only) on the sandbox's own host.
    pub(crate) fn set_cookie(
        &self,
        id: &str,
        value: &str,
        secure: bool,
        own_host: bool,
    ) -> HeaderValue {
        self.cookie_line(id, value, self.max_age.as_secs(), secure, own_host)
    }

    /// The `Set-Cookie` value that removes the cookie [`set_cookie`](Self::set_cookie) set: the
    /// same name, `Path` and attributes, an empty value and `Max-Age=0`.
    pub(crate) fn clear_cookie(&self, id: &str, secure: bool, own_host: bool) -> HeaderValue {
        self.cookie_line(id, "", 0, secure, own_host)
    }

    fn cookie_line(
        &self,
        id: &str,
        value: &str,
        max_age_secs: u64,
        secure: bool,
        own_host: bool,
    ) -> HeaderValue {
        let path = if own_host {
            "/".to_owned()
        } else {
            self.mount(id)
        };
        let mut s = format!(
            "{}={}; Path={}; Max-Age={}; HttpOnly",
            self.cookie_name(id, secure, own_host),
            value,
            path,
            max_age_secs
        );
        if secure {
            s.push_str("; Secure");
        }
        if self.third_party_embed {
            s.push_str("; SameSite=None; Partitioned");
        } else {
            s.push_str("; SameSite=Lax");
        }
        HeaderValue::try_from(s).expect("cookie names, ids, tokens and paths are all visible ASCII")
    }
}

/// Whether the nearest `X-Forwarded-Proto` or `Forwarded: proto=` value says `https`.
fn forwarded_https(headers: &HeaderMap) -> bool {
    let last_xfp = headers
        .get_all("x-forwarded-proto")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back();
    if let Some(p) = last_xfp {
        return p.trim().eq_ignore_ascii_case("https");
    }
    let last_fwd = headers
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back();
    last_fwd.is_some_and(|hop| {
        hop.split(';').any(|pair| {
            let mut kv = pair.splitn(2, '=');
            let k = kv.next().unwrap_or("").trim();
            let v = kv.next().unwrap_or("").trim().trim_matches('"');
            k.eq_ignore_ascii_case("proto") && v.eq_ignore_ascii_case("https")
        })
    })
}

/// The values of every cookie named `name`, across all `Cookie` headers.
pub(crate) fn cookie_values<'a>(
    headers: &'a HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| pairs(v.as_bytes()))
        .filter_map(move |p| {
            let (n, v) = split_pair(p);
            (n == name.as_bytes()).then(|| {
                v.strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(v)
            })
        })
}

/// Removes every cookie whose name matches `drop` from the `Cookie` headers, keeping the others
/// (and their order); a header left empty is removed.
pub(crate) fn strip_cookies(headers: &mut HeaderMap, drop: impl Fn(&[u8]) -> bool) {
    let mut changed = false;
    let mut kept: Vec<HeaderValue> = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        let all: Vec<&[u8]> = pairs(v.as_bytes()).collect();
        let keep: Vec<&[u8]> = all
            .iter()
            .copied()
            .filter(|p| !drop(split_pair(p).0))
            .collect();
        if keep.len() == all.len() {
            kept.push(v.clone());
            continue;
        }
        changed = true;
        if !keep.is_empty() {
            let joined = keep.join(&b"; "[..]);
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                kept.push(v);
            }
        }
    }
    if changed {
        headers.remove(header::COOKIE);
        for v in kept {
            headers.append(header::COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie_headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn builder_validates() {
        assert!(CookieConfig::builder().build().is_ok());
        for name in ["", "a b", "a;b", "__Host-x", "__secure-x", "é"] {
            assert!(
                matches!(
                    CookieConfig::builder().name(name).build(),
                    Err(ConfigError::CookieName(_))
                ),
                "{name:?}"
            );
        }
        for p in [
            "", "/", "__ide", "/__ide/", "//x", "/a/../b", "/a/./b", "/a b", "/a?b",
        ] {
            assert!(
                matches!(
                    CookieConfig::builder().tunnel_prefix(p).build(),
                    Err(ConfigError::TunnelPrefix(_))
                ),
                "{p:?}"
            );
        }
        assert!(CookieConfig::builder()
            .tunnel_prefix("/x/ide.v2")
            .build()
            .is_ok());
        assert_eq!(
            CookieConfig::builder()
                .max_age(Duration::ZERO)
                .build()
                .unwrap_err(),
            ConfigError::MaxAge
        );
        assert_eq!(
            CookieConfig::builder()
                .third_party_embed(true)
                .secure(SecureCookie::Never)
                .build()
                .unwrap_err(),
            ConfigError::EmbedNeedsSecure
        );
    }

    #[test]
    fn set_cookie_attributes() {
        let c = CookieConfig::default();
        assert_eq!(
            c.set_cookie("demo", "TOKEN", false, false),
            "sgw_ide_demo=TOKEN; Path=/__ide/demo/; Max-Age=43200; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            c.set_cookie("demo", "TOKEN", true, false),
            "__Secure-sgw_ide_demo=TOKEN; Path=/__ide/demo/; Max-Age=43200; HttpOnly; Secure; SameSite=Lax"
        );
        // On the sandbox's own host: host-only, the whole origin, `__Host-` when Secure.
        assert_eq!(
            c.set_cookie("demo", "TOKEN", true, true),
            "__Host-sgw_ide_demo=TOKEN; Path=/; Max-Age=43200; HttpOnly; Secure; SameSite=Lax"
        );
        assert_eq!(
            c.set_cookie("demo", "TOKEN", false, true),
            "sgw_ide_demo=TOKEN; Path=/; Max-Age=43200; HttpOnly; SameSite=Lax"
        );
        let embed = CookieConfig::builder()
            .third_party_embed(true)
            .build()
            .unwrap();
        assert!(embed.is_secure(&Request::new(())));
        assert_eq!(
            embed.set_cookie("d", "T", true, false),
            "__Secure-sgw_ide_d=T; Path=/__ide/d/; Max-Age=43200; HttpOnly; Secure; SameSite=None; Partitioned"
        );
    }

    #[test]
    fn secure_auto_modes() {
        let auto = CookieConfig::default();
        let trusting = CookieConfig::builder()
            .trust_forwarded_proto(true)
            .build()
            .unwrap();
        let on = |host: &str| {
            Request::get("/api/dev/a/ide")
                .header("host", host)
                .body(())
                .unwrap()
        };
        let plain = on("localhost:8080");
        let https = Request::get("https://gw.example/api/dev/a/ide")
            .body(())
            .unwrap();
        let xfp = Request::get("/x")
            .header("host", "localhost")
            .header("x-forwarded-proto", "https")
            .body(())
            .unwrap();
        let xfp_chain = Request::get("/x")
            .header("host", "127.0.0.1:8080")
            .header("x-forwarded-proto", "https, http")
            .body(())
            .unwrap();
        let fwd = Request::get("/x")
            .header("host", "[::1]:8080")
            .header(
                "forwarded",
                "for=1.2.3.4;proto=http, for=5.6.7.8;Proto=\"https\"",
            )
            .body(())
            .unwrap();
        // Plain HTTP on loopback names only: no Secure.
        for host in [
            "localhost:8080",
            "demo.ide.localhost:8080",
            "127.0.0.1:8080",
            "127.1.2.3",
            "[::1]:8080",
            "LOCALHOST.",
        ] {
            assert!(!auto.is_secure(&on(host)), "{host}");
        }
        // Any other Host is Secure, even when the request looks like plain HTTP: a TLS
        // terminator in front may send no X-Forwarded-Proto.
        for host in [
            "gw.example.com",
            "demo.ide.example.com:443",
            "10.0.0.1:8080",
            "[::2]",
            "localhost.evil.com",
        ] {
            assert!(auto.is_secure(&on(host)), "{host}");
        }
        assert!(
            auto.is_secure(&Request::get("/x").body(()).unwrap()),
            "no Host: Secure"
        );
        assert!(auto.is_secure(&https));
        assert!(!auto.is_secure(&xfp), "untrusted X-Forwarded-Proto");
        assert!(trusting.is_secure(&xfp));
        assert!(!trusting.is_secure(&xfp_chain), "nearest hop said http");
        assert!(trusting.is_secure(&fwd));
        let always = CookieConfig::builder()
            .secure(SecureCookie::Always)
            .build()
            .unwrap();
        let never = CookieConfig::builder()
            .secure(SecureCookie::Never)
            .build()
            .unwrap();
        assert!(always.is_secure(&plain));
        assert!(!never.is_secure(&https));
    }

    #[test]
    fn gateway_cookie_names() {
        let c = CookieConfig::default();
        assert!(c.is_gateway_cookie(b"sgw_ide_demo"));
        assert!(c.is_gateway_cookie(b"__Secure-sgw_ide_demo"));
        assert!(c.is_gateway_cookie(b"__SECURE-sgw_ide_x"));
        assert!(c.is_gateway_cookie(b"__Host-sgw_ide_demo"));
        assert!(c.is_gateway_cookie(b"__host-sgw_ide_demo"));
        assert!(!c.is_gateway_cookie(b"__Host-session"));
        assert!(!c.is_gateway_cookie(b"sgw_ide"));
        // Anything in the gateway's namespace is stripped, even with an empty id.
        assert!(c.is_gateway_cookie(b"sgw_ide_"));
        assert!(!c.is_gateway_cookie(b"sgw_idea"));
        assert!(!c.is_gateway_cookie(b"session"));
        assert!(!c.is_gateway_cookie(b""));
    }

    #[test]
    fn finds_cookie_values_across_headers() {
        let h = cookie_headers(&["a=1; sgw_ide_x=T1", "b=2;sgw_ide_x=\"T2\" ; c"]);
        let v: Vec<&[u8]> = cookie_values(&h, "sgw_ide_x").collect();
        assert_eq!(v, vec![&b"T1"[..], &b"T2"[..]]);
        assert_eq!(cookie_values(&h, "nope").count(), 0);
    }

    #[test]
    fn strips_only_gateway_cookies() {
        let c = CookieConfig::default();
        let mut h = cookie_headers(&[
            "theme=dark; sgw_ide_x=T; lang=en",
            "__Secure-sgw_ide_y=U",
            "other=1",
        ]);
        strip_cookies(&mut h, |n| c.is_gateway_cookie(n));
        let left: Vec<&str> = h
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(left, vec!["theme=dark; lang=en", "other=1"]);

        let mut only = cookie_headers(&["sgw_ide_x=T", "__Secure-sgw_ide_x=T"]);
        strip_cookies(&mut only, |n| c.is_gateway_cookie(n));
        assert!(!only.contains_key(header::COOKIE));

        // Untouched headers keep their exact bytes.
        let mut none = cookie_headers(&["a=1;b=2"]);
        strip_cookies(&mut none, |n| c.is_gateway_cookie(n));
        assert_eq!(none[header::COOKIE], "a=1;b=2");
    }
}
