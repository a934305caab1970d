//! `serve::Server` against real clients on loopback: slow heads, connection caps per client, idle
//! connections, graceful shutdown with a download and a tunnel in flight, HTTPS with ALPN.
#![cfg(all(feature = "serve", feature = "tls"))]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as AxMessage, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sandbox_gateway::proxy::ReverseProxy;
use sandbox_gateway::rewrite::{ClientAddr, ClientTls};
use sandbox_gateway::route::Upstream;
use sandbox_gateway::serve::{Server, ServerBuilder, TlsConfig};
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::Message;

/// `/` answers `ok`; `/peer` names the client address and whether the connection was TLS.
fn app() -> Router {
    Router::new().route("/", get(|| async { "ok" })).route(
        "/peer",
        get(
            |Extension(ClientAddr(peer)): Extension<ClientAddr>,
             tls: Option<Extension<ClientTls>>| async move {
                format!("{} tls={}", peer.ip(), tls.is_some())
            },
        ),
    )
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<std::io::Result<()>>,
}

async fn start(builder: ServerBuilder, app: Router) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    let server = builder.build().expect("valid server configuration");
    let done = tokio::spawn(server.serve(listener, app, async {
        let _ = rx.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        done,
    }
}

/// Connects from `source` (any loopback address) to `addr`.
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// One HTTP/1.1 GET on a raw connection, kept alive; the answer's status line and body.
async fn raw_get(stream: &mut TcpStream, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    within(5, async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before answering: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    return format!("{} {}", head.lines().next().unwrap(), body);
                }
            }
        }
    })
    .await
}

/// Reads until the peer closes (EOF or reset); how long that took, at most `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn a_client_trickling_its_head_is_disconnected_after_the_header_timeout() {
    let server = start(
        Server::builder()
            .header_read_timeout(Duration::from_secs(1))
            .idle_timeout(None),
        app(),
    )
    .await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    // A header byte every 200 ms, the head never finished; a normal client is served meanwhile.
    let (mut slow_r, mut slow_w) = slow.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow_w.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    let mut normal = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(raw_get(&mut normal, "/").await, "HTTP/1.1 200 OK ok");

    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match slow_r.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the trickling client is disconnected");
    trickle.abort();
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(4),
        "disconnected after {closed:?}, the header timeout being 1 s"
    );
    // (The kept-alive connection waited for its next head as long: it is closed too.)
    let mut fresh = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(raw_get(&mut fresh, "/").await, "HTTP/1.1 200 OK ok");
}

#[tokio::test]
async fn a_client_over_its_connection_cap_is_refused_while_others_are_served() {
    let server = start(Server::builder().max_connections_per_client(3), app()).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = connect_from("127.0.0.1", server.addr).await;
        assert_eq!(raw_get(&mut c, "/").await, "HTTP/1.1 200 OK ok");
        held.push(c);
    }
    // The fourth from the same address is closed at once, before a byte is read.
    let mut fourth = connect_from("127.0.0.1", server.addr).await;
    let _ = fourth
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let mut got = Vec::new();
    let end = within(5, fourth.read_to_end(&mut got)).await;
    assert!(
        end.is_err() || got.is_empty(),
        "refused without an answer, got {:?}",
        String::from_utf8_lossy(&got)
    );

    // Another client is served, and the server tells the app who it is.
    let mut other = connect_from("127.0.0.2", server.addr).await;
    assert_eq!(
        raw_get(&mut other, "/peer").await,
        "HTTP/1.1 200 OK 127.0.0.2 tls=false"
    );
    // The held connections still work.
    assert_eq!(
        raw_get(&mut held[0], "/peer").await,
        "HTTP/1.1 200 OK 127.0.0.1 tls=false"
    );

    // One closed: the first client gets a place again.
    drop(held.pop());
    let mut served = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut again = connect_from("127.0.0.1", server.addr).await;
        let req = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
        if again.write_all(req).await.is_err() {
            continue;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), again.read(&mut buf)).await
        {
            if n > 0 {
                served = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                break;
            }
        }
    }
    let served = served.expect("served again once a connection closed");
    assert!(served.starts_with("HTTP/1.1 200 OK"), "{served}");
}

