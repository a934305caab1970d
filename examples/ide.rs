//! A browser-IDE gateway: code-server (or any web IDE) in sandboxes, opened in a new tab, each
//! sandbox on an origin of its own.
//!
//! `POST /api/dev/{id}/ide-token` (your own authenticated route; here a bearer secret, and
//! same-origin requests only) returns a signed, single-use link on the sandbox's own host,
//! `http://{id}.ide.localhost:8080/api/dev/{id}/ide?token=…` (browsers resolve `*.localhost` to
//! loopback), and the same link on the shared origin, `/api/dev/{id}/ide?token=…`. Opening either
//! turns the token into an HttpOnly cookie and a 303 into the tunnel: `/` on the sandbox's host
//! (host-only cookie), `/__ide/{id}/` on the shared origin (the mount stripped, as code-server
//! needs). The tunnel proxies HTTP and WebSocket to that sandbox — Host preserved for
//! code-server, Origin passed only when the browser sent one, each upgrade bound to its own
//! request's target. Nonces and revocations live in Redis when `REDIS_URL` is set (build with
//! `--features redis`; a revocation on one replica holds on all within a second), in memory
//! otherwise.
//!
//! Sessions end: `/.gateway/logout` inside a tunnel (`/__ide/{id}/.gateway/logout`, or
//! `/.gateway/logout` on the sandbox's host) clears the cookie and revokes the session;
//! `POST /api/dev/{id}/revoke` (the same bearer) ends every session of a sandbox and closes its
//! open WebSockets; a tunnel's WebSockets close when its session expires. A page navigation without
//! a valid session lands on `/api/dev/{id}/ide-ended`, which says how to get a new link; scripts
//! and WebSockets get a `403`.
//!
//! Run: `cargo run --example ide -- --sandbox demo=localhost:8081`, with e.g.
//! `code-server --auth none --bind-addr localhost:8081` as the sandbox.
//! Flags: `--listen ADDR` (127.0.0.1:8080), `--sandbox ID=HOST:PORT` (repeatable),
//! `--ide-host PATTERN` (the sandboxes' own hosts; default `{id}.ide.localhost:{listen port}`,
//! in production e.g. `{id}.ide.example-sandbox.net`, served over HTTPS).
//! `--tls-cert CERT.pem --tls-key KEY.pem` (serve HTTPS; code-server's webviews need a secure
//! context off localhost). Served by `serve::Server`: timeouts, connection caps, graceful Ctrl-C.
//! Environment: `IDE_HOST_SECRET` (the bearer the token route wants; default `dev-secret`),
//! `GATEWAY_IDE_KEY` (≥ 32 bytes, shared by replicas; random when unset), `REDIS_URL`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, request::Parts, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use sandbox_gateway::auth::{
    bootstrap_url, is_same_origin_request, Bootstrap, CookieConfig, Logout, MemoryNonceStore,
    MemoryRevocationStore, NonceStore, Revocation, RevocationStore, SandboxHosts, SessionRedirect,
    TokenSigner, TunnelAuthLayer, TunnelResolver,
};
use sandbox_gateway::proxy::ReverseProxy;
use sandbox_gateway::rewrite::RewriteLayer;
use sandbox_gateway::route::{RouteError, RouteLayer, Upstream};
use sandbox_gateway::serve::{Server, TlsConfig};
use subtle::ConstantTimeEq;
use tower::ServiceBuilder;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The gateway's router: token route, bootstrap and tunnel for the sandboxes in `sandboxes`,
/// each also served on its own host of `hosts`; revocations kept in memory.
pub fn app(
    signer: TokenSigner,
    sandboxes: HashMap<String, Upstream>,
    nonces: Arc<dyn NonceStore>,
    host_secret: String,
    hosts: SandboxHosts,
) -> Result<Router, Error> {
    let revocations = Arc::new(MemoryRevocationStore::new(
        CookieConfig::default().max_age(),
    ));
    app_with_revocations(signer, sandboxes, nonces, revocations, host_secret, hosts)
}

/// Where a page navigation without a valid session lands, on either origin (outside the tunnel,
/// so never into it again).
const ENDED: &str = "/api/dev/{id}/ide-ended";
/// The logout path inside every tunnel.
const LOGOUT: &str = "/.gateway/logout";

