//! The layer, its builder and the service it produces.

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::{ResponseFuture, SseBody, SseConfigError};

/// Makes `text/event-stream` responses safe to relay: no buffering, no compression, no caching,
/// optional heartbeat comments. Other responses pass through untouched.
///
/// See the [module docs](crate::sse) for the rules and for how to stack it with compression.
///
/// The configuration is a single `Copy` value, so cloning the layer or its services costs
/// nothing and needs no shared allocation.
///
/// ```
/// use std::time::Duration;
/// use sandbox_gateway::sse::SseLayer;
///
/// // Header rules and unbuffered forwarding only.
/// let plain = SseLayer::new();
/// assert_eq!(plain.heartbeat_interval(), None);
///
/// // Also a `:` comment after 15 s of silence, so idle-timeout intermediaries keep the stream.
/// let with_heartbeat = SseLayer::builder()
///     .heartbeat(Duration::from_secs(15))
///     .build()?;
/// assert_eq!(with_heartbeat.heartbeat_interval(), Some(Duration::from_secs(15)));
/// # Ok::<_, sandbox_gateway::sse::SseConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SseLayer {
    heartbeat: Option<Duration>,
}

impl SseLayer {
    /// A layer without heartbeat: header rules and unbuffered forwarding only.
    pub const fn new() -> Self {
        Self { heartbeat: None }
    }

    /// A builder, to configure a heartbeat.
    pub const fn builder() -> SseLayerBuilder {
        SseLayerBuilder { heartbeat: None }
    }

    /// How long the stream may stay silent before a heartbeat comment is sent, if at all.
    pub const fn heartbeat_interval(&self) -> Option<Duration> {
        self.heartbeat
    }
}

impl<S> Layer<S> for SseLayer {
    type Service = SseService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SseService {
            inner,
            heartbeat: self.heartbeat,
        }
    }
}

/// Builds an [`SseLayer`]; made by [`SseLayer::builder`].
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct SseLayerBuilder {
    heartbeat: Option<Duration>,
}

impl SseLayerBuilder {
    /// Sends a comment frame `:\n\n` whenever the upstream has been silent for `every`.
    ///
    /// The silence is counted from the response head and from each frame the upstream sends;
    /// a heartbeat goes out only between two events, never inside an event whose bytes arrived
    /// in part. Off by default. Needs a Tokio runtime with its time driver enabled.
    ///
    /// Heartbeats are skipped on responses the upstream compressed (a `Content-Encoding` other
    /// than `identity`), as plain-text bytes cannot be added to a compressed stream.
    pub fn heartbeat(self, every: Duration) -> Self {
        Self {
            heartbeat: Some(every),
        }
    }

    /// Checks the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// [`SseConfigError::ZeroHeartbeat`] if the heartbeat interval is zero.
    pub fn build(self) -> Result<SseLayer, SseConfigError> {
        if self.heartbeat == Some(Duration::ZERO) {
            return Err(SseConfigError::ZeroHeartbeat);
        }
        Ok(SseLayer {
            heartbeat: self.heartbeat,
        })
    }
}

/// The service made by [`SseLayer`]: wraps every response body in an [`SseBody`], which streams
/// event-stream responses frame by frame and passes others through.
#[derive(Debug, Clone, Copy)]
pub struct SseService<S> {
    inner: S,
    heartbeat: Option<Duration>,
}

impl<S> SseService<S> {
    /// Wraps `inner` with the settings of `layer`.
    pub fn new(inner: S, layer: SseLayer) -> Self {
        layer.layer(inner)
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SseService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes>,
{
    type Response = Response<SseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The request, `Last-Event-ID` included, goes to the upstream untouched.
        ResponseFuture::new(self.inner.call(req), self.heartbeat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_heartbeat_is_refused() {
        assert_eq!(
            SseLayer::builder()
                .heartbeat(Duration::ZERO)
                .build()
                .unwrap_err(),
            SseConfigError::ZeroHeartbeat
        );
    }

    #[test]
    fn heartbeat_is_off_by_default() {
        assert_eq!(SseLayer::new().heartbeat_interval(), None);
        assert_eq!(SseLayer::default().heartbeat_interval(), None);
        assert_eq!(
            SseLayer::builder().build().unwrap().heartbeat_interval(),
            None
        );
    }

    use http::{header, HeaderValue, StatusCode};
    use http_body::Body;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use tower::ServiceExt;

    fn upstream(
        headers: &'static [(&'static str, &'static str)],
        body: &'static [u8],
    ) -> impl Service<
        Request<()>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send,
    > + Clone {
        tower::service_fn(move |req: Request<()>| async move {
            let mut res = Response::new(Full::new(Bytes::from_static(body)));
            for (n, v) in headers {
                res.headers_mut().append(*n, HeaderValue::from_static(v));
            }
            // Echo what the layer let through of the request.
            if let Some(id) = req.headers().get("last-event-id") {
                res.headers_mut().insert("x-seen-last-event-id", id.clone());
            }
            Ok::<_, Infallible>(res)
        })
    }

    #[tokio::test]
    async fn event_stream_response_gets_the_rules() {
        let svc = SseLayer::new().layer(upstream(
            &[
                ("content-type", "Text/Event-Stream"),
                ("content-length", "9"),
                ("cache-control", "max-age=10"),
            ],
            b"data: a\n\n",
        ));
        let req = Request::builder()
            .header("last-event-id", "41")
            .body(())
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/event-stream");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache, no-transform");
        assert_eq!(h["x-accel-buffering"], "no");
        assert!(!h.contains_key(header::CONTENT_LENGTH));
        assert!(!h.contains_key(header::CONTENT_ENCODING));
        assert_eq!(h["x-seen-last-event-id"], "41");
        assert!(res.body().is_event_stream());
        assert_eq!(res.body().size_hint().exact(), None);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "data: a\n\n");
    }

    #[tokio::test]
    async fn other_responses_pass_through_unchanged() {
        let svc = SseLayer::builder()
            .heartbeat(Duration::from_millis(1))
            .build()
            .unwrap()
            .layer(upstream(
                &[
                    ("content-type", "text/plain"),
                    ("content-length", "5"),
                    ("cache-control", "max-age=10"),
                ],
                b"hello",
            ));
        let res = svc.oneshot(Request::new(())).await.unwrap();
        let h = res.headers();
        assert_eq!(h.len(), 3);
        assert_eq!(h[header::CONTENT_LENGTH], "5");
        assert_eq!(h[header::CACHE_CONTROL], "max-age=10");
        assert!(!res.body().is_event_stream());
        assert_eq!(res.body().size_hint().exact(), Some(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello");
    }

    #[tokio::test]
    async fn compressed_upstream_stream_gets_no_heartbeat() {
        // Bytes that are not an event stream in clear: a heartbeat spliced in would corrupt them.
        let svc = SseLayer::builder()
            .heartbeat(Duration::from_millis(10))
            .build()
            .unwrap()
            .layer(tower::service_fn(|_req: Request<()>| async {
                let (tx, rx) =
                    tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Infallible>>(1);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = tx
                        .send(Ok(http_body::Frame::data(Bytes::from_static(b"\x1f\x8b"))))
                        .await;
                });
                let body = http_body_util::StreamBody::new(futures_util::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
                ));
                let mut res = Response::new(body);
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
                res.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                Ok::<_, Infallible>(res)
            }));
        let res = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(res.headers()[header::CONTENT_ENCODING], "gzip");
        let body = tokio::time::timeout(Duration::from_secs(5), res.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        assert_eq!(body, &b"\x1f\x8b"[..]);
    }
}
