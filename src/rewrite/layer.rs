use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::forwarded::write_value;
use super::response::ResponseRewrite;
use super::{
    ClientAddr, ClientIdentity, ClientTls, CookieDomain, CookiePath, HostPolicy, Node,
    OriginPolicy, Trust,
};
use crate::route::Target;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// Rewrites what the upstream sees (Host, Origin, `Forwarded`, `X-Forwarded-*`) and what the
/// browser sees (`Location`, `Content-Location`, `Refresh`, `Set-Cookie` under a mount).
///
/// Sits between [`RouteLayer`](crate::route::RouteLayer) and
/// [`ReverseProxy`](crate::proxy::ReverseProxy) and reads the request's
/// [`Target`](crate::route::Target) from its extensions. Only headers are touched: the layer is
/// generic over request and response bodies.
///
/// The defaults ([`RewriteLayer::new`]):
/// - Host: [`HostPolicy::Preserve`]; Origin: [`OriginPolicy::PassThroughIfPresent`];
/// - `Forwarded`, `X-Forwarded-For`, `-Proto`, `-Host` and (under a mount) `-Prefix` are set, no
///   peer trusted ([`Trust::None`]): whatever the client sent in them is dropped;
/// - under a mount, responses are mapped back under it; cookie `Domain`s are dropped.
///
/// ```
/// use sandbox_gateway::proxy::ReverseProxy;
/// use sandbox_gateway::rewrite::{HostPolicy, RewriteLayer, Trust};
/// use sandbox_gateway::route::{PathMount, RouteLayer};
/// use tower::ServiceBuilder;
///
/// let svc = ServiceBuilder::new()
///     .layer(RouteLayer::new(PathMount::strip("/proxy").allow_port(5173)))
///     .layer(RewriteLayer::new().host(HostPolicy::Upstream).trust(Trust::Loopback))
///     .service(ReverseProxy::new());
/// # let _ = svc;
/// ```
#[derive(Clone, Debug, Default)]
pub struct RewriteLayer {
    config: Arc<Config>,
}

#[derive(Clone, Debug)]
struct Config {
    host: HostPolicy,
    origin: OriginPolicy,
    trust: Trust,
    forwarded: bool,
    x_forwarded_for: bool,
    x_forwarded_proto: bool,
    x_forwarded_host: bool,
    x_forwarded_prefix: bool,
    client_identity: ClientIdentity,
    by: Option<Node>,
    assume_https: bool,
    responses: bool,
    cookie_path: CookiePath,
    cookie_domain: CookieDomain,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: HostPolicy::default(),
            origin: OriginPolicy::default(),
            trust: Trust::default(),
            forwarded: true,
            x_forwarded_for: true,
            x_forwarded_proto: true,
            x_forwarded_host: true,
            x_forwarded_prefix: true,
            client_identity: ClientIdentity::default(),
            by: None,
            assume_https: false,
            responses: true,
            cookie_path: CookiePath::default(),
            cookie_domain: CookieDomain::default(),
        }
    }
}

impl RewriteLayer {
    /// A layer with the defaults listed above.
    pub fn new() -> Self {
        Self::default()
    }

    fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// The `Host` sent upstream (default [`HostPolicy::Preserve`]).
    pub fn host(self, policy: HostPolicy) -> Self {
        self.with(|c| c.host = policy)
    }

    /// The `Origin` sent upstream (default [`OriginPolicy::PassThroughIfPresent`]).
    pub fn origin(self, policy: OriginPolicy) -> Self {
        self.with(|c| c.origin = policy)
    }

    /// Which immediate peers may report clients before them (default [`Trust::None`]). The peer is
    /// the request's [`ClientAddr`]; without one, no peer is trusted.
    pub fn trust(self, trust: Trust) -> Self {
        self.with(|c| c.trust = trust)
    }

    /// Whether to send `Forwarded` (RFC 7239; default on).
    pub fn forwarded(self, on: bool) -> Self {
        self.with(|c| c.forwarded = on)
    }

    /// Whether to send `X-Forwarded-For` (default on).
    pub fn x_forwarded_for(self, on: bool) -> Self {
        self.with(|c| c.x_forwarded_for = on)
    }

