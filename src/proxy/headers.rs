//! Hop-by-hop headers (RFC 9110 §7.6.1) and request framing checks (RFC 9112 §3.2, §6.3).

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Version};

use super::ProxyError;

/// The hop-by-hop names removed from every message, besides `Connection`, `Upgrade` and the names
/// `Connection` lists: their bits in the mask [`strip_hop_by_hop`] builds.
const TE: u8 = 1;
const KEEP_ALIVE: u8 = 1 << 1;
const PROXY_CONNECTION: u8 = 1 << 2;
const PROXY_AUTHENTICATE: u8 = 1 << 3;
const PROXY_AUTHORIZATION: u8 = 1 << 4;
const TRAILER: u8 = 1 << 5;
const TRANSFER_ENCODING: u8 = 1 << 6;
const CONNECTION: u8 = 1 << 7;

/// The names of those bits, lowercase.
const HOP_BY_HOP_NAMES: [&str; 8] = [
    "te",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "trailer",
    "transfer-encoding",
    "connection",
];

/// The fixed names with their bits, `Connection` aside.
static FIXED: [(u8, HeaderName); 7] = [
    (TE, header::TE),
    (KEEP_ALIVE, HeaderName::from_static("keep-alive")),
    (
        PROXY_CONNECTION,
        HeaderName::from_static("proxy-connection"),
    ),
    (PROXY_AUTHENTICATE, header::PROXY_AUTHENTICATE),
    (PROXY_AUTHORIZATION, header::PROXY_AUTHORIZATION),
    (TRAILER, header::TRAILER),
    (TRANSFER_ENCODING, header::TRANSFER_ENCODING),
];

/// The bit of a hop-by-hop name (lowercase, as `HeaderName::as_str` gives it), `Upgrade` aside.
fn hop_by_hop_bit(name: &str) -> u8 {
    match name {
        "te" => TE,
        "keep-alive" => KEEP_ALIVE,
        "proxy-connection" => PROXY_CONNECTION,
        "proxy-authenticate" => PROXY_AUTHENTICATE,
        "proxy-authorization" => PROXY_AUTHORIZATION,
        "trailer" => TRAILER,
        "transfer-encoding" => TRANSFER_ENCODING,
        "connection" => CONNECTION,
        _ => 0,
    }
}

/// Removes the hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`,
/// `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE` (kept as `trailers` when the
/// client asked for trailers, which gRPC needs), `Trailer`, `Transfer-Encoding` and `Upgrade`.
///
/// Returns the `Upgrade` value that was removed, for a caller that is forwarding an upgrade.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    // One pass over the names, with no hashing, finds the ones present. Most messages carry none,
    // and most of the others only `Connection: keep-alive` (every node server sends it), so only
    // what is there is looked up and removed.
    let (mut present, mut upgrade) = (0u8, false);
    for name in headers.keys() {
        if name == header::UPGRADE {
            upgrade = true;
        } else {
            present |= hop_by_hop_bit(name.as_str());
        }
    }
    if present == 0 && !upgrade {
        return None;
    }
    // `Upgrade` and `TE: trailers` are read before `Connection: upgrade, te` (which RFC 9110
    // §10.1.4 asks TE senders for) would drop them.
    let upgrade = upgrade.then(|| headers.remove(header::UPGRADE)).flatten();
    let wants_trailers =
        present & TE != 0 && crate::util::header_has_token(headers, header::TE, "trailers");
    // Names listed in Connection go first: `Connection: x-foo` removes `x-foo`.
    if present & CONNECTION != 0 {
        remove_connection_listed(headers, false);
    }
    for (bit, name) in &FIXED {
        if present & bit != 0 {
            headers.remove(name);
        }
    }
    if wants_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    upgrade
}

