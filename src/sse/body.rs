//! The response body: frame-by-frame relay of an event stream, with optional heartbeats.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::boundary::EventBoundary;

/// The comment frame sent as a heartbeat: a comment line, then a blank line.
const HEARTBEAT: &[u8] = b":\n\n";

/// The UTF-8 byte order mark a stream may start with (and which only counts at the very start).
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How far away "never" is when an interval cannot be added to the clock.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

pin_project! {
    /// Response body of [`SseService`](super::SseService).
    ///
    /// For a `text/event-stream` response, each frame of the upstream body is handed on the moment
    /// it arrives: nothing is buffered, coalesced or split. The size is reported as unknown (so the
    /// server sends the stream chunked instead of recomputing a `Content-Length`). An upstream error
    /// is passed on as an error, never turned into a clean end. With a heartbeat configured, a
    /// comment frame `:\n\n` is sent after each silence of that length, between events only.
    ///
    /// For any other response it is a passthrough: every call goes straight to the inner body.
    ///
    /// Dropping this body drops the inner body at once; for a proxied response that closes (HTTP/1.1)
    /// or resets (HTTP/2) the upstream connection or stream, so the upstream sees the client leave.
    #[derive(Debug)]
    pub struct SseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Passthrough {
            #[pin]
            inner: B,
        },
        EventStream {
            #[pin]
            inner: B,
            heartbeat: Option<Heartbeat>,
            stats: StreamStats,
        },
    }
}

/// A passthrough body of `B` built from bytes, so that layers answering by themselves (CORS
/// preflights, Host refusals, …) can be stacked outside [`SseLayer`](super::SseLayer).
impl<B: From<Bytes>> From<Bytes> for SseBody<B> {
    fn from(bytes: Bytes) -> Self {
        Self::passthrough(B::from(bytes))
    }
}

impl<B> SseBody<B> {
    /// A body that forwards `inner` as it is.
    pub fn passthrough(inner: B) -> Self {
        Self {
            kind: Kind::Passthrough { inner },
        }
    }

    /// A body relaying the event stream `inner`, with a heartbeat after each `heartbeat` of
    /// silence if set. The heartbeat needs a Tokio runtime with its time driver enabled.
    ///
    /// This applies no header rules; [`SseLayer`](super::SseLayer) does both.
    pub fn event_stream(inner: B, heartbeat: Option<Duration>) -> Self {
        Self {
            kind: Kind::EventStream {
                inner,
                heartbeat: heartbeat.map(Heartbeat::new),
                stats: StreamStats::default(),
            },
        }
    }

    /// Whether this body relays an event stream (as opposed to passing another body through).
    pub fn is_event_stream(&self) -> bool {
        matches!(self.kind, Kind::EventStream { .. })
    }
}

impl<B> Body for SseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Passthrough { inner } => inner.poll_frame(cx),
            KindProj::EventStream {
                inner,
                heartbeat,
                stats,
            } => {
                match inner.poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        let frame = match heartbeat {
                            Some(hb) => hb.on_frame(frame),
                            None => frame,
                        };
                        if let Some(data) = frame.data_ref() {
                            stats.bytes += data.len() as u64;
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    Poll::Ready(Some(Err(err))) => {
                        *heartbeat = None;
                        stats.finish("upstream error");
                        return Poll::Ready(Some(Err(err)));
                    }
                    Poll::Ready(None) => {
                        *heartbeat = None;
                        stats.finish("upstream ended");
                        return Poll::Ready(None);
                    }
                    Poll::Pending => {}
                }
                if let Some(hb) = heartbeat {
                    if hb.poll_due(cx).is_ready() {
                        stats.heartbeats += 1;
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(HEARTBEAT)))));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Passthrough { inner } | Kind::EventStream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Passthrough { inner } => inner.size_hint(),
            // An open-ended stream, possibly with heartbeats added: never an exact length, so
            // no server turns it back into a `Content-Length` response.
            Kind::EventStream { inner, .. } if inner.is_end_stream() => SizeHint::with_exact(0),
            Kind::EventStream { .. } => SizeHint::default(),
        }
    }
}

