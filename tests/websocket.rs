//! WebSockets and other HTTP/1.1 upgrades through the reverse proxy, over loopback: real
//! tokio-tungstenite clients, the proxy served by hyper-util or axum, real tokio-tungstenite servers
//! upstream.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use sandbox_gateway::proxy::{OriginCheck, ReverseProxy, UpgradeProtocols};
use sandbox_gateway::route::{PathMount, RouteLayer};
use support::{client, closed_port_addr, empty, full, serve, serve_fn, text, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Barrier, RwLock, RwLockReadGuard};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response as ClientResponse;
use tokio_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request as ServerRequest, Response as ServerResponse,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tower::ServiceBuilder;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The test that counts file descriptors runs alone; the others share the process.
static EXCLUSIVE: LazyLock<RwLock<()>> = LazyLock::new(|| RwLock::new(()));

async fn shared() -> RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().await
}

// ---------------------------------------------------------------------------------------------
// Upstreams.

/// What a WebSocket upstream saw.
#[derive(Default)]
struct Seen {
    /// TCP connections accepted.
    accepts: AtomicUsize,
    /// Path and headers of every handshake.
    handshakes: Mutex<Vec<(String, HeaderMap)>>,
    /// Close frames received from clients: code and reason.
    closes: Mutex<Vec<(u16, String)>>,
}

struct WsUpstream {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

/// A tokio-tungstenite server. It picks the subprotocol `chat.v2` when offered, adds
/// `x-upstream-id: {id}` to its 101, and answers:
/// - `who` → its id;
/// - `close-me` → a close frame 4001 "bye from upstream";
/// - `ping-me` → a ping "srv"; the pong that comes back is reported as the text `pong:{payload}`;
/// - `die` → drops the connection without a close frame;
/// - any other text or binary message → echoed.
async fn ws_upstream(id: &str) -> WsUpstream {
    ws_upstream_on("127.0.0.1:0", id).await
}

/// [`ws_upstream`] bound to `addr`.
async fn ws_upstream_on(addr: &str, id: &str) -> WsUpstream {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let id: Arc<str> = id.into();
    let all = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            all.accepts.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(ws_session(stream, all.clone(), id.clone()));
        }
    });
    WsUpstream { addr, seen }
}

// The handshake callback's error type is tungstenite's, large by its design.
#[allow(clippy::result_large_err)]
async fn ws_session(stream: TcpStream, seen: Arc<Seen>, id: Arc<str>) {
    let record = seen.clone();
    let id_header = id.clone();
    let callback = move |req: &ServerRequest,
                         mut res: ServerResponse|
          -> Result<ServerResponse, ErrorResponse> {
        record
            .handshakes
            .lock()
            .unwrap()
            .push((req.uri().path().to_owned(), req.headers().clone()));
        let offered = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if offered.split(',').any(|p| p.trim() == "chat.v2") {
            res.headers_mut()
                .insert("sec-websocket-protocol", "chat.v2".parse().unwrap());
        }
        res.headers_mut()
            .insert("x-upstream-id", id_header.parse().unwrap());
        Ok(res)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        let reply = match msg {
            Message::Text(t) => match t.as_str() {
                "who" => Message::text(&*id),
                "close-me" => Message::Close(Some(CloseFrame {
                    code: CloseCode::from(4001),
                    reason: "bye from upstream".into(),
                })),
                "ping-me" => Message::Ping(Bytes::from_static(b"srv")),
                "die" => return,
                _ => Message::Text(t),
            },
            Message::Binary(b) => Message::Binary(b),
            Message::Pong(p) => Message::text(format!("pong:{}", String::from_utf8_lossy(&p))),
            Message::Close(Some(frame)) => {
                seen.closes
                    .lock()
                    .unwrap()
                    .push((frame.code.into(), frame.reason.as_str().to_owned()));
                continue;
            }
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            return;
        }
    }
}

