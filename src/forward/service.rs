//! The forwarder service and its builder.

use std::collections::HashMap;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use hyper_util::client::legacy::connect::Connect;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use pin_project_lite::pin_project;
use tower_service::Service;
use tracing::Instrument;

use super::body::{Capped, ForwardBody, Held};
use super::caller::Caller;
use super::connector::SsrfConnector;
use super::quota::{LimitError, Limiter};
use super::upstream::under_prefix;
use super::{BuildError, ForwardError, Secret, SsrfGuard, SsrfRefusal, Upstream};
use super::{Callers, Quota, QuotaStore};
use crate::connect::{ConnectorBuilder, LocalhostResolver};
use crate::proxy::{
    check_request, join_cookies, strip_hop_by_hop, with_head_timeout, ProxyBody, ProxyError,
    RequestBody,
};
use crate::route::{check_path, RouteError};
use crate::util::valid_upstream_name as valid_name;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The default request body limit: 20 MiB, room for a chat request with a few images inlined as
/// base64.
pub const DEFAULT_BODY_LIMIT: u64 = 20 * 1024 * 1024;
/// The default response-head timeout of the forwarder, counted from the request body's last
/// progress (model APIs may think a while before their first byte).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// The default connect timeout of the forwarder.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An outbound API proxy for apps running in a browser sandbox: `/{name}/{path}` goes to the
/// upstream called `name`, with the server's credentials, and nowhere else.
///
/// - **Only callers the host authorised** ([`Callers`], required): an API token the host issued,
///   presented where the app's SDK puts its key, or a check of the host's own. No valid
///   credential: `401`; an upstream the caller may not use: `403`; the upstream is not contacted.
///   Per-caller [`Quota`]s answer `429` with `Retry-After`.
/// - **Named upstreams only, deny by default.** The first path segment of the request path the
///   service receives names the upstream; the rest, with the query, is joined under the upstream's
///   base URL. Unknown name: 404. Method not allowed: 405 with `Allow`. Path not under an allowed
///   prefix: 403. Paths that could escape (`..`, `%2f`, `//`, `\`): 400.
/// - **Secrets stay on the server.** Headers configured with [`Upstream::inject_header`] are set
///   on every upstream request, replacing the browser's (and the caller's token). The browser's `Cookie`, `Authorization`,
///   `Proxy-Authorization`, `Forwarded`, `X-Forwarded-*`, `X-Real-IP`, hop-by-hop headers and (unless
///   [`Builder::forward_origin`]) `Origin` and `Referer` never go out; `Host` is the upstream's.
///   The upstream's `Set-Cookie` (it would land on the gateway's origin) and `Alt-Svc` are not
///   passed back.
/// - **SSRF guard on every connection** ([`SsrfGuard`]): names are resolved, every address is
///   checked, and the connection goes to exactly the checked addresses; IP-literal hosts and odd
///   IPv4 spellings are checked the same way. A refusal is answered 403 with the class of address.
/// - **Redirects are not followed**: a `3xx` goes back to the browser as the upstream sent it.
/// - **Streaming**: HTTPS upstreams via the [`connect`](crate::connect) module's connector (ALPN
///   `h2` and `http/1.1`, pooled); bodies stream both ways; `text/event-stream` responses get the
///   [`sse`](crate::sse) rules (no buffering, `no-transform`, unknown length, optional heartbeat).
/// - **Limits**: request bodies over the upstream's limit ([`Upstream::body_limit`], default
///   [`Builder::body_limit`], 20 MiB) are answered 413 naming the limit, at once from
///   `Content-Length` or as soon as a streamed body passes the limit. Connect failures 502,
///   connect and response-head timeouts 504. Every answer the forwarder writes itself is a short
///   JSON error, `{"error":{"type":"…","message":"…"}}`, which API SDKs show as the error.
///
/// Mount it with axum's `nest_service`, which strips the prefix:
///
/// ```no_run
/// use axum::Router;
/// use http::{header, Method};
/// use sandbox_gateway::auth::TokenSigner;
/// use sandbox_gateway::forward::{ApiForward, Callers, Secret, Upstream};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let signer = TokenSigner::random()?;
/// let forward = ApiForward::builder()
///     .callers(Callers::api_tokens(signer.clone()))
///     .upstream(
///         Upstream::new("openai", "https://api.openai.com/v1")
///             .allow_methods([Method::POST])
///             .allow_paths(["/chat/completions"])
///             .inject_header(header::AUTHORIZATION, Secret::bearer_from_env("OPENAI_API_KEY")?),
///     )
///     .build()?;
/// // POST /api/proxy/openai/chat/completions → https://api.openai.com/v1/chat/completions
/// let app: Router = Router::new().nest_service("/api/proxy", forward);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// axum::serve(listener, app).await?;
/// # Ok(()) }
/// ```
pub struct ApiForward<R = LocalhostResolver> {
    shared: Arc<Shared<R>>,
}

