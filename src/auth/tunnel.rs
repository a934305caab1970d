//! The tunnel guard: only a valid cookie for the sandbox in the path gets through.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::cookie::{cookie_values, strip_cookies, CookieConfig};
use super::id::is_valid_sandbox_id;
use super::token::{Audience, Claims, TokenError, TokenSigner};
use crate::util::text_response;

/// Guards the live tunnel, `/__ide/{id}/…` on the shared origin or a whole sandbox host such as
/// `{id}.ide.example.com`: a request reaches the inner service (the proxy to the sandbox) only
/// with a valid session cookie for the sandbox it is addressed to.
///
/// For each request, [`TunnelAuth`]:
///
/// - on a Host matching the [`SandboxHosts`](super::SandboxHosts) of its [`CookieConfig`], takes
///   the sandbox id from the Host: every path there belongs to that sandbox;
/// - otherwise takes the sandbox id from the path (`{prefix}/{id}/…`, prefix from
///   [`CookieConfig`]); a path outside the prefix gets `404`, an invalid id `400`, and the bare
///   mount `{prefix}/{id}` is redirected to `{prefix}/{id}/` (`308`, query kept), because the
///   cookie's `Path=/__ide/{id}/` does not match it and the browser would not send the cookie;
/// - looks for the one cookie name the [`Bootstrap`](super::Bootstrap) sets for such a request
///   (`__Host-{name}_{id}` on a sandbox host, `__Secure-{name}_{id}` on the shared origin, the
///   bare `{name}_{id}` only where the cookie is not `Secure`, see [`SecureCookie`](super::SecureCookie))
///   and verifies its value with [`Audience::Cookie`] and that id: a cookie for sandbox A never
///   opens B, a bare-named cookie planted by a sibling host or a plain-HTTP page is ignored, and a
///   bootstrap token offered in the tunnel URL is not a credential. Otherwise `403` with a short
///   text saying to reopen the IDE from the dashboard;
/// - removes every gateway cookie from the `Cookie` headers (other cookies kept, a header left
///   empty removed) and, unless [`keep_authorization`](TunnelAuthLayer::keep_authorization) is
///   set, the `Authorization` header, so code in the sandbox never sees gateway credentials;
/// - inserts the verified [`Claims`] (and where it admitted the request, for
///   [`TunnelResolver`](super::TunnelResolver)) into the request extensions, then calls the inner
///   service.
///
/// Only headers are read: the body and hyper's upgrade extension travel untouched, so WebSocket
/// upgrades (requests with `Upgrade` headers) are guarded the same way as plain requests.
///
/// Wrap the service that reaches the sandbox and mount it on the whole prefix with
/// `route_service("/__ide/{*rest}", …)`, so the bare mount and every path under it pass the guard
/// (axum's `nest_service` would strip the prefix the guard reads the id from):
///
/// ```
/// use axum::{body::Body, http::{Request, Response}, Router};
/// use sandbox_gateway::auth::{TokenSigner, TunnelAuthLayer};
/// use tower::ServiceBuilder;
///
/// let signer = TokenSigner::new([7u8; 32])?;
/// let tunnel = ServiceBuilder::new()
///     .layer(TunnelAuthLayer::new(signer))
///     .service_fn(|_req: Request<Body>| async {
///         Ok::<_, std::convert::Infallible>(Response::new(Body::from("inside the sandbox")))
///     });
/// let app: Router = Router::new().route_service("/__ide/{*rest}", tunnel);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TunnelAuthLayer {
    config: Arc<Config>,
}

struct Config {
    signer: TokenSigner,
    cookie: CookieConfig,
    strip_authorization: bool,
}

impl fmt::Debug for TunnelAuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelAuthLayer")
            .field("signer", &self.config.signer)
            .field("cookie", &self.config.cookie)
            .field("strip_authorization", &self.config.strip_authorization)
            .finish()
    }
}

impl TunnelAuthLayer {
    /// A guard verifying cookies with `signer` (the one [`Bootstrap`](super::Bootstrap) signs
    /// them with), with the default [`CookieConfig`].
    pub fn new(signer: TokenSigner) -> Self {
        Self {
            config: Arc::new(Config {
                signer,
                cookie: CookieConfig::default(),
                strip_authorization: true,
            }),
        }
    }