/// An HTTP upstream that refuses upgrades: `/forbidden` with 403, anything else with 400, each with
/// a body of its own. Counts the requests it answered.
async fn refusing_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let addr = serve_fn(move |req: Request<Incoming>| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            let (status, body) = if req.uri().path() == "/forbidden" {
                (StatusCode::FORBIDDEN, "websockets are not for you")
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    "malformed handshake, says upstream",
                )
            };
            let mut res = Response::new(full(body));
            *res.status_mut() = status;
            res.headers_mut()
                .insert("x-refused-by", "upstream".parse().unwrap());
            res
        }
    })
    .await;
    (addr, count)
}

// ---------------------------------------------------------------------------------------------
// The gateway and clients.

/// `/proxy/{port}/…` → `127.0.0.1:{port}` for the given ports, served by hyper-util (HTTP/1.1 and
/// HTTP/2, upgrades on).
async fn gateway(proxy: ReverseProxy, ports: impl IntoIterator<Item = u16>) -> SocketAddr {
    let mount = PathMount::strip("/proxy")
        .allow_ports(ports)
        .upstream_host("127.0.0.1");
    serve(
        ServiceBuilder::new()
            .layer(RouteLayer::new(mount))
            .service(proxy),
    )
    .await
}

fn ws_url(gw: SocketAddr, port: u16, path: &str) -> String {
    format!("ws://{gw}/proxy/{port}{path}")
}

async fn connect(url: &str) -> (Ws, ClientResponse) {
    within(10, tokio_tungstenite::connect_async(url))
        .await
        .unwrap_or_else(|e| panic!("handshake with {url} failed: {e:?}"))
}

async fn connect_with_origin(url: &str, origin: &str) -> Result<(Ws, ClientResponse), WsError> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("origin", origin.parse().unwrap());
    within(10, tokio_tungstenite::connect_async(req)).await
}

/// The status of a refused handshake.
fn refused_status(r: Result<(Ws, ClientResponse), WsError>) -> StatusCode {
    match r {
        Err(WsError::Http(res)) => res.status(),
        Err(e) => panic!("expected an HTTP answer, got {e}"),
        Ok((_, res)) => panic!("expected a refusal, got {}", res.status()),
    }
}

/// The next message, failing on an error or the end of the stream.
async fn next_msg(ws: &mut Ws) -> Message {
    within(10, ws.next())
        .await
        .expect("stream open")
        .expect("message")
}

