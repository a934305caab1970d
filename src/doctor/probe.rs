//! The probe: connections the way a browser opens them, and the checks run over them.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::TokioExecutor;
use tokio::time::timeout;
use tower_service::Service;

use super::report::{Check, Report};
use crate::connect::{ConnStream, Connector};
use crate::route::is_bad_port;

/// How long each network step may take unless [`ProbeBuilder::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The RFC 6455 sample key and the accept value every correct server derives from it (§1.3).
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The foreign Host sent by the `host` check.
const FOREIGN_HOST: &str = "evil.example";

/// How long the `sse` check waits after the first event to see whether the stream ends.
const STILL_OPEN_WAIT: Duration = Duration::from_millis(300);

/// A probe configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The gateway URL is not an absolute `http` / `https` URL with a host.
    #[error("`{0}` is not an absolute http:// or https:// URL")]
    Url(String),
    /// The origin is not `scheme://host[:port]`.
    #[error("`{0}` is not an origin like https://app.example")]
    Origin(String),
    /// A path does not start with `/` or has characters a request target cannot carry.
    #[error("`{0}` is not a path starting with `/`")]
    Path(String),
    /// The WebSocket subprotocol is not a valid header value.
    #[error("`{0}` is not a valid WebSocket subprotocol")]
    Subprotocol(String),
    /// A preflight request header is not a header name.
    #[error("`{0}` is not a header name")]
    Header(String),
    /// A zero timeout.
    #[error("the timeout must be longer than zero")]
    Timeout,
    /// The TLS client could not be set up.
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// Builds a [`Probe`]; see the [module documentation](super).
#[derive(Debug, Clone)]
pub struct ProbeBuilder {
    url: String,
    origin: Option<String>,
    api: Option<String>,
    ws: Option<String>,
    sse: Option<String>,
    subprotocol: Option<String>,
    preflight_headers: Vec<String>,
    timeout: Duration,
    roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl ProbeBuilder {
    /// The origin a browser page calls the API from (`Origin` of the `cors` preflight). Without
    /// it, the `cors` check warns that it cannot run.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// The API path the `cors` check sends its preflight to.
    pub fn api_path(mut self, path: impl Into<String>) -> Self {
        self.api = Some(path.into());
        self
    }

    /// The WebSocket path the `websocket` check upgrades.
    pub fn ws_path(mut self, path: impl Into<String>) -> Self {
        self.ws = Some(path.into());
        self
    }

    /// A subprotocol the `websocket` check asks for (`Sec-WebSocket-Protocol`); the gateway must
    /// echo it.
    pub fn ws_protocol(mut self, protocol: impl Into<String>) -> Self {
        self.subprotocol = Some(protocol.into());
        self
    }

    /// The request headers the `cors` preflight asks for (`Access-Control-Request-Headers`);
    /// default `authorization, content-type`. Each must be allowed by name, except that `*` covers
    /// every header but `Authorization`.
    pub fn preflight_headers<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.preflight_headers = names.into_iter().map(Into::into).collect();
        self
    }

    /// The event-stream path the `sse` check reads.
    pub fn sse_path(mut self, path: impl Into<String>) -> Self {
        self.sse = Some(path.into());
        self
    }

    /// The bound of each network step (connect, response head, first event); default
    /// [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Trusts a root certificate (DER) besides the webpki roots, for a gateway behind a private CA.
    pub fn add_root_certificate(
        mut self,
        der: impl Into<rustls::pki_types::CertificateDer<'static>>,
    ) -> Self {
        self.roots.push(der.into());
        self
    }

