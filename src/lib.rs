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
//!    │
//!    ├─ /proxy/{port}/…    route::RouteLayer(PathMount) ─► proxy::ReverseProxy ─► dev server on localhost:{port}
//!    │                        │ resolves a route::Target once,         │ streams bodies, strips hop-by-hop,
//!    │                        │ attached to the request                │ splices WebSocket upgrades to the
//!    │                        ▼                                        │ same target
//!    │                     paths checked: no `..`, `%2f`, `\`, `//`    ▼
//!    │                                                   connect::Connector: localhost → ::1 + 127.0.0.1
//!    │                                                   raced (Happy Eyeballs), TLS + ALPN h2/http1.1
//!    └─ any other route     your own handlers
//! ```
//!
//! # Modules
//!
//! | module | what it owns |
//! |---|---|
//! | [`proxy`] | [`ReverseProxy`](proxy::ReverseProxy): streaming, hop-by-hop, upgrades, errors as answers |
//! | [`route`] | [`Target`](route::Target), [`Resolve`](route::Resolve), [`PathMount`](route::PathMount), path checks |
//! | [`connect`] | [`Connector`](connect::Connector), [`LocalhostResolver`](connect::LocalhostResolver) |
//!
//! # Example
//!
//! ```no_run
//! use axum::Router;
//! use sandbox_gateway::proxy::ReverseProxy;
//! use sandbox_gateway::route::{PathMount, RouteLayer};
//! use tower::ServiceBuilder;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let previews = ServiceBuilder::new()
//!     .layer(RouteLayer::new(PathMount::strip("/proxy").allow_ports([5173, 3000])))
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
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
pub mod auth;
pub mod connect;
pub mod cors;
#[cfg(feature = "forward")]
#[cfg_attr(docsrs, doc(cfg(feature = "forward")))]
pub mod forward;
pub mod host;
pub mod isolation;
pub mod proxy;
pub mod route;
pub mod sse;

mod util;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
