use std::sync::Arc;

use http::header::{self, HeaderMap};
use http::request::Parts;
use http::uri::Authority;

/// Which `Origin`s may open an upgrade (a WebSocket) through the proxy.
///
/// Browsers send `Origin` on every WebSocket handshake and send cookies with it whatever page opened
/// it, so a cookie-authenticated tunnel without an Origin check can be driven by any site
/// (cross-site WebSocket hijacking). Requests without `Origin` (non-browser clients) pass: they carry
/// no ambient browser credentials. The check runs before any upstream connection is opened; a refused
/// upgrade is answered 403.
///
/// ```
/// use sandbox_gateway::proxy::OriginCheck;
///
/// let check = OriginCheck::allow(["https://ide.example.com", "https://*.preview.example.com"]);
/// # let _ = check;
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum OriginCheck {
    /// No check.
    Off,
    /// The Origin's host and port must equal the host and port the browser used: `Forwarded: host=`
    /// (its quotes removed, as RFC 7239 reads it), else `X-Forwarded-Host`, else `Host`, the order
    /// code-server reads them in. Behind [`RewriteLayer`](crate::rewrite::RewriteLayer) these are
    /// the browser's own `Host` (a client's copies are replaced unless its peer is trusted). Host
    /// names compare case-insensitively; a missing port is the default port of the Origin's scheme.
    /// The default.
    #[default]
    SameOrigin,
    /// The Origin must be one of these: exact origins (`https://app.example.com`) or subdomain
    /// patterns (`https://*.example.com`, one or more labels, never the bare domain).
    Allow(Arc<[String]>),
}

impl OriginCheck {
    /// An allow-list of origins and `scheme://*.suffix` patterns (compared case-insensitively; a
    /// trailing `/` is ignored).
    ///
    /// # Panics
    /// If an entry is not an origin or pattern (see [`try_allow`](Self::try_allow)); this is a
    /// configuration mistake found when the gateway is built. Use `try_allow` for lists that come
    /// from user input.
    pub fn allow<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        match Self::try_allow(origins) {
            Ok(check) => check,
            Err(e) => panic!("{e}"),
        }
    }

    /// An allow-list of origins and `scheme://*.suffix` patterns, checked: each entry must be
    /// `scheme://host[:port]` or `scheme://*.domain[:port]`, with no user info, path, query or
    /// fragment, and no bare `*` (use [`OriginCheck::Off`] to turn the check off).
    ///
    /// # Errors
    /// [`InvalidOrigin`] naming the first entry that is neither.
    pub fn try_allow<I, S>(origins: I) -> Result<Self, InvalidOrigin>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let list = origins
            .into_iter()
            .map(|s| {
                let s: String = s.into();
                let norm = s.trim_end_matches('/').to_ascii_lowercase();
                if valid_pattern(&norm) {
                    Ok(norm)
                } else {
                    Err(InvalidOrigin(s.chars().take(200).collect()))
                }
            })
            .collect::<Result<Arc<[String]>, _>>()?;
        Ok(OriginCheck::Allow(list))
    }

    /// Checks a request; `Err` carries the refused Origin.
    pub fn check(&self, parts: &Parts) -> Result<(), String> {
        let Some(origin) = parts.headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin_str = origin.to_str().unwrap_or("(not text)");
        let ok = match self {
            OriginCheck::Off => true,
            OriginCheck::SameOrigin => same_origin(origin_str, parts),
            OriginCheck::Allow(list) => {
                let o = origin_str.to_ascii_lowercase();
                list.iter().any(|p| origin_matches(p, &o))
            }
        };
        if ok {
            Ok(())
        } else {
            Err(origin_str.chars().take(200).collect())
        }
    }
}

/// An entry of [`OriginCheck::try_allow`] that is neither an origin nor a `scheme://*.domain`
/// pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an origin (scheme://host[:port]) or a pattern (scheme://*.domain[:port])")]
pub struct InvalidOrigin(String);

/// `scheme://host[:port]` or `scheme://*.domain[:port]`, already lowercased.
fn valid_pattern(p: &str) -> bool {
    let Some((scheme, rest)) = p.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    let host = rest.strip_prefix("*.").unwrap_or(rest);
    scheme_ok
        && !host.is_empty()
        && !host.contains(['@', '/', '?', '#', '*'])
        && host.parse::<Authority>().is_ok_and(|a| {
            let has_port = a.as_str().len() != a.host().len();
            !a.host().is_empty()
                && !a.host().starts_with('.')
                && (!has_port || a.port_u16().is_some_and(|n| n != 0))
        })
}

fn origin_matches(pattern: &str, origin: &str) -> bool {
    if let Some((scheme, rest)) = pattern.split_once("://*.") {
        let Some((o_scheme, o_rest)) = origin.split_once("://") else {
            return false;
        };
        let suffix = format!(".{rest}");
        o_scheme == scheme
            && o_rest.len() > suffix.len()
            && o_rest.ends_with(&suffix)
            && !o_rest[..o_rest.len() - suffix.len()].contains(['/', '@', ':'])
    } else {
        pattern == origin
    }
}

/// The host the browser addressed: `Forwarded: host=`, `X-Forwarded-Host`, `Host`, or the URI's
/// authority (HTTP/2).
pub(crate) fn browser_host(headers: &HeaderMap, uri: &http::Uri) -> Option<String> {
    if let Some(h) = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(forwarded_host)
    {
        return Some(h);
    }
    if let Some(h) = headers
        .get("x-forwarded-host")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.split(',').next())
    {
        return Some(h.trim().to_owned());
    }
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()))
}