    /// Checks the configuration.
    pub fn build(self) -> Result<Probe, ProbeError> {
        let url: Uri = self
            .url
            .parse()
            .map_err(|_| ProbeError::Url(self.url.clone()))?;
        let https = match url.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(ProbeError::Url(self.url)),
        };
        let Some(authority) = url.authority().cloned() else {
            return Err(ProbeError::Url(self.url));
        };
        if authority.host().is_empty() || authority.as_str().contains('@') {
            return Err(ProbeError::Url(self.url));
        }
        let page = url
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        let scheme = if https { "https" } else { "http" };
        let base: Uri = format!("{scheme}://{authority}")
            .parse()
            .map_err(|_| ProbeError::Url(self.url.clone()))?;
        let own_origin = HeaderValue::from_str(&format!("{scheme}://{authority}"))
            .map_err(|_| ProbeError::Url(self.url.clone()))?;
        let origin = self.origin.map(|o| parse_origin(&o)).transpose()?;
        let path = |p: Option<String>| p.map(|p| check_path(&p).map(|()| p)).transpose();
        let subprotocol = self
            .subprotocol
            .map(|p| HeaderValue::from_str(&p).map_err(|_| ProbeError::Subprotocol(p)))
            .transpose()?;
        if self.timeout.is_zero() {
            return Err(ProbeError::Timeout);
        }
        let mut preflight_headers = Vec::new();
        for name in &self.preflight_headers {
            let lower = name.trim().to_ascii_lowercase();
            if HeaderName::from_bytes(lower.as_bytes()).is_err() || lower.is_empty() {
                return Err(ProbeError::Header(name.clone()));
            }
            preflight_headers.push(lower);
        }
        let mut connector = Connector::builder().connect_timeout(self.timeout);
        for root in self.roots {
            connector = connector.add_root_certificate(root);
        }
        let connector = connector
            .build()
            .map_err(|e| ProbeError::Tls(e.to_string()))?;
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        Ok(Probe {
            base,
            https,
            host,
            port,
            page,
            own_origin,
            origin,
            api: path(self.api)?,
            ws: path(self.ws)?,
            sse: path(self.sse)?,
            subprotocol,
            preflight_headers,
            timeout: self.timeout,
            connector,
        })
    }
}

fn parse_origin(o: &str) -> Result<HeaderValue, ProbeError> {
    let bad = || ProbeError::Origin(o.to_owned());
    let uri: Uri = o.parse().map_err(|_| bad())?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(bad());
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") || o.ends_with('/') {
        return Err(bad());
    }
    HeaderValue::from_str(o).map_err(|_| bad())
}

fn check_path(p: &str) -> Result<(), ProbeError> {
    if p.starts_with('/') && p.parse::<PathAndQuery>().is_ok() {
        Ok(())
    } else {
        Err(ProbeError::Path(p.to_owned()))
    }
}

/// A check of one live deployment; [`Probe::run`] gives the [`Report`].
#[derive(Clone)]
pub struct Probe {
    base: Uri,
    https: bool,
    host: String,
    port: u16,
    page: String,
    own_origin: HeaderValue,
    origin: Option<HeaderValue>,
    api: Option<String>,
    ws: Option<String>,
    sse: Option<String>,
    subprotocol: Option<HeaderValue>,
    preflight_headers: Vec<String>,
    timeout: Duration,
    connector: Connector,
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("base", &self.base)
            .field("page", &self.page)
            .field("origin", &self.origin)
            .field("api", &self.api)
            .field("ws", &self.ws)
            .field("sse", &self.sse)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// One connection to the gateway; its driver task ends when it is dropped.
struct Conn {
    sender: Sender,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Conn {
    fn h2(&self) -> bool {
        matches!(self.sender, Sender::H2(_))
    }
}

impl Probe {
    /// A probe of `url` with the default settings: no API, event-stream or WebSocket path, so only
    /// the `reach`, `secure-context`, `port`, `isolation`, `http2` and `host` checks run.
    pub fn new(url: impl Into<String>) -> Result<Probe, ProbeError> {
        Probe::builder(url).build()
    }

    /// Starts a probe of the page at `url` (`https://gateway.example/` or `http://localhost:8080/`).
    pub fn builder(url: impl Into<String>) -> ProbeBuilder {
        ProbeBuilder {
            url: url.into(),
            origin: None,
            api: None,
            ws: None,
            sse: None,
            subprotocol: None,
            preflight_headers: vec!["authorization".to_owned(), "content-type".to_owned()],
            timeout: DEFAULT_TIMEOUT,
            roots: Vec::new(),
        }
    }

