//! Who may spend the upstreams' keys: callers holding an API token the host issued, callers a
//! check of the host's own admits, or (said out loud) anyone.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName};
use http::{Request, StatusCode};
use tower_service::Service;

/// A caller the forwarder admitted: an id that quotas are counted under, and the upstreams it may
/// use.
///
/// An [`ApiForward`](super::ApiForward) with [`Callers::api_tokens`] makes one from the token
/// (the subject and the token's upstream list); a check of the host's own
/// ([`Callers::check`], [`Callers::check_fn`]) returns one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    id: String,
    upstreams: Option<Vec<String>>,
}

impl Caller {
    /// A caller called `id` (a user, an app, a project), allowed every upstream.
    pub fn new(id: impl Into<String>) -> Self {
        Caller {
            id: id.into(),
            upstreams: None,
        }
    }

    /// Allows only these upstreams (by name); others are answered `403`.
    pub fn only<I, S>(mut self, upstreams: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.upstreams = Some(upstreams.into_iter().map(Into::into).collect());
        self
    }

    /// The caller's id: quotas are counted per id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the caller may use the upstream called `name`.
    pub fn may_use(&self, name: &str) -> bool {
        self.upstreams
            .as_ref()
            .is_none_or(|list| list.iter().any(|u| u == name))
    }
}

/// A caller check's refusal: `401` (no valid credential) or `403` (a valid caller that may not do
/// this), with a short message the forwarder sends in its JSON error body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerRefusal {
    status: StatusCode,
    message: Cow<'static, str>,
}

impl CallerRefusal {
    /// `401 Unauthorized`: the request carries no credential, or one that is not valid.
    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        CallerRefusal {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
        }
    }

    /// `403 Forbidden`: the caller is known but may not use this upstream.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        CallerRefusal {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }

    /// The status of the answer: `401` or `403`.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message of the answer.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for CallerRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallerRefusal {}

type Checking = Pin<Box<dyn Future<Output = Result<Caller, CallerRefusal>> + Send>>;
type CheckFn = dyn Fn(Request<()>) -> Checking + Send + Sync;

/// Who may have requests forwarded with the server's keys. An [`ApiForward`](super::ApiForward)
/// refuses to build without it ([`Builder::callers`](super::Builder::callers)): CORS decides what
/// a browser may read, it is no access control, so the forwarder checks callers itself.
///
/// - [`Callers::api_tokens`] (feature `auth`): the host's own authenticated route issues a
///   short-lived token with [`TokenSigner::issue_api`](crate::auth::TokenSigner::issue_api) (a
///   subject, the upstream names it may use, an expiry); the app uses it as its SDK's API key.
/// - [`Callers::check`] / [`Callers::check_fn`]: a check of the host's own (its session, its API
///   keys), a tower service or an async function from the request head to a [`Caller`].
/// - [`Callers::anyone`]: every request is forwarded, for a gateway only its owner can reach.
///
/// Upstreams marked [`bring_your_own_key`](super::Upstream::bring_your_own_key) are not checked:
/// the caller's own credential goes to the upstream, no server key is spent.
#[derive(Clone)]
pub struct Callers(pub(crate) Kind);

#[derive(Clone)]
pub(crate) enum Kind {
    Anyone,
    #[cfg(feature = "auth")]
    Tokens(crate::auth::TokenSigner),
    Check(Arc<CheckFn>),
}

impl fmt::Debug for Callers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Kind::Anyone => "Callers::anyone",
            #[cfg(feature = "auth")]
            Kind::Tokens(_) => "Callers::api_tokens",
            Kind::Check(_) => "Callers::check",
        })
    }
}

/// The caller id every request has under [`Callers::anyone`]: one shared quota.
pub const ANONYMOUS: &str = "anonymous";

impl Callers {
    /// Every request is forwarded with the server's keys, as caller [`ANONYMOUS`]. Only for a
    /// gateway that no one else can reach (a local tool, a test): anyone who can send it a request
    /// spends the keys.
    pub fn anyone() -> Self {
        Callers(Kind::Anyone)
    }

    /// Callers present an API token signed by `signer` (audience
    /// [`Audience::Api`](crate::auth::Audience::Api)), where their SDK puts an API key:
    /// `Authorization: Bearer <token>`, or the header the upstream's key is injected under (such
    /// as `x-api-key`). The forwarder verifies it, removes it, and injects the server's key.
    /// Missing or not valid: `401`; an upstream the token does not name: `403`. The caller id is
    /// the token's subject.
    ///
    /// IDE links and tunnel cookies signed by the same signer are refused here, and API tokens
    /// are refused by the IDE's bootstrap and tunnel: each audience is checked.
    #[cfg(feature = "auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
    pub fn api_tokens(signer: crate::auth::TokenSigner) -> Self {
        Callers(Kind::Tokens(signer))
    }

