use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Uri;
use http::{Request, Response, StatusCode, Version};
use http_body::Body;
use hyper::upgrade::OnUpgrade;
use tower_service::Service;
use tracing::Instrument;

use super::body::{Meter, Progress, RequestBody};
use super::headers::{check_request, is_upgrade_request, join_cookies, strip_hop_by_hop};
use super::pool::Pool;
use super::tunnel::{self, Tunnels};
use super::{OriginCheck, ProxyBody, ProxyError, UpgradeProtocols};
use crate::connect::{
    BuildError, ConnStream, ConnectError, Connector, ConnectorBuilder, LocalhostResolver,
};
use crate::route::{Target, Upstream};

type BoxError = Box<dyn StdError + Send + Sync>;

/// The default response-head timeout: how long the upstream may take to start answering after the
/// request body last made progress.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default idle timeout of pooled upstream connections: below the 5 s keep-alive of Node's HTTP
/// server, so the pool never reuses a connection the dev server is about to close.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// A streaming reverse proxy: a tower `Service` that sends each request to its
/// [`Target`](crate::route::Target) and streams the answer back.
///
/// - Bodies stream both ways, frame by frame, with backpressure: memory does not grow with body
///   size. Trailers pass through.
/// - Hop-by-hop headers are removed both ways (`Connection` and every header it names,
///   `Keep-Alive`, `Proxy-*`, `TE` except `trailers`, `Trailer`, `Transfer-Encoding`, `Upgrade`
///   unless upgrading); several `Set-Cookie` stay separate; HTTP/2 cookie fields are joined.
/// - HTTP/1.1 and HTTP/2 on either side, in any combination: `https` upstreams are offered `h2` and
///   `http/1.1` by ALPN and spoken to in the chosen one; cleartext upstreams get HTTP/1.1, or HTTP/2
///   with [`Builder::http2_prior_knowledge`]. A cleartext HTTP/1.1 upstream sees the browser's
///   `Host` (the `:authority` of an HTTP/2 browser request); an upstream that may speak HTTP/2
///   (`https`, prior knowledge) sees the target's authority, as `:authority` on h2 and `Host` on
///   HTTP/1.1, since an h2 request whose `Host` differs from its `:authority` is malformed.
/// - Upgrades go to the same target — WebSocket only, unless [`Builder::upgrades`] allows more
///   (any other `Upgrade`, such as `h2c`, is dropped and the request forwarded as a plain one) —
///   over HTTP/1.1, with their `Sec-WebSocket-*` fields untouched; the upstream's `101` is relayed with its headers (subprotocol, extensions)
///   and bytes are spliced both ways, never parsed, until both sides have closed: a half-close
///   (`FIN`) on one side is passed to the other. [`OriginCheck`] guards them (403 before any
///   upstream connection); any other answer to an upgrade is passed to the client as it is; an
///   upstream that cannot be reached is answered 502. See also
///   [`Builder::tunnel_idle_timeout`] and [`close_tunnels`](ReverseProxy::close_tunnels).
/// - Upstream connections are kept and reused: an HTTP/1.1 connection once the response it carried
///   was read to its end, an HTTP/2 connection by every request to its upstream at once. Idle ones
///   close after [`Builder::pool_idle_timeout`]; a request that a reused connection closed on before
///   sending it goes out again on another.
/// - An upstream that breaks off mid-body aborts the client's response; it never looks like a clean
///   end.
/// - Errors are answers with a status and a short plain-text message ([`ProxyError`]): 502 when the
///   upstream cannot be reached (naming it and the addresses tried), 504 on timeouts, 400 for
///   requests that cannot be forwarded safely.
///
/// The target comes from the request's extensions (put there by [`RouteLayer`](crate::route::RouteLayer)),
/// or from the fixed upstream given to [`Builder::upstream`]. With neither, the answer is 500: there
/// is no default address.
///
/// The proxy takes any request body with `Bytes` data, so it serves `axum` and plain `hyper` alike:
///
/// ```no_run
/// use axum::Router;
/// use sandbox_gateway::proxy::ReverseProxy;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let proxy = ReverseProxy::builder()
///     .upstream("http://localhost:5173".parse()?)
///     .build()?;
/// let app: Router = Router::new().nest_service("/app", proxy);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// axum::serve(listener, app).await?;
/// # Ok(()) }
/// ```
pub struct ReverseProxy<R = LocalhostResolver> {
    shared: Arc<Shared<R>>,
}

