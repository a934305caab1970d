//! Parsing and matching of origins: exact origins, `*.` subdomain patterns and the policy type.

use std::fmt;
use std::sync::Arc;

use http::request::Parts;
use http::HeaderValue;

use super::CorsError;

/// A parsed serialized origin (`scheme://host[:port]`), normalised for comparison.
///
/// Scheme and host are lower-cased, one trailing dot of the host is dropped and the default port of
/// `http`/`https` (80/443) is treated as absent, as browsers serialise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// Parses an origin as a browser sends it in the `Origin` header. `None` for anything that is
    /// not a tuple origin (including `null`, paths, userinfo, non-ASCII bytes or bad ports).
    pub(crate) fn parse(s: &str) -> Option<Origin> {
        let (scheme, rest) = s.split_once("://")?;
        if !valid_scheme(scheme) {
            return None;
        }
        let scheme = scheme.to_ascii_lowercase();
        let (host, port) = split_host_port(rest)?;
        let host = normalize_host(host)?;
        let port = match (port, scheme.as_str()) {
            (Some(80), "http") | (Some(443), "https") => None,
            (p, _) => p,
        };
        Some(Origin { scheme, host, port })
    }
}

fn valid_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Splits `host[:port]` (host possibly a bracketed IPv6 literal). `None` when malformed.
pub(crate) fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &s[..end + 2];
        let after = &rest[end + 1..];
        if after.is_empty() {
            (host, None)
        } else {
            (host, Some(after.strip_prefix(':')?))
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    if host.is_empty() {
        return None;
    }
    Some((host, port))
}

/// Lower-cases a host, drops one trailing dot and checks it is a plain DNS name, an IPv4
/// address or a bracketed IPv6 address. Non-ASCII (un-punycoded) names are refused: browsers
/// always send the `xn--` form.
pub(crate) fn normalize_host(host: &str) -> Option<String> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']')?;
        let ip: std::net::Ipv6Addr = inner.parse().ok()?;
        return Some(format!("[{ip}]"));
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return None;
    }
    for label in host.split('.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
    }
    Some(host.to_ascii_lowercase())
}

/// One entry of an origin allowlist: an exact origin (`https://app.example.com`) or a subdomain
/// pattern (`https://*.webcontainer-api.io`).
///
/// A pattern's `*` stands for one or more whole DNS labels: `https://*.webcontainer-api.io`
/// matches `https://abc.webcontainer-api.io` and `https://a.b.webcontainer-api.io`, but neither
/// the bare `https://webcontainer-api.io` nor a look-alike such as
/// `https://evil-webcontainer-api.io`. Scheme and port must match exactly (a missing port means
/// the scheme's default); hosts compare case-insensitively and ignore one trailing dot.
///
/// ```
/// use sandbox_gateway::cors::OriginPattern;
///
/// let p = OriginPattern::parse("https://*.webcontainer-api.io").unwrap();
/// assert!(p.matches("https://k3x.local-credentialless.webcontainer-api.io"));
/// assert!(!p.matches("https://webcontainer-api.io"));
/// assert!(!p.matches("https://evil-webcontainer-api.io"));
/// assert!(!p.matches("http://k3x.webcontainer-api.io"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    origin: Origin,
    /// `true` when `origin.host` is a suffix that must be preceded by one or more labels.
    subdomains: bool,
}