impl<R> Clone for ApiForward<R> {
    fn clone(&self) -> Self {
        ApiForward {
            shared: self.shared.clone(),
        }
    }
}

impl<R> fmt::Debug for ApiForward<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.shared.routes.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("ApiForward")
            .field("upstreams", &names)
            .field("body_limit", &self.shared.body_limit)
            .field("callers", &self.shared.callers)
            .field("quota", &self.shared.limiter)
            .finish_non_exhaustive()
    }
}

struct Shared<R> {
    client: Client<SsrfConnector<R>, RequestBody>,
    routes: HashMap<String, Route>,
    body_limit: u64,
    response_timeout: Option<Duration>,
    forward_origin: bool,
    heartbeat: Option<Duration>,
    callers: Option<Callers>,
    limiter: Option<Limiter>,
}

struct Route {
    base: crate::route::Upstream,
    methods: Vec<Method>,
    allow: HeaderValue,
    paths: Vec<String>,
    inject: Vec<(HeaderName, Secret)>,
    /// Where a caller may present its token besides `Authorization`: the injected names.
    key_headers: Vec<HeaderName>,
    own_key: bool,
    body_limit: u64,
}

impl ApiForward {
    /// A builder with no upstream, the default [`SsrfGuard`] and the defaults listed on
    /// [`Builder`].
    pub fn builder() -> Builder {
        Builder::new(SsrfGuard::new())
    }
}

/// Configures an [`ApiForward`].
///
/// Required: who may use the server's keys ([`callers`](Self::callers)), unless every upstream is
/// [`bring_your_own_key`](Upstream::bring_your_own_key).
///
/// Defaults: body limit 20 MiB, connect timeout 10 s, response-head timeout 120 s, pooled idle
/// connections kept 4 s, `Origin`/`Referer` not forwarded, no SSE heartbeat, webpki roots, no
/// quota.
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<R = LocalhostResolver> {
    guard: SsrfGuard<R>,
    upstreams: Vec<Upstream>,
    body_limit: u64,
    connect_timeout: Duration,
    response_timeout: Option<Duration>,
    pool_idle_timeout: Duration,
    forward_origin: bool,
    heartbeat: Option<Duration>,
    callers: Option<Callers>,
    quota: Quota,
    quota_store: QuotaStore,
    #[cfg(feature = "tls")]
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    #[cfg(feature = "tls")]
    webpki_roots: bool,
}

impl<R> Builder<R> {
    /// A builder connecting through `guard`.
    pub fn new(guard: SsrfGuard<R>) -> Self {
        Builder {
            guard,
            upstreams: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: Some(DEFAULT_RESPONSE_TIMEOUT),
            pool_idle_timeout: crate::proxy::DEFAULT_POOL_IDLE_TIMEOUT,
            forward_origin: false,
            heartbeat: None,
            callers: None,
            quota: Quota::new(),
            quota_store: QuotaStore::memory(),
            #[cfg(feature = "tls")]
            extra_roots: Vec::new(),
            #[cfg(feature = "tls")]
            webpki_roots: true,
        }
    }