/// The `host=` of the first element of a `Forwarded` header.
fn forwarded_host(value: &str) -> Option<String> {
    let first = value.split(',').next()?;
    first.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("host")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn same_origin(origin: &str, parts: &Parts) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    // An origin is `scheme://host[:port]`: no user info, no path.
    if rest.contains(['@', '/', '?', '#']) {
        return false;
    }
    let Ok(o) = rest.parse::<Authority>() else {
        return false;
    };
    let Some(host) = browser_host(&parts.headers, &parts.uri) else {
        return false;
    };
    let Ok(h) = host.parse::<Authority>() else {
        return false;
    };
    let norm = |s: &str| s.trim_end_matches('.').to_ascii_lowercase();
    if norm(o.host()) != norm(h.host()) {
        return false;
    }
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => 443,
        _ => 80,
    };
    // A Host without a port names the default port of the scheme the browser used, which for a
    // same-origin page is the Origin's scheme.
    o.port_u16().unwrap_or(default_port) == h.port_u16().unwrap_or(default_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(pairs: &[(&str, &str)]) -> Parts {
        let mut req = http::Request::new(());
        for (k, v) in pairs {
            req.headers_mut().append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        req.into_parts().0
    }

    #[test]
    fn same_origin_rules() {
        let c = OriginCheck::SameOrigin;
        assert!(
            c.check(&parts(&[("host", "localhost:8080")])).is_ok(),
            "no origin passes"
        );
        assert!(c
            .check(&parts(&[
                ("host", "localhost:8080"),
                ("origin", "http://localhost:8080")
            ]))
            .is_ok());
        assert!(c
            .check(&parts(&[
                ("host", "LocalHost:8080"),
                ("origin", "http://localhost:8080")
            ]))
            .is_ok());
        assert!(c
            .check(&parts(&[
                ("host", "localhost:8080"),
                ("origin", "http://evil.com")
            ]))
            .is_err());
        assert!(c
            .check(&parts(&[
                ("host", "localhost:8080"),
                ("origin", "http://localhost:9090")
            ]))
            .is_err());
        assert!(c
            .check(&parts(&[("host", "a.com"), ("origin", "https://a.com")]))
            .is_ok());
        assert!(c
            .check(&parts(&[
                ("host", "a.com:443"),
                ("origin", "https://a.com")
            ]))
            .is_ok());
        assert!(c
            .check(&parts(&[("host", "a.com"), ("origin", "null")]))
            .is_err());
        assert!(
            c.check(&parts(&[
                ("host", "a.com"),
                ("origin", "http://a.com:8080")
            ]))
            .is_err(),
            "a Host without a port is the default port"
        );
        assert!(c
            .check(&parts(&[("host", "a.com"), ("origin", "http://a.com:80")]))
            .is_ok());
        assert!(c
            .check(&parts(&[
                ("host", "a.com:8443"),
                ("origin", "https://a.com")
            ]))
            .is_err());
        assert!(c
            .check(&parts(&[
                ("host", "a.com"),
                ("origin", "http://a.com.evil.com")
            ]))
            .is_err());
        assert!(c
            .check(&parts(&[
                ("host", "a.com"),
                ("origin", "http://user@a.com")
            ]))
            .is_err());
        assert!(c
            .check(&parts(&[
                ("host", "127.0.0.1:9"),
                ("x-forwarded-host", "ide.example.com"),
                ("origin", "https://ide.example.com")
            ]))
            .is_ok());
        assert!(c
            .check(&parts(&[
                ("host", "127.0.0.1:9"),
                (
                    "forwarded",
                    "for=1.2.3.4;host=\"ide.example.com\";proto=https"
                ),
                ("origin", "https://ide.example.com")
            ]))
            .is_ok());
    }

    #[test]
    fn allow_list_rules() {
        let c = OriginCheck::allow(["https://app.example.com", "https://*.preview.example.com"]);
        let ok = |o: &str| c.check(&parts(&[("origin", o)])).is_ok();
        assert!(ok("https://app.example.com"));
        assert!(ok("https://APP.example.com"));
        assert!(ok("https://a.preview.example.com"));
        assert!(ok("https://a.b.preview.example.com"));
        assert!(!ok("https://preview.example.com"));
        assert!(!ok("https://evilpreview.example.com"));
        assert!(!ok("http://a.preview.example.com"));
        assert!(!ok("https://app.example.com.evil.com"));
        assert!(!ok("null"));
    }

    #[test]
    fn allow_list_entries_are_checked() {
        assert!(OriginCheck::try_allow([
            "https://app.example.com/",
            "http://localhost:5173",
            "https://*.preview.example.com",
            "https://*.example.com:8443",
            "http://[::1]:8080",
        ])
        .is_ok());
        for bad in [
            "*",
            "app.example.com",
            "*.example.com",
            "https://",
            "https://*.",
            "https://*",
            "https://a.*.example.com",
            "https://user@app.example.com",
            "https://app.example.com/path",
            "https://app.example.com?x",
            "https://app.example.com:99999",
            "://app.example.com",
        ] {
            let err = OriginCheck::try_allow([bad]).expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    #[should_panic(expected = "is not an origin")]
    fn allow_panics_on_a_bad_entry() {
        let _ = OriginCheck::allow(["example.com"]);
    }
}
