//! Serving the stack on the open internet.
//!
//! [`Server`] accepts connections on a `TcpListener` and serves any tower service on them — an axum
//! `Router` or a plain service of this crate — with hyper-util's server: HTTP/1.1 and HTTP/2 on one
//! listener (HTTP/2 by ALPN under TLS, or by its preface in cleartext), upgrades (WebSocket) handed
//! to the service, and every request carrying the peer's [`ClientAddr`] (and [`ClientTls`] under
//! TLS) for the [`rewrite`](crate::rewrite) layers.
//!
//! What a bare `axum::serve` or accept loop leaves open, and what the server does about it (each
//! number is a builder method; the defaults are the `DEFAULT_*` constants):
//!
//! | threat | bound |
//! |---|---|
//! | a client that trickles its request head | [`header_read_timeout`](ServerBuilder::header_read_timeout) (10 s): the HTTP/1.1 connection is closed; also the TLS handshake's limit |
//! | connections kept open with nothing to do | [`idle_timeout`](ServerBuilder::idle_timeout) (60 s with no request in flight, HTTP/1.1 and HTTP/2) |
//! | one address opening connection after connection | [`max_connections_per_client`](ServerBuilder::max_connections_per_client) (256; IPv6 counted per /64): over it, new connections are closed at once while others are served |
//! | too many connections in total | [`max_connections`](ServerBuilder::max_connections) (10 000): the server stops accepting until one closes; the kernel's backlog queues the rest |
//! | many streams on one HTTP/2 connection | [`http2_max_concurrent_streams`](ServerBuilder::http2_max_concurrent_streams) (100) |
//! | a restart cutting requests off | graceful shutdown: stop accepting, let requests finish for [`shutdown_timeout`](ServerBuilder::shutdown_timeout) (30 s), run [`on_drained`](ServerBuilder::on_drained) (close tunnels), then drop what is left |
//!
//! Upgraded connections (WebSockets) leave the server once switched: they are the proxy's
//! tunnels, bounded by [`ReverseProxy`](crate::proxy::ReverseProxy)'s tunnel caps and idle timeout,
//! and closed at shutdown by [`close_tunnels`](crate::proxy::ReverseProxy::close_tunnels) through
//! `on_drained`. Request bodies are bounded by the proxy's minimum upload rate.
//!
//! HTTPS (feature `tls`): [`TlsConfig::from_pem_files`] reads a certificate chain and key in PEM
//! and offers `h2` and `http/1.1` by ALPN.
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::Router;
//! use sandbox_gateway::proxy::ReverseProxy;
//! use sandbox_gateway::serve::{Server, TlsConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let proxy = ReverseProxy::new();
//! let app = Router::new().nest_service("/app", proxy.clone());
//! let tunnels = proxy.clone();
//! let server = Server::builder()
//!     .header_read_timeout(Duration::from_secs(10))
//!     .max_connections_per_client(128)
//!     .tls(TlsConfig::from_pem_files("cert.pem", "key.pem")?)
//!     .on_drained(move || tunnels.close_tunnels())
//!     .build()?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:443").await?;
//! server
//!     .serve(listener, app, async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! [`ClientAddr`]: crate::rewrite::ClientAddr
//! [`ClientTls`]: crate::rewrite::ClientTls

mod clients;
mod connection;
mod server;
#[cfg(feature = "tls")]
mod tls;

pub use server::{
    ConfigError, Server, ServerBuilder, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_CLIENT, DEFAULT_SHUTDOWN_TIMEOUT,
};
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub use tls::{TlsConfig, TlsError};