    /// Replaces the SSRF guard (its policy and the resolver it wraps). Upstreams with
    /// [`allow_private`](Upstream::allow_private) add their hosts to it when built.
    pub fn guard<R2>(self, guard: SsrfGuard<R2>) -> Builder<R2> {
        Builder {
            guard,
            upstreams: self.upstreams,
            body_limit: self.body_limit,
            connect_timeout: self.connect_timeout,
            response_timeout: self.response_timeout,
            pool_idle_timeout: self.pool_idle_timeout,
            forward_origin: self.forward_origin,
            heartbeat: self.heartbeat,
            callers: self.callers,
            quota: self.quota,
            quota_store: self.quota_store,
            #[cfg(feature = "tls")]
            extra_roots: self.extra_roots,
            #[cfg(feature = "tls")]
            webpki_roots: self.webpki_roots,
        }
    }

    /// Adds a named upstream.
    pub fn upstream(mut self, upstream: Upstream) -> Self {
        self.upstreams.push(upstream);
        self
    }

    /// Who may have requests forwarded with the server's keys: [`Callers::api_tokens`] (feature
    /// `auth`), a check of the host's own ([`Callers::check`], [`Callers::check_fn`]), or
    /// [`Callers::anyone`]. Required unless every upstream brings its own key.
    pub fn callers(mut self, callers: Callers) -> Self {
        self.callers = Some(callers);
        self
    }

    /// Limits per caller: requests and request bytes per window, streams open at once (none by
    /// default). Counted in [`quota_store`](Self::quota_store), in memory by default.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }

    /// Where the quota is counted: [`QuotaStore::memory`] (default, one replica) or in Redis
    /// (feature `redis`) for several replicas sharing one budget.
    pub fn quota_store(mut self, store: QuotaStore) -> Self {
        self.quota_store = store;
        self
    }

    /// The largest request body forwarded, in bytes, for upstreams without a limit of their own
    /// ([`Upstream::body_limit`]); default [`DEFAULT_BODY_LIMIT`] (20 MiB). Larger ones are
    /// answered 413.
    pub fn body_limit(mut self, bytes: u64) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The TCP connect timeout (default 10 s); answered 504.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long the upstream may take to send its response head after the request body last made
    /// progress (default 120 s; `None` waits forever); answered 504. Streams have no total timeout.
    pub fn response_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long an idle pooled upstream connection is kept (default 4 s).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// Whether the browser's `Origin` and `Referer` go to the upstream (default no: they name the
    /// sandbox's pages, which an external API has no use for).
    pub fn forward_origin(mut self, yes: bool) -> Self {
        self.forward_origin = yes;
        self
    }

