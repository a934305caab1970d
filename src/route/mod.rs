//! Where a request goes.
//!
//! A [`Target`] — the upstream's scheme and authority, the path sent to it, and the mount prefix the
//! browser saw — is resolved once per request by a [`Resolve`] and attached to the request by
//! [`RouteLayer`]. Everything after it (rewrite layers, the [`ReverseProxy`](crate::proxy::ReverseProxy),
//! a WebSocket upgrade) reads that same target; nothing falls back to a default address.
//!
//! Built-in resolvers:
//! - [`Upstream`]: one fixed upstream, request path unchanged (or joined under a base path);
//! - [`PathMount`]: `/proxy/{port}/…` (prefix stripped) and `/absproxy/{port}/…` (prefix kept), the
//!   two styles code-server uses, with a port allowlist that denies by default;
//! - [`HostRoute`]: by the request's Host, with a [`HostPattern`] such as `{port}.localhost` or
//!   `{port}-{id}.preview.example.com` ([`HostRoute::ports`] for dev servers by port);
//! - any async closure over the request head, for a platform's own sandbox lookup.
//!
//! Ports browsers refuse (`ERR_UNSAFE_PORT`, the Fetch standard's bad ports) are known to
//! [`is_bad_port`]; [`check_public_port`] refuses them where the browser would see them.
//!
//! Paths are checked before routing ([`check_path`]): dot segments, encoded slashes, backslashes and
//! empty segments are answered 400, so no request escapes its mount.

mod bad_port;
mod error;
mod host_pattern;
mod layer;
mod mount;
mod normalize;
mod resolve;
mod target;

pub use bad_port::{check_public_port, is_bad_port};
pub use error::RouteError;
pub use host_pattern::{Captures, HostPattern, HostRoute, LocalPorts, MapCaptures};
pub use layer::{ResponseFuture, Route, RouteLayer};
pub use mount::{MountStyle, PathMount};
pub use normalize::check_path;
pub use resolve::Resolve;
pub use target::{Target, Upstream};
