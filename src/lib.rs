//! Tower middleware for putting a browser in front of sandboxed code.
//!
//! Platforms that run user code in sandboxes — browser app builders, preview panes for dev servers,
//! browser IDEs — all need the same host-side gateway. This crate offers each piece as a tower
//! `Layer` or `Service` to stack onto an axum `Router` or a hyper service.
//!
//! # A request's path through the crate
//!
//! ```text
//! browser ─► your server (axum Router / hyper service)
//!    │   wrapped by host::HostAllowlistLayer (unknown Host → 403, the DNS-rebinding guard)
//!    │   and isolation::IsolationLayer (COOP same-origin + COEP credentialless on every answer)
//!    │
//!    ├─ /api/dev/{id}/ide?token=…  auth::Bootstrap: token ✓ once → HttpOnly cookie → 303 /__ide/{id}/
//!    ├─ /__ide/{id}/…              auth::TunnelAuthLayer (cookie ✓, gateway cookie + Authorization
//!    │                              removed) ─► route ─► rewrite ─► proxy ─► the IDE in its container
//!    ├─ /proxy/{port}/…            route::RouteLayer(PathMount) ─► rewrite::RewriteLayer ─► proxy::ReverseProxy
//!    ├─ {port}.localhost           route::RouteLayer(HostRoute) ─► rewrite ─► proxy
//!    │                               │ a route::Target resolved once,  │ Host/Origin     │ streams bodies, strips
//!    │                               │ carried by the request          │ policies,       │ hop-by-hop, splices
//!    │                               ▼                                 │ Forwarded,      │ WebSocket upgrades to
//!    │                            paths checked: no `..`, `%2f`, `\`   │ Location and    │ that same target
//!    │                            bad ports refused at start-up        │ Set-Cookie      ▼
//!    │                                                                 │ under the mount
//!    │                                        connect::Connector: localhost → ::1 + 127.0.0.1 raced
//!    │                                        (Happy Eyeballs), TLS + ALPN h2 / http/1.1
//!    ├─ /api/proxy/{name}/…        cors::CorsLayer ─► forward::ApiForward ─► external API (h2/TLS, SSE)
//!    │                              named upstreams, server-held secret injected, SsrfGuard on
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
//! | [`rewrite`] | [`RewriteLayer`](rewrite::RewriteLayer): Host / Origin policies, Forwarded + X-Forwarded-* with trusted peers, Location / Set-Cookie mapped back under a mount, the [`CookieFirewall`](rewrite::CookieFirewall) and the filter on sandbox answers |
//! | [`connect`] | [`Connector`](connect::Connector), [`LocalhostResolver`](connect::LocalhostResolver): both loopbacks, TLS + ALPN |
//! | [`sse`] | [`SseLayer`](sse::SseLayer): event streams unbuffered, uncompressed, kept alive |
//! | [`cors`] | [`CorsLayer`](cors::CorsLayer): proxy-safe CORS, preflights, Private Network Access |
//! | [`isolation`] | [`IsolationLayer`](isolation::IsolationLayer): COOP / COEP / CORP for `crossOriginIsolated` |
//! | [`host`] | [`HostAllowlistLayer`](host::HostAllowlistLayer): the DNS-rebinding guard |
//! | `forward` | `ApiForward`: named upstreams, injected `Secret`s, `SsrfGuard` on every connection |
//! | `doctor` | `Probe`, `Report`: checks a live gateway (isolation, CORS, SSE, WebSocket, ALPN, Host, port) |
//! | `auth` | `TokenSigner`, `Bootstrap`, `TunnelAuthLayer`, `NonceStore`: the IDE tunnel's token → cookie flow |
//!
//! # Example
//!
//! ```no_run
//! use axum::Router;
//! use sandbox_gateway::proxy::ReverseProxy;
//! use sandbox_gateway::rewrite::RewriteLayer;
//! use sandbox_gateway::route::{PathMount, RouteLayer};
//! use tower::ServiceBuilder;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Redirects and cookies of the dev server come back under /proxy/{port}/; insert
//! // `rewrite::ClientAddr` per connection to send X-Forwarded-For.
//! let previews = ServiceBuilder::new()
//!     .layer(RouteLayer::new(PathMount::strip("/proxy").allow_ports([5173, 3000])))
//!     .layer(RewriteLayer::new())
//!     .service(ReverseProxy::new());
//! let app: Router = Router::new().route_service("/proxy/{*rest}", previews);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! # Cargo features
//!
//! - `tls` (default): `https` upstreams with rustls (ring) and ALPN `h2` / `http/1.1`.
//! - `auth` (default): the `auth` module (HMAC-SHA256 tokens, cookies, nonce store).
//! - `forward` (default): the `forward` module, the outbound API proxy for sandboxed apps with its
//!   SSRF guard.
//! - `doctor`: the `doctor` module (implies `tls`): `Probe` checks a live deployment for the ways
//!   browsers fail in front of a gateway.
//! - `redis`: a Redis `NonceStore` (implies `auth`), so a token spent on one replica is
//!   spent on all.
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
pub mod sse;

mod metrics;
mod util;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