    /// Sends an SSE comment `:\n\n` after `every` of silence on event streams (see
    /// [`SseLayerBuilder::heartbeat`](crate::sse::SseLayerBuilder::heartbeat)); off by default.
    pub fn sse_heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = Some(every);
        self
    }

    /// Trusts this root certificate (DER) for HTTPS upstreams, besides the webpki roots.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn add_root_certificate(
        mut self,
        der: impl Into<rustls::pki_types::CertificateDer<'static>>,
    ) -> Self {
        self.extra_roots.push(der.into());
        self
    }

    /// Whether to trust the webpki (Mozilla) root certificates (default on).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn webpki_roots(mut self, on: bool) -> Self {
        self.webpki_roots = on;
        self
    }

    /// Checks the configuration and builds the forwarder.
    ///
    /// # Errors
    /// A name that is not a plain path segment or is used twice; a base URL that is not
    /// `http(s)://host[:port][/path]`; an upstream with no allowed method or path; a path prefix
    /// that is not a clean absolute path; an injected header that is hop-by-hop or `Host`; two
    /// upstreams on one host of which only one allows private addresses; a zero body limit or
    /// heartbeat; an invalid TLS root; no [`callers`](Self::callers) while an upstream spends a
    /// server key; an upstream that both brings its own key and injects one; a quota with a zero
    /// count or window, or a byte budget smaller than a body limit.
    pub fn build(self) -> Result<ApiForward<R>, BuildError>
    where
        R: Clone + Send + Sync + 'static,
        SsrfConnector<R>: Connect + Clone + Send + Sync + 'static,
    {
        if self.body_limit == 0 {
            return Err(BuildError("the body limit must be above zero".into()));
        }
        if self.heartbeat == Some(Duration::ZERO) {
            return Err(BuildError("the SSE heartbeat must be above zero".into()));
        }
        let mut guard = self.guard;
        let mut routes = HashMap::new();
        let mut hosts: HashMap<String, (String, bool)> = HashMap::new();
        for up in self.upstreams {
            let (name, route, allow_private) = compile(up, self.body_limit)?;
            if !route.own_key && self.callers.is_none() {
                return Err(BuildError(format!(
                    "upstream `{name}`: no caller check; choose who may spend the server's keys with \
                     `callers(Callers::api_tokens(..))`, `Callers::check(..)`, or `Callers::anyone()` \
                     for a gateway only you can reach"
                )));
            }
            let host = route
                .base
                .authority()
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim_end_matches('.')
                .to_ascii_lowercase();
            if let Some((other, other_allows)) = hosts.get(&host) {
                if *other_allows != allow_private {
                    return Err(BuildError(format!(
                        "upstreams `{other}` and `{name}` share the host {host}, but only one allows private addresses"
                    )));
                }
            }
            hosts.insert(host.clone(), (name.clone(), allow_private));
            if allow_private && !guard.allows_host(&host) {
                guard = guard.allow_host(&host);
                // The connector dials `0.0.0.0` and `[::]` as `localhost`.
                if host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_unspecified())
                {
                    guard = guard.allow_host("localhost");
                }
            }
            if routes.insert(name.clone(), route).is_some() {
                return Err(BuildError(format!("upstream `{name}` is configured twice")));
            }
        }

        #[allow(unused_mut)]
        let mut connector =
            ConnectorBuilder::new(guard.clone()).connect_timeout(self.connect_timeout);
        #[cfg(feature = "tls")]
        {
            connector = connector.webpki_roots(self.webpki_roots);
            for der in self.extra_roots {
                connector = connector.add_root_certificate(der);
            }
        }
        let connector = connector.build().map_err(|e| BuildError(e.to_string()))?;
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let client = builder.build(SsrfConnector::new(connector, guard));
        let limiter = if self.quota.is_empty() {
            None
        } else {
            let largest = routes
                .values()
                .filter(|r: &&Route| !r.own_key)
                .map(|r| r.body_limit)
                .max()
                .unwrap_or(self.body_limit);
            self.quota.check(largest)?;
            Some(Limiter::new(self.quota, self.quota_store))
        };
        Ok(ApiForward {
            shared: Arc::new(Shared {
                client,
                routes,
                body_limit: self.body_limit,
                response_timeout: self.response_timeout,
                forward_origin: self.forward_origin,
                heartbeat: self.heartbeat,
                callers: self.callers,
                limiter,
            }),
        })
    }
}

static HOP_NAMES: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

