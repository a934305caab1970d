//! CorsLayer over real sockets: an axum gateway whose `ReverseProxy` forwards to a real upstream that sends its own
//! CORS headers, preflights answered before authentication, CORS headers on error answers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sandbox_gateway::cors::{AllowOrigin, CorsLayer};
use sandbox_gateway::proxy::ReverseProxy;
use sandbox_gateway::route::Upstream;
use tower::ServiceExt;

const APP: &str = "https://k3x.local-credentialless.webcontainer-api.io";
const TIMEOUT: Duration = Duration::from_secs(10);

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The upstream: an app that sets CORS headers of its own, as dev servers do.
async fn upstream() -> SocketAddr {
    let router = Router::new()
        .route(
            "/data",
            any(|| async {
                (
                    [
                        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                        (header::VARY, "Accept-Encoding"),
                        (header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "false"),
                    ],
                    "data",
                )
            }),
        )
        .route(
            "/too-big",
            any(|| async {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
                    "too big",
                )
            }),
        );
    serve(router).await
}

#[derive(Clone)]
struct Gateway {
    proxy: ReverseProxy,
    calls: Arc<AtomicUsize>,
}

/// A gateway that requires a bearer token and hands the request to the crate's `ReverseProxy`
/// (which answers 502 itself when the upstream is down).
async fn forward(State(g): State<Gateway>, req: Request) -> Response {
    g.calls.fetch_add(1, Ordering::SeqCst);
    if req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        != Some(b"Bearer t0k")
    {
        return (StatusCode::UNAUTHORIZED, "no token").into_response();
    }
    match g.proxy.oneshot(req).await {
        Ok(res) => res.map(Body::new),
        Err(never) => match never {},
    }
}

async fn gateway(upstream: SocketAddr, cors: CorsLayer) -> (SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let proxy = ReverseProxy::builder()
        .upstream(format!("http://{upstream}").parse::<Upstream>().unwrap())
        .build()
        .unwrap();
    let state = Gateway {
        proxy,
        calls: calls.clone(),
    };
    let router = Router::new()
        .fallback(forward)
        .with_state(state)
        .layer(cors);
    (serve(router).await, calls)
}

fn seed_cors() -> CorsLayer {
    CorsLayer::builder()
        .allow_origin(AllowOrigin::list(["https://*.webcontainer-api.io"]))
        .allow_methods([Method::GET, Method::POST, Method::PUT])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::ETAG])
        .allow_credentials(true)
        .max_age(Duration::from_secs(7200))
        .build()
        .unwrap()
}