    /// The cookie configuration; give [`Bootstrap`](super::Bootstrap) the same.
    pub fn cookie(self, cookie: CookieConfig) -> Self {
        self.map(|c| c.cookie = cookie)
    }

    /// Whether `Authorization` is forwarded to the sandbox (default `false`: the gateway owns that
    /// header and removes it). Turn on only when the sandbox's server expects its own
    /// `Authorization` from the browser.
    pub fn keep_authorization(self, keep: bool) -> Self {
        self.map(|c| c.strip_authorization = !keep)
    }

    fn map(self, f: impl FnOnce(&mut Config)) -> Self {
        let mut config = Arc::try_unwrap(self.config).unwrap_or_else(|shared| Config {
            signer: shared.signer.clone(),
            cookie: shared.cookie.clone(),
            strip_authorization: shared.strip_authorization,
        });
        f(&mut config);
        Self {
            config: Arc::new(config),
        }
    }
}

impl<S> Layer<S> for TunnelAuthLayer {
    type Service = TunnelAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TunnelAuth {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service made by [`TunnelAuthLayer`]; see there.
#[derive(Clone)]
pub struct TunnelAuth<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for TunnelAuth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelAuth")
            .field("inner", &self.inner)
            .field("cookie", &self.config.cookie)
            .field("strip_authorization", &self.config.strip_authorization)
            .finish_non_exhaustive()
    }
}

enum Where<'a> {
    Outside,
    BareMount(&'a str),
    /// Under the mount `{prefix}/{id}/`.
    Inside(&'a str),
    /// On the sandbox's own host.
    OwnHost(String),
}

fn locate<'a>(prefix: &str, path: &'a str) -> Where<'a> {
    let Some(rest) = path.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
        return Where::Outside;
    };
    match rest.split_once('/') {
        Some((id, _)) => Where::Inside(id),
        None => Where::BareMount(rest),
    }
}

/// Where [`TunnelAuth`] admitted a request: under the path mount `{prefix}/{id}` of the shared
/// origin, or on the sandbox's own host. Inserted into the request extensions next to the
/// [`Claims`], read by [`TunnelResolver`](super::TunnelResolver).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// The mount prefix, without its trailing slash (`/__ide/demo`).
    Mount(String),
    /// The sandbox's own host: no prefix.
    OwnHost,
}

const REOPEN: &str = "Reopen the IDE from the dashboard.";

impl<S> TunnelAuth<S> {
    /// Checks the request; `Err` is the answer when it is refused.
    fn admit<B, ResBody: From<Bytes>>(
        &self,
        req: &mut Request<B>,
    ) -> Result<(), Response<ResBody>> {
        let c = &self.config;
        let own_host = c
            .cookie
            .sandbox_host(req.uri(), req.headers())
            .map_err(|e| text_response(e.status(), format!("{e}.")))?;
        let path = req.uri().path();
        let located = match own_host {
            // On the sandbox's own host the whole origin is the tunnel.
            Some(id) => Where::OwnHost(id),
            None => locate(c.cookie.tunnel_prefix(), path),
        };
        let (id, admitted) = match located {
            Where::Outside => return Err(text_response(StatusCode::NOT_FOUND, "Not found.")),
            Where::OwnHost(ref id) if !is_valid_sandbox_id(id) => {
                return Err(text_response(
                    StatusCode::BAD_REQUEST,
                    "Invalid sandbox id in the Host.",
                ))
            }
            Where::BareMount(id) | Where::Inside(id) if !is_valid_sandbox_id(id) => {
                return Err(text_response(
                    StatusCode::BAD_REQUEST,
                    "Invalid sandbox id in the path.",
                ))
            }
            Where::BareMount(id) => {
                let mut location = c.cookie.mount(id);
                if let Some(q) = req.uri().query() {
                    location.push('?');
                    location.push_str(q);
                }
                let mut res = text_response(StatusCode::PERMANENT_REDIRECT, "Moved.");
                let location = HeaderValue::try_from(location).map_err(|_| {
                    text_response(StatusCode::BAD_REQUEST, "Invalid request target.")
                })?;
                res.headers_mut().insert(header::LOCATION, location);
                return Err(res);
            }
            Where::Inside(id) => (
                id.to_owned(),
                Admitted::Mount(format!("{}/{id}", c.cookie.tunnel_prefix())),
            ),
            Where::OwnHost(id) => (id, Admitted::OwnHost),
        };

        // Only the name the bootstrap sets for this request is a credential: with `Secure`, a
        // bare-named cookie (which a plain-HTTP page or a sibling host could plant) is ignored.
        let secure = c.cookie.is_secure(req);
        let name = c
            .cookie
            .cookie_name(&id, secure, admitted == Admitted::OwnHost);
        let mut verdict: Result<Claims, Option<TokenError>> = Err(None);
        for value in cookie_values(req.headers(), &name) {
            let Ok(value) = std::str::from_utf8(value) else {
                verdict = Err(Some(TokenError::Malformed));
                continue;
            };
            match c.signer.verify(value, &id, Audience::Cookie) {
                Ok(claims) => {
                    verdict = Ok(claims);
                    break;
                }
                Err(e) => {
                    // Keep "expired" if any candidate said so: it is what the user can act on.
                    if verdict != Err(Some(TokenError::Expired)) {
                        verdict = Err(Some(e));
                    }
                }
            }
        }
        crate::metrics::token("cookie", verdict.as_ref().map(|_| ()).map_err(|e| *e));
        let claims = match verdict {
            Ok(claims) => claims,
            Err(reason) => {
                crate::metrics::refused("isolation");
                let msg = match reason {
                    None => format!("No IDE session for this sandbox. {REOPEN}"),
                    Some(TokenError::Expired) => format!("Your IDE session has expired. {REOPEN}"),
                    Some(e) => {
                        tracing::debug!(sandbox = %id, reason = %e, "tunnel cookie refused");
                        format!("Your IDE session is not valid. {REOPEN}")
                    }
                };
                return Err(text_response(StatusCode::FORBIDDEN, msg));
            }
        };

        let headers = req.headers_mut();
        strip_cookies(headers, |name| c.cookie.is_gateway_cookie(name));
        if c.strip_authorization {
            headers.remove(header::AUTHORIZATION);
        }
        req.extensions_mut().insert(claims);
        req.extensions_mut().insert(admitted);
        Ok(())
    }
}