/// Removes every header that `Connection` names, except the hop-by-hop names that have a rule of
/// their own (`Upgrade`, `TE`, `Keep-Alive`, …) and `Host`, an end-to-end header we rely on.
///
/// With `keep` set, `Connection` itself stays, listing only those kept tokens (`keep-alive`,
/// `upgrade`, `te`, `close`), so it no longer names anything a later layer adds: a layer that sets
/// headers of its own (`Forwarded`, `X-Forwarded-*`) calls this first, so that a client cannot have
/// them removed by listing them. Without `keep`, `Connection` is removed too.
pub(crate) fn remove_connection_listed(headers: &mut HeaderMap, keep: bool) {
    let Entry::Occupied(entry) = headers.entry(header::CONNECTION) else {
        return;
    };
    // The values are moved out before any other header is removed; the usual single value
    // without allocating.
    let (mut first, mut rest) = (None, Vec::new());
    for value in entry.remove_entry_mult().1 {
        if first.is_none() {
            first = Some(value);
        } else {
            rest.push(value);
        }
    }
    let mut kept = String::new();
    let mut dropped = false;
    for value in first.iter().chain(&rest) {
        let Ok(s) = value.to_str() else {
            dropped = true;
            continue;
        };
        for token in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let own_rule = ["upgrade", "host", "close"]
                .iter()
                .chain(&HOP_BY_HOP_NAMES)
                .any(|n| token.eq_ignore_ascii_case(n));
            if own_rule {
                if keep {
                    if !kept.is_empty() {
                        kept.push_str(", ");
                    }
                    kept.push_str(token);
                }
            } else {
                headers.remove(token);
                dropped = true;
            }
        }
    }
    if !keep {
        return;
    }
    if !dropped {
        for v in first.into_iter().chain(rest) {
            headers.append(header::CONNECTION, v);
        }
    } else if let (false, Ok(v)) = (kept.is_empty(), HeaderValue::from_str(&kept)) {
        headers.insert(header::CONNECTION, v);
    }
}

/// Joins several `Cookie` fields into one with `"; "` (RFC 9113 §8.2.3): HTTP/2 clients split
/// cookies, HTTP/1.1 servers expect one field.
pub(crate) fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let _ = first;
    let mut joined = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// Whether the request asks to switch protocols (`Connection: upgrade` + `Upgrade`), HTTP/1.1 only.
pub(crate) fn is_upgrade_request(parts: &Parts) -> bool {
    parts.version == Version::HTTP_11
        && parts.headers.contains_key(header::UPGRADE)
        && crate::util::header_has_token(&parts.headers, header::CONNECTION, "upgrade")
}

/// Refuses requests a proxy must not forward: ambiguous framing (smuggling) and a missing, repeated
/// or invalid `Host`.
pub(crate) fn check_request(parts: &Parts) -> Result<(), ProxyError> {
    let headers = &parts.headers;
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(ProxyError::BadRequest("several Host headers")),
        (Some(h), None) if !h.to_str().is_ok_and(valid_host) => {
            return Err(ProxyError::BadRequest("invalid Host header"));
        }
        (None, None) if parts.version == Version::HTTP_11 && parts.uri.authority().is_none() => {
            return Err(ProxyError::BadRequest("missing Host header"));
        }
        _ => {}
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(ProxyError::BadRequest(
                "both Content-Length and Transfer-Encoding are set",
            ));
        }
        let last_is_chunked = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty())
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
        if !last_is_chunked {
            return Err(ProxyError::BadRequest(
                "Transfer-Encoding must end with chunked",
            ));
        }
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        if lengths.any(|v| v != first) {
            return Err(ProxyError::BadRequest("conflicting Content-Length headers"));
        }
    }
    if parts.method == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not proxied"));
    }
    Ok(())
}

