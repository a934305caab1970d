//! Getting a connection to an upstream.
//!
//! [`Connector`] is hyper-util's `HttpConnector` (its Happy Eyeballs racing, connect timeout,
//! `TCP_NODELAY`) with the [`LocalhostResolver`] — `localhost` and `*.localhost` stand for both
//! `::1` and `127.0.0.1`, without DNS — and, with the `tls` feature, rustls (ring) with ALPN offering
//! `h2` and `http/1.1`, so HTTP/2-only upstreams behind CDNs work. The [`ReverseProxy`]'s pooled
//! client speaks whatever ALPN chose.
//!
//! [`ReverseProxy`]: crate::proxy::ReverseProxy

mod connector;
mod resolver;

pub use connector::{
    BuildError, ConnStream, ConnectError, ConnectErrorKind, Connector, ConnectorBuilder,
    DEFAULT_ATTEMPT_DELAY, DEFAULT_CONNECT_TIMEOUT,
};
pub use resolver::{Addrs, LocalhostResolver, Resolving};
