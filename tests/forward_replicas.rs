//! Two gateway processes sharing one quota in Redis.
//!
//! This test has no libtest harness: run as `forward_replicas`, it starts `redis-server`, an API
//! upstream, and itself twice more as gateway processes (`forward_replicas --gateway REDIS_URL
//! UPSTREAM`), each with its own Redis connection; then it spends one caller's budget across both
//! and checks that neither grants more than the shared budget. A gateway process serves until its
//! standard input closes (the parent holds it), at most two minutes.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use sandbox_gateway::auth::TokenSigner;
use sandbox_gateway::forward::{
    ApiForward, Callers, Quota, QuotaStore, RedisQuotaStore, Secret, Upstream,
};
use support::redis::RedisServer;
use support::replica::{self, announce, Replica};
use support::{client, full, serve_fn, within, TestBody};
use tokio::sync::Semaphore;

/// The signing key both gateways share, as replicas do.
const SIGNING_KEY: [u8; 32] = [0x5a; 32];
/// Requests per minute per caller, across both gateways.
const BUDGET: usize = 4;
/// Streams open at once per caller, across both gateways. (A stream's slot is given back in
/// Redis just after its body ends, asynchronously: sequential requests can overlap by one.)
const STREAMS: usize = 2;
/// Request bytes per minute per caller, across both gateways.
const BYTES: u64 = 2048;

fn main() {
    replica::main(
        "two_gateways_share_one_budget",
        |redis_url, addr| async move { gateway(&redis_url, addr).await },
        two_gateways_share_one_budget,
    );
}

/// One gateway process: the forwarder with its own connection to Redis.
async fn gateway(redis_url: &str, upstream: SocketAddr) {
    let store = RedisQuotaStore::connect(redis_url).await.unwrap();
    let forward = ApiForward::builder()
        .callers(Callers::api_tokens(TokenSigner::new(SIGNING_KEY).unwrap()))
        .upstream(
            Upstream::new("llm", format!("http://{upstream}/v1"))
                .allow_methods([Method::POST])
                .allow_paths(["/"])
                .inject_header(header::AUTHORIZATION, Secret::bearer("sk-shared").unwrap())
                .allow_private(true)
                .body_limit(1000),
        )
        .quota(
            Quota::new()
                .requests(BUDGET as u32, Duration::from_secs(60))
                .request_bytes(BYTES, Duration::from_secs(60))
                .concurrent_streams(STREAMS as u32),
        )
        .quota_store(QuotaStore::redis(store))
        .build()
        .unwrap();
    let addr = support::serve(forward).await;
    announce(addr).await;
}

fn spawn_gateway(redis_url: &str, upstream: SocketAddr) -> Replica {
    Replica::spawn(&["--gateway", redis_url, &upstream.to_string()])
}

/// An upstream counting requests; `/v1/stream` holds its answer until it gets a permit of
/// `release`.
async fn upstream(hits: Arc<AtomicUsize>, release: Arc<Semaphore>) -> SocketAddr {
    serve_fn(move |req: Request<Incoming>| {
        let (hits, release) = (hits.clone(), release.clone());
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            if req.uri().path() != "/v1/stream" {
                return Response::new(full("done"));
            }
            let events = futures_util::stream::unfold(0, move |i| {
                let release = release.clone();
                async move {
                    match i {
                        0 => {}
                        1 => release.acquire().await.unwrap().forget(),
                        _ => return None,
                    }
                    let frame = Frame::data(Bytes::from(format!("data: {i}\n\n")));
                    Some((Ok::<_, support::BoxError>(frame), i + 1))
                }
            });
            let body: TestBody = StreamBody::new(events).boxed_unsync();
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(body)
                .unwrap()
        }
    })
    .await
}

async fn two_gateways_share_one_budget() {
    let redis = RedisServer::start().await;
    let hits = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Semaphore::new(0));
    let api = upstream(hits.clone(), release.clone()).await;
    let a = spawn_gateway(&redis.url, api);
    let b = spawn_gateway(&redis.url, api);
    assert_ne!(a.addr, b.addr);
    let signer = TokenSigner::new(SIGNING_KEY).unwrap();
    let ttl = Duration::from_secs(600);
    let alice = signer.issue_api("alice", ["llm"], ttl).unwrap();
    let bob = signer.issue_api("bob", ["llm"], ttl).unwrap();
    let carol = signer.issue_api("carol", ["llm"], ttl).unwrap();
    let c = client();
    let send = |gw: &Replica, path: &str, token: &str, body: Vec<u8>| {
        let req = Request::post(format!("http://{}/llm{path}", gw.addr))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(full(body))
            .unwrap();
        within(20, c.request(req))
    };
    let call = |gw: &Replica, path: &str, token: &str| send(gw, path, token, b"{}".to_vec());

    // The budget is spent alternately on both processes; the next request fails on either.
    for i in 0..BUDGET {
        let gw = if i % 2 == 0 { &a } else { &b };
        let res = call(gw, "/x", &alice).await.unwrap();
        let status = res.status();
        assert_eq!(
            status,
            StatusCode::OK,
            "request {i}: {}",
            support::text(res).await
        );
    }
    for gw in [&a, &b] {
        let res = call(gw, "/x", &alice).await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[header::RETRY_AFTER], "15");
    }
    assert_eq!(hits.load(Ordering::SeqCst), BUDGET);

    // Two streams at a time across both processes: one open on each, a third is refused.
    let mut open = Vec::new();
    for gw in [&a, &b] {
        let res = call(gw, "/stream", &bob).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let mut stream = res.into_body();
        let first = within(10, stream.frame()).await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "data: 0\n\n");
        open.push(stream);
    }
    let res = call(&b, "/x", &bob).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let body = support::text(res).await;
    assert!(body.contains("too many streams open at once"), "{body}");
    // End both streams.
    release.add_permits(STREAMS);
    for stream in open.drain(..) {
        assert_eq!(
            within(10, stream.collect()).await.unwrap().to_bytes(),
            "data: 1\n\n"
        );
    }
    // Released in Redis once the stream ended (asynchronously: bounded retries).
    let mut freed = false;
    for _ in 0..100 {
        let res = call(&b, "/x", &bob).await.unwrap();
        if res.status() == StatusCode::OK {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "the stream's slot was given back across processes");

    // Bytes: 2048 a minute. A 1000-byte body on each process passes; the third lacks 952 bytes of
    // budget, which come back in 27.9 s.
    for gw in [&a, &b] {
        let res = send(gw, "/x", &carol, vec![b'c'; 1000]).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = send(&a, "/x", &carol, vec![b'c'; 1000]).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()[header::RETRY_AFTER], "28");
    let body = support::text(res).await;
    assert!(body.contains("too many request bytes"), "{body}");
    drop(open);
    drop((a, b));
}