    /// Runs every check and reports the findings. Never fails: an unreachable gateway is one
    /// `reach` failure.
    pub async fn run(&self) -> Report {
        let mut report = Report::default();
        report.push(self.secure_context());
        report.push(self.port_check());

        let (conn, page) = match self
            .request(false, Method::GET, &self.page, &[], None)
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                report.push(Check::fail(
                    "reach",
                    format!("cannot reach {}{}: {e}", self.origin_str(), self.page),
                    "start the gateway, or check the URL, its port and what is between",
                ));
                return report;
            }
        };
        let proto = if conn.h2() { "HTTP/2" } else { "HTTP/1.1" };
        if page.status().is_success() {
            report.push(Check::ok(
                "reach",
                format!("the page answered {} over {proto}", page.status()),
            ));
        } else {
            report.push(Check::warn(
                "reach",
                format!("the page answered {} over {proto}", page.status()),
                "point the probe at the page the browser loads",
            ));
        }
        report.push(isolation(page.headers()));
        if self.https {
            report.push(if conn.h2() {
                Check::ok("http2", "ALPN chose h2")
            } else {
                Check::warn(
                    "http2",
                    "HTTP/1.1 only: ALPN did not choose h2, so browsers open at most 6 connections \
                     to the gateway and long-lived streams (SSE) use them up",
                    "offer h2 by ALPN on the TLS listener",
                )
            });
        }
        drop(page);
        drop(conn);

        if let Some(api) = &self.api {
            for c in self.cors(api).await {
                report.push(c);
            }
        }
        if let Some(sse) = &self.sse {
            for c in self.sse(sse).await {
                report.push(c);
            }
        }
        if let Some(ws) = &self.ws {
            report.push(self.websocket(ws).await);
        }
        report.push(self.host_check().await);
        report
    }

    /// `scheme://authority` of the gateway.
    fn origin_str(&self) -> &str {
        self.own_origin.to_str().unwrap_or_default()
    }

    fn secure_context(&self) -> Check {
        let loopback = self.host == "localhost"
            || self.host.ends_with(".localhost")
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if self.https {
            Check::ok("secure-context", "https")
        } else if loopback {
            Check::ok(
                "secure-context",
                format!(
                    "http on the loopback name {} is a secure context",
                    self.host
                ),
            )
        } else {
            Check::fail(
                "secure-context",
                format!(
                    "plain http to {}: not a secure context, so no cross-origin isolation, no \
                     Secure cookies, no service workers once deployed",
                    self.host
                ),
                "serve the gateway over https (a TLS terminator in front) or reach it on a loopback name",
            )
        }
    }

    fn port_check(&self) -> Check {
        if is_bad_port(self.port) {
            Check::fail(
                "port",
                format!(
                    "port {} is on the Fetch bad-port list: browsers refuse this port (ERR_UNSAFE_PORT)",
                    self.port
                ),
                "listen on another port, e.g. 8080",
            )
        } else {
            Check::ok("port", format!("port {} is allowed by browsers", self.port))
        }
    }

