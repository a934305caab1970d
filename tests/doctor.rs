//! The doctor against real gateway stacks on loopback: a good one passes every check, and each
//! deliberately broken one is named by the check that covers it.
#![cfg(feature = "doctor")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use futures_util::stream::{self, Stream};
use http::{header, HeaderValue, Method, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sandbox_gateway::cors::{AllowOrigin, CorsLayer};
use sandbox_gateway::doctor::{Outcome, Probe, Report};
use sandbox_gateway::host::HostAllowlistLayer;
use sandbox_gateway::isolation::IsolationLayer;
use sandbox_gateway::proxy::ReverseProxy;
use sandbox_gateway::sse::SseLayer;
use tower::ServiceBuilder;

const ORIGIN: &str = "https://app.example";

/// Events every 100 ms, `n` of them, the first at once.
fn ticks(n: u64) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    Sse::new(stream::unfold(0u64, move |k| async move {
        if k >= n {
            return None;
        }
        if k > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some((Ok(Event::default().data(format!("tick {k}"))), k + 1))
    }))
}

async fn echo(mut socket: WebSocket) {
    for _ in 0..100 {
        match socket.recv().await {
            Some(Ok(Message::Text(t))) => {
                if socket.send(Message::Text(t)).await.is_err() {
                    return;
                }
            }
            Some(Ok(_)) => {}
            _ => return,
        }
    }
}

/// The sandbox: an endless-enough event stream, a short one, a WebSocket echo speaking `chat.v2`,
/// and an API that sets its own permissive CORS headers (as many dev servers do).
async fn upstream() -> SocketAddr {
    let app = Router::new()
        .route("/events", get(|| async { ticks(300) }))
        .route("/short", get(|| async { ticks(3) }))
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move { ws.protocols(["chat.v2"]).on_upgrade(echo) }),
        )
        .route(
            "/v1/{*rest}",
            any(|| async {
                (
                    [
                        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                        (header::ACCESS_CONTROL_ALLOW_HEADERS, "*"),
                        (header::ACCESS_CONTROL_ALLOW_METHODS, "*"),
                    ],
                    "{}",
                )
            }),
        );
    serve(app).await
}

/// A private CA and a `localhost` certificate it signed: (CA, leaf, key).
fn pki() -> (
    CertificateDer<'static>,
    CertificateDer<'static>,
    PrivateKeyDer<'static>,
) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "sandbox-gateway doctor test CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (
        ca.der().clone(),
        leaf.der().clone(),
        PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    )
}

/// Serves `app` over TLS on 127.0.0.1, offering `alpn`, HTTP/1.1 and HTTP/2, upgrades enabled.
async fn serve_tls(
    app: Router,
    leaf: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> SocketAddr {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf], key)
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(
                        TokioIo::new(tls),
                        hyper_util::service::TowerToHyperService::new(app),
                    )
                    .await;
            });
        }
    });
    addr
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Which parts of a gateway are left out or broken.
#[derive(Clone, Copy)]
struct Stack {
    cors: bool,
    naive_cors: bool,
    isolation: bool,
    buffer_sse: bool,
    compress_sse: bool,
    websocket: bool,
    host_check: bool,
}

const GOOD: Stack = Stack {
    cors: true,
    naive_cors: false,
    isolation: true,
    buffer_sse: false,
    compress_sse: false,
    websocket: true,
    host_check: true,
};

