//! The layer and its service.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::builder::{single, Config};
use super::future::ResponseFuture;
use super::CorsBuilder;
use crate::util::text_response;

/// Adds CORS headers to responses and answers preflights itself, safely behind a proxy.
///
/// Build one with [`CorsLayer::builder`]; see the [module docs](super) for what it does.
#[derive(Clone)]
#[must_use]
pub struct CorsLayer {
    config: Arc<Config>,
}

impl CorsLayer {
    /// Starts a configuration that allows nothing.
    pub fn builder() -> CorsBuilder {
        CorsBuilder::default()
    }

    /// Any origin (but `null`), method and request header (but `Authorization`), every response
    /// header exposed, no credentials: `*` everywhere.
    pub fn permissive() -> CorsLayer {
        CorsLayer::from_config(Config::permissive())
    }

    pub(crate) fn from_config(config: Config) -> CorsLayer {
        CorsLayer {
            config: Arc::new(config),
        }
    }

    /// The configuration of a layer just built (not yet cloned).
    pub(crate) fn into_config(self) -> Config {
        Arc::try_unwrap(self.config).unwrap_or_else(|_| unreachable!("fresh layer"))
    }
}

impl std::fmt::Debug for CorsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorsLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Cors<S> {
        Cors {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service made by [`CorsLayer`].
#[derive(Clone)]
pub struct Cors<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Cors<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cors")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Whether a request is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`. Any other `OPTIONS` belongs to the application.
pub(crate) fn is_preflight(parts: &http::request::Parts) -> bool {
    parts.method == Method::OPTIONS
        && parts.headers.contains_key(header::ORIGIN)
        && parts
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Cors<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (parts, body) = req.into_parts();
        if is_preflight(&parts) {
            let mut res = match self.config.preflight(&parts) {
                Ok(headers) => {
                    let mut res = Response::new(ResBody::from(Bytes::new()));
                    *res.status_mut() = StatusCode::NO_CONTENT;
                    *res.headers_mut() = headers;
                    res
                }
                Err(message) => {
                    tracing::debug!(%message, "CORS preflight refused");
                    crate::metrics::refused("cors");
                    text_response(StatusCode::FORBIDDEN, message)
                }
            };
            res.headers_mut()
                .append(header::VARY, self.config.preflight_vary.clone());
            return ResponseFuture::ready(res);
        }
        let allow_origin: Option<HeaderValue> = single(&parts.headers, &header::ORIGIN)
            .and_then(|origin| self.config.allow_origin(origin, &parts));
        let fut = self.inner.call(Request::from_parts(parts, body));
        ResponseFuture::inner(fut, self.config.clone(), allow_origin)
    }
}
