//! A browser-IDE gateway: code-server (or any web IDE) in sandboxes, opened in a new tab.
//!
//! `POST /api/dev/{id}/ide-token` (your own authenticated route; here a bearer secret) returns a
//! signed, single-use link; `/api/dev/{id}/ide?token=…` turns it into an HttpOnly cookie and a 303
//! into the tunnel `/__ide/{id}/`, which proxies HTTP and WebSocket to that sandbox — Host
//! preserved for code-server, Origin passed only when the browser sent one, each upgrade bound to
//! its own request's target. Nonces live in Redis when `REDIS_URL` is set (build with
//! `--features redis`), in memory otherwise.
//!
//! Run: `cargo run --example ide -- --sandbox demo=localhost:8081`, with e.g.
//! `code-server --auth none --bind-addr localhost:8081` as the sandbox.
//! Flags: `--listen ADDR` (127.0.0.1:8080), `--sandbox ID=HOST:PORT` (repeatable),
//! `--tls-cert CERT.pem --tls-key KEY.pem` (serve HTTPS; code-server's webviews need a secure
//! context off localhost). Served by `serve::Server`: timeouts, connection caps, graceful Ctrl-C.
//! Environment: `IDE_HOST_SECRET` (the bearer the token route wants; default `dev-secret`),
//! `GATEWAY_IDE_KEY` (≥ 32 bytes, shared by replicas; random when unset), `REDIS_URL`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, request::Parts, HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use sandbox_gateway::auth::{
    bootstrap_url, Bootstrap, Claims, MemoryNonceStore, NonceStore, TokenSigner, TunnelAuthLayer,
};
use sandbox_gateway::proxy::ReverseProxy;
use sandbox_gateway::rewrite::RewriteLayer;
use sandbox_gateway::route::{RouteError, RouteLayer, Upstream};
use sandbox_gateway::serve::{Server, TlsConfig};
use tower::ServiceBuilder;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The gateway's router: token route, bootstrap and tunnel for the sandboxes in `sandboxes`.
pub fn app(
    signer: TokenSigner,
    sandboxes: HashMap<String, Upstream>,
    nonces: Arc<dyn NonceStore>,
    host_secret: String,
) -> Result<Router, Error> {
    let sandboxes = Arc::new(sandboxes);
    let issuer = signer.clone();
    let known = sandboxes.clone();
    let issue = move |Path(id): Path<String>, headers: HeaderMap| async move {
        // Stands for the host's own session check: is this user allowed to open sandbox `id`?
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if bearer != Some(format!("Bearer {host_secret}").as_str()) {
            return Err(StatusCode::UNAUTHORIZED);
        }
        if !known.contains_key(&id) {
            return Err(StatusCode::NOT_FOUND);
        }
        let token = issuer
            .issue(&id, Duration::from_secs(60))
            .map_err(|_| StatusCode::BAD_REQUEST)?;
        Ok(Json(
            serde_json::json!({ "url": bootstrap_url(&id, &token) }),
        ))
    };
    let bootstrap = Bootstrap::builder(signer.clone())
        .shared_nonce_store(nonces)
        .build::<Body>()?;
    // The target is resolved here, per request, from the verified sandbox id: an upgrade can only
    // ever go where its own request was routed.
    let route = RouteLayer::new(move |parts: &Parts| {
        let id = parts
            .extensions
            .get::<Claims>()
            .map(|c| c.sandbox_id().to_owned());
        let path = parts.uri.path_and_query().cloned();
        let sandboxes = sandboxes.clone();
        async move {
            let (id, path) = id.zip(path).ok_or(RouteError::NotFound)?;
            let upstream = sandboxes
                .get(&id)
                .ok_or_else(|| RouteError::Unavailable(format!("sandbox {id} is not running")))?;
            // code-server is mounted with its prefix kept (like `/absproxy/`).
            Ok(upstream.target(path).with_mount(format!("/__ide/{id}")))
        }
    });
    let tunnel = ServiceBuilder::new()
        .layer(TunnelAuthLayer::new(signer))
        .layer(route)
        // The sandbox's cookies namespaced under its mount, the host's kept from it, its answers
        // kept from changing anything outside it. No `Forwarded`: code-server compares its
        // `host=` with the Origin quotes and all, and X-Forwarded-Host says the same.
        .layer(RewriteLayer::new().forwarded(false))
        .service(ReverseProxy::new());
    Ok(Router::new()
        .route("/api/dev/{id}/ide-token", post(issue))
        .route_service("/api/dev/{id}/ide", bootstrap)
        .route_service("/__ide/{*rest}", tunnel))
}

fn signer() -> Result<TokenSigner, Error> {
    match std::env::var("GATEWAY_IDE_KEY") {
        Ok(key) => Ok(TokenSigner::new(key)?),
        Err(_) => Ok(TokenSigner::random()?),
    }
}

async fn nonce_store() -> Result<Arc<dyn NonceStore>, Error> {
    match std::env::var("REDIS_URL") {
        #[cfg(feature = "redis")]
        Ok(url) => Ok(Arc::new(
            sandbox_gateway::auth::RedisNonceStore::connect(&url).await?,
        )),
        #[cfg(not(feature = "redis"))]
        Ok(_) => Err("REDIS_URL is set: build with `--features redis`".into()),
        Err(_) => Ok(Arc::new(MemoryNonceStore::new(100_000))),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (mut listen, mut sandboxes) = ("127.0.0.1:8080".to_owned(), HashMap::new());
    let (mut tls_cert, mut tls_key) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value,
            "--tls-cert" => tls_cert = Some(value),
            "--tls-key" => tls_key = Some(value),
            "--sandbox" => {
                let (id, addr) = value
                    .split_once('=')
                    .ok_or("--sandbox wants ID=HOST:PORT")?;
                sandboxes.insert(id.to_owned(), format!("http://{addr}").parse()?);
            }
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    if sandboxes.is_empty() {
        sandboxes.insert("demo".to_owned(), "http://localhost:8081".parse()?);
    }
    let secret = std::env::var("IDE_HOST_SECRET").unwrap_or_else(|_| "dev-secret".to_owned());
    let app = app(signer()?, sandboxes, nonce_store().await?, secret.clone())?;
    let mut server = Server::builder();
    let scheme = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => {
            server = server.tls(TlsConfig::from_pem_files(cert, key)?);
            "https"
        }
        (None, None) => "http",
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    println!("IDE gateway on {scheme}://{addr}; get a link with:");
    println!(
        "  curl -X POST -H 'Authorization: Bearer {secret}' {scheme}://{addr}/api/dev/demo/ide-token"
    );
    server
        .build()?
        .serve(listener, app, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