#[tokio::test]
async fn at_the_total_cap_the_server_waits_before_accepting_more() {
    let server = start(Server::builder().max_connections(2), app()).await;
    let mut a = connect_from("127.0.0.1", server.addr).await;
    let mut b = connect_from("127.0.0.2", server.addr).await;
    assert_eq!(raw_get(&mut a, "/").await, "HTTP/1.1 200 OK ok");
    assert_eq!(raw_get(&mut b, "/").await, "HTTP/1.1 200 OK ok");

    // A third waits in the listen backlog: its request gets no answer while both are open…
    let mut c = connect_from("127.0.0.3", server.addr).await;
    c.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let waited = tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf)).await;
    assert!(waited.is_err(), "answered over the cap: {waited:?}");

    // …and is served once one closes.
    drop(a);
    let n = within(5, c.read(&mut buf)).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[tokio::test]
async fn idle_connections_are_closed_http1_and_http2() {
    let server = start(
        Server::builder()
            .header_read_timeout(Duration::from_secs(30))
            .idle_timeout(Some(Duration::from_secs(1))),
        app(),
    )
    .await;
    let mut h1 = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(raw_get(&mut h1, "/").await, "HTTP/1.1 200 OK ok");
    let after = closed_within(&mut h1, Duration::from_secs(10))
        .await
        .expect("idle HTTP/1.1 connection closed");
    assert!(
        after >= Duration::from_millis(800),
        "closed after {after:?}"
    );

    // HTTP/2 (prior knowledge): the connection ends after the idle timeout.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let driver = tokio::spawn(conn);
    let res = tx
        .send_request(
            Request::get(format!("http://{}/", server.addr))
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.version(), Version::HTTP_2);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
    let started = Instant::now();
    within(10, driver)
        .await
        .unwrap()
        .expect("the server closed the HTTP/2 connection cleanly");
    assert!(started.elapsed() >= Duration::from_millis(800));
}

/// An upstream: `/download` streams 10 × 1000 bytes over about a second, `/forever` a chunk every
/// 100 ms without end, `/ws` a WebSocket echo.
async fn upstream() -> SocketAddr {
    async fn chunks(count: Option<usize>) -> axum::body::Body {
        let stream = futures_util::stream::unfold(0usize, move |i| async move {
            if count.is_some_and(|c| i >= c) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((
                Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 1000])),
                i + 1,
            ))
        });
        axum::body::Body::from_stream(stream)
    }
    let router = Router::new()
        .route("/download", get(|| async { chunks(Some(10)).await }))
        .route("/forever", get(|| async { chunks(None).await }))
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(msg)) = socket.recv().await {
                        if let AxMessage::Text(_) = msg {
                            if socket.send(msg).await.is_err() {
                                return;
                            }
                        }
                    }
                })
                .into_response()
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

