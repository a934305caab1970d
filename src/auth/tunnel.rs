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
use super::revoke::{Revocation, RevocationStore};
use super::session_end::{is_navigation, see_other, Logout, SessionRedirect};
use super::token::{Audience, Claims, TokenError, TokenSigner};
use crate::proxy::TunnelLifetime;
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
///   bootstrap token offered in the tunnel URL is not a credential. With a
///   [`RevocationStore`] ([`revocations`](TunnelAuthLayer::revocations)), a revoked session is
///   refused too. Otherwise `403` with a short text saying to reopen the IDE from the dashboard —
///   or, for a page navigation and with [`redirect_navigations`](TunnelAuthLayer::redirect_navigations),
///   `303` to the host's page;
/// - answers the [`logout`](TunnelAuthLayer::logout) path itself (revoke, clear the cookie,
///   `303`), so the sandbox never sees it;
/// - gives an upgrade request a [`TunnelLifetime`]: the WebSocket the proxy splices is closed at
///   the session's expiry, and when the store announces a revocation that matches it;
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

#[derive(Clone)]
struct Config {
    signer: TokenSigner,
    cookie: CookieConfig,
    strip_authorization: bool,
    revocations: Option<Arc<dyn RevocationStore>>,
    redirect: Option<SessionRedirect>,
    logout: Option<Logout>,
}

