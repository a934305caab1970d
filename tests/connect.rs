//! Connecting to upstreams over real sockets: `localhost` on either loopback, Happy Eyeballs
//! fall-backs, TLS with ALPN, and HTTP/1.1 and HTTP/2 on either side of the proxy.

mod support;

use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sandbox_gateway::proxy::{Builder, ReverseProxy};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Which protocol a test upstream accepts.
#[derive(Clone, Copy)]
enum Speaks {
    Http1,
    Http2,
}

/// An upstream handler that reports what it saw: its tag, the request version, the URI authority
/// (`:authority` on HTTP/2), the `Host` header and the header names.
fn reporter(
    tag: &'static str,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<TestBody>,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |req: Request<Incoming>| async move {
        let json = serde_json::json!({
            "tag": tag,
            "version": format!("{:?}", req.version()),
            "authority": req.uri().authority().map(|a| a.to_string()),
            "host": req.headers().get("host").and_then(|v| v.to_str().ok()),
            "headers": req.headers().keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        });
        Ok::<_, Infallible>(Response::new(full(json.to_string())))
    })
}

/// Serves the reporter on `listener`, speaking only `speaks`.
fn serve_listener(listener: TcpListener, tag: &'static str, speaks: Speaks) -> SocketAddr {
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve_conn(TokioIo::new(stream), tag, speaks));
        }
    });
    local
}

async fn serve_conn<I>(io: I, tag: &'static str, speaks: Speaks)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper_util::service::TowerToHyperService::new(reporter(tag));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    match speaks {
        Speaks::Http1 => builder = builder.http1_only(),
        Speaks::Http2 => builder = builder.http2_only(),
    }
    let _ = builder.serve_connection(io, svc).await;
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Listeners on `[::1]:port` and `127.0.0.1:port`, the same port.
async fn both_loopbacks() -> (TcpListener, TcpListener) {
    for _ in 0..20 {
        let v6 = bind(V6).await.unwrap();
        let port = v6.local_addr().unwrap().port();
        if let Ok(v4) = bind(SocketAddr::new(V4.ip(), port)).await {
            return (v6, v4);
        }
    }
    panic!("no port free on both loopbacks after 20 tries");
}

/// A gateway (on 127.0.0.1, HTTP/1.1 and HTTP/2) proxying everything to `upstream`.
async fn gateway(upstream: &str, configure: impl FnOnce(Builder) -> Builder) -> SocketAddr {
    let proxy = configure(
        ReverseProxy::builder()
            .upstream(upstream.parse().unwrap())
            .response_timeout(Some(Duration::from_secs(10))),
    )
    .build()
    .unwrap();
    serve(proxy).await
}

/// GET `/x` through the gateway (HTTP/1.1 client), expecting 200; the upstream's report.
async fn get_h1(gw: SocketAddr) -> serde_json::Value {
    report_of(
        within(
            20,
            client().request(
                Request::get(format!("http://{gw}/x"))
                    .body(empty())
                    .unwrap(),
            ),
        )
        .await
        .expect("gateway answered"),
    )
    .await
}

