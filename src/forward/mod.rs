//! An outbound API proxy for apps running in a browser sandbox, behind an SSRF guard, for callers
//! the host authorised.
//!
//! An app in a WebContainer or an iframe sandbox wants to call an external API (a model provider,
//! a payment API) without holding its key, and often cannot call it directly (CORS). The host
//! server mounts [`ApiForward`] at `/api/proxy`: `POST /api/proxy/openai/chat/completions` goes to
//! the upstream configured as `openai`, with the server's key, and the answer streams back (event
//! streams included).
//!
//! # Who may spend the keys
//!
//! CORS decides what a browser page may read; it is **no access control** — `curl` sends no
//! `Origin` and ignores CORS. So the forwarder checks every caller itself, and refuses to build
//! without being told how ([`Builder::callers`]):
//!
//! - **API tokens** ([`Callers::api_tokens`], feature `auth`). The host's own authenticated route
//!   (it knows the user from its session) mints a short-lived token with
//!   [`TokenSigner::issue_api`](crate::auth::TokenSigner::issue_api): a subject, the upstream
//!   names it may use, an expiry, HMAC-signed with an audience of its own, so an IDE link or
//!   tunnel cookie is never an API token and the other way round. The host page hands it to the
//!   app, which uses it **as its SDK's API key** — the SDK then sends it as
//!   `Authorization: Bearer …`, or under the upstream's key header (`x-api-key` for an upstream
//!   whose key is injected as `x-api-key`, as the Anthropic SDK does). The forwarder verifies it,
//!   removes it, and injects the server's key. No or an invalid credential: `401` with a JSON
//!   error; an upstream the token does not name: `403`. The upstream is not contacted.
//! - **A check of the host's own** ([`Callers::check`] for a tower service,
//!   [`Callers::check_fn`] for an async function): it sees the request head (cookies included)
//!   and answers with a [`Caller`] (an id for quotas, optionally the upstreams it may use) or a
//!   [`CallerRefusal`] (`401`/`403`). Needs no other feature.
//! - [`Callers::anyone`], for a gateway no one else can reach.
//!
//! An upstream marked [`Upstream::bring_your_own_key`] skips this: the caller's own credential
//! passes to it unchanged and no server key is injected (the SSRF guard, methods, paths and body
//! limit still apply).
//!
//! # Quotas
//!
//! [`Quota`] limits each caller (the token's subject, or the check's [`Caller::id`]): requests
//! and request bytes per window (GCRA) and streams open at once; over it, `429` with
//! `Retry-After`. Counted in memory for one replica ([`QuotaStore::memory`], `governor`), or in
//! Redis (`RedisQuotaStore`, feature `redis`), where one Lua script checks and charges every limit
//! atomically so any number of gateway processes share one budget.
//!
//! # The walls
//!
//! - Only named [`Upstream`]s are reachable; each lists its methods and path prefixes; everything
//!   else is refused (404, 405, 403).
//! - Secrets ([`Secret`]) live on the server, are injected per upstream and never logged; the
//!   browser's `Cookie` and `Authorization` never go out (but to a bring-your-own-key upstream).
//! - [`SsrfGuard`] checks every address a connection goes to — after resolution, pinned, so DNS
//!   rebinding cannot slip in — and refuses loopback, private, link-local, metadata and the other
//!   non-public ranges in every spelling ([`AddressClass`]), unless an upstream is explicitly
//!   allowed ([`Upstream::allow_private`], [`SsrfGuard::allow_cidr`]).
//! - Redirects are not followed: a `3xx` is returned to the browser as it is. (A browser that
//!   follows it does so from its own network, with none of the server's secrets.)
//! - Request bodies are limited per upstream ([`Upstream::body_limit`], default 20 MiB, room for
//!   chat requests with images); over it, `413` naming the limit.
//! - Streams: event streams are relayed event by event, with an optional heartbeat
//!   ([`Builder::sse_heartbeat`]) so idle streams outlive tunnels and CDNs that cut at about
//!   100 s. A client that goes away (an aborted `fetch`, an HTTP/2 `RST_STREAM`) drops the
//!   upstream request, which resets the upstream's HTTP/2 stream; an upstream that resets or
//!   breaks mid-stream reaches the client as a broken stream, never as a clean end.
//!
//! # Features
//!
//! `forward` alone builds the forwarder with [`Callers::check`], [`Callers::check_fn`] and
//! [`Callers::anyone`]; [`Callers::api_tokens`] needs `auth` (the token signer), and
//! `RedisQuotaStore` needs `redis`.
//!
//! # Example: the token flow of an app builder
//!
//! Put a [`CorsLayer`](crate::cors::CorsLayer) outside the forwarder when the app runs on another
//! origin, allowing the headers API SDKs send
//! ([`AllowHeaders::api_sdks`](crate::cors::AllowHeaders::api_sdks)), so their preflights pass
//! and error answers carry CORS headers too:
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{routing::post, Router};
//! use http::{header, Method};
//! use sandbox_gateway::auth::TokenSigner;
//! use sandbox_gateway::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};
//! use sandbox_gateway::forward::{ApiForward, Callers, Quota, Secret, Upstream};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // One key shared by every replica (32 random bytes or more).
//! let signer = TokenSigner::new(std::env::var("API_TOKEN_KEY")?)?;
//! let forward = ApiForward::builder()
//!     .callers(Callers::api_tokens(signer.clone()))
//!     .quota(Quota::new().requests(60, Duration::from_secs(60)).concurrent_streams(4))
//!     .sse_heartbeat(Duration::from_secs(15))
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
//!     .allow_headers(AllowHeaders::api_sdks())
//!     .expose_headers(ExposeHeaders::api_sdks())
//!     .build()?;
//! // The host's own route: after checking the user's session, a token for the app.
//! let mint = post(move || {
//!     let signer = signer.clone();
//!     async move {
//!         signer
//!             .issue_api("user-42", ["llm"], Duration::from_secs(900))
//!             .unwrap_or_default()
//!     }
//! });
//! let app: Router = Router::new()
//!     .route("/api/token", mint)
//!     .nest_service("/api/proxy", tower::ServiceBuilder::new().layer(cors).service(forward));
//! // In the app: new OpenAI({ baseURL: "https://host/api/proxy/llm", apiKey: token,
//! //                          dangerouslyAllowBrowser: true })
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
