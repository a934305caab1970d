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