/// GET `/x` through the gateway with an HTTP/2 (prior knowledge) client.
async fn get_h2(gw: SocketAddr) -> serde_json::Value {
    let client: Client<HttpConnector, TestBody> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    let res = within(
        20,
        client.request(
            Request::get(format!("http://{gw}/x"))
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .expect("gateway answered");
    assert_eq!(res.version(), http::Version::HTTP_2, "the gateway spoke h2");
    report_of(res).await
}

async fn report_of(res: Response<Incoming>) -> serde_json::Value {
    let status = res.status();
    let body = text(res).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).expect("a report")
}

async fn via(target: &str, port: u16) -> serde_json::Value {
    get_h1(gateway(&format!("http://{target}:{port}"), |b| b).await).await
}

const V6: SocketAddr = SocketAddr::new(std::net::IpAddr::V6(Ipv6Addr::LOCALHOST), 0);
const V4: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

#[tokio::test]
async fn upstream_on_ipv6_loopback_only() {
    let addr = serve_listener(bind(V6).await.unwrap(), "v6", Speaks::Http1);
    for target in ["localhost", "0.0.0.0", "[::]", "app.localhost"] {
        let r = via(target, addr.port()).await;
        assert_eq!(r["tag"], "v6", "{target}");
    }
}

#[tokio::test]
async fn upstream_on_ipv4_loopback_only() {
    let addr = serve_listener(bind(V4).await.unwrap(), "v4", Speaks::Http1);
    for target in ["localhost", "0.0.0.0", "[::]", "app.localhost"] {
        let r = via(target, addr.port()).await;
        assert_eq!(r["tag"], "v4", "{target}");
    }
}

#[tokio::test]
async fn upstream_on_ipv4_wildcard() {
    let l = bind("0.0.0.0:0".parse().unwrap()).await.unwrap();
    let addr = serve_listener(l, "any4", Speaks::Http1);
    for target in ["localhost", "0.0.0.0"] {
        let r = via(target, addr.port()).await;
        assert_eq!(r["tag"], "any4", "{target}");
    }
}

#[tokio::test]
async fn upstream_on_both_loopbacks_prefers_ipv6() {
    let (v6, v4) = both_loopbacks().await;
    let port = serve_listener(v6, "v6", Speaks::Http1).port();
    serve_listener(v4, "v4", Speaks::Http1);
    for target in ["localhost", "0.0.0.0"] {
        let r = via(target, port).await;
        assert_eq!(r["tag"], "v6", "::1 is tried first ({target})");
    }
}

#[tokio::test]
async fn upstream_on_dual_stack_wildcard() {
    // Dual-stack set on the socket itself, whatever the machine's net.ipv6.bindv6only says.
    let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
    socket.set_only_v6(false).unwrap();
    socket
        .bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())
        .unwrap();
    socket.listen(128).unwrap();
    socket.set_nonblocking(true).unwrap();
    let l = TcpListener::from_std(socket.into()).unwrap();
    let port = l.local_addr().unwrap().port();
    let v4 = tokio::time::timeout(
        Duration::from_secs(10),
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)),
    )
    .await;
    assert!(
        matches!(v4, Ok(Ok(_))),
        "a dual-stack [::] listener is not reachable on 127.0.0.1: {v4:?}"
    );
    drop(v4);
    serve_listener(l, "dual", Speaks::Http1);
    for target in ["localhost", "0.0.0.0", "[::]"] {
        let r = via(target, port).await;
        assert_eq!(r["tag"], "dual", "{target}");
    }
}

#[tokio::test]
async fn blackholed_ipv6_falls_back_to_ipv4_after_the_attempt_delay() {
    // Same port: the v4 server is real, the v6 listener swallows SYNs.
    let mut found = None;
    for _ in 0..20 {
        let v4 = bind(V4).await.unwrap();
        let port = v4.local_addr().unwrap().port();
        if let Some(hole) = blackhole_v6(port).await {
            found = Some((v4, hole));
            break;
        }
    }
    let (v4, hole) = found.expect("a port free on both loopbacks");
    let port = serve_listener(v4, "v4", Speaks::Http1).port();

    // A direct connect to [::1] hangs: the premise of the test.
    let direct = tokio::time::timeout(
        Duration::from_millis(300),
        TcpStream::connect((Ipv6Addr::LOCALHOST, port)),
    )
    .await;
    assert!(direct.is_err(), "[::1]:{port} should hang, got {direct:?}");

    for (delay, configure) in [
        (
            sandbox_gateway::connect::DEFAULT_ATTEMPT_DELAY,
            None::<Duration>,
        ),
        (Duration::from_millis(600), Some(Duration::from_millis(600))),
    ] {
        // A long connect timeout: dialled one after the other, [::1] would hold the request for
        // half of it (30 s) before 127.0.0.1 got its turn.
        let gw = gateway(&format!("http://localhost:{port}"), |b| {
            let b = b.connect_timeout(Duration::from_secs(60));
            match configure {
                Some(d) => b.connect(|c| c.attempt_delay(d)),
                None => b,
            }
        })
        .await;
        let start = Instant::now();
        let r = get_h1(gw).await;
        let took = start.elapsed();
        assert_eq!(r["tag"], "v4");
        assert!(
            took >= delay,
            "127.0.0.1 is only tried once the attempt delay ({delay:?}) passed, took {took:?}"
        );
        assert!(
            took < delay + Duration::from_secs(8),
            "127.0.0.1 is raced after the attempt delay, not after [::1] times out; took {took:?}"
        );
    }
    drop(hole);
}