impl<R> Clone for ReverseProxy<R> {
    fn clone(&self) -> Self {
        ReverseProxy {
            shared: self.shared.clone(),
        }
    }
}

impl<R> fmt::Debug for ReverseProxy<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReverseProxy")
            .field("upstream", &self.shared.upstream)
            .field("response_timeout", &self.shared.response_timeout)
            .field("origin_check", &self.shared.origin_check)
            .finish_non_exhaustive()
    }
}

struct Shared<R> {
    pool: Pool<R>,
    upstream: Option<Upstream>,
    response_timeout: Option<Duration>,
    origin_check: OriginCheck,
    tunnel_idle_timeout: Option<Duration>,
    tunnels: Arc<Tunnels>,
    http2_prior_knowledge: bool,
    upgrades: UpgradeProtocols,
}

impl ReverseProxy {
    /// A proxy with the default configuration (see [`Builder`]); targets come from
    /// [`RouteLayer`](crate::route::RouteLayer).
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder for a proxy with the default [`Connector`].
    pub fn builder() -> Builder {
        Builder::new(Connector::builder())
    }
}

impl Default for ReverseProxy {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> ReverseProxy<R> {
    /// How many upgraded connections (WebSockets) are open right now.
    pub fn open_tunnels(&self) -> usize {
        self.shared.tunnels.open()
    }

    /// Closes every open tunnel (both sides' connections are dropped, without a WebSocket close
    /// frame: the proxy never parses or injects frames) and refuses new upgrades with `503` until
    /// [`reopen_tunnels`](Self::reopen_tunnels), before any upstream connection is opened. This is the
    /// clean shutdown path, to call when the server stops accepting connections: graceful HTTP
    /// shutdown does not wait for upgraded connections, which no longer belong to the server.
    /// An upgrade already forwarded when this is called is closed as soon as its tunnel starts.
    pub fn close_tunnels(&self) {
        self.shared.tunnels.close_all();
    }

    /// Lets tunnels live again after [`close_tunnels`](Self::close_tunnels).
    pub fn reopen_tunnels(&self) {
        self.shared.tunnels.reopen();
    }
}

/// Configures a [`ReverseProxy`].
#[derive(Debug)]
pub struct Builder<R = LocalhostResolver> {
    connector: ConnectorBuilder<R>,
    upstream: Option<Upstream>,
    response_timeout: Option<Duration>,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
    http2_prior_knowledge: bool,
    origin_check: OriginCheck,
    tunnel_idle_timeout: Option<Duration>,
    upgrades: UpgradeProtocols,
}

impl<R> Builder<R> {
    /// A builder opening connections with `connector`.
    pub fn new(connector: ConnectorBuilder<R>) -> Self {
        Builder {
            connector,
            upstream: None,
            response_timeout: Some(DEFAULT_RESPONSE_TIMEOUT),
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            pool_max_idle_per_host: 256,
            http2_prior_knowledge: false,
            origin_check: OriginCheck::default(),
            tunnel_idle_timeout: None,
            upgrades: UpgradeProtocols::default(),
        }
    }

    /// Replaces the connector configuration (resolver, timeouts, TLS roots).
    pub fn connector<R2>(self, connector: ConnectorBuilder<R2>) -> Builder<R2> {
        Builder {
            connector,
            upstream: self.upstream,
            response_timeout: self.response_timeout,
            pool_idle_timeout: self.pool_idle_timeout,
            pool_max_idle_per_host: self.pool_max_idle_per_host,
            http2_prior_knowledge: self.http2_prior_knowledge,
            origin_check: self.origin_check,
            tunnel_idle_timeout: self.tunnel_idle_timeout,
            upgrades: self.upgrades,
        }
    }

