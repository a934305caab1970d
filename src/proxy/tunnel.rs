//! The byte splice after a `101 Switching Protocols`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// Whether a tunnel may live on, asked on each announced change.
type ValidCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// When one tunnel must end, whatever its traffic: put into the request's extensions before the
/// [`ReverseProxy`](super::ReverseProxy) sees an upgrade request, and the tunnel it splices is
/// closed (both connections dropped) at the deadline, or as soon as a change is announced after
/// which the validity check says no.
///
/// [`TunnelAuth`](crate::auth::TunnelAuth) inserts one for every upgrade it admits: the session's
/// expiry as the deadline, its revocation store's change signal and a revocation check, so a
/// WebSocket ends with its session.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use sandbox_gateway::proxy::TunnelLifetime;
///
/// let (tx, rx) = tokio::sync::watch::channel(0u64);
/// let lifetime = TunnelLifetime::until(SystemTime::now() + Duration::from_secs(3600))
///     .while_valid(rx, || true);
/// # let _ = (lifetime, tx);
/// ```
#[derive(Clone)]
pub struct TunnelLifetime {
    until: Option<SystemTime>,
    recheck: Vec<(watch::Receiver<u64>, ValidCheck)>,
}

impl std::fmt::Debug for TunnelLifetime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelLifetime")
            .field("until", &self.until)
            .field("rechecks", &self.recheck.len())
            .finish()
    }
}

impl TunnelLifetime {
    /// A tunnel that ends at `deadline` (wall-clock time, as token expiries are).
    pub fn until(deadline: SystemTime) -> Self {
        TunnelLifetime {
            until: Some(deadline),
            recheck: Vec::new(),
        }
    }

    /// A tunnel with no deadline (only [`while_valid`](Self::while_valid) ends it).
    pub fn unbounded() -> Self {
        TunnelLifetime {
            until: None,
            recheck: Vec::new(),
        }
    }

    /// Also ends the tunnel when `valid` returns `false`, asked each time `changes` announces a
    /// change (and once when the tunnel starts). A closed `changes` channel asks no more. Call
    /// once per source of changes (a revocation store, a key ring).
    pub fn while_valid(
        mut self,
        changes: watch::Receiver<u64>,
        valid: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        self.recheck.push((changes, Arc::new(valid)));
        self
    }