async fn send(req: http::Request<Body>) -> (StatusCode, HeaderMap, String) {
    let res = tokio::time::timeout(TIMEOUT, client().request(req))
        .await
        .expect("timed out")
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = tokio::time::timeout(TIMEOUT, body.collect())
        .await
        .expect("timed out")
        .unwrap()
        .to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn values(h: &HeaderMap, name: header::HeaderName) -> Vec<String> {
    h.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn vary_tokens(h: &HeaderMap) -> Vec<String> {
    values(h, header::VARY)
        .iter()
        .flat_map(|v| {
            v.split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn seed_preflight_is_answered_before_auth_and_proxying() {
    let up = upstream().await;
    let (gw, calls) = gateway(up, seed_cors()).await;
    let req = http::Request::options(format!("http://{gw}/data"))
        .header(header::ORIGIN, APP)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type",
        )
        .body(Body::empty())
        .unwrap();
    let (status, h, body) = send(req).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, "");
    assert_eq!(values(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), [APP]);
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, POST, PUT");
    assert_eq!(
        h[header::ACCESS_CONTROL_ALLOW_HEADERS],
        "authorization, content-type"
    );
    assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "7200");
    let vary = vary_tokens(&h);
    for t in [
        "origin",
        "access-control-request-method",
        "access-control-request-headers",
    ] {
        assert!(vary.contains(&t.to_owned()), "{vary:?}");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "preflight reached the gateway"
    );
}

#[tokio::test]
async fn refused_preflight_is_403_with_a_reason_and_no_cors_headers() {
    let up = upstream().await;
    let (gw, calls) = gateway(up, seed_cors()).await;
    for (origin, method, why) in [
        ("https://evil-webcontainer-api.io", "POST", "origin"),
        ("https://webcontainer-api.io", "POST", "origin"),
        ("null", "POST", "origin"),
        (APP, "DELETE", "method DELETE"),
    ] {
        let req = http::Request::options(format!("http://{gw}/data"))
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, method)
            .body(Body::empty())
            .unwrap();
        let (status, h, body) = send(req).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin} {method}");
        assert!(body.contains(why), "{body}");
        assert!(
            h.keys().all(|k| !k.as_str().starts_with("access-control-")),
            "{h:?}"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn other_options_requests_reach_the_app() {
    let up = upstream().await;
    let (gw, calls) = gateway(up, seed_cors()).await;
    // OPTIONS with Origin but no Access-Control-Request-Method is not a preflight.
    let req = http::Request::options(format!("http://{gw}/data"))
        .header(header::ORIGIN, APP)
        .body(Body::empty())
        .unwrap();
    let (status, h, _) = send(req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(values(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), [APP]);
    let req = http::Request::options(format!("http://{gw}/data"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(req).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn upstream_acao_is_replaced_and_vary_merged() {
    let up = upstream().await;
    let (gw, _) = gateway(up, seed_cors()).await;
    let req = http::Request::post(format!("http://{gw}/data"))
        .header(header::ORIGIN, APP)
        .header(header::AUTHORIZATION, "Bearer t0k")
        .body(Body::from("{}"))
        .unwrap();
    let (status, h, body) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "data");
    assert_eq!(values(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), [APP]);
    assert_eq!(
        values(&h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
        ["true"]
    );
    assert_eq!(values(&h, header::ACCESS_CONTROL_EXPOSE_HEADERS), ["etag"]);
    let vary = vary_tokens(&h);
    assert_eq!(vary, ["accept-encoding", "origin"]);

    // The same upstream answer reaches a refused origin without any CORS header: the upstream's
    // `*` does not leak out.
    let req = http::Request::get(format!("http://{gw}/data"))
        .header(header::ORIGIN, "https://evil.example")
        .header(header::AUTHORIZATION, "Bearer t0k")
        .body(Body::empty())
        .unwrap();
    let (status, h, _) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        h.keys().all(|k| !k.as_str().starts_with("access-control-")),
        "{h:?}"
    );
    assert_eq!(vary_tokens(&h), ["accept-encoding", "origin"]);
}

#[tokio::test]
async fn error_answers_carry_cors_headers() {
    let up = upstream().await;
    let (gw, _) = gateway(up, seed_cors()).await;
    // 401 from the gateway itself.
    let req = http::Request::get(format!("http://{gw}/data"))
        .header(header::ORIGIN, APP)
        .body(Body::empty())
        .unwrap();
    let (status, h, _) = send(req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(values(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), [APP]);
    // 413 from the upstream, which also sent `*`.
    let req = http::Request::put(format!("http://{gw}/too-big"))
        .header(header::ORIGIN, APP)
        .header(header::AUTHORIZATION, "Bearer t0k")
        .body(Body::from(vec![0u8; 1024]))
        .unwrap();
    let (status, h, _) = send(req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(values(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), [APP]);

    // 502 when the upstream is down: point the gateway at a port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (gw, _) = gateway(closed, seed_cors()).await;
    let req = http::Request::get(format!("http://{gw}/data"))
        .header(header::ORIGIN, APP)
        .header(header::AUTHORIZATION, "Bearer t0k")
        .body(Body::empty())
        .unwrap();
    let (status, h, _) = send(req).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(values(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), [APP]);
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
}

#[tokio::test]
async fn private_network_preflight() {
    let up = upstream().await;
    let cors = CorsLayer::builder()
        .allow_origin(AllowOrigin::exact("https://app.example.com"))
        .allow_private_network(true)
        .build()
        .unwrap();
    let (gw, _) = gateway(up, cors).await;
    let req = http::Request::options(format!("http://{gw}/data"))
        .header(header::ORIGIN, "https://app.example.com")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .header("access-control-request-private-network", "true")
        .body(Body::empty())
        .unwrap();
    let (status, h, _) = send(req).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(h["access-control-allow-private-network"], "true");
    assert_eq!(
        h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
}

#[tokio::test]
async fn tower_http_cors_leaks_the_upstream_wildcard_where_ours_does_not() {
    // The same gateway with tower-http's layer: for a refused origin the upstream's `*` passes
    // through, and every OPTIONS is swallowed. This pins the difference the module docs describe.
    let up = upstream().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let state = Gateway {
        proxy: ReverseProxy::builder()
            .upstream(format!("http://{up}").parse::<Upstream>().unwrap())
            .build()
            .unwrap(),
        calls: calls.clone(),
    };
    let theirs =
        tower_http::cors::CorsLayer::new().allow_origin(tower_http::cors::AllowOrigin::list([
            "https://app.example.com".parse().unwrap(),
        ]));
    let gw = serve(
        Router::new()
            .fallback(forward)
            .with_state(state)
            .layer(theirs),
    )
    .await;
    let req = http::Request::get(format!("http://{gw}/data"))
        .header(header::ORIGIN, "https://evil.example")
        .header(header::AUTHORIZATION, "Bearer t0k")
        .body(Body::empty())
        .unwrap();
    let (_, h, _) = send(req).await;
    assert_eq!(values(&h, header::ACCESS_CONTROL_ALLOW_ORIGIN), ["*"]);
    let req = http::Request::options(format!("http://{gw}/data"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(req).await.0, StatusCode::OK);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "tower-http answered the plain OPTIONS"
    );
}
