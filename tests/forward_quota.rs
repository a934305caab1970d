//! Quotas per caller in one gateway process (memory): the N+1th request of a window, a stream
//! over the concurrent limit and a body over the byte budget get `429` with `Retry-After`, and
//! never reach the upstream. Two processes sharing Redis: `tests/forward_replicas.rs`.
#![cfg(all(feature = "forward", feature = "auth"))]

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
use sandbox_gateway::forward::{ApiForward, Callers, Quota, Secret, Upstream};
use support::{client, full, serve, serve_fn, within, TestBody};
use tokio::sync::Notify;

/// An upstream counting requests; `/v1/stream` holds its answer open until `release` is notified.
async fn upstream(hits: Arc<AtomicUsize>, release: Arc<Notify>) -> SocketAddr {
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
                        1 => release.notified().await,
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

fn post(url: String, token: &str, body: TestBody) -> Request<TestBody> {
    Request::post(url)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(body)
        .unwrap()
}

async fn refused(res: Response<Incoming>, retry_after: &str, what: &str) {
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()[header::RETRY_AFTER], retry_after);
    let body: serde_json::Value = serde_json::from_str(&support::text(res).await).unwrap();
    assert_eq!(body["error"]["type"], "rate_limited");
    assert_eq!(
        body["error"]["message"],
        format!("quota exceeded: {what}; retry after {retry_after} s")
    );
}

#[tokio::test]
async fn quotas_per_caller_in_memory() {
    let signer = TokenSigner::new([3u8; 32]).unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let api = upstream(hits.clone(), release.clone()).await;
    let forward = ApiForward::builder()
        .callers(Callers::api_tokens(signer.clone()))
        .upstream(
            Upstream::new("llm", format!("http://{api}/v1"))
                .allow_methods([Method::POST])
                .allow_paths(["/"])
                .inject_header(header::AUTHORIZATION, Secret::bearer("sk-k").unwrap())
                .allow_private(true)
                .body_limit(1000),
        )
        .quota(
            Quota::new()
                .requests(4, Duration::from_secs(60))
                .request_bytes(2000, Duration::from_secs(60))
                .concurrent_streams(1),
        )
        .build()
        .unwrap();
    let gw = serve(forward).await;
    let url = |p: &str| format!("http://{gw}/llm{p}");
    let ttl = Duration::from_secs(600);
    let alice = signer.issue_api("alice", ["llm"], ttl).unwrap();
    let bob = signer.issue_api("bob", ["llm"], ttl).unwrap();
    let carol = signer.issue_api("carol", ["llm"], ttl).unwrap();
    let c = client();

    // Requests: 4 per minute, one more every 15 s. The 5th is refused, bob has his own budget.
    for _ in 0..4 {
        let res = within(10, c.request(post(url("/x"), &alice, full("{}"))))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = within(10, c.request(post(url("/x"), &alice, full("{}"))))
        .await
        .unwrap();
    refused(res, "15", "too many requests").await;
    let res = within(10, c.request(post(url("/x"), &bob, full("{}"))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 5);

    // Streams: one open at a time. The first holds its slot until its body ends.
    let res = within(10, c.request(post(url("/stream"), &bob, full("{}"))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut stream = res.into_body();
    let first = within(10, stream.frame()).await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "data: 0\n\n");
    let res = within(10, c.request(post(url("/x"), &bob, full("{}"))))
        .await
        .unwrap();
    refused(res, "1", "too many streams open at once").await;
    assert_eq!(hits.load(Ordering::SeqCst), 6);
    release.notify_one();
    let rest = within(10, stream.collect()).await.unwrap().to_bytes();
    assert_eq!(rest, "data: 1\n\n");
    // The slot is free once the body ended.
    let mut freed = false;
    for _ in 0..50 {
        let res = within(10, c.request(post(url("/x"), &bob, full("{}"))))
            .await
            .unwrap();
        if res.status() == StatusCode::OK {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "the stream's slot was given back");

    // Bytes: 2000 per minute, a byte coming back every 30 ms; two 900-byte bodies pass, the third
    // lacks 700 bytes of budget: 21 s.
    for _ in 0..2 {
        let res = within(
            10,
            c.request(post(url("/x"), &carol, full(vec![b'b'; 900]))),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let before = hits.load(Ordering::SeqCst);
    let res = within(
        10,
        c.request(post(url("/x"), &carol, full(vec![b'b'; 900]))),
    )
    .await
    .unwrap();
    refused(res, "21", "too many request bytes").await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "refused requests never reach the upstream"
    );
}