    /// Resolves with the reason once the tunnel must end; pending while it may live.
    pub(crate) async fn ended(self) -> &'static str {
        let deadline = async {
            match self.until {
                Some(t) => {
                    // Sleep in steps: the wall clock may move while we wait.
                    loop {
                        let left = t
                            .duration_since(SystemTime::now())
                            .unwrap_or(Duration::ZERO);
                        if left.is_zero() {
                            return;
                        }
                        tokio::time::sleep(left.min(Duration::from_secs(60))).await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        let watches = self.recheck.into_iter().map(|(mut changes, valid)| {
            Box::pin(async move {
                changes.borrow_and_update();
                if !valid() {
                    return;
                }
                while changes.changed().await.is_ok() {
                    if !valid() {
                        return;
                    }
                }
                std::future::pending::<()>().await
            })
        });
        let watches: Vec<_> = watches.collect();
        let revoked = async move {
            if watches.is_empty() {
                std::future::pending::<()>().await;
            }
            futures_util::future::select_all(watches).await;
        };
        tokio::select! {
            _ = deadline => "session expired",
            _ = revoked => "session revoked",
        }
    }
}

/// Live tunnels of one proxy: counts (in total and per client), caps and a shutdown signal.
#[derive(Debug)]
pub(crate) struct Tunnels {
    open: AtomicUsize,
    max: usize,
    max_per_client: usize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    shutdown: watch::Sender<bool>,
}

/// Which cap an upgrade ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Over {
    Total(usize),
    PerClient(usize),
}

impl Tunnels {
    pub(crate) fn new(max: usize, max_per_client: usize) -> Self {
        Tunnels {
            open: AtomicUsize::new(0),
            max,
            max_per_client,
            per_client: Mutex::new(HashMap::new()),
            shutdown: watch::channel(false).0,
        }
    }

    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A place for one more tunnel from `client` (none known: only the total cap applies), held
    /// from before the upstream is asked until the tunnel ends.
    pub(crate) fn reserve(self: &Arc<Self>, client: Option<IpAddr>) -> Result<TunnelSlot, Over> {
        let client = client.map(crate::util::client_network);
        let mut per_client = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        if self.open.load(Ordering::Relaxed) >= self.max {
            return Err(Over::Total(self.max));
        }
        if let Some(ip) = client {
            let n = per_client.entry(ip).or_insert(0);
            if *n >= self.max_per_client {
                return Err(Over::PerClient(self.max_per_client));
            }
            *n += 1;
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(TunnelSlot {
            tunnels: self.clone(),
            client,
        })
    }

    /// Whether [`close_all`](Self::close_all) is in force.
    pub(crate) fn closed(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub(crate) fn close_all(&self) {
        self.shutdown.send_replace(true);
    }

    pub(crate) fn reopen(&self) {
        self.shutdown.send_replace(false);
    }
}

/// One tunnel's place under the caps, given back when dropped.
#[derive(Debug)]
pub(crate) struct TunnelSlot {
    tunnels: Arc<Tunnels>,
    client: Option<IpAddr>,
}

impl Drop for TunnelSlot {
    fn drop(&mut self) {
        let t = &self.tunnels;
        // Under the lock, so that a reservation never sees the total drop before the client's.
        let mut per_client = t.per_client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ip) = self.client {
            if let Some(n) = per_client.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_client.remove(&ip);
                }
            }
        }
        t.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits for both sides to finish their upgrade, then copies bytes both ways until both directions
/// are closed, either side fails, the idle timeout passes, or the proxy closes its tunnels. Every
/// I/O error ends this tunnel only.
pub(crate) fn spawn(
    downstream: OnUpgrade,
    upstream: OnUpgrade,
    idle_timeout: Option<Duration>,
    lifetime: Option<TunnelLifetime>,
    slot: TunnelSlot,
    span: tracing::Span,
) {
    let gauge = crate::metrics::Open::new(crate::metrics::TUNNELS);
    let mut shutdown = slot.tunnels.shutdown.subscribe();
    tokio::spawn(async move {
        let _slot = (slot, gauge);
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(parent: &span, error = %e, "upgrade did not complete");
                return;
            }
        };
        let clock = Arc::new(Clock::new());
        let mut down = Active::new(TokioIo::new(down), clock.clone(), true);
        let mut up = Active::new(TokioIo::new(up), clock.clone(), false);
        let start = Instant::now();
        let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
        tokio::pin!(copy);
        let idle = async {
            match idle_timeout {
                Some(limit) => loop {
                    let since = clock.since_last();
                    if since >= limit {
                        return;
                    }
                    tokio::time::sleep(limit - since).await;
                },
                None => std::future::pending().await,
            }
        };
        let closed = async {
            if *shutdown.borrow_and_update() {
                return;
            }
            while shutdown.changed().await.is_ok() {
                if *shutdown.borrow() {
                    return;
                }
            }
            std::future::pending::<()>().await
        };
        let ended = async {
            match lifetime {
                Some(l) => l.ended().await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            r = &mut copy => match r {
                Ok((to_up, to_down)) => {
                    tracing::info!(parent: &span, bytes_up = to_up, bytes_down = to_down,
                        duration_ms = start.elapsed().as_millis() as u64, "tunnel closed");
                    return;
                }
                Err(e) => format!("i/o error: {e}"),
            },
            _ = idle => "idle timeout".to_owned(),
            _ = closed => "proxy shutting down".to_owned(),
            reason = ended => reason.to_owned(),
        };
        tracing::info!(parent: &span, duration_ms = start.elapsed().as_millis() as u64,
            reason = %outcome, "tunnel ended");
    });
}

struct Clock {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Clock {
    fn new() -> Self {
        Clock {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn since_last(&self) -> Duration {
        let last = self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Instant::now().saturating_duration_since(last)
    }
}

/// An I/O object that records when bytes last moved, for the idle timeout.
struct Active<T> {
    io: T,
    clock: Arc<Clock>,
    /// Whether what is read here goes up (read from the browser), for the byte counts.
    reads_up: bool,
}

impl<T> Active<T> {
    fn new(io: T, clock: Arc<Clock>, reads_up: bool) -> Self {
        Active {
            io,
            clock,
            reads_up,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Active<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.touch();
            crate::metrics::tunnel_bytes(self.reads_up, buf.filled().len() - before);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Active<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