#[tokio::test]
async fn refused_ipv6_falls_through_at_once_despite_a_long_attempt_delay() {
    // 127.0.0.1:port serves; nothing listens on [::1]:port.
    let mut found = None;
    for _ in 0..20 {
        let v4 = bind(V4).await.unwrap();
        let port = v4.local_addr().unwrap().port();
        if std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, port)).is_ok() {
            found = Some(v4);
            break;
        }
    }
    let port = serve_listener(found.expect("a port free on ::1"), "v4", Speaks::Http1).port();
    let gw = gateway(&format!("http://localhost:{port}"), |b| {
        b.connect(|c| c.attempt_delay(Duration::from_secs(10)))
    })
    .await;
    let start = Instant::now();
    let r = get_h1(gw).await;
    let took = start.elapsed();
    assert_eq!(r["tag"], "v4");
    assert!(
        took < Duration::from_secs(5),
        "a refusal moves on without waiting out the 10 s attempt delay, took {took:?}"
    );
}

#[tokio::test]
async fn h2_downstream_to_h1_upstream_sends_a_clean_http1_head() {
    // A raw upstream that answers with the request head it received.
    let l = bind(V4).await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let res = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    head.len()
                );
                let _ = s.write_all(res.as_bytes()).await;
                let _ = s.write_all(&head).await;
            });
        }
    });
    let gw = gateway(&format!("http://{up}"), |b| b).await;
    let client: Client<HttpConnector, TestBody> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    let res = within(
        20,
        client.request(
            Request::get(format!("http://{gw}/x?y=1"))
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.version(), http::Version::HTTP_2);
    let head = text(res).await;
    let lines: Vec<&str> = head.split("\r\n").collect();
    assert_eq!(lines[0], "GET /x?y=1 HTTP/1.1", "{head}");
    assert!(
        lines
            .iter()
            .skip(1)
            .all(|l| !l.starts_with(':') && !l.to_ascii_lowercase().starts_with("connection")),
        "no pseudo-header, no Connection: {head}"
    );
    let hosts: Vec<_> = lines
        .iter()
        .filter(|l| l.to_ascii_lowercase().starts_with("host:"))
        .collect();
    assert_eq!(
        hosts,
        [&format!("host: {gw}").as_str()],
        "the browser's :authority became Host: {head}"
    );
    assert!(head.contains("cookie: a=1; b=2\r\n"), "{head}");
}