impl OriginPattern {
    /// Parses an exact origin or a `scheme://*.suffix[:port]` pattern.
    ///
    /// Refused: `*` and `null` (use [`AllowOrigin::any`] and
    /// [`CorsBuilder::allow_null_origin`](super::CorsBuilder::allow_null_origin)), paths, userinfo,
    /// non-ASCII hosts (write the `xn--` form), a `*` anywhere but as the whole first label, and a
    /// pattern whose suffix is a single label (such as `https://*.io`) other than `localhost`.
    pub fn parse(spec: &str) -> Result<OriginPattern, CorsError> {
        let bad = |reason: &str| CorsError::InvalidOrigin {
            origin: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let spec_trim = spec.trim();
        if spec_trim == "*" {
            return Err(bad("use AllowOrigin::any() to allow every origin"));
        }
        if spec_trim.eq_ignore_ascii_case("null") {
            return Err(bad(
                "use allow_null_origin(true) to allow the `null` origin",
            ));
        }
        if !spec_trim.is_ascii() {
            return Err(bad(
                "non-ASCII host; write the punycode (xn--) form browsers send",
            ));
        }
        let (scheme, rest) = spec_trim
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://host[:port]"))?;
        if rest.contains('/') || rest.contains('@') || rest.contains('?') || rest.contains('#') {
            return Err(bad("an origin has no path, userinfo, query or fragment"));
        }
        let (subdomains, rest) = match rest.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if rest.contains('*') {
            return Err(bad(
                "`*` is only allowed as the whole first label (`*.example.com`)",
            ));
        }
        let origin = Origin::parse(&format!("{scheme}://{rest}"))
            .ok_or_else(|| bad("expected scheme://host[:port] with a valid host and port"))?;
        if subdomains {
            if origin.host.starts_with('[') || origin.host.parse::<std::net::Ipv4Addr>().is_ok() {
                return Err(bad("a subdomain pattern needs a DNS name suffix"));
            }
            if !origin.host.contains('.') && origin.host != "localhost" {
                return Err(bad(
                    "pattern too broad: the suffix must have at least two labels",
                ));
            }
        }
        Ok(OriginPattern { origin, subdomains })
    }

    /// Whether `origin` (the value of an `Origin` header) is allowed by this entry.
    pub fn matches(&self, origin: &str) -> bool {
        match Origin::parse(origin) {
            Some(o) => self.matches_parsed(&o),
            None => false,
        }
    }

    pub(crate) fn matches_parsed(&self, o: &Origin) -> bool {
        if o.scheme != self.origin.scheme || o.port != self.origin.port {
            return false;
        }
        if !self.subdomains {
            return o.host == self.origin.host;
        }
        let suffix = &self.origin.host;
        o.host.len() > suffix.len() + 1
            && o.host.ends_with(suffix.as_str())
            && o.host.as_bytes()[o.host.len() - suffix.len() - 1] == b'.'
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.origin.scheme)?;
        if self.subdomains {
            f.write_str("*.")?;
        }
        f.write_str(&self.origin.host)?;
        if let Some(p) = self.origin.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

type Predicate = Arc<dyn Fn(&HeaderValue, &Parts) -> bool + Send + Sync + 'static>;

/// Which origins the [`CorsLayer`](super::CorsLayer) lets read responses.
///
/// The `null` origin (sandboxed iframes, `file:` pages, cross-origin redirects) is refused by every
/// policy, `any()` and predicates included, unless
/// [`CorsBuilder::allow_null_origin`](super::CorsBuilder::allow_null_origin) is set.
#[derive(Clone, Default)]
#[must_use]
pub struct AllowOrigin(pub(crate) OriginKind);

#[derive(Clone, Default)]
pub(crate) enum OriginKind {
    /// Nothing is allowed (the default).
    #[default]
    None,
    /// Entries still to be parsed by `CorsBuilder::build`.
    Specs(Vec<String>),
    /// Parsed entries.
    List(Vec<OriginPattern>),
    /// A user function.
    Predicate(Predicate),
    /// `Access-Control-Allow-Origin: *`.
    Any,
    /// Every origin, echoed back.
    Mirror,
}

impl AllowOrigin {
    /// Exact origins and `*.` subdomain patterns, e.g.
    /// `["https://app.example.com", "https://*.webcontainer-api.io"]`. Each entry is parsed by
    /// [`OriginPattern::parse`] when the layer is built; a bad entry makes `build` fail.
    pub fn list<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AllowOrigin(OriginKind::Specs(
            origins.into_iter().map(Into::into).collect(),
        ))
    }

    /// One exact origin or pattern; the same as a one-entry [`list`](Self::list).
    pub fn exact(origin: impl Into<String>) -> Self {
        Self::list([origin])
    }

    /// Already parsed entries.
    pub fn patterns<I>(patterns: I) -> Self
    where
        I: IntoIterator<Item = OriginPattern>,
    {
        AllowOrigin(OriginKind::List(patterns.into_iter().collect()))
    }

    /// Origins accepted by a function of the `Origin` value and the request head. The origin
    /// reaches the function as sent; it is echoed back when the function returns `true`.
    pub fn predicate<F>(f: F) -> Self
    where
        F: Fn(&HeaderValue, &Parts) -> bool + Send + Sync + 'static,
    {
        AllowOrigin(OriginKind::Predicate(Arc::new(f)))
    }

    /// Every origin, answered with `Access-Control-Allow-Origin: *`. Refused with credentials.
    pub fn any() -> Self {
        AllowOrigin(OriginKind::Any)
    }

    /// Every origin, answered by echoing it. Refused with credentials, where it would let any site
    /// act with the user's cookies; write a [`predicate`](Self::predicate) if that is truly meant.
    pub fn mirror_request() -> Self {
        AllowOrigin(OriginKind::Mirror)
    }
}

impl fmt::Debug for AllowOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            OriginKind::None => f.write_str("AllowOrigin::None"),
            OriginKind::Specs(s) => f.debug_tuple("AllowOrigin::List").field(s).finish(),
            OriginKind::List(l) => {
                let l: Vec<String> = l.iter().map(ToString::to_string).collect();
                f.debug_tuple("AllowOrigin::List").field(&l).finish()
            }
            OriginKind::Predicate(_) => f.write_str("AllowOrigin::Predicate"),
            OriginKind::Any => f.write_str("AllowOrigin::Any"),
            OriginKind::Mirror => f.write_str("AllowOrigin::MirrorRequest"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> OriginPattern {
        OriginPattern::parse(s).unwrap()
    }

    #[test]
    fn exact_origin_matches_itself_only() {
        let e = p("https://app.example.com");
        assert!(e.matches("https://app.example.com"));
        assert!(e.matches("https://APP.Example.COM"));
        assert!(e.matches("HTTPS://app.example.com"));
        assert!(e.matches("https://app.example.com."));
        assert!(e.matches("https://app.example.com:443"));
        assert!(!e.matches("http://app.example.com"));
        assert!(!e.matches("https://app.example.com:8443"));
        assert!(!e.matches("https://x.app.example.com"));
        assert!(!e.matches("https://app.example.com.evil.io"));
        assert!(!e.matches("https://app.example.co"));
        assert!(!e.matches("https://app.example.com/"));
        assert!(!e.matches("https://user@app.example.com"));
        assert!(!e.matches("null"));
        assert!(!e.matches(""));
    }

    #[test]
    fn ports_must_match_exactly() {
        let e = p("http://localhost:5173");
        assert!(e.matches("http://localhost:5173"));
        assert!(!e.matches("http://localhost"));
        assert!(!e.matches("http://localhost:5174"));
        assert!(!e.matches("http://localhost:05173x"));
        assert!(!e.matches("http://localhost:65536"));
        assert!(!e.matches("http://localhost:"));
        let d = p("http://example.com:80");
        assert!(d.matches("http://example.com"));
        assert!(!d.matches("http://example.com:8080"));
    }

    #[test]
    fn subdomain_pattern_needs_at_least_one_label() {
        let w = p("https://*.webcontainer-api.io");
        assert!(w.matches("https://abc.webcontainer-api.io"));
        assert!(w.matches("https://abc.local-credentialless.webcontainer-api.io"));
        assert!(w.matches("https://ABC.WebContainer-API.io."));
        assert!(!w.matches("https://webcontainer-api.io"));
        assert!(!w.matches("https://.webcontainer-api.io"));
        assert!(!w.matches("https://evil-webcontainer-api.io"));
        assert!(!w.matches("https://evilwebcontainer-api.io"));
        assert!(!w.matches("https://abc.webcontainer-api.io.evil.com"));
        assert!(!w.matches("https://abc.webcontainer-api.iox"));
        assert!(!w.matches("http://abc.webcontainer-api.io"));
        assert!(!w.matches("https://abc.webcontainer-api.io:8443"));
        assert!(!w.matches("https://a..webcontainer-api.io"));
        let l = p("http://*.localhost:3000");
        assert!(l.matches("http://app.localhost:3000"));
        assert!(!l.matches("http://app.localhost:3001"));
        assert!(!l.matches("http://localhost:3000"));
    }

    #[test]
    fn punycode_lookalikes_do_not_match() {
        let e = p("https://apple.com");
        // Cyrillic "а" in place of the Latin "a", as browsers send it.
        assert!(!e.matches("https://xn--pple-43d.com"));
        // Raw non-ASCII never matches.
        assert!(!e.matches("https://аpple.com"));
        let idn = p("https://xn--bcher-kva.example");
        assert!(idn.matches("https://XN--BCHER-KVA.example"));
        assert!(OriginPattern::parse("https://bücher.example").is_err());
    }

    #[test]
    fn ip_literals() {
        let v6 = p("http://[::1]:8080");
        assert!(v6.matches("http://[::1]:8080"));
        assert!(v6.matches("http://[0:0:0:0:0:0:0:1]:8080"));
        assert!(!v6.matches("http://[::2]:8080"));
        let v4 = p("http://127.0.0.1:8080");
        assert!(v4.matches("http://127.0.0.1:8080"));
        assert!(!v4.matches("http://127.0.0.2:8080"));
    }

    #[test]
    fn bad_specs_are_refused() {
        for bad in [
            "*",
            "null",
            "example.com",
            "https://example.com/",
            "https://user@example.com",
            "https://*example.com",
            "https://a.*.example.com",
            "https://*.com",
            "https://*.[::1]",
            "https://*.127.0.0.1",
            "https://exa mple.com",
            "https://example.com:99999",
            "https://",
        ] {
            assert!(
                OriginPattern::parse(bad).is_err(),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "https://*.webcontainer-api.io",
            "http://localhost:5173",
            "http://[::1]:80",
        ] {
            let pat = p(s);
            assert_eq!(p(&pat.to_string()), pat);
        }
    }
}