impl fmt::Debug for TunnelAuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelAuthLayer")
            .field("signer", &self.config.signer)
            .field("cookie", &self.config.cookie)
            .field("strip_authorization", &self.config.strip_authorization)
            .field("revocations", &self.config.revocations.is_some())
            .field("redirect", &self.config.redirect)
            .field("logout", &self.config.logout)
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
                revocations: None,
                redirect: None,
                logout: None,
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

    /// Checks every session against `store` on each request and upgrade: a revoked session is
    /// refused like an invalid one, and an open tunnel (WebSocket) whose session the store later
    /// finds revoked is closed as soon as the store announces the change (for a shared store,
    /// within its stated bound). Without a store, sessions end only at their expiry.
    pub fn revocations(self, store: impl RevocationStore) -> Self {
        self.shared_revocations(Arc::new(store))
    }

    /// As [`revocations`](Self::revocations), with a store shared with other services (the
    /// host's own "remove user" or "delete sandbox" routes revoke through the same `Arc`).
    pub fn shared_revocations(self, store: Arc<dyn RevocationStore>) -> Self {
        self.map(|c| c.revocations = Some(store))
    }

    /// Sends a page navigation without a valid session (none, expired, revoked, or signed with
    /// a removed key) to `to` with `303`, instead of the bare `403`: the user lands where a new
    /// session is opened. Requests that are not navigations (scripts, subresources,
    /// WebSockets) keep the `403` and its short text.
    pub fn redirect_navigations(self, to: SessionRedirect) -> Self {
        self.map(|c| c.redirect = Some(to))
    }

    /// Answers [`Logout`]'s path inside every tunnel: revoke the session, clear its cookie,
    /// redirect.
    pub fn logout(self, logout: Logout) -> Self {
        self.map(|c| c.logout = Some(logout))
    }

    fn map(self, f: impl FnOnce(&mut Config)) -> Self {
        let mut config = Arc::unwrap_or_clone(self.config);
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

/// When a session with these claims was issued: its cookie lives for the cookie's `Max-Age`.
fn issued_at(claims: &Claims, cookie: &CookieConfig) -> std::time::SystemTime {
    claims
        .expires_at()
        .checked_sub(cookie.max_age())
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// What [`TunnelAuth`] does with a request that is not simply admitted.
enum Refusal<ResBody> {
    /// This answer.
    Answer(Response<ResBody>),
    /// A logout: revoke this session (when valid and a store is configured), then answer.
    Logout(Option<Box<Claims>>, Response<ResBody>),
}

impl<ResBody> From<Response<ResBody>> for Refusal<ResBody> {
    fn from(res: Response<ResBody>) -> Self {
        Refusal::Answer(res)
    }
}

impl<S> TunnelAuth<S> {
    /// Checks the request; `Err` is the answer when it is refused.
    fn admit<B, ResBody: From<Bytes>>(&self, req: &mut Request<B>) -> Result<(), Refusal<ResBody>> {
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
            Where::Outside => return Err(text_response(StatusCode::NOT_FOUND, "Not found.").into()),
            Where::OwnHost(ref id) if !is_valid_sandbox_id(id) => {
                return Err(text_response(
                    StatusCode::BAD_REQUEST,
                    "Invalid sandbox id in the Host.",
                )
                .into())
            }
            Where::BareMount(id) | Where::Inside(id) if !is_valid_sandbox_id(id) => {
                return Err(text_response(
                    StatusCode::BAD_REQUEST,
                    "Invalid sandbox id in the path.",
                )
                .into())
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
                return Err(res.into());
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
        let mut session_token = String::new();
        for value in cookie_values(req.headers(), &name) {
            let Ok(value) = std::str::from_utf8(value) else {
                verdict = Err(Some(TokenError::Malformed));
                continue;
            };
            match c.signer.verify(value, &id, Audience::Cookie) {
                Ok(claims)
                    if c.revocations
                        .as_ref()
                        .is_some_and(|r| r.is_revoked(&claims, issued_at(&claims, &c.cookie))) =>
                {
                    verdict = Err(Some(TokenError::Revoked));
                }
                Ok(claims) => {
                    verdict = Ok(claims);
                    session_token = value.to_owned();
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

        if let Some(logout) = &c.logout {
            let in_tunnel = match &admitted {
                Admitted::Mount(mount) => &path[mount.len()..],
                Admitted::OwnHost => req.uri().path(),
            };
            if logout.is_logout(req.method(), in_tunnel) {
                let mut res = see_other(logout.redirect().location(&id));
                res.headers_mut().insert(
                    header::SET_COOKIE,
                    c.cookie
                        .clear_cookie(&id, secure, admitted == Admitted::OwnHost),
                );
                return Err(Refusal::Logout(verdict.ok().map(Box::new), res));
            }
        }

        let claims = match verdict {
            Ok(claims) => claims,
            Err(reason) => {
                crate::metrics::refused("isolation");
                if let Some(to) = &c.redirect {
                    if is_navigation(req.method(), req.headers()) {
                        return Err(see_other(to.location(&id)).into());
                    }
                }
                let msg = match reason {
                    None => format!("No IDE session for this sandbox. {REOPEN}"),
                    Some(TokenError::Expired) => format!("Your IDE session has expired. {REOPEN}"),
                    Some(TokenError::Revoked) => format!("Your IDE session has ended. {REOPEN}"),
                    Some(e) => {
                        tracing::debug!(sandbox = %id, reason = %e, "tunnel cookie refused");
                        format!("Your IDE session is not valid. {REOPEN}")
                    }
                };
                return Err(text_response(StatusCode::FORBIDDEN, msg).into());
            }
        };

        if req.headers().contains_key(header::UPGRADE) {
            // The tunnel this upgrade may open ends with the session: at its expiry, when the
            // store learns it is revoked, or when its signing key is removed.
            // A key removed at run time ends the sessions signed with it.
            let (signer, sandbox) = (c.signer.clone(), id.clone());
            let mut lifetime = TunnelLifetime::until(claims.expires_at()).while_valid(
                c.signer.changes(),
                move || {
                    signer
                        .verify(&session_token, &sandbox, Audience::Cookie)
                        .is_ok()
                },
            );
            if let Some(store) = &c.revocations {
                let (store, session, issued) =
                    (store.clone(), claims.clone(), issued_at(&claims, &c.cookie));
                lifetime = lifetime
                    .while_valid(store.changes(), move || !store.is_revoked(&session, issued));
            }
            req.extensions_mut().insert(lifetime);
        }

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
            Err(Refusal::Answer(res)) => ResponseFuture {
                kind: Kind::Answer { res: Some(res) },
            },
            Err(Refusal::Logout(claims, res)) => {
                let store = self.config.revocations.clone();
                let revoke = async move {
                    let (Some(store), Some(claims)) = (store, claims) else {
                        return;
                    };
                    if let Err(e) = store.revoke(Revocation::session(&claims)).await {
                        // The cookie is cleared all the same; the token stays valid to its expiry.
                        tracing::warn!(sandbox = %claims.sandbox_id(), error = %e, "logout could not revoke the session");
                    }
                };
                ResponseFuture {
                    kind: Kind::Logout {
                        revoke: Box::pin(revoke),
                        res: Some(res),
                    },
                }
            }
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
        Logout { revoke: Pin<Box<dyn Future<Output = ()> + Send>>, res: Option<Response<ResBody>> },
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
            KindProj::Logout { revoke, res } => {
                std::task::ready!(revoke.as_mut().poll(cx));
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

    fn ending_svc() -> (
        TokenSigner,
        Arc<crate::auth::MemoryRevocationStore>,
        TunnelAuth<tower_service_fn::Echo>,
    ) {
        let signer = TokenSigner::new([9u8; 32]).unwrap();
        let store = Arc::new(crate::auth::MemoryRevocationStore::new(
            Duration::from_secs(43_200),
        ));
        let to = SessionRedirect::new("/dashboard/{id}").unwrap();
        let layer = TunnelAuthLayer::new(signer.clone())
            .revocations(store.clone())
            .redirect_navigations(to.clone())
            .logout(Logout::new("/.gateway/logout", to).unwrap());
        (signer, store, layer.layer(tower_service_fn::Echo))
    }

    fn session_cookie(signer: &TokenSigner, id: &str, subject: &str) -> String {
        signer
            .sign_for(
                id,
                Some(subject),
                Audience::Cookie,
                Duration::from_secs(43_200),
            )
            .unwrap()
    }

    #[tokio::test]
    async fn revoked_sessions_are_refused_navigations_redirected() {
        let (signer, store, mut s) = ending_svc();
        let (t1, t2) = (
            session_cookie(&signer, "a", "u1"),
            session_cookie(&signer, "a", "u2"),
        );
        let claims1 = signer.verify(&t1, "a", Audience::Cookie).unwrap();
        let get = |token: &str, nav: bool| {
            let b = Request::get("/__ide/a/x")
                .header(header::HOST, "localhost:8080")
                .header(header::COOKIE, format!("sgw_ide_a={token}"));
            let b = if nav {
                b.header("sec-fetch-mode", "navigate")
            } else {
                b
            };
            b.body(()).unwrap()
        };
        assert_eq!(run(&mut s, get(&t1, false)).await.0, StatusCode::OK);
        store.revoke(Revocation::session(&claims1)).await.unwrap();
        let (status, headers, body) = run(&mut s, get(&t1, false)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body,
            "Your IDE session has ended. Reopen the IDE from the dashboard.\n"
        );
        assert!(!headers.contains_key(header::LOCATION));
        let (status, headers, _) = run(&mut s, get(&t1, true)).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], "/dashboard/a");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        // Another session of the same sandbox lives on, until its subject is revoked.
        assert_eq!(run(&mut s, get(&t2, false)).await.0, StatusCode::OK);
        store
            .revoke(Revocation::Subject("u2".into()))
            .await
            .unwrap();
        assert_eq!(run(&mut s, get(&t2, false)).await.0, StatusCode::FORBIDDEN);
        // No session at all: the navigation is redirected too, a WebSocket is not.
        let (status, headers, _) = run(
            &mut s,
            Request::get("/__ide/a/")
                .header("sec-fetch-mode", "navigate")
                .body(())
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, &headers[header::LOCATION]),
            (
                StatusCode::SEE_OTHER,
                &HeaderValue::from_static("/dashboard/a")
            )
        );
        let ws = Request::get("/__ide/a/ws")
            .header("sec-fetch-mode", "navigate")
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "upgrade")
            .body(())
            .unwrap();
        assert_eq!(run(&mut s, ws).await.0, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn an_expired_navigation_is_redirected() {
        let (signer, _store, mut s) = ending_svc();
        let t = signer
            .sign_for("a", Some("u1"), Audience::Cookie, Duration::from_millis(1))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let req = Request::get("/__ide/a/")
            .header(header::HOST, "localhost:8080")
            .header(header::ACCEPT, "text/html")
            .header(header::COOKIE, format!("sgw_ide_a={t}"))
            .body(())
            .unwrap();
        let (status, headers, _) = run(&mut s, req).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], "/dashboard/a");
        let req = Request::get("/__ide/a/")
            .header(header::HOST, "localhost:8080")
            .header(header::ACCEPT, "application/json")
            .header(header::COOKIE, format!("sgw_ide_a={t}"))
            .body(())
            .unwrap();
        let (status, _, body) = run(&mut s, req).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body,
            "Your IDE session has expired. Reopen the IDE from the dashboard.\n"
        );
    }

    #[tokio::test]
    async fn logout_clears_the_cookie_set_and_revokes_the_session() {
        let (signer, _store, mut s) = ending_svc();
        let t = session_cookie(&signer, "a", "u1");
        let logout = Request::get("/__ide/a/.gateway/logout")
            .header(header::HOST, "localhost:8080")
            .header(header::COOKIE, format!("sgw_ide_a={t}"))
            .body(())
            .unwrap();
        let (status, headers, _) = run(&mut s, logout).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], "/dashboard/a");
        assert_eq!(
            headers[header::SET_COOKIE],
            "sgw_ide_a=; Path=/__ide/a/; Max-Age=0; HttpOnly; SameSite=Lax"
        );
        // The same cookie, replayed after logout, opens nothing.
        let again = Request::get("/__ide/a/")
            .header(header::HOST, "localhost:8080")
            .header(header::COOKIE, format!("sgw_ide_a={t}"))
            .body(())
            .unwrap();
        assert_eq!(run(&mut s, again).await.0, StatusCode::FORBIDDEN);
        // Over HTTPS the cleared cookie is the `__Secure-` one; without a session it is cleared all the same.
        let logout = Request::get("https://gw.example.com/__ide/a/.gateway/logout")
            .body(())
            .unwrap();
        let (status, headers, _) = run(&mut s, logout).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(
            headers[header::SET_COOKIE],
            "__Secure-sgw_ide_a=; Path=/__ide/a/; Max-Age=0; HttpOnly; Secure; SameSite=Lax"
        );
        // Only GET and POST at exactly that path: other paths go to the sandbox.
        let t2 = session_cookie(&signer, "a", "u1");
        let near = Request::get("/__ide/a/.gateway/logout/x")
            .header(header::HOST, "localhost:8080")
            .header(header::COOKIE, format!("sgw_ide_a={t2}"))
            .body(())
            .unwrap();
        assert_eq!(run(&mut s, near).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn logout_on_a_sandbox_host_clears_the_host_cookie() {
        let signer = TokenSigner::new([9u8; 32]).unwrap();
        let cookie = CookieConfig::builder()
            .sandbox_hosts(crate::auth::SandboxHosts::new("{id}.ide.example.com").unwrap())
            .build()
            .unwrap();
        let to = SessionRedirect::new("https://app.example.com/open/{id}").unwrap();
        let mut s = TunnelAuthLayer::new(signer.clone())
            .cookie(cookie)
            .logout(Logout::new("/.gateway/logout", to).unwrap())
            .layer(tower_service_fn::Echo);
        let req = Request::post("/.gateway/logout")
            .header(header::HOST, "a.ide.example.com")
            .body(())
            .unwrap();
        let (status, headers, _) = run(&mut s, req).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], "https://app.example.com/open/a");
        assert_eq!(
            headers[header::SET_COOKIE],
            "__Host-sgw_ide_a=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax"
        );
    }
}
