//! The bootstrap: a one-time link token becomes the tunnel cookie.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::cookie::{ConfigError, CookieConfig};
use super::id::is_valid_sandbox_id;
use super::nonce::{MemoryNonceStore, NonceStore, NonceStoreError};
use super::token::{Audience, Claims, TokenError, TokenSigner};
use crate::util::text_response;

/// The default bootstrap path pattern.
pub const DEFAULT_BOOTSTRAP_PATH: &str = "/api/dev/{id}/ide";

/// What is left unescaped in a query value or path segment: base64url's alphabet.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_');

/// The bootstrap URL for sandbox `id` under the default pattern: `/api/dev/{id}/ide?token=…`.
///
/// Use [`Bootstrap::url_for`] when the path pattern was changed.
///
/// ```
/// use std::time::Duration;
/// use sandbox_gateway::auth::{bootstrap_url, TokenSigner};
///
/// let signer = TokenSigner::new([7u8; 32])?;
/// let token = signer.issue("demo", Duration::from_secs(60))?;
/// let url = bootstrap_url("demo", &token);
/// assert_eq!(url, format!("/api/dev/demo/ide?token={token}"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn bootstrap_url(id: &str, token: &str) -> String {
    PathPattern::parse(DEFAULT_BOOTSTRAP_PATH)
        .expect("the default pattern is valid")
        .url(id, token)
}

#[derive(Clone, Debug)]
struct PathPattern {
    before: String,
    after: String,
}

impl PathPattern {
    fn parse(pattern: &str) -> Result<Self, ConfigError> {
        let err = || ConfigError::PathPattern(pattern.to_owned());
        let (before, after) = pattern.split_once("{id}").ok_or_else(err)?;
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        };
        let before_ok = before == "/"
            || (before.len() >= 3
                && before.starts_with('/')
                && before.ends_with('/')
                && before[1..before.len() - 1].split('/').all(segment_ok));
        let ok = before_ok
            && (after.is_empty()
                || (after.starts_with('/') && after[1..].split('/').all(segment_ok)));
        if !ok {
            return Err(err());
        }
        Ok(Self {
            before: before.to_owned(),
            after: after.to_owned(),
        })
    }

    /// The sandbox id in `path`, if `path` matches (the id unchecked).
    fn matches<'p>(&self, path: &'p str) -> Option<&'p str> {
        let id = path.strip_prefix(&self.before)?.strip_suffix(&self.after)?;
        (!id.is_empty() && !id.contains('/')).then_some(id)
    }

    fn url(&self, id: &str, token: &str) -> String {
        format!(
            "{}{}{}?token={}",
            self.before,
            utf8_percent_encode(id, UNRESERVED),
            self.after,
            utf8_percent_encode(token, UNRESERVED)
        )
    }
}

/// Turns a single-use link token into the tunnel cookie, then sends the browser into the tunnel.
///
/// A browser tab cannot carry `Authorization: Bearer`, so the host's own authenticated route
/// issues a short-lived token ([`TokenSigner::issue`]) and hands out
/// `/api/dev/{id}/ide?token=…` ([`bootstrap_url`]), on the host's origin or, with
/// [`SandboxHosts`](super::SandboxHosts), on the sandbox's own (`SandboxHosts::url`). Opening it,
/// `Bootstrap`:
///
/// 1. matches the path against its pattern (default `/api/dev/{id}/ide`; `404` otherwise, and on
///    a sandbox's own host also when the id in the path is not the Host's) and accepts `GET` only
///    (`405` otherwise, so link previewers sending `HEAD` do not spend it);
/// 2. verifies the `token` query parameter for that sandbox id with [`Audience::Bootstrap`], then
///    runs the [`check_subject`](BootstrapBuilder::check_subject) hook, if any;
/// 3. records its nonce in the [`NonceStore`] until it expires: each token works once;
/// 4. answers `303 See Other` into the tunnel (without the token) — `/__ide/{id}/` on the shared
///    origin, `/` on the sandbox's own host — with the cookie described by [`CookieConfig`]
///    (host-only there), whose value is a fresh token with [`Audience::Cookie`] carrying the
///    link's subject.
///
/// Every answer carries `Cache-Control: no-store` and `Referrer-Policy: no-referrer`, so the token
/// in the URL is neither cached nor sent on as a referrer. A missing, bad, expired or spent token
/// gets `403 Forbidden` with a short text saying to reopen the IDE from the dashboard; it tells
/// the user whether the link expired or was already used, never which other check failed. (Not
/// `401`: that status requires a `WWW-Authenticate` challenge the browser could answer, and there
/// is none.) When the nonce store cannot answer, `503 Service Unavailable`.
///
/// `Bootstrap` is an endpoint, not middleware: route the bootstrap path to it. The response body
/// type is chosen when it is built and only needs `From<Bytes>`.
///
/// ```
/// use axum::{body::Body, Router};
/// use sandbox_gateway::auth::{Bootstrap, TokenSigner};
///
/// let signer = TokenSigner::new([7u8; 32])?;
/// let bootstrap = Bootstrap::builder(signer).build::<Body>()?;
/// let app: Router = Router::new().route_service("/api/dev/{id}/ide", bootstrap);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Bootstrap<ResBody = http_body_util::Full<Bytes>> {
    config: Arc<Config>,
    _body: PhantomData<fn() -> ResBody>,
}

