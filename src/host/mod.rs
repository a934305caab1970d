//! Host allowlist: the guard against DNS rebinding for dev servers and gateways.
//!
//! A hostile page at `http://evil.example` can make its name resolve to `127.0.0.1` (or to the
//! gateway's private address) and then read whatever a local server answers, because to the browser
//! it is all same-origin. The only thing that tells the server is the `Host` the browser sends —
//! `evil.example`. [`HostAllowlistLayer`] answers only the names it was given.
//!
//! # Rules
//!
//! - Always allowed: the loopback names `localhost`, `*.localhost`, `127.0.0.0/8` and `[::1]`
//!   (browsers resolve them to loopback themselves; they cannot be rebound).
//! - Otherwise allowed: exact names or IP addresses, and `*.suffix` patterns (one or more labels
//!   before the suffix; never the bare suffix, never a look-alike such as `evil-suffix`).
//! - The Host is read from the request target's authority (HTTP/2 `:authority`, absolute-form)
//!   or the `Host` header; the port is ignored, names compare case-insensitively and without a
//!   trailing dot.
//! - `400 Bad Request` for a request with no Host, several `Host` headers, an invalid Host (bad
//!   characters, userinfo, bad port) or a `Host` header naming another host than the authority.
//! - `403 Forbidden` for any other Host, with a message naming it and how to allow it.
//! - There is no "allow everything" entry (`allowedHosts: true` in Vite re-opened the hole,
//!   GHSA-vg6x-rcgg-rjx6): if every Host is fine, leave the layer out.
//!
//! # Example
//!
//! ```
//! use sandbox_gateway::host::HostAllowlistLayer;
//!
//! let hosts = HostAllowlistLayer::builder()
//!     .allow("ide.example.com")
//!     .allow("*.preview.example.com")
//!     .hint("restart with --allow-host {host}")
//!     .build()?;
//! assert!(hosts.allows("3000-abc.preview.example.com"));
//! assert!(hosts.allows("localhost:5173"));
//! assert!(!hosts.allows("evil.example"));
//! # Ok::<(), sandbox_gateway::host::HostError>(())
//! ```
//!
//! [`HostAllowlistLayer`]: crate::host::HostAllowlistLayer

mod future;
mod layer;
mod name;

pub use future::ResponseFuture;
pub use layer::{HostAllowlist, HostAllowlistBuilder, HostAllowlistLayer};
pub use name::HostError;

pub(crate) use name::{is_loopback_host, request_host};
