use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
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
    ClientAddr, ClientIdentity, ClientTls, CookieDomain, CookieFirewall, CookiePath, HostPolicy,
    Node, OriginPolicy, Trust,
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
/// - `X-Forwarded-For`, `-Proto`, `-Host` and (under a mount) `-Prefix` are set, no peer trusted
///   ([`Trust::None`]): whatever the client sent in them, and in `Forwarded`, is dropped;
/// - `Forwarded` (RFC 7239) is not sent unless [asked for](RewriteLayer::forwarded): see there why;
/// - under a mount, responses are mapped back under it; cookie `Domain`s are dropped;
/// - on routed requests, the [`CookieFirewall`] (the sandbox gets only its own cookies, namespaced
///   per route) and [`sandbox_responses`](RewriteLayer::sandbox_responses) (no `Clear-Site-Data`,
///   `Service-Worker-Allowed` kept within the mount); headers the client lists in `Connection` are
///   dropped before any is added, so it cannot have the gateway's removed.
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
    firewall: CookieFirewall,
    sandbox_responses: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: HostPolicy::default(),
            origin: OriginPolicy::default(),
            trust: Trust::default(),
            forwarded: false,
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
            firewall: CookieFirewall::default(),
            sandbox_responses: true,
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

    /// Whether to send `Forwarded` (RFC 7239; default off).
    ///
    /// Off by default because upstreams as they ship do not all parse it: RFC 7239 requires a
    /// `host=` with a port to be quoted (`host="gw.example:8080"`), and code-server 4 compares the
    /// quoted text, quotes included, with the WebSocket's `Origin`, so every upgrade is refused (403)
    /// and the workbench fails to connect. Upstreams read `Forwarded` before `X-Forwarded-*`, so
    /// sending both does not help. nginx, node's http-proxy (`xfwd`), Vite's proxy and code-server's
    /// own proxy send `X-Forwarded-*` only; this layer does the same unless told otherwise. A
    /// `Forwarded` from an untrusted client is dropped either way.
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

    /// Which cookies cross between the browser and the sandbox on routed requests (default
    /// [`CookieFirewall::new`]: the sandbox's own cookies, namespaced per route, and nothing else).
    pub fn cookie_firewall(self, firewall: CookieFirewall) -> Self {
        self.with(|c| c.firewall = firewall)
    }

    /// Whether answers of routed requests are kept from changing browser state outside the
    /// sandbox (default on): `Clear-Site-Data` removed, `Service-Worker-Allowed` mapped under the
    /// mount (removed when it is not a plain path). `Set-Cookie` follows
    /// [`cookie_firewall`](Self::cookie_firewall), [`cookie_path`](Self::cookie_path) and
    /// [`cookie_domain`](Self::cookie_domain).
    pub fn sandbox_responses(self, on: bool) -> Self {
        self.with(|c| c.sandbox_responses = on)
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
        // Headers are taken out so the target can be read from the extensions while they change.
        let mut headers = std::mem::take(req.headers_mut());
        // Headers a client names in `Connection` go now, before this layer adds its own: listing
        // `X-Forwarded-For` or `Forwarded` there must not make the proxy remove the gateway's.
        crate::proxy::remove_connection_listed(&mut headers, true);
        let target = req.extensions().get::<Target>();
        let browser_host: Option<HeaderValue> = headers.get(header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let peer = req.extensions().get::<ClientAddr>().map(|c| c.0);
        let https = self.assume_https || req.extensions().get::<ClientTls>().is_some();
        let mount = target.and_then(|t| t.mount()).filter(|m| !m.is_empty());
        let namespace = target.and_then(|_| self.firewall.namespace(mount));
        if target.is_some() {
            self.firewall
                .filter_request(&mut headers, namespace.as_ref());
        }

        self.forwarded_headers(&mut headers, peer, https, browser_host.as_ref(), mount);
        let sent_host = self.host_and_origin(&mut headers, target);
        let rewrite = self.response_rewrite(target, mount, namespace, browser_host, sent_host);
        *req.headers_mut() = headers;
        rewrite
    }

    fn response_rewrite(
        &self,
        target: Option<&Target>,
        route_mount: Option<&str>,
        namespace: Option<super::cookies::Namespace>,
        browser_host: Option<HeaderValue>,
        sent_host: Option<HeaderValue>,
    ) -> Option<Box<ResponseRewrite>> {
        // Every routed answer is looked at: the firewall drops reserved cookie names even when
        // nothing else changes.
        let target = target?;
        let mount = route_mount.filter(|_| self.responses);
        let lower = |h: HeaderValue| h.to_str().ok().map(str::to_ascii_lowercase);
        Some(Box::new(ResponseRewrite {
            mount: mount.map(str::to_owned).unwrap_or_default(),
            upstream_scheme: target.scheme().clone(),
            upstream: target.authority().clone(),
            browser_host: browser_host.and_then(lower),
            sent_host: sent_host.and_then(lower),
            upstream_path: target.path_and_query().path().to_owned(),
            cookie_path: self.cookie_path.clone(),
            cookie_domain: self.cookie_domain.clone(),
            firewall: self.firewall.clone(),
            namespace,
            sanitize: self
                .sandbox_responses
                .then(|| route_mount.unwrap_or_default().to_owned()),
        }))
    }

    fn forwarded_headers(
        &self,
        headers: &mut HeaderMap,
        peer: Option<SocketAddr>,
        https: bool,
        browser_host: Option<&HeaderValue>,
        mount: Option<&str>,
    ) {
        let trusted = peer.is_some_and(|p| self.trust.trusts(p.ip()));
        let proto = if https { "https" } else { "http" };
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
            let client_ip = peer
                .filter(|_| self.client_identity != ClientIdentity::Hidden)
                .map(|p| p.ip().to_canonical());
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
            if let Some(h) = browser_host {
                headers.insert(X_FORWARDED_HOST.clone(), h.clone());
            }
        }
        if let (true, Some(m)) = (self.x_forwarded_prefix, mount) {
            // A trusted proxy in front mounted this gateway under its own prefix.
            let outer = joined(headers, &X_FORWARDED_PREFIX);
            let prefix = format!("{}{}", outer.trim_end_matches('/'), m);
            set(headers, &X_FORWARDED_PREFIX, &prefix);
        }
        if self.forwarded {
            let node = match (peer, &self.client_identity) {
                (Some(p), ClientIdentity::IpAndPort) => Node::from(p),
                (Some(p), ClientIdentity::Ip) => Node::ip(p.ip()),
                _ => Node::unknown(),
            };
            let mut list = joined(headers, &header::FORWARDED);
            if !list.is_empty() {
                list.push_str(", ");
            }
            let _ = write!(list, "for={node}");
            if let Some(by) = &self.by {
                let _ = write!(list, ";by={by}");
            }
            if let Some(h) = browser_host.and_then(|h| h.to_str().ok()) {
                list.push_str(";host=");
                let _ = write_value(&mut list, h);
            }
            let _ = write!(list, ";proto={proto}");
            set(headers, &header::FORWARDED, &list);
        }
    }

    /// Applies the Host and Origin policies; returns the Host sent upstream when this layer set it.
    fn host_and_origin(
        &self,
        headers: &mut HeaderMap,
        target: Option<&Target>,
    ) -> Option<HeaderValue> {
        let host = match (&self.host, target) {
            (HostPolicy::Preserve, _) | (HostPolicy::Upstream, None) => None,
            (HostPolicy::Upstream, Some(t)) => HeaderValue::from_str(t.authority().as_str()).ok(),
            (HostPolicy::Fixed(v), _) => Some(v.clone()),
        };
        if let Some(v) = &host {
            headers.insert(header::HOST, v.clone());
        }
        match &self.origin {
            OriginPolicy::PassThroughIfPresent => {}
            OriginPolicy::RewriteToUpstream => {
                if let (Some(t), true) = (target, headers.contains_key(header::ORIGIN)) {
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
        host
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::{StatusCode, Version};
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::route::Upstream;

    fn target(mount: Option<&str>) -> Target {
        let up: Upstream = "http://localhost:5173".parse().unwrap();
        let t = up.target("/a/b".parse().unwrap());
        match mount {
            Some(m) => t.with_mount(m),
            None => t,
        }
    }

    /// Runs one request through the layer in front of a service answering `res_headers` with a
    /// body of `()`; returns what the service saw and the response.
    async fn run(
        layer: RewriteLayer,
        req: Request<()>,
        res_headers: &[(&str, &str)],
        status: StatusCode,
    ) -> (HeaderMap, Response<()>) {
        let seen = Arc::new(std::sync::Mutex::new(HeaderMap::new()));
        let seen2 = seen.clone();
        let res_headers: Vec<(String, String)> = res_headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let svc = ServiceBuilder::new()
            .layer(layer)
            .service(tower::service_fn(move |req: Request<()>| {
                *seen2.lock().unwrap() = req.headers().clone();
                let mut res = Response::new(());
                *res.status_mut() = status;
                for (k, v) in &res_headers {
                    res.headers_mut().append(
                        HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        HeaderValue::from_str(v).unwrap(),
                    );
                }
                async move { Ok::<_, Infallible>(res) }
            }));
        let res = svc.oneshot(req).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        (seen, res)
    }

    #[tokio::test]
    async fn http2_request_without_host_header() {
        let mut req = Request::get("https://gw.example:8443/proxy/5173/a/b")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        req.extensions_mut().insert(target(Some("/proxy/5173")));
        req.extensions_mut()
            .insert(ClientAddr("[2001:db8::1]:5000".parse().unwrap()));
        req.extensions_mut().insert(ClientTls);
        let (seen, _) = run(
            RewriteLayer::new()
                .host(HostPolicy::Upstream)
                .forwarded(true),
            req,
            &[],
            StatusCode::OK,
        )
        .await;
        assert_eq!(seen["host"], "localhost:5173");
        assert_eq!(seen["x-forwarded-host"], "gw.example:8443");
        assert_eq!(seen["x-forwarded-for"], "2001:db8::1");
        assert_eq!(seen["x-forwarded-proto"], "https");
        assert_eq!(seen["x-forwarded-prefix"], "/proxy/5173");
        assert_eq!(
            seen["forwarded"],
            r#"for="[2001:db8::1]";host="gw.example:8443";proto=https"#
        );
    }

    #[tokio::test]
    async fn without_target_only_request_headers_change() {
        let req = Request::get("/x")
            .header("host", "gw")
            .header("origin", "http://gw")
            .body(())
            .unwrap();
        let layer = RewriteLayer::new()
            .host(HostPolicy::Upstream)
            .origin(OriginPolicy::RewriteToUpstream)
            .forwarded(true);
        let (seen, res) = run(
            layer,
            req,
            &[("location", "/y"), ("set-cookie", "a=1; Domain=gw")],
            StatusCode::FOUND,
        )
        .await;
        assert_eq!(seen["host"], "gw");
        assert_eq!(seen["origin"], "http://gw");
        assert_eq!(seen["forwarded"], "for=unknown;host=gw;proto=http");
        assert_eq!(res.headers()["location"], "/y");
        assert_eq!(res.headers()["set-cookie"], "a=1; Domain=gw");
    }

    #[tokio::test]
    async fn fixed_host_urls_map_back_and_bodies_are_any_type() {
        let mut req = Request::get("/m/a/b")
            .header("host", "gw")
            .body(())
            .unwrap();
        req.extensions_mut().insert(target(Some("/m")));
        let layer = RewriteLayer::new().host(HostPolicy::fixed("app.internal").unwrap());
        let (seen, res) = run(
            layer,
            req,
            &[
                ("location", "http://app.internal/next"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2; Path=/"),
            ],
            StatusCode::SEE_OTHER,
        )
        .await;
        assert_eq!(seen["host"], "app.internal");
        assert_eq!(res.headers()["location"], "/m/next");
        let cookies: Vec<_> = res.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["sgw.m~a=1; Path=/m/a", "sgw.m~b=2; Path=/m/"]);
    }

    #[tokio::test]
    async fn host_routed_requests_only_lose_cookie_domains() {
        let mut req = Request::get("/a")
            .header("host", "5173.localhost")
            .body(())
            .unwrap();
        req.extensions_mut().insert(target(None));
        let (seen, res) = run(
            RewriteLayer::new(),
            req,
            &[
                ("location", "/login"),
                ("set-cookie", "a=1; Domain=localhost; Path=/"),
            ],
            StatusCode::FOUND,
        )
        .await;
        assert!(!seen.contains_key("x-forwarded-prefix"));
        assert_eq!(res.headers()["location"], "/login");
        assert_eq!(res.headers()["set-cookie"], "sgw~a=1; Path=/");
    }

    #[tokio::test]
    async fn connection_cannot_name_the_gateways_headers() {
        let mut req = Request::get("/m/a/b")
            .header("host", "gw")
            .header(
                "connection",
                "keep-alive, X-Forwarded-For, Forwarded, X-Forwarded-Host, X-Forwarded-Proto, \
                 X-Forwarded-Prefix",
            )
            .header("x-forwarded-for", "6.6.6.6")
            .body(())
            .unwrap();
        req.extensions_mut().insert(target(Some("/m")));
        req.extensions_mut()
            .insert(ClientAddr("10.1.2.3:5000".parse().unwrap()));
        let (seen, _) = run(
            RewriteLayer::new().forwarded(true),
            req,
            &[],
            StatusCode::OK,
        )
        .await;
        assert_eq!(seen["connection"], "keep-alive");
        assert_eq!(seen["x-forwarded-for"], "10.1.2.3");
        assert_eq!(seen["x-forwarded-prefix"], "/m");
        assert_eq!(seen["forwarded"], "for=10.1.2.3;host=gw;proto=http");
    }

    #[tokio::test]
    async fn cookies_cross_only_within_the_route() {
        let mut req = Request::get("/m/a/b")
            .header("host", "gw")
            .header("cookie", "session=HOST; sgw.m~session=own; sgw_ide_x=T")
            .header("cookie", "sgw.other~a=1")
            .body(())
            .unwrap();
        req.extensions_mut().insert(target(Some("/m")));
        let (seen, res) = run(
            RewriteLayer::new(),
            req,
            &[
                ("set-cookie", "sgw_ide_x=forged; Path=/"),
                ("clear-site-data", "\"cookies\""),
                ("service-worker-allowed", "/"),
            ],
            StatusCode::OK,
        )
        .await;
        assert_eq!(seen["cookie"], "session=own");
        assert!(!res.headers().contains_key("set-cookie"));
        assert!(!res.headers().contains_key("clear-site-data"));
        assert_eq!(res.headers()["service-worker-allowed"], "/m/");

        // Everything off: the headers pass as they came.
        let mut req = Request::get("/m/a/b")
            .header("cookie", "session=HOST")
            .body(())
            .unwrap();
        req.extensions_mut().insert(target(Some("/m")));
        let layer = RewriteLayer::new()
            .cookie_firewall(CookieFirewall::off())
            .sandbox_responses(false);
        let (seen, res) = run(
            layer,
            req,
            &[
                ("clear-site-data", "\"cookies\""),
                ("service-worker-allowed", "/"),
            ],
            StatusCode::OK,
        )
        .await;
        assert_eq!(seen["cookie"], "session=HOST");
        assert_eq!(res.headers()["clear-site-data"], "\"cookies\"");
        assert_eq!(res.headers()["service-worker-allowed"], "/");
    }
}
