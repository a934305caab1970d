//! The rewrite layer over real sockets: gateway (route → rewrite → proxy) in front of upstreams that
//! echo what they received or answer with redirects and cookies.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use sandbox_gateway::proxy::{ProxyBody, ReverseProxy};
use sandbox_gateway::rewrite::{
    ClientAddr, ClientIdentity, ClientTls, HostPolicy, Node, OriginPolicy, Rewrite, RewriteLayer,
    Trust,
};
use sandbox_gateway::route::{HostPattern, HostRoute, PathMount, Resolve, Route, RouteLayer};
use serde_json::Value;
use support::{client, echo_upstream, empty, full, serve_fn, within};
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt};

/// Serves `svc` on `addr` as a gateway does: every request carries the peer's [`ClientAddr`] (and
/// [`ClientTls`] when `tls`).
async fn gateway<S>(addr: &str, svc: S, tls: bool) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let listener = TcpListener::bind(addr).await.expect("bind loopback");
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let svc = svc.clone().map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ClientAddr(peer));
                if tls {
                    req.extensions_mut().insert(ClientTls);
                }
                req
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(
                        TokioIo::new(stream),
                        TowerToHyperService::new(svc),
                    )
                    .await;
            });
        }
    });
    local
}

fn stack<R: Resolve + Clone>(
    resolver: R,
    rewrite: RewriteLayer,
) -> Route<Rewrite<ReverseProxy>, R> {
    RouteLayer::new(resolver).layer(rewrite.layer(ReverseProxy::new()))
}

