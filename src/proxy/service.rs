use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
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
use super::tunnel::{self, Over, TunnelLifetime, Tunnels};
use super::{OriginCheck, ProxyBody, ProxyError, UpgradeProtocols};
use crate::connect::{
    BuildError, ConnStream, ConnectError, Connector, ConnectorBuilder, LocalhostResolver,
};
use crate::rewrite::ClientAddr;
use crate::route::{Target, Upstream};

type BoxError = Box<dyn StdError + Send + Sync>;

/// The default response-head timeout: how long the upstream may take to start answering after the
/// request body last made progress.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default idle timeout of pooled upstream connections: below the 5 s keep-alive of Node's HTTP
/// server, so the pool never reuses a connection the dev server is about to close.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// The default idle timeout of tunnels (WebSockets): five minutes with no byte either way, well
/// above the pings that keep IDE and dev-server sockets alive (VS Code's every few seconds,
/// Vite's HMR every 30 s).
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The default cap on tunnels open at once through one proxy.
pub const DEFAULT_MAX_TUNNELS: usize = 10_000;
/// The default cap on tunnels open at once from one client (an address, or an IPv6 /64): an IDE
/// window opens a handful, a preview tab one.
pub const DEFAULT_MAX_TUNNELS_PER_CLIENT: usize = 64;
/// The default minimum upload rate, in bytes per second, averaged over the request body so far.
pub const DEFAULT_MIN_UPLOAD_RATE: u64 = 1024;
/// The default time a request body is given before [`DEFAULT_MIN_UPLOAD_RATE`] applies.
pub const DEFAULT_UPLOAD_GRACE: Duration = Duration::from_secs(10);

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
///   [`Builder::tunnel_idle_timeout`] (5 minutes by default), the caps [`Builder::max_tunnels`] and
///   [`Builder::max_tunnels_per_client`] (over them: 503), [`open_tunnels`](ReverseProxy::open_tunnels)
///   and [`close_tunnels`](ReverseProxy::close_tunnels).
/// - Upstream connections are kept and reused: an HTTP/1.1 connection once the response it carried
///   was read to its end, an HTTP/2 connection by every request to its upstream at once. Idle ones
///   close after [`Builder::pool_idle_timeout`]; a request that a reused connection closed on before
///   sending it goes out again on another.
/// - **Retry**: when a reused HTTP/1.1 connection fails after the request went out but before any
///   byte of the response came back — the keep-alive race, an upstream closing an idle connection as
///   the request lands — an idempotent request (`GET`, `HEAD`, `OPTIONS`, `TRACE`, and `PUT` or
///   `DELETE` with an empty body) is sent once more, on a fresh connection, as nginx and Go's
///   `http.Transport` do. A `POST`, `PATCH`, any request with a body, a request on a new connection,
///   and any failure after response bytes arrived are answered 502, never sent again.
/// - Uploads: a request body must keep an average of [`Builder::min_upload_rate`] (1 KiB/s after
///   10 s by default) until it has been sent, or the request is answered 408; a body trickled a byte
///   a minute cannot hold an upstream connection.
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
/// let app: Router = Router::new().nest_service("/app", proxy.clone());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// // `serve::Server`: timeouts, connection caps, graceful shutdown that closes the tunnels.
/// sandbox_gateway::serve::Server::builder()
///     .on_drained(move || proxy.close_tunnels())
///     .build()?
///     .serve(listener, app, async {
///         let _ = tokio::signal::ctrl_c().await;
///     })
///     .await?;
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
    min_upload_rate: Option<u64>,
    upload_grace: Duration,
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
    /// How many upgraded connections (WebSockets) are open right now, counting upgrades already
    /// sent to their upstream and waiting for its answer.
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
    max_tunnels: usize,
    max_tunnels_per_client: usize,
    min_upload_rate: Option<u64>,
    upload_grace: Duration,
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
            tunnel_idle_timeout: Some(DEFAULT_TUNNEL_IDLE_TIMEOUT),
            max_tunnels: DEFAULT_MAX_TUNNELS,
            max_tunnels_per_client: DEFAULT_MAX_TUNNELS_PER_CLIENT,
            min_upload_rate: Some(DEFAULT_MIN_UPLOAD_RATE),
            upload_grace: DEFAULT_UPLOAD_GRACE,
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
            max_tunnels: self.max_tunnels,
            max_tunnels_per_client: self.max_tunnels_per_client,
            min_upload_rate: self.min_upload_rate,
            upload_grace: self.upload_grace,
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

    /// Closes a tunnel when no byte moved either way for this long (default 5 minutes,
    /// [`DEFAULT_TUNNEL_IDLE_TIMEOUT`]; `None`: never). Any byte
    /// counts, WebSocket pings included, so a client or server that pings more often than this
    /// keeps its tunnel; a silent one is closed by dropping both connections. It also bounds a
    /// half-closed tunnel whose other side never closes (a client that keeps its socket after the
    /// upstream hung up).
    pub fn tunnel_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.tunnel_idle_timeout = timeout;
        self
    }

    /// The most tunnels (upgraded connections) open at once through this proxy (default 10 000);
    /// an upgrade over it is answered 503 before any upstream connection is opened.
    pub fn max_tunnels(mut self, max: usize) -> Self {
        self.max_tunnels = max;
        self
    }

    /// The most tunnels open at once from one client (default 64): an address, or an IPv6 /64,
    /// taken from the request's [`ClientAddr`](crate::rewrite::ClientAddr), which
    /// [`serve`](crate::serve) inserts. Without a `ClientAddr` only [`max_tunnels`](Self::max_tunnels)
    /// applies. Over it: 503.
    pub fn max_tunnels_per_client(mut self, max: usize) -> Self {
        self.max_tunnels_per_client = max;
        self
    }

    /// The slowest a request body may arrive, in bytes per second averaged from the start of the
    /// request, once [`upload_grace`](Self::upload_grace) has passed (default 1024; `None`: no
    /// minimum, only [`response_timeout`](Self::response_timeout) between two bytes). Checked until
    /// the body has been sent or the response head has come; a body below it is cut off and the
    /// request answered 408. An upstream that stops reading the body counts the same, since the
    /// proxy only reads as fast as it can send.
    pub fn min_upload_rate(mut self, bytes_per_second: Option<u64>) -> Self {
        self.min_upload_rate = bytes_per_second;
        self
    }

    /// How long a request body may take before [`min_upload_rate`](Self::min_upload_rate) applies
    /// (default 10 s), for slow starts and small bodies.
    pub fn upload_grace(mut self, grace: Duration) -> Self {
        self.upload_grace = grace;
        self
    }

    /// Builds the proxy.
    ///
    /// # Errors
    /// When the connector configuration is invalid (e.g. a bad root certificate), a tunnel cap is
    /// zero, or the minimum upload rate is zero.
    pub fn build(self) -> Result<ReverseProxy<R>, BuildError>
    where
        R: Clone,
        Connector<R>: Service<Uri, Response = ConnStream, Error = ConnectError> + Clone,
    {
        if self.max_tunnels == 0 || self.max_tunnels_per_client == 0 {
            return Err(BuildError::invalid(
                "max_tunnels and max_tunnels_per_client must be at least 1",
            ));
        }
        if self.min_upload_rate == Some(0) {
            return Err(BuildError::invalid(
                "min_upload_rate must be above zero (None turns it off)",
            ));
        }
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
                tunnels: Arc::new(Tunnels::new(self.max_tunnels, self.max_tunnels_per_client)),
                http2_prior_knowledge: self.http2_prior_knowledge,
                min_upload_rate: self.min_upload_rate,
                upload_grace: self.upload_grace,
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
        let mut tunnel_slot = None;
        let mut tunnel_lifetime = None;
        if upgrade {
            tunnel_lifetime = parts.extensions.remove::<TunnelLifetime>();
            if let Err(origin) = self.origin_check.check(&parts) {
                tracing::warn!(upstream = %target.authority(), %origin, "upgrade refused: origin not allowed");
                crate::metrics::refused("isolation");
                return error_response(&ProxyError::OriginRejected(origin));
            }
            if self.tunnels.closed() {
                return error_response(&ProxyError::TunnelsClosed);
            }
            let client = parts.extensions.get::<ClientAddr>().map(|c| c.0.ip());
            match self.tunnels.reserve(client) {
                Ok(slot) => tunnel_slot = Some(slot),
                Err(over) => {
                    let (limit, per_client) = match over {
                        Over::Total(n) => (n, false),
                        Over::PerClient(n) => (n, true),
                    };
                    let e = ProxyError::TooManyTunnels { limit, per_client };
                    tracing::warn!(upstream = %target.authority(), error = %e, "upgrade refused");
                    return error_response(&e);
                }
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
        let (body, progress) = RequestBody::new(
            body,
            self.response_timeout.is_some()
                || self.min_upload_rate.is_some()
                || !span.is_disabled(),
        );
        let mut out = Request::new(body);
        *out.method_mut() = parts.method;
        *out.uri_mut() = target.uri();
        // The version stays the default (HTTP/1.1), whatever the browser spoke: the pool sends it
        // over whichever protocol the connection speaks (ALPN or prior knowledge chose).
        *out.headers_mut() = headers;

        let upstream_name = target.authority().as_str();
        let sending = self.pool.send(out, upgrade);
        let head = with_head_timeout(sending, self.response_timeout, progress.as_deref())
            .instrument(span.clone());
        let result = match (self.min_upload_rate, progress.as_deref()) {
            (Some(rate), Some(p)) => tokio::select! {
                biased;
                r = head => r,
                () = upload_too_slow(p, rate, self.upload_grace) => {
                    let e = ProxyError::UploadTooSlow { min_rate: rate };
                    tracing::warn!(parent: &span, error = %e, "upload too slow");
                    return error_response(&e);
                }
            },
            _ => head.await,
        };
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
            let Some(slot) = tunnel_slot else {
                unreachable!("an upgrade request holds a tunnel slot");
            };
            tunnel::spawn(
                downstream,
                upstream_upgrade,
                self.tunnel_idle_timeout,
                tunnel_lifetime,
                slot,
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

/// Resolves when the request body has fallen below `rate` bytes per second on average since the
/// request started, `grace` after that start at the earliest; never once the body has been sent.
async fn upload_too_slow(progress: &Progress, rate: u64, grace: Duration) {
    let mut at = progress.epoch + grace;
    loop {
        tokio::time::sleep_until(at.into()).await;
        if progress.done.load(Ordering::Relaxed) {
            return std::future::pending().await;
        }
        // The time by which the bytes sent so far should have arrived at `rate`.
        let bytes = progress.bytes.load(Ordering::Relaxed);
        let due = progress.epoch + Duration::from_secs_f64(bytes as f64 / rate as f64);
        if due <= Instant::now() {
            return;
        }
        at = due;
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