    /// A check of the host's own, as a tower service from the request head (method, the path
    /// under the forwarder's mount — its first segment names the upstream —, headers including
    /// `Cookie` and `Authorization`) to the [`Caller`] it admits, or a [`CallerRefusal`].
    ///
    /// The forwarder never sends `Cookie` or `Authorization` upstream, and replaces the headers
    /// it injects: read the caller's credential from those.
    pub fn check<S>(service: S) -> Self
    where
        S: Service<Request<()>, Response = Caller, Error = CallerRefusal>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Callers(Kind::Check(Arc::new(move |req| {
            let mut service = service.clone();
            Box::pin(async move {
                std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
                service.call(req).await
            })
        })))
    }

    /// As [`check`](Self::check), with an async function.
    ///
    /// ```
    /// use http::{header, Request};
    /// use sandbox_gateway::forward::{Caller, CallerRefusal, Callers};
    ///
    /// let callers = Callers::check_fn(|req: Request<()>| async move {
    ///     // Look the key up in the host's own store; here, a fixed one.
    ///     match req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
    ///         Some("Bearer app-7-key") => Ok(Caller::new("app-7").only(["openai"])),
    ///         _ => Err(CallerRefusal::unauthorized("unknown app key")),
    ///     }
    /// });
    /// # let _ = callers;
    /// ```
    pub fn check_fn<F, Fut>(check: F) -> Self
    where
        F: Fn(Request<()>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Caller, CallerRefusal>> + Send + 'static,
    {
        Callers(Kind::Check(Arc::new(move |req| Box::pin(check(req)))))
    }

    /// Admits or refuses the request for the upstream `name`, whose key headers (where a token
    /// may be presented besides `Authorization`) are `key_headers`.
    #[cfg_attr(not(feature = "auth"), allow(unused_variables))]
    pub(crate) async fn admit(
        &self,
        name: &str,
        head: &http::request::Parts,
        key_headers: &[HeaderName],
    ) -> Result<Caller, CallerRefusal> {
        let caller = match &self.0 {
            Kind::Anyone => return Ok(Caller::new(ANONYMOUS)),
            #[cfg(feature = "auth")]
            Kind::Tokens(signer) => {
                let token = presented_token(&head.headers, key_headers)?;
                let claims = signer.verify_api(token).map_err(|e| {
                    tracing::debug!(reason = %e, "API token refused");
                    match e {
                        crate::auth::TokenError::Expired => CallerRefusal::unauthorized(
                            "the API token has expired: get a new one from the host",
                        ),
                        _ => CallerRefusal::unauthorized("the API token is not valid"),
                    }
                })?;
                Caller::new(claims.subject()).only(claims.upstreams().iter().cloned())
            }
            Kind::Check(check) => {
                let mut req = Request::new(());
                *req.method_mut() = head.method.clone();
                *req.uri_mut() = head.uri.clone();
                *req.version_mut() = head.version;
                *req.headers_mut() = head.headers.clone();
                check(req).await?
            }
        };
        if caller.may_use(name) {
            Ok(caller)
        } else {
            Err(CallerRefusal::forbidden(format!(
                "this caller may not use the upstream `{name}`"
            )))
        }
    }
}

/// The one token the request presents: `Authorization: Bearer <token>`, or the value of one of
/// `key_headers`. Several different values are refused, as is an `Authorization` of another
/// scheme.
#[cfg_attr(not(feature = "auth"), allow(dead_code))]
pub(crate) fn presented_token<'a>(
    headers: &'a HeaderMap,
    key_headers: &[HeaderName],
) -> Result<&'a str, CallerRefusal> {
    let mut found: Option<&'a str> = None;
    let mut offer = |value: &'a str| -> Result<(), CallerRefusal> {
        let value = value.trim();
        match found {
            Some(seen) if seen != value => Err(CallerRefusal::unauthorized(
                "the request carries several different credentials",
            )),
            _ => {
                found = Some(value);
                Ok(())
            }
        }
    };
    for value in headers.get_all(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or_default();
        let Some((scheme, token)) = value.trim().split_once(' ') else {
            return Err(CallerRefusal::unauthorized(
                "Authorization must be `Bearer <token>`",
            ));
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(CallerRefusal::unauthorized(
                "Authorization must be `Bearer <token>`",
            ));
        }
        offer(token)?;
    }
    for name in key_headers {
        if *name == header::AUTHORIZATION {
            continue;
        }
        for value in headers.get_all(name) {
            offer(value.to_str().unwrap_or_default())?;
        }
    }
    match found {
        Some(token) if !token.is_empty() => Ok(token),
        _ => Err(CallerRefusal::unauthorized(
            "missing credential: send the token the host issued as the API key \
             (Authorization: Bearer <token>)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn tokens_are_found_where_sdks_put_keys() {
        let x_api_key = [HeaderName::from_static("x-api-key")];
        let ok = |h: HeaderMap| presented_token(&h, &x_api_key).map(str::to_owned);
        assert_eq!(
            ok(headers(&[("authorization", "Bearer t1")])),
            Ok("t1".into())
        );
        assert_eq!(
            ok(headers(&[("authorization", "bearer  t1 ")])),
            Ok("t1".into())
        );
        assert_eq!(ok(headers(&[("x-api-key", "t2")])), Ok("t2".into()));
        assert_eq!(
            ok(headers(&[
                ("x-api-key", "t3"),
                ("authorization", "Bearer t3")
            ])),
            Ok("t3".into())
        );
        for bad in [
            headers(&[]),
            headers(&[("authorization", "Basic dTpw")]),
            headers(&[("authorization", "Bearer")]),
            headers(&[("authorization", "Bearer ")]),
            headers(&[("x-api-key", "a"), ("authorization", "Bearer b")]),
            headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
        ] {
            let refusal = presented_token(&bad, &x_api_key).unwrap_err();
            assert_eq!(refusal.status(), StatusCode::UNAUTHORIZED, "{bad:?}");
        }
        // A header the upstream does not take its key in is no credential.
        assert!(presented_token(&headers(&[("x-api-key", "t")]), &[]).is_err());
    }

    #[test]
    fn callers_limit_upstreams() {
        let c = Caller::new("u").only(["a"]);
        assert!(c.may_use("a") && !c.may_use("b"));
        assert!(Caller::new("u").may_use("anything"));
    }
}
