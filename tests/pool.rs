//! The proxy's upstream connections over real sockets: reuse, give-back only after a whole body,
//! the idle cap and timeout, upstreams that close their side, HTTP/2 sharing one connection.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sandbox_gateway::proxy::{Builder, ReverseProxy};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Connections an upstream accepted, how many are open now, and how many `/held` requests
/// have arrived.
struct Conns {
    accepted: AtomicUsize,
    open: AtomicUsize,
    held: tokio::sync::watch::Sender<usize>,
}

impl Default for Conns {
    fn default() -> Self {
        Self {
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            held: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Conns {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
    /// Waits (bounded: 10 s) until `open` is `n`.
    async fn wait_open(&self, n: usize) {
        for _ in 0..200 {
            if self.open() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} connections open, expected {n}", self.open());
    }
}

/// An upstream (HTTP/1.1 and h2c) counting its connections:
/// `/small` a sized body, `/chunked` three chunks, `/empty` 204, `/big` 4 MiB in 64 KiB chunks,
/// `/close` answered with `Connection: close`, `/slow?ms=N&id=X` echoes `X` after N ms,
/// `/held?n=N&id=X` echoes `X` once N `/held` requests are in flight at once (504 if they are
/// not within 20 s): those requests provably overlap.
async fn upstream() -> (SocketAddr, Arc<Conns>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(Conns::default());
    let counted = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            counted.accepted.fetch_add(1, Ordering::SeqCst);
            counted.open.fetch_add(1, Ordering::SeqCst);
            let counted = counted.clone();
            tokio::spawn(async move {
                let conns = counted.clone();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let conns = conns.clone();
                    async move { Ok::<_, Infallible>(answer(req, &conns).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                counted.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, conns)
}

async fn answer(req: Request<Incoming>, conns: &Conns) -> Response<TestBody> {
    let query = req.uri().query().unwrap_or("").to_owned();
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or("")
            .to_owned()
    };
    match req.uri().path() {
        "/small" => Response::new(full("small")),
        "/chunked" => {
            let frames = ["a", "b", "c"].map(|s| Ok::<_, BoxError>(Frame::data(Bytes::from(s))));
            Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync())
        }
        "/empty" => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(empty())
            .unwrap(),
        "/big" => {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let frames = (0..64).map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone())));
            Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync())
        }
        "/close" => Response::builder()
            .header("connection", "close")
            .body(full("bye"))
            .unwrap(),
        "/slow" => {
            let ms = param("ms").parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full(param("id")))
        }
        "/held" => {
            let n: usize = param("n").parse().unwrap_or(1);
            let mut arrived = conns.held.subscribe();
            conns.held.send_modify(|held| *held += 1);
            let all_in =
                tokio::time::timeout(Duration::from_secs(20), arrived.wait_for(|h| *h >= n))
                    .await
                    .is_ok_and(|r| r.is_ok());
            if all_in {
                Response::new(full(param("id")))
            } else {
                Response::builder()
                    .status(StatusCode::GATEWAY_TIMEOUT)
                    .body(full("not all held requests arrived"))
                    .unwrap()
            }
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(empty())
            .unwrap(),
    }
}

fn proxy(up: SocketAddr, configure: impl FnOnce(Builder) -> Builder) -> ReverseProxy {
    configure(
        ReverseProxy::builder()
            .upstream(format!("http://{up}").parse().unwrap())
            .response_timeout(Some(Duration::from_secs(5))),
    )
    .build()
    .unwrap()
}

async fn get(gw: SocketAddr, path: &str) -> (StatusCode, String) {
    send(gw, Method::GET, path).await
}

async fn send(gw: SocketAddr, method: Method, path: &str) -> (StatusCode, String) {
    // A fresh client connection per request: only the proxy's own pool is under test.
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{gw}{path}"))
        .header("connection", "close")
        .body(empty())
        .unwrap();
    let res = within(10, client().request(req)).await.unwrap();
    let status = res.status();
    (status, within(10, text(res)).await)
}

#[tokio::test]
async fn sequential_exchanges_reuse_one_connection() {
    let (up, conns) = upstream().await;
    let gw = serve(proxy(up, |b| b)).await;
    for _ in 0..5 {
        assert_eq!(get(gw, "/small").await, (StatusCode::OK, "small".into()));
        assert_eq!(get(gw, "/chunked").await, (StatusCode::OK, "abc".into()));
        assert_eq!(get(gw, "/empty").await.0, StatusCode::NO_CONTENT);
        assert_eq!(send(gw, Method::HEAD, "/small").await.0, StatusCode::OK);
        let (status, body) = get(gw, "/big").await;
        assert_eq!((status, body.len()), (StatusCode::OK, 4 << 20));
    }
    assert_eq!(
        conns.accepted(),
        1,
        "every exchange went over the first connection"
    );
}