    /// Changes the connector configuration in place, e.g. `.connect(|c| c.attempt_delay(d))`.
    pub fn connect(mut self, f: impl FnOnce(ConnectorBuilder<R>) -> ConnectorBuilder<R>) -> Self {
        self.connector = f(self.connector);
        self
    }

    /// The upstream used when no [`Target`] is attached to a request; the request path is sent as it
    /// came (joined under the upstream's base path).
    pub fn upstream(mut self, upstream: Upstream) -> Self {
        self.upstream = Some(upstream);
        self
    }

    /// The TCP connect timeout (default 10 s); a timeout is answered 504.
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        self.connect(|c| c.connect_timeout(timeout))
    }

    /// How long the upstream may take to send its response head, counted from the last progress of
    /// the request body (default 60 s; `None` waits forever). Answered 504. There is no total
    /// timeout: streams (SSE, downloads, WebSockets) last as long as they need.
    pub fn response_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long an idle upstream connection is kept for reuse (default 4 s, below Node's 5 s
    /// keep-alive); zero turns reuse off. An HTTP/1.1 connection is reused only once the response
    /// body it carried has been read to its end; an HTTP/2 upstream shares one connection among all
    /// its requests.
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// The most idle HTTP/1.1 connections kept per upstream (default 256); more are closed when
    /// their exchange ends.
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// Speak HTTP/2 to every upstream without negotiation (h2c prior knowledge for cleartext
    /// upstreams that want it; TLS upstreams must then select `h2`). Upgrades still use HTTP/1.1.
    /// Upstreams then see the target's authority (`:authority`), not the browser's `Host`.
    pub fn http2_prior_knowledge(mut self, on: bool) -> Self {
        self.http2_prior_knowledge = on;
        self
    }

    /// Which Origins may open upgrades (default [`OriginCheck::SameOrigin`]).
    pub fn websocket_origin(mut self, check: OriginCheck) -> Self {
        self.origin_check = check;
        self
    }

    /// Which `Upgrade` protocols are tunnelled (default [`UpgradeProtocols::websocket`]); a request
    /// offering any other is forwarded as a plain request without its `Upgrade` header.
    pub fn upgrades(mut self, protocols: UpgradeProtocols) -> Self {
        self.upgrades = protocols;
        self
    }

    /// Closes a tunnel when no byte moved either way for this long (default: never). Any byte
    /// counts, WebSocket pings included, so a client or server that pings more often than this
    /// keeps its tunnel; a silent one is closed by dropping both connections. It also bounds a
    /// half-closed tunnel whose other side never closes (a client that keeps its socket after the
    /// upstream hung up).
    pub fn tunnel_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.tunnel_idle_timeout = timeout;
        self
    }

    /// Builds the proxy.
    ///
    /// # Errors
    /// When the connector configuration is invalid (e.g. a bad root certificate).
    pub fn build(self) -> Result<ReverseProxy<R>, BuildError>
    where
        R: Clone,
        Connector<R>: Service<Uri, Response = ConnStream, Error = ConnectError> + Clone,
    {
        let connector = self.connector.build()?;
        let pool = Pool::new(
            connector,
            self.http2_prior_knowledge,
            self.pool_idle_timeout,
            self.pool_max_idle_per_host,
        );
        Ok(ReverseProxy {
            shared: Arc::new(Shared {
                pool,
                upstream: self.upstream,
                response_timeout: self.response_timeout,
                origin_check: self.origin_check,
                tunnel_idle_timeout: self.tunnel_idle_timeout,
                tunnels: Arc::new(Tunnels::new()),
                http2_prior_knowledge: self.http2_prior_knowledge,
                upgrades: self.upgrades,
            }),
        })
    }
}

impl<R, B> Service<Request<B>> for ReverseProxy<R>
where
    R: Send + Sync + 'static,
    Connector<R>: Service<Uri, Response = ConnStream, Error = ConnectError> + Clone + Send + Sync,
    <Connector<R> as Service<Uri>>::Future: Send,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ResponseFuture {
            inner: Box::pin(crate::metrics::request(
                "proxy",
                self.shared.clone().proxy(req),
            )),
        }
    }
}

