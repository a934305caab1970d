//! Small helpers shared by the layers: plain-text answers and header utilities.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// Builds a short plain-text answer, as every layer of this crate gives when it answers a request
/// itself (a refused preflight, an unknown Host, a bad path, an upstream that is down).
///
/// The body type only needs `From<Bytes>`, which `axum::body::Body`, `http_body_util::Full<Bytes>`
/// and [`ProxyBody`](crate::proxy::ProxyBody) all implement.
pub(crate) fn text_response<B>(status: StatusCode, message: impl Into<String>) -> Response<B>
where
    B: From<Bytes>,
{
    let mut message = message.into();
    if !message.ends_with('\n') {
        message.push('\n');
    }
    let mut res = Response::new(B::from(Bytes::from(message)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// What counts as one client when connections or tunnels are capped per client: an IPv4 address
/// (IPv4-mapped IPv6 included), or an IPv6 /64, the smallest network a host is usually given.
pub(crate) fn client_network(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
    }
}

/// Whether a comma-separated header (such as `Connection`) lists `token`, case-insensitively.
pub(crate) fn header_has_token(
    headers: &http::HeaderMap,
    name: header::HeaderName,
    token: &str,
) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Whether `b` may appear in an HTTP token (RFC 9110 §5.6.2), the syntax of header field names,
/// `Upgrade` protocols and cookie names (RFC 6265 §4.1.1).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `s` is a non-empty HTTP token.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Splits one `Cookie` header value into its `name=value` pairs, as trimmed byte slices.
pub(crate) fn cookie_pairs(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b';')
        .map(|p| p.trim_ascii())
        .filter(|p| !p.is_empty())
}

/// A `Cookie` pair's name and value, trimmed; a pair without `=` has an empty name (RFC 6265bis
/// §5.7, a "nameless" cookie).
pub(crate) fn split_cookie_pair(pair: &[u8]) -> (&[u8], &[u8]) {
    match pair.iter().position(|&b| b == b'=') {
        Some(i) => (pair[..i].trim_ascii(), pair[i + 1..].trim_ascii()),
        None => (&[], pair),
    }
}

/// Whether `name` may name an upstream of the API forwarder: one path segment of letters, digits,
/// `-`, `_` and `.`, never `.` or `..`. API tokens carry such names.
#[cfg_attr(not(any(feature = "auth", feature = "forward")), allow(dead_code))]
pub(crate) fn valid_upstream_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_response_is_plain_text_with_newline() {
        let res: Response<http_body_util::Full<Bytes>> =
            text_response(StatusCode::BAD_GATEWAY, "upstream down");
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }

    #[test]
    fn upstream_names() {
        assert!(valid_upstream_name("demo-llm"));
        assert!(valid_upstream_name("openai.v1"));
        for bad in ["", ".", "..", "a/b", "a b", "a%2f"] {
            assert!(!valid_upstream_name(bad), "{bad}");
        }
    }

    #[test]
    fn finds_tokens_in_comma_lists() {
        let mut h = http::HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(header_has_token(&h, header::CONNECTION, "upgrade"));
        assert!(!header_has_token(&h, header::CONNECTION, "close"));
    }
}
