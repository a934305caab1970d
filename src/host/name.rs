//! Reading the Host of a request, and the names an allowlist holds.

use std::net::Ipv4Addr;

use http::{header, HeaderMap, Uri};

use crate::cors::origin::{normalize_host, split_host_port};

/// An invalid allowlist entry, reported by [`HostAllowlistBuilder::build`](super::HostAllowlistBuilder::build).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The entry is not a host name, an IP address or a `*.suffix` pattern.
    #[error("invalid allowed host {name:?}: {reason}")]
    InvalidName {
        /// The entry as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why the Host of a request could not be read: each is answered with `400 Bad Request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadHost {
    Missing,
    Several,
    Invalid,
    Disagree,
}

impl BadHost {
    pub(crate) fn message(self) -> &'static str {
        match self {
            BadHost::Missing => "bad request: missing Host header",
            BadHost::Several => "bad request: several Host headers",
            BadHost::Invalid => "bad request: invalid Host",
            BadHost::Disagree => "bad request: Host header and request target name different hosts",
        }
    }
}

/// The normalised host name (lower-case, no trailing dot, no port; IPv6 in brackets) a request
/// is addressed to: from the URI authority (absolute-form, HTTP/2 `:authority`) or the `Host`
/// header. Both present must agree.
pub(crate) fn request_host(uri: &Uri, headers: &HeaderMap) -> Result<String, BadHost> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let header_host = match (hosts.next(), hosts.next()) {
        (None, _) => None,
        (Some(v), None) => Some(parse_authority(v.to_str().map_err(|_| BadHost::Invalid)?)?),
        (Some(_), Some(_)) => return Err(BadHost::Several),
    };
    let uri_host = match uri.authority() {
        Some(a) => Some(parse_authority(a.as_str())?),
        None => None,
    };
    match (uri_host, header_host) {
        (Some(u), Some(h)) if u != h => Err(BadHost::Disagree),
        (Some(u), _) => Ok(u),
        (None, Some(h)) => Ok(h),
        (None, None) => Err(BadHost::Missing),
    }
}

fn parse_authority(s: &str) -> Result<String, BadHost> {
    if s.contains('@') {
        return Err(BadHost::Invalid);
    }
    let (host, _port) = split_host_port(s).ok_or(BadHost::Invalid)?;
    normalize_host(host).ok_or(BadHost::Invalid)
}

/// Whether a normalised host is a loopback name: `localhost`, `*.localhost`, `127.0.0.0/8` or
/// `[::1]`. Browsers resolve these to loopback themselves, so they cannot be rebound.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host == "[::1]"
        || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// One allowlist entry: an exact name or a `*.suffix` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AllowedHost {
    name: String,
    subdomains: bool,
}

impl AllowedHost {
    pub(crate) fn parse(spec: &str) -> Result<AllowedHost, HostError> {
        let bad = |reason: &str| HostError::InvalidName {
            name: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let s = spec.trim();
        if s == "*" || s.eq_ignore_ascii_case("all") {
            return Err(bad(
                "allowing every Host re-opens DNS rebinding; list the names the server is reached by",
            ));
        }
        if let Some(rest) = s.strip_prefix('.') {
            return Err(bad(&format!(
                "write `{rest}` and/or `*.{rest}` (a pattern never matches the bare name)"
            )));
        }
        if !s.is_ascii() {
            return Err(bad("non-ASCII name; write the punycode (xn--) form"));
        }
        if s.contains("://") || s.contains('/') || s.contains('@') {
            return Err(bad(
                "give a host name only, without scheme, path or userinfo",
            ));
        }
        let (subdomains, rest) = match s.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, s),
        };
        if rest.contains('*') {
            return Err(bad(
                "`*` is only allowed as the whole first label (`*.example.com`)",
            ));
        }
        let (host, port) = split_host_port(rest).ok_or_else(|| bad("not a host name"))?;
        if port.is_some() {
            return Err(bad("give the name without a port: any port is accepted"));
        }
        let name = normalize_host(host).ok_or_else(|| bad("not a host name or IP address"))?;
        if subdomains
            && (name.starts_with('[')
                || name.parse::<Ipv4Addr>().is_ok()
                || (!name.contains('.') && name != "localhost"))
        {
            return Err(bad("pattern too broad or not a DNS suffix"));
        }
        Ok(AllowedHost { name, subdomains })
    }

    pub(crate) fn matches(&self, host: &str) -> bool {
        if !self.subdomains {
            return host == self.name;
        }
        host.len() > self.name.len() + 1
            && host.ends_with(self.name.as_str())
            && host.as_bytes()[host.len() - self.name.len() - 1] == b'.'
    }
}

impl std::fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.subdomains {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Request};

    fn host_of(uri: &str, hosts: &[&str]) -> Result<String, BadHost> {
        let mut b = Request::builder().uri(uri);
        for h in hosts {
            b = b.header(header::HOST, HeaderValue::from_str(h).unwrap());
        }
        let (parts, ()) = b.body(()).unwrap().into_parts();
        request_host(&parts.uri, &parts.headers)
    }

    #[test]
    fn host_comes_from_header_or_authority() {
        assert_eq!(host_of("/", &["Example.COM.:8080"]).unwrap(), "example.com");
        assert_eq!(
            host_of("https://example.com/x", &[]).unwrap(),
            "example.com"
        );
        assert_eq!(
            host_of("https://example.com/x", &["EXAMPLE.com"]).unwrap(),
            "example.com"
        );
        assert_eq!(host_of("/", &["[::1]:3000"]).unwrap(), "[::1]");
        assert_eq!(host_of("/", &[]), Err(BadHost::Missing));
        assert_eq!(
            host_of("/", &["a.example", "a.example"]),
            Err(BadHost::Several)
        );
        assert_eq!(
            host_of("https://a.example/", &["b.example"]),
            Err(BadHost::Disagree)
        );
        for bad in [
            "",
            "a b",
            "user@a.example",
            "a.example:99999",
            "a.example:x",
            "[::1",
            "a..b",
            ":80",
        ] {
            assert_eq!(host_of("/", &[bad]), Err(BadHost::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn loopback_names() {
        for h in [
            "localhost",
            "app.localhost",
            "127.0.0.1",
            "127.1.2.3",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "localhost.evil.com",
            "evil-localhost",
            "128.0.0.1",
            "[::2]",
            "0.0.0.0",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn allowlist_entries() {
        let e = AllowedHost::parse("Preview.Example.com.").unwrap();
        assert!(e.matches("preview.example.com"));
        assert!(!e.matches("x.preview.example.com"));
        let w = AllowedHost::parse("*.preview.example.com").unwrap();
        assert!(w.matches("3000-abc.preview.example.com"));
        assert!(w.matches("a.b.preview.example.com"));
        assert!(!w.matches("preview.example.com"));
        assert!(!w.matches("evil-preview.example.com"));
        assert!(!w.matches("x.preview.example.com.evil.io"));
        assert!(AllowedHost::parse("192.168.1.5")
            .unwrap()
            .matches("192.168.1.5"));
        assert!(AllowedHost::parse("[::1]").is_ok());
        for bad in [
            "*",
            "all",
            ".example.com",
            "*.com",
            "a.*.example.com",
            "example.com:8080",
            "https://example.com",
            "bücher.example",
            "a b",
            "*.10.0.0.1",
            "",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad:?}");
        }
    }
}
