use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::pool::Lent;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The response body of the [`ReverseProxy`](super::ReverseProxy): the upstream's body streamed
/// frame by frame (data and trailers), or a short message the proxy wrote itself.
///
/// An upstream that breaks off mid-body makes this body end in an error, which hyper turns into an
/// aborted response (a reset stream, or a connection closed before the final chunk): the client never
/// sees a clean but truncated success.
pub struct ProxyBody {
    kind: Kind,
    meter: Option<Box<Meter>>,
    /// The upstream connection, given back for reuse when the body has been read to its end.
    lent: Option<Lent>,
}

enum Kind {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// An empty body.
    pub fn empty() -> Self {
        ProxyBody {
            kind: Kind::Full(None),
            meter: None,
            lent: None,
        }
    }

    pub(crate) fn upstream(body: Incoming, meter: Option<Box<Meter>>) -> Self {
        ProxyBody {
            kind: Kind::Upstream(body),
            meter,
            lent: None,
        }
    }

    pub(crate) fn set_lent(&mut self, lent: Option<Lent>) {
        self.lent = lent;
    }

    pub(crate) fn set_meter(&mut self, meter: Option<Box<Meter>>) {
        self.meter = meter;
    }
}

impl Default for ProxyBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for ProxyBody {
    fn from(b: Bytes) -> Self {
        ProxyBody {
            kind: Kind::Full((!b.is_empty()).then_some(b)),
            meter: None,
            lent: None,
        }
    }
}

impl From<String> for ProxyBody {
    fn from(s: String) -> Self {
        Bytes::from(s).into()
    }
}

impl From<&'static str> for ProxyBody {
    fn from(s: &'static str) -> Self {
        Bytes::from_static(s.as_bytes()).into()
    }
}

impl fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Upstream(_) => f.write_str("ProxyBody::Upstream"),
            Kind::Full(b) => f
                .debug_tuple("ProxyBody::Full")
                .field(&b.as_ref().map_or(0, Bytes::len))
                .finish(),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        crate::metrics::body_bytes(false, d.len());
                        if let Some(m) = this.meter.as_mut() {
                            m.bytes_down += d.len() as u64;
                        }
                    }
                    // A body of known length ends with its last frame: hyper stops polling then.
                    if body.is_end_stream() {
                        if let Some(lent) = this.lent.take() {
                            lent.give_back();
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    this.lent = None;
                    if let Some(m) = this.meter.as_mut() {
                        m.outcome = "upstream aborted";
                    }
                    tracing::debug!(error = %e, "upstream body broke off; aborting the response");
                    Poll::Ready(Some(Err(Box::new(e))))
                }
                Poll::Ready(None) => {
                    if let Some(lent) = this.lent.take() {
                        lent.give_back();
                    }
                    if let Some(m) = this.meter.as_mut() {
                        m.outcome = "complete";
                    }
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(body) => body.size_hint(),
        }
    }
}

/// Per-request accounting, only allocated when a tracing subscriber wants the span. Emits one event
/// when the response body is finished or dropped (the client went away).
pub(crate) struct Meter {
    pub(crate) span: tracing::Span,
    pub(crate) start: Instant,
    pub(crate) status: u16,
    /// The request body's progress, when it had a body to send.
    pub(crate) progress: Option<Arc<Progress>>,
    pub(crate) bytes_down: u64,
    pub(crate) outcome: &'static str,
}

impl Drop for Meter {
    fn drop(&mut self) {
        let outcome = if self.outcome.is_empty() {
            "client went away"
        } else {
            self.outcome
        };
        tracing::info!(
            parent: &self.span,
            status = self.status,
            bytes_up = self
                .progress
                .as_ref()
                .map_or(0, |p| p.bytes.load(Ordering::Relaxed)),
            bytes_down = self.bytes_down,
            duration_ms = self.start.elapsed().as_millis() as u64,
            outcome,
            "proxied"
        );
    }
}

/// The request body as sent upstream: the caller's body type, boxed once so one pooled client
/// serves every body type, counting bytes and marking progress for the response-head timeout. A body
/// that is already at its end (most `GET`s) is neither boxed nor tracked.
pub(crate) struct RequestBody {
    inner: Option<UnsyncBoxBody<Bytes, BoxError>>,
    progress: Option<Arc<Progress>>,
}

/// Shared between the request body and the proxy future: bytes sent, and when the last frame went.
pub(crate) struct Progress {
    pub(crate) bytes: AtomicU64,
    pub(crate) epoch: Instant,
    pub(crate) last_frame_ms: AtomicU64,
    /// Whether the body has been sent to its end.
    pub(crate) done: AtomicBool,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Progress {
            bytes: AtomicU64::new(0),
            epoch: Instant::now(),
            last_frame_ms: AtomicU64::new(0),
            done: AtomicBool::new(false),
        }
    }

    /// When the request body last made progress.
    pub(crate) fn last_activity(&self) -> Instant {
        self.epoch + std::time::Duration::from_millis(self.last_frame_ms.load(Ordering::Relaxed))
    }
}

impl RequestBody {
    /// A body with no frames.
    pub(crate) fn empty() -> Self {
        RequestBody {
            inner: None,
            progress: None,
        }
    }

    /// Wraps `body`; `track` asks for a [`Progress`] (returned too) when the body has frames to
    /// send.
    pub(crate) fn new<B>(body: B, track: bool) -> (Self, Option<Arc<Progress>>)
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if body.is_end_stream() {
            let empty = RequestBody {
                inner: None,
                progress: None,
            };
            return (empty, None);
        }
        let progress = track.then(|| Arc::new(Progress::new()));
        let body = RequestBody {
            inner: Some(body.map_err(Into::into).boxed_unsync()),
            progress: progress.clone(),
        };
        (body, progress)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(d) = frame.data_ref() {
                crate::metrics::body_bytes(true, d.len());
            }
        }
        if let Some(p) = &this.progress {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        p.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                    p.last_frame_ms
                        .store(p.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                    if inner.is_end_stream() {
                        p.done.store(true, Ordering::Relaxed);
                    }
                }
                Poll::Ready(None) => p.done.store(true, Ordering::Relaxed),
                _ => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