/// `host[:port]` (RFC 3986 §3.2.2, RFC 9112 §3.2): a bracketed IPv6 address or a non-empty
/// registered name or IPv4 address, then an optional port in range; no user info. Checked in place,
/// with no allocation, since every proxied request goes through it.
fn valid_host(s: &str) -> bool {
    let (host_ok, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((literal, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        (literal.parse::<std::net::Ipv6Addr>().is_ok(), port)
    } else {
        let (name, port) = match s.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (s, None),
        };
        let reg_name = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b);
        (!name.is_empty() && name.bytes().all(reg_name), port)
    };
    host_ok
        && port.is_none_or(|p| {
            p.is_empty()
                || (p.len() <= 5
                    && p.bytes().all(|b| b.is_ascii_digit())
                    && p.parse::<u16>().is_ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_fixed_and_connection_listed_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-foo"),
            ("connection", "X-Bar"),
            ("x-foo", "1"),
            ("x-bar", "2"),
            ("x-baz", "3"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic abc"),
            ("proxy-authenticate", "Basic"),
            ("te", "gzip"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
        ]);
        let up = strip_hop_by_hop(&mut h);
        assert_eq!(up.unwrap(), "websocket");
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["set-cookie", "x-baz"]);
        assert_eq!(h.get_all("set-cookie").iter().count(), 2);
    }

    #[test]
    fn bits_and_names_agree() {
        for (i, name) in HOP_BY_HOP_NAMES.iter().enumerate() {
            assert_eq!(hop_by_hop_bit(name), 1 << i, "{name}");
        }
        for (bit, name) in &FIXED {
            assert_eq!(hop_by_hop_bit(name.as_str()), *bit);
        }
        assert_eq!(hop_by_hop_bit("upgrade"), 0);
        assert_eq!(
            hop_by_hop_bit("Keep-Alive"),
            0,
            "HeaderName::as_str is lowercase"
        );
    }

    #[test]
    fn keep_alive_alone_and_close() {
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("content-length", "5"),
        ]);
        assert!(strip_hop_by_hop(&mut h).is_none());
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["content-length"]
        );
        let mut h = map(&[
            ("connection", "close, X-Foo"),
            ("x-foo", "1"),
            ("x-bar", "2"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-bar"]);
        // Nothing hop-by-hop: the map is left as it was.
        let mut h = map(&[("x-bar", "2"), ("te-x", "1")]);
        assert!(strip_hop_by_hop(&mut h).is_none());
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn te_trailers_is_kept() {
        let mut h = map(&[("te", "trailers, deflate;q=0.5")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h["te"], "trailers");
        // Even when Connection lists TE, as RFC 9110 asks of its senders.
        let mut h = map(&[("connection", "TE"), ("te", "trailers")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h["te"], "trailers");
        assert!(h.get("connection").is_none());
    }

    #[test]
    fn upgrade_is_returned_when_connection_lists_it() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(strip_hop_by_hop(&mut h).unwrap(), "websocket");
        assert!(h.is_empty());
    }

    #[test]
    fn connection_listed_names_go_and_connection_keeps_its_own_tokens() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Forwarded-For, Upgrade"),
            ("connection", "forwarded, TE"),
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
        ]);
        remove_connection_listed(&mut h, true);
        assert_eq!(h["connection"], "keep-alive, Upgrade, TE");
        assert!(!h.contains_key("x-forwarded-for"));
        assert!(!h.contains_key("forwarded"));
        assert_eq!(h["upgrade"], "websocket");
        // Headers added now are no longer named by Connection, so the proxy keeps them.
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        assert_eq!(strip_hop_by_hop(&mut h).unwrap(), "websocket");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["te"], "trailers");
        // Only listed names: Connection is removed, untouched values are kept as they were.
        let mut h = map(&[("connection", "x-a"), ("x-a", "1")]);
        remove_connection_listed(&mut h, true);
        assert!(h.is_empty());
        let mut h = map(&[("connection", "Keep-Alive,close")]);
        remove_connection_listed(&mut h, true);
        assert_eq!(h["connection"], "Keep-Alive,close");
    }

    #[test]
    fn connection_cannot_remove_host() {
        let mut h = map(&[("connection", "host"), ("host", "a")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h["host"], "a");
    }

    #[test]
    fn cookies_are_joined() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2")]);
        join_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().collect::<Vec<_>>(), ["a=1; b=2"]);
    }

    fn parts(version: Version, pairs: &[(&str, &str)]) -> Parts {
        let mut req = http::Request::new(());
        *req.version_mut() = version;
        *req.headers_mut() = map(pairs);
        req.into_parts().0
    }

    #[test]
    fn framing_and_host_checks() {
        assert!(check_request(&parts(Version::HTTP_11, &[("host", "a:1")])).is_ok());
        assert!(check_request(&parts(Version::HTTP_10, &[])).is_ok());
        assert!(check_request(&parts(Version::HTTP_11, &[("host", "[::1]:8080")])).is_ok());
        assert!(check_request(&parts(Version::HTTP_11, &[("host", "[::1]")])).is_ok());
        for good in [
            "localhost:",
            "5173.localhost",
            "127.0.0.1:65535",
            "xn--bcher-kva.example",
        ] {
            assert!(
                check_request(&parts(Version::HTTP_11, &[("host", good)])).is_ok(),
                "{good}"
            );
        }
        for bad in [
            vec![],
            vec![("host", "a"), ("host", "b")],
            vec![("host", "u@a")],
            vec![("host", "a:99999")],
            vec![("host", "a b")],
            vec![("host", ":80")],
            vec![("host", "a:1:2")],
            vec![("host", "[::1")],
            vec![("host", "[::1]x")],
            vec![("host", "[nope]:80")],
            vec![("host", "a/b")],
            vec![("host", "a:-1")],
            vec![
                ("host", "a"),
                ("content-length", "1"),
                ("transfer-encoding", "chunked"),
            ],
            vec![("host", "a"), ("transfer-encoding", "chunked, gzip")],
            vec![
                ("host", "a"),
                ("content-length", "1"),
                ("content-length", "2"),
            ],
        ] {
            assert!(
                check_request(&parts(Version::HTTP_11, &bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn detects_upgrades() {
        let p = parts(
            Version::HTTP_11,
            &[
                ("connection", "keep-alive, Upgrade"),
                ("upgrade", "websocket"),
            ],
        );
        assert!(is_upgrade_request(&p));
        let p = parts(Version::HTTP_11, &[("upgrade", "websocket")]);
        assert!(!is_upgrade_request(&p));
    }
}
