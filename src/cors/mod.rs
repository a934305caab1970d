//! CORS that stays right behind a proxy: preflights answered here, one
//! `Access-Control-Allow-Origin` on every response, error answers included.
//!
//! Put [`CorsLayer`] outside whatever authenticates or proxies, so that a preflight (which carries
//! no credentials) is answered before it reaches either.
//!
//! **CORS is not access control.** It tells a browser which pages may read an answer; anything
//! that is not a browser (`curl`, a server, a script) ignores it and sends no `Origin` at all, and
//! the request reaches the server whatever the policy. Authenticate callers behind it (for the
//! API forwarder: [`Callers`](crate::forward::Callers)).
//!
//! For apps that call an API through the gateway with an OpenAI- or Anthropic-style SDK, allow
//! the headers those SDKs send with [`AllowHeaders::api_sdks`] (`Authorization`, `x-api-key`,
//! `anthropic-version`, the `X-Stainless-*` family…) and expose the ones they read with
//! [`ExposeHeaders::api_sdks`] (`Retry-After`, request ids): a preflight that refuses any of them
//! fails the app with "Failed to fetch".
//!
//! # What it does
//!
//! - **Preflight** — an `OPTIONS` request with `Origin` *and* `Access-Control-Request-Method` — is
//!   answered by the layer itself and never reaches the inner service. Allowed: `204 No Content`
//!   with `Access-Control-Allow-Origin` (the request's origin, or `*` with [`AllowOrigin::any`]),
//!   `-Allow-Credentials`, `-Allow-Methods`, `-Allow-Headers`, `-Max-Age` and
//!   `-Allow-Private-Network` as configured. Refused (origin, method, request header or private
//!   network access not allowed): `403` with a plain-text line saying which, and no CORS header at
//!   all. Every other `OPTIONS` request goes to the inner service like any request.
//! - **Actual responses**, whatever their status (a `502`, `504` or `413` from a proxy too): every
//!   `Access-Control-*` header the inner service set is removed, then, for an allowed origin,
//!   `Access-Control-Allow-Origin`, `-Allow-Credentials` and `-Expose-Headers` are set. The layer
//!   owns CORS: an upstream's `Access-Control-Allow-Origin: *` never reaches the browser next to
//!   ours (two values fail the request), nor for an origin we refuse.
//! - **`Vary`**: `Origin` is appended to the inner service's `Vary` on every actual response unless
//!   already listed (or `Vary: *`); preflight answers vary on `Origin`,
//!   `Access-Control-Request-Method`, `Access-Control-Request-Headers` (and
//!   `Access-Control-Request-Private-Network` when enabled).
//! - **Origins**: exact origins and `*.` subdomain patterns ([`OriginPattern`]), a predicate, any
//!   (`*`) or every origin echoed. Scheme and port must match exactly, hosts compare
//!   case-insensitively and ignore one trailing dot; a pattern's `*` is one or more whole labels.
//!   `null` is refused by every policy unless [`CorsBuilder::allow_null_origin`] is set. A request
//!   with several `Origin` headers is never allowed.
//! - **Methods**: `GET`, `HEAD` and `POST` are CORS-safelisted and always pass a preflight; others
//!   must be listed (compared case-sensitively, as browsers do) or allowed by `*`/mirroring.
//! - **Request headers**: each name in `Access-Control-Request-Headers` must be listed, or covered
//!   by `*` — which never covers `Authorization` (name it: [`AllowHeaders::any_and`]) — or
//!   mirrored.
//! - **Credentials** with any wildcard (`*` origin, methods, request or exposed headers) or a
//!   mirrored origin is refused by [`CorsBuilder::build`], an error rather than a browser failure.
//!
//! # Compared with `tower_http::cors::CorsLayer`
//!
//! | behaviour | tower-http 0.6 | this layer |
//! |---|---|---|
//! | what counts as a preflight | every `OPTIONS` | `OPTIONS` + `Origin` + `Access-Control-Request-Method`; other `OPTIONS` reach the app |
//! | preflight status | `200`, empty body | `204` |
//! | preflight from a refused origin | `200` with `-Allow-Methods`/`-Headers`/`Vary`, no ACAO | `403` with a message, no CORS header |
//! | preflight asking for a method or header not allowed | `200`, the browser fails silently | `403` naming the method or header |
//! | `Authorization` under `allow_headers(Any)` | `*` sent, the browser refuses | refused with a message; [`AllowHeaders::any_and`] names it |
//! | upstream's own ACAO on an allowed origin | replaced | replaced |
//! | upstream's own ACAO/credentials on a refused origin or without `Origin` | passed through (`*` leaks out) | removed |
//! | CORS headers on error answers of the inner service | yes | yes |
//! | `Vary` on actual responses | appends all three preflight names, even if present | appends `Origin` only if absent and no `Vary: *` |
//! | `null` origin | allowed by `Any`, mirror or a matching predicate | refused unless `allow_null_origin(true)` |
//! | several `Origin` headers | first one judged | never allowed |
//! | subdomain patterns | write a predicate | `https://*.example.com` entries, label-safe |
//! | scheme/port/case/trailing dot | byte-exact comparison of the list | parsed, normalised comparison; origin echoed as sent |
//! | credentials with `*` | panics when the layer is applied or polled | `Err(CorsError)` from `build` |
//! | credentials with a mirrored origin (`very_permissive`) | allowed | refused; a predicate must say so |
//! | credentials as a predicate, async origin predicate, dynamic `Max-Age` | yes | no (a fixed flag, a sync predicate, a fixed `Max-Age`) |
//! | Private Network Access | header added when enabled | same, and `403` when asked for but not enabled |
//! | response body bound | `ResBody: Default` | `ResBody: From<Bytes>` (for the `403` message) |
//!
//! # Example
//!
//! ```
//! use http::{header, Method};
//! use sandbox_gateway::cors::{AllowOrigin, CorsLayer};
//! use std::time::Duration;
//!
//! // An app in a WebContainer calls the host's API with POST + Authorization.
//! let cors = CorsLayer::builder()
//!     .allow_origin(AllowOrigin::list(["https://*.webcontainer-api.io"]))
//!     .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
//!     .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
//!     .expose_headers([header::ETAG])
//!     .max_age(Duration::from_secs(7200))
//!     .build()?;
//! # let _ = cors;
//! # Ok::<(), sandbox_gateway::cors::CorsError>(())
//! ```
//!
//! [`AllowHeaders::any_and`]: crate::cors::AllowHeaders::any_and
//! [`AllowHeaders::api_sdks`]: crate::cors::AllowHeaders::api_sdks
//! [`ExposeHeaders::api_sdks`]: crate::cors::ExposeHeaders::api_sdks
//! [`AllowOrigin::any`]: crate::cors::AllowOrigin::any
//! [`CorsBuilder::allow_null_origin`]: crate::cors::CorsBuilder::allow_null_origin
//! [`CorsBuilder::build`]: crate::cors::CorsBuilder::build
//! [`CorsLayer`]: crate::cors::CorsLayer
//! [`OriginPattern`]: crate::cors::OriginPattern

mod builder;
mod future;
mod layer;
pub(crate) mod origin;
mod policy;

pub use builder::{CorsBuilder, CorsError};
pub use future::ResponseFuture;
pub use layer::{Cors, CorsLayer};
pub use origin::{AllowOrigin, OriginPattern};
pub use policy::{AllowHeaders, AllowMethods, ExposeHeaders};