struct Config {
    signer: TokenSigner,
    cookie: CookieConfig,
    store: Arc<dyn NonceStore>,
    path: PathPattern,
    check_subject: Option<SubjectCheck>,
}

/// The hook of [`BootstrapBuilder::check_subject`].
type SubjectCheck = Arc<dyn Fn(&Parts, &Claims) -> bool + Send + Sync>;

impl<ResBody> Clone for Bootstrap<ResBody> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            _body: PhantomData,
        }
    }
}

impl<ResBody> fmt::Debug for Bootstrap<ResBody> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bootstrap")
            .field("signer", &self.config.signer)
            .field("cookie", &self.config.cookie)
            .field("path", &self.config.path)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Bootstrap`].
pub struct BootstrapBuilder {
    signer: TokenSigner,
    cookie: CookieConfig,
    store: Option<Arc<dyn NonceStore>>,
    path: String,
    check_subject: Option<SubjectCheck>,
}

impl fmt::Debug for BootstrapBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapBuilder")
            .field("signer", &self.signer)
            .field("cookie", &self.cookie)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Bootstrap {
    /// Starts a builder with `signer` (which must be the one the tunnel verifies cookies with),
    /// the default [`CookieConfig`], a [`MemoryNonceStore`] and the default path pattern.
    pub fn builder(signer: TokenSigner) -> BootstrapBuilder {
        BootstrapBuilder {
            signer,
            cookie: CookieConfig::default(),
            store: None,
            path: DEFAULT_BOOTSTRAP_PATH.to_owned(),
            check_subject: None,
        }
    }
}

impl BootstrapBuilder {
    /// The tunnel cookie's configuration; give [`TunnelAuthLayer`](super::TunnelAuthLayer) the same.
    pub fn cookie(mut self, cookie: CookieConfig) -> Self {
        self.cookie = cookie;
        self
    }

    /// Where spent nonces are remembered (default: a [`MemoryNonceStore`] of default capacity,
    /// right for a single process; share one store between replicas).
    pub fn nonce_store(self, store: impl NonceStore) -> Self {
        self.shared_nonce_store(Arc::new(store))
    }

    /// As [`nonce_store`](Self::nonce_store), with a store already behind an `Arc`.
    pub fn shared_nonce_store(mut self, store: Arc<dyn NonceStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The bootstrap path pattern (default `/api/dev/{id}/ide`): a path with `{id}` once, as a
    /// whole segment.
    pub fn path_pattern(mut self, pattern: impl Into<String>) -> Self {
        self.path = pattern.into();
        self
    }

    /// A check of the link's subject against the request that opens it, run after the token
    /// verified and before its nonce is spent: return `false` to refuse the link (`403`, "This
    /// IDE link was issued for another user"). The token's subject ([`Claims::subject`], set by
    /// [`TokenSigner::issue_for`]) is the user the host minted it for; compare it with the host's
    /// session in the request (its session cookie, when the bootstrap is on the host's origin), so
    /// a link leaked to, or planted on, another user does not open their browser into someone
    /// else's sandbox. Tokens without a subject reach the hook too (`subject()` is `None`).
    ///
    /// On a sandbox's own host ([`CookieConfigBuilder::sandbox_hosts`](super::CookieConfigBuilder::sandbox_hosts))
    /// the host's cookies are not sent to the bootstrap (that is the point of the separate
    /// origin); check there what the host can still see, such as whether the subject may still
    /// open the sandbox.
    ///
    /// ```
    /// use axum::body::Body;
    /// use sandbox_gateway::auth::{Bootstrap, TokenSigner};
    ///
    /// let signer = TokenSigner::new([7u8; 32])?;
    /// let bootstrap = Bootstrap::builder(signer)
    ///     .check_subject(|parts, claims| {
    ///         // The host's session cookie names the logged-in user (a real host looks it up).
    ///         let user = parts.headers.get("x-user").and_then(|v| v.to_str().ok());
    ///         claims.subject().is_some() && user == claims.subject()
    ///     })
    ///     .build::<Body>()?;
    /// # let _ = bootstrap;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_subject(
        mut self,
        check: impl Fn(&Parts, &Claims) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.check_subject = Some(Arc::new(check));
        self
    }

    /// Checks the configuration and builds the service, answering with `ResBody`.
    pub fn build<ResBody>(self) -> Result<Bootstrap<ResBody>, ConfigError> {
        let path = PathPattern::parse(&self.path)?;
        Ok(Bootstrap {
            config: Arc::new(Config {
                signer: self.signer,
                cookie: self.cookie,
                store: self
                    .store
                    .unwrap_or_else(|| Arc::new(MemoryNonceStore::default())),
                path,
                check_subject: self.check_subject,
            }),
            _body: PhantomData,
        })
    }
}

