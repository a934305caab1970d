//! Tower middleware for putting a browser in front of sandboxed code.
//!
//! Platforms that run user code in sandboxes — browser app builders, preview panes for dev servers,
//! browser IDEs — all need the same host-side gateway. This crate offers each piece as a tower
//! `Layer` or `Service` to stack onto an axum `Router` or a hyper service.
//!
//! # A request's path through the crate
//!
//! ```text
//! browser ─► serve::Server (timeouts, connection caps, HTTPS, graceful shutdown) ─► your
//!            axum Router / tower service, each request carrying its rewrite::ClientAddr
//!    │   wrapped by host::HostAllowlistLayer (unknown Host → 403, the DNS-rebinding guard)
//!    │   and isolation::IsolationLayer (COOP same-origin + COEP credentialless on every answer)
//!    │
//!    ├─ /api/dev/{id}/ide?token=…  auth::Bootstrap: token ✓ once → HttpOnly cookie → 303 into the tunnel
//!    ├─ {id}.ide.example.com/…     auth::TunnelAuthLayer (cookie ✓ for the id in the Host, or in the
//!    ├─ /__ide/{id}/…              path on the shared origin; gateway cookie + Authorization removed)
//!    │                              ─► route(auth::TunnelResolver, mount stripped) ─► proxy ─► the IDE
//!    ├─ /proxy/{port}/…            route::RouteLayer(PathMount) ─► rewrite::RewriteLayer ─► proxy::ReverseProxy
//!    ├─ {port}.localhost           route::RouteLayer(HostRoute) ─► rewrite ─► proxy
//!    │                               │ a route::Target resolved once,  │ Host/Origin     │ streams bodies, strips
//!    │                               │ carried by the request          │ policies,       │ hop-by-hop, splices
//!    │                               ▼                                 │ X-Forwarded-*,  │ WebSocket upgrades to
//!    │                            paths checked: no `..`, `%2f`, `\`   │ Location and    │ that same target
//!    │                            bad ports refused at start-up        │ Set-Cookie      ▼
//!    │                                                                 │ under the mount
//!    │                                        connect::Connector: localhost → ::1 + 127.0.0.1 raced
//!    │                                        (Happy Eyeballs), TLS + ALPN h2 / http/1.1
//!    ├─ /api/proxy/{name}/…        cors::CorsLayer ─► forward::ApiForward ─► external API (h2/TLS, SSE)
//!    │                              caller ✓ (API token or the host's check), quota, named
//!    │                              upstreams, server-held secret injected, SsrfGuard on
//!    │                              every resolved address
//!    └─ any other route            your own handlers
//!    event streams anywhere: sse::SseLayer (unbuffered, uncompressed, heartbeats)
//! ```
//!
//! The target of a request is resolved once, for that request, and travels with it in its
//! extensions — into the upstream request and into a WebSocket tunnel — so no connection ever falls
//! back to a default address.
//!
//! # Modules
//!
//! | module | what it owns |
//! |---|---|
//! | [`proxy`] | [`ReverseProxy`](proxy::ReverseProxy): streaming, hop-by-hop, upgrades (WebSocket only by default), errors as answers |
//! | [`route`] | [`Target`](route::Target), [`Resolve`](route::Resolve), [`PathMount`](route::PathMount), [`HostRoute`](route::HostRoute) / [`HostPattern`](route::HostPattern), [`is_bad_port`](route::is_bad_port), path checks |
//! | [`rewrite`] | [`RewriteLayer`](rewrite::RewriteLayer): Host / Origin policies, X-Forwarded-* (RFC 7239 Forwarded on request) with trusted peers, Location / Set-Cookie mapped back under a mount, the [`CookieFirewall`](rewrite::CookieFirewall) and the filter on sandbox answers |
//! | [`connect`] | [`Connector`](connect::Connector), [`LocalhostResolver`](connect::LocalhostResolver): both loopbacks, TLS + ALPN |
//! | [`sse`] | [`SseLayer`](sse::SseLayer): event streams unbuffered, uncompressed, kept alive |
//! | [`cors`] | [`CorsLayer`](cors::CorsLayer): proxy-safe CORS, preflights, Private Network Access |
//! | [`isolation`] | [`IsolationLayer`](isolation::IsolationLayer): COOP / COEP / CORP for `crossOriginIsolated` |
//! | [`host`] | [`HostAllowlistLayer`](host::HostAllowlistLayer): the DNS-rebinding guard |
//! | `forward` | `ApiForward`: callers the host authorised (`Callers`), per-caller `Quota`s, named upstreams, injected `Secret`s, `SsrfGuard` on every connection |
//! | `doctor` | `Probe`, `Report`: checks a live gateway (isolation, CORS, SSE, WebSocket, ALPN, Host, port) |
//! | `serve` | `Server`: HTTP/1.1 + HTTP/2 (+ HTTPS) with header and idle timeouts, connection caps per client, graceful shutdown |
//! | `auth` | `TokenSigner`, `Bootstrap`, `TunnelAuthLayer`, `TunnelResolver`, `SandboxHosts`, `NonceStore`: the IDE tunnel's token → cookie flow, on per-sandbox origins or a shared one |
//!
//! # Example
//!
//! ```no_run
//! use axum::Router;
//! use sandbox_gateway::proxy::ReverseProxy;
//! use sandbox_gateway::rewrite::RewriteLayer;
//! use sandbox_gateway::route::{PathMount, RouteLayer};
//! use sandbox_gateway::serve::Server;
//! use tower::ServiceBuilder;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Redirects and cookies of the dev server come back under /proxy/{port}/; the server hands
//! // each request its client's address (`rewrite::ClientAddr`) for X-Forwarded-For.
//! let previews = ServiceBuilder::new()
//!     .layer(RouteLayer::new(PathMount::strip("/proxy").allow_ports([5173, 3000])))
//!     .layer(RewriteLayer::new())
//!     .service(ReverseProxy::new());
//! let app: Router = Router::new().route_service("/proxy/{*rest}", previews);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // Header and idle timeouts, connection caps, graceful shutdown: see the `serve` module.
//! Server::builder()
//!     .build()?
//!     .serve(listener, app, std::future::pending())
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Cargo features
//!
//! - `tls` (default): `https` upstreams with rustls (ring) and ALPN `h2` / `http/1.1`.
//! - `auth` (default): the `auth` module (HMAC-SHA256 tokens, cookies, nonce store).
//! - `forward` (default): the `forward` module, the outbound API proxy for sandboxed apps with its
//!   SSRF guard, caller checks and in-memory quotas. Its API tokens (`Callers::api_tokens`) need
//!   `auth` too; without it, callers are checked by the host's own check.
//! - `serve` (default): the `serve` module, a server safe for the internet (hyper-util's, with
//!   timeouts, caps and graceful shutdown; HTTPS from PEM files with `tls`).
//! - `doctor`: the `doctor` module (implies `tls`): `Probe` checks a live deployment for the ways
//!   browsers fail in front of a gateway.
//! - `redis`: a Redis `NonceStore` (implies `auth`), so a token spent on one replica is
//!   spent on all, and a Redis `RevocationStore`, so an IDE session revoked on one ends on all; with `forward`, `RedisQuotaStore`, so replicas share each caller's quota.
//! - `metrics`: counters, gauges and histograms through the `metrics` facade (requests, connect
//!   failures and latency, open connections and tunnels, tunnel bytes, token checks, refusals);
//!   README's "Operating" section lists them.
//!
//! `rust-version` is what the default features need; `redis` needs Rust 1.88.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
pub mod auth;
pub mod connect;
pub mod cors;
#[cfg(feature = "doctor")]
#[cfg_attr(docsrs, doc(cfg(feature = "doctor")))]
pub mod doctor;
#[cfg(feature = "forward")]
#[cfg_attr(docsrs, doc(cfg(feature = "forward")))]
pub mod forward;
pub mod host;
pub mod isolation;
pub mod proxy;
pub mod rewrite;
pub mod route;
#[cfg(feature = "serve")]
#[cfg_attr(docsrs, doc(cfg(feature = "serve")))]
pub mod serve;
pub mod sse;

mod metrics;
mod util;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
