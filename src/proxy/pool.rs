//! The proxy's upstream connections: opened with the [`Connector`], spoken to with hyper's
//! connection-level client (HTTP/1.1, or HTTP/2 when ALPN or prior knowledge says so), and kept for
//! reuse.
//!
//! An HTTP/1.1 connection carries one exchange at a time: it is taken from the idle list for a
//! request and goes back when the response body has been read to its end (a body dropped early, an
//! error or an upgrade leaves the connection to close). An HTTP/2 connection is shared by every
//! request to its upstream. Idle connections are closed after the idle timeout by a reaper task that
//! runs only while there are idle connections.
//!
//! The exchange is driven from the request's own future: there is no task per request, only one per
//! connection (hyper's connection driver) and the reaper.
//!
//! Sending again: a request that a reused connection gives back unsent (it was closed before the
//! request went out) goes out on the next connection. One that was sent on a reused HTTP/1.1
//! connection which then failed before any response byte — each HTTP/1.1 connection counts the bytes
//! it reads — is sent once more on a new connection when it is idempotent and has no body; anything
//! else is the caller's error to answer.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower_service::Service;

use super::body::RequestBody;
use super::ProxyError;
use crate::connect::{ConnStream, ConnectError, Connector};

/// An upstream: scheme and authority, compared and hashed as written. (`Authority`'s own `Hash`
/// feeds the hasher one lowercased byte at a time, which cost more than all the rest of a
/// request's trip through the pool; two spellings of one host merely keep two idle lists.)
#[derive(Clone)]
struct Key {
    scheme: Scheme,
    authority: Authority,
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.authority.as_str() == other.authority.as_str() && self.scheme == other.scheme
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.scheme.hash(state);
        self.authority.as_str().hash(state);
    }
}

/// Opens, hands out and takes back upstream connections.
pub(crate) struct Pool<R> {
    connector: Connector<R>,
    http1_connector: Connector<R>,
    http2_prior_knowledge: bool,
    idle: Arc<IdleList>,
}

/// The connections kept between requests, shared with the response bodies that give theirs back.
pub(crate) struct IdleList {
    timeout: Duration,
    max_per_host: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    hosts: HashMap<Key, Host>,
    reaper_running: bool,
}

#[derive(Default)]
struct Host {
    /// Idle HTTP/1.1 connections, the most recently used last.
    http1: Vec<(H1, Instant)>,
    /// The shared HTTP/2 connection and when a request last started on it.
    http2: Option<(http2::SendRequest<RequestBody>, Instant)>,
    /// Held while an HTTP/2 connection is being opened, so that requests arriving meanwhile wait
    /// for it rather than each opening their own.
    connecting: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// An HTTP/1.1 connection: its request sender and how many bytes it has read from the upstream
/// (to tell whether a failed exchange had begun to receive its response).
struct H1 {
    tx: http1::SendRequest<RequestBody>,
    read: Arc<AtomicU64>,
}

/// An HTTP/1.1 connection lent to one exchange, to give back when its response body has ended.
pub(crate) struct Lent {
    idle: Arc<IdleList>,
    key: Key,
    sender: H1,
}

impl Lent {
    /// Puts the connection back in the idle list.
    pub(crate) fn give_back(self) {
        self.idle.put(self.key, self.sender);
    }
}

impl std::fmt::Debug for Lent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lent")
            .field("upstream", &self.key.authority)
            .finish()
    }
}

enum Sender {
    Http1(H1),
    Http2(http2::SendRequest<RequestBody>),
}

impl<R: Clone> Pool<R> {
    pub(crate) fn new(
        connector: Connector<R>,
        http2_prior_knowledge: bool,
        idle_timeout: Duration,
        max_idle_per_host: usize,
    ) -> Self {
        Pool {
            http1_connector: connector.http1_only(),
            connector,
            http2_prior_knowledge,
            idle: Arc::new(IdleList {
                timeout: idle_timeout,
                max_per_host: max_idle_per_host,
                state: Mutex::new(State::default()),
            }),
        }
    }
}

