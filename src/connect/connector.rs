use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use super::LocalhostResolver;

type BoxError = Box<dyn StdError + Send + Sync>;

#[cfg(feature = "tls")]
type Stream = hyper_rustls::MaybeHttpsStream<TokioIo<TcpStream>>;
#[cfg(not(feature = "tls"))]
type Stream = TokioIo<TcpStream>;

/// The stream a [`Connector`] yields: plain TCP, or TLS over TCP for `https` upstreams (with the
/// `tls` feature).
///
/// It tells the pooled client which protocol was negotiated (`h2` by ALPN) and nothing more: unlike
/// hyper-util's plain TCP stream, it attaches no connection info to every response, which would
/// cost a map allocation per proxied request.
pub struct ConnStream {
    inner: Stream,
    _open: crate::metrics::Open,
}

impl fmt::Debug for ConnStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnStream")
            .field("negotiated_h2", &self.inner.connected().is_negotiated_h2())
            .finish_non_exhaustive()
    }
}

impl Connection for ConnStream {
    fn connected(&self) -> Connected {
        if self.inner.connected().is_negotiated_h2() {
            Connected::new().negotiated_h2()
        } else {
            Connected::new()
        }
    }
}

impl hyper::rt::Read for ConnStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ConnStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(feature = "tls")]
type Inner<R> = hyper_rustls::HttpsConnector<HttpConnector<R>>;
#[cfg(not(feature = "tls"))]
type Inner<R> = HttpConnector<R>;

/// The default attempt delay between address families (RFC 8305 recommends 250 ms).
pub const DEFAULT_ATTEMPT_DELAY: Duration = Duration::from_millis(250);
/// The default TCP connect timeout, shared among the addresses tried.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens connections to upstreams: Happy Eyeballs over the addresses its resolver gives (by default
/// [`LocalhostResolver`]: `localhost` → `::1` and `127.0.0.1`), `TCP_NODELAY`, and TLS with ALPN
/// (`h2`, `http/1.1`) for `https` upstreams when the `tls` feature is on.
///
/// `0.0.0.0` and `[::]` in a target mean "this machine" (a dev server printed its wildcard bind
/// address): they are dialled as `localhost`, both loopbacks raced, instead of failing.
///
/// A failed connection is a [`ConnectError`] that names the upstream, the addresses tried and why.
///
/// ```
/// use std::time::Duration;
/// use sandbox_gateway::connect::Connector;
///
/// let connector = Connector::builder()
///     .attempt_delay(Duration::from_millis(250))
///     .connect_timeout(Duration::from_secs(5))
///     .build()
///     .expect("valid TLS configuration");
/// # let _ = connector;
/// ```
#[derive(Clone)]
pub struct Connector<R = LocalhostResolver> {
    any: Inner<R>,
    http1: Inner<R>,
    alpn_http1_only: bool,
    resolver: R,
}

impl<R> fmt::Debug for Connector<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("alpn_http1_only", &self.alpn_http1_only)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A builder with the defaults: [`LocalhostResolver`], 250 ms attempt delay, 10 s connect
    /// timeout, `TCP_NODELAY`, and (with `tls`) the webpki root certificates.
    pub fn builder() -> ConnectorBuilder {
        ConnectorBuilder::new(LocalhostResolver::new())
    }
}

impl<R: Clone> Connector<R> {
    /// The same connector offering only `http/1.1` by ALPN, for upgrades (a WebSocket's upstream leg
    /// is HTTP/1.1, never h2).
    pub fn http1_only(&self) -> Self {
        Connector {
            alpn_http1_only: true,
            ..self.clone()
        }
    }
}

/// Builds a [`Connector`].
#[derive(Debug, Clone)]
pub struct ConnectorBuilder<R = LocalhostResolver> {
    resolver: R,
    attempt_delay: Option<Duration>,
    connect_timeout: Option<Duration>,
    nodelay: bool,
    #[cfg(feature = "tls")]
    webpki_roots: bool,
    #[cfg(feature = "tls")]
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    #[cfg(feature = "tls")]
    tls_config: Option<rustls::ClientConfig>,
}

