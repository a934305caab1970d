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
//! - any async closure over the request head, for a platform's own sandbox lookup.
//!
//! Paths are checked before routing ([`check_path`]): dot segments, encoded slashes, backslashes and
//! empty segments are answered 400, so no request escapes its mount.

mod error;
mod layer;
mod mount;
mod normalize;
mod resolve;
mod target;

pub use error::RouteError;
pub use layer::{ResponseFuture, Route, RouteLayer};
pub use mount::{MountStyle, PathMount};
pub use normalize::check_path;
pub use resolve::Resolve;
pub use target::{Target, Upstream};