impl<R> Pool<R>
where
    Connector<R>: Service<Uri, Response = ConnStream, Error = ConnectError> + Clone,
{
    /// Sends `req` (absolute URI) to its upstream and waits for the response head. An HTTP/1.1
    /// connection that can be reused comes back as [`Lent`], to give back when the body has ended;
    /// one whose response has no body is given back at once. `upgrade` asks for an HTTP/1.1
    /// connection.
    pub(crate) async fn send(
        &self,
        mut req: Request<RequestBody>,
        upgrade: bool,
    ) -> Result<(Response<Incoming>, Option<Lent>), ProxyError> {
        let key = match (req.uri().scheme(), req.uri().authority()) {
            (Some(scheme), Some(authority)) => Key {
                scheme: scheme.clone(),
                authority: authority.clone(),
            },
            _ => return Err(ProxyError::NoTarget),
        };
        let upstream = key.authority.as_str();
        // A request that a reused connection closed on before sending it is sent again, on the
        // next idle connection or a new one: every round uses up one connection, so this ends.
        // One that was sent but got no byte back is sent again once, on a new connection, when
        // it is idempotent and has no body.
        let mut fresh_only = false;
        let mut may_resend = !upgrade && replayable(&req);
        loop {
            let idle = if fresh_only {
                None
            } else {
                self.idle.take(&key, upgrade).await
            };
            let (sender, reused) = match idle {
                Some(sender) => (sender, true),
                None => match self
                    .idle
                    .connect_lock(&key, upgrade, self.http2_prior_knowledge)
                {
                    Some(lock) => {
                        let _connecting = lock.lock().await;
                        let idle = if fresh_only {
                            None
                        } else {
                            self.idle.take(&key, false).await
                        };
                        match idle {
                            Some(sender) => (sender, true),
                            None => (Box::pin(self.connect(&key, false)).await?, false),
                        }
                    }
                    None => (Box::pin(self.connect(&key, upgrade)).await?, false),
                },
            };
            match sender {
                Sender::Http2(mut tx) => {
                    return match tx.try_send_request(req).await {
                        Ok(res) => Ok((res, None)),
                        Err(mut e) => match e.take_message() {
                            Some(back) if reused => {
                                self.idle.forget_http2(&key);
                                req = back;
                                continue;
                            }
                            _ => Err(ProxyError::from_hyper(upstream, e.into_error())),
                        },
                    };
                }
                Sender::Http1(mut h1) => {
                    let head = (reused && may_resend).then(|| head_of(&req));
                    let read_before = h1.read.load(Ordering::Relaxed);
                    origin_form(&mut req, &key);
                    match h1.tx.try_send_request(req).await {
                        Ok(res) => {
                            // An upgraded connection belongs to its tunnel from now on.
                            if res.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                                return Ok((res, None));
                            }
                            let lent = Lent {
                                idle: self.idle.clone(),
                                key,
                                sender: h1,
                            };
                            if http_body::Body::is_end_stream(res.body()) {
                                lent.give_back();
                                return Ok((res, None));
                            }
                            return Ok((res, Some(lent)));
                        }
                        Err(mut e) => match e.take_message() {
                            Some(back) if reused => {
                                req = back;
                                // The origin form is rebuilt from the URI; put the absolute one back.
                                let pq = req.uri().path_and_query().cloned();
                                *req.uri_mut() = absolute(&key, pq);
                                continue;
                            }
                            None if head.is_some()
                                && h1.read.load(Ordering::Relaxed) == read_before =>
                            {
                                tracing::debug!(upstream, error = %e.error(),
                                    "reused connection failed before any response byte; sending again on a new one");
                                req = head.unwrap_or_else(|| unreachable!("checked above"));
                                may_resend = false;
                                fresh_only = true;
                                continue;
                            }
                            _ => return Err(ProxyError::from_hyper(upstream, e.into_error())),
                        },
                    }
                }
            }
        }
    }

    /// Opens a connection to `key` and starts its driver.
    async fn connect(&self, key: &Key, upgrade: bool) -> Result<Sender, ProxyError> {
        let uri = absolute(key, None);
        let mut connector = if upgrade {
            self.http1_connector.clone()
        } else {
            self.connector.clone()
        };
        let stream = connector.call(uri).await.map_err(ProxyError::Connect)?;
        let upstream = key.authority.as_str();
        let http2 =
            !upgrade && (self.http2_prior_knowledge || stream.connected().is_negotiated_h2());
        if http2 {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(stream)
                .await
                .map_err(|e| ProxyError::from_hyper(upstream, e))?;
            let name = upstream.to_owned();
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(upstream = %name, error = %e, "HTTP/2 upstream connection ended");
                }
            });
            self.idle.share_http2(key, tx.clone());
            Ok(Sender::Http2(tx))
        } else {
            let read = Arc::new(AtomicU64::new(0));
            let stream = TokioIo::new(CountRead {
                io: TokioIo::new(stream),
                read: read.clone(),
            });
            let (tx, conn) = http1::handshake(stream)
                .await
                .map_err(|e| ProxyError::from_hyper(upstream, e))?;
            let name = upstream.to_owned();
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(upstream = %name, error = %e, "upstream connection ended");
                }
            });
            Ok(Sender::Http1(H1 { tx, read }))
        }
    }
}

impl IdleList {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every change is a single push,
        // pop or replace.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A live connection to `key`: the shared HTTP/2 one, or the most recently used idle HTTP/1.1
    /// one that is ready for a request.
    async fn take(&self, key: &Key, upgrade: bool) -> Option<Sender> {
        loop {
            let (mut tx, since) = {
                let mut state = self.lock();
                let host = state.hosts.get_mut(key)?;
                if let Some((tx, used)) = host.http2.as_mut().filter(|_| !upgrade) {
                    if !tx.is_closed() {
                        *used = Instant::now();
                        return Some(Sender::Http2(tx.clone()));
                    }
                    host.http2 = None;
                }
                host.http1.pop()?
            };
            if tx.tx.is_closed() || since.elapsed() >= self.timeout {
                continue;
            }
            // Given back when its last response body ended; its driver may not have marked it
            // ready yet. A connection that closed in the meantime answers with an error.
            if tx.tx.ready().await.is_ok() {
                return Some(Sender::Http1(tx));
            }
        }
    }