async fn send(gw: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
    let mut req = Request::get(format!("http://{gw}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    within(10, client().request(req.body(empty()).unwrap()))
        .await
        .expect("gateway answers")
}

/// The headers the echo upstream received, through the gateway.
async fn echoed(gw: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Value {
    let res = send(gw, path, headers).await;
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    serde_json::from_str(&support::text(res).await).expect("echo json")
}

/// One header as the upstream saw it: several fields joined with `", "`.
fn hdr(echo: &Value, name: &str) -> Option<String> {
    echo["headers"][name].as_array().map(|vals| {
        vals.iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    })
}

#[tokio::test]
async fn host_policies() {
    let up = echo_upstream("127.0.0.1:0").await;
    let p = up.port();
    for (policy, want) in [
        (HostPolicy::Preserve, None),
        (HostPolicy::Upstream, Some(format!("localhost:{p}"))),
        (
            HostPolicy::fixed("app.internal:9").unwrap(),
            Some("app.internal:9".to_owned()),
        ),
    ] {
        let mount = PathMount::strip("/proxy").allow_port(p);
        let gw = gateway(
            "127.0.0.1:0",
            stack(mount, RewriteLayer::new().host(policy.clone())),
            false,
        )
        .await;
        let echo = echoed(gw, &format!("/proxy/{p}/a"), &[]).await;
        let want = want.unwrap_or_else(|| gw.to_string());
        assert_eq!(
            hdr(&echo, "host").as_deref(),
            Some(want.as_str()),
            "{policy:?}"
        );
        // The browser's host always reaches the upstream in X-Forwarded-Host.
        assert_eq!(
            hdr(&echo, "x-forwarded-host"),
            Some(gw.to_string()),
            "{policy:?}"
        );
        assert_eq!(echo["path"], "/a");
    }
}

#[tokio::test]
async fn origin_policies_never_invent_an_origin() {
    let up = echo_upstream("127.0.0.1:0").await;
    let p = up.port();
    let upstream_origin = format!("http://localhost:{p}");
    let browser = "http://127.0.0.1:1";
    for (policy, sent, want) in [
        (
            OriginPolicy::PassThroughIfPresent,
            Some(browser),
            Some(browser),
        ),
        (OriginPolicy::PassThroughIfPresent, None, None),
        (
            OriginPolicy::RewriteToUpstream,
            Some(browser),
            Some(upstream_origin.as_str()),
        ),
        (OriginPolicy::RewriteToUpstream, None, None),
        (OriginPolicy::Drop, Some(browser), None),
        (OriginPolicy::Drop, None, None),
    ] {
        let mount = PathMount::strip("/proxy").allow_port(p);
        let gw = gateway(
            "127.0.0.1:0",
            stack(mount, RewriteLayer::new().origin(policy.clone())),
            false,
        )
        .await;
        let headers: Vec<(&str, &str)> = sent.iter().map(|o| ("origin", *o)).collect();
        let echo = echoed(gw, &format!("/proxy/{p}/"), &headers).await;
        assert_eq!(hdr(&echo, "origin").as_deref(), want, "{policy:?} {sent:?}");
        // Host is its own policy: untouched here.
        assert_eq!(hdr(&echo, "host"), Some(gw.to_string()));
    }
}

const SPOOFED: &[(&str, &str)] = &[
    ("x-forwarded-for", "203.0.113.66"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.example"),
    ("x-forwarded-prefix", "/outer"),
    (
        "forwarded",
        "for=203.0.113.66;host=evil.example;proto=https",
    ),
];

#[tokio::test]
async fn forwarded_headers_by_trust() {
    let up = echo_upstream("127.0.0.1:0").await;
    let p = up.port();
    for (name, trust, trusted) in [
        ("none", Trust::None, false),
        ("loopback", Trust::Loopback, true),
        ("10/8", Trust::networks(["10.0.0.0/8"]).unwrap(), false),
        (
            "127/8",
            Trust::networks(["127.0.0.0/8", "::1/128"]).unwrap(),
            true,
        ),
    ] {
        let mount = PathMount::strip("/proxy").allow_port(p);
        let gw = gateway(
            "127.0.0.1:0",
            stack(mount, RewriteLayer::new().trust(trust).forwarded(true)),
            false,
        )
        .await;
        let echo = echoed(gw, &format!("/proxy/{p}/x"), SPOOFED).await;
        let ours = format!("for=127.0.0.1;host=\"{gw}\";proto=http");
        let (xff, proto, host, prefix, fwd) = if trusted {
            (
                "203.0.113.66, 127.0.0.1".to_owned(),
                "https".to_owned(),
                "evil.example".to_owned(),
                format!("/outer/proxy/{p}"),
                format!("for=203.0.113.66;host=evil.example;proto=https, {ours}"),
            )
        } else {
            (
                "127.0.0.1".to_owned(),
                "http".to_owned(),
                gw.to_string(),
                format!("/proxy/{p}"),
                ours,
            )
        };
        assert_eq!(hdr(&echo, "x-forwarded-for"), Some(xff), "{name}");
        assert_eq!(hdr(&echo, "x-forwarded-proto"), Some(proto), "{name}");
        assert_eq!(hdr(&echo, "x-forwarded-host"), Some(host), "{name}");
        assert_eq!(hdr(&echo, "x-forwarded-prefix"), Some(prefix), "{name}");
        assert_eq!(hdr(&echo, "forwarded"), Some(fwd), "{name}");
    }
}

#[tokio::test]
async fn x_forwarded_by_default_and_forwarded_only_on_request() {
    // What nginx and node's proxies send: X-Forwarded-* only. A client's Forwarded is dropped
    // all the same, so an upstream that reads it first cannot be lied to.
    let up = echo_upstream("127.0.0.1:0").await;
    let p = up.port();
    let mount = PathMount::strip("/proxy").allow_port(p);
    let gw = gateway("127.0.0.1:0", stack(mount, RewriteLayer::new()), false).await;
    let echo = echoed(gw, &format!("/proxy/{p}/x"), SPOOFED).await;
    assert_eq!(hdr(&echo, "forwarded"), None);
    assert_eq!(hdr(&echo, "x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(hdr(&echo, "x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(hdr(&echo, "x-forwarded-host"), Some(gw.to_string()));
    assert_eq!(
        hdr(&echo, "x-forwarded-prefix"),
        Some(format!("/proxy/{p}"))
    );
}

#[tokio::test]
async fn unknown_peer_is_never_trusted() {
    // A server that inserts no ClientAddr: the client is unknown, even with loopback trusted.
    let up = echo_upstream("127.0.0.1:0").await;
    let p = up.port();
    let mount = PathMount::strip("/proxy").allow_port(p);
    let layer = RewriteLayer::new().trust(Trust::Loopback).forwarded(true);
    let gw = support::serve(stack(mount, layer)).await;
    let echo = echoed(gw, &format!("/proxy/{p}/"), SPOOFED).await;
    assert_eq!(hdr(&echo, "x-forwarded-for"), None);
    assert_eq!(hdr(&echo, "x-forwarded-host"), Some(gw.to_string()));
    assert_eq!(
        hdr(&echo, "forwarded"),
        Some(format!("for=unknown;host=\"{gw}\";proto=http"))
    );
}

/// `ClientIdentity::Hidden`: the client's address appears nowhere, while a trusted chain before
/// this hop is kept as it came.
#[tokio::test]
async fn hidden_client_identity_discloses_no_address() {
    let up = echo_upstream("127.0.0.1:0").await;
    let p = up.port();
    for (trust, xff, fwd_before) in [
        (Trust::None, None, String::new()),
        (
            Trust::Loopback,
            Some("203.0.113.66".to_owned()),
            "for=203.0.113.66;host=evil.example;proto=https, ".to_owned(),
        ),
    ] {
        let mount = PathMount::strip("/proxy").allow_port(p);
        let layer = RewriteLayer::new()
            .trust(trust)
            .forwarded(true)
            .client_identity(ClientIdentity::Hidden);
        let gw = gateway("127.0.0.1:0", stack(mount, layer), false).await;
        let echo = echoed(gw, &format!("/proxy/{p}/"), SPOOFED).await;
        assert_eq!(hdr(&echo, "x-forwarded-for"), xff);
        assert_eq!(
            hdr(&echo, "forwarded"),
            Some(format!("{fwd_before}for=unknown;host=\"{gw}\";proto=http"))
        );
    }
}

#[tokio::test]
async fn ipv6_client_is_quoted_in_forwarded() {
    let up = echo_upstream("127.0.0.1:0").await;
    let p = up.port();
    let mount = PathMount::strip("/proxy").allow_port(p);
    let layer = RewriteLayer::new()
        .forwarded(true)
        .client_identity(ClientIdentity::IpAndPort)
        .forwarded_by(Node::obfuscated("_gw").unwrap());
    let gw = gateway("[::1]:0", stack(mount, layer), true).await;
    let echo = echoed(gw, &format!("/proxy/{p}/"), &[]).await;
    let fwd = hdr(&echo, "forwarded").unwrap();
    let (for_part, rest) = fwd.split_once(';').unwrap();
    let client_port: u16 = for_part
        .strip_prefix("for=\"[::1]:")
        .and_then(|s| s.strip_suffix('"'))
        .expect("for=\"[::1]:port\"")
        .parse()
        .unwrap();
    assert_ne!(client_port, 0);
    assert_eq!(rest, format!("by=_gw;host=\"{gw}\";proto=https"));
    assert_eq!(hdr(&echo, "x-forwarded-for").as_deref(), Some("::1"));
    assert_eq!(hdr(&echo, "x-forwarded-proto").as_deref(), Some("https"));
}

#[tokio::test]
async fn switched_off_headers_are_not_sent_and_spoofs_still_dropped() {
    let up = echo_upstream("127.0.0.1:0").await;
    let p = up.port();
    let mount = PathMount::strip("/proxy").allow_port(p);
    let layer = RewriteLayer::new()
        .forwarded(false)
        .x_forwarded_for(false)
        .x_forwarded_proto(false)
        .x_forwarded_host(false)
        .x_forwarded_prefix(false);
    let gw = gateway("127.0.0.1:0", stack(mount, layer), false).await;
    let echo = echoed(gw, &format!("/proxy/{p}/"), SPOOFED).await;
    for name in [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-prefix",
    ] {
        assert_eq!(hdr(&echo, name), None, "{name}");
    }
    // assume_https reports https without a ClientTls extension.
    let mount = PathMount::strip("/proxy").allow_port(p);
    let gw = gateway(
        "127.0.0.1:0",
        stack(mount, RewriteLayer::new().assume_https(true)),
        false,
    )
    .await;
    let echo = echoed(gw, &format!("/proxy/{p}/"), &[]).await;
    assert_eq!(hdr(&echo, "x-forwarded-proto").as_deref(), Some("https"));
}

/// An upstream answering with redirects and cookies, whatever prefix it is mounted under.
async fn redirecting_upstream() -> SocketAddr {
    serve_fn(|req: Request<Incoming>| async move {
        let path = req.uri().path().to_owned();
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let prefix = req
            .headers()
            .get("x-forwarded-prefix")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut res = Response::new(full("moved"));
        *res.status_mut() = StatusCode::FOUND;
        let h = res.headers_mut();
        if path.ends_with("/redirect") {
            h.insert(header::LOCATION, "/login?next=%2Fa#top".parse().unwrap());
            h.insert(header::REFRESH, "0; url=/r".parse().unwrap());
            h.insert(header::CONTENT_LOCATION, "/c".parse().unwrap());
            h.append(
                header::SET_COOKIE,
                "sid=1; Path=/; HttpOnly".parse().unwrap(),
            );
            h.append(
                header::SET_COOKIE,
                "pref=2; Domain=localhost; Path=/app".parse().unwrap(),
            );
            h.append(header::SET_COOKIE, "plain=3".parse().unwrap());
        } else if path.ends_with("/abs") {
            h.insert(
                header::LOCATION,
                format!("http://{host}/next?q=1").parse().unwrap(),
            );
        } else if path.ends_with("/foreign") {
            h.insert(
                header::LOCATION,
                "https://accounts.example.org/auth".parse().unwrap(),
            );
        } else if path.ends_with("/under") {
            h.insert(header::LOCATION, format!("{prefix}/x").parse().unwrap());
        } else {
            *res.status_mut() = StatusCode::OK;
        }
        res
    })
    .await
}

fn header_list(res: &Response<Incoming>, name: header::HeaderName) -> Vec<String> {
    res.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn redirects_and_cookies_under_a_stripped_mount() {
    let up = redirecting_upstream().await;
    let p = up.port();
    let mount = PathMount::strip("/proxy").allow_port(p);
    let gw = gateway(
        "127.0.0.1:0",
        stack(mount.clone(), RewriteLayer::new()),
        false,
    )
    .await;
    let m = format!("/proxy/{p}");

    let res = send(gw, &format!("{m}/redirect"), &[]).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(
        header_list(&res, header::LOCATION),
        [format!("{m}/login?next=%2Fa#top")]
    );
    assert_eq!(
        header_list(&res, header::REFRESH),
        [format!("0; url={m}/r")]
    );
    assert_eq!(
        header_list(&res, header::CONTENT_LOCATION),
        [format!("{m}/c")]
    );
    assert_eq!(
        header_list(&res, header::SET_COOKIE),
        [
            format!("sgw.proxy.{p}~sid=1; Path={m}/; HttpOnly"),
            format!("sgw.proxy.{p}~pref=2; Path={m}/app"),
            format!("sgw.proxy.{p}~plain=3; Path={m}/"),
        ]
    );

    // The browser's Host preserved: the upstream's absolute URL names the gateway.
    let res = send(gw, &format!("{m}/abs"), &[]).await;
    assert_eq!(
        header_list(&res, header::LOCATION),
        [format!("http://{gw}{m}/next?q=1")]
    );
    // Host rewritten to the upstream: its absolute URL maps to a path under the mount.
    let gw2 = gateway(
        "127.0.0.1:0",
        stack(mount, RewriteLayer::new().host(HostPolicy::Upstream)),
        false,
    )
    .await;
    let res = send(gw2, &format!("{m}/abs"), &[]).await;
    assert_eq!(
        header_list(&res, header::LOCATION),
        [format!("{m}/next?q=1")]
    );

    let res = send(gw, &format!("{m}/foreign"), &[]).await;
    assert_eq!(
        header_list(&res, header::LOCATION),
        ["https://accounts.example.org/auth"]
    );
    // An upstream that already knows its prefix (from X-Forwarded-Prefix) is left alone.
    let res = send(gw, &format!("{m}/under"), &[]).await;
    assert_eq!(header_list(&res, header::LOCATION), [format!("{m}/x")]);

    // Switched off, the upstream's headers pass as they are.
    let mount = PathMount::strip("/proxy").allow_port(p);
    let gw3 = gateway(
        "127.0.0.1:0",
        stack(mount, RewriteLayer::new().rewrite_responses(false)),
        false,
    )
    .await;
    let res = send(gw3, &format!("{m}/redirect"), &[]).await;
    assert_eq!(
        header_list(&res, header::LOCATION),
        ["/login?next=%2Fa#top"]
    );
    assert_eq!(
        header_list(&res, header::SET_COOKIE),
        [
            format!("sgw.proxy.{p}~sid=1; Path=/; HttpOnly"),
            format!("sgw.proxy.{p}~pref=2; Path=/app"),
            format!("sgw.proxy.{p}~plain=3"),
        ]
    );
}

#[tokio::test]
async fn redirects_and_cookies_under_a_kept_mount() {
    let up = redirecting_upstream().await;
    let p = up.port();
    let mount = PathMount::keep("/absproxy").allow_port(p);
    let gw = gateway("127.0.0.1:0", stack(mount, RewriteLayer::new()), false).await;
    let m = format!("/absproxy/{p}");

    let res = send(gw, &format!("{m}/redirect"), &[]).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(
        header_list(&res, header::LOCATION),
        [format!("{m}/login?next=%2Fa#top")]
    );
    assert_eq!(
        header_list(&res, header::SET_COOKIE),
        [
            format!("sgw.absproxy.{p}~sid=1; Path={m}/; HttpOnly"),
            format!("sgw.absproxy.{p}~pref=2; Path={m}/app"),
            // The upstream saw `/absproxy/{p}/redirect`: its default path is the mount itself.
            format!("sgw.absproxy.{p}~plain=3; Path={m}"),
        ]
    );
    let res = send(gw, &format!("{m}/under"), &[]).await;
    assert_eq!(header_list(&res, header::LOCATION), [format!("{m}/x")]);
    let res = send(gw, &format!("{m}/abs"), &[]).await;
    assert_eq!(
        header_list(&res, header::LOCATION),
        [format!("http://{gw}{m}/next?q=1")]
    );
}

#[tokio::test]
async fn host_pattern_routes_to_the_port_in_the_host() {
    let up = echo_upstream("127.0.0.1:0").await;
    let p = up.port();
    let route = HostRoute::ports("{port}.localhost".parse::<HostPattern>().unwrap(), "port")
        .unwrap()
        .allow_port(p);
    let gw = gateway("127.0.0.1:0", stack(route, RewriteLayer::new()), false).await;

    let host = format!("{p}.localhost:{}", gw.port());
    let echo = echoed(gw, "/hello?x=1", &[("host", &host)]).await;
    assert_eq!(echo["path"], "/hello?x=1");
    assert_eq!(hdr(&echo, "host"), Some(host.clone()));
    assert_eq!(hdr(&echo, "x-forwarded-host"), Some(host));
    assert_eq!(hdr(&echo, "x-forwarded-prefix"), None);

    // Case and a trailing dot do not matter.
    let echo = echoed(gw, "/", &[("host", &format!("{p}.LocalHost."))]).await;
    assert_eq!(echo["path"], "/");

    for (host, status) in [
        (format!("{p}.localhost.evil.com"), StatusCode::NOT_FOUND),
        (format!("x{p}.localhost"), StatusCode::NOT_FOUND),
        ("1.localhost".to_owned(), StatusCode::FORBIDDEN),
        ("a b".to_owned(), StatusCode::BAD_REQUEST),
    ] {
        let res = send(gw, "/", &[("host", &host)]).await;
        assert_eq!(res.status(), status, "{host}");
    }
}

/// A WebSocket upstream that first reports the Origin it received, then echoes.
async fn ws_upstream() -> SocketAddr {
    use axum::extract::ws::{Message as AxMessage, WebSocket, WebSocketUpgrade};
    use axum::routing::any;

    async fn ws(up: WebSocketUpgrade, headers: http::HeaderMap) -> axum::response::Response {
        let origin = headers
            .get(header::ORIGIN)
            .map(|o| o.to_str().unwrap_or("?").to_owned())
            .unwrap_or_else(|| "none".to_owned());
        up.on_upgrade(move |mut socket: WebSocket| async move {
            if socket
                .send(AxMessage::Text(format!("origin:{origin}").into()))
                .await
                .is_err()
            {
                return;
            }
            while let Some(Ok(AxMessage::Text(t))) = socket.recv().await {
                let reply = format!("echo:{}", t.as_str());
                if socket.send(AxMessage::Text(reply.into())).await.is_err() {
                    break;
                }
            }
        })
    }
    support::serve(axum::Router::new().route("/ws", any(ws))).await
}

#[tokio::test]
async fn websockets_pass_and_spoofed_hosts_cannot_fool_the_origin_check() {
    use futures_util::{SinkExt, StreamExt};
    use sandbox_gateway::proxy::OriginCheck;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};

    let up = ws_upstream().await;
    let p = up.port();
    let mount = PathMount::strip("/proxy").allow_port(p);
    let gw = gateway("127.0.0.1:0", stack(mount, RewriteLayer::new()), false).await;
    let url = format!("ws://{gw}/proxy/{p}/ws");

    // The browser's own origin: admitted by the proxy's same-origin check, passed through.
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", format!("http://{gw}").parse().unwrap());
    let (mut ws, _) = within(10, tokio_tungstenite::connect_async(req))
        .await
        .expect("upgrade admitted");
    let first = within(10, ws.next()).await.unwrap().unwrap();
    assert_eq!(
        first.into_text().unwrap().as_str(),
        format!("origin:http://{gw}")
    );
    ws.send(Message::text("hi")).await.unwrap();
    let reply = within(10, ws.next()).await.unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "echo:hi");
    ws.close(None).await.unwrap();

    // A client claiming another host in X-Forwarded-Host: replaced, so the check still refuses.
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    req.headers_mut()
        .insert("x-forwarded-host", "evil.example".parse().unwrap());
    match within(10, tokio_tungstenite::connect_async(req)).await {
        Err(WsError::Http(res)) => assert_eq!(res.status(), StatusCode::FORBIDDEN),
        other => panic!("expected 403, got {other:?}"),
    }

    // Origin rewritten to the upstream's, which the proxy is told to allow.
    let mount = PathMount::strip("/proxy").allow_port(p);
    let proxy = ReverseProxy::builder()
        .websocket_origin(OriginCheck::allow([format!("http://localhost:{p}")]))
        .build()
        .unwrap();
    let svc = RouteLayer::new(mount).layer(
        RewriteLayer::new()
            .origin(OriginPolicy::RewriteToUpstream)
            .layer(proxy),
    );
    let gw2 = gateway("127.0.0.1:0", svc, false).await;
    let mut req = format!("ws://{gw2}/proxy/{p}/ws")
        .as_str()
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", format!("http://{gw2}").parse().unwrap());
    let (mut ws, _) = within(10, tokio_tungstenite::connect_async(req))
        .await
        .expect("upgrade admitted");
    let first = within(10, ws.next()).await.unwrap().unwrap();
    assert_eq!(
        first.into_text().unwrap().as_str(),
        format!("origin:http://localhost:{p}")
    );
    ws.close(None).await.unwrap();
}

/// A client that lists the gateway's own headers in `Connection` does not get them removed: the
/// upstream still receives the values the gateway set, and none of the spoofed ones.
#[tokio::test]
async fn connection_cannot_remove_the_gateways_headers() {
    let up = echo_upstream("127.0.0.1:0").await;
    let p = up.port();
    let mount = PathMount::strip("/proxy").allow_port(p);
    // `Forwarded` is sent on request only: asked for, so that it is among the headers tried.
    let layer = RewriteLayer::new().forwarded(true);
    let gw = gateway("127.0.0.1:0", stack(mount, layer), false).await;
    let mut headers = vec![(
        "connection",
        "keep-alive, X-Forwarded-For, Forwarded, X-Forwarded-Host, X-Forwarded-Proto, \
         X-Forwarded-Prefix",
    )];
    headers.extend_from_slice(SPOOFED);
    let echo = echoed(gw, &format!("/proxy/{p}/x"), &headers).await;
    assert_eq!(hdr(&echo, "x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(hdr(&echo, "x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(hdr(&echo, "x-forwarded-host"), Some(gw.to_string()));
    assert_eq!(
        hdr(&echo, "x-forwarded-prefix"),
        Some(format!("/proxy/{p}"))
    );
    assert_eq!(
        hdr(&echo, "forwarded"),
        Some(format!("for=127.0.0.1;host=\"{gw}\";proto=http"))
    );
    assert_eq!(hdr(&echo, "connection"), None);
}

/// An upstream whose every answer tries to change browser state outside its mount, and that
/// reports the cookies it received.
async fn greedy_upstream() -> SocketAddr {
    serve_fn(|req: Request<Incoming>| async move {
        let cookies: Vec<String> = req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let mut res = Response::new(full(cookies.join(" | ")));
        let h = res.headers_mut();
        for c in [
            "session=SANDBOX; Path=/",
            "sgw_ide_demo=forged; Path=/__ide/demo/",
            "__Secure-sgw_ide_demo=forged; Secure; Path=/__ide/demo/",
            "own=1; Domain=localhost",
            "__Host-id=2; Secure; Path=/",
            "=nameless",
        ] {
            h.append(header::SET_COOKIE, c.parse().unwrap());
        }
        h.insert(
            "clear-site-data",
            "\"cookies\", \"storage\"".parse().unwrap(),
        );
        h.insert("service-worker-allowed", "/".parse().unwrap());
        res
    })
    .await
}

/// The cookie firewall and the response filter over real sockets, HTTP/1.1 and HTTP/2 (several
/// `Cookie` fields), on a path mount and on a host route.
#[tokio::test]
async fn sandboxes_see_only_their_own_cookies_and_cannot_touch_the_browsers() {
    let up = greedy_upstream().await;
    let p = up.port();
    let mount = PathMount::strip("/proxy").allow_port(p);
    let gw = gateway("127.0.0.1:0", stack(mount, RewriteLayer::new()), false).await;
    let ns = format!("sgw.proxy.{p}~");

    let res = send(gw, &format!("/proxy/{p}/"), &[]).await;
    assert_eq!(
        header_list(&res, header::SET_COOKIE),
        [
            format!("{ns}session=SANDBOX; Path=/proxy/{p}/"),
            format!("{ns}own=1; Path=/proxy/{p}/"),
            format!("__Secure-{ns}__Host-id=2; Secure; Path=/proxy/{p}/"),
        ]
    );
    assert!(res.headers().get("clear-site-data").is_none());
    assert_eq!(
        header_list(&res, "service-worker-allowed".parse().unwrap()),
        [format!("/proxy/{p}/")]
    );

    // What the browser sends back: the host's session, the gateway's cookie, another sandbox's
    // and this one's, split over two fields as HTTP/2 browsers do.
    let h2 = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    for (name, http2) in [("HTTP/1.1", false), ("HTTP/2", true)] {
        let req = Request::get(format!("http://{gw}/proxy/{p}/"))
            .header(header::COOKIE, format!("session=HOST; {ns}session=SANDBOX"))
            .header(
                header::COOKIE,
                format!("sgw_ide_demo=T; sgw.proxy.1~x=other; __Secure-{ns}__Host-id=2; {ns}__Host-id=forged"),
            )
            .body(empty())
            .unwrap();
        let res = if http2 {
            within(10, h2.request(req)).await.unwrap()
        } else {
            within(10, client().request(req)).await.unwrap()
        };
        assert_eq!(
            support::text(res).await,
            "session=SANDBOX; __Host-id=2",
            "{name}"
        );
    }

    // The same through a WebSocket handshake (the upstream answers it 200, relayed as it is).
    let req = Request::get(format!("http://{gw}/proxy/{p}/ws"))
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
        .header(header::COOKIE, format!("session=HOST; {ns}session=SANDBOX"))
        .body(empty())
        .unwrap();
    let res = within(10, client().request(req)).await.unwrap();
    assert_eq!(support::text(res).await, "session=SANDBOX");

    // A host route is namespaced too: a parent-domain cookie of the host never arrives.
    let route = HostRoute::ports("{port}.localhost".parse::<HostPattern>().unwrap(), "port")
        .unwrap()
        .allow_port(p);
    let gw = gateway("127.0.0.1:0", stack(route, RewriteLayer::new()), false).await;
    let host = format!("{p}.localhost:{}", gw.port());
    let res = send(
        gw,
        "/",
        &[
            ("host", &host),
            ("cookie", "session=HOST; sgw~session=SANDBOX"),
        ],
    )
    .await;
    assert_eq!(
        header_list(&res, header::SET_COOKIE),
        [
            "sgw~session=SANDBOX; Path=/",
            "sgw~own=1",
            "__Host-sgw~__Host-id=2; Secure; Path=/",
        ]
    );
    assert!(res.headers().get("clear-site-data").is_none());
    assert_eq!(
        header_list(&res, "service-worker-allowed".parse().unwrap()),
        ["/"]
    );
    assert_eq!(support::text(res).await, "session=SANDBOX");
}