/// Collects the whole body before answering, as a logging or rewriting middleware might.
async fn buffer(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let (parts, body) = res.into_parts();
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => Response::from_parts(parts, Body::from(bytes)),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// Adds its own Access-Control-Allow-Origin next to whatever the upstream sent.
async fn naive_cors(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    res.headers_mut().append(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static(ORIGIN),
    );
    res
}

/// A gateway wired like `examples/gateway`: the page, `/api/…` behind CORS to the upstream, and
/// everything else (`/events`, `/short`, `/ws`) through SseLayer and ReverseProxy.
async fn gateway(up: SocketAddr, s: Stack) -> SocketAddr {
    serve(app(up, s)).await
}

fn app(up: SocketAddr, s: Stack) -> Router {
    let proxy = ReverseProxy::builder()
        .upstream(format!("http://{up}").parse().unwrap())
        .build()
        .unwrap();
    let api = if s.cors {
        let cors = CorsLayer::builder()
            .allow_origin(AllowOrigin::list([ORIGIN]))
            .allow_methods([Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(Duration::from_secs(600))
            .build()
            .unwrap();
        Router::new().fallback_service(ServiceBuilder::new().layer(cors).service(proxy.clone()))
    } else if s.naive_cors {
        Router::new()
            .fallback_service(proxy.clone())
            .layer(middleware::from_fn(naive_cors))
    } else {
        Router::new().fallback_service(proxy.clone())
    };
    let mut previews = Router::new().fallback_service(
        ServiceBuilder::new()
            .layer(SseLayer::new())
            .service(proxy.clone()),
    );
    if s.buffer_sse {
        previews = previews.layer(middleware::from_fn(buffer));
    }
    if s.compress_sse {
        previews = previews.layer(
            tower_http::compression::CompressionLayer::new()
                .compress_when(tower_http::compression::predicate::SizeAbove::new(0)),
        );
    }
    let mut app = Router::new()
        .route(
            "/",
            get(|| async { Html("<!doctype html><p>host page</p>") }),
        )
        .nest_service("/api", api)
        .merge(previews);
    if !s.websocket {
        app = app.route("/ws", get(|| async { StatusCode::NOT_FOUND }));
    }
    if s.isolation {
        app = app.layer(IsolationLayer::new());
    }
    if s.host_check {
        app = app.layer(HostAllowlistLayer::builder().build().unwrap());
    }
    app
}

/// The probe's timeout per check: far beyond what any check takes on loopback, even in a debug
/// build on a loaded machine (milliseconds; TLS handshakes tens of them).
const CHECK: Duration = Duration::from_secs(20);

async fn probe(gw: SocketAddr, sse: &str) -> Report {
    probe_within(gw, sse, CHECK).await
}

async fn probe_within(gw: SocketAddr, sse: &str, timeout: Duration) -> Report {
    let probe = Probe::builder(format!("http://{gw}/"))
        .origin(ORIGIN)
        .api_path("/api/v1/chat")
        .sse_path(sse)
        .ws_path("/ws")
        .ws_protocol("chat.v2")
        .timeout(timeout)
        .build()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(120), probe.run())
        .await
        .expect("the probe is bounded in time")
}

async fn broken(s: Stack) -> Report {
    let up = upstream().await;
    probe(gateway(up, s).await, "/events").await
}

/// The findings of `name` that are not ok, for assertion messages.
fn outcome(r: &Report, name: &str) -> Outcome {
    r.outcome(name)
        .unwrap_or_else(|| panic!("no `{name}` check in\n{r}"))
}

#[tokio::test]
async fn a_good_stack_passes_every_check() {
    let up = upstream().await;
    let gw = gateway(up, GOOD).await;
    let r = probe(gw, "/events").await;
    for name in [
        "reach",
        "secure-context",
        "port",
        "isolation",
        "cors",
        "sse",
        "websocket",
        "host",
    ] {
        assert_eq!(outcome(&r, name), Outcome::Ok, "{name} in\n{r}");
    }
    assert_eq!(r.worst(), Outcome::Ok, "{r}");
    assert!(!r.failed());
    assert!(
        r.to_string().lines().all(|l| l.starts_with("ok    ")),
        "{r}"
    );
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).expect("valid JSON");
    assert_eq!(json["outcome"], "ok");
    assert_eq!(json["checks"].as_array().unwrap().len(), r.checks().len());
    let ws = r.named("websocket").next().unwrap();
    assert!(ws.cause.contains("chat.v2"), "{ws}");
}

#[tokio::test]
async fn an_unreachable_gateway_is_one_failure_naming_it() {
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let r = probe(closed, "/events").await;
    let fails: Vec<_> = r
        .checks()
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .collect();
    assert_eq!(fails.len(), 1, "{r}");
    assert_eq!(fails[0].name, "reach");
    assert!(fails[0].cause.contains(&closed.to_string()), "{r}");
    assert!(r.named("cors").next().is_none(), "{r}");
}

#[tokio::test]
async fn cors_removed_leaves_the_upstreams_star_which_does_not_cover_authorization() {
    let r = broken(Stack {
        cors: false,
        ..GOOD
    })
    .await;
    assert_eq!(outcome(&r, "cors"), Outcome::Fail, "{r}");
    assert!(
        r.named("cors")
            .any(|c| c.cause.contains("does not cover Authorization")),
        "{r}"
    );
    assert!(r.named("cors").any(|c| c.cause.contains("`*`")), "{r}");
    for name in ["isolation", "sse", "websocket", "host"] {
        assert_eq!(outcome(&r, name), Outcome::Ok, "{name} in\n{r}");
    }
}

#[tokio::test]
async fn a_cors_layer_that_does_not_own_cors_sends_two_allow_origins() {
    let r = broken(Stack {
        cors: false,
        naive_cors: true,
        ..GOOD
    })
    .await;
    assert_eq!(outcome(&r, "cors"), Outcome::Fail, "{r}");
    assert!(
        r.named("cors")
            .any(|c| c.cause.contains("2 Access-Control-Allow-Origin")
                && c.cause.contains("leak through")),
        "{r}"
    );
}

#[tokio::test]
async fn isolation_removed_fails_naming_coop_and_coep() {
    let r = broken(Stack {
        isolation: false,
        ..GOOD
    })
    .await;
    assert_eq!(outcome(&r, "isolation"), Outcome::Fail, "{r}");
    let c = r.named("isolation").next().unwrap();
    assert!(
        c.cause.contains("Cross-Origin-Opener-Policy is missing"),
        "{c}"
    );
    assert!(c.cause.contains("SharedArrayBuffer"), "{c}");
    assert!(c.fix.contains("IsolationLayer"), "{c}");
    assert_eq!(outcome(&r, "cors"), Outcome::Ok, "{r}");
}

#[tokio::test]
async fn a_buffering_middleware_holds_an_endless_stream_until_the_timeout() {
    // The timeout firing is what this test watches, so it is short; the other checks it asserts
    // take milliseconds.
    let up = upstream().await;
    let gw = gateway(
        up,
        Stack {
            buffer_sse: true,
            ..GOOD
        },
    )
    .await;
    let r = probe_within(gw, "/events", Duration::from_secs(3)).await;
    assert_eq!(outcome(&r, "sse"), Outcome::Fail, "{r}");
    assert!(
        r.named("sse").any(|c| c.cause.contains("no response head")),
        "{r}"
    );
    assert_eq!(outcome(&r, "websocket"), Outcome::Ok, "{r}");
}

#[tokio::test]
async fn a_buffering_middleware_on_a_finite_stream_shows_as_content_length() {
    let up = upstream().await;
    let gw = gateway(
        up,
        Stack {
            buffer_sse: true,
            ..GOOD
        },
    )
    .await;
    let r = probe(gw, "/short").await;
    assert_eq!(outcome(&r, "sse"), Outcome::Fail, "{r}");
    assert!(
        r.named("sse").any(|c| c.cause.contains("Content-Length")),
        "{r}"
    );
    // The whole body came at once and the stream was over.
    assert!(
        r.named("sse")
            .any(|c| c.cause.contains("ended right after")),
        "{r}"
    );
}

#[tokio::test]
async fn compressing_event_streams_fails_naming_content_encoding() {
    let r = broken(Stack {
        compress_sse: true,
        ..GOOD
    })
    .await;
    assert!(
        r.named("sse")
            .any(|c| c.outcome == Outcome::Fail && c.cause.contains("Content-Encoding: gzip")),
        "{r}"
    );
}

#[tokio::test]
async fn websocket_disabled_fails_naming_the_status() {
    let r = broken(Stack {
        websocket: false,
        ..GOOD
    })
    .await;
    assert_eq!(outcome(&r, "websocket"), Outcome::Fail, "{r}");
    let c = r.named("websocket").next().unwrap();
    assert!(c.cause.contains("404"), "{c}");
}

#[tokio::test]
async fn an_unasked_subprotocol_is_not_required_but_an_unechoed_one_fails() {
    let up = upstream().await;
    let gw = gateway(up, GOOD).await;
    let r = Probe::builder(format!("http://{gw}/"))
        .ws_path("/ws")
        .ws_protocol("other.v1")
        .timeout(CHECK)
        .build()
        .unwrap()
        .run()
        .await;
    let c = r.named("websocket").next().unwrap();
    assert_eq!(c.outcome, Outcome::Fail, "{r}");
    assert!(c.cause.contains("other.v1 not echoed"), "{c}");
}

#[tokio::test]
async fn host_check_removed_warns_of_dns_rebinding() {
    let r = broken(Stack {
        host_check: false,
        ..GOOD
    })
    .await;
    assert_eq!(outcome(&r, "host"), Outcome::Warn, "{r}");
    let c = r.named("host").next().unwrap();
    assert!(
        c.cause.contains("200") && c.cause.contains("DNS-rebinding"),
        "{c}"
    );
    assert!(!r.failed(), "{r}");
}

async fn probe_tls(gw: SocketAddr, ca: CertificateDer<'static>) -> Report {
    let probe = Probe::builder(format!("https://localhost:{}/", gw.port()))
        .origin(ORIGIN)
        .api_path("/api/v1/chat")
        .sse_path("/events")
        .ws_path("/ws")
        .ws_protocol("chat.v2")
        .add_root_certificate(ca)
        .timeout(CHECK)
        .build()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(120), probe.run())
        .await
        .expect("the probe is bounded in time")
}

