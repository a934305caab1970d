//! `SseLayer` over real sockets: a hyper upstream serving event streams, a hyper "gateway"
//! (the layer around a hyper client call to the upstream), and a hyper client, all on loopback.
//!
//! The upstream writes event k+1 only after the test client acknowledged event k over HTTP
//! (`/ack?k=N` on the same upstream), so the tests prove ordering (each event reaches the client
//! before the next is written), not timing.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use sandbox_gateway::sse::SseLayer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::timeout;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Upper bound for any single wait in these tests.
const WAIT: Duration = Duration::from_secs(5);
/// How long the upstream waits for an acknowledgement before giving up (and failing the stream).
const ACK_WAIT: Duration = Duration::from_secs(10);
/// Heartbeat interval used where heartbeats are on.
const HEARTBEAT: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------------
// Upstream

/// A response body fed from a channel: the upstream's event writer.
struct ChannelBody(mpsc::Receiver<Result<Frame<Bytes>, io::Error>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0.poll_recv(cx)
    }
}

enum UpBody {
    Stream(ChannelBody),
    Full(Full<Bytes>),
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            UpBody::Stream(b) => Pin::new(b).poll_frame(cx),
            UpBody::Full(b) => Pin::new(b).poll_frame(cx).map_err(|e| match e {}),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            UpBody::Stream(b) => b.size_hint(),
            UpBody::Full(b) => b.size_hint(),
        }
    }
}

#[derive(Default)]
struct UpstreamState {
    /// Highest event number the client acknowledged.
    acks: watch::Sender<u64>,
    /// Events the upstream has handed to its connection so far.
    written: AtomicU64,
    /// `Last-Event-ID` as the upstream received it.
    last_event_id: Mutex<Option<HeaderValue>>,
    /// Told when the `/hold` writer sees its reader gone.
    hold_closed: Mutex<Option<oneshot::Sender<()>>>,
}

struct Upstream {
    addr: SocketAddr,
    state: Arc<UpstreamState>,
}