async fn roundtrip(ws: &mut Ws, text: &str) -> String {
    ws.send(Message::text(text)).await.unwrap();
    match next_msg(ws).await {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Reads until the stream ends (close, EOF or error); returns the close frame seen, if any. Fails on
/// a data message.
async fn read_to_end(ws: &mut Ws) -> Option<CloseFrame> {
    within(10, async {
        let mut close = None;
        for _ in 0..16 {
            match ws.next().await {
                None | Some(Err(_)) => return close,
                Some(Ok(Message::Close(f))) => close = f,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(other)) => panic!("unexpected message {other:?}"),
            }
        }
        panic!("the stream did not end");
    })
    .await
}

/// Waits (bounded) until the proxy has no open tunnel.
async fn drained(proxy: &ReverseProxy) {
    for _ in 0..1000 {
        if proxy.open_tunnels() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} tunnels still open", proxy.open_tunnels());
}

/// A hand-built upgrade request for the hyper client (which reads whole bodies, unlike a WebSocket
/// client's handshake).
fn upgrade_request(url: &str) -> Request<support::TestBody> {
    Request::get(url)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(empty())
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// The handshake reaches the upstream with its `Sec-WebSocket-*` fields intact, the upstream's 101
/// comes back with its headers (subprotocol included), and every kind of message crosses both
/// ways: text, binary, 1 MiB messages, pings and pongs from either side, the upstream's close code.
#[tokio::test]
async fn messages_of_every_kind_cross_the_tunnel() {
    let _g = shared().await;
    let up = ws_upstream("u1").await;
    let proxy = ReverseProxy::new();
    let gw = gateway(proxy.clone(), [up.addr.port()]).await;

    let url = ws_url(gw, up.addr.port(), "/chat?room=1");
    let mut req = url.as_str().into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert(
        "sec-websocket-protocol",
        "chat.v1, chat.v2".parse().unwrap(),
    );
    h.insert(
        "sec-websocket-extensions",
        "x-custom; level=3".parse().unwrap(),
    );
    h.insert("origin", format!("http://{gw}").parse().unwrap());
    let key = h["sec-websocket-key"].clone();
    let (mut ws, res) = within(10, tokio_tungstenite::connect_async(req))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(res.headers()["sec-websocket-protocol"], "chat.v2");
    assert_eq!(res.headers()["x-upstream-id"], "u1");
    assert!(res.headers().contains_key("sec-websocket-accept"));
    assert_eq!(proxy.open_tunnels(), 1);

    {
        let seen = up.seen.handshakes.lock().unwrap();
        let (path, headers) = &seen[0];
        assert_eq!(path, "/chat");
        assert_eq!(headers["sec-websocket-key"], key);
        assert_eq!(headers["sec-websocket-version"], "13");
        assert_eq!(headers["sec-websocket-protocol"], "chat.v1, chat.v2");
        assert_eq!(headers["sec-websocket-extensions"], "x-custom; level=3");
        assert_eq!(headers["upgrade"], "websocket");
        assert_eq!(headers["origin"], format!("http://{gw}").as_str());
    }

    assert_eq!(roundtrip(&mut ws, "hello").await, "hello");
    assert_eq!(roundtrip(&mut ws, "who").await, "u1");

    let big: Vec<u8> = (0..1usize << 20).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    match next_msg(&mut ws).await {
        Message::Binary(b) => assert!(b[..] == big[..], "1 MiB binary message altered"),
        other => panic!("expected binary, got {other:?}"),
    }
    let big_text: String = (0..1usize << 20)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    assert!(roundtrip(&mut ws, &big_text).await == big_text);

    ws.send(Message::Ping(Bytes::from_static(b"p1")))
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut ws).await,
        Message::Pong(Bytes::from_static(b"p1"))
    );

    ws.send(Message::text("ping-me")).await.unwrap();
    assert_eq!(
        next_msg(&mut ws).await,
        Message::Ping(Bytes::from_static(b"srv"))
    );
    assert_eq!(next_msg(&mut ws).await, Message::text("pong:srv"));

    ws.send(Message::text("close-me")).await.unwrap();
    let close = read_to_end(&mut ws).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 4001);
    assert_eq!(close.reason.as_str(), "bye from upstream");
    drop(ws);
    drained(&proxy).await;
}

/// A close frame from the client reaches the upstream with its code and reason, and the upstream's
/// echo of it comes back.
#[tokio::test]
async fn client_close_code_reaches_the_upstream() {
    let _g = shared().await;
    let up = ws_upstream("u1").await;
    let proxy = ReverseProxy::new();
    let gw = gateway(proxy.clone(), [up.addr.port()]).await;
    let (mut ws, _) = connect(&ws_url(gw, up.addr.port(), "/")).await;
    assert_eq!(roundtrip(&mut ws, "before close").await, "before close");
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4002),
        reason: "client bye".into(),
    }))
    .await
    .unwrap();
    let echoed = read_to_end(&mut ws).await.expect("the close echoed");
    assert_eq!(u16::from(echoed.code), 4002);
    assert_eq!(
        up.seen.closes.lock().unwrap().as_slice(),
        [(4002, "client bye".to_owned())]
    );
    drop(ws);
    drained(&proxy).await;
}