/// Heartbeat timer and the stream position it needs.
#[derive(Debug)]
struct Heartbeat {
    interval: Duration,
    /// Boxed so that `SseBody<B>` stays `Unpin` whenever `B` is.
    sleep: Pin<Box<Sleep>>,
    boundary: EventBoundary,
    /// Whether the upstream has sent any byte yet.
    upstream_started: bool,
    /// Whether a heartbeat went out before the upstream's first byte: then a byte order mark
    /// opening the upstream's stream would no longer be at the start, and is dropped.
    sent_before_start: bool,
}

impl Heartbeat {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            sleep: Box::pin(tokio::time::sleep_until(deadline(interval))),
            boundary: EventBoundary::new(),
            upstream_started: false,
            sent_before_start: false,
        }
    }

    fn reset(&mut self) {
        self.sleep.as_mut().reset(deadline(self.interval));
    }

    /// Notes a frame from the upstream and restarts the silence count.
    fn on_frame(&mut self, frame: Frame<Bytes>) -> Frame<Bytes> {
        match frame.into_data() {
            Ok(mut data) => {
                if data.is_empty() {
                    // Nothing reaches the wire, so nothing to note and no silence broken.
                    return Frame::data(data);
                }
                if !self.upstream_started {
                    self.upstream_started = true;
                    if self.sent_before_start && data.starts_with(BOM) {
                        data.advance(BOM.len());
                    }
                }
                self.boundary.feed(&data);
                self.reset();
                Frame::data(data)
            }
            Err(frame) => {
                self.reset();
                frame
            }
        }
    }

    /// Ready when a heartbeat is to be sent now; the timer is restarted either way.
    fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Each turn moves the deadline one interval ahead of now, so this ends with `Pending`
        // (and the waker registered) unless a heartbeat is due.
        while self.sleep.as_mut().poll(cx).is_ready() {
            self.reset();
            if self.boundary.at_boundary() {
                if !self.upstream_started {
                    self.sent_before_start = true;
                }
                return Poll::Ready(());
            }
            // In the middle of an event: a comment now would end up inside it. Wait another
            // interval (or, sooner, for the upstream's next bytes).
        }
        Poll::Pending
    }
}

fn deadline(interval: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(interval)
        .unwrap_or_else(|| now + FAR_FUTURE)
}

/// What the stream carried, for the debug log when it ends.
#[derive(Debug, Default)]
struct StreamStats {
    bytes: u64,
    heartbeats: u64,
    finished: bool,
}

impl StreamStats {
    fn finish(&mut self, how: &'static str) {
        if !self.finished {
            self.finished = true;
            tracing::debug!(
                bytes = self.bytes,
                heartbeats = self.heartbeats,
                "event stream closed: {how}"
            );
        }
    }
}

