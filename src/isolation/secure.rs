//! Whether a request arrived in a secure context, as a browser would judge the page's URL.

use http::request::Parts;
use http::{header, HeaderMap, Uri};

use crate::host::{is_loopback_host, request_host};

/// Whether the request was made from a secure context, as far as the request head tells: an
/// `https` URI (HTTP/2 `:scheme`, absolute-form) or a loopback host (`localhost`, `*.localhost`,
/// `127.0.0.0/8`, `[::1]`).
///
/// `X-Forwarded-Proto` and `Forwarded: proto=` are ignored here: anyone can send them. Behind a
/// TLS-terminating proxy you trust, use [`is_secure_context_behind_proxy`]. An HTTP/1.1 request
/// over TLS straight to this server carries no scheme at all, so it is reported as not secure
/// unless its host is a loopback name.
///
/// ```
/// use sandbox_gateway::isolation::is_secure_context;
///
/// let (parts, ()) = http::Request::builder()
///     .uri("/")
///     .header("host", "app.localhost:5173")
///     .body(())
///     .unwrap()
///     .into_parts();
/// assert!(is_secure_context(&parts));
/// ```
pub fn is_secure_context(parts: &Parts) -> bool {
    secure(&parts.uri, &parts.headers, false)
}

/// [`is_secure_context`], also believing `X-Forwarded-Proto: https` (first value) and
/// `Forwarded: proto=https` (first element). Only for a server reached solely through a proxy
/// that sets or overwrites those headers.
pub fn is_secure_context_behind_proxy(parts: &Parts) -> bool {
    secure(&parts.uri, &parts.headers, true)
}

pub(crate) fn secure(uri: &Uri, headers: &HeaderMap, trust_forwarded: bool) -> bool {
    if uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("https"))
    {
        return true;
    }
    if trust_forwarded && forwarded_https(headers) {
        return true;
    }
    request_host(uri, headers).is_ok_and(|h| is_loopback_host(&h))
}

fn forwarded_https(headers: &HeaderMap) -> bool {
    let first = |name| {
        headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
            .and_then(|s| s.split(',').next())
            .map(str::trim)
    };
    if first(header::HeaderName::from_static("x-forwarded-proto"))
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
    {
        return true;
    }
    first(header::FORWARDED).is_some_and(|element| {
        element.split(';').any(|pair| {
            pair.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("proto")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("https")
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn https_and_loopback_are_secure() {
        assert!(is_secure_context(&parts("https://ide.example.com/", &[])));
        for h in [
            "localhost",
            "localhost:3000",
            "x.localhost",
            "127.0.0.1:80",
            "127.9.9.9",
            "[::1]:1",
        ] {
            assert!(is_secure_context(&parts("/", &[("host", h)])), "{h}");
        }
        for h in [
            "ide.example.com",
            "10.0.0.5:8080",
            "[::2]",
            "localhost.evil.example",
        ] {
            assert!(!is_secure_context(&parts("/", &[("host", h)])), "{h}");
        }
        assert!(!is_secure_context(&parts("/", &[])));
        assert!(!is_secure_context(&parts("http://ide.example.com/", &[])));
    }

    #[test]
    fn forwarded_proto_only_when_trusted() {
        let p = parts(
            "/",
            &[("host", "ide.example.com"), ("x-forwarded-proto", "https")],
        );
        assert!(!is_secure_context(&p));
        assert!(is_secure_context_behind_proxy(&p));
        let p = parts(
            "/",
            &[
                ("host", "ide.example.com"),
                ("x-forwarded-proto", "http, https"),
            ],
        );
        assert!(!is_secure_context_behind_proxy(&p));
        let p = parts(
            "/",
            &[
                ("host", "ide.example.com"),
                ("forwarded", "for=1.2.3.4;Proto=\"HTTPS\", proto=http"),
            ],
        );
        assert!(is_secure_context_behind_proxy(&p));
        let p = parts(
            "/",
            &[
                ("host", "ide.example.com"),
                ("forwarded", "proto=http, proto=https"),
            ],
        );
        assert!(!is_secure_context_behind_proxy(&p));
    }
}