    async fn cors(&self, api: &str) -> Vec<Check> {
        let Some(origin) = self.origin.clone() else {
            return vec![Check::warn(
                "cors",
                "no origin given, so no preflight was sent",
                "give the origin the browser page runs on",
            )];
        };
        let origin_str = origin.to_str().unwrap_or_default().to_owned();
        let mut headers = vec![
            (header::ORIGIN, origin),
            (
                header::ACCESS_CONTROL_REQUEST_METHOD,
                HeaderValue::from_static("POST"),
            ),
        ];
        if !self.preflight_headers.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&self.preflight_headers.join(", ")) {
                headers.push((header::ACCESS_CONTROL_REQUEST_HEADERS, v));
            }
        }
        // The connection lives as long as the answer: its body may still be read.
        let (_conn, res) = match self
            .request(false, Method::OPTIONS, api, &headers, None)
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                return vec![Check::fail(
                    "cors",
                    format!("the preflight to {api} failed: {e}"),
                    "check the API path",
                )]
            }
        };
        if !res.status().is_success() {
            let status = res.status();
            return vec![Check::fail(
                "cors",
                format!(
                    "the preflight to {api} answered {status}{}",
                    self.snippet(res).await
                ),
                match status {
                    StatusCode::FORBIDDEN => {
                        "allow the origin, POST and the asked request headers in CorsLayer"
                    }
                    StatusCode::UNAUTHORIZED => {
                        "answer preflights before authentication: CorsLayer outside the auth layer"
                    }
                    _ => "answer preflights before routing: CorsLayer outermost on the API routes",
                },
            )];
        }
        let h = res.headers();
        let mut found = Vec::new();
        let acao = list(h, &header::ACCESS_CONTROL_ALLOW_ORIGIN);
        match acao.as_slice() {
            [] => found.push(Check::fail(
                "cors",
                format!("no Access-Control-Allow-Origin for {origin_str}"),
                "allow the origin in CorsLayer (AllowOrigin::list)",
            )),
            [one] if *one == origin_str => {}
            [one] if one == "*" => found.push(Check::warn(
                "cors",
                "Access-Control-Allow-Origin is `*`: requests with credentials are refused",
                "answer with the origin itself (AllowOrigin::list)",
            )),
            [one] => found.push(Check::fail(
                "cors",
                format!("Access-Control-Allow-Origin is {one}, not {origin_str}"),
                "allow the origin in CorsLayer (AllowOrigin::list)",
            )),
            many => found.push(Check::fail(
                "cors",
                format!(
                    "{} Access-Control-Allow-Origin values ({}): the upstream's CORS headers leak \
                     through, and browsers refuse more than one",
                    many.len(),
                    many.join(", ")
                ),
                "let one layer own CORS: CorsLayer removes the upstream's Access-Control-* headers",
            )),
        }
        let allowed: Vec<String> = list(h, &header::ACCESS_CONTROL_ALLOW_HEADERS)
            .into_iter()
            .map(|s| s.to_ascii_lowercase())
            .collect();
        let star = allowed.iter().any(|a| a == "*");
        for wanted in self.preflight_headers.iter().map(String::as_str) {
            if allowed.iter().any(|a| a == wanted) || (star && wanted != "authorization") {
                continue;
            }
            let cause = if star {
                "Access-Control-Allow-Headers is `*`, which does not cover Authorization".to_owned()
            } else {
                format!(
                    "Access-Control-Allow-Headers ({}) lacks {wanted}",
                    if allowed.is_empty() {
                        "none".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                )
            };
            found.push(Check::fail(
                "cors",
                cause,
                format!("list {wanted} in CorsLayer's allow_headers"),
            ));
        }
        let max_age = h
            .get(header::ACCESS_CONTROL_MAX_AGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if max_age.is_none() {
            found.push(Check::warn(
                "cors",
                "no Access-Control-Max-Age: browsers keep a preflight 5 s, so most requests pay one",
                "set a Max-Age (CorsLayer's max_age, e.g. 600 s)",
            ));
        }
        if found.is_empty() {
            found.push(Check::ok(
                "cors",
                format!(
                    "preflight {} from {origin_str}: one matching Access-Control-Allow-Origin, \
                     {} allowed, Max-Age {}",
                    res.status(),
                    if self.preflight_headers.is_empty() {
                        "no request headers asked,".to_owned()
                    } else {
                        self.preflight_headers.join(", ")
                    },
                    max_age.unwrap_or_default()
                ),
            ));
        }
        found
    }

    async fn sse(&self, path: &str) -> Vec<Check> {
        const FIX: &str = "stream event routes unbuffered: SseLayer on them, no body-collecting \
                           middleware and no compression of text/event-stream in front";
        let headers = [
            (
                header::ACCEPT,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::ACCEPT_ENCODING, HeaderValue::from_static("gzip")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ];
        let started = Instant::now();
        let (conn, res) = match self.request(false, Method::GET, path, &headers, None).await {
            Ok(answer) => answer,
            Err(e) => return vec![Check::fail("sse", format!("{path}: {e}"), FIX)],
        };
        if !res.status().is_success() {
            return vec![Check::fail(
                "sse",
                format!("{path} answered {}", res.status()),
                "check the event-stream path",
            )];
        }
        let h = res.headers();
        let ctype = h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        if !ctype.to_ascii_lowercase().starts_with("text/event-stream") {
            return vec![Check::fail(
                "sse",
                format!("{path} answered Content-Type {ctype}, not text/event-stream"),
                "check the event-stream path",
            )];
        }
        let mut found = Vec::new();
        if let Some(len) = h.get(header::CONTENT_LENGTH) {
            found.push(Check::fail(
                "sse",
                format!(
                    "Content-Length: {} on an event stream: it was collected before answering",
                    String::from_utf8_lossy(len.as_bytes())
                ),
                FIX,
            ));
        }
        if let Some(enc) = h.get(header::CONTENT_ENCODING) {
            found.push(Check::fail(
                "sse",
                format!(
                    "Content-Encoding: {} on an event stream: a compressor holds events back",
                    String::from_utf8_lossy(enc.as_bytes())
                ),
                "exclude text/event-stream from compression (CompressionLayer outside SseLayer)",
            ));
        }
        let cache = h
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if !cache.to_ascii_lowercase().contains("no-transform") {
            found.push(Check::warn(
                "sse",
                format!(
                    "Cache-Control ({}) lacks no-transform: intermediaries may buffer or compress the stream",
                    if cache.is_empty() { "none" } else { &cache }
                ),
                "send Cache-Control: no-cache, no-transform (SseLayer does)",
            ));
        }
        let mut body = res.into_body();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut first = None;
        for _ in 0..1024 {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => {
                    found.push(Check::fail(
                        "sse",
                        format!(
                            "no event within {}: the stream is buffered, or the upstream sent nothing",
                            secs(self.timeout)
                        ),
                        FIX,
                    ));
                    break;
                }
                Ok(None) => {
                    found.push(Check::fail(
                        "sse",
                        "the stream ended before the first event",
                        FIX,
                    ));
                    break;
                }
                Ok(Some(Err(e))) => {
                    found.push(Check::fail(
                        "sse",
                        format!("the stream broke before the first event: {e}"),
                        FIX,
                    ));
                    break;
                }
                Ok(Some(Ok(frame))) => {
                    if frame.data_ref().is_some_and(|d| !d.is_empty()) {
                        first = Some(started.elapsed());
                        break;
                    }
                }
            }
        }
        if let Some(after) = first {
            match timeout(STILL_OPEN_WAIT.min(self.timeout), body.frame()).await {
                Ok(None) => found.push(Check::warn(
                    "sse",
                    "the stream ended right after the first event: EventSource reconnects in a loop",
                    "keep the stream open, unless a finite stream is meant",
                )),
                Ok(Some(Err(e))) => found.push(Check::fail(
                    "sse",
                    format!("the stream broke after the first event: {e}"),
                    FIX,
                )),
                Ok(Some(Ok(_))) | Err(_) => {}
            }
            if found.is_empty() {
                found.push(Check::ok(
                    "sse",
                    format!(
                        "first event after {} ms, stream still open, no Content-Length, no \
                         Content-Encoding, Cache-Control {cache}",
                        after.as_millis()
                    ),
                ));
            }
        }
        drop(body);
        drop(conn);
        found
    }

    async fn websocket(&self, path: &str) -> Check {
        const FIX: &str = "route the path to ReverseProxy, which splices upgrades, and let \
                           Connection: Upgrade through every layer in front";
        let mut headers = vec![
            (header::CONNECTION, HeaderValue::from_static("Upgrade")),
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            ),
            (header::SEC_WEBSOCKET_KEY, HeaderValue::from_static(WS_KEY)),
            (header::ORIGIN, self.own_origin.clone()),
        ];
        if let Some(p) = &self.subprotocol {
            headers.push((header::SEC_WEBSOCKET_PROTOCOL, p.clone()));
        }
        let (_conn, res) = match self.request(true, Method::GET, path, &headers, None).await {
            Ok(answer) => answer,
            Err(e) => return Check::fail("websocket", format!("{path}: {e}"), FIX),
        };
        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = res.status();
            return Check::fail(
                "websocket",
                format!(
                    "the upgrade at {path} answered {status}{}: WebSocket connections fail",
                    self.snippet(res).await
                ),
                FIX,
            );
        }
        let h = res.headers();
        match h.get(header::SEC_WEBSOCKET_ACCEPT) {
            None => {
                return Check::fail(
                    "websocket",
                    "101 without Sec-WebSocket-Accept: browsers close the socket",
                    FIX,
                )
            }
            Some(v) if v != WS_ACCEPT => {
                return Check::fail(
                    "websocket",
                    format!(
                        "Sec-WebSocket-Accept {} does not match the key: browsers close the socket",
                        String::from_utf8_lossy(v.as_bytes())
                    ),
                    "relay the upstream's handshake answer untouched",
                )
            }
            Some(_) => {}
        }
        let echoed = h.get(header::SEC_WEBSOCKET_PROTOCOL);
        if let Some(asked) = &self.subprotocol {
            if echoed != Some(asked) {
                return Check::fail(
                    "websocket",
                    format!(
                        "subprotocol {} not echoed (got {}): browsers close the socket",
                        String::from_utf8_lossy(asked.as_bytes()),
                        echoed
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                            .unwrap_or_else(|| "none".to_owned())
                    ),
                    "relay Sec-WebSocket-Protocol both ways",
                );
            }
        }
        Check::ok(
            "websocket",
            match echoed {
                Some(p) => format!(
                    "101 Switching Protocols at {path}, Sec-WebSocket-Accept correct, subprotocol {}",
                    String::from_utf8_lossy(p.as_bytes())
                ),
                None => format!("101 Switching Protocols at {path}, Sec-WebSocket-Accept correct"),
            },
        )
    }

    async fn host_check(&self) -> Check {
        const FIX: &str = "refuse unknown Hosts (HostAllowlistLayer)";
        let status = match self
            .request(true, Method::GET, &self.page, &[], Some(FOREIGN_HOST))
            .await
        {
            Ok((_conn, res)) => res.status(),
            Err(e) => {
                return Check::ok(
                    "host",
                    format!("a request with Host: {FOREIGN_HOST} was not answered: {e}"),
                )
            }
        };
        if status.is_client_error() {
            Check::ok(
                "host",
                format!("Host: {FOREIGN_HOST} refused with {status}"),
            )
        } else {
            Check::warn(
                "host",
                format!(
                    "Host: {FOREIGN_HOST} answered {status}: a DNS-rebinding page could read the gateway"
                ),
                FIX,
            )
        }
    }

    /// The first line of a short error body, as ` ("…")`, or nothing.
    async fn snippet(&self, res: Response<Incoming>) -> String {
        let body = http_body_util::Limited::new(res.into_body(), 4096);
        let Ok(Ok(collected)) = timeout(self.timeout, body.collect()).await else {
            return String::new();
        };
        let bytes = collected.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        let line: String = text
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .chars()
            .take(200)
            .collect();
        if line.is_empty() {
            String::new()
        } else {
            format!(" (\"{line}\")")
        }
    }

    /// Opens a connection (ALPN h2 or HTTP/1.1, or HTTP/1.1 only) and sends one request without a
    /// body, each step bounded by the timeout.
    async fn request(
        &self,
        http1_only: bool,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        host: Option<&str>,
    ) -> Result<(Conn, Response<Incoming>), String> {
        let mut conn = self.connect(http1_only).await?;
        let mut req = Request::new(Empty::<Bytes>::new());
        *req.method_mut() = method;
        for (name, value) in headers {
            req.headers_mut().append(name.clone(), value.clone());
        }
        let bounded = |what: &str| format!("{what} within {}", secs(self.timeout));
        let sending = async {
            match &mut conn.sender {
                Sender::H1(s) => {
                    *req.uri_mut() = path.parse().map_err(|_| format!("bad path {path}"))?;
                    let authority = self.base.authority().map(|a| a.as_str()).unwrap_or("");
                    let host = HeaderValue::from_str(host.unwrap_or(authority))
                        .map_err(|_| "bad Host".to_owned())?;
                    req.headers_mut().insert(header::HOST, host);
                    s.ready().await.map_err(|e| e.to_string())?;
                    s.send_request(req).await.map_err(|e| e.to_string())
                }
                Sender::H2(s) => {
                    *req.uri_mut() = format!("{}{path}", self.origin_str())
                        .parse()
                        .map_err(|_| format!("bad path {path}"))?;
                    s.ready().await.map_err(|e| e.to_string())?;
                    s.send_request(req).await.map_err(|e| e.to_string())
                }
            }
        };
        let res = timeout(self.timeout, sending)
            .await
            .map_err(|_| bounded("no response head"))??;
        Ok((conn, res))
    }

    async fn connect(&self, http1_only: bool) -> Result<Conn, String> {
        let mut connector = if http1_only {
            self.connector.http1_only()
        } else {
            self.connector.clone()
        };
        let stream: ConnStream = timeout(self.timeout, connector.call(self.base.clone()))
            .await
            .map_err(|_| format!("no connection within {}", secs(self.timeout)))?
            .map_err(|e| e.to_string())?;
        let h2 = stream.connected().is_negotiated_h2();
        let handshake = async {
            if h2 {
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), stream)
                        .await
                        .map_err(|e| e.to_string())?;
                let driver = tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok::<_, String>(Conn {
                    sender: Sender::H2(sender),
                    driver,
                })
            } else {
                let (sender, conn) = hyper::client::conn::http1::handshake(stream)
                    .await
                    .map_err(|e| e.to_string())?;
                let driver = tokio::spawn(async move {
                    let _ = conn.with_upgrades().await;
                });
                Ok(Conn {
                    sender: Sender::H1(sender),
                    driver,
                })
            }
        };
        timeout(self.timeout, handshake)
            .await
            .map_err(|_| format!("no HTTP handshake within {}", secs(self.timeout)))?
    }
}