impl Drop for StreamStats {
    fn drop(&mut self) {
        // Dropped before the upstream ended: the client went away (or the server shut down).
        self.finish("client went away, upstream body dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use tokio::sync::mpsc;
    use tokio::time::timeout;

    /// A body fed frame by frame from the test.
    struct ChannelBody(mpsc::Receiver<Result<Frame<Bytes>, &'static str>>);

    impl Body for ChannelBody {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            self.0.poll_recv(cx)
        }
    }

    type Tx = mpsc::Sender<Result<Frame<Bytes>, &'static str>>;

    fn stream(heartbeat: Option<Duration>) -> (Tx, SseBody<ChannelBody>) {
        let (tx, rx) = mpsc::channel(8);
        (tx, SseBody::event_stream(ChannelBody(rx), heartbeat))
    }

    async fn send(tx: &Tx, bytes: &'static [u8]) {
        tx.send(Ok(Frame::data(Bytes::from_static(bytes))))
            .await
            .unwrap();
    }

    /// The next data frame, or `None` if nothing came within `wait`.
    async fn next_data(body: &mut SseBody<ChannelBody>, wait: Duration) -> Option<Bytes> {
        match timeout(wait, body.frame()).await {
            Ok(Some(Ok(frame))) => Some(frame.into_data().expect("a data frame")),
            Ok(other) => panic!("unexpected end or error: {:?}", other.map(|r| r.err())),
            Err(_) => None,
        }
    }

    const HB: Duration = Duration::from_millis(40);
    const LONG: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn frames_pass_one_by_one_unchanged() {
        let (tx, mut body) = stream(None);
        assert!(body.is_event_stream());
        send(&tx, b"data: a").await;
        assert_eq!(next_data(&mut body, LONG).await.unwrap(), "data: a");
        send(&tx, b"\n\n").await;
        assert_eq!(next_data(&mut body, LONG).await.unwrap(), "\n\n");
        drop(tx);
        assert!(timeout(LONG, body.frame()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn without_heartbeat_silence_stays_silent() {
        let (_tx, mut body) = stream(None);
        assert!(next_data(&mut body, HB * 4).await.is_none());
    }

    #[tokio::test]
    async fn heartbeat_only_between_events() {
        let (tx, mut body) = stream(Some(HB));
        // Silence from the start: heartbeat.
        assert_eq!(next_data(&mut body, LONG).await.unwrap(), HEARTBEAT);
        // Half an event, then silence: no heartbeat may be spliced in.
        send(&tx, b"data: half").await;
        assert_eq!(next_data(&mut body, LONG).await.unwrap(), "data: half");
        send(&tx, b"\r\n").await;
        assert_eq!(next_data(&mut body, LONG).await.unwrap(), "\r\n");
        assert!(next_data(&mut body, HB * 5).await.is_none());
        // The event completes: heartbeats resume.
        send(&tx, b"\r\n").await;
        assert_eq!(next_data(&mut body, LONG).await.unwrap(), "\r\n");
        assert_eq!(next_data(&mut body, LONG).await.unwrap(), HEARTBEAT);
        assert_eq!(next_data(&mut body, LONG).await.unwrap(), HEARTBEAT);
    }

    /// Polls `body` once without waiting: the frame it has ready now, if any.
    fn ready_now(body: &mut SseBody<ChannelBody>) -> Option<Bytes> {
        let frame = futures_util::FutureExt::now_or_never(body.frame())?;
        Some(
            frame
                .expect("not the end")
                .expect("no error")
                .into_data()
                .expect("data"),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn frames_restart_the_silence_count() {
        let interval = Duration::from_millis(300);
        let (tx, mut body) = stream(Some(interval));
        tokio::time::advance(Duration::from_millis(200)).await;
        send(&tx, b"data: x\n\n").await;
        assert_eq!(ready_now(&mut body).unwrap(), "data: x\n\n");
        // 400 ms since the start, 200 ms since the frame: the silence count started again at
        // the frame, so no heartbeat is due yet (without the restart one would be).
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(ready_now(&mut body), None);
        // A full interval of silence since the frame: now it is.
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(ready_now(&mut body).unwrap(), HEARTBEAT);
    }

    #[tokio::test]
    async fn byte_order_mark_after_an_early_heartbeat_is_dropped() {
        let (tx, mut body) = stream(Some(HB));
        assert_eq!(next_data(&mut body, LONG).await.unwrap(), HEARTBEAT);
        send(&tx, b"\xEF\xBB\xBFdata: a\n\n").await;
        assert_eq!(next_data(&mut body, LONG).await.unwrap(), "data: a\n\n");

        // Without an early heartbeat the mark is still at the start and stays.
        let (tx, mut body) = stream(Some(LONG));
        send(&tx, b"\xEF\xBB\xBFdata: a\n\n").await;
        assert_eq!(
            next_data(&mut body, LONG).await.unwrap(),
            &b"\xEF\xBB\xBFdata: a\n\n"[..]
        );
    }

    #[tokio::test]
    async fn upstream_error_is_passed_on() {
        let (tx, mut body) = stream(Some(HB));
        send(&tx, b"data: a\n\n").await;
        next_data(&mut body, LONG).await.unwrap();
        tx.send(Err("reset")).await.unwrap();
        let err = timeout(LONG, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(err, "reset");
    }

    #[tokio::test]
    async fn event_stream_size_is_unknown_passthrough_size_is_kept() {
        let full = || Full::new(Bytes::from_static(b"data: a\n\n"));
        let sse = SseBody::event_stream(full(), None);
        assert_eq!(sse.size_hint().exact(), None);
        let plain = SseBody::passthrough(full());
        assert!(!plain.is_event_stream());
        assert_eq!(plain.size_hint().exact(), Some(9));
        let collected = plain.collect().await.unwrap().to_bytes();
        assert_eq!(collected, "data: a\n\n");
    }

    #[test]
    fn passthrough_body_is_unpin_like_its_inner_body() {
        fn unpin<T: Unpin>() {}
        unpin::<SseBody<Full<Bytes>>>();
        unpin::<SseBody<hyper::body::Incoming>>();
    }
}
