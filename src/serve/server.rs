//! The accept loop, its limits and graceful shutdown.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower_service::Service;

use super::clients::Clients;
use super::connection::{self, Phase};

type BoxError = Box<dyn StdError + Send + Sync>;

/// How long a client may take to send a request head (HTTP/1.1), and a TLS handshake.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection with no request in flight stays open.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The most connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// The most connections open at once from one client address (an IPv6 /64 counts as one).
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 256;
/// How long graceful shutdown waits for requests in flight.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// The most concurrent streams a client may open on one HTTP/2 connection.
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// Serves a tower service on a listener, with the limits of the [module docs](super). Built by
/// [`Server::builder`].
pub struct Server {
    pub(super) config: Arc<Config>,
    on_drained: Vec<Box<dyn FnOnce() + Send>>,
}

pub(super) struct Config {
    pub(super) http: auto::Builder<TokioExecutor>,
    pub(super) header_read_timeout: Duration,
    pub(super) idle_timeout: Option<Duration>,
    max_connections: usize,
    max_connections_per_client: usize,
    shutdown_timeout: Duration,
    #[cfg(feature = "tls")]
    pub(super) tls: Option<super::TlsConfig>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let mut d = f.debug_struct("Server");
        d.field("header_read_timeout", &c.header_read_timeout)
            .field("idle_timeout", &c.idle_timeout)
            .field("max_connections", &c.max_connections)
            .field("max_connections_per_client", &c.max_connections_per_client)
            .field("shutdown_timeout", &c.shutdown_timeout);
        #[cfg(feature = "tls")]
        d.field("tls", &c.tls.is_some());
        d.finish_non_exhaustive()
    }
}

/// Configures a [`Server`]; every limit has a default safe for the internet.
pub struct ServerBuilder {
    header_read_timeout: Duration,
    idle_timeout: Option<Duration>,
    max_connections: usize,
    max_connections_per_client: usize,
    shutdown_timeout: Duration,
    http2_max_concurrent_streams: u32,
    on_drained: Vec<Box<dyn FnOnce() + Send>>,
    #[cfg(feature = "tls")]
    tls: Option<super::TlsConfig>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("header_read_timeout", &self.header_read_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field(
                "max_connections_per_client",
                &self.max_connections_per_client,
            )
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

/// A [`ServerBuilder`] setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A limit that must be at least one is zero, or a count is too large.
    #[error("{0}")]
    Invalid(&'static str),
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            http2_max_concurrent_streams: DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
            on_drained: Vec::new(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl Server {
    /// A builder with the defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

impl ServerBuilder {
    /// How long a client may take to send a whole HTTP/1.1 request head, counted from when the
    /// server starts waiting for it (default 10 s). hyper also runs this timer while a kept-alive
    /// HTTP/1.1 connection waits for its next request, so it bounds that idle time too. A client
    /// over it is disconnected. Under TLS it also bounds the handshake. HTTP/2 heads arrive in
    /// frames on a connection already bounded by [`idle_timeout`](Self::idle_timeout).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Closes a connection gracefully once it has had no request in flight for this long
    /// (default 60 s; `None`: never). A request is in flight from its head until its response body
    /// has been sent or dropped, so downloads and event streams are never idle.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The most connections open at once (default 10 000). At the cap the server stops
    /// accepting until one closes; further clients wait in the kernel's listen backlog.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// The most connections open at once from one client: an IPv4 address, or an IPv6 /64
    /// (default 256). A connection over it is closed as soon as it is accepted, before any byte is
    /// read, so one client cannot take the server's connections from the others. Clients behind a
    /// shared NAT or an L4 load balancer share one address: raise it there.
    pub fn max_connections_per_client(mut self, max: usize) -> Self {
        self.max_connections_per_client = max;
        self
    }

    /// How long graceful shutdown lets requests in flight finish before the remaining
    /// connections are dropped (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The most concurrent streams one HTTP/2 connection may have (default 100).
    pub fn http2_max_concurrent_streams(mut self, max: u32) -> Self {
        self.http2_max_concurrent_streams = max;
        self
    }

    /// Runs `f` during shutdown, once every connection has finished or
    /// [`shutdown_timeout`](Self::shutdown_timeout) has passed, whichever comes first. Upgraded
    /// connections are no longer the server's, so this is where tunnels are closed:
    /// `.on_drained(move || proxy.close_tunnels())`. Repeatable; run in the order given.
    pub fn on_drained(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.on_drained.push(Box::new(f));
        self
    }

    /// Serves HTTPS with this certificate and key (ALPN `h2`, `http/1.1`).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(mut self, tls: super::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Builds the server.
    ///
    /// # Errors
    /// A zero timeout or cap, or a connection cap above what a semaphore can count.
    pub fn build(self) -> Result<Server, ConfigError> {
        if self.header_read_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "header_read_timeout must be above zero",
            ));
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::Invalid(
                "idle_timeout must be above zero (None turns it off)",
            ));
        }
        if self.max_connections == 0 || self.max_connections > u32::MAX as usize / 2 {
            return Err(ConfigError::Invalid(
                "max_connections must be between 1 and 2^31 - 1",
            ));
        }
        if self.max_connections_per_client == 0 {
            return Err(ConfigError::Invalid(
                "max_connections_per_client must be at least 1",
            ));
        }
        if self.http2_max_concurrent_streams == 0 {
            return Err(ConfigError::Invalid(
                "http2_max_concurrent_streams must be at least 1",
            ));
        }
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.http2_max_concurrent_streams);
        Ok(Server {
            config: Arc::new(Config {
                http,
                header_read_timeout: self.header_read_timeout,
                idle_timeout: self.idle_timeout,
                max_connections: self.max_connections,
                max_connections_per_client: self.max_connections_per_client,
                shutdown_timeout: self.shutdown_timeout,
                #[cfg(feature = "tls")]
                tls: self.tls,
            }),
            on_drained: self.on_drained,
        })
    }
}