fn isolation(h: &HeaderMap) -> Check {
    let token = |name: &str| {
        h.get(name).and_then(|v| v.to_str().ok()).map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
    };
    let coop = token("cross-origin-opener-policy");
    let coep = token("cross-origin-embedder-policy");
    let corp = token("cross-origin-resource-policy");
    let mut missing = Vec::new();
    if coop.as_deref() != Some("same-origin") {
        missing.push(format!(
            "Cross-Origin-Opener-Policy is {}",
            coop.as_deref().unwrap_or("missing")
        ));
    }
    if !matches!(coep.as_deref(), Some("credentialless" | "require-corp")) {
        missing.push(format!(
            "Cross-Origin-Embedder-Policy is {}",
            coep.as_deref().unwrap_or("missing")
        ));
    }
    if !missing.is_empty() {
        return Check::fail(
            "isolation",
            format!(
                "{}: the page is not cross-origin isolated, SharedArrayBuffer is unavailable",
                missing.join(", ")
            ),
            "send Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: \
             credentialless on the page (IsolationLayer)",
        );
    }
    Check::ok(
        "isolation",
        format!(
            "COOP same-origin, COEP {}, {}",
            coep.unwrap_or_default(),
            match corp {
                Some(c) => format!("CORP {c}"),
                None =>
                    "no CORP (cross-origin subresources need one under require-corp)".to_owned(),
            }
        ),
    )
}