/// 200 upgrades at once, spread over 10 upstreams and routed per request by the port in the path:
/// every client only ever hears its own upstream.
#[tokio::test]
async fn concurrent_upgrades_reach_their_own_targets() {
    let _g = shared().await;
    let mut ups = Vec::new();
    for i in 0..10 {
        ups.push(ws_upstream(&format!("up-{i}")).await);
    }
    let ports: Vec<u16> = ups.iter().map(|u| u.addr.port()).collect();
    let proxy = ReverseProxy::new();
    let gw = gateway(proxy.clone(), ports.iter().copied()).await;

    const CLIENTS: usize = 200;
    let opened = Arc::new(Barrier::new(CLIENTS + 1));
    let counted = Arc::new(Barrier::new(CLIENTS + 1));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (port, id) = (ports[c % 10], format!("up-{}", c % 10));
        let (opened, counted) = (opened.clone(), counted.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ws, res) = connect(&ws_url(gw, port, "/ws")).await;
            assert_eq!(res.headers()["x-upstream-id"], id.as_str());
            opened.wait().await;
            counted.wait().await;
            for round in 0..5 {
                assert_eq!(roundtrip(&mut ws, "who").await, id, "client {c}");
                let msg = format!("client {c} round {round}");
                assert_eq!(roundtrip(&mut ws, &msg).await, msg);
            }
            ws.close(None).await.unwrap();
            read_to_end(&mut ws).await;
        }));
    }
    within(60, opened.wait()).await;
    assert_eq!(proxy.open_tunnels(), CLIENTS, "all tunnels open at once");
    within(60, counted.wait()).await;
    for t in tasks {
        within(60, t).await.expect("client task");
    }
    for up in &ups {
        assert_eq!(up.seen.accepts.load(Ordering::SeqCst), CLIENTS / 10);
    }
    drained(&proxy).await;
}

/// An upstream that answers the upgrade with anything but 101 has that answer passed through:
/// status, headers and body, at once (no hang).
#[tokio::test]
async fn refused_upgrades_pass_through() {
    let _g = shared().await;
    let (up, answered) = refusing_upstream().await;
    let proxy = ReverseProxy::new();
    let gw = gateway(proxy.clone(), [up.port()]).await;

    for (path, status, body) in [
        (
            "/forbidden",
            StatusCode::FORBIDDEN,
            "websockets are not for you",
        ),
        (
            "/ws",
            StatusCode::BAD_REQUEST,
            "malformed handshake, says upstream",
        ),
    ] {
        let url = ws_url(gw, up.port(), path);
        let r = within(10, tokio_tungstenite::connect_async(url.as_str())).await;
        assert_eq!(refused_status(r), status, "{path}");

        let http_url = url.replacen("ws://", "http://", 1);
        let res = within(10, client().request(upgrade_request(&http_url)))
            .await
            .unwrap();
        assert_eq!(res.status(), status);
        assert_eq!(res.headers()["x-refused-by"], "upstream");
        assert!(res.headers().get("upgrade").is_none());
        assert_eq!(within(10, text(res)).await, body);
    }
    assert_eq!(answered.load(Ordering::SeqCst), 4);
    assert_eq!(proxy.open_tunnels(), 0);
}

/// An upstream that is down: 502 before any 101.
#[tokio::test]
async fn upstream_down_is_502() {
    let _g = shared().await;
    let down = closed_port_addr().await;
    let proxy = ReverseProxy::new();
    let gw = gateway(proxy.clone(), [down.port()]).await;
    let url = ws_url(gw, down.port(), "/ws");
    let r = within(15, tokio_tungstenite::connect_async(url.as_str())).await;
    assert_eq!(refused_status(r), StatusCode::BAD_GATEWAY);

    let http_url = url.replacen("ws://", "http://", 1);
    let res = within(15, client().request(upgrade_request(&http_url)))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let body = text(res).await;
    assert!(body.contains(&down.port().to_string()), "{body}");
    assert_eq!(proxy.open_tunnels(), 0);
}