/// The response future of [`ReverseProxy`].
///
/// One boxed future per request; it never fails: errors are answers.
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>>,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx).map(Ok)
    }
}

fn error_response(err: &ProxyError) -> Response<ProxyBody> {
    crate::util::text_response(err.status(), err.to_string())
}

impl<R> Shared<R>
where
    Connector<R>: Service<Uri, Response = ConnStream, Error = ConnectError> + Clone + Send + Sync,
    <Connector<R> as Service<Uri>>::Future: Send,
{
    /// Whether the upstream may speak HTTP/2 (`https`, where ALPN decides, or prior knowledge), so
    /// that it is sent the target's authority rather than the browser's `Host`.
    fn target_authority_as_host(&self, target: &Target) -> bool {
        self.http2_prior_knowledge || *target.scheme() == http::uri::Scheme::HTTPS
    }

    async fn proxy<B>(self: Arc<Self>, mut req: Request<B>) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let start = Instant::now();
        let target = match req.extensions_mut().remove::<Target>() {
            Some(t) => t,
            None => match &self.upstream {
                Some(up) => up.target(
                    req.uri()
                        .path_and_query()
                        .cloned()
                        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
                ),
                None => {
                    tracing::error!(
                        "request reached the proxy with no target and no fixed upstream"
                    );
                    return error_response(&ProxyError::NoTarget);
                }
            },
        };
        let (mut parts, body) = req.into_parts();
        if let Err(e) = check_request(&parts) {
            return error_response(&e);
        }
        // Only an allowed protocol opens a tunnel; any other `Upgrade` is dropped with the
        // hop-by-hop headers and the request goes on as a plain one.
        let upgrade = is_upgrade_request(&parts) && self.upgrades.allows(&parts.headers);
        let mut downstream_upgrade = None;
        if upgrade {
            if let Err(origin) = self.origin_check.check(&parts) {
                tracing::warn!(upstream = %target.authority(), %origin, "upgrade refused: origin not allowed");
                crate::metrics::refused("isolation");
                return error_response(&ProxyError::OriginRejected(origin));
            }
            if self.tunnels.closed() {
                return error_response(&ProxyError::TunnelsClosed);
            }
            match parts.extensions.remove::<OnUpgrade>() {
                Some(on) => downstream_upgrade = Some(on),
                None => {
                    return error_response(&ProxyError::BadRequest(
                        "this connection cannot be upgraded",
                    ))
                }
            }
        }

        let span = tracing::info_span!(
            "proxy",
            method = %parts.method,
            upstream = %target.authority(),
            path = %target.path_and_query().path(),
            upgrade,
        );

        // The head sent upstream.
        let mut headers = std::mem::take(&mut parts.headers);
        let upgrade_value = strip_hop_by_hop(&mut headers);
        headers.remove(header::EXPECT);
        join_cookies(&mut headers);
        if self.target_authority_as_host(&target) {
            // Over HTTP/2 the upstream reads the authority from `:authority`, which the pool
            // takes from the target URI (the address it dials), and a `Host` that differs
            // from it makes the request malformed (RFC 9113 §8.3.1). So an upstream that may answer
            // in HTTP/2 gets no `Host` from the browser: the client derives it from the target,
            // `:authority` on h2 and `Host` on HTTP/1.1, the same name TLS sent as SNI.
            headers.remove(header::HOST);
        } else if !headers.contains_key(header::HOST) {
            if let Some(a) = parts.uri.authority() {
                if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                    headers.insert(header::HOST, v);
                }
            }
        }
        if upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            if let Some(v) = upgrade_value {
                headers.insert(header::UPGRADE, v);
            }
        }
        let (body, progress) =
            RequestBody::new(body, self.response_timeout.is_some() || !span.is_disabled());
        let mut out = Request::new(body);
        *out.method_mut() = parts.method;
        *out.uri_mut() = target.uri();
        // The version stays the default (HTTP/1.1), whatever the browser spoke: the pool sends it
        // over whichever protocol the connection speaks (ALPN or prior knowledge chose).
        *out.headers_mut() = headers;

        let upstream_name = target.authority().as_str();
        let sending = self.pool.send(out, upgrade);
        let result = with_head_timeout(sending, self.response_timeout, progress.as_deref())
            .instrument(span.clone())
            .await;
        let (mut res, lent) = match result {
            None => {
                let e = ProxyError::Timeout {
                    upstream: upstream_name.to_owned(),
                    after: self.response_timeout.unwrap_or_default(),
                };
                tracing::warn!(parent: &span, error = %e, "upstream timed out");
                return error_response(&e);
            }
            Some(Err(e)) => {
                tracing::warn!(parent: &span, error = %e, "proxy error");
                return error_response(&e);
            }
            Some(Ok(sent)) => sent,
        };

        let status = res.status();
        if let (Some(downstream), StatusCode::SWITCHING_PROTOCOLS) = (downstream_upgrade, status) {
            let upstream_upgrade = hyper::upgrade::on(&mut res);
            let (mut parts, _) = res.into_parts();
            let upgrade_value = strip_hop_by_hop(&mut parts.headers);
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            if let Some(v) = upgrade_value {
                parts.headers.insert(header::UPGRADE, v);
            }
            tunnel::spawn(
                downstream,
                upstream_upgrade,
                self.tunnel_idle_timeout,
                self.tunnels.clone(),
                span,
            );
            return Response::from_parts(parts, ProxyBody::empty());
        }

        if status == StatusCode::SWITCHING_PROTOCOLS {
            // A switch nobody asked for (RFC 9110 §15.2.2): relayed, it would leave the client's
            // connection in an unknown protocol.
            let e = ProxyError::Upstream {
                upstream: upstream_name.to_owned(),
                reason: "switched protocols without an allowed upgrade",
                source: "101 Switching Protocols to a plain request".into(),
            };
            tracing::warn!(parent: &span, error = %e, "proxy error");
            return error_response(&e);
        }
        let (mut parts, body) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.version = Version::default();
        let meter = (!span.is_disabled()).then(|| {
            Box::new(Meter {
                span,
                start,
                status: status.as_u16(),
                progress,
                bytes_down: 0,
                outcome: "",
            })
        });
        let mut body = ProxyBody::upstream(body, None);
        body.set_meter(meter);
        body.set_lent(lent);
        Response::from_parts(parts, body)
    }
}