/// As [`app`], with the revocation store shared by the replicas.
pub fn app_with_revocations(
    signer: TokenSigner,
    sandboxes: HashMap<String, Upstream>,
    nonces: Arc<dyn NonceStore>,
    revocations: Arc<dyn RevocationStore>,
    host_secret: String,
    hosts: SandboxHosts,
) -> Result<Router, Error> {
    let sandboxes = Arc::new(sandboxes);
    let cookie = CookieConfig::builder()
        .sandbox_hosts(hosts.clone())
        .build()?;
    let revoker = revocations.clone();
    let revoke_secret = host_secret.clone();
    // Stands for the host's "delete sandbox" or "remove member": every session of the sandbox
    // ends, on every replica, its open WebSockets included.
    let revoke = move |Path(id): Path<String>, parts: Parts| async move {
        host_session(&parts, &revoke_secret)?;
        revoker
            .revoke(Revocation::Sandbox(id))
            .await
            .map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "Cannot revoke right now."))?;
        Ok::<_, (StatusCode, &str)>("Every session of this sandbox has ended.\n")
    };
    let ended = |Path(id): Path<String>| async move {
        (
            [(header::CACHE_CONTROL, "no-store")],
            format!(
                "Your IDE session for {id} has ended. Get a new link from the dashboard \
                 (POST /api/dev/{id}/ide-token).\n"
            ),
        )
    };
    let issuer = signer.clone();
    let known = sandboxes.clone();
    let links = hosts.clone();
    let issue = move |Path(id): Path<String>, parts: Parts| async move {
        host_session(&parts, &host_secret)?;
        if !known.contains_key(&id) {
            return Err((StatusCode::NOT_FOUND, "No such sandbox."));
        }
        let token = issuer
            .issue(&id, Duration::from_secs(60))
            .map_err(|_| (StatusCode::BAD_REQUEST, "Invalid sandbox id."))?;
        let shared = bootstrap_url(&id, &token);
        // The sandbox's own origin when its id can be a host name, the shared origin otherwise.
        let own = links.url(&id, &shared).unwrap_or_else(|| shared.clone());
        Ok(Json(
            serde_json::json!({ "url": own, "shared_origin_url": shared }),
        ))
    };
    let bootstrap = Bootstrap::builder(signer.clone())
        .cookie(cookie.clone())
        .shared_nonce_store(nonces)
        .build::<Body>()?;
    // The platform supplies "sandbox id → upstream"; the crate routes the verified id there, the
    // mount stripped on the shared origin, the path unchanged on the sandbox's own host.
    let resolve = TunnelResolver::new(move |id: String| {
        let sandboxes = sandboxes.clone();
        async move {
            sandboxes
                .get(&id)
                .cloned()
                .ok_or_else(|| RouteError::Unavailable(format!("sandbox {id} is not running")))
        }
    });
    let tunnel = ServiceBuilder::new()
        .layer(
            TunnelAuthLayer::new(signer)
                .cookie(cookie)
                .shared_revocations(revocations)
                .redirect_navigations(SessionRedirect::new(ENDED)?)
                .logout(Logout::new(LOGOUT, SessionRedirect::new(ENDED)?)?),
        )
        .layer(RouteLayer::new(resolve))
        // The sandbox's cookies namespaced under its route, the host's kept from it, its answers
        // kept from changing anything outside it.
        .layer(RewriteLayer::new())
        .service(ReverseProxy::new());
    // The host's origin: token route, bootstrap, and the shared-origin tunnel.
    let host_side = Router::new()
        .route("/api/dev/{id}/ide-token", post(issue))
        .route("/api/dev/{id}/revoke", post(revoke))
        .route("/api/dev/{id}/ide-ended", get(ended))
        .route_service("/api/dev/{id}/ide", bootstrap.clone())
        .route_service("/__ide/{*rest}", tunnel.clone());
    // A sandbox's own host: its bootstrap, and every other path to the sandbox.
    let sandbox_side = Router::new()
        .route("/api/dev/{id}/ide-ended", get(ended))
        .route_service("/api/dev/{id}/ide", bootstrap)
        .fallback_service(tunnel);
    Ok(Router::new().fallback_service(hosts.split(sandbox_side, host_side)))
}

/// Stands for the host's own authentication of its API (its session cookie or bearer token):
/// here the bearer `secret`, compared in constant time, and same-origin calls only — no other page
/// may act with the user's credentials: not another site, and not a sandbox's page either
/// (`{id}.ide.example.com` is same-site with `app.example.com`).
fn host_session(parts: &Parts, secret: &str) -> Result<(), (StatusCode, &'static str)> {
    if !is_same_origin_request(parts) {
        return Err((StatusCode::FORBIDDEN, "Cross-origin request refused."));
    }
    let sent = parts
        .headers
        .get(header::AUTHORIZATION)
        .map_or(&b""[..], |v| v.as_bytes());
    let expected = format!("Bearer {secret}");
    if !bool::from(sent.ct_eq(expected.as_bytes())) {
        return Err((StatusCode::UNAUTHORIZED, "Log in first."));
    }
    Ok(())
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

/// Revocations in Redis when `REDIS_URL` is set (read by every replica each second), in memory
/// otherwise; kept as long as a session lives.
async fn revocation_store() -> Result<Arc<dyn RevocationStore>, Error> {
    let lifetime = CookieConfig::default().max_age();
    match std::env::var("REDIS_URL") {
        #[cfg(feature = "redis")]
        Ok(url) => Ok(Arc::new(
            sandbox_gateway::auth::RedisRevocationStore::connect(&url, lifetime).await?,
        )),
        #[cfg(not(feature = "redis"))]
        Ok(_) => Err("REDIS_URL is set: build with `--features redis`".into()),
        Err(_) => Ok(Arc::new(MemoryRevocationStore::new(lifetime))),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (mut listen, mut sandboxes) = ("127.0.0.1:8080".to_owned(), HashMap::new());
    let mut ide_host = None;
    let (mut tls_cert, mut tls_key) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value,
            "--ide-host" => ide_host = Some(value),
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
    let ide_host = ide_host.unwrap_or_else(|| format!("{{id}}.ide.localhost:{}", addr.port()));
    let hosts = SandboxHosts::new(&ide_host)?.https(scheme == "https");
    let app = app_with_revocations(
        signer()?,
        sandboxes,
        nonce_store().await?,
        revocation_store().await?,
        secret.clone(),
        hosts.clone(),
    )?;
    println!(
        "IDE gateway on {scheme}://{addr}; each sandbox also on its own host {}",
        hosts.pattern()
    );
    println!(
        "get a link (JSON: `url` on the sandbox's host, `shared_origin_url` under /__ide/) with:"
    );
    println!(
        "  curl -X POST -H 'Authorization: Bearer {secret}' {scheme}://{addr}/api/dev/demo/ide-token"
    );
    println!("log out inside the IDE at /.gateway/logout; end every session of sandbox demo with:");
    println!(
        "  curl -X POST -H 'Authorization: Bearer {secret}' {scheme}://{addr}/api/dev/demo/revoke"
    );
    server
        .build()?
        .serve(listener, app, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
