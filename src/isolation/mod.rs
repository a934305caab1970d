//! Cross-origin isolation: COOP, COEP and CORP on every response.
//!
//! A page is `crossOriginIsolated` — and may use `SharedArrayBuffer`, which WebContainers need —
//! when it is served in a secure context with `Cross-Origin-Opener-Policy: same-origin` and
//! `Cross-Origin-Embedder-Policy: credentialless` or `require-corp`, and every worker script and
//! nested document it loads has its own COEP. [`IsolationLayer`] sets them:
//!
//! - on **every** response, whatever the status: `304 Not Modified` included (its headers replace
//!   the cached ones, so a 304 without COEP silently drops isolation on reload), and error answers;
//! - **leaving alone** a policy header the inner service already set: a header present on the
//!   response is taken as deliberate (an upstream dev server configured for `require-corp`, a
//!   route that opts out with `unsafe-none`) and never overwritten or duplicated; each of COOP,
//!   COEP and CORP is judged on its own.
//!
//! [`Corp::CrossOrigin`] adds `Cross-Origin-Resource-Policy: cross-origin`, for assets that an
//! isolated page on another origin (a WebContainer iframe) loads under `require-corp`.
//!
//! # Caveats
//!
//! - **Secure context**: isolation needs HTTPS, or a loopback host (`localhost`, `*.localhost`,
//!   `127.0.0.0/8`, `[::1]`). Plain HTTP to any other name gets `crossOriginIsolated = false`
//!   even with the right headers; the layer warns once ([`IsolationLayer::warn_insecure_context`])
//!   and [`is_secure_context`] answers the question for a request.
//! - **OAuth popups**: COOP `same-origin` severs `window.opener` between the page and a popup on
//!   another origin; a login popup can no longer `postMessage` back. Use a redirect flow, or
//!   serve the page that opens the popup without this layer.
//! - **Iframes**: a page embedding an isolated document needs `allow="cross-origin-isolated"` on
//!   the `<iframe>` and must itself be isolated; the framed document needs its own COEP.
//! - `credentialless` is Chromium and Firefox; Safari needs `require-corp` ([`Coep::RequireCorp`]).
//!
//! # Example
//!
//! ```
//! use sandbox_gateway::isolation::{Coep, Corp, IsolationLayer};
//!
//! let isolation = IsolationLayer::new()
//!     .coep(Coep::RequireCorp)
//!     .corp(Corp::CrossOrigin)
//!     .trust_forwarded_proto(true);
//! # let _ = isolation;
//! ```
//!
//! [`Coep::RequireCorp`]: crate::isolation::Coep::RequireCorp
//! [`Corp::CrossOrigin`]: crate::isolation::Corp::CrossOrigin
//! [`IsolationLayer`]: crate::isolation::IsolationLayer
//! [`IsolationLayer::warn_insecure_context`]: crate::isolation::IsolationLayer::warn_insecure_context
//! [`is_secure_context`]: crate::isolation::is_secure_context

mod future;
mod layer;
mod secure;

pub use future::ResponseFuture;
pub use layer::{Coep, Corp, Isolation, IsolationLayer};
pub use secure::{is_secure_context, is_secure_context_behind_proxy};
