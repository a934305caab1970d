//! Signed tokens, the bootstrap that turns a one-time link into a cookie, and the tunnel guard.
//!
//! A new browser tab cannot carry `Authorization: Bearer`, so opening a browser IDE goes in three
//! steps:
//!
//! 1. **Issue.** The host's own authenticated route (say `POST /api/dev/{id}/ide-token`), on the
//!    host's origin, calls [`TokenSigner::issue`] (or [`TokenSigner::issue_for`], naming the user
//!    it is for) and returns the link: a short-lived, single-use, HMAC-signed token bound to the
//!    sandbox id. Refuse cross-origin calls there with [`is_same_origin_request`].
//! 2. **Bootstrap.** The tab opens the link. [`Bootstrap`] verifies the token (and, with
//!    [`BootstrapBuilder::check_subject`], its subject against the request), spends its nonce in
//!    a [`NonceStore`], sets an `HttpOnly` cookie whose value is a second signed token (audience
//!    [`Audience::Cookie`]), and answers `303` into the tunnel without the token.
//! 3. **Tunnel.** [`TunnelAuthLayer`] wraps the service that proxies to the sandbox (HTTP and
//!    WebSocket). It admits a request only with a valid cookie for its sandbox, then strips the
//!    gateway's cookie and `Authorization` so code in the sandbox never sees gateway credentials,
//!    and hands the verified [`Claims`] to inner services; [`TunnelResolver`] turns them into the
//!    route to the sandbox from the platform's "sandbox id → upstream" lookup.
//!
//! # Where the sandbox is served
//!
//! - **Its own origin** (recommended; [`SandboxHosts`], e.g. `{id}.ide.example-sandbox.net`, or
//!   `{id}.ide.localhost:8080` locally): the link is
//!   `https://{id}.ide.example-sandbox.net/api/dev/{id}/ide?token=…`, the cookie host-only
//!   (`__Host-sgw_ide_{id}; Path=/; Secure`), the tunnel the whole origin, the path sent
//!   unchanged. The browser's same-origin policy keeps the sandbox's pages away from the host's
//!   pages, cookies and token route, and from every other sandbox.
//! - **The shared origin** (`/__ide/{id}/`, for local use or a single-origin deployment): the link
//!   is [`bootstrap_url`], `/api/dev/{id}/ide?token=…`, the cookie scoped to `Path=/__ide/{id}/`
//!   (`__Secure-` when `Secure`), and the mount stripped before the sandbox sees the path (the
//!   style code-server needs). The sandbox shares the host's origin here: see the README's
//!   security model for what still holds.
//!
//! Cookies are `Secure` except on plain-HTTP loopback hosts ([`SecureCookie::Auto`]). Tokens are
//! verified in constant time, with key rotation ([`TokenSigner::with_previous_key`]). Refusals
//! are `403` with a short text telling the user to reopen the IDE from the dashboard; the precise
//! reason ([`TokenError`]) is only logged, at `debug`, and tokens and keys never are. With several
//! gateway replicas, share the signing key and a [`NonceStore`] (`RedisNonceStore` with the
//! `redis` feature) so a link spent on one replica is spent on all.
//!
//! # When sessions end
//!
//! A session cookie lives for the cookie's `Max-Age` (12 hours by default); it can end sooner:
//!
//! - **Logout.** [`TunnelAuthLayer::logout`] answers a [`Logout`] path inside every tunnel
//!   (`/__ide/{id}/.gateway/logout`, or `/.gateway/logout` on the sandbox's own host, where the
//!   cookie is sent on both origin styles): the session is revoked, the cookie cleared with the
//!   exact name, `Path` and attributes the bootstrap set, and the browser sent to a
//!   [`SessionRedirect`] with `303`.
//! - **Revocation.** [`TunnelAuthLayer::revocations`] checks every request and upgrade against a
//!   [`RevocationStore`]: by session (the cookie token's nonce), by subject (the user) or by
//!   sandbox; a subject or sandbox revocation ends the sessions issued up to then.
//!   [`MemoryRevocationStore`] suits one process; `RedisRevocationStore` (feature `redis`) shares
//!   revocations between replicas: one made on any replica holds on all within its refresh
//!   interval (1 s by default).
//! - **Open tunnels end with their session.** For every upgrade it admits, the guard hands the
//!   proxy a [`TunnelLifetime`](crate::proxy::TunnelLifetime): the WebSocket is closed at the
//!   session's expiry, and as soon as the store announces a revocation that matches it (on every
//!   replica, within the same bound).
//! - **Back to the dashboard.** With [`TunnelAuthLayer::redirect_navigations`], a page navigation
//!   without a valid session (none, expired, revoked) is sent to the host's page (say, the
//!   dashboard's "open IDE" page) instead of the `403`; scripts, subresources and WebSockets keep
//!   the `403` and its short text. On a sandbox's own host give an absolute URL on the host's
//!   origin: a relative one would lead into the tunnel again.
//! - **Key rotation.** [`TokenSigner::new`] with the new key, the old one as
//!   [`TokenSigner::with_previous_key`] (at start-up), or [`TokenSigner::rotate`] at run time:
//!   new sessions are signed with the new key, the old ones verify until the old key is removed.
//!   Remove it once the longest session signed with it has expired, or earlier to end those
//!   sessions: [`TokenSigner::remove_previous_keys`] at run time (every clone of the signer — the
//!   bootstrap's, the guard's — sees it, and the open tunnels of those sessions are closed at
//!   once), or restart each replica without it (the restart closes its tunnels). Each replica
//!   holds its own keys: rotate and remove on every one.
//!
//! Mount the shared-origin tunnel with `route_service("/__ide/{*rest}", …)`: the guard reads the
//! sandbox id from the full path, which `nest_service` would strip. Send requests whose Host is a
//! sandbox's to a router holding only the bootstrap and the tunnel (as its fallback) with
//! [`SandboxHosts::split`], so the host's own routes are never served on a sandbox's origin.
//!
//! ```
//! use std::{collections::HashMap, sync::Arc, time::Duration};
//! use axum::{body::Body, http::{request::Parts, StatusCode}, routing::post, Json, Router};
//! use sandbox_gateway::auth::{
//!     bootstrap_url, is_same_origin_request, Bootstrap, CookieConfig, SandboxHosts, TokenSigner,
//!     TunnelAuthLayer, TunnelResolver,
//! };
//! use sandbox_gateway::proxy::ReverseProxy;
//! use sandbox_gateway::route::{RouteError, RouteLayer, Upstream};
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // At least 32 random bytes, shared by every replica.
//! let signer = TokenSigner::new(std::env::var("IDE_KEY").unwrap_or_else(|_| "x".repeat(32)))?;
//! let hosts = SandboxHosts::new("{id}.ide.localhost:8080")?;
//! let cookie = CookieConfig::builder().sandbox_hosts(hosts.clone()).build()?;
//! let sandboxes: Arc<HashMap<String, Upstream>> =
//!     Arc::new([("demo".to_owned(), "http://localhost:8081".parse()?)].into());
//!
//! let issue = {
//!     let (signer, hosts) = (signer.clone(), hosts.clone());
//!     move |parts: Parts| async move {
//!         if !is_same_origin_request(&parts) {
//!             return Err(StatusCode::FORBIDDEN);
//!         }
//!         // (Authenticate the user and check they own sandbox "demo" first.)
//!         let token = signer.issue("demo", Duration::from_secs(60)).expect("valid id");
//!         let url = hosts.url("demo", &bootstrap_url("demo", &token)).expect("a DNS label");
//!         Ok(Json(serde_json::json!({ "url": url })))
//!     }
//! };
//! let bootstrap = Bootstrap::builder(signer.clone()).cookie(cookie.clone()).build::<Body>()?;
//! let tunnel = ServiceBuilder::new()
//!     .layer(TunnelAuthLayer::new(signer).cookie(cookie))
//!     .layer(RouteLayer::new(TunnelResolver::new(move |id: String| {
//!         let sandboxes = sandboxes.clone();
//!         async move {
//!             sandboxes.get(&id).cloned().ok_or(RouteError::Unavailable(format!("{id} is stopped")))
//!         }
//!     })))
//!     .service(ReverseProxy::new());
//!
//! let host_side: Router = Router::new()
//!     .route("/api/dev/demo/ide-token", post(issue))
//!     .route_service("/api/dev/{id}/ide", bootstrap.clone())
//!     .route_service("/__ide/{*rest}", tunnel.clone());
//! let sandbox_side: Router = Router::new()
//!     .route_service("/api/dev/{id}/ide", bootstrap)
//!     .fallback_service(tunnel);
//! let app: Router = Router::new().fallback_service(hosts.split(sandbox_side, host_side));
//! # let _ = app;
//! # Ok(()) }
//! ```
//!
//! [`TokenSigner::issue`]: crate::auth::TokenSigner::issue
//! [`TokenSigner::issue_for`]: crate::auth::TokenSigner::issue_for
//! [`BootstrapBuilder::check_subject`]: crate::auth::BootstrapBuilder::check_subject
//! [`TunnelResolver`]: crate::auth::TunnelResolver
//! [`SandboxHosts`]: crate::auth::SandboxHosts
//! [`SandboxHosts::split`]: crate::auth::SandboxHosts::split
//! [`SecureCookie::Auto`]: crate::auth::SecureCookie::Auto
//! [`is_same_origin_request`]: crate::auth::is_same_origin_request
//! [`TokenSigner::with_previous_key`]: crate::auth::TokenSigner::with_previous_key
//! [`TokenSigner::new`]: crate::auth::TokenSigner::new
//! [`TokenSigner::rotate`]: crate::auth::TokenSigner::rotate
//! [`TokenSigner::remove_previous_keys`]: crate::auth::TokenSigner::remove_previous_keys
//! [`TunnelAuthLayer::logout`]: crate::auth::TunnelAuthLayer::logout
//! [`TunnelAuthLayer::revocations`]: crate::auth::TunnelAuthLayer::revocations
//! [`TunnelAuthLayer::redirect_navigations`]: crate::auth::TunnelAuthLayer::redirect_navigations
//! [`Logout`]: crate::auth::Logout
//! [`SessionRedirect`]: crate::auth::SessionRedirect
//! [`RevocationStore`]: crate::auth::RevocationStore
//! [`MemoryRevocationStore`]: crate::auth::MemoryRevocationStore
//! [`bootstrap_url`]: crate::auth::bootstrap_url
//! [`Bootstrap`]: crate::auth::Bootstrap
//! [`NonceStore`]: crate::auth::NonceStore
//! [`Audience::Cookie`]: crate::auth::Audience::Cookie
//! [`TunnelAuthLayer`]: crate::auth::TunnelAuthLayer
//! [`Claims`]: crate::auth::Claims
//! [`TokenError`]: crate::auth::TokenError