#[tokio::test]
async fn graceful_shutdown_finishes_a_download_and_closes_tunnels_by_the_deadline() {
    let up = upstream().await;
    let proxy = ReverseProxy::builder()
        .upstream(format!("http://{up}").parse::<Upstream>().unwrap())
        .build()
        .unwrap();
    let drained = Arc::new(AtomicBool::new(false));
    let (tunnels, flag) = (proxy.clone(), drained.clone());
    let mut server = start(
        Server::builder()
            .shutdown_timeout(Duration::from_secs(3))
            .on_drained(move || {
                flag.store(true, Ordering::SeqCst);
                tunnels.close_tunnels();
            }),
        Router::new().fallback_service(proxy.clone()),
    )
    .await;
    let gw = server.addr;

    let (mut ws, _) = within(5, tokio_tungstenite::connect_async(format!("ws://{gw}/ws")))
        .await
        .expect("WebSocket through the server");
    ws.send(Message::text("before")).await.unwrap();
    let echo = within(5, ws.next()).await.unwrap().unwrap();
    assert_eq!(echo, Message::text("before"));
    assert_eq!(proxy.open_tunnels(), 1);

    let client = support::client();
    let get = |path: &str| {
        Request::get(format!("http://{gw}{path}"))
            .body(support::empty())
            .unwrap()
    };
    let download = within(5, client.request(get("/download"))).await.unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    let forever = within(5, client.request(get("/forever"))).await.unwrap();

    let stopped = Instant::now();
    server.stop.take().unwrap().send(()).unwrap();

    // The download in flight finishes whole.
    let body = within(5, download.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body.len(), 10_000, "the whole download arrived");
    assert!(stopped.elapsed() < Duration::from_secs(3));
    assert!(
        !drained.load(Ordering::SeqCst),
        "the endless stream keeps the server draining"
    );

    // New connections are no longer accepted.
    tokio::time::sleep(Duration::from_millis(100)).await;
    match TcpStream::connect(gw).await {
        Err(_) => {}
        Ok(mut s) => {
            let _ = s
                .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await;
            let mut got = Vec::new();
            let _ = within(5, s.read_to_end(&mut got)).await;
            assert!(got.is_empty(), "nothing served after shutdown began");
        }
    }

    // By the deadline the endless stream is cut and the tunnel closed.
    let cut = within(6, forever.into_body().collect()).await;
    assert!(
        cut.is_err(),
        "the endless stream ends in an error, not a clean end"
    );
    let ws_end = within(6, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return stopped.elapsed(),
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        ws_end >= Duration::from_millis(2800) && ws_end < Duration::from_millis(4500),
        "tunnel closed {ws_end:?} after shutdown began; the deadline is 3 s"
    );
    assert!(drained.load(Ordering::SeqCst));
    within(5, &mut server.done).await.unwrap().unwrap();
    assert!(stopped.elapsed() < Duration::from_secs(5));
    within(5, async {
        while proxy.open_tunnels() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A private CA and a `localhost` certificate it signed, as PEM.
fn test_pki() -> (rustls::pki_types::CertificateDer<'static>, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "sandbox-gateway test CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.der().clone(), leaf.pem(), key.serialize_pem())
}

async fn tls_connect(
    addr: SocketAddr,
    ca: &rustls::pki_types::CertificateDer<'static>,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    within(5, connector.connect("localhost".try_into().unwrap(), tcp))
        .await
        .expect("TLS handshake")
}

#[tokio::test]
async fn https_negotiates_h2_and_http1_by_alpn() {
    let (ca, cert_pem, key_pem) = test_pki();
    let dir = std::env::temp_dir().join(format!("serve-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    let tls = TlsConfig::from_pem_files(&cert, &key).expect("PEM certificate and key");
    std::fs::remove_dir_all(&dir).unwrap();
    let server = start(Server::builder().tls(tls), app()).await;

    // A client offering h2 first gets h2.
    let stream = tls_connect(server.addr, &ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let res = tx
        .send_request(
            Request::get("https://localhost/peer")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.version(), Version::HTTP_2);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"127.0.0.1 tls=true");

    // One offering only http/1.1 gets HTTP/1.1.
    let stream = tls_connect(server.addr, &ca, &[b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = tx
        .send_request(
            Request::get("/peer")
                .header("host", "localhost")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.version(), Version::HTTP_11);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"127.0.0.1 tls=true");

    // A TCP client that never starts the handshake is dropped after the header timeout.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(20))
        .await
        .is_some());
}

#[test]
fn invalid_configurations_are_refused() {
    assert!(Server::builder().max_connections(0).build().is_err());
    assert!(Server::builder()
        .max_connections_per_client(0)
        .build()
        .is_err());
    assert!(Server::builder()
        .header_read_timeout(Duration::ZERO)
        .build()
        .is_err());
    assert!(Server::builder()
        .idle_timeout(Some(Duration::ZERO))
        .build()
        .is_err());
    assert!(matches!(
        TlsConfig::from_pem(b"not pem", b"not pem"),
        Err(sandbox_gateway::serve::TlsError::NoCertificate)
    ));
}