fn compile(up: Upstream, default_limit: u64) -> Result<(String, Route, bool), BuildError> {
    let name = up.name;
    if !valid_name(&name) {
        return Err(BuildError(format!(
            "upstream name `{name}` must be one path segment of letters, digits, `-`, `_` or `.`"
        )));
    }
    let base: crate::route::Upstream = up
        .base
        .parse()
        .map_err(|e: RouteError| BuildError(format!("upstream `{name}`: {e}")))?;
    if up.methods.is_empty() {
        return Err(BuildError(format!(
            "upstream `{name}` allows no method; list them with allow_methods"
        )));
    }
    if up.paths.is_empty() {
        return Err(BuildError(format!(
            "upstream `{name}` allows no path; list prefixes with allow_paths (\"/\" for all)"
        )));
    }
    let mut paths = Vec::with_capacity(up.paths.len());
    for p in up.paths {
        if p.contains('?') || check_path(&p).is_err() {
            return Err(BuildError(format!(
                "upstream `{name}`: path prefix `{p}` must be a clean absolute path like /v1/chat"
            )));
        }
        let trimmed = if p == "/" {
            p
        } else {
            p.trim_end_matches('/').to_owned()
        };
        paths.push(trimmed);
    }
    if up.own_key && !up.inject.is_empty() {
        return Err(BuildError(format!(
            "upstream `{name}` brings its own key: it cannot also inject one"
        )));
    }
    let body_limit = up.body_limit.unwrap_or(default_limit);
    if body_limit == 0 {
        return Err(BuildError(format!(
            "upstream `{name}`: the body limit must be above zero"
        )));
    }
    for (h, _) in &up.inject {
        if HOP_NAMES.contains(&h.as_str()) {
            return Err(BuildError(format!(
                "upstream `{name}`: header `{h}` cannot be injected"
            )));
        }
    }
    let allow = up
        .methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let allow = HeaderValue::from_str(&allow)
        .map_err(|_| BuildError(format!("upstream `{name}`: invalid method list")))?;
    Ok((
        name,
        Route {
            base,
            methods: up.methods,
            allow,
            paths,
            key_headers: up.inject.iter().map(|(h, _)| h.clone()).collect(),
            inject: up.inject,
            own_key: up.own_key,
            body_limit,
        },
        up.allow_private,
    ))
}

impl<R, B> Service<Request<B>> for ApiForward<R>
where
    R: Send + Sync + 'static,
    SsrfConnector<R>: Connect + Clone + Send + Sync + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ForwardBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        let heartbeat = shared.heartbeat;
        let boxed: Forwarding =
            Box::pin(async move { Ok(crate::metrics::request("api", shared.forward(req)).await) });
        ResponseFuture {
            inner: crate::sse::ResponseFuture::new(boxed, heartbeat),
        }
    }
}

type Forwarding = Pin<Box<dyn Future<Output = Result<Response<Held>, Infallible>> + Send>>;

pin_project! {
    /// The response future of [`ApiForward`]. It never fails: errors are answers.
    pub struct ResponseFuture {
        #[pin]
        inner: crate::sse::ResponseFuture<Forwarding>,
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ForwardBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = ready!(self.project().inner.poll(cx))?;
        Poll::Ready(Ok(res.map(ForwardBody::new)))
    }
}

/// The forwarder's own answer: `{"error":{"type":"…","message":"…"}}`, the shape OpenAI- and
/// Anthropic-style SDKs read their error from; `Retry-After` on a quota refusal, `Allow` is added
/// by the caller for 405.
fn error_response(err: &ForwardError) -> Response<Held> {
    let body = format!(
        "{{\"error\":{{\"type\":\"{}\",\"message\":{}}}}}\n",
        err.kind(),
        json_string(&err.to_string())
    );
    let mut res = Response::new(Held::from(Bytes::from(body)));
    *res.status_mut() = err.status();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let ForwardError::Quota(q) = err {
        h.insert(header::RETRY_AFTER, HeaderValue::from(q.retry_after_secs()));
    }
    if err.status() == StatusCode::UNAUTHORIZED {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"api\""),
        );
    }
    res
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The request headers that never leave for an upstream (besides hop-by-hop ones). The caller's
/// `Authorization` goes out only to an upstream that takes the caller's own key.
fn scrub_request_headers(headers: &mut HeaderMap, forward_origin: bool, own_key: bool) {
    strip_hop_by_hop(headers);
    join_cookies(headers);
    for name in [
        header::HOST,
        header::COOKIE,
        header::FORWARDED,
        header::EXPECT,
    ] {
        headers.remove(name);
    }
    if !own_key {
        headers.remove(header::AUTHORIZATION);
    }
    headers.remove("x-real-ip");
    let forwarded: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-forwarded-"))
        .cloned()
        .collect();
    for name in forwarded {
        headers.remove(name);
    }
    if !forward_origin {
        headers.remove(header::ORIGIN);
        headers.remove(header::REFERER);
    }
}