impl<R> ConnectorBuilder<R> {
    /// A builder resolving names with `resolver` (any `tower::Service<Name>` yielding socket
    /// addresses, as hyper-util's `HttpConnector` takes).
    pub fn new(resolver: R) -> Self {
        ConnectorBuilder {
            resolver,
            attempt_delay: Some(DEFAULT_ATTEMPT_DELAY),
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            nodelay: true,
            #[cfg(feature = "tls")]
            webpki_roots: true,
            #[cfg(feature = "tls")]
            extra_roots: Vec::new(),
            #[cfg(feature = "tls")]
            tls_config: None,
        }
    }

    /// Replaces the resolver.
    pub fn resolver<R2>(self, resolver: R2) -> ConnectorBuilder<R2> {
        ConnectorBuilder {
            resolver,
            attempt_delay: self.attempt_delay,
            connect_timeout: self.connect_timeout,
            nodelay: self.nodelay,
            #[cfg(feature = "tls")]
            webpki_roots: self.webpki_roots,
            #[cfg(feature = "tls")]
            extra_roots: self.extra_roots,
            #[cfg(feature = "tls")]
            tls_config: self.tls_config,
        }
    }

    /// How long an attempt on one address family runs before the next family is tried in parallel
    /// (RFC 8305 "Connection Attempt Delay"; default 250 ms). A refused attempt moves on at once.
    pub fn attempt_delay(mut self, delay: Duration) -> Self {
        self.attempt_delay = Some(delay);
        self
    }

    /// The TCP connect timeout, shared evenly among the addresses tried (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Whether to set `TCP_NODELAY` (default on).
    pub fn nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// Adds a trusted root certificate (DER), e.g. a private CA of the platform.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn add_root_certificate(
        mut self,
        der: impl Into<rustls::pki_types::CertificateDer<'static>>,
    ) -> Self {
        self.extra_roots.push(der.into());
        self
    }

    /// Whether to trust the webpki (Mozilla) root certificates (default on).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn webpki_roots(mut self, on: bool) -> Self {
        self.webpki_roots = on;
        self
    }

    /// Uses this rustls configuration as it is (roots, client auth), instead of the one built from
    /// the root options. Its `alpn_protocols` must be empty: the connector sets them.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.tls_config = Some(config);
        self
    }

    /// Builds the connector.
    ///
    /// # Errors
    /// With `tls`: when a root certificate is invalid, no root is trusted at all, or a given
    /// rustls configuration already sets ALPN protocols.
    pub fn build(self) -> Result<Connector<R>, BuildError>
    where
        R: Clone,
    {
        let mut http = HttpConnector::new_with_resolver(self.resolver.clone());
        http.enforce_http(false);
        http.set_nodelay(self.nodelay);
        http.set_happy_eyeballs_timeout(self.attempt_delay);
        http.set_connect_timeout(self.connect_timeout);

        #[cfg(feature = "tls")]
        let (any, http1) = {
            let config = match self.tls_config {
                Some(c) => {
                    if !c.alpn_protocols.is_empty() {
                        return Err(BuildError(
                            "the rustls configuration must not set alpn_protocols; the connector offers h2 and http/1.1".into(),
                        ));
                    }
                    c
                }
                None => {
                    let mut roots = rustls::RootCertStore::empty();
                    if self.webpki_roots {
                        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                    }
                    for der in self.extra_roots {
                        roots
                            .add(der)
                            .map_err(|e| BuildError(format!("invalid root certificate: {e}")))?;
                    }
                    if roots.is_empty() {
                        return Err(BuildError("no trusted root certificate configured".into()));
                    }
                    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| BuildError(format!("TLS configuration: {e}")))?
                    .with_root_certificates(roots)
                    .with_no_client_auth()
                }
            };
            let any = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config.clone())
                .https_or_http()
                .enable_all_versions()
                .wrap_connector(http.clone());
            let http1 = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http);
            (any, http1)
        };
        #[cfg(not(feature = "tls"))]
        let (any, http1) = (http.clone(), http);

        Ok(Connector {
            any,
            http1,
            alpn_http1_only: false,
            resolver: self.resolver,
        })
    }
}

