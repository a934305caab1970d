//! What the upstream and the browser see.
//!
//! [`RewriteLayer`] sits between [`RouteLayer`](crate::route::RouteLayer) and
//! [`ReverseProxy`](crate::proxy::ReverseProxy):
//!
//! ```text
//! RouteLayer ─► RewriteLayer ─► ReverseProxy
//!  Target in      request: names listed in Connection dropped first,
//!  extensions              Host (HostPolicy), Origin (OriginPolicy),
//!                          X-Forwarded-For/-Proto/-Host/-Prefix, Forwarded on request
//!                          (Trust, ClientAddr),
//!                          Cookie: only the route's own cookies (CookieFirewall)
//!                 response under a mount: Location, Content-Location, Refresh,
//!                          Set-Cookie Path (CookiePath) and Domain (CookieDomain)
//!                 every routed response: Set-Cookie names namespaced (CookieFirewall),
//!                          Clear-Site-Data removed, Service-Worker-Allowed kept in the mount
//! ```
//!
//! - **Host and Origin** are two separate policies. The default preserves the browser's Host and
//!   passes a present Origin through; an Origin is never invented.
//! - **Forwarded headers** tell the upstream who the client is, the protocol and host the browser
//!   used and the mount prefix. The client is the request's [`ClientAddr`] (insert it in your
//!   server; see its docs for hyper and axum); the protocol is `https` when the request carries
//!   [`ClientTls`]. Headers from a [trusted](Trust) peer are kept and this hop appended; from
//!   anyone else they are dropped and replaced, so a browser cannot spoof them. `X-Forwarded-*` is
//!   sent by default and RFC 7239's `Forwarded` only [on request](RewriteLayer::forwarded), as
//!   nginx and node's proxies do: code-server 4 misreads its quoted `host=` and refuses every
//!   WebSocket.
//! - **Under a mount** (`/proxy/5173`, `/__ide/demo`), an upstream that redirects to `/login` or
//!   sets a cookie on `Path=/` would send the browser out of the mount. Root-relative and
//!   upstream-absolute URLs are mapped back under it, cookie paths scoped to it, and several
//!   `Set-Cookie` stay separate headers.
//! - **Walls around the sandbox**, on every routed request by default. The client cannot remove
//!   the gateway's forwarding headers by naming them in `Connection`: listed names are dropped
//!   before this layer adds its own. The [`CookieFirewall`] sends a sandbox only the cookies it
//!   set, under a namespace of its route (the mapping is documented there), never the host's, the
//!   gateway's or another sandbox's. Answers cannot change browser state outside the route
//!   ([`RewriteLayer::sandbox_responses`]): `Clear-Site-Data` is removed (its `cookies` directive
//!   reaches the whole registrable domain) and `Service-Worker-Allowed` is mapped under the mount,
//!   so a worker cannot claim the host's pages.

mod cookies;
mod error;
mod forwarded;
mod layer;
mod policy;
mod response;

pub use cookies::CookieFirewall;
pub use error::RewriteError;
pub use forwarded::{ClientAddr, ClientIdentity, ClientTls, IpNet, Node, Trust};
pub use layer::{ResponseFuture, Rewrite, RewriteLayer};
pub use policy::{HostPolicy, OriginPolicy};
pub use response::{CookieDomain, CookiePath};
