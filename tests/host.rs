//! HostAllowlistLayer over real sockets: HTTP/1.1 through a real client and raw bytes (for the
//! malformed cases a client will not send), HTTP/2 `:authority`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sandbox_gateway::host::HostAllowlistLayer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(10);

async fn app() -> SocketAddr {
    let hosts = HostAllowlistLayer::builder()
        .allow("ide.example.com")
        .allow("*.preview.example.com")
        .hint("restart the gateway with --allow-host {host}")
        .build()
        .unwrap();
    let router = Router::new()
        .route("/", get(|| async { "hello" }))
        .layer(hosts);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

async fn get_host(addr: SocketAddr, host: Option<&str>) -> (StatusCode, String) {
    let mut req = http::Request::get(format!("http://{addr}/"));
    if let Some(h) = host {
        req = req.header(header::HOST, h);
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let res = tokio::time::timeout(TIMEOUT, client.request(req.body(Body::empty()).unwrap()))
        .await
        .expect("timed out")
        .unwrap();
    let status = res.status();
    let body = tokio::time::timeout(TIMEOUT, res.into_body().collect())
        .await
        .expect("timed out")
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Sends raw bytes and returns the status code of the answer.
async fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut buf))
        .await
        .expect("timed out")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (code, text)
}

#[tokio::test]
async fn loopback_and_listed_hosts_pass() {
    let addr = app().await;
    // What a client sends when the URL names the listener by its address.
    let own = addr.to_string();
    for host in [
        Some(own.as_str()),
        Some("localhost:5173"),
        Some("app.localhost"),
        Some("[::1]:8080"),
        Some("IDE.Example.com."),
        Some("3000-abc.preview.example.com:443"),
    ] {
        assert_eq!(
            get_host(addr, host).await,
            (StatusCode::OK, "hello".into()),
            "{host:?}"
        );
    }
}

#[tokio::test]
async fn foreign_host_is_403_naming_it() {
    let addr = app().await;
    for host in [
        "evil.example",
        "preview.example.com",
        "evil-preview.example.com",
        "localhost.evil.example",
        "192.168.1.20",
    ] {
        let (status, body) = get_host(addr, Some(host)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{host}");
        assert!(
            body.contains(&format!("Host \"{host}\" is not allowed")),
            "{body}"
        );
        assert!(body.contains(&format!("--allow-host {host}")), "{body}");
    }
}

#[tokio::test]
async fn malformed_host_is_400() {
    let addr = app().await;
    let close = "Connection: close\r\n\r\n";
    let (code, text) = raw(addr, &format!("GET / HTTP/1.1\r\n{close}")).await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("missing Host"), "{text}");
    let (code, text) = raw(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n{close}"),
    )
    .await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("several Host"), "{text}");
    let (code, _) = raw(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: user@localhost\r\n{close}"),
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = raw(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: localhost:99999\r\n{close}"),
    )
    .await;
    assert_eq!(code, 400);
    // Absolute-form target naming another host than the Host header.
    let (code, text) = raw(
        addr,
        &format!("GET http://localhost/ HTTP/1.1\r\nHost: evil.example\r\n{close}"),
    )
    .await;
    assert_eq!(code, 400, "{text}");
    // Absolute-form alone decides when it agrees.
    let (code, _) = raw(
        addr,
        &format!("GET http://ide.example.com/ HTTP/1.1\r\nHost: ide.example.com\r\n{close}"),
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = raw(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: localhost\r\n{close}"),
    )
    .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn http2_authority_is_the_host() {
    let addr = app().await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (authority, want) in [
        ("3000-abc.preview.example.com", StatusCode::OK),
        ("localhost:9", StatusCode::OK),
        ("evil.example", StatusCode::FORBIDDEN),
    ] {
        let req = http::Request::get(format!("http://{authority}/"))
            .body(Body::empty())
            .unwrap();
        let res = tokio::time::timeout(TIMEOUT, send.send_request(req))
            .await
            .expect("timed out")
            .unwrap();
        assert_eq!(res.status(), want, "{authority}");
    }
}
