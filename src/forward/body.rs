//! Bodies: the request body under its size limit, and the response body handed back.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::quota::Permit;
use crate::proxy::ProxyBody;
use crate::sse::SseBody;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The request body went over the limit.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub(crate) struct TooLarge(pub(crate) u64);

pin_project! {
    /// The browser's request body, counted as it streams to the upstream: past `limit` bytes it
    /// ends in an error (so the upstream sees a broken request, never a truncated one) and raises
    /// the `exceeded` flag the forwarder answers 413 from.
    pub(crate) struct Capped<B> {
        #[pin]
        inner: B,
        remaining: u64,
        limit: u64,
        exceeded: Arc<AtomicBool>,
    }
}

impl<B> Capped<B> {
    pub(crate) fn new(inner: B, limit: u64, exceeded: Arc<AtomicBool>) -> Self {
        Capped {
            inner,
            remaining: limit,
            limit,
            exceeded,
        }
    }
}

impl<B> Body for Capped<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.remaining() as u64;
                    if len > *this.remaining {
                        this.exceeded.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(Box::new(TooLarge(*this.limit)))));
                    }
                    *this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// The upstream's response body with the caller's stream permit: the stream counts against
    /// the caller's quota until the body ends, fails or is dropped.
    #[derive(Debug)]
    pub(crate) struct Held {
        #[pin]
        inner: ProxyBody,
        permit: Option<Permit>,
    }
}

impl Held {
    pub(crate) fn new(inner: ProxyBody, permit: Option<Permit>) -> Self {
        Held { inner, permit }
    }
}

impl From<Bytes> for Held {
    fn from(b: Bytes) -> Self {
        Held::new(ProxyBody::from(b), None)
    }
}

impl Body for Held {
    type Data = Bytes;
    type Error = <ProxyBody as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.permit.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// The response body of [`ApiForward`](super::ApiForward): the upstream's body streamed frame
    /// by frame (event streams under the [`sse`](crate::sse) rules), or a short message the
    /// forwarder wrote itself.
    #[derive(Debug)]
    pub struct ForwardBody {
        #[pin]
        inner: SseBody<Held>,
    }
}

impl ForwardBody {
    pub(crate) fn new(inner: SseBody<Held>) -> Self {
        ForwardBody { inner }
    }

    /// Whether this is an event stream relayed under the SSE rules.
    pub fn is_event_stream(&self) -> bool {
        self.inner.is_event_stream()
    }
}

impl From<Bytes> for ForwardBody {
    fn from(b: Bytes) -> Self {
        ForwardBody::new(SseBody::from(b))
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