impl<S, B, ResBody> Service<Request<B>> for TunnelAuth<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match self.admit(&mut req) {
            Ok(()) => ResponseFuture {
                kind: Kind::Inner {
                    fut: self.inner.call(req),
                },
            },
            Err(res) => ResponseFuture {
                kind: Kind::Answer { res: Some(res) },
            },
        }
    }
}

pin_project! {
    /// Response future of [`TunnelAuth`].
    pub struct ResponseFuture<F, ResBody> {
        #[pin]
        kind: Kind<F, ResBody>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, ResBody> {
        Inner { #[pin] fut: F },
        Answer { res: Option<Response<ResBody>> },
    }
}

impl<F, ResBody> fmt::Debug for ResponseFuture<F, ResBody> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F, ResBody>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { fut } => fut.poll(cx),
            KindProj::Answer { res } => {
                Poll::Ready(Ok(res.take().expect("polled after completion")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use std::convert::Infallible;
    use std::time::Duration;

    fn svc() -> (TokenSigner, TunnelAuth<tower_service_fn::Echo>) {
        let signer = TokenSigner::new([9u8; 32]).unwrap();
        let layer = TunnelAuthLayer::new(signer.clone());
        (signer, layer.layer(tower_service_fn::Echo))
    }

    /// A minimal inner service that reports what it received.
    mod tower_service_fn {
        use super::*;

        #[derive(Clone)]
        pub struct Echo;

        impl Service<Request<()>> for Echo {
            type Response = Response<Full<Bytes>>;
            type Error = Infallible;
            type Future = std::future::Ready<Result<Self::Response, Infallible>>;

            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, req: Request<()>) -> Self::Future {
                let sandbox = req
                    .extensions()
                    .get::<Claims>()
                    .map(|c| c.sandbox_id().to_owned())
                    .unwrap_or_default();
                let cookies: Vec<String> = req
                    .headers()
                    .get_all(header::COOKIE)
                    .iter()
                    .map(|v| v.to_str().unwrap().to_owned())
                    .collect();
                let auth = req.headers().contains_key(header::AUTHORIZATION);
                let body = format!("{sandbox}|{}|{auth}", cookies.join(" / "));
                std::future::ready(Ok(Response::new(Full::new(Bytes::from(body)))))
            }
        }
    }

    async fn run(
        s: &mut TunnelAuth<tower_service_fn::Echo>,
        req: Request<()>,
    ) -> (StatusCode, http::HeaderMap, String) {
        use http_body_util::BodyExt;
        let res = s.call(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    fn cookie_for(signer: &TokenSigner, id: &str) -> String {
        signer
            .sign(id, Audience::Cookie, Duration::from_secs(60))
            .unwrap()
    }

    #[tokio::test]
    async fn admits_valid_cookie_and_strips_credentials() {
        let (signer, mut s) = svc();
        let token = cookie_for(&signer, "a");
        let req = Request::get("/__ide/a/index.html")
            .header(header::HOST, "localhost:8080")
            .header(header::COOKIE, format!("x=1; sgw_ide_a={token}"))
            .header(header::COOKIE, "sgw_ide_b=zzz")
            .header(header::COOKIE, "y=2")
            .header(header::AUTHORIZATION, "Bearer host-secret")
            .body(())
            .unwrap();
        let (status, _, body) = run(&mut s, req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "a|x=1 / y=2|false");
    }

    #[tokio::test]
    async fn secure_cookie_name_accepted() {
        let (signer, mut s) = svc();
        let token = cookie_for(&signer, "a");
        let req = Request::get("/__ide/a/")
            .header(header::COOKIE, format!("__Secure-sgw_ide_a={token}"))
            .body(())
            .unwrap();
        let (status, _, body) = run(&mut s, req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "a||false");
    }

    #[tokio::test]
    async fn bare_name_refused_where_the_cookie_is_secure() {
        let (signer, mut s) = svc();
        let token = cookie_for(&signer, "a");
        // HTTPS behind a TLS terminator that sends no X-Forwarded-Proto: the bootstrap set
        // `__Secure-sgw_ide_a`, so a bare `sgw_ide_a` (plantable over plain HTTP or by a
        // sibling host) is no credential, even with a valid value.
        for host in ["gw.example.com", "10.0.0.5:8080"] {
            let req = Request::get("/__ide/a/")
                .header(header::HOST, host)
                .header(header::COOKIE, format!("sgw_ide_a={token}"))
                .body(())
                .unwrap();
            let (status, _, body) = run(&mut s, req).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{host}");
            assert_eq!(
                body,
                "No IDE session for this sandbox. Reopen the IDE from the dashboard.\n"
            );
        }
        // On plain-HTTP loopback the bare name is the one set, and the prefixed one is not.
        let req = Request::get("/__ide/a/")
            .header(header::HOST, "localhost:8080")
            .header(header::COOKIE, format!("__Secure-sgw_ide_a={token}"))
            .body(())
            .unwrap();
        assert_eq!(run(&mut s, req).await.0, StatusCode::FORBIDDEN);
    }

    fn own_host_svc() -> (TokenSigner, TunnelAuth<tower_service_fn::Echo>) {
        let signer = TokenSigner::new([9u8; 32]).unwrap();
        let cookie = CookieConfig::builder()
            .sandbox_hosts(crate::auth::SandboxHosts::new("{id}.ide.example.com").unwrap())
            .build()
            .unwrap();
        let layer = TunnelAuthLayer::new(signer.clone()).cookie(cookie);
        (signer, layer.layer(tower_service_fn::Echo))
    }

    #[tokio::test]
    async fn own_host_reads_the_id_from_the_host() {
        let (signer, mut s) = own_host_svc();
        let a = cookie_for(&signer, "a");
        let on = |host: &str, path: &str, cookie: String| {
            Request::get(path)
                .header(header::HOST, host)
                .header(header::COOKIE, cookie)
                .body(())
                .unwrap()
        };
        // Any path on the sandbox's host is the tunnel, with the `__Host-` cookie.
        let (status, _, body) = run(
            &mut s,
            on(
                "a.ide.example.com",
                "/static/x.js",
                format!("__Host-sgw_ide_a={a}; app=1"),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "a|app=1|false");
        // The path names no sandbox there: `/__ide/b/` on a's host is a's path, still a's cookie.
        let (status, _, body) = run(
            &mut s,
            on(
                "a.ide.example.com",
                "/__ide/b/",
                format!("__Host-sgw_ide_a={a}"),
            ),
        )
        .await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "a||false"));
        // a's cookie does not open b's host; the `__Secure-` (path-mount) and bare names are
        // not the host-only cookie.
        for (host, cookie) in [
            ("b.ide.example.com", format!("__Host-sgw_ide_b={a}")),
            ("a.ide.example.com", format!("__Secure-sgw_ide_a={a}")),
            ("a.ide.example.com", format!("sgw_ide_a={a}")),
        ] {
            let (status, _, _) = run(&mut s, on(host, "/", cookie.clone())).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{host} {cookie}");
        }
        // Other hosts keep the path mount.
        let (status, _, body) = run(
            &mut s,
            on(
                "app.example.com",
                "/__ide/a/",
                format!("__Secure-sgw_ide_a={a}"),
            ),
        )
        .await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "a||false"));
        assert_eq!(
            run(&mut s, on("app.example.com", "/x", String::new()))
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        // Two Hosts: refused before anything else.
        let two = Request::get("/")
            .header(header::HOST, "a.ide.example.com")
            .header(header::HOST, "b.ide.example.com")
            .body(())
            .unwrap();
        assert_eq!(run(&mut s, two).await.0, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn keep_authorization_option() {
        let signer = TokenSigner::new([9u8; 32]).unwrap();
        let mut s = TunnelAuthLayer::new(signer.clone())
            .keep_authorization(true)
            .layer(tower_service_fn::Echo);
        let req = Request::get("/__ide/a/")
            .header(header::HOST, "127.0.0.1:8080")
            .header(
                header::COOKIE,
                format!("sgw_ide_a={}", cookie_for(&signer, "a")),
            )
            .header(header::AUTHORIZATION, "Basic app")
            .body(())
            .unwrap();
        assert_eq!(run(&mut s, req).await.2, "a||true");
    }

    #[tokio::test]
    async fn refusals() {
        let (signer, mut s) = svc();
        let a = cookie_for(&signer, "a");
        let bootstrap = signer.issue("a", Duration::from_secs(60)).unwrap();
        let cases: Vec<(Request<()>, StatusCode)> = vec![
            (
                Request::get("/__ide/a/").body(()).unwrap(),
                StatusCode::FORBIDDEN,
            ),
            (
                Request::get("/__ide/b/")
                    .header(header::COOKIE, format!("sgw_ide_b={a}"))
                    .body(())
                    .unwrap(),
                StatusCode::FORBIDDEN,
            ),
            (
                Request::get("/__ide/a/")
                    .header(header::COOKIE, format!("sgw_ide_a={bootstrap}"))
                    .body(())
                    .unwrap(),
                StatusCode::FORBIDDEN,
            ),
            (
                Request::get(format!("/__ide/a/?token={bootstrap}"))
                    .body(())
                    .unwrap(),
                StatusCode::FORBIDDEN,
            ),
            (
                Request::get("/__ide/a/")
                    .header(header::COOKIE, vec![0xffu8, b'=', 0xfe].as_slice())
                    .body(())
                    .unwrap(),
                StatusCode::FORBIDDEN,
            ),
            (
                Request::get("/__ide/a.b/").body(()).unwrap(),
                StatusCode::BAD_REQUEST,
            ),
            (
                Request::get("/__ide/%2e%2e/x").body(()).unwrap(),
                StatusCode::BAD_REQUEST,
            ),
            (
                Request::get("/__idea/a/").body(()).unwrap(),
                StatusCode::NOT_FOUND,
            ),
            (
                Request::get("/other").body(()).unwrap(),
                StatusCode::NOT_FOUND,
            ),
        ];
        for (req, want) in cases {
            let uri = req.uri().clone();
            let (status, _, body) = run(&mut s, req).await;
            assert_eq!(status, want, "{uri}: {body}");
            if want == StatusCode::FORBIDDEN {
                assert!(body.contains("Reopen the IDE from the dashboard"), "{body}");
            }
        }
    }

    #[tokio::test]
    async fn expired_cookie_says_so() {
        let (signer, mut s) = svc();
        let old = signer.sign("a", Audience::Cookie, Duration::ZERO).unwrap();
        let req = Request::get("/__ide/a/")
            .header(header::HOST, "localhost")
            .header(header::COOKIE, format!("sgw_ide_a={old}"))
            .body(())
            .unwrap();
        let (status, _, body) = run(&mut s, req).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("expired"));
    }

    #[tokio::test]
    async fn bare_mount_redirects_with_slash() {
        let (_, mut s) = svc();
        let (status, headers, _) =
            run(&mut s, Request::get("/__ide/a?x=1").body(()).unwrap()).await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(headers[header::LOCATION], "/__ide/a/?x=1");
    }
}