impl<ResBody> Bootstrap<ResBody> {
    /// The bootstrap URL for sandbox `id` under this service's path pattern.
    pub fn url_for(&self, id: &str, token: &str) -> String {
        self.config.path.url(id, token)
    }
}

/// The `token` query parameter; `Err` when it is there more than once.
fn query_token(query: Option<&str>) -> Result<Option<String>, ()> {
    let mut found = None;
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "token" {
            if found.is_some() {
                return Err(());
            }
            found = Some(
                percent_decode(v.as_bytes())
                    .decode_utf8()
                    .map_err(|_| ())?
                    .into_owned(),
            );
        }
    }
    Ok(found)
}

const REOPEN: &str = "Reopen the IDE from the dashboard.";

fn no_referrer<B>(mut res: Response<B>) -> Response<B> {
    res.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

fn refusal<B: From<Bytes>>(err: Option<TokenError>) -> Response<B> {
    crate::metrics::token("bootstrap", Err(err));
    let msg = match err {
        None => format!("This IDE link has no token. {REOPEN}"),
        Some(TokenError::Expired) => format!("This IDE link has expired. {REOPEN}"),
        Some(TokenError::Replayed) => format!("This IDE link was already used. {REOPEN}"),
        Some(_) => format!("This IDE link is not valid. {REOPEN}"),
    };
    no_referrer(text_response(StatusCode::FORBIDDEN, msg))
}

type StoreFuture = Pin<Box<dyn Future<Output = Result<bool, NonceStoreError>> + Send>>;

impl<B, ResBody> Service<Request<B>> for Bootstrap<ResBody>
where
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = Infallible;
    type Future = BootstrapFuture<ResBody>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let c = &self.config;
        let (parts, _body) = req.into_parts();
        let own_host = match c.cookie.sandbox_host(&parts.uri, &parts.headers) {
            Ok(h) => h,
            Err(e) => {
                return BootstrapFuture::ready(no_referrer(text_response(
                    e.status(),
                    format!("{e}."),
                )))
            }
        };
        let Some(id) = c.path.matches(parts.uri.path()) else {
            return BootstrapFuture::ready(text_response(StatusCode::NOT_FOUND, "Not found."));
        };
        // On a sandbox's own host, only that sandbox's link opens.
        if own_host.as_deref().is_some_and(|host_id| host_id != id) {
            return BootstrapFuture::ready(text_response(StatusCode::NOT_FOUND, "Not found."));
        }
        if !is_valid_sandbox_id(id) {
            return BootstrapFuture::ready(no_referrer(text_response(
                StatusCode::BAD_REQUEST,
                "Invalid sandbox id in the path.",
            )));
        }
        if parts.method != Method::GET {
            let mut res = no_referrer(text_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "Open this link with GET.",
            ));
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            return BootstrapFuture::ready(res);
        }
        let token = match query_token(parts.uri.query()) {
            Ok(Some(t)) => t,
            Ok(None) => return BootstrapFuture::ready(refusal(None)),
            Err(()) => return BootstrapFuture::ready(refusal(Some(TokenError::Malformed))),
        };
        let claims = match c.signer.verify(&token, id, Audience::Bootstrap) {
            Ok(claims) => claims,
            Err(e) => {
                tracing::debug!(sandbox = id, reason = %e, "bootstrap token refused");
                return BootstrapFuture::ready(refusal(Some(e)));
            }
        };
        if let Some(check) = &c.check_subject {
            if !check(&parts, &claims) {
                tracing::debug!(sandbox = id, "bootstrap token refused: subject check");
                return BootstrapFuture::ready(no_referrer(text_response(
                    StatusCode::FORBIDDEN,
                    format!("This IDE link was issued for another user. {REOPEN}"),
                )));
            }
        }
        let own_host = own_host.is_some();
        let secure = c.cookie.is_secure_head(&parts.uri, &parts.headers);
        let session =
            match c
                .signer
                .sign_for(id, claims.subject(), Audience::Cookie, c.cookie.max_age())
            {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "cannot sign the tunnel cookie");
                    return BootstrapFuture::ready(no_referrer(text_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Cannot open the IDE right now; try again in a moment.",
                    )));
                }
            };
        let mut res = Response::new(ResBody::from(Bytes::new()));
        *res.status_mut() = StatusCode::SEE_OTHER;
        let h = res.headers_mut();
        let location = if own_host {
            HeaderValue::from_static("/")
        } else {
            HeaderValue::try_from(c.cookie.mount(id)).expect("validated id and prefix")
        };
        h.insert(header::LOCATION, location);
        h.insert(
            header::SET_COOKIE,
            c.cookie.set_cookie(id, &session, secure, own_host),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );

        let store = c.store.clone();
        let nonce = claims.nonce().to_vec();
        let expires_at: SystemTime = claims.expires_at();
        let record: StoreFuture = Box::pin(async move { store.record(&nonce, expires_at).await });
        BootstrapFuture {
            kind: Kind::Record {
                record,
                res: Some(res),
                sandbox: id.to_owned(),
            },
        }
    }
}