/// A [`Connector`] (or a proxy built on one) could not be built.
#[derive(Debug, thiserror::Error)]
#[error("invalid connector configuration: {0}")]
pub struct BuildError(String);

impl BuildError {
    /// A configuration mistake named in a few words.
    pub(crate) fn invalid(what: &str) -> Self {
        BuildError(what.to_owned())
    }
}

/// Why a connection to an upstream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectErrorKind {
    /// Every address refused the connection (nothing listens there).
    Refused,
    /// The connect timeout passed.
    TimedOut,
    /// The name did not resolve.
    Dns,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// Any other I/O failure.
    Other,
}

impl fmt::Display for ConnectErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectErrorKind::Refused => "connection refused",
            ConnectErrorKind::TimedOut => "connect timed out",
            ConnectErrorKind::Dns => "name did not resolve",
            ConnectErrorKind::Tls => "TLS handshake failed",
            ConnectErrorKind::Other => "connection failed",
        })
    }
}

/// A connection to an upstream could not be opened. Its message names the upstream and every
/// address tried.
#[derive(Debug, thiserror::Error)]
#[error("could not connect to upstream {upstream} (tried {}): {kind}", Tried(.tried))]
pub struct ConnectError {
    upstream: String,
    tried: Vec<SocketAddr>,
    kind: ConnectErrorKind,
    #[source]
    source: BoxError,
}

impl ConnectError {
    /// The upstream (`host:port`) that was dialled.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The addresses tried.
    pub fn tried(&self) -> &[SocketAddr] {
        &self.tried
    }

    /// What went wrong.
    pub fn kind(&self) -> ConnectErrorKind {
        self.kind
    }

    /// A copy whose source is kept as its message (the original is owned by hyper-util's error).
    #[cfg(feature = "forward")]
    pub(crate) fn duplicate(&self) -> ConnectError {
        ConnectError {
            upstream: self.upstream.clone(),
            tried: self.tried.clone(),
            kind: self.kind,
            source: self.source.to_string().into(),
        }
    }
}

struct Tried<'a>(&'a [SocketAddr]);

impl fmt::Display for Tried<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no address");
        }
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

fn classify(err: &(dyn StdError + 'static)) -> ConnectErrorKind {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    let mut saw_dns = false;
    // Error chains are short; the bound only guards against a cycle.
    for _ in 0..32 {
        let Some(e) = cur else { break };
        if e.to_string() == "dns error" {
            saw_dns = true;
        }
        #[cfg(feature = "tls")]
        if e.downcast_ref::<rustls::Error>().is_some() {
            return ConnectErrorKind::Tls;
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused => return ConnectErrorKind::Refused,
                io::ErrorKind::TimedOut => return ConnectErrorKind::TimedOut,
                _ => {}
            }
        }
        cur = next_in_chain(e);
    }
    if saw_dns {
        ConnectErrorKind::Dns
    } else {
        ConnectErrorKind::Other
    }
}

/// The error `e` wraps. `io::Error::source` skips the error an `io::Error` carries (it returns that
/// error's own source), and the TLS layer nests the rustls error two `io::Error`s deep, so step into
/// the carried error instead.
fn next_in_chain<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
        return Some(inner);
    }
    e.source()
}

/// `0.0.0.0` and `[::]` mean "this machine": dial them as `localhost`.
fn unspecified_to_localhost(uri: Uri) -> Uri {
    let unspecified = uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        .is_some_and(|ip| ip.is_unspecified());
    if !unspecified {
        return uri;
    }
    let mut parts = uri.into_parts();
    let port = parts.authority.as_ref().and_then(|a| a.port_u16());
    let authority = match port {
        Some(p) => format!("localhost:{p}"),
        None => "localhost".to_owned(),
    };
    parts.authority = authority.parse().ok();
    Uri::from_parts(parts).expect("same URI with a valid authority")
}

