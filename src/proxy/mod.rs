//! The streaming reverse proxy.
//!
//! [`ReverseProxy`] is a tower `Service` for `http::Request<B>` (any body with `Bytes` data) built on
//! hyper's connection-level client, with a pool of its own, and the [`connect`](crate::connect)
//! module's [`Connector`]. It streams bodies both ways, removes hop-by-hop headers, relays upgrades
//! (WebSocket) to the request's own target and splices them, and answers every failure with a
//! status and a short message ([`ProxyError`]).
//!
//! [`Connector`]: crate::connect::Connector

mod body;
mod error;
mod headers;
mod origin;
mod pool;
mod service;
mod tunnel;
mod upgrade;

pub use body::ProxyBody;
pub use error::ProxyError;
pub use origin::{InvalidOrigin, OriginCheck};
pub use service::{
    Builder, ResponseFuture, ReverseProxy, DEFAULT_MAX_TUNNELS, DEFAULT_MAX_TUNNELS_PER_CLIENT,
    DEFAULT_MIN_UPLOAD_RATE, DEFAULT_POOL_IDLE_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT,
    DEFAULT_TUNNEL_IDLE_TIMEOUT, DEFAULT_UPLOAD_GRACE,
};
pub use tunnel::TunnelLifetime;
pub use upgrade::{InvalidProtocol, UpgradeProtocols};

// The rule the rewrite layer applies before it adds headers of its own.
pub(crate) use headers::remove_connection_listed;

// The pieces the API forwarder shares with the reverse proxy.
#[cfg(feature = "forward")]
pub(crate) use body::RequestBody;
#[cfg(feature = "forward")]
pub(crate) use headers::{check_request, join_cookies, strip_hop_by_hop};
#[cfg(feature = "forward")]
pub(crate) use service::with_head_timeout;