#[tokio::test]
async fn https_offering_h2_passes_every_check_over_h2() {
    let up = upstream().await;
    let (ca, leaf, key) = pki();
    let gw = serve_tls(app(up, GOOD), leaf, key, &[b"h2", b"http/1.1"]).await;
    let r = probe_tls(gw, ca).await;
    assert_eq!(r.worst(), Outcome::Ok, "{r}");
    assert_eq!(outcome(&r, "http2"), Outcome::Ok, "{r}");
    assert!(
        r.named("reach").any(|c| c.cause.contains("HTTP/2")),
        "the page was fetched over h2:\n{r}"
    );
    for name in ["isolation", "cors", "sse", "websocket", "host"] {
        assert_eq!(outcome(&r, name), Outcome::Ok, "{name} in\n{r}");
    }
}

#[tokio::test]
async fn https_offering_only_http1_warns_http1_only() {
    let up = upstream().await;
    let (ca, leaf, key) = pki();
    let gw = serve_tls(app(up, GOOD), leaf, key, &[b"http/1.1"]).await;
    let r = probe_tls(gw, ca).await;
    assert_eq!(outcome(&r, "http2"), Outcome::Warn, "{r}");
    let c = r.named("http2").next().unwrap();
    assert!(c.cause.starts_with("HTTP/1.1 only"), "{c}");
    assert!(!r.failed(), "{r}");
}