    /// The lock to hold while opening a connection to `key`, when it will speak HTTP/2: by prior
    /// knowledge, or because its last connection did.
    fn connect_lock(
        &self,
        key: &Key,
        upgrade: bool,
        http2_prior_knowledge: bool,
    ) -> Option<Arc<tokio::sync::Mutex<()>>> {
        if upgrade || self.timeout.is_zero() {
            return None;
        }
        let mut state = self.lock();
        if !http2_prior_knowledge && state.hosts.get(key)?.connecting.is_none() {
            return None;
        }
        let host = state.hosts.entry(key.clone()).or_default();
        Some(host.connecting.get_or_insert_with(Default::default).clone())
    }

    fn share_http2(self: &Arc<Self>, key: &Key, tx: http2::SendRequest<RequestBody>) {
        let mut state = self.lock();
        let host = state.hosts.entry(key.clone()).or_default();
        if !self.timeout.is_zero() && host.http2.as_ref().is_none_or(|(old, _)| old.is_closed()) {
            host.http2 = Some((tx, Instant::now()));
        }
        // This upstream speaks HTTP/2: the next connections to it are opened one at a time.
        host.connecting.get_or_insert_with(Default::default);
        self.start_reaper(&mut state);
    }

    fn forget_http2(&self, key: &Key) {
        if let Some(host) = self.lock().hosts.get_mut(key) {
            host.http2 = None;
        }
    }

    fn put(self: &Arc<Self>, key: Key, tx: H1) {
        if tx.tx.is_closed() || self.timeout.is_zero() {
            return;
        }
        let mut state = self.lock();
        let host = state.hosts.entry(key).or_default();
        if host.http1.len() >= self.max_per_host {
            return;
        }
        host.http1.push((tx, Instant::now()));
        self.start_reaper(&mut state);
    }

    /// Starts the task closing idle connections, unless it runs already. Called with the lock held,
    /// so the task cannot stop between the check and the connection just added.
    fn start_reaper(self: &Arc<Self>, state: &mut State) {
        if state.reaper_running || self.timeout.is_zero() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        state.reaper_running = true;
        runtime.spawn(reap(Arc::downgrade(self), self.timeout));
    }

    /// Closes what has been idle for the timeout; whether anything is left to watch.
    fn reap(&self) -> bool {
        let mut state = self.lock();
        let now = Instant::now();
        let timeout = self.timeout;
        state.hosts.retain(|_, host| {
            host.http1
                .retain(|(h1, since)| !h1.tx.is_closed() && now.duration_since(*since) < timeout);
            if host
                .http2
                .as_ref()
                .is_some_and(|(tx, used)| tx.is_closed() || now.duration_since(*used) >= timeout)
            {
                host.http2 = None;
            }
            !host.http1.is_empty() || host.http2.is_some()
        });
        if state.hosts.is_empty() {
            state.reaper_running = false;
            return false;
        }
        true
    }
}

async fn reap(idle: Weak<IdleList>, period: Duration) {
    loop {
        tokio::time::sleep(period / 2).await;
        let Some(idle) = idle.upgrade() else { return };
        if !idle.reap() {
            return;
        }
    }
}

/// Whether a request may be sent a second time: an idempotent method (RFC 9110 §9.2.2) and no
/// body to send again.
fn replayable(req: &Request<RequestBody>) -> bool {
    use http::Method;
    let m = req.method();
    let idempotent = m == Method::GET
        || m == Method::HEAD
        || m == Method::OPTIONS
        || m == Method::TRACE
        || m == Method::PUT
        || m == Method::DELETE;
    idempotent && http_body::Body::is_end_stream(req.body())
}

/// A copy of a body-less request, to send again.
fn head_of(req: &Request<RequestBody>) -> Request<RequestBody> {
    let mut copy = Request::new(RequestBody::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// An upstream connection that counts the bytes it reads.
struct CountRead<T> {
    io: T,
    read: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for CountRead<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountRead<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// `scheme://authority` plus `path_and_query` (or `/`).
fn absolute(key: &Key, path_and_query: Option<PathAndQuery>) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(key.scheme.clone());
    parts.authority = Some(key.authority.clone());
    parts.path_and_query = Some(path_and_query.unwrap_or_else(|| PathAndQuery::from_static("/")));
    Uri::from_parts(parts).expect("scheme, authority and path are each valid")
}

/// An HTTP/1.1 request line carries the path only; the authority goes into `Host` when the request
/// has none (the target's, without a default port).
fn origin_form(req: &mut Request<RequestBody>, key: &Key) {
    if !req.headers().contains_key(header::HOST) {
        let Key { scheme, authority } = key;
        let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(p) if p == default_port => HeaderValue::from_str(authority.host()),
            _ => HeaderValue::from_str(authority.as_str()),
        };
        if let Ok(host) = host {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    let pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(pq);
}