    /// Whether to send `X-Forwarded-Proto` (default on).
    pub fn x_forwarded_proto(self, on: bool) -> Self {
        self.with(|c| c.x_forwarded_proto = on)
    }

    /// Whether to send `X-Forwarded-Host`, the browser's Host (default on).
    pub fn x_forwarded_host(self, on: bool) -> Self {
        self.with(|c| c.x_forwarded_host = on)
    }

    /// Whether to send `X-Forwarded-Prefix`, the mount prefix, under a mount (default on).
    pub fn x_forwarded_prefix(self, on: bool) -> Self {
        self.with(|c| c.x_forwarded_prefix = on)
    }

    /// How the client appears in `for=` and `X-Forwarded-For` (default [`ClientIdentity::Ip`]).
    pub fn client_identity(self, identity: ClientIdentity) -> Self {
        self.with(|c| c.client_identity = identity)
    }

    /// This gateway's own node in `Forwarded: by=` (default: not sent), e.g.
    /// `Node::obfuscated("_gateway")`.
    pub fn forwarded_by(self, node: Node) -> Self {
        self.with(|c| c.by = Some(node))
    }

    /// Report `https` as the protocol for every request, for a gateway behind TLS it does not see
    /// (default off: `https` only when the request carries [`ClientTls`]).
    pub fn assume_https(self, on: bool) -> Self {
        self.with(|c| c.assume_https = on)
    }

    /// Whether to map `Location`, `Content-Location`, `Refresh` and cookie paths back under the
    /// mount (default on; only requests with a mount are concerned).
    pub fn rewrite_responses(self, on: bool) -> Self {
        self.with(|c| c.responses = on)
    }

    /// What happens to cookie paths under a mount (default [`CookiePath::under_mount`]).
    pub fn cookie_path(self, path: CookiePath) -> Self {
        self.with(|c| c.cookie_path = path)
    }

    /// What happens to cookie domains on routed requests (default [`CookieDomain::drop`]).
    pub fn cookie_domain(self, domain: CookieDomain) -> Self {
        self.with(|c| c.cookie_domain = domain)
    }
}

impl<S> Layer<S> for RewriteLayer {
    type Service = Rewrite<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Rewrite {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service made by [`RewriteLayer`].
#[derive(Clone, Debug)]
pub struct Rewrite<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Rewrite<S> {
    /// Wraps `inner` with the settings of `layer`.
    pub fn new(inner: S, layer: &RewriteLayer) -> Self {
        layer.layer(inner)
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B, ResBody> Service<Request<B>> for Rewrite<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let rewrite = self.config.rewrite_request(&mut req);
        ResponseFuture {
            inner: self.inner.call(req),
            rewrite,
        }
    }
}

pin_project! {
    /// The response future of [`Rewrite`]: the inner service's answer with its headers mapped back
    /// under the mount.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        rewrite: Option<Box<ResponseRewrite>>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        if let Some(rewrite) = this.rewrite.take() {
            let status = res.status();
            rewrite.apply(status, res.headers_mut());
        }
        Poll::Ready(Ok(res))
    }
}

