//! The layer, its policy enums and its service.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::future::ResponseFuture;
use super::secure::secure;

/// The `Cross-Origin-Embedder-Policy` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Coep {
    /// `credentialless`: cross-origin no-cors subresources load without cookies (Chromium,
    /// Firefox); a WebContainer then boots with `coep: 'credentialless'`. The default.
    #[default]
    Credentialless,
    /// `require-corp`: every cross-origin subresource needs CORS or
    /// `Cross-Origin-Resource-Policy`. Works in every browser with cross-origin isolation.
    RequireCorp,
}

impl Coep {
    fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Coep::Credentialless => "credentialless",
            Coep::RequireCorp => "require-corp",
        })
    }
}

/// The `Cross-Origin-Resource-Policy` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Corp {
    /// `same-origin`.
    SameOrigin,
    /// `same-site`.
    SameSite,
    /// `cross-origin`: any isolated page may embed the resource, e.g. assets a WebContainer
    /// iframe on another origin loads.
    CrossOrigin,
}

impl Corp {
    fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Corp::SameOrigin => "same-origin",
            Corp::SameSite => "same-site",
            Corp::CrossOrigin => "cross-origin",
        })
    }
}

pub(crate) struct Config {
    pub(crate) coop: HeaderValue,
    pub(crate) coep: HeaderValue,
    pub(crate) corp: Option<HeaderValue>,
    trust_forwarded_proto: bool,
    warn_insecure: bool,
    warned: AtomicBool,
}

/// Sets `Cross-Origin-Opener-Policy: same-origin`, `Cross-Origin-Embedder-Policy` and optionally
/// `Cross-Origin-Resource-Policy` on every response. See the [module docs](super).
#[derive(Clone)]
#[must_use]
pub struct IsolationLayer {
    coep: Coep,
    corp: Option<Corp>,
    trust_forwarded_proto: bool,
    warn_insecure: bool,
    config: Arc<Config>,
}

impl Default for IsolationLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl IsolationLayer {
    /// COOP `same-origin`, COEP `credentialless`, no CORP; warns once about insecure contexts.
    pub fn new() -> Self {
        Self::with(Coep::Credentialless, None, false, true)
    }

    fn with(coep: Coep, corp: Option<Corp>, trust_forwarded_proto: bool, warn: bool) -> Self {
        IsolationLayer {
            coep,
            corp,
            trust_forwarded_proto,
            warn_insecure: warn,
            config: Arc::new(Config {
                coop: HeaderValue::from_static("same-origin"),
                coep: coep.value(),
                corp: corp.map(Corp::value),
                trust_forwarded_proto,
                warn_insecure: warn,
                warned: AtomicBool::new(false),
            }),
        }
    }

    /// The embedder policy.
    pub fn coep(self, coep: Coep) -> Self {
        Self::with(
            coep,
            self.corp,
            self.trust_forwarded_proto,
            self.warn_insecure,
        )
    }

    /// Also sets `Cross-Origin-Resource-Policy`.
    pub fn corp(self, corp: Corp) -> Self {
        Self::with(
            self.coep,
            Some(corp),
            self.trust_forwarded_proto,
            self.warn_insecure,
        )
    }

    /// Believe `X-Forwarded-Proto` / `Forwarded: proto=` when judging whether a request came over
    /// HTTPS (for the warning and [`is_secure_context`](Self::is_secure_context)). Only behind a
    /// proxy that sets them. Off by default.
    pub fn trust_forwarded_proto(self, yes: bool) -> Self {
        Self::with(self.coep, self.corp, yes, self.warn_insecure)
    }

    /// Logs one `tracing` warning, the first time a request reaches the layer outside a secure
    /// context (plain HTTP to a non-loopback host): `crossOriginIsolated` will then be `false` in
    /// the browser whatever the headers say — the preview that works on `localhost` and not once
    /// deployed. On by default; an HTTP/1.1 server terminating TLS itself cannot tell, so turn it
    /// off there.
    pub fn warn_insecure_context(self, yes: bool) -> Self {
        Self::with(self.coep, self.corp, self.trust_forwarded_proto, yes)
    }

    /// Whether a request came from a secure context, honouring
    /// [`trust_forwarded_proto`](Self::trust_forwarded_proto).
    pub fn is_secure_context(&self, parts: &http::request::Parts) -> bool {
        secure(&parts.uri, &parts.headers, self.trust_forwarded_proto)
    }
}

impl std::fmt::Debug for IsolationLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsolationLayer")
            .field("coep", &self.coep)
            .field("corp", &self.corp)
            .field("trust_forwarded_proto", &self.trust_forwarded_proto)
            .field("warn_insecure", &self.warn_insecure)
            .finish()
    }
}

impl<S> Layer<S> for IsolationLayer {
    type Service = Isolation<S>;

