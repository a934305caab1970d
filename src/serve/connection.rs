//! One accepted connection: TLS, hyper-util's HTTP/1.1 + HTTP/2 server with upgrades, the
//! client's address on every request, the idle timer and the shutdown signal.

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tower_service::Service;

use super::clients::Slot;
use super::server::Config;
use crate::rewrite::{ClientAddr, ClientTls};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Where the server is in its life; sent to every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Running,
    /// Finish what is in flight, take no new request.
    Draining,
    /// Drop the connection now.
    Closed,
}

/// Serves one accepted connection to its end. `_held` are its places under the caps.
pub(super) async fn serve<S, B>(
    config: Arc<Config>,
    stream: TcpStream,
    peer: SocketAddr,
    service: S,
    _held: (OwnedSemaphorePermit, Slot),
    phase: watch::Receiver<Phase>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let _open = crate::metrics::Open::new(crate::metrics::CONNECTIONS);
    #[cfg(feature = "tls")]
    if let Some(tls) = &config.tls {
        let mut phase = phase;
        let handshake = tokio::time::timeout(config.header_read_timeout, tls.accept(stream));
        let stream = tokio::select! {
            r = handshake => match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            },
            _ = phase.wait_for(|p| *p != Phase::Running) => return,
        };
        return drive(&config, stream, peer, true, service, phase).await;
    }
    drive(&config, stream, peer, false, service, phase).await
}

async fn drive<I, S, B>(
    config: &Config,
    io: I,
    peer: SocketAddr,
    tls: bool,
    service: S,
    mut phase: watch::Receiver<Phase>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let activity = Arc::new(Activity::new());
    let service = TowerToHyperService::new(WithClient {
        inner: service,
        addr: ClientAddr(peer),
        tls,
        activity: activity.clone(),
    });
    let conn = config
        .http
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        if !draining && *phase.borrow_and_update() == Phase::Draining {
            conn.as_mut().graceful_shutdown();
            draining = true;
        }
        if *phase.borrow() == Phase::Closed {
            return;
        }
        let idle_check = config
            .idle_timeout
            .filter(|_| !draining)
            .map(|limit| activity.idle_deadline(limit));
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = sleep_until(idle_check), if idle_check.is_some() => {
                let limit = config.idle_timeout.unwrap_or_default();
                if activity.idle_deadline(limit) <= Instant::now() {
                    tracing::debug!(%peer, "idle timeout: closing the connection");
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Requests in flight on one connection and when the last one ended.
struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    last_end_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
        }
    }

    /// When the connection will have been idle for `limit`; while a request is in flight, a
    /// time to look again.
    fn idle_deadline(&self, limit: Duration) -> Instant {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Instant::now() + limit;
        }
        self.epoch + Duration::from_millis(self.last_end_ms.load(Ordering::Acquire)) + limit
    }
}

/// A request in flight, from its head until its response body is done or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_end_ms
            .store(a.epoch.elapsed().as_millis() as u64, Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The served service, with the client's address (and TLS) put on each request and each
/// response tracked while in flight.
#[derive(Clone)]
struct WithClient<S> {
    inner: S,
    addr: ClientAddr,
    tls: bool,
    activity: Arc<Activity>,
}

impl<S, B> Service<Request<Incoming>> for WithClient<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = Response<Tracked<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.addr);
        if self.tls {
            req.extensions_mut().insert(ClientTls);
        }
        TrackedFuture {
            in_flight: Some(InFlight::start(self.activity.clone())),
            fut: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// The service's future, its request counted in flight.
    struct TrackedFuture<F> {
        #[pin]
        fut: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Tracked<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = std::task::ready!(this.fut.poll(cx));
        let in_flight = this.in_flight.take();
        Poll::Ready(res.map(|r| r.map(|body| Tracked { body, in_flight })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it ends or is dropped.
    struct Tracked<B> {
        #[pin]
        body: B,
        in_flight: Option<InFlight>,
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.in_flight.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