/// An upstream that accepts the connection and never answers the upgrade: the response-head
/// timeout answers 504, no tunnel is left.
#[tokio::test]
async fn silent_upstream_times_out_with_504() {
    let _g = shared().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let proxy = ReverseProxy::builder()
        .response_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let gw = gateway(proxy.clone(), [port]).await;
    let r = within(
        10,
        tokio_tungstenite::connect_async(ws_url(gw, port, "/ws")),
    )
    .await;
    assert_eq!(refused_status(r), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(proxy.open_tunnels(), 0);
}

/// An upstream on the IPv6 loopback only (as Vite binds `localhost` on modern Node), reached
/// through the mount's default host `localhost`: both loopbacks are tried.
#[tokio::test]
async fn ipv6_only_upstream_through_localhost() {
    let _g = shared().await;
    let up = ws_upstream_on("[::1]:0", "v6").await;
    let proxy = ReverseProxy::new();
    let gw = serve(
        ServiceBuilder::new()
            .layer(RouteLayer::new(
                PathMount::strip("/proxy").allow_port(up.addr.port()),
            ))
            .service(proxy.clone()),
    )
    .await;
    let (mut ws, _) = connect(&ws_url(gw, up.addr.port(), "/ws")).await;
    assert_eq!(roundtrip(&mut ws, "who").await, "v6");
    ws.close(None).await.unwrap();
    read_to_end(&mut ws).await;
    drop(ws);
    drained(&proxy).await;
}

/// An upstream that drops the connection mid-tunnel: the client sees its connection end, and the
/// tunnel is gone once the client lets go.
#[tokio::test]
async fn upstream_dying_mid_tunnel_closes_the_client() {
    let _g = shared().await;
    let up = ws_upstream("u1").await;
    let proxy = ReverseProxy::new();
    let gw = gateway(proxy.clone(), [up.addr.port()]).await;
    let (mut ws, _) = connect(&ws_url(gw, up.addr.port(), "/")).await;
    assert_eq!(roundtrip(&mut ws, "still there?").await, "still there?");
    ws.send(Message::text("die")).await.unwrap();
    assert!(
        read_to_end(&mut ws).await.is_none(),
        "no close frame was sent"
    );
    drop(ws);
    drained(&proxy).await;
}

/// Half-close crosses the tunnel both ways, for any allowed upgrade protocol (the proxy never
/// parses what follows the 101): the client shuts its write side, the upstream reads to the end and still
/// answers, then closes; the client reads the answer and the end.
#[tokio::test]
async fn half_close_propagates_both_ways() {
    let _g = shared().await;
    let up = serve_fn(|mut req: Request<Incoming>| async move {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on.await else { return };
            let mut io = hyper_util::rt::TokioIo::new(upgraded);
            let mut got = Vec::new();
            if io.read_to_end(&mut got).await.is_err() {
                return;
            }
            let reply = format!("read {} bytes, last {:?}", got.len(), got.last());
            let _ = io.write_all(reply.as_bytes()).await;
            let _ = io.shutdown().await;
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "x-count")
            .body(empty())
            .unwrap()
    })
    .await;
    let head = |gw: SocketAddr| {
        format!(
            "GET /proxy/{}/count HTTP/1.1\r\nHost: {gw}\r\nConnection: upgrade\r\nUpgrade: x-count\r\n\r\n",
            up.port()
        )
    };
    // Not an allowed protocol: forwarded as a plain request, whose 101 answer is the upstream
    // breaking HTTP, never a tunnel.
    let gw = gateway(ReverseProxy::new(), [up.port()]).await;
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(head(gw).as_bytes()).await.unwrap();
    let answer = read_until(&mut s, b"\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{answer}"
    );

    let proxy = ReverseProxy::builder()
        .upgrades(UpgradeProtocols::only(["x-count"]).unwrap())
        .build()
        .unwrap();
    let gw = gateway(proxy.clone(), [up.port()]).await;

    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(head(gw).as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    within(10, async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the 101");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: x-count"), "{head}");
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 256) as u8).collect();
    within(10, s.write_all(&payload)).await.unwrap();
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within(10, s.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&rest),
        format!("read 100000 bytes, last {:?}", payload.last())
    );
    drop(s);
    drained(&proxy).await;
}

