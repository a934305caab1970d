//! Real servers and clients on loopback for the integration tests.
#![allow(dead_code)]

pub mod gateway;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[cfg(feature = "redis")]
pub mod redis;
pub mod replica;
#[cfg(feature = "auth")]
pub mod sessions;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = UnsyncBoxBody<Bytes, BoxError>;

/// Serves `svc` (any tower service over hyper's `Incoming` body) on `addr` (port 0 for a free one),
/// HTTP/1.1 and HTTP/2, upgrades enabled. Returns the bound address; the server lives until the
/// test's runtime ends.
pub async fn serve_on<S, B>(addr: &str, svc: S) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind(addr).await.expect("bind loopback");
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let svc = svc.clone();
            tokio::spawn(async move {
                let hyper_svc = hyper_util::service::TowerToHyperService::new(svc);
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), hyper_svc)
                    .await;
            });
        }
    });
    local
}

/// [`serve_on`] a free port of 127.0.0.1.
pub async fn serve<S, B>(svc: S) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    serve_on("127.0.0.1:0", svc).await
}

/// Serves an async function.
pub async fn serve_fn<F, Fut>(f: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<TestBody>> + Send + 'static,
{
    serve(tower::service_fn(move |req| {
        let f = f.clone();
        async move { Ok::<_, Infallible>(f(req).await) }
    }))
    .await
}

/// A plain hyper client (HTTP/1.1, pooled).
pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

pub fn empty() -> TestBody {
    full(Bytes::new())
}

/// Collects a whole body, failing on error.
pub async fn text(res: Response<Incoming>) -> String {
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// An address on which nothing listens (bound, then closed).
pub async fn closed_port_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// `target/debug/examples/{name}`, built by `cargo test` along with the tests (run alone with
/// `--test …`, build it first: `cargo build --all-features --example {name}`).
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// Bounds a test step in time.
pub async fn within<T>(secs: u64, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("step finished in time")
}

/// An upstream that echoes the request as JSON: method, path, version, headers (name → list of
/// values), body length.
pub async fn echo_upstream(addr: &str) -> SocketAddr {
    serve_on(
        addr,
        tower::service_fn(|req: Request<Incoming>| async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let mut headers = serde_json::Map::new();
            for (k, v) in parts.headers.iter() {
                let entry = headers
                    .entry(k.as_str().to_owned())
                    .or_insert_with(|| serde_json::Value::Array(vec![]));
                entry
                    .as_array_mut()
                    .unwrap()
                    .push(String::from_utf8_lossy(v.as_bytes()).into_owned().into());
            }
            let json = serde_json::json!({
                "method": parts.method.as_str(),
                "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                "version": format!("{:?}", parts.version),
                "headers": headers,
                "body_len": body.len(),
                "body": String::from_utf8_lossy(&body),
            });
            let mut res = Response::new(full(json.to_string()));
            res.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            Ok::<_, Infallible>(res)
        }),
    )
    .await
}

/// A listener on `[::1]:port` that never accepts, its accept queue full: on Linux new SYNs to it are
/// dropped, so a connect attempt hangs instead of being refused. Returns it with the connections
/// that fill it (they must stay open).
pub async fn blackhole_v6(port: u16) -> Option<(TcpListener, Vec<tokio::net::TcpStream>)> {
    let socket = tokio::net::TcpSocket::new_v6().ok()?;
    socket
        .bind(SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), port))
        .ok()?;
    let listener = socket.listen(1).ok()?;
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => panic!("filling the accept queue: {e}"),
            Err(_) => return Some((listener, held)),
        }
    }
    panic!("the accept queue of a listen(1) socket never filled after 16 connections");
}
