//! The response future of [`SseService`](super::SseService).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use pin_project_lite::pin_project;

use super::{headers, SseBody};

pin_project! {
    /// Response future of [`SseService`](super::SseService): applies the event-stream header
    /// rules once the inner service answered, and wraps the body.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        heartbeat: Option<Duration>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, heartbeat: Option<Duration>) -> Self {
        Self { inner, heartbeat }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body<Data = Bytes>,
{
    type Output = Result<Response<SseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx))?;
        if !headers::is_event_stream(res.headers()) {
            return Poll::Ready(Ok(res.map(SseBody::passthrough)));
        }
        let (mut parts, body) = res.into_parts();
        let identity = headers::apply(&mut parts.headers);
        let heartbeat = if identity { *this.heartbeat } else { None };
        tracing::debug!(
            status = parts.status.as_u16(),
            heartbeat = ?heartbeat,
            upstream_encoded = !identity,
            "event stream started"
        );
        Poll::Ready(Ok(Response::from_parts(
            parts,
            SseBody::event_stream(body, heartbeat),
        )))
    }
}