/// Waits for the response head, giving up when `limit` passes with no progress of the request body
/// (counted from now when there is no body to track); `None` waits forever. Resolves to `None` on
/// timeout.
pub(crate) fn with_head_timeout<F: Future>(
    fut: F,
    limit: Option<Duration>,
    progress: Option<&Progress>,
) -> HeadTimeout<'_, F> {
    match limit {
        None => HeadTimeout::Plain { fut },
        Some(limit) => HeadTimeout::Timed {
            fut,
            sleep: tokio::time::sleep(limit),
            limit,
            progress,
        },
    }
}

pin_project_lite::pin_project! {
    /// The future of [`with_head_timeout`]: the wrapped future and one timer, reset while the
    /// request body makes progress.
    #[project = HeadTimeoutProj]
    pub(crate) enum HeadTimeout<'a, F> {
        Plain { #[pin] fut: F },
        Timed {
            #[pin] fut: F,
            #[pin] sleep: tokio::time::Sleep,
            limit: Duration,
            progress: Option<&'a Progress>,
        },
    }
}

impl<F: Future> Future for HeadTimeout<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            HeadTimeoutProj::Plain { fut } => fut.poll(cx).map(Some),
            HeadTimeoutProj::Timed {
                fut,
                mut sleep,
                limit,
                progress,
            } => {
                if let Poll::Ready(out) = fut.poll(cx) {
                    return Poll::Ready(Some(out));
                }
                while sleep.as_mut().poll(cx).is_ready() {
                    let deadline = match progress {
                        Some(p) => p.last_activity() + *limit,
                        None => return Poll::Ready(None),
                    };
                    if deadline <= Instant::now() {
                        return Poll::Ready(None);
                    }
                    sleep.as_mut().reset(deadline.into());
                }
                Poll::Pending
            }
        }
    }
}
