//! The response future: replaces whatever CORS headers the inner service sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{header, HeaderMap, HeaderValue, Response};
use pin_project_lite::pin_project;

use super::builder::{Config, CORS_RESPONSE_HEADERS};
use crate::util::header_has_token;

pin_project! {
    /// Response future of [`Cors`](super::Cors).
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Inner {
            #[pin]
            fut: F,
            config: Arc<Config>,
            allow_origin: Option<HeaderValue>,
        },
        Ready {
            res: Option<Response<B>>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn ready(res: Response<B>) -> Self {
        ResponseFuture {
            kind: Kind::Ready { res: Some(res) },
        }
    }

    pub(crate) fn inner(fut: F, config: Arc<Config>, allow_origin: Option<HeaderValue>) -> Self {
        ResponseFuture {
            kind: Kind::Inner {
                fut,
                config,
                allow_origin,
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Ready { res } => Poll::Ready(Ok(res
                .take()
                .expect("ResponseFuture polled after completion"))),
            KindProj::Inner {
                fut,
                config,
                allow_origin,
            } => {
                let mut res = ready!(fut.poll(cx))?;
                apply_actual(res.headers_mut(), config, allow_origin.take());
                Poll::Ready(Ok(res))
            }
        }
    }
}

/// Sets the CORS headers of an actual (non-preflight) response, whatever its status: the inner
/// service's own CORS headers are removed first, so exactly one `Access-Control-Allow-Origin`
/// reaches the browser, and `Vary: Origin` is added to the inner service's `Vary`.
pub(crate) fn apply_actual(
    headers: &mut HeaderMap,
    config: &Config,
    allow_origin: Option<HeaderValue>,
) {
    for name in CORS_RESPONSE_HEADERS {
        headers.remove(name);
    }
    if let Some(origin) = allow_origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if config.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &config.expose_value {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
    add_vary_origin(headers);
}

/// Appends `Origin` to `Vary` unless it (or `*`) is already there.
pub(crate) fn add_vary_origin(headers: &mut HeaderMap) {
    if !header_has_token(headers, header::VARY, "origin")
        && !header_has_token(headers, header::VARY, "*")
    {
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cors::{AllowOrigin, CorsLayer, ExposeHeaders};

    fn config() -> Config {
        CorsLayer::builder()
            .allow_origin(AllowOrigin::list(["https://app.example"]))
            .allow_credentials(true)
            .expose_headers([header::ETAG])
            .build()
            .unwrap()
            .into_config()
    }

    #[test]
    fn upstream_cors_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.append(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.append(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("https://other.example"),
        );
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-secret"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("false"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("999"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        apply_actual(
            &mut h,
            &config(),
            Some(HeaderValue::from_static("https://app.example")),
        );
        let acao: Vec<_> = h
            .get_all(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .iter()
            .collect();
        assert_eq!(acao, ["https://app.example"]);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[header::ACCESS_CONTROL_EXPOSE_HEADERS], "etag");
        assert!(h.get(header::ACCESS_CONTROL_MAX_AGE).is_none());
        let vary: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "origin"]);
    }

    #[test]
    fn disallowed_origin_gets_no_cors_headers_even_from_upstream() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::HeaderName::from_static("access-control-allow-private-network"),
            HeaderValue::from_static("true"),
        );
        apply_actual(&mut h, &config(), None);
        assert!(h.keys().all(|k| !k.as_str().starts_with("access-control-")));
        assert_eq!(h[header::VARY], "origin");
    }

    #[test]
    fn vary_is_not_duplicated() {
        for existing in ["Origin", "accept-encoding, ORIGIN", "*"] {
            let mut h = HeaderMap::new();
            h.insert(header::VARY, HeaderValue::from_static(existing));
            apply_actual(&mut h, &config(), None);
            assert_eq!(h.get_all(header::VARY).iter().count(), 1, "{existing}");
        }
    }

    #[test]
    fn expose_any_without_credentials() {
        let c = CorsLayer::builder()
            .allow_origin(AllowOrigin::any())
            .expose_headers(ExposeHeaders::any())
            .build()
            .unwrap()
            .into_config();
        let mut h = HeaderMap::new();
        apply_actual(&mut h, &c, Some(HeaderValue::from_static("*")));
        assert_eq!(h[header::ACCESS_CONTROL_EXPOSE_HEADERS], "*");
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
    }
}
