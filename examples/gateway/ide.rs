//! The browser-IDE flow for sandbox `demo`: token route → bootstrap (cookie + 303) → tunnel, on
//! the sandbox's own host `demo.ide.localhost:{port}` and on the shared origin under `/__ide/demo/`.
//! `/.gateway/logout` inside the tunnel ends the session; a page navigation without a valid
//! session (none, expired, logged out) goes back to the host's `/ide` page; WebSockets close when
//! their session expires or is revoked.

use std::time::Duration;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use sandbox_gateway::auth::{
    bootstrap_url, is_same_origin_request, Bootstrap, CookieConfig, Logout, MemoryRevocationStore,
    SandboxHosts, SessionRedirect, TokenSigner, TunnelAuthLayer, TunnelResolver,
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

/// The IDE's routes.
pub struct IdeRoutes {
    /// `POST /dev/demo/ide-token`, to nest under `/api` on the host's origin.
    pub api: Router,
    /// The bootstrap `GET /api/dev/{id}/ide?token=…` and the shared-origin tunnel `/__ide/{id}/…`.
    pub pages: Router,
    /// What a sandbox's own host serves: its bootstrap, and every other path to the sandbox.
    pub sandbox_host: Router,
}

/// Routes for the IDE flow to the demo sandbox (HTTP, SSE and WebSocket), on its own host of
/// `hosts` and on the shared origin. Ended sessions are sent to `dashboard` (an absolute URL on
/// the host's origin: on a sandbox's own host a relative one would lead into the tunnel again).
///
/// The token route stands for the host's own authenticated API: a real host checks its session
/// (or `Authorization: Bearer`) and that the user owns the sandbox before issuing a token. It
/// answers same-origin requests only: a sandbox's page must not mint links, and on
/// `{id}.ide.example.com` it would be same-site with `app.example.com`.
pub fn routes(
    signer: TokenSigner,
    sandbox: Upstream,
    proxy: ReverseProxy,
    hosts: SandboxHosts,
    dashboard: SessionRedirect,
) -> Result<IdeRoutes, Box<dyn std::error::Error>> {
    let cookie = CookieConfig::builder()
        .sandbox_hosts(hosts.clone())
        .build()?;
    // One process: revocations (logout) in memory, kept as long as a session lives.
    let revocations = MemoryRevocationStore::new(cookie.max_age());
    let issuer = signer.clone();
    let api = Router::new().route(
        "/dev/demo/ide-token",
        post(move |parts: Parts| {
            let signer = issuer.clone();
            let hosts = hosts.clone();
            async move {
                if !is_same_origin_request(&parts) {
                    return Err((StatusCode::FORBIDDEN, "Cross-origin request refused."));
                }
                let token = signer
                    .issue("demo", Duration::from_secs(60))
                    .map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "Cannot issue a link."))?;
                let shared = bootstrap_url("demo", &token);
                let own = hosts.url("demo", &shared).unwrap_or_else(|| shared.clone());
                Ok(Json(
                    serde_json::json!({ "url": own, "shared_origin_url": shared }),
                ))
            }
        }),
    );
    let bootstrap = Bootstrap::builder(signer.clone())
        .cookie(cookie.clone())
        .build::<Body>()?;

    // The tunnel: only a valid cookie for the sandbox (named by the Host, or by the path on the
    // shared origin) gets through; the gateway's cookie and Authorization are removed before the
    // request reaches the sandbox. One sandbox in this demo; a platform looks the id up in its
    // orchestrator in the resolver's lookup.
    let tunnel = ServiceBuilder::new()
        .layer(
            TunnelAuthLayer::new(signer)
                .cookie(cookie)
                .revocations(revocations)
                .redirect_navigations(dashboard.clone())
                .logout(Logout::new("/.gateway/logout", dashboard)?),
        )
        .layer(RouteLayer::new(TunnelResolver::new(move |id: String| {
            let sandbox = sandbox.clone();
            async move {
                if id == "demo" {
                    Ok(sandbox)
                } else {
                    Err(RouteError::Unavailable(format!(
                        "sandbox {id} is not running"
                    )))
                }
            }
        })))
        // The sandbox's cookies namespaced under its route, the host's kept from it, its answers
        // kept from changing anything outside it.
        .layer(RewriteLayer::new())
        .service(proxy);
    let pages = Router::new()
        .route_service("/api/dev/{id}/ide", bootstrap.clone())
        .route_service("/__ide/{*rest}", tunnel.clone());
    let sandbox_host = Router::new()
        .route_service("/api/dev/{id}/ide", bootstrap)
        .fallback_service(tunnel);
    Ok(IdeRoutes {
        api,
        pages,
        sandbox_host,
    })
}