impl Server {
    /// Accepts connections on `listener` and serves `service` on each until `shutdown` resolves,
    /// then shuts down gracefully: stops accepting, lets requests in flight finish (connections
    /// close once their exchange ends; HTTP/2 clients get a `GOAWAY`), runs the
    /// [`on_drained`](ServerBuilder::on_drained) callbacks once every connection has closed or the
    /// shutdown timeout passed, and drops what is still open. Returns when that is done.
    ///
    /// Every request reaches `service` with the peer's
    /// [`ClientAddr`](crate::rewrite::ClientAddr), and with
    /// [`ClientTls`](crate::rewrite::ClientTls) when served over TLS.
    ///
    /// # Errors
    /// None so far: failed accepts (a client gone before it was accepted, the process out of file
    /// descriptors) are logged and retried after a pause; the result leaves room for errors that
    /// end serving.
    pub async fn serve<S, B>(
        self,
        listener: TcpListener,
        service: S,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let config = self.config;
        let permits = Arc::new(Semaphore::new(config.max_connections));
        let clients = Clients::new(config.max_connections_per_client);
        let (phase, phase_rx) = watch::channel(Phase::Running);
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        // Out of file descriptors and the like: give connections time to close.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Some(slot) = clients.enter(peer.ip()) else {
                tracing::debug!(%peer, max = config.max_connections_per_client,
                    "connection refused: the client has its cap of connections");
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection::serve(
                config.clone(),
                stream,
                peer,
                service.clone(),
                (permit, slot),
                phase_rx.clone(),
            ));
        }
        drop(listener);
        drop(phase_rx);
        phase.send_replace(Phase::Draining);
        let all = config.max_connections as u32;
        let drained = tokio::time::timeout(config.shutdown_timeout, permits.acquire_many(all))
            .await
            .is_ok();
        for f in self.on_drained {
            f();
        }
        if !drained {
            tracing::info!(
                open = config.max_connections - permits.available_permits(),
                "shutdown timeout passed; closing the connections still open"
            );
            phase.send_replace(Phase::Closed);
            // Each connection ends at once on that signal; wait briefly for them to be dropped.
            let _ = tokio::time::timeout(Duration::from_secs(1), permits.acquire_many(all)).await;
        }
        Ok(())
    }
}
