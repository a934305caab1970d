//! The browser-IDE flow for sandbox `demo`: token route → bootstrap (cookie + 303) → tunnel.

use std::time::Duration;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::uri::PathAndQuery;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use sandbox_gateway::auth::{
    bootstrap_url, Bootstrap, Claims, CookieConfig, TokenSigner, TunnelAuthLayer,
};
use sandbox_gateway::proxy::ReverseProxy;
use sandbox_gateway::rewrite::RewriteLayer;
use sandbox_gateway::route::{RouteError, RouteLayer, Upstream};
use tower::ServiceBuilder;

/// The signing key: `GATEWAY_IDE_KEY` (≥ 32 bytes, shared by every replica) or a random one.
pub fn signer() -> Result<TokenSigner, Box<dyn std::error::Error>> {
    match std::env::var("GATEWAY_IDE_KEY") {
        Ok(key) => Ok(TokenSigner::new(key)?),
        Err(_) => Ok(TokenSigner::random()?),
    }
}

/// Routes for the IDE flow: `POST /api/dev/demo/ide-token`, `GET /api/dev/{id}/ide?token=…`, and the
/// tunnel `/__ide/{id}/…` to the demo sandbox (HTTP, SSE and WebSocket).
///
/// The token route stands for the host's own authenticated API: a real host checks its session
/// (or `Authorization: Bearer`) and that the user owns the sandbox before issuing a token.
pub fn routes(
    signer: TokenSigner,
    sandbox: Upstream,
    proxy: ReverseProxy,
) -> Result<(Router, Router), Box<dyn std::error::Error>> {
    let cookie = CookieConfig::default();
    let issuer = signer.clone();
    let token_route = Router::new().route(
        "/dev/demo/ide-token",
        post(move || {
            let signer = issuer.clone();
            async move {
                let token = signer
                    .issue("demo", Duration::from_secs(60))
                    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
                Ok::<_, StatusCode>(Json(
                    serde_json::json!({ "url": bootstrap_url("demo", &token) }),
                ))
            }
        }),
    );
    let bootstrap = Bootstrap::builder(signer.clone())
        .cookie(cookie.clone())
        .build::<Body>()?;

    // The tunnel: only a valid cookie for the sandbox in the path gets through; the gateway's cookie
    // and Authorization are removed before the request reaches the sandbox.
    let tunnel = ServiceBuilder::new()
        .layer(TunnelAuthLayer::new(signer).cookie(cookie))
        .layer(RouteLayer::new(move |parts: &Parts| {
            let id = parts
                .extensions
                .get::<Claims>()
                .map(|c| c.sandbox_id().to_owned());
            let path = parts.uri.path_and_query().map(|pq| pq.as_str().to_owned());
            let sandbox = sandbox.clone();
            async move {
                // One sandbox in this demo; a platform looks the id up in its orchestrator here.
                let (Some(id), Some(path)) = (id, path) else {
                    return Err(RouteError::NotFound);
                };
                if id != "demo" {
                    return Err(RouteError::Unavailable(format!(
                        "sandbox {id} is not running"
                    )));
                }
                let mount = format!("/__ide/{id}");
                let rest: PathAndQuery = path[mount.len()..]
                    .parse()
                    .map_err(|_| RouteError::BadPath("invalid path"))?;
                Ok(sandbox.target(rest).with_mount(mount))
            }
        }))
        // The sandbox's cookies namespaced under its mount, the host's kept from it, its answers
        // kept from changing anything outside it. No `Forwarded`: code-server compares its
        // `host=` with the Origin quotes and all, and X-Forwarded-Host says the same.
        .layer(RewriteLayer::new().forwarded(false))
        .service(proxy);
    let pages = Router::new()
        .route_service("/api/dev/{id}/ide", bootstrap)
        .route_service("/__ide/{*rest}", tunnel);
    Ok((token_route, pages))
}
