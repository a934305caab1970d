//! Getting a connection to an upstream.
//!
//! [`Connector`] is hyper-util's `HttpConnector` (its Happy Eyeballs racing, connect timeout,
//! `TCP_NODELAY`) with the [`LocalhostResolver`] and, with the `tls` feature, rustls (ring) with
//! ALPN. The [`ReverseProxy`] opens every upstream connection through it. It takes down two walls
//! that proxies in front of dev servers keep running into.
//!
//! # The localhost wall
//!
//! A dev server started on `localhost` listens on whichever loopback its runtime picked: Node ≥ 17
//! keeps the system's resolver order and often binds `::1` only, others bind `127.0.0.1` only, and
//! `/etc/hosts` may list only one of them. A proxy that resolves `localhost` through the system and
//! dials the first answer gets `ECONNREFUSED` half of the time.
//!
//! The [`LocalhostResolver`] answers `localhost` and `*.localhost` itself (RFC 6761) with both
//! loopbacks, `::1` first, without asking DNS; every other name resolves as usual. The connector then
//! races the two (Happy Eyeballs, RFC 8305): `::1` is tried first; `127.0.0.1` starts when `::1`
//! refuses (at once) or after the attempt delay (250 ms by default, [`DEFAULT_ATTEMPT_DELAY`]) when
//! `::1` does not answer at all; the first connection up wins. A target written `0.0.0.0:{port}` or
//! `[::]:{port}` (the wildcard address a dev server prints) is dialled as `localhost:{port}`.
//!
//! # The ALPN wall
//!
//! Upstreams behind CDNs may speak only HTTP/2, and an HTTP/1.1-only client gets its connection
//! closed ("socket hang up"). With the `tls` feature, `https` upstreams are reached over rustls
//! offering `h2` and `http/1.1` by ALPN, and the [`ReverseProxy`]'s pooled client speaks whichever
//! the server chose, whatever the browser spoke: HTTP/1.1 and HTTP/2 combine freely on either side,
//! pseudo-headers never reach an HTTP/1.1 upstream and connection-specific headers never reach an
//! HTTP/2 one. Cleartext upstreams speak HTTP/1.1 unless HTTP/2 prior knowledge is asked for
//! ([`proxy::Builder::http2_prior_knowledge`]). Upgrades (WebSocket) always take HTTP/1.1
//! ([`Connector::http1_only`]). The webpki roots are trusted by default; a private CA is added with
//! [`ConnectorBuilder::add_root_certificate`].
//!
//! ```no_run
//! use std::time::Duration;
//! use sandbox_gateway::connect::Connector;
//! use sandbox_gateway::proxy::ReverseProxy;
//!
//! # fn run(private_ca_der: Vec<u8>) -> Result<(), Box<dyn std::error::Error>> {
//! // A dev server on `localhost:5173`, whichever loopback it bound.
//! let dev = ReverseProxy::builder()
//!     .upstream("http://localhost:5173".parse()?)
//!     .connect(|c| c.attempt_delay(Duration::from_millis(100)))
//!     .build()?;
//!
//! # #[cfg(feature = "tls")] {
//! // An HTTPS upstream that may answer in HTTP/2, signed by a private CA.
//! let api = ReverseProxy::builder()
//!     .connector(Connector::builder().add_root_certificate(private_ca_der))
//!     .upstream("https://api.internal.example:8443".parse()?)
//!     .build()?;
//! # let _ = api;
//! # }
//! # #[cfg(not(feature = "tls"))]
//! # let _ = (private_ca_der, Connector::builder());
//! # let _ = dev;
//! # Ok(()) }
//! ```
//!
//! [`ReverseProxy`]: crate::proxy::ReverseProxy
//! [`proxy::Builder::http2_prior_knowledge`]: crate::proxy::Builder::http2_prior_knowledge

mod connector;
mod resolver;

pub use connector::{
    BuildError, ConnStream, ConnectError, ConnectErrorKind, Connector, ConnectorBuilder,
    DEFAULT_ATTEMPT_DELAY, DEFAULT_CONNECT_TIMEOUT,
};
pub use resolver::{Addrs, LocalhostResolver, Resolving};