/// Cross-site WebSocket hijacking: a foreign Origin is refused with 403 before any upstream
/// connection; same-origin (by Host or X-Forwarded-Host), allow-listed origins and a check turned
/// off let the upgrade through.
#[tokio::test]
async fn origin_checks_guard_upgrades() {
    let _g = shared().await;
    let up = ws_upstream("u1").await;
    let port = up.addr.port();
    let accepts = || up.seen.accepts.load(Ordering::SeqCst);

    // Default: same origin.
    let proxy = ReverseProxy::new();
    let gw = gateway(proxy.clone(), [port]).await;
    let url = ws_url(gw, port, "/");
    for foreign in [
        "https://evil.example",
        "http://localhost:1",
        "null",
        &format!("http://{gw}.evil.example"),
    ] {
        let r = connect_with_origin(&url, foreign).await;
        assert_eq!(refused_status(r), StatusCode::FORBIDDEN, "{foreign}");
    }
    let res = within(
        10,
        client().request({
            let mut r = upgrade_request(&url.replacen("ws://", "http://", 1));
            r.headers_mut()
                .insert("origin", "https://evil.example".parse().unwrap());
            r
        }),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(text(res).await.contains("https://evil.example"));
    assert_eq!(accepts(), 0, "a refused upgrade never reached the upstream");

    let (mut ws, _) = connect_with_origin(&url, &format!("http://{gw}"))
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut ws, "same origin").await, "same origin");
    ws.close(None).await.unwrap();
    assert_eq!(accepts(), 1);

    // Behind a front proxy: the browser's host is X-Forwarded-Host.
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("x-forwarded-host", "ide.example.com".parse().unwrap());
    req.headers_mut()
        .insert("origin", "https://ide.example.com".parse().unwrap());
    let (mut ws, _) = within(10, tokio_tungstenite::connect_async(req))
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut ws, "forwarded").await, "forwarded");
    ws.close(None).await.unwrap();
    assert_eq!(accepts(), 2);

    // An allow-list, exact and by subdomain.
    let proxy = ReverseProxy::builder()
        .websocket_origin(OriginCheck::allow([
            "https://app.example.com",
            "https://*.preview.example.com",
        ]))
        .build()
        .unwrap();
    let gw = gateway(proxy, [port]).await;
    let url = ws_url(gw, port, "/");
    for ok in [
        "https://app.example.com",
        "https://5173-a.preview.example.com",
    ] {
        let (mut ws, _) = connect_with_origin(&url, ok).await.unwrap();
        assert_eq!(roundtrip(&mut ws, ok).await, ok);
        ws.close(None).await.unwrap();
    }
    assert_eq!(accepts(), 4);
    for refused in [
        "https://preview.example.com",
        "http://app.example.com",
        "https://app.example.com.evil.example",
        &format!("http://{gw}"),
    ] {
        let r = connect_with_origin(&url, refused).await;
        assert_eq!(refused_status(r), StatusCode::FORBIDDEN, "{refused}");
    }
    assert_eq!(accepts(), 4);

    // Off.
    let proxy = ReverseProxy::builder()
        .websocket_origin(OriginCheck::Off)
        .build()
        .unwrap();
    let gw = gateway(proxy, [port]).await;
    let (mut ws, _) = connect_with_origin(&ws_url(gw, port, "/"), "https://evil.example")
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut ws, "off").await, "off");
    assert_eq!(accepts(), 5);
}