/// Finds an SSRF refusal anywhere in an error chain.
fn find_refusal(err: &(dyn StdError + 'static)) -> Option<SsrfRefusal> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<SsrfRefusal>() {
            return Some(r.clone());
        }
        if let Some(r) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<SsrfRefusal>())
        {
            return Some(r.clone());
        }
        cur = e.source();
    }
    None
}

impl<R> Shared<R>
where
    SsrfConnector<R>: Connect + Clone + Send + Sync + 'static,
{
    async fn forward<B>(self: Arc<Self>, req: Request<B>) -> Response<Held>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let start = Instant::now();
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path();
        let after = path.strip_prefix('/').unwrap_or(path);
        let (name, rest) = match after.find('/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, "/"),
        };
        let Some(route) = self.routes.get(name) else {
            return error_response(&ForwardError::UnknownUpstream);
        };
        if let Err(RouteError::BadPath(why)) = check_path(rest) {
            return error_response(&ForwardError::BadRequest(why));
        }
        let caller: Option<Caller> = match (&self.callers, route.own_key) {
            (_, true) => None,
            (Some(callers), false) => {
                let admitted = callers.admit(name, &parts, &route.key_headers).await;
                match admitted {
                    Ok(caller) => Some(caller),
                    Err(refusal) => {
                        let status = refusal.status().as_u16();
                        tracing::info!(upstream = %name, status, "caller refused");
                        crate::metrics::refused("caller");
                        return error_response(&ForwardError::Caller(refusal));
                    }
                }
            }
            // `build` refuses upstreams that spend a key without a caller check.
            (None, false) => return error_response(&ForwardError::UnknownUpstream),
        };
        if !route.methods.contains(&parts.method) {
            let mut res = error_response(&ForwardError::MethodNotAllowed(parts.method.clone()));
            res.headers_mut().insert(header::ALLOW, route.allow.clone());
            return res;
        }
        if !route.paths.iter().any(|p| under_prefix(rest, p)) {
            return error_response(&ForwardError::PathNotAllowed(rest.to_owned()));
        }
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > route.body_limit) {
            return error_response(&ForwardError::PayloadTooLarge(route.body_limit));
        }
        if let Err(e) = check_request(&parts) {
            return error_response(&match e {
                ProxyError::BadRequest(why) => ForwardError::BadRequest(why),
                other => ForwardError::Upstream(other),
            });
        }
        let path_and_query = match parts.uri.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_owned(),
        };
        let Ok(path_and_query) = PathAndQuery::try_from(path_and_query) else {
            return error_response(&ForwardError::BadRequest("invalid path"));
        };
        let permit = match (&self.limiter, &caller) {
            (Some(limiter), Some(caller)) => {
                let charge = declared.unwrap_or(route.body_limit);
                match limiter.acquire(caller.id(), charge).await {
                    Ok(permit) => Some(permit),
                    Err(LimitError::Exceeded(q)) => {
                        tracing::info!(upstream = %name, caller = %caller.id(), "quota exceeded");
                        crate::metrics::refused("quota");
                        return error_response(&ForwardError::Quota(q));
                    }
                    Err(LimitError::Unavailable(why)) => {
                        return error_response(&ForwardError::QuotaUnavailable(why));
                    }
                }
            }
            _ => None,
        };
        let target = route.base.target(path_and_query);
        let span = tracing::info_span!(
            "forward",
            upstream = %name,
            caller = caller.as_ref().map_or("", |c| c.id()),
            method = %parts.method,
            path = %rest,
        );

        let mut headers = std::mem::take(&mut parts.headers);
        scrub_request_headers(&mut headers, self.forward_origin, route.own_key);
        for (h, secret) in &route.inject {
            // Also removes every other value: a caller's token under the same name.
            headers.insert(h.clone(), secret.value().clone());
        }
        let exceeded = Arc::new(AtomicBool::new(false));
        let body = Capped::new(body, route.body_limit, exceeded.clone());
        let (body, progress) = RequestBody::new(body, self.response_timeout.is_some());
        let mut out = Request::new(body);
        *out.method_mut() = parts.method;
        *out.uri_mut() = target.uri();
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = headers;

        let sending = self.client.request(out);
        let result = with_head_timeout(sending, self.response_timeout, progress.as_deref())
            .instrument(span.clone())
            .await;
        let upstream = target.authority().as_str();
        let res = match result {
            None => {
                let e = ForwardError::Upstream(ProxyError::Timeout {
                    upstream: upstream.to_owned(),
                    after: self.response_timeout.unwrap_or_default(),
                });
                tracing::warn!(parent: &span, error = %e, "upstream timed out");
                return error_response(&e);
            }
            Some(Err(err)) => {
                let e = if exceeded.load(Ordering::Acquire) {
                    ForwardError::PayloadTooLarge(route.body_limit)
                } else if let Some(refusal) = find_refusal(&err) {
                    ForwardError::Ssrf(refusal)
                } else {
                    ForwardError::Upstream(ProxyError::from_client(upstream, err))
                };
                tracing::warn!(parent: &span, error = %e, "forward refused or failed");
                return error_response(&e);
            }
            Some(Ok(res)) => res,
        };
        let (mut parts, body) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::SET_COOKIE);
        parts.headers.remove(header::ALT_SVC);
        parts.version = Version::default();
        tracing::info!(
            parent: &span,
            status = parts.status.as_u16(),
            head_ms = start.elapsed().as_millis() as u64,
            "forwarded"
        );
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            // No upgrade was asked for (the Upgrade header never goes out): a 101 is malformed.
            return error_response(&ForwardError::Upstream(ProxyError::Upstream {
                upstream: upstream.to_owned(),
                reason: "switched protocols unasked",
                source: "unexpected 101".into(),
            }));
        }
        Response::from_parts(parts, Held::new(ProxyBody::upstream(body, None), permit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_credentials_and_forwarding_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("cookie", "session=1"),
            ("authorization", "Bearer browser"),
            ("proxy-authorization", "Basic x"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-host", "evil"),
            ("x-real-ip", "1.2.3.4"),
            ("origin", "https://app.example"),
            ("referer", "https://app.example/page"),
            ("host", "gateway"),
            ("connection", "x-custom"),
            ("x-custom", "1"),
            ("content-type", "application/json"),
            ("last-event-id", "7"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let mut kept = h.clone();
        scrub_request_headers(&mut kept, false, false);
        let mut names: Vec<_> = kept.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "last-event-id"]);
        // Bring your own key: the caller's Authorization, and only that, goes out.
        let mut own = h.clone();
        scrub_request_headers(&mut own, false, true);
        let mut names: Vec<_> = own.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["authorization", "content-type", "last-event-id"]);
        scrub_request_headers(&mut h, true, false);
        assert!(h.contains_key("origin") && h.contains_key("referer"));
    }

    #[test]
    fn errors_are_json_sdks_can_read() {
        let res = error_response(&ForwardError::PathNotAllowed("/a\"b\\c\n".into()));
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        let body = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(
            res.into_body(),
        ))
        .unwrap()
        .unwrap()
        .to_bytes();
        assert_eq!(
            &body[..],
            &br#"{"error":{"type":"forbidden","message":"path /a\"b\\c\u000a is not allowed for this upstream"}}
"#[..]
        );
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let builder = ApiForward::builder().callers(Callers::anyone()).upstream(
            Upstream::new("a", "https://api.example.com")
                .allow_methods([Method::POST])
                .allow_paths(["/"])
                .inject_header(header::AUTHORIZATION, Secret::bearer("sk-hidden").unwrap()),
        );
        let shown = format!("{builder:?}");
        assert!(shown.contains("Secret(<redacted>)") && !shown.contains("sk-hidden"));
        let forward = builder.build().unwrap();
        assert!(!format!("{forward:?}").contains("sk-hidden"));
    }

    #[test]
    fn bad_configurations_are_refused() {
        let ok = || {
            Upstream::new("a", "https://api.example.com/v1")
                .allow_methods([Method::POST])
                .allow_paths(["/chat"])
        };
        let b = || ApiForward::builder().callers(Callers::anyone());
        assert!(b().upstream(ok()).build().is_ok());
        // Bring-your-own-key upstreams need no caller check; others do.
        assert!(ApiForward::builder()
            .upstream(ok().bring_your_own_key(true))
            .build()
            .is_ok());
        let e = ApiForward::builder().upstream(ok()).build().unwrap_err();
        assert!(e.to_string().contains("no caller check"), "{e}");
        let cases = [
            b().upstream(
                ok().bring_your_own_key(true)
                    .inject_header(header::AUTHORIZATION, Secret::bearer("k").unwrap()),
            ),
            b().upstream(ok().body_limit(0)),
            b().upstream(ok())
                .quota(Quota::new().request_bytes(1024, Duration::from_secs(1))),
            b().upstream(ok())
                .quota(Quota::new().requests(0, Duration::from_secs(1))),
            ApiForward::builder().upstream(ok()).upstream(ok()),
            ApiForward::builder().upstream(Upstream::new("a", "https://x/").allow_paths(["/"])),
            ApiForward::builder()
                .upstream(Upstream::new("a", "https://x/").allow_methods([Method::GET])),
            ApiForward::builder().upstream(
                Upstream::new("a/b", "https://x")
                    .allow_methods([Method::GET])
                    .allow_paths(["/"]),
            ),
            ApiForward::builder().upstream(
                Upstream::new("a", "ftp://x")
                    .allow_methods([Method::GET])
                    .allow_paths(["/"]),
            ),
            ApiForward::builder().upstream(ok().allow_paths(["/../x"])),
            ApiForward::builder().upstream(ok().allow_paths(["chat"])),
            ApiForward::builder()
                .upstream(ok().inject_header(header::HOST, Secret::new("evil").unwrap())),
            ApiForward::builder().upstream(ok()).upstream(
                Upstream::new("b", "https://API.example.com")
                    .allow_methods([Method::GET])
                    .allow_paths(["/"])
                    .allow_private(true),
            ),
            ApiForward::builder().upstream(ok()).body_limit(0),
        ];
        let expected = [
            "upstream `a` brings its own key: it cannot also inject one",
            "upstream `a`: the body limit must be above zero",
            "a byte quota of 1024 bytes per window cannot hold one body of the body limit (20971520 bytes)",
            "a request quota needs at least one request in a window above zero",
            "upstream `a` is configured twice",
            "upstream `a` allows no method; list them with allow_methods",
            r#"upstream `a` allows no path; list prefixes with allow_paths ("/" for all)"#,
            "upstream name `a/b` must be one path segment of letters, digits, `-`, `_` or `.`",
            "upstream `a`: invalid route configuration: upstream `ftp://x`: scheme must be http or https",
            "upstream `a`: path prefix `/../x` must be a clean absolute path like /v1/chat",
            "upstream `a`: path prefix `chat` must be a clean absolute path like /v1/chat",
            "upstream `a`: header `host` cannot be injected",
            "upstreams `a` and `b` share the host api.example.com, but only one allows private addresses",
            "the body limit must be above zero",
        ];
        assert_eq!(cases.len(), expected.len());
        for (i, (b, message)) in cases.into_iter().zip(expected).enumerate() {
            let e = b.callers(Callers::anyone()).build().unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("invalid forward configuration: {message}"),
                "case {i}"
            );
        }
    }
}