pin_project! {
    /// Response future of [`Bootstrap`].
    pub struct BootstrapFuture<ResBody> {
        #[pin]
        kind: Kind<ResBody>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<ResBody> {
        Ready { res: Option<Response<ResBody>> },
        Record { record: StoreFuture, res: Option<Response<ResBody>>, sandbox: String },
    }
}

impl<ResBody> BootstrapFuture<ResBody> {
    fn ready(res: Response<ResBody>) -> Self {
        Self {
            kind: Kind::Ready { res: Some(res) },
        }
    }
}

impl<ResBody> fmt::Debug for BootstrapFuture<ResBody> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapFuture").finish_non_exhaustive()
    }
}

impl<ResBody: From<Bytes>> Future for BootstrapFuture<ResBody> {
    type Output = Result<Response<ResBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Ready { res } => {
                Poll::Ready(Ok(res.take().expect("polled after completion")))
            }
            KindProj::Record {
                record,
                res,
                sandbox,
            } => {
                let fresh = std::task::ready!(record.as_mut().poll(cx));
                let ok = res.take().expect("polled after completion");
                Poll::Ready(Ok(match fresh {
                    Ok(true) => {
                        crate::metrics::token("bootstrap", Ok(()));
                        ok
                    }
                    Ok(false) => {
                        tracing::debug!(sandbox = %sandbox, reason = %TokenError::Replayed, "bootstrap token refused");
                        refusal(Some(TokenError::Replayed))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "nonce store failed; bootstrap refused");
                        let mut r = no_referrer(text_response(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "Cannot open the IDE right now; try again in a moment.",
                        ));
                        r.headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                        r
                    }
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = PathPattern::parse(DEFAULT_BOOTSTRAP_PATH).unwrap();
        assert_eq!(p.matches("/api/dev/demo/ide"), Some("demo"));
        assert_eq!(p.matches("/api/dev/demo/ide/"), None);
        assert_eq!(p.matches("/api/dev//ide"), None);
        assert_eq!(p.matches("/api/dev/a/b/ide"), None);
        assert_eq!(p.matches("/api/dev/demo"), None);
        let tail = PathPattern::parse("/ide/{id}").unwrap();
        assert_eq!(tail.matches("/ide/x"), Some("x"));
        assert_eq!(tail.url("x", "T"), "/ide/x?token=T");
        let root = PathPattern::parse("/{id}/open").unwrap();
        assert_eq!(root.matches("/x/open"), Some("x"));
        for bad in [
            "",
            "/api/dev/ide",
            "api/{id}",
            "/api/x{id}/ide",
            "/api/{id}x/ide",
            "/api/{id}/{id}",
            "/api/{id}/",
            "/api//{id}",
            "/a/../{id}",
            "/a/{id}?x=1",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn url_escapes() {
        assert_eq!(
            bootstrap_url("a-b_c", "T-_0"),
            "/api/dev/a-b_c/ide?token=T-_0"
        );
        assert_eq!(
            bootstrap_url("a/b", "t&x=1"),
            "/api/dev/a%2Fb/ide?token=t%26x%3D1"
        );
    }

    #[test]
    fn token_parameter() {
        assert_eq!(query_token(None), Ok(None));
        assert_eq!(query_token(Some("a=1")), Ok(None));
        assert_eq!(query_token(Some("a=1&token=abc")), Ok(Some("abc".into())));
        assert_eq!(query_token(Some("token=a%2Db")), Ok(Some("a-b".into())));
        assert_eq!(query_token(Some("token=a&token=b")), Err(()));
        assert_eq!(query_token(Some("token=%ff")), Err(()));
        assert_eq!(query_token(Some("tokens=a")), Ok(None));
    }
}
