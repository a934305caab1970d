//! `examples/app_builder.rs` keeps its promise: the host's route mints an API token, an allowed
//! app origin uses it as its SDK key to call a named API through `/api/proxy/{name}/…` (the
//! SDK's preflight passes), the key is injected on the server and never comes back, the event
//! stream arrives event by event, callers without a token are refused, the host page is
//! cross-origin isolated, and other origins are refused.
#![cfg(all(feature = "forward", feature = "auth"))]

mod support;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use sandbox_gateway::auth::TokenSigner;
use sandbox_gateway::forward::Secret;
use support::{client, empty, full, text, within, TestBody};
use tokio::sync::Notify;

#[allow(dead_code)]
#[path = "../examples/app_builder.rs"]
mod app_builder;

const KEY: &str = "sk-test-key-7f3a";
const APP: &str = "https://k3x9q2.local-credentialless.webcontainer-api.io";

/// A model API on loopback: `POST /v1/chat/completions` with the right key streams two events,
/// the second only once `next` is notified; anything else is 401.
async fn model_api(next: Arc<Notify>) -> std::net::SocketAddr {
    support::serve_fn(move |req: Request<Incoming>| {
        let next = next.clone();
        async move {
            let key = req.headers().get(header::AUTHORIZATION).cloned();
            if req.uri().path() != "/v1/chat/completions"
                || key.as_ref().and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {KEY}"))
            {
                let mut res = Response::new(full("missing or wrong key"));
                *res.status_mut() = StatusCode::UNAUTHORIZED;
                return res;
            }
            let events = futures_util::stream::unfold(0, move |i| {
                let next = next.clone();
                async move {
                    let data = match i {
                        0 => "data: {\"token\":\"Hello\"}\n\n",
                        1 => {
                            next.notified().await;
                            "data: {\"token\":\" world\"}\n\n"
                        }
                        2 => "data: [DONE]\n\n",
                        _ => return None,
                    };
                    Some((Ok::<_, Infallible>(Frame::data(Bytes::from(data))), i + 1))
                }
            });
            let body: TestBody = StreamBody::new(events)
                .map_err(|e| match e {})
                .boxed_unsync();
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(body)
                .unwrap()
        }
    })
    .await
}

#[tokio::test]
async fn app_builder_example_forwards_streams_and_isolates() {
    let next = Arc::new(Notify::new());
    let api = model_api(next.clone()).await;
    let upstream = app_builder::api(
        "local",
        &format!("http://127.0.0.1:{}/v1", api.port()),
        Some(Secret::bearer(KEY).unwrap()),
    )
    .unwrap();
    let app = app_builder::app(
        vec![upstream],
        vec!["https://*.webcontainer-api.io".to_owned()],
        TokenSigner::random().unwrap(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = format!("http://{gw}/api/proxy/local/chat/completions");

    // The app's preflight, as the OpenAI SDK's fetch makes it: 204, its origin allowed.
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri(&url)
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization,content-type,x-stainless-arch,x-stainless-lang,\
                 x-stainless-os,x-stainless-package-version,x-stainless-retry-count,\
                 x-stainless-runtime,x-stainless-runtime-version,x-stainless-timeout",
            )
            .body(empty())
            .unwrap()
    };
    let res = within(10, client().request(preflight(APP))).await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], APP);

    // The host page's route mints the token.
    let res = within(
        10,
        client().request(
            Request::post(format!("http://{gw}/api/token"))
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let token = text(res).await;

    // Without it: 401, and the model API is not reached (it would answer 401 with another body).
    let call = |auth: Option<String>| {
        let mut req = Request::post(&url)
            .header(header::ORIGIN, APP)
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-stainless-lang", "js")
            .body(full(r#"{"stream":true}"#))
            .unwrap();
        if let Some(a) = auth {
            req.headers_mut()
                .insert(header::AUTHORIZATION, a.parse().unwrap());
        }
        req
    };
    for auth in [None, Some("Bearer from-the-browser".to_owned())] {
        let res = within(10, client().request(call(auth))).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], APP);
        assert!(text(res).await.contains("\"type\":\"unauthorized\""));
    }

    // The call: the app's token is replaced by the server's key, events arrive one by one.
    let res = within(10, client().request(call(Some(format!("Bearer {token}")))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], APP);
    assert!(res.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    for (name, value) in res.headers() {
        assert!(
            !value
                .as_bytes()
                .windows(KEY.len())
                .any(|w| w == KEY.as_bytes()),
            "{name}: the key came back"
        );
    }
    let mut body = res.into_body();
    let mut seen = String::new();
    // The second event is held until the first has reached the client: only streaming passes.
    while !seen.contains("Hello") {
        let frame = within(10, body.frame()).await.unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(!seen.contains("world"), "{seen}");
    next.notify_one();
    while let Some(frame) = within(10, body.frame()).await {
        if let Ok(data) = frame.unwrap().into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(seen.contains(" world") && seen.contains("[DONE]"), "{seen}");
    assert!(!seen.contains(KEY), "{seen}");

    // The host page is cross-origin isolated.
    let res = within(
        10,
        client().request(Request::get(format!("http://{gw}/")).body(empty()).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cross-origin-opener-policy"], "same-origin");
    assert_eq!(
        res.headers()["cross-origin-embedder-policy"],
        "credentialless"
    );
    assert!(text(res).await.contains("crossOriginIsolated"));

    // Another site's preflight is refused, with no CORS header.
    let res = within(10, client().request(preflight("https://evil.example")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .is_none());
}
