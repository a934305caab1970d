//! An outbound API proxy for apps running in a browser sandbox, behind an SSRF guard.
//!
//! An app in a WebContainer or an iframe sandbox wants to call an external API (a model provider,
//! a payment API) without holding its key, and often cannot call it directly (CORS). The host
//! server mounts [`ApiForward`] at `/api/proxy`: `POST /api/proxy/openai/chat/completions` goes to
//! the upstream configured as `openai`, with the server's `Authorization`, and the answer streams
//! back (event streams included).
//!
//! - Only named [`Upstream`]s are reachable; each lists its methods and path prefixes; everything
//!   else is refused (404, 405, 403).
//! - Secrets ([`Secret`]) live on the server, are injected per upstream and never logged; the
//!   browser's `Cookie` and `Authorization` never go out.
//! - [`SsrfGuard`] checks every address a connection goes to — after resolution, pinned, so DNS
//!   rebinding cannot slip in — and refuses loopback, private, link-local, metadata and the other
//!   non-public ranges in every spelling ([`AddressClass`]), unless an upstream is explicitly
//!   allowed ([`Upstream::allow_private`], [`SsrfGuard::allow_cidr`]).
//! - Redirects are not followed: a `3xx` is returned to the browser as it is. (A browser that
//!   follows it does so from its own network, with none of the server's secrets.)
//!
//! Put a [`CorsLayer`](crate::cors::CorsLayer) outside it when the app runs on another origin, so
//! error answers carry CORS headers too:
//!
//! ```no_run
//! use axum::Router;
//! use http::{header, Method};
//! use sandbox_gateway::cors::{AllowOrigin, CorsLayer};
//! use sandbox_gateway::forward::{ApiForward, Secret, Upstream};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let forward = ApiForward::builder()
//!     .upstream(
//!         Upstream::new("llm", "https://api.example.com/v1")
//!             .allow_methods([Method::POST])
//!             .allow_paths(["/chat/completions"])
//!             .inject_header(header::AUTHORIZATION, Secret::bearer_from_env("LLM_API_KEY")?),
//!     )
//!     .build()?;
//! let cors = CorsLayer::builder()
//!     .allow_origin(AllowOrigin::list(["https://*.webcontainer-api.io"]))
//!     .allow_methods([Method::POST])
//!     .allow_headers([header::CONTENT_TYPE])
//!     .build()?;
//! let app: Router = Router::new().nest_service("/api/proxy", tower::ServiceBuilder::new().layer(cors).service(forward));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

mod body;
mod caller;
mod connector;
mod error;
mod quota;
#[cfg(feature = "redis")]
mod quota_redis;
mod service;
mod ssrf;
mod upstream;

pub use body::ForwardBody;
pub use caller::{Caller, CallerRefusal, Callers, ANONYMOUS};
pub use connector::SsrfConnector;
pub use error::{BuildError, ForwardError};
pub use quota::{Quota, QuotaExceeded, QuotaStore};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use quota_redis::RedisQuotaStore;
pub use service::{
    ApiForward, Builder, ResponseFuture, DEFAULT_BODY_LIMIT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_RESPONSE_TIMEOUT,
};
pub use ssrf::{AddressClass, Cidr, CidrParseError, Resolving, SsrfGuard, SsrfRefusal};
pub use upstream::{Secret, SecretError, Upstream};