mod bootstrap;
mod cookie;
mod id;
mod nonce;
#[cfg(feature = "redis")]
mod redis_revoke;
#[cfg(feature = "redis")]
mod redis_store;
mod resolve;
mod revoke;
mod same_origin;
mod sandbox_hosts;
mod session_end;
mod split;
mod token;
mod tunnel;

pub use bootstrap::{
    bootstrap_url, Bootstrap, BootstrapBuilder, BootstrapFuture, DEFAULT_BOOTSTRAP_PATH,
};
pub use cookie::{ConfigError, CookieConfig, CookieConfigBuilder, SecureCookie};
pub use id::{is_valid_sandbox_id, MAX_SANDBOX_ID_LEN};
pub use nonce::{MemoryNonceStore, NonceStore, NonceStoreError, RecordFuture};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis_revoke::RedisRevocationStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis_store::RedisNonceStore;
pub use resolve::{TunnelResolveFuture, TunnelResolver};
pub use revoke::{
    MemoryRevocationStore, Revocation, RevocationError, RevocationStore, RevokeFuture,
};
pub use same_origin::is_same_origin_request;
pub use sandbox_hosts::SandboxHosts;
pub use session_end::{Logout, SessionRedirect};
pub use split::{SplitByHost, SplitFuture};
pub use token::{
    ApiClaims, Audience, Claims, IssueError, KeyError, TokenError, TokenSigner, MAX_API_UPSTREAMS,
    MAX_SUBJECT_LEN, MIN_KEY_LEN,
};
pub use tunnel::{ResponseFuture, TunnelAuth, TunnelAuthLayer};