    fn layer(&self, inner: S) -> Isolation<S> {
        Isolation {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service made by [`IsolationLayer`].
#[derive(Clone)]
pub struct Isolation<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Isolation<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Isolation")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Isolation<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let c = &self.config;
        if c.warn_insecure
            && !c.warned.load(Ordering::Relaxed)
            && !secure(req.uri(), req.headers(), c.trust_forwarded_proto)
            && !c.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "cross-origin isolation headers are being served to a request that is not in a \
                 secure context (plain HTTP to a host other than localhost): browsers will report \
                 crossOriginIsolated = false whatever the headers say; serve it over HTTPS, or, \
                 behind a TLS-terminating proxy, enable trust_forwarded_proto"
            );
        }
        ResponseFuture::new(self.inner.call(req), self.config.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    /// The headers `layer` puts on a response whose own headers are `own`.
    async fn headers_of(
        layer: IsolationLayer,
        own: &[(&'static str, &'static str)],
    ) -> http::HeaderMap {
        let own: Vec<_> = own.to_vec();
        let inner = tower::service_fn(move |_req: Request<()>| {
            let own = own.clone();
            async move {
                let mut res = Response::new(());
                for (name, value) in own {
                    res.headers_mut()
                        .append(name, HeaderValue::from_static(value));
                }
                Ok::<_, Infallible>(res)
            }
        });
        let res = layer
            .warn_insecure_context(false)
            .layer(inner)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        res.headers().clone()
    }

    fn only<'a>(h: &'a http::HeaderMap, name: &str) -> Vec<&'a str> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn each_corp_value_is_sent_as_spelled() {
        for (corp, spelled) in [
            (Corp::SameOrigin, "same-origin"),
            (Corp::SameSite, "same-site"),
            (Corp::CrossOrigin, "cross-origin"),
        ] {
            let h = headers_of(IsolationLayer::new().corp(corp), &[]).await;
            assert_eq!(
                only(&h, "cross-origin-resource-policy"),
                [spelled],
                "{corp:?}"
            );
            assert_eq!(only(&h, "cross-origin-opener-policy"), ["same-origin"]);
            assert_eq!(only(&h, "cross-origin-embedder-policy"), ["credentialless"]);
        }
    }

    #[tokio::test]
    async fn defaults_set_coop_and_coep_and_no_corp() {
        let h = headers_of(IsolationLayer::new(), &[]).await;
        assert_eq!(only(&h, "cross-origin-opener-policy"), ["same-origin"]);
        assert_eq!(only(&h, "cross-origin-embedder-policy"), ["credentialless"]);
        assert!(h.get("cross-origin-resource-policy").is_none());
        let h = headers_of(IsolationLayer::new().coep(Coep::RequireCorp), &[]).await;
        assert_eq!(only(&h, "cross-origin-embedder-policy"), ["require-corp"]);
    }

    #[tokio::test]
    async fn a_policy_the_response_sets_itself_is_kept_not_doubled() {
        let layer = IsolationLayer::new()
            .coep(Coep::RequireCorp)
            .corp(Corp::SameOrigin);
        let h = headers_of(
            layer,
            &[
                ("cross-origin-opener-policy", "same-origin-allow-popups"),
                ("cross-origin-embedder-policy", "unsafe-none"),
                ("cross-origin-resource-policy", "same-site"),
            ],
        )
        .await;
        assert_eq!(
            only(&h, "cross-origin-opener-policy"),
            ["same-origin-allow-popups"]
        );
        assert_eq!(only(&h, "cross-origin-embedder-policy"), ["unsafe-none"]);
        assert_eq!(only(&h, "cross-origin-resource-policy"), ["same-site"]);
    }

    #[test]
    fn builder_steps_keep_the_other_settings() {
        let layer = IsolationLayer::new()
            .corp(Corp::SameSite)
            .trust_forwarded_proto(true)
            .coep(Coep::RequireCorp)
            .warn_insecure_context(false);
        assert_eq!(layer.corp, Some(Corp::SameSite));
        assert_eq!(layer.coep, Coep::RequireCorp);
        assert!(layer.trust_forwarded_proto);
        assert!(!layer.warn_insecure);
        assert_eq!(layer.config.corp.as_ref().unwrap(), "same-site");
        assert_eq!(layer.config.coep, "require-corp");
        assert!(layer.config.trust_forwarded_proto && !layer.config.warn_insecure);
    }

    #[test]
    fn secure_context_honours_forwarded_proto_only_when_trusted() {
        let (parts, ()) = Request::get("http://preview.example.com/")
            .header("x-forwarded-proto", "https")
            .body(())
            .unwrap()
            .into_parts();
        assert!(!IsolationLayer::new().is_secure_context(&parts));
        assert!(IsolationLayer::new()
            .trust_forwarded_proto(true)
            .is_secure_context(&parts));
        let (local, ()) = Request::get("http://localhost:5173/")
            .body(())
            .unwrap()
            .into_parts();
        assert!(IsolationLayer::new().is_secure_context(&local));
    }
}
