//! The embedded "external API" behind `/api/proxy/demo-llm/`: HTTPS with a self-signed certificate
//! for `localhost`, HTTP/2 only (ALPN offers `h2` alone), streaming chat completions as Server-Sent
//! Events to callers that present `Authorization: Bearer demo-key`; and the gateway's side of it:
//! the forwarder, which spends that key only for callers holding an API token from the host's
//! route `POST /api/llm-token`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use http::Method;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use sandbox_gateway::auth::TokenSigner;
use sandbox_gateway::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};
use sandbox_gateway::forward::{ApiForward, Callers, Quota, Secret, Upstream};
use tokio_rustls::rustls;
use tower::ServiceBuilder;

/// The key the demo API expects; the gateway injects it, the browser never sees it.
pub const DEMO_KEY: &str = "demo-key";

const TOKENS: &[&str] = &[
    "Hello", " from", " the", " demo", " model", ":", " each", " token", " is", " one", " event",
    ",", " about", " 50", " ms", " apart", ".",
];

/// The running demo API: its address and the DER certificate to trust.
pub struct Llm {
    pub addr: SocketAddr,
    pub cert: Vec<u8>,
}

/// Starts the demo API on `127.0.0.1`, a free port.
pub async fn start() -> Result<Llm, Box<dyn std::error::Error>> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        ck.signing_key.serialize_der(),
    ));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().route("/v1/chat/completions", post(completions));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                    .await;
            });
        }
    });
    Ok(Llm {
        addr,
        cert: cert.to_vec(),
    })
}

/// How long an API token from `POST /api/llm-token` is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// The gateway's API routes: `POST /api/llm-token` (the host's route minting a token for
/// `demo-llm`, as plain text; a real host checks the user's session first) and the service to
/// mount at `/api/proxy`: CORS for `origins` with the headers API SDKs send, then the forwarder
/// to the demo API for token holders only, with quotas and SSE heartbeats.
pub fn api(llm: &Llm, origins: &[String]) -> Result<(Router, Router), Box<dyn std::error::Error>> {
    // One process: a random key (replicas share one, `TokenSigner::new`).
    let signer = TokenSigner::random()?;
    let forward = ApiForward::builder()
        .callers(Callers::api_tokens(signer.clone()))
        .quota(
            Quota::new()
                .requests(60, Duration::from_secs(60))
                .concurrent_streams(4),
        )
        // Idle streams outlive tunnels and CDNs that cut at about 100 s.
        .sse_heartbeat(Duration::from_secs(15))
        .add_root_certificate(llm.cert.clone())
        .upstream(
            Upstream::new(
                "demo-llm",
                format!("https://localhost:{}/v1", llm.addr.port()),
            )
            .allow_methods([Method::POST])
            .allow_paths(["/chat/completions"])
            .inject_header(header::AUTHORIZATION, Secret::bearer(DEMO_KEY)?)
            // The demo API is on loopback, which the SSRF guard refuses unless told.
            .allow_private(true),
        )
        .build()?;
    // CORS only lets the SDKs' requests through the browser; the token is the access control.
    let cors = CorsLayer::builder()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::POST])
        .allow_headers(AllowHeaders::api_sdks())
        .expose_headers(ExposeHeaders::api_sdks())
        .max_age(Duration::from_secs(600))
        .build()?;
    let proxy = Router::new().nest_service(
        "/api/proxy",
        ServiceBuilder::new().layer(cors).service(forward),
    );
    let mint = post(move || {
        let signer = signer.clone();
        async move {
            match signer.issue_api("demo-user", ["demo-llm"], TOKEN_TTL) {
                Ok(token) => (StatusCode::OK, token).into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
            }
        }
    });
    Ok((Router::new().route("/api/llm-token", mint), proxy))
}

/// Any JSON body gets the same streamed answer; a missing or wrong key gets 401.
async fn completions(headers: HeaderMap, Json(_request): Json<serde_json::Value>) -> Response {
    let expected = format!("Bearer {DEMO_KEY}");
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(&expected)
    {
        return (StatusCode::UNAUTHORIZED, "missing or wrong API key\n").into_response();
    }
    Sse::new(tokens()).into_response()
}

fn tokens() -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(0usize, |i| async move {
        if i > TOKENS.len() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let event = match TOKENS.get(i) {
            Some(t) => Event::default().data(serde_json::json!({ "token": t }).to_string()),
            None => Event::default().data("[DONE]"),
        };
        Some((Ok(event), i + 1))
    })
}
