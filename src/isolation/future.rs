//! The response future of [`Isolation`](super::Isolation).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Response};
use pin_project_lite::pin_project;

use super::layer::Config;

pub(crate) const COOP: HeaderName = HeaderName::from_static("cross-origin-opener-policy");
pub(crate) const COEP: HeaderName = HeaderName::from_static("cross-origin-embedder-policy");
pub(crate) const CORP: HeaderName = HeaderName::from_static("cross-origin-resource-policy");

pin_project! {
    /// Response future of [`Isolation`](super::Isolation).
    pub struct ResponseFuture<F> {
        #[pin]
        fut: F,
        config: Arc<Config>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(fut: F, config: Arc<Config>) -> Self {
        ResponseFuture { fut, config }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.fut.poll(cx))?;
        apply(res.headers_mut(), this.config);
        Poll::Ready(Ok(res))
    }
}

/// Sets each policy the response does not carry yet; one the inner service set is kept.
fn apply(headers: &mut HeaderMap, config: &Config) {
    set_if_absent(headers, COOP, &config.coop);
    set_if_absent(headers, COEP, &config.coep);
    if let Some(corp) = &config.corp {
        set_if_absent(headers, CORP, corp);
    }
}

fn set_if_absent(headers: &mut HeaderMap, name: HeaderName, value: &HeaderValue) {
    if let http::header::Entry::Vacant(e) = headers.entry(name) {
        e.insert(value.clone());
    }
}
