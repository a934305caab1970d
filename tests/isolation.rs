//! IsolationLayer over real sockets: COOP/COEP on every status (304 included), the inner
//! service's own policy kept, and the insecure-context warning logged once per layer.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sandbox_gateway::isolation::{Coep, Corp, IsolationLayer};

const TIMEOUT: Duration = Duration::from_secs(10);

async fn app(isolation: IsolationLayer) -> SocketAddr {
    let router = Router::new()
        .route(
            "/",
            get(|headers: HeaderMap| async move {
                if headers
                    .get(header::IF_NONE_MATCH)
                    .is_some_and(|v| v == "\"v1\"")
                {
                    return (StatusCode::NOT_MODIFIED, [(header::ETAG, "\"v1\"")]).into_response();
                }
                ([(header::ETAG, "\"v1\"")], "<!doctype html>").into_response()
            }),
        )
        .route(
            "/boom",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/own",
            get(|| async {
                (
                    [
                        ("cross-origin-embedder-policy", "require-corp"),
                        ("cross-origin-resource-policy", "same-site"),
                    ],
                    "own",
                )
            }),
        )
        .layer(isolation);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

async fn get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap) {
    let mut req = http::Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let res = tokio::time::timeout(TIMEOUT, client.request(req.body(Body::empty()).unwrap()))
        .await
        .expect("timed out")
        .unwrap();
    let (parts, body) = res.into_parts();
    tokio::time::timeout(TIMEOUT, body.collect())
        .await
        .expect("timed out")
        .unwrap();
    (parts.status, parts.headers)
}

fn one(h: &HeaderMap, name: &str) -> String {
    let all: Vec<_> = h.get_all(name).iter().collect();
    assert_eq!(all.len(), 1, "{name}: {all:?}");
    all[0].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_status_gets_coop_and_coep_including_304() {
    let addr = app(IsolationLayer::new().warn_insecure_context(false)).await;
    let (status, h) = get_with(addr, "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one(&h, "cross-origin-opener-policy"), "same-origin");
    assert_eq!(one(&h, "cross-origin-embedder-policy"), "credentialless");
    assert!(h.get("cross-origin-resource-policy").is_none());

    let (status, h) = get_with(addr, "/", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(one(&h, "cross-origin-opener-policy"), "same-origin");
    assert_eq!(one(&h, "cross-origin-embedder-policy"), "credentialless");

    for (path, want) in [
        ("/boom", StatusCode::INTERNAL_SERVER_ERROR),
        ("/missing", StatusCode::NOT_FOUND),
    ] {
        let (status, h) = get_with(addr, path, &[]).await;
        assert_eq!(status, want);
        assert_eq!(one(&h, "cross-origin-opener-policy"), "same-origin");
        assert_eq!(one(&h, "cross-origin-embedder-policy"), "credentialless");
    }
}

#[tokio::test]
async fn require_corp_and_corp_but_the_inner_policy_wins() {
    let layer = IsolationLayer::new()
        .coep(Coep::RequireCorp)
        .corp(Corp::CrossOrigin)
        .warn_insecure_context(false);
    let addr = app(layer).await;
    let (_, h) = get_with(addr, "/", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(one(&h, "cross-origin-embedder-policy"), "require-corp");
    assert_eq!(one(&h, "cross-origin-resource-policy"), "cross-origin");

    let addr = app(IsolationLayer::new()
        .corp(Corp::CrossOrigin)
        .warn_insecure_context(false))
    .await;
    let (_, h) = get_with(addr, "/own", &[]).await;
    assert_eq!(one(&h, "cross-origin-embedder-policy"), "require-corp");
    assert_eq!(one(&h, "cross-origin-resource-policy"), "same-site");
    assert_eq!(one(&h, "cross-origin-opener-policy"), "same-origin");
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .matches(needle)
            .count()
    }
}

// A current-thread runtime: the servers run on the test's thread, under its subscriber.
#[tokio::test(flavor = "current_thread")]
async fn insecure_context_is_warned_once_per_layer() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    const NEEDLE: &str = "not in a secure context";

    // Loopback is a secure context: no warning.
    let addr = app(IsolationLayer::new()).await;
    for host in ["localhost", "app.localhost:3000", "127.0.0.1"] {
        get_with(addr, "/", &[("host", host)]).await;
    }
    assert_eq!(logs.count(NEEDLE), 0);

    // Plain HTTP under a public name: one warning however many requests.
    for _ in 0..3 {
        get_with(addr, "/", &[("host", "preview.example.com")]).await;
    }
    assert_eq!(logs.count(NEEDLE), 1);

    // A second layer warns on its own.
    let other = app(IsolationLayer::new()).await;
    get_with(other, "/", &[("host", "preview.example.com")]).await;
    assert_eq!(logs.count(NEEDLE), 2);

    // Behind a trusted TLS-terminating proxy, X-Forwarded-Proto: https counts...
    let trusted = app(IsolationLayer::new().trust_forwarded_proto(true)).await;
    get_with(
        trusted,
        "/",
        &[
            ("host", "preview.example.com"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(logs.count(NEEDLE), 2);
    // ...but not without trust.
    let untrusted = app(IsolationLayer::new()).await;
    get_with(
        untrusted,
        "/",
        &[
            ("host", "preview.example.com"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(logs.count(NEEDLE), 3);

    // Turned off: silent.
    let quiet = app(IsolationLayer::new().warn_insecure_context(false)).await;
    get_with(quiet, "/", &[("host", "preview.example.com")]).await;
    assert_eq!(logs.count(NEEDLE), 3);
}