type Connecting = Pin<Box<dyn Future<Output = Result<ConnStream, ConnectError>> + Send>>;

impl<R> Service<Uri> for Connector<R>
where
    R: Service<Name> + Clone + Send + Sync + 'static,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<BoxError>,
    R::Future: Send,
    Inner<R>: Service<Uri, Response = Stream> + Clone + Send + 'static,
    <Inner<R> as Service<Uri>>::Error: Into<BoxError>,
    <Inner<R> as Service<Uri>>::Future: Send,
{
    type Response = ConnStream;
    type Error = ConnectError;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let uri = unspecified_to_localhost(uri);
        let mut inner = if self.alpn_http1_only {
            self.http1.clone()
        } else {
            self.any.clone()
        };
        let resolver = self.resolver.clone();
        Box::pin(async move {
            let start = std::time::Instant::now();
            let e: BoxError = match inner.call(uri.clone()).await {
                Ok(inner) => {
                    crate::metrics::connected(start.elapsed());
                    let _open = crate::metrics::Open::new(crate::metrics::UPSTREAM_CONNECTIONS);
                    return Ok(ConnStream { inner, _open });
                }
                Err(e) => e.into(),
            };
            let kind = classify(&*e);
            crate::metrics::connect_failed(kind);
            let tried = addresses_for(&uri, resolver).await;
            let upstream = uri.authority().map(|a| a.to_string()).unwrap_or_default();
            tracing::debug!(%upstream, ?tried, %kind, "upstream connect failed");
            Err(ConnectError {
                upstream,
                tried,
                kind,
                source: e,
            })
        })
    }
}

async fn addresses_for<R>(uri: &Uri, mut resolver: R) -> Vec<SocketAddr>
where
    R: Service<Name>,
    R::Response: Iterator<Item = SocketAddr>,
{
    let Some(host) = uri.host() else {
        return Vec::new();
    };
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return vec![SocketAddr::new(ip, port)];
    }
    let Ok(name) = host.parse::<Name>() else {
        return Vec::new();
    };
    match resolver.call(name).await {
        Ok(addrs) => addrs
            .map(|mut a| {
                a.set_port(port);
                a
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_become_localhost() {
        let u = unspecified_to_localhost("http://0.0.0.0:5173/x".parse().unwrap());
        assert_eq!(u.to_string(), "http://localhost:5173/x");
        let u = unspecified_to_localhost("http://[::]:5173/".parse().unwrap());
        assert_eq!(u.to_string(), "http://localhost:5173/");
        let u = unspecified_to_localhost("http://127.0.0.1:5173/".parse().unwrap());
        assert_eq!(u.to_string(), "http://127.0.0.1:5173/");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn nested_tls_errors_are_classified() {
        // How hyper-rustls reports a handshake failure: io::Error(other, io::Error(rustls::Error)).
        let rustls_err = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let nested = io::Error::other(io::Error::new(io::ErrorKind::InvalidData, rustls_err));
        let boxed: BoxError = nested.into();
        assert_eq!(classify(&*boxed), ConnectErrorKind::Tls);
        let refused: BoxError = io::Error::from(io::ErrorKind::ConnectionRefused).into();
        assert_eq!(classify(&*refused), ConnectErrorKind::Refused);
        let other: BoxError = io::Error::other("x").into();
        assert_eq!(classify(&*other), ConnectErrorKind::Other);
    }

    #[test]
    fn error_message_names_upstream_and_addresses() {
        let e = ConnectError {
            upstream: "localhost:1".into(),
            tried: LocalhostResolver::loopback_addrs(1).to_vec(),
            kind: ConnectErrorKind::Refused,
            source: "x".into(),
        };
        assert_eq!(
            e.to_string(),
            "could not connect to upstream localhost:1 (tried [::1]:1, 127.0.0.1:1): connection refused"
        );
    }
}
