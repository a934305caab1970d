//! Signed tokens, the bootstrap that turns a one-time link into a cookie, and the tunnel guard.
//!
//! A new browser tab cannot carry `Authorization: Bearer`, so opening a browser IDE goes in three
//! steps, each on its own path:
//!
//! 1. **Issue.** The host's own authenticated route (say `POST /api/dev/{id}/ide-token`) calls
//!    [`TokenSigner::issue`] and returns [`bootstrap_url`]: `/api/dev/{id}/ide?token=…`, a
//!    short-lived, single-use, HMAC-signed token bound to the sandbox id.
//! 2. **Bootstrap.** The tab opens that URL. [`Bootstrap`] verifies the token, spends its nonce in
//!    a [`NonceStore`], sets an `HttpOnly` cookie scoped to `Path=/__ide/{id}/` whose value is a
//!    second signed token (audience [`Audience::Cookie`]), and answers `303` to `/__ide/{id}/`
//!    without the token.
//! 3. **Tunnel.** [`TunnelAuthLayer`] wraps the service that proxies `/__ide/{id}/…` (HTTP and
//!    WebSocket) to the sandbox. It admits a request only with a valid cookie for the id in its
//!    path, then strips the gateway's cookie and `Authorization` so code in the sandbox never
//!    sees gateway credentials, and hands the verified [`Claims`] to inner services.
//!
//! Tokens are verified in constant time, with key rotation ([`TokenSigner::with_previous_key`]).
//! Refusals are `403` with a short text telling the user to reopen the IDE from the dashboard;
//! the precise reason ([`TokenError`]) is only logged, at `debug`, and tokens and keys never are.
//! With several gateway replicas, share the signing key and a [`NonceStore`] (`RedisNonceStore`
//! with the `redis` feature) so a link spent on one replica is spent on all.
//!
//! Mount the tunnel with `route_service("/__ide/{*rest}", …)`: the guard reads the sandbox id from
//! the full path, which `nest_service` would strip.
//!
//! ```
//! use std::{convert::Infallible, time::Duration};
//! use axum::{body::Body, http::{Request, Response}, routing::post, Json, Router};
//! use sandbox_gateway::auth::{bootstrap_url, Bootstrap, CookieConfig, TokenSigner, TunnelAuthLayer};
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // At least 32 random bytes, shared by every replica.
//! let signer = TokenSigner::new(std::env::var("IDE_KEY").unwrap_or_else(|_| "x".repeat(32)))?;
//! let cookie = CookieConfig::default();
//!
//! let issue = {
//!     let signer = signer.clone();
//!     move || async move {
//!         // (Authenticate the user and check they own sandbox "demo" first.)
//!         let token = signer.issue("demo", Duration::from_secs(60)).expect("valid id");
//!         Json(serde_json::json!({ "url": bootstrap_url("demo", &token) }))
//!     }
//! };
//! let tunnel = ServiceBuilder::new()
//!     .layer(TunnelAuthLayer::new(signer.clone()).cookie(cookie.clone()))
//!     .service_fn(|_req: Request<Body>| async {
//!         // The proxy to the sandbox goes here.
//!         Ok::<_, Infallible>(Response::new(Body::from("inside the sandbox")))
//!     });
//!
//! let app: Router = Router::new()
//!     .route("/api/dev/demo/ide-token", post(issue))
//!     .route_service(
//!         "/api/dev/{id}/ide",
//!         Bootstrap::builder(signer).cookie(cookie).build::<Body>()?,
//!     )
//!     .route_service("/__ide/{*rest}", tunnel);
//! # Ok(()) }
//! ```
//!
//! [`TokenSigner::issue`]: crate::auth::TokenSigner::issue
//! [`TokenSigner::with_previous_key`]: crate::auth::TokenSigner::with_previous_key
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
mod redis_store;
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
pub use redis_store::RedisNonceStore;
pub use token::{
    ApiClaims, Audience, Claims, IssueError, KeyError, TokenError, TokenSigner, MAX_API_UPSTREAMS,
    MIN_KEY_LEN,
};
pub use tunnel::{ResponseFuture, TunnelAuth, TunnelAuthLayer};