impl Config {
    /// Rewrites the request head; returns what the response side needs, if anything.
    fn rewrite_request<B>(&self, req: &mut Request<B>) -> Option<Box<ResponseRewrite>> {
        let target = req.extensions().get::<Target>().cloned();
        let mount = target
            .as_ref()
            .and_then(|t| t.mount())
            .filter(|m| !m.is_empty())
            .map(str::to_owned);
        let browser_host: Option<HeaderValue> =
            req.headers().get(header::HOST).cloned().or_else(|| {
                req.uri()
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            });
        let peer = req.extensions().get::<ClientAddr>().map(|c| c.0);
        let trusted = peer.is_some_and(|p| self.trust.trusts(p.ip()));
        let https = self.assume_https || req.extensions().get::<ClientTls>().is_some();
        let proto = if https { "https" } else { "http" };
        let client_ip = peer
            .filter(|_| self.client_identity != ClientIdentity::Hidden)
            .map(|p| p.ip().to_canonical());

        let headers = req.headers_mut();
        if !trusted {
            for name in [
                &header::FORWARDED,
                &X_FORWARDED_FOR,
                &X_FORWARDED_PROTO,
                &X_FORWARDED_HOST,
                &X_FORWARDED_PREFIX,
            ] {
                headers.remove(name);
            }
        }
        if self.x_forwarded_for {
            if let Some(ip) = client_ip {
                let mut list = joined(headers, &X_FORWARDED_FOR);
                if !list.is_empty() {
                    list.push_str(", ");
                }
                let _ = write!(list, "{ip}");
                set(headers, &X_FORWARDED_FOR, &list);
            }
        }
        if self.x_forwarded_proto && !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
        }
        if self.x_forwarded_host && !headers.contains_key(&X_FORWARDED_HOST) {
            if let Some(h) = &browser_host {
                headers.insert(X_FORWARDED_HOST.clone(), h.clone());
            }
        }
        if let (true, Some(m)) = (self.x_forwarded_prefix, &mount) {
            // A trusted proxy in front mounted this gateway under its own prefix.
            let outer = joined(headers, &X_FORWARDED_PREFIX);
            let prefix = format!("{}{}", outer.trim_end_matches('/'), m);
            set(headers, &X_FORWARDED_PREFIX, &prefix);
        }
        if self.forwarded {
            let mut element = String::new();
            let node = match (peer, &self.client_identity) {
                (Some(p), ClientIdentity::IpAndPort) => Node::from(p),
                (Some(p), ClientIdentity::Ip) => Node::ip(p.ip()),
                _ => Node::unknown(),
            };
            let _ = write!(element, "for={node}");
            if let Some(by) = &self.by {
                let _ = write!(element, ";by={by}");
            }
            if let Some(h) = browser_host.as_ref().and_then(|h| h.to_str().ok()) {
                element.push_str(";host=");
                let _ = write_value(&mut element, h);
            }
            let _ = write!(element, ";proto={proto}");
            let mut list = joined(headers, &header::FORWARDED);
            if !list.is_empty() {
                list.push_str(", ");
            }
            list.push_str(&element);
            set(headers, &header::FORWARDED, &list);
        }

        if let Some(t) = &target {
            match &self.host {
                HostPolicy::Preserve => {}
                HostPolicy::Upstream => {
                    if let Ok(v) = HeaderValue::from_str(t.authority().as_str()) {
                        headers.insert(header::HOST, v);
                    }
                }
                HostPolicy::Fixed(v) => {
                    headers.insert(header::HOST, v.clone());
                }
            }
        } else if let HostPolicy::Fixed(v) = &self.host {
            headers.insert(header::HOST, v.clone());
        }
        match &self.origin {
            OriginPolicy::PassThroughIfPresent => {}
            OriginPolicy::RewriteToUpstream => {
                if let (Some(t), true) = (&target, headers.contains_key(header::ORIGIN)) {
                    let origin = format!("{}://{}", t.scheme(), t.authority());
                    if let Ok(v) = HeaderValue::from_str(&origin) {
                        headers.insert(header::ORIGIN, v);
                    }
                }
            }
            OriginPolicy::Drop => {
                headers.remove(header::ORIGIN);
            }
        }

        let target = target?;
        let mount = mount.filter(|_| self.responses);
        if mount.is_none() && self.cookie_domain.is_unchanged() {
            return None;
        }
        Some(Box::new(ResponseRewrite {
            mount: mount.unwrap_or_default(),
            upstream_scheme: target.scheme().clone(),
            upstream: target.authority().clone(),
            browser_host: browser_host.and_then(|h| h.to_str().ok().map(str::to_ascii_lowercase)),
            upstream_path: target.path_and_query().path().to_owned(),
            cookie_path: self.cookie_path.clone(),
            cookie_domain: self.cookie_domain.clone(),
        }))
    }
}

/// All values of a list header joined with `", "` (empty when absent or not text).
fn joined(headers: &HeaderMap, name: &HeaderName) -> String {
    let mut out = String::new();
    for v in headers.get_all(name) {
        if let Ok(s) = v.to_str() {
            let s = s.trim();
            if s.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(s);
        }
    }
    out
}

fn set(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name.clone(), v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}