#[tokio::test]
async fn https_with_an_untrusted_certificate_is_one_reach_failure() {
    let up = upstream().await;
    let (_, leaf, key) = pki();
    let (other_ca, _, _) = pki();
    let gw = serve_tls(app(up, GOOD), leaf, key, &[b"h2", b"http/1.1"]).await;
    let r = probe_tls(gw, other_ca).await;
    assert_eq!(outcome(&r, "reach"), Outcome::Fail, "{r}");
    assert_eq!(
        r.checks()
            .iter()
            .filter(|c| c.outcome == Outcome::Fail)
            .count(),
        1,
        "{r}"
    );
}

#[tokio::test]
async fn a_refused_preflight_names_the_status_and_the_refusal() {
    let up = upstream().await;
    let gw = gateway(up, GOOD).await;
    let ask = |headers: &'static [&'static str]| {
        Probe::builder(format!("http://{gw}/"))
            .origin(ORIGIN)
            .api_path("/api/v1/chat")
            .preflight_headers(headers.iter().copied())
            .timeout(CHECK)
            .build()
            .unwrap()
    };
    // The gateway allows authorization and content-type only.
    let r = ask(&["authorization", "x-trace"]).run().await;
    let c = r.named("cors").next().unwrap();
    assert_eq!(c.outcome, Outcome::Fail, "{r}");
    assert!(
        c.cause.contains("403") && c.cause.contains("x-trace"),
        "{c}"
    );
    let r = ask(&["content-type"]).run().await;
    assert_eq!(outcome(&r, "cors"), Outcome::Ok, "{r}");
}