#[tokio::test]
async fn h2c_prior_knowledge_upstream() {
    let addr = serve_listener(bind(V4).await.unwrap(), "h2c", Speaks::Http2);
    let target = format!("localhost:{}", addr.port());
    let gw = gateway(&format!("http://{target}"), |b| {
        b.http2_prior_knowledge(true)
    })
    .await;
    for r in [get_h1(gw).await, get_h2(gw).await] {
        assert_eq!(r["version"], "HTTP/2.0");
        assert_eq!(r["authority"], target.as_str());
        assert!(
            r["host"].is_null() || r["host"] == target.as_str(),
            "no Host that differs from :authority: {r}"
        );
    }

    // Without prior knowledge, a cleartext upstream is spoken to in HTTP/1.1 (and this one refuses).
    let gw = gateway(&format!("http://{target}"), |b| b).await;
    let res = within(
        20,
        client().request(
            Request::get(format!("http://{gw}/x"))
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn h1_downstream_never_sends_connection_headers_to_an_h2_upstream() {
    // An HTTP/2 server treats a connection-specific header as a protocol error (RFC 9113 §8.2.2).
    let addr = serve_listener(bind(V4).await.unwrap(), "h2c", Speaks::Http2);
    let gw = gateway(&format!("http://{addr}"), |b| b.http2_prior_knowledge(true)).await;
    let res = within(
        20,
        client().request(
            Request::get(format!("http://{gw}/x"))
                .header("connection", "keep-alive, x-hop")
                .header("x-hop", "1")
                .header("keep-alive", "timeout=5")
                .header("te", "trailers")
                .header("x-end", "1")
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    let r = report_of(res).await;
    assert_eq!(r["version"], "HTTP/2.0");
    let names: Vec<&str> = r["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for hop in ["connection", "x-hop", "keep-alive", "host"] {
        assert!(
            !names.contains(&hop),
            "{hop} reached the h2 upstream: {names:?}"
        );
    }
    assert!(names.contains(&"x-end"), "{names:?}");
    assert!(
        names.contains(&"te"),
        "TE: trailers is allowed in h2: {names:?}"
    );
}

#[cfg(feature = "tls")]
mod tls {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use sandbox_gateway::connect::Connector;

    use super::*;

    /// A private CA and a `localhost` certificate it signed.
    struct Pki {
        ca: CertificateDer<'static>,
        leaf: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
    }

    fn pki() -> Pki {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "sandbox-gateway test CA");
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        Pki {
            ca: ca.der().clone(),
            leaf: leaf.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }

    /// A TLS upstream on 127.0.0.1 offering exactly `alpn`, speaking only what it offers.
    async fn tls_upstream(pki: &Pki, alpn: &'static [u8]) -> SocketAddr {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.leaf.clone()], pki.key.clone_key())
        .unwrap();
        config.alpn_protocols = vec![alpn.to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = bind(V4).await.unwrap();
        let local = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    // A client that did not pick our one protocol is not served (like a CDN that
                    // only speaks h2).
                    if tls.get_ref().1.alpn_protocol() != Some(alpn) {
                        return;
                    }
                    let speaks = if alpn == b"h2" {
                        Speaks::Http2
                    } else {
                        Speaks::Http1
                    };
                    serve_conn(TokioIo::new(tls), "tls", speaks).await;
                });
            }
        });
        local
    }

    async fn tls_gateway(pki: &Pki, upstream: &str) -> SocketAddr {
        let connector = Connector::builder().add_root_certificate(pki.ca.clone());
        gateway(upstream, |b| b.connector(connector)).await
    }

    #[tokio::test]
    async fn tls_upstream_offering_only_h2_is_spoken_to_in_h2() {
        let pki = pki();
        let up = tls_upstream(&pki, b"h2").await;
        let target = format!("localhost:{}", up.port());
        let gw = tls_gateway(&pki, &format!("https://{target}")).await;
        for r in [get_h1(gw).await, get_h2(gw).await] {
            assert_eq!(r["version"], "HTTP/2.0", "{r}");
            assert_eq!(r["authority"], target.as_str(), "{r}");
            assert!(
                r["host"].is_null() || r["host"] == target.as_str(),
                "no Host that differs from :authority: {r}"
            );
        }
    }

    #[tokio::test]
    async fn tls_upstream_offering_only_http1_is_spoken_to_in_http1() {
        let pki = pki();
        let up = tls_upstream(&pki, b"http/1.1").await;
        let target = format!("localhost:{}", up.port());
        let gw = tls_gateway(&pki, &format!("https://{target}")).await;
        for r in [get_h1(gw).await, get_h2(gw).await] {
            assert_eq!(r["version"], "HTTP/1.1", "{r}");
            assert_eq!(
                r["host"],
                target.as_str(),
                "Host matches the name TLS was sent to: {r}"
            );
        }
    }

    #[tokio::test]
    async fn tls_upstream_signed_by_an_unknown_ca_is_a_502_naming_tls() {
        let pki = pki();
        let up = tls_upstream(&pki, b"h2").await;
        // Only the webpki roots: the private CA is not trusted.
        let gw = gateway(&format!("https://localhost:{}", up.port()), |b| b).await;
        let res = within(
            20,
            client().request(
                Request::get(format!("http://{gw}/x"))
                    .body(empty())
                    .unwrap(),
            ),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        let msg = text(res).await;
        assert!(msg.contains("TLS"), "{msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// Failures to connect, and names resolved by a resolver of the embedder's own.

type Name = hyper_util::client::legacy::connect::dns::Name;

/// A resolver answering from a fixed table, as a platform's own DNS would; other names do not
/// resolve.
#[derive(Clone)]
struct Table(std::sync::Arc<Vec<(&'static str, Vec<std::net::IpAddr>)>>);

impl Table {
    fn new(entries: Vec<(&'static str, Vec<std::net::IpAddr>)>) -> Self {
        Table(std::sync::Arc::new(entries))
    }
}

impl tower::Service<Name> for Table {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let found = self
            .0
            .iter()
            .find(|(n, _)| *n == name.as_str())
            .map(|(_, ips)| {
                ips.iter()
                    .map(|ip| SocketAddr::new(*ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter()
            });
        std::future::ready(found.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{name}: no such name"),
            )
        }))
    }
}

/// A gateway proxying to `upstream`, names resolved by `table`.
async fn gateway_resolving(
    upstream: &str,
    table: Table,
    configure: impl FnOnce(
        sandbox_gateway::connect::ConnectorBuilder<Table>,
    ) -> sandbox_gateway::connect::ConnectorBuilder<Table>,
) -> SocketAddr {
    let proxy = ReverseProxy::builder()
        .connector(configure(sandbox_gateway::connect::ConnectorBuilder::new(
            table,
        )))
        .upstream(upstream.parse().unwrap())
        .response_timeout(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    serve(proxy).await
}

/// GET `/x` through the gateway: the status and the body.
async fn answer(gw: SocketAddr) -> (StatusCode, String) {
    let res = within(
        30,
        client().request(
            Request::get(format!("http://{gw}/x"))
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .expect("gateway answered");
    let status = res.status();
    (status, text(res).await)
}

#[tokio::test]
async fn connect_timeout_is_a_504_naming_the_addresses_tried() {
    let (hole, _held) = blackhole_v6(0).await.expect("a listener on [::1]");
    let port = hole.local_addr().unwrap().port();
    let gw = gateway(&format!("http://[::1]:{port}"), |b| {
        b.connect_timeout(Duration::from_millis(500))
    })
    .await;
    let start = Instant::now();
    let (status, body) = answer(gw).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(
        body.contains(&format!(
            "could not connect to upstream [::1]:{port} (tried [::1]:{port}): connect timed out"
        )),
        "{body}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the timeout bounds it"
    );
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_a_502_naming_it() {
    let gw = gateway_resolving("http://nowhere.test:8080", Table::new(vec![]), |c| c).await;
    let (status, body) = answer(gw).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body.contains(
            "could not connect to upstream nowhere.test:8080 (tried no address): name did not resolve"
        ),
        "{body}"
    );
}

/// Happy Eyeballs is not only for `localhost`: a name of the embedder's resolver answering a
/// blackholed `::1` first and a serving `127.0.0.1` second reaches `127.0.0.1` after the attempt
/// delay, long before the connect timeout.
#[tokio::test]
async fn happy_eyeballs_for_a_name_from_a_custom_resolver() {
    let mut found = None;
    for _ in 0..20 {
        let v4 = bind(V4).await.unwrap();
        let port = v4.local_addr().unwrap().port();
        if let Some(hole) = blackhole_v6(port).await {
            found = Some((v4, hole));
            break;
        }
    }
    let (v4, hole) = found.expect("a port free on both loopbacks");
    let port = serve_listener(v4, "v4", Speaks::Http1).port();
    let table = Table::new(vec![(
        "app.test",
        vec![Ipv6Addr::LOCALHOST.into(), Ipv4Addr::LOCALHOST.into()],
    )]);
    let gw = gateway_resolving(&format!("http://app.test:{port}"), table, |c| {
        c.connect_timeout(Duration::from_secs(60))
            .attempt_delay(Duration::from_millis(300))
    })
    .await;
    let start = Instant::now();
    let (status, body) = answer(gw).await;
    let took = start.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["tag"], "v4");
    assert!(
        took >= Duration::from_millis(300),
        "::1 was tried first, took {took:?}"
    );
    assert!(
        took < Duration::from_secs(20),
        "127.0.0.1 raced after the attempt delay, not after the 30 s half of the timeout: {took:?}"
    );
    drop(hole);
}