/// With an idle timeout, a tunnel that moves bytes lives on and a silent one is closed; without
/// one (the default), a silent tunnel stays open.
#[tokio::test]
async fn idle_timeout_closes_silent_tunnels_only() {
    let _g = shared().await;
    let up = ws_upstream("u1").await;
    let port = up.addr.port();
    let proxy = ReverseProxy::builder()
        .tunnel_idle_timeout(Some(Duration::from_secs(1)))
        .build()
        .unwrap();
    let gw = gateway(proxy.clone(), [port]).await;
    let (mut ws, _) = connect(&ws_url(gw, port, "/")).await;
    // Bytes every 50 ms (plus a round trip), twenty times shorter than the timeout, for longer
    // than the timeout.
    for i in 0..25 {
        let msg = format!("keep-alive {i}");
        assert_eq!(roundtrip(&mut ws, &msg).await, msg);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(proxy.open_tunnels(), 1);
    // Silence: the proxy closes the tunnel.
    assert!(read_to_end(&mut ws).await.is_none());
    drained(&proxy).await;

    let proxy = ReverseProxy::new();
    let gw = gateway(proxy.clone(), [port]).await;
    let (mut ws, _) = connect(&ws_url(gw, port, "/")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(roundtrip(&mut ws, "still open").await, "still open");
    assert_eq!(proxy.open_tunnels(), 1);
}

/// `close_tunnels` ends live tunnels and refuses new upgrades with 503 (no upstream connection)
/// until `reopen_tunnels`.
#[tokio::test]
async fn close_tunnels_ends_live_tunnels() {
    let _g = shared().await;
    let up = ws_upstream("u1").await;
    let port = up.addr.port();
    let proxy = ReverseProxy::new();
    let gw = gateway(proxy.clone(), [port]).await;
    let url = ws_url(gw, port, "/");
    let mut clients = Vec::new();
    for i in 0..3 {
        let (mut ws, _) = connect(&url).await;
        assert_eq!(roundtrip(&mut ws, &i.to_string()).await, i.to_string());
        clients.push(ws);
    }
    assert_eq!(proxy.open_tunnels(), 3);
    proxy.close_tunnels();
    for ws in &mut clients {
        assert!(read_to_end(ws).await.is_none());
    }
    drained(&proxy).await;

    let accepted = up.seen.accepts.load(Ordering::SeqCst);
    let r = within(10, tokio_tungstenite::connect_async(url.as_str())).await;
    assert_eq!(refused_status(r), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(up.seen.accepts.load(Ordering::SeqCst), accepted);

    proxy.reopen_tunnels();
    let (mut ws, _) = connect(&url).await;
    assert_eq!(roundtrip(&mut ws, "reopened").await, "reopened");
}

/// The proxy mounted in axum with `route_service` (fixed upstream) and `nest_service` (per-request
/// routing under a prefix).
#[tokio::test]
async fn through_axum_route_service_and_nest_service() {
    let _g = shared().await;
    let up = ws_upstream("axum-up").await;
    let fixed = ReverseProxy::builder()
        .upstream(format!("http://{}", up.addr).parse().unwrap())
        .build()
        .unwrap();
    let routed = ServiceBuilder::new()
        .layer(RouteLayer::new(
            PathMount::strip("/proxy")
                .allow_port(up.addr.port())
                .upstream_host("127.0.0.1"),
        ))
        .service(fixed.clone());
    let app = axum::Router::new()
        .route_service("/ws", fixed.clone())
        .nest_service("/gw", routed);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    for url in [
        format!("ws://{gw}/ws"),
        format!("ws://{gw}/gw/proxy/{}/ws", up.addr.port()),
    ] {
        let (mut ws, res) = connect(&url).await;
        assert_eq!(res.headers()["x-upstream-id"], "axum-up");
        assert_eq!(roundtrip(&mut ws, "who").await, "axum-up");
        assert_eq!(roundtrip(&mut ws, &url).await, url);
        ws.close(None).await.unwrap();
        read_to_end(&mut ws).await;
    }
    let paths: Vec<String> = up
        .seen
        .handshakes
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(paths, ["/ws", "/ws"]);
    drained(&fixed).await;
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// 1000 tunnels, 10 at a time, leave no file descriptor, task or tunnel behind (a small slack
/// covers pooled connections and runtime bookkeeping).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn no_fd_or_task_leak_over_1000_tunnels() {
    let _g = EXCLUSIVE.write().await;
    let up = ws_upstream("u1").await;
    let port = up.addr.port();
    let proxy = ReverseProxy::new();
    let gw = gateway(proxy.clone(), [port]).await;
    let url = Arc::new(ws_url(gw, port, "/"));

    async fn one(url: Arc<String>, i: usize) {
        let (mut ws, _) = connect(&url).await;
        let msg = format!("tunnel {i}");
        assert_eq!(roundtrip(&mut ws, &msg).await, msg);
        ws.close(None).await.unwrap();
        read_to_end(&mut ws).await;
    }

    // Warm up, then take the baseline.
    for i in 0..10 {
        one(url.clone(), i).await;
    }
    drained(&proxy).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fds_before = open_fds();
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert!(fds_before > 0, "/proc/self/fd is readable");

    within(120, async {
        for batch in 0..100 {
            let mut set = tokio::task::JoinSet::new();
            for j in 0..10 {
                set.spawn(one(url.clone(), batch * 10 + j));
            }
            while let Some(r) = set.join_next().await {
                r.expect("tunnel task");
            }
        }
    })
    .await;
    drained(&proxy).await;
    assert_eq!(up.seen.accepts.load(Ordering::SeqCst), 1010);

    let mut fds_after = open_fds();
    let mut tasks_after = usize::MAX;
    for _ in 0..100 {
        fds_after = open_fds();
        tasks_after = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        if fds_after <= fds_before + 8 && tasks_after <= tasks_before + 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("fds {fds_before} → {fds_after}, tasks {tasks_before} → {tasks_after}");
    assert!(
        fds_after <= fds_before + 8,
        "fds {fds_before} → {fds_after}"
    );
    assert!(
        tasks_after <= tasks_before + 8,
        "tasks {tasks_before} → {tasks_after}"
    );
    assert_eq!(proxy.open_tunnels(), 0);
}

/// A raw HTTP/1.1 upstream that switches to whatever protocol it is offered — `101` naming the
/// offered `Upgrade`, then echoes bytes — and answers a plain request `200 plain`. Records every
/// request head it reads, lower-cased.
async fn switching_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let head = read_until(&mut stream, b"\r\n\r\n")
                    .await
                    .to_ascii_lowercase();
                seen.lock().unwrap().push(head.clone());
                let offered = head
                    .lines()
                    .find_map(|l| l.strip_prefix("upgrade:"))
                    .map(|v| v.trim().to_owned());
                match offered {
                    Some(p) => {
                        let answer = format!(
                            "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: {p}\r\n\r\n"
                        );
                        let _ = stream.write_all(answer.as_bytes()).await;
                        let (mut r, mut w) = stream.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    }
                    None => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nplain")
                            .await;
                    }
                }
            });
        }
    });
    (addr, heads)
}