impl UpstreamState {
    async fn wait_ack(&self, k: u64) -> bool {
        let mut rx = self.acks.subscribe();
        timeout(ACK_WAIT, rx.wait_for(|&acked| acked >= k))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

fn event(k: u64, last_event_id: &str) -> Bytes {
    Bytes::from(format!(
        "id: {k}\ndata: event {k} after {last_event_id}\n\n"
    ))
}

fn sse_response(body: ChannelBody, content_type: &'static str) -> Response<UpBody> {
    let mut res = Response::new(UpBody::Stream(body));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=60"),
    );
    res
}

async fn upstream_handle(state: Arc<UpstreamState>, req: Request<Incoming>) -> Response<UpBody> {
    let query = req.uri().query().unwrap_or("").to_owned();
    let param = |name: &str| -> Option<u64> {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
    };
    let send = |tx: &mpsc::Sender<Result<Frame<Bytes>, io::Error>>, bytes: Bytes| {
        let tx = tx.clone();
        async move { tx.send(Ok(Frame::data(bytes))).await.is_ok() }
    };
    let (tx, rx) = mpsc::channel(4);
    match req.uri().path() {
        "/ack" => {
            let k = param("k").unwrap_or(0);
            state.acks.send_modify(|acked| *acked = (*acked).max(k));
            Response::new(UpBody::Full(Full::new(Bytes::from_static(b"ok\n"))))
        }
        "/events" => {
            let n = param("n").unwrap_or(3);
            let id = req.headers().get("last-event-id").cloned();
            *state.last_event_id.lock().unwrap() = id.clone();
            let id = id.map_or_else(String::new, |v| v.to_str().unwrap().to_owned());
            let content_type = if param("mixed").is_some() {
                "Text/Event-Stream; charset=utf-8"
            } else {
                "text/event-stream"
            };
            tokio::spawn(async move {
                for k in 1..=n {
                    if !send(&tx, event(k, &id)).await {
                        return;
                    }
                    state.written.store(k, Ordering::SeqCst);
                    if !state.wait_ack(k).await {
                        let _ = tx.send(Err(io::Error::other("no ack"))).await;
                        return;
                    }
                }
            });
            sse_response(ChannelBody(rx), content_type)
        }
        "/idle" => {
            tokio::spawn(async move {
                let steps: [&'static [u8]; 3] = [b"data: first\n\n", b"data: par", b"t\n\n"];
                for (k, bytes) in (1..).zip(steps) {
                    if !send(&tx, Bytes::from_static(bytes)).await || !state.wait_ack(k).await {
                        return;
                    }
                }
            });
            sse_response(ChannelBody(rx), "text/event-stream")
        }
        "/hold" => {
            tokio::spawn(async move {
                if !send(&tx, Bytes::from_static(b"data: one\n\n")).await {
                    return;
                }
                // Keep the stream open until the reader goes away.
                if timeout(ACK_WAIT, tx.closed()).await.is_ok() {
                    if let Some(done) = state.hold_closed.lock().unwrap().take() {
                        let _ = done.send(());
                    }
                }
            });
            sse_response(ChannelBody(rx), "text/event-stream")
        }
        "/abort" => {
            tokio::spawn(async move {
                if send(&tx, Bytes::from_static(b"data: one\n\n")).await && state.wait_ack(1).await
                {
                    let _ = tx.send(Err(io::Error::other("upstream crashed"))).await;
                }
            });
            sse_response(ChannelBody(rx), "text/event-stream")
        }
        "/plain" => {
            let mut res = Response::new(UpBody::Full(Full::new(Bytes::from(
                "plain text, long enough to be worth compressing. ".repeat(40),
            ))));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            res
        }
        _ => {
            let mut res = Response::new(UpBody::Full(Full::default()));
            *res.status_mut() = StatusCode::NOT_FOUND;
            res
        }
    }
}

async fn start_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(UpstreamState::default());
    let accept_state = state.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = accept_state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(upstream_handle(state, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream { addr, state }
}

// ---------------------------------------------------------------------------------------------
// Gateway: the layer around a hyper client call to the upstream.

async fn serve<S, B>(svc: S) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// The "inner service": forwards the request to the upstream with a pooled hyper client.
fn forward(
    upstream: SocketAddr,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<Incoming>,
    Error = hyper_util::client::legacy::Error,
    Future = impl Send,
> + Clone {
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    tower::service_fn(move |mut req: Request<Incoming>| {
        let client = client.clone();
        let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        *req.uri_mut() = Uri::try_from(format!("http://{upstream}{pq}")).unwrap();
        async move { client.request(req).await }
    })
}

async fn gateway(upstream: SocketAddr, layer: SseLayer, compress: bool) -> SocketAddr {
    if compress {
        serve(
            ServiceBuilder::new()
                .layer(CompressionLayer::new())
                .layer(layer)
                .service(forward(upstream)),
        )
        .await
    } else {
        serve(
            ServiceBuilder::new()
                .layer(layer)
                .service(forward(upstream)),
        )
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Client

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
    let mut req = Request::get(format!("http://{addr}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    timeout(WAIT, client().request(req.body(Empty::new()).unwrap()))
        .await
        .expect("response head in time")
        .expect("response")
}

async fn ack(upstream: SocketAddr, k: u64) {
    let res = get(upstream, &format!("/ack?k={k}"), &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
}

/// Reads data frames until `buf` holds a complete event (a blank line), within `WAIT`.
async fn read_until_blank_line(body: &mut Incoming) -> String {
    let mut buf = Vec::new();
    while !buf.ends_with(b"\n\n") {
        let frame = timeout(WAIT, body.frame())
            .await
            .expect("event in time (nothing buffered)")
            .expect("stream still open")
            .expect("no error");
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
    }
    String::from_utf8(buf).unwrap()
}

/// The next data frame, or `None` if none came within `wait`.
async fn next_data(body: &mut Incoming, wait: Duration) -> Option<Bytes> {
    loop {
        match timeout(wait, body.frame()).await {
            Err(_) => return None,
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => return Some(data),
                Err(_) => continue,
            },
            Ok(other) => panic!("stream ended: {:?}", other.map(|r| r.err())),
        }
    }
}

/// Runs the acknowledgement protocol: event k must reach the client while the upstream has
/// written exactly k events (it writes k+1 only after our ack of k).
async fn read_events_in_lockstep(up: &Upstream, res: Response<Incoming>, n: u64, id: &str) {
    let mut body = res.into_body();
    for k in 1..=n {
        let got = read_until_blank_line(&mut body).await;
        assert_eq!(got.as_bytes(), event(k, id), "event {k} alone, unmerged");
        assert_eq!(up.state.written.load(Ordering::SeqCst), k);
        ack(up.addr, k).await;
    }
    let end = timeout(WAIT, body.frame()).await.expect("end in time");
    assert!(end.is_none(), "clean end after the last event");
}

fn assert_sse_headers(res: &Response<Incoming>) {
    let h = res.headers();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(h[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(h[header::CACHE_CONTROL], "no-cache, no-transform");
    assert_eq!(h["x-accel-buffering"], "no");
    assert!(!h.contains_key(header::CONTENT_LENGTH));
    assert!(!h.contains_key(header::CONTENT_ENCODING));
    assert_eq!(h[header::TRANSFER_ENCODING], "chunked");
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn each_event_reaches_the_client_before_the_next_is_written() {
    let up = start_upstream().await;
    let gw = gateway(up.addr, SseLayer::new(), false).await;
    let res = get(gw, "/events?n=5", &[("last-event-id", "evt-41 x")]).await;
    assert_sse_headers(&res);
    read_events_in_lockstep(&up, res, 5, "evt-41 x").await;
    assert_eq!(
        up.state.last_event_id.lock().unwrap().as_ref().unwrap(),
        "evt-41 x",
        "Last-Event-ID reaches the upstream untouched"
    );
}

#[tokio::test]
async fn compression_outside_leaves_the_stream_uncompressed_and_unbuffered() {
    let up = start_upstream().await;
    let gw = gateway(up.addr, SseLayer::new(), true).await;

    // Control: the same stack does compress an ordinary response for this client.
    let plain = get(gw, "/plain", &[("accept-encoding", "gzip")]).await;
    assert_eq!(plain.headers()[header::CONTENT_ENCODING], "gzip");

    let res = get(gw, "/events?n=4", &[("accept-encoding", "gzip")]).await;
    assert_sse_headers(&res);
    read_events_in_lockstep(&up, res, 4, "").await;
}

#[tokio::test]
async fn mixed_case_content_type_is_still_not_compressed() {
    // tower-http's SSE check is a case-sensitive prefix match; SseLayer lowercases the media
    // type first, so compression outside it still leaves the stream alone.
    let up = start_upstream().await;
    let gw = gateway(up.addr, SseLayer::new(), true).await;
    let res = get(gw, "/events?n=3&mixed=1", &[("accept-encoding", "gzip")]).await;
    assert_sse_headers(&res);
    assert_eq!(
        res.headers()[header::CONTENT_TYPE],
        "text/event-stream; charset=utf-8"
    );
    read_events_in_lockstep(&up, res, 3, "").await;
}

#[tokio::test]
async fn heartbeats_fill_idle_gaps_but_never_split_an_event() {
    let up = start_upstream().await;
    let layer = SseLayer::builder().heartbeat(HEARTBEAT).build().unwrap();
    let gw = gateway(up.addr, layer, false).await;
    let res = get(gw, "/idle", &[]).await;
    assert_sse_headers(&res);
    let mut body = res.into_body();

    // Leading heartbeats (if the response head came before the first event) are fine.
    let mut first = next_data(&mut body, WAIT).await.expect("first event");
    while first == ":\n\n" {
        first = next_data(&mut body, WAIT).await.expect("first event");
    }
    assert_eq!(first, "data: first\n\n");

    // Idle between events: heartbeats.
    for _ in 0..2 {
        let hb = next_data(&mut body, WAIT).await.expect("heartbeat in time");
        assert_eq!(hb, ":\n\n");
    }
    ack(up.addr, 1).await;

    // Half an event, then idle: nothing may be sent inside it.
    let mut part = next_data(&mut body, WAIT).await.expect("partial event");
    while part == ":\n\n" {
        part = next_data(&mut body, WAIT).await.expect("partial event");
    }
    assert_eq!(part, "data: par");
    assert_eq!(next_data(&mut body, HEARTBEAT * 5).await, None);
    ack(up.addr, 2).await;

    // The event completes, then heartbeats resume.
    assert_eq!(next_data(&mut body, WAIT).await.unwrap(), "t\n\n");
    assert_eq!(next_data(&mut body, WAIT).await.unwrap(), ":\n\n");
    ack(up.addr, 3).await;
    let mut frames = 0;
    loop {
        match timeout(WAIT, body.frame()).await.expect("end in time") {
            None => break,
            Some(Ok(f)) => assert_eq!(f.into_data().unwrap(), ":\n\n"),
            Some(Err(e)) => panic!("error instead of end: {e}"),
        }
        frames += 1;
        assert!(frames < 50, "stream did not end");
    }
}

#[tokio::test]
async fn client_disconnect_reaches_the_upstream_writer() {
    let up = start_upstream().await;
    let (done_tx, done_rx) = oneshot::channel();
    *up.state.hold_closed.lock().unwrap() = Some(done_tx);
    let layer = SseLayer::builder().heartbeat(HEARTBEAT).build().unwrap();
    let gw = gateway(up.addr, layer, false).await;

    let res = get(gw, "/hold", &[]).await;
    let mut body = res.into_body();
    let mut got = next_data(&mut body, WAIT).await.expect("first event");
    while got == ":\n\n" {
        got = next_data(&mut body, WAIT).await.expect("first event");
    }
    assert_eq!(got, "data: one\n\n");
    // The stream stays open (heartbeats) until we leave.
    assert_eq!(next_data(&mut body, WAIT).await.unwrap(), ":\n\n");
    drop(body);

    timeout(WAIT, done_rx)
        .await
        .expect("upstream writer saw the client leave in time")
        .expect("signal sent");
}

#[tokio::test]
async fn upstream_abort_is_an_error_for_the_client() {
    let up = start_upstream().await;
    let layer = SseLayer::builder().heartbeat(HEARTBEAT).build().unwrap();
    let gw = gateway(up.addr, layer, false).await;

    let res = get(gw, "/abort", &[]).await;
    let mut body = res.into_body();
    assert_eq!(read_until_blank_line(&mut body).await, "data: one\n\n");
    ack(up.addr, 1).await;

    let mut frames = 0;
    loop {
        match timeout(WAIT, body.frame()).await.expect("outcome in time") {
            Some(Ok(f)) => assert_eq!(f.into_data().unwrap(), ":\n\n"),
            Some(Err(_)) => break,
            None => panic!("an aborted upstream must not look like a clean end"),
        }
        frames += 1;
        assert!(frames < 50, "no error arrived");
    }
}

#[tokio::test]
async fn non_sse_responses_pass_through_unchanged() {
    let up = start_upstream().await;
    let layer = SseLayer::builder().heartbeat(HEARTBEAT).build().unwrap();
    let gw = gateway(up.addr, layer, false).await;
    let res = get(gw, "/plain", &[]).await;
    let expected = "plain text, long enough to be worth compressing. ".repeat(40);
    assert_eq!(
        res.headers()[header::CONTENT_LENGTH],
        expected.len().to_string()
    );
    assert!(!res.headers().contains_key(header::CACHE_CONTROL));
    assert!(!res.headers().contains_key("x-accel-buffering"));
    let body = timeout(WAIT, res.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(body, expected);
}