/// The comma-separated values of every `name` header, trimmed, empty ones left out.
fn list(h: &HeaderMap, name: &HeaderName) -> Vec<String> {
    h.get_all(name)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_that_cannot_work_are_refused() {
        assert!(matches!(Probe::new("ftp://x/"), Err(ProbeError::Url(_))));
        assert!(matches!(Probe::new("/relative"), Err(ProbeError::Url(_))));
        assert!(matches!(
            Probe::builder("http://localhost:8080")
                .origin("app.example")
                .build(),
            Err(ProbeError::Origin(_))
        ));
        assert!(matches!(
            Probe::builder("http://localhost:8080")
                .origin("https://a.example/")
                .build(),
            Err(ProbeError::Origin(_))
        ));
        assert!(matches!(
            Probe::builder("http://localhost:8080")
                .api_path("api")
                .build(),
            Err(ProbeError::Path(_))
        ));
        assert!(matches!(
            Probe::builder("http://localhost:8080")
                .timeout(Duration::ZERO)
                .build(),
            Err(ProbeError::Timeout)
        ));
        let p = Probe::builder("http://localhost:8080")
            .origin("https://a.example:8443")
            .api_path("/api?x=1")
            .build()
            .unwrap();
        assert_eq!(p.page, "/");
        assert_eq!(p.port, 8080);
    }

    #[test]
    fn plain_http_is_secure_only_on_loopback() {
        for (url, ok) in [
            ("http://localhost:8080/", true),
            ("http://3000.localhost:8080/", true),
            ("http://127.0.0.1:8080/", true),
            ("http://[::1]:8080/", true),
            ("https://gw.example/", true),
            ("http://gw.example/", false),
            ("http://10.0.0.2:8080/", false),
        ] {
            let c = Probe::new(url).unwrap().secure_context();
            assert_eq!(c.outcome == super::super::Outcome::Ok, ok, "{url}: {c}");
        }
    }

    #[test]
    fn bad_ports_fail_naming_err_unsafe_port() {
        let c = Probe::new("http://localhost:6000/").unwrap().port_check();
        assert_eq!(c.outcome, super::super::Outcome::Fail);
        assert!(c.cause.contains("ERR_UNSAFE_PORT"), "{c}");
        let c = Probe::new("https://gw.example/").unwrap().port_check();
        assert_eq!(c.outcome, super::super::Outcome::Ok, "{c}");
    }
}