/// Reads from `stream` until `needle` has been seen (at most 64 KiB, 10 s); returns the text read.
async fn read_until(stream: &mut TcpStream, needle: &[u8]) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    within(10, async {
        while buf.len() < 65536 && !buf.windows(needle.len()).any(|w| w == needle) {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// `Upgrade: h2c` (or any protocol but WebSocket) never opens a tunnel: the request reaches the
/// upstream as a plain one, without `Upgrade` or `HTTP2-Settings`, and its plain answer comes back.
/// Allowing `h2c` on purpose opens the tunnel the same request would otherwise get.
#[tokio::test]
async fn only_allowed_upgrade_protocols_open_a_tunnel() {
    let _g = shared().await;
    let (up, heads) = switching_upstream().await;
    let h2c_offer = |gw: SocketAddr| {
        format!(
            "GET /proxy/{}/ HTTP/1.1\r\nHost: {gw}\r\nConnection: Upgrade, HTTP2-Settings\r\n\
             Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
            up.port()
        )
    };

    let proxy = ReverseProxy::new();
    let gw = gateway(proxy.clone(), [up.port()]).await;
    let mut client = TcpStream::connect(gw).await.unwrap();
    client.write_all(h2c_offer(gw).as_bytes()).await.unwrap();
    let answer = read_until(&mut client, b"plain").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nplain"), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("upgrade"), "{answer}");
    let head = heads.lock().unwrap().pop().unwrap();
    assert!(!head.contains("upgrade"), "{head}");
    assert!(!head.contains("http2-settings"), "{head}");
    assert_eq!(proxy.open_tunnels(), 0);
    // The connection still speaks HTTP/1.1: a second request on it is answered as one.
    let again = format!("GET /proxy/{}/ HTTP/1.1\r\nHost: {gw}\r\n\r\n", up.port());
    client.write_all(again.as_bytes()).await.unwrap();
    let answer = read_until(&mut client, b"plain").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");

    // With h2c allowed, the same bytes get a 101 and a tunnel.
    let proxy = ReverseProxy::builder()
        .upgrades(UpgradeProtocols::only(["websocket", "h2c"]).unwrap())
        .build()
        .unwrap();
    let gw = gateway(proxy.clone(), [up.port()]).await;
    let mut client = TcpStream::connect(gw).await.unwrap();
    client.write_all(h2c_offer(gw).as_bytes()).await.unwrap();
    let answer = read_until(&mut client, b"\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{answer}"
    );
    client.write_all(b"spliced").await.unwrap();
    assert!(read_until(&mut client, b"spliced")
        .await
        .ends_with("spliced"));
    let head = heads.lock().unwrap().pop().unwrap();
    assert!(head.contains("upgrade: h2c"), "{head}");
}