#[tokio::test]
async fn concurrent_exchanges_each_get_their_own_answer() {
    let (up, conns) = upstream().await;
    let gw = serve(proxy(up, |b| b)).await;
    let tasks: Vec<_> = (0..32)
        .map(|i| tokio::spawn(async move { (i, get(gw, &format!("/held?n=32&id={i}")).await) }))
        .collect();
    for t in tasks {
        let (i, (status, body)) = t.await.unwrap();
        assert_eq!((status, body), (StatusCode::OK, i.to_string()));
    }
    // All 32 were in flight at once, and an HTTP/1.1 connection carries one at a time.
    let opened = conns.accepted();
    assert_eq!(opened, 32);
    // All of them are idle now and serve the next round without opening more.
    for i in 0..opened {
        assert_eq!(get(gw, &format!("/slow?id={i}")).await.1, i.to_string());
    }
    assert_eq!(conns.accepted(), opened);
}

#[tokio::test]
async fn a_body_dropped_midway_leaves_its_connection_to_close() {
    let (up, conns) = upstream().await;
    let gw = serve(proxy(up, |b| b)).await;
    let req = Request::get(format!("http://{gw}/big"))
        .body(empty())
        .unwrap();
    let res = within(10, client().request(req)).await.unwrap();
    let mut body = res.into_body();
    within(10, body.frame()).await.unwrap().unwrap();
    drop(body);
    // The half-read connection is not handed to the next request, which gets a whole answer.
    assert_eq!(get(gw, "/small").await, (StatusCode::OK, "small".into()));
    assert_eq!(conns.accepted(), 2);
    conns.wait_open(1).await;
}

#[tokio::test]
async fn idle_connections_beyond_the_cap_are_closed() {
    let (up, conns) = upstream().await;
    let gw = serve(proxy(up, |b| b.pool_max_idle_per_host(2))).await;
    let tasks: Vec<_> = (0..6)
        .map(|i| tokio::spawn(async move { get(gw, &format!("/held?n=6&id={i}")).await }))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().0, StatusCode::OK);
    }
    assert_eq!(conns.accepted(), 6);
    conns.wait_open(2).await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (up, conns) = upstream().await;
    // Long enough that the check right after the answer is never late (it takes milliseconds),
    // short enough for `wait_open`'s 10 s.
    let gw = serve(proxy(up, |b| b.pool_idle_timeout(Duration::from_secs(2)))).await;
    assert_eq!(get(gw, "/small").await.0, StatusCode::OK);
    assert_eq!(conns.open(), 1);
    conns.wait_open(0).await;
    // And the next request opens a new one.
    assert_eq!(get(gw, "/small").await.0, StatusCode::OK);
    assert_eq!(conns.accepted(), 2);
}

#[tokio::test]
async fn an_upstream_closing_its_side_is_not_an_error() {
    let (up, conns) = upstream().await;
    let gw = serve(proxy(up, |b| b)).await;
    assert_eq!(get(gw, "/close").await, (StatusCode::OK, "bye".into()));
    assert_eq!(get(gw, "/small").await, (StatusCode::OK, "small".into()));
    assert_eq!(conns.accepted(), 2);
}

/// An upstream that answers one request per connection with a keep-alive response and then closes
/// the connection without saying so, as dev servers do when their keep-alive timer fires.
#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_reused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let (closed_tx, mut closed) = tokio::sync::mpsc::channel::<()>(4);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(s);
                let _ = closed_tx.send(()).await;
            });
        }
    });
    let gw = serve(proxy(up, |b| b)).await;
    for _ in 0..3 {
        assert_eq!(get(gw, "/").await, (StatusCode::OK, "ok".into()));
        // The upstream has closed its side; the proxy's end reads the FIN on loopback in well
        // under a millisecond, given 200 ms.
        within(10, closed.recv()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn http2_upstreams_share_one_connection() {
    let (up, conns) = upstream().await;
    let gw = serve(proxy(up, |b| b.http2_prior_knowledge(true))).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| tokio::spawn(async move { get(gw, &format!("/held?n=16&id={i}")).await }))
        .collect();
    // All 16 in flight at once, over one connection.
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), (StatusCode::OK, i.to_string()));
    }
    assert_eq!(get(gw, "/chunked").await, (StatusCode::OK, "abc".into()));
    assert_eq!(conns.accepted(), 1);
}

#[tokio::test]
async fn http2_connection_lost_is_replaced() {
    let (up, conns) = upstream().await;
    let gw = serve(proxy(up, |b| {
        b.http2_prior_knowledge(true)
            .pool_idle_timeout(Duration::from_millis(300))
    }))
    .await;
    assert_eq!(get(gw, "/small").await.0, StatusCode::OK);
    conns.wait_open(0).await;
    assert_eq!(get(gw, "/small").await.0, StatusCode::OK);
    assert_eq!(conns.accepted(), 2);
}

#[tokio::test]
async fn a_zero_idle_timeout_turns_reuse_off() {
    let (up, conns) = upstream().await;
    let gw = serve(proxy(up, |b| b.pool_idle_timeout(Duration::ZERO))).await;
    for _ in 0..3 {
        assert_eq!(get(gw, "/small").await, (StatusCode::OK, "small".into()));
    }
    assert_eq!(conns.accepted(), 3);
    conns.wait_open(0).await;
}
