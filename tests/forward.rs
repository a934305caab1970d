//! `forward::ApiForward` over real sockets: loopback upstreams (explicitly allowed through the SSRF
//! guard), the forwarder served by hyper, and a hyper client.
//!
//! Streaming tests run in lockstep: the upstream writes event k+1 only after the test client
//! acknowledged event k over a side channel, so they prove that each event reaches the client
//! before the next one is written (any buffering deadlocks and fails the bounded wait).

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sandbox_gateway::connect::LocalhostResolver;
use sandbox_gateway::forward::{ApiForward, Callers, Secret, SsrfGuard, Upstream};
use support::{client, closed_port_addr, empty, full, serve, serve_fn, within, BoxError, TestBody};
use tokio::sync::mpsc;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;

const EVENTS: usize = 12;
const KEY: &str = "sk-test-4f1d2c9e8b7a";

fn body_stream(rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>) -> TestBody {
    StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|f| (f, rx))
    }))
    .boxed_unsync()
}

/// An SSE upstream that writes event k+1 only after the client acknowledged event k. Its media
/// type is spelled `Text/Event-Stream`, which tower-http's compression predicate (a case-sensitive
/// prefix match) would not recognise without the forwarder's SSE rules.
async fn lockstep_upstream(acks: mpsc::Receiver<usize>) -> SocketAddr {
    let acks = Arc::new(Mutex::new(Some(acks)));
    serve_fn(move |_req: Request<Incoming>| {
        let acks = acks.clone();
        async move {
            // A second stream is answered 409, which the test sees (a panic here would only
            // show as a 502).
            let Some(mut acks) = acks.lock().unwrap().take() else {
                return Response::builder()
                    .status(StatusCode::CONFLICT)
                    .body(full("a second stream"))
                    .unwrap();
            };
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(async move {
                for k in 0..EVENTS {
                    let event = format!("id: {k}\ndata: token {k}\n\n");
                    if tx.send(Ok(Frame::data(Bytes::from(event)))).await.is_err() {
                        return;
                    }
                    match tokio::time::timeout(Duration::from_secs(10), acks.recv()).await {
                        Ok(Some(a)) if a == k => {}
                        _ => return,
                    }
                }
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "Text/Event-Stream")
                .header(header::CACHE_CONTROL, "no-cache")
                .body(body_stream(rx))
                .unwrap()
        }
    })
    .await
}

fn allowed(name: &str, addr: SocketAddr) -> Upstream {
    Upstream::new(name, format!("http://{addr}"))
        .allow_methods([Method::GET, Method::POST])
        .allow_paths(["/"])
        .allow_private(true)
}

fn get(uri: String) -> Request<TestBody> {
    Request::get(uri).body(empty()).unwrap()
}

async fn read_events(res: Response<Incoming>, acks: mpsc::Sender<usize>) {
    let mut body = res.into_body();
    let mut seen = String::new();
    for k in 0..EVENTS {
        let want = format!("data: token {k}\n\n");
        within(5, async {
            while !seen.contains(&want) {
                let frame = body.frame().await.expect("stream open").expect("no error");
                if let Ok(data) = frame.into_data() {
                    seen.push_str(&String::from_utf8_lossy(&data));
                }
            }
        })
        .await;
        acks.send(k).await.expect("upstream waits for the ack");
    }
    let rest = within(5, body.collect())
        .await
        .expect("clean end")
        .to_bytes();
    assert!(rest.is_empty(), "nothing after the last event: {rest:?}");
}

async fn lockstep_case(compress: bool) {
    let (ack_tx, ack_rx) = mpsc::channel(1);
    let upstream = lockstep_upstream(ack_rx).await;
    let forward = ApiForward::builder()
        .callers(Callers::anyone())
        .upstream(allowed("events", upstream))
        .build()
        .unwrap();
    let gateway = if compress {
        serve(
            ServiceBuilder::new()
                .layer(CompressionLayer::new())
                .service(forward),
        )
        .await
    } else {
        serve(forward).await
    };
    let mut req = get(format!("http://{gateway}/events/stream"));
    req.headers_mut()
        .insert(header::ACCEPT_ENCODING, "gzip".parse().unwrap());
    let res = within(5, client().request(req)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers();
    assert_eq!(h[header::CONTENT_TYPE], "text/event-stream");
    assert_eq!(h[header::CACHE_CONTROL], "no-cache, no-transform");
    assert_eq!(h["x-accel-buffering"], "no");
    assert!(!h.contains_key(header::CONTENT_ENCODING), "{h:?}");
    assert!(!h.contains_key(header::CONTENT_LENGTH));
    read_events(res, ack_tx).await;
}

#[tokio::test]
async fn sse_streams_event_by_event_through_the_forwarder() {
    lockstep_case(false).await;
}

#[tokio::test]
async fn sse_streams_event_by_event_under_compression_layer() {
    lockstep_case(true).await;
}

/// Every request an upstream received: method, path, headers.
type Seen = Arc<Mutex<Vec<(Method, String, HeaderMap)>>>;

async fn recording_upstream(seen: Seen) -> SocketAddr {
    serve_fn(move |req: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            let ok = req
                .headers()
                .get(header::AUTHORIZATION)
                .is_some_and(|v| v == format!("Bearer {KEY}").as_str());
            let (parts, body) = req.into_parts();
            let len = body
                .collect()
                .await
                .map(|b| b.to_bytes().len())
                .unwrap_or(0);
            seen.lock().unwrap().push((
                parts.method.clone(),
                parts.uri.path_and_query().unwrap().to_string(),
                parts.headers.clone(),
            ));
            let mut res = Response::new(full(format!("auth_ok={ok} body_len={len}")));
            res.headers_mut()
                .insert(header::SET_COOKIE, "upstream=1; Path=/".parse().unwrap());
            res
        }
    })
    .await
}

fn keyed(addr: SocketAddr) -> Upstream {
    Upstream::new("api", format!("http://{addr}/v1"))
        .allow_methods([Method::POST])
        .allow_paths(["/chat/completions", "/models"])
        .inject_header(header::AUTHORIZATION, Secret::bearer(KEY).unwrap())
        .allow_private(true)
}

/// The message of the forwarder's JSON error body.
fn message(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"]["message"]
        .as_str()
        .expect("a message")
        .to_owned()
}

async fn assert_no_key(res: Response<Incoming>) -> (StatusCode, HeaderMap, String) {
    let (status, headers, body, found) = find_key(res).await;
    assert_eq!(found, None, "key in the response: {headers:?} {body}");
    (status, headers, body)
}

/// The response, and where in it the key shows (a header's name, or `body`), if anywhere.
async fn find_key(res: Response<Incoming>) -> (StatusCode, HeaderMap, String, Option<String>) {
    let status = res.status();
    let headers = res.headers().clone();
    let mut found = headers
        .iter()
        .find(|(_, value)| String::from_utf8_lossy(value.as_bytes()).contains(KEY))
        .map(|(name, _)| name.to_string());
    let body = support::text(res).await;
    if found.is_none() && body.contains(KEY) {
        found = Some("body".to_owned());
    }
    (status, headers, body, found)
}

/// The key check is live: an upstream that reflects its request headers (as some APIs do in
/// error bodies) gets the injected key back to the client through the forwarder, which passes
/// upstream bodies as they are, and `find_key` sees it there. The refusal tests below use the
/// same check on answers the forwarder writes itself.
#[tokio::test]
async fn key_check_sees_a_key_reflected_by_the_upstream() {
    let upstream = serve_fn(|req: Request<Incoming>| async move {
        let reflected: String = req
            .headers()
            .iter()
            .map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())))
            .collect();
        Response::new(full(reflected))
    })
    .await;
    let forward = ApiForward::builder()
        .callers(Callers::anyone())
        .upstream(keyed(upstream))
        .build()
        .unwrap();
    let gateway = serve(forward).await;
    let req = Request::post(format!("http://{gateway}/api/models"))
        .body(empty())
        .unwrap();
    let res = within(10, client().request(req)).await.unwrap();
    let (status, _, body, found) = find_key(res).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains(&format!("authorization: Bearer {KEY}")),
        "{body}"
    );
    assert_eq!(found.as_deref(), Some("body"));
}

#[tokio::test]
async fn server_key_reaches_the_upstream_browser_credentials_do_not() {
    let seen: Seen = Arc::default();
    let upstream = recording_upstream(seen.clone()).await;
    let forward = ApiForward::builder()
        .callers(Callers::anyone())
        .upstream(keyed(upstream))
        .build()
        .unwrap();
    assert!(!format!("{forward:?}").contains(KEY));
    let gateway = serve(forward).await;

    let req = Request::post(format!("http://{gateway}/api/chat/completions?stream=true"))
        .header(header::COOKIE, "session=browser-cookie")
        .header(header::AUTHORIZATION, "Bearer browser-token")
        .header("x-forwarded-for", "203.0.113.9")
        .header(header::FORWARDED, "for=203.0.113.9")
        .header(header::ORIGIN, "https://app.webcontainer-api.io")
        .header(header::REFERER, "https://app.webcontainer-api.io/page")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-app", "kept")
        .body(full(r#"{"prompt":"hi"}"#))
        .unwrap();
    let res = within(5, client().request(req)).await.unwrap();
    let (status, headers, body) = assert_no_key(res).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "auth_ok=true body_len=15");
    assert!(
        !headers.contains_key(header::SET_COOKIE),
        "upstream cookies never land on the gateway's origin"
    );

    let seen = seen.lock().unwrap();
    let (method, path, h) = &seen[0];
    assert_eq!(method, Method::POST);
    assert_eq!(path, "/v1/chat/completions?stream=true");
    assert_eq!(h.get_all(header::AUTHORIZATION).iter().count(), 1);
    assert_eq!(h[header::AUTHORIZATION], format!("Bearer {KEY}").as_str());
    assert_eq!(h[header::HOST], upstream.to_string().as_str());
    assert_eq!(h["x-app"], "kept");
    for gone in [
        "cookie",
        "x-forwarded-for",
        "forwarded",
        "origin",
        "referer",
    ] {
        assert!(!h.contains_key(gone), "{gone} reached the upstream");
    }
    for (name, value) in h {
        let v = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !v.contains("browser-token") && !v.contains("browser-cookie"),
            "browser credential in upstream header {name}"
        );
    }
}

#[tokio::test]
async fn refusals_are_short_answers_without_the_key() {
    let seen: Seen = Arc::default();
    let upstream = recording_upstream(seen.clone()).await;
    let down = closed_port_addr().await;
    let forward = ApiForward::builder()
        .callers(Callers::anyone())
        .upstream(keyed(upstream))
        .upstream(
            Upstream::new("down", format!("http://{down}"))
                .allow_methods([Method::GET])
                .allow_paths(["/"])
                .inject_header(header::AUTHORIZATION, Secret::bearer(KEY).unwrap())
                .allow_private(true),
        )
        .body_limit(1024)
        .build()
        .unwrap();
    let gateway = serve(forward).await;
    let c = client();
    let send = |req: Request<TestBody>| {
        let c = c.clone();
        async move { assert_no_key(within(10, c.request(req)).await.unwrap()).await }
    };
    let post = |path: &str, body: TestBody| {
        Request::post(format!("http://{gateway}{path}"))
            .body(body)
            .unwrap()
    };

    let (s, _, body) = send(post("/nope/chat/completions", empty())).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        "{\"error\":{\"type\":\"not_found\",\"message\":\"no upstream of that name\"}}\n"
    );

    let (s, _, _) = send(post("/", empty())).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, h, body) = send(get(format!("http://{gateway}/api/models"))).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(h[header::ALLOW], "POST");
    assert_eq!(
        message(&body),
        "method GET is not allowed for this upstream"
    );

    for path in ["/api/admin/keys", "/api/chat/completionsX", "/api/", "/api"] {
        let (s, _, body) = send(post(path, empty())).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
        assert!(body.contains("is not allowed for this upstream"), "{body}");
    }

    for path in [
        "/api/chat/completions/../../admin",
        "/api/chat%2fcompletions",
    ] {
        let (s, _, _) = send(post(path, empty())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}");
    }

    // Too large by Content-Length: refused before anything is sent.
    let (s, _, body) = send(post("/api/chat/completions", full(vec![b'x'; 2048]))).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        message(&body),
        "request body larger than the limit of 1024 bytes"
    );

    // Too large while streaming (no Content-Length): cut off at the limit.
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        for _ in 0..8 {
            if tx
                .send(Ok(Frame::data(Bytes::from(vec![b'y'; 512]))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let (s, _, body) = send(post("/api/chat/completions", body_stream(rx))).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        message(&body),
        "request body larger than the limit of 1024 bytes"
    );

    // Within the limit, streamed: forwarded whole.
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        for _ in 0..2 {
            let _ = tx.send(Ok(Frame::data(Bytes::from(vec![b'y'; 512])))).await;
        }
    });
    let (s, _, body) = send(post("/api/chat/completions", body_stream(rx))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, "auth_ok=true body_len=1024");

    let (s, _, body) = send(get(format!("http://{gateway}/down/x"))).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert!(body.contains("connection refused"), "{body}");

    // Only the two allowed requests reached the upstream.
    assert_eq!(seen.lock().unwrap().len(), 1 + 1);
}

#[tokio::test]
async fn silent_upstream_is_504() {
    let upstream = serve_fn(|_req: Request<Incoming>| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Response::new(empty())
    })
    .await;
    let forward = ApiForward::builder()
        .callers(Callers::anyone())
        .upstream(allowed("slow", upstream))
        .response_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let gateway = serve(forward).await;
    let res = within(10, client().request(get(format!("http://{gateway}/slow/"))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(support::text(res).await.contains("sent no response"));
}

/// Literal-IP upstreams of every refused class, in every spelling. No connection is attempted.
#[tokio::test]
async fn ssrf_guard_refuses_every_internal_address_class() {
    let table: &[(&str, &str)] = &[
        ("http://127.0.0.1:9", "loopback"),
        ("http://127.8.9.10", "loopback"),
        ("http://[::1]:9", "loopback"),
        ("http://10.0.0.1", "private"),
        ("http://172.16.5.4", "private"),
        ("http://192.168.0.1", "private"),
        ("http://[fc00::1]", "private"),
        ("http://[fd12:3456::1]", "private"),
        ("http://169.254.1.1", "link-local"),
        ("http://[fe80::1]", "link-local"),
        ("http://100.64.0.1", "carrier-grade NAT"),
        ("http://169.254.169.254/latest", "cloud metadata"),
        ("http://[fd00:ec2::254]", "cloud metadata"),
        ("http://0.0.0.0:9", "unspecified"),
        ("http://[::]:9", "unspecified"),
        ("http://0.1.2.3", "this network"),
        ("http://255.255.255.255", "broadcast"),
        ("http://224.0.0.1", "multicast"),
        ("http://[ff02::1]", "multicast"),
        ("http://192.0.2.1", "documentation"),
        ("http://198.51.100.1", "documentation"),
        ("http://203.0.113.1", "documentation"),
        ("http://[2001:db8::1]", "documentation"),
        ("http://198.18.0.1", "benchmarking"),
        ("http://240.0.0.1", "reserved"),
        ("http://192.0.0.8", "reserved"),
        (
            "http://[::ffff:127.0.0.1]",
            "loopback address (IPv4-mapped IPv6)",
        ),
        (
            "http://[::ffff:169.254.169.254]",
            "cloud metadata address (IPv4-mapped IPv6)",
        ),
        (
            "http://[::ffff:a00:1]",
            "private address (IPv4-mapped IPv6)",
        ),
        (
            "http://[::127.0.0.1]",
            "loopback address (IPv4-compatible IPv6)",
        ),
        (
            "http://[64:ff9b::a9fe:a9fe]",
            "cloud metadata address (NAT64 IPv6)",
        ),
        ("http://[2002:7f00:1::]", "loopback address (6to4 IPv6)"),
        (
            "http://2130706433",
            "non-canonical IPv4 spelling of a loopback",
        ),
        (
            "http://017700000001",
            "non-canonical IPv4 spelling of a loopback",
        ),
        (
            "http://0177.0.0.1",
            "non-canonical IPv4 spelling of a loopback",
        ),
        ("http://0x7f.1", "non-canonical IPv4 spelling of a loopback"),
        ("http://127.1", "non-canonical IPv4 spelling of a loopback"),
        (
            "http://0xa9.0xfe.0xa9.0xfe",
            "non-canonical IPv4 spelling of a cloud metadata",
        ),
        (
            "http://134744072",
            "non-canonical IPv4 spelling of an address",
        ),
    ];
    let mut builder = ApiForward::builder().callers(Callers::anyone());
    for (i, (base, _)) in table.iter().enumerate() {
        builder = builder.upstream(
            Upstream::new(format!("u{i}"), *base)
                .allow_methods([Method::GET])
                .allow_paths(["/"])
                .inject_header(header::AUTHORIZATION, Secret::bearer(KEY).unwrap()),
        );
    }
    let gateway = serve(builder.build().unwrap()).await;
    let c = client();
    for (i, (base, class)) in table.iter().enumerate() {
        let res = within(10, c.request(get(format!("http://{gateway}/u{i}/x"))))
            .await
            .unwrap();
        let (status, _, body) = assert_no_key(res).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{base}: {body}");
        assert!(
            message(&body).starts_with("refused by the SSRF guard: upstream host"),
            "{base}: {body}"
        );
        assert!(body.contains(class), "{base}: {body}");
    }
}

/// Names that resolve to internal addresses are refused even while a server listens there.
#[tokio::test]
async fn ssrf_guard_refuses_names_resolving_inside() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let inside = serve_fn(move |_req: Request<Incoming>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Response::new(full("internal")) }
    })
    .await;
    let port = inside.port();
    // A fixed table of names, as a platform's own DNS would answer them; other names (localhost)
    // go to the default resolver.
    let table = tower::service_fn(
        |name: hyper_util::client::legacy::connect::dns::Name| async move {
            let ips: Vec<&str> = match name.as_str() {
                "metadata.test" => vec!["169.254.169.254"],
                "intranet.test" => vec!["10.1.2.3"],
                "rebind.test" => vec!["93.184.215.14", "127.0.0.1"],
                "mapped.test" => vec!["::ffff:127.0.0.1"],
                _ => {
                    let mut system = LocalhostResolver::new();
                    let addrs = tower::Service::call(&mut system, name).await?;
                    return Ok(addrs.collect::<Vec<_>>().into_iter());
                }
            };
            Ok::<_, std::io::Error>(
                ips.into_iter()
                    .map(|ip| SocketAddr::new(ip.parse().unwrap(), 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            )
        },
    );
    let cases = [
        (format!("http://localhost:{port}"), "resolves to a loopback"),
        (
            format!("http://LOCALHOST.:{port}"),
            "resolves to a loopback",
        ),
        (
            format!("http://sub.localhost:{port}"),
            "resolves to a loopback",
        ),
        (
            "http://metadata.test".to_owned(),
            "resolves to a cloud metadata",
        ),
        ("http://intranet.test".to_owned(), "resolves to a private"),
        (
            format!("http://rebind.test:{port}"),
            "resolves to a loopback",
        ),
        (
            format!("http://mapped.test:{port}"),
            "resolves to a loopback address (IPv4-mapped IPv6)",
        ),
    ];
    let mut builder = ApiForward::builder()
        .callers(Callers::anyone())
        .guard(SsrfGuard::new().resolver(table));
    for (i, (base, _)) in cases.iter().enumerate() {
        builder = builder.upstream(
            Upstream::new(format!("n{i}"), base.as_str())
                .allow_methods([Method::GET])
                .allow_paths(["/"]),
        );
    }
    let gateway = serve(builder.build().unwrap()).await;
    for (i, (base, class)) in cases.iter().enumerate() {
        let res = within(10, client().request(get(format!("http://{gateway}/n{i}/"))))
            .await
            .unwrap();
        let status = res.status();
        let body = support::text(res).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{base}: {body}");
        assert!(body.contains(class), "{base}: {body}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing reached the internal server"
    );
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let internal = serve_fn(move |_req: Request<Incoming>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Response::new(full("secret internal data")) }
    })
    .await;
    let redirector = serve_fn(move |_req: Request<Incoming>| async move {
        Response::builder()
            .status(StatusCode::FOUND)
            .header(
                header::LOCATION,
                format!("http://{internal}/latest/meta-data"),
            )
            .body(full("moved"))
            .unwrap()
    })
    .await;
    let forward = ApiForward::builder()
        .callers(Callers::anyone())
        .upstream(allowed("r", redirector))
        .build()
        .unwrap();
    let gateway = serve(forward).await;
    let res = within(5, client().request(get(format!("http://{gateway}/r/go"))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(
        res.headers()[header::LOCATION],
        format!("http://{internal}/latest/meta-data").as_str()
    );
    assert_eq!(support::text(res).await, "moved");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn loopback_allowed_by_cidr_works_and_other_hosts_stay_refused() {
    let upstream = serve_fn(|req: Request<Incoming>| async move {
        Response::new(full(format!("hello {}", req.uri().path())))
    })
    .await;
    let forward = ApiForward::builder()
        .callers(Callers::anyone())
        .guard(SsrfGuard::new().allow_cidr("127.0.0.0/8".parse().unwrap()))
        .upstream(
            Upstream::new("local", format!("http://{upstream}"))
                .allow_methods([Method::GET])
                .allow_paths(["/"]),
        )
        .upstream(
            Upstream::new("v6", format!("http://[::1]:{}", upstream.port()))
                .allow_methods([Method::GET])
                .allow_paths(["/"]),
        )
        .build()
        .unwrap();
    let gateway = serve(forward).await;
    let res = within(
        5,
        client().request(get(format!("http://{gateway}/local/a/b"))),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(support::text(res).await, "hello /a/b");
    let res = within(5, client().request(get(format!("http://{gateway}/v6/"))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

/// An HTTPS upstream that offers only `h2` by ALPN, with a self-signed certificate for
/// `localhost`. Answers with the HTTP version and whether the key arrived.
async fn h2_only_tls_upstream() -> (SocketAddr, Vec<u8>) {
    tls_h2_upstream(|req: Request<Incoming>| async move {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v == format!("Bearer {KEY}").as_str());
        Response::new(full(format!("{:?} auth_ok={ok}", req.version())))
    })
    .await
}

/// Serves `f` over TLS with ALPN `h2` only and a self-signed certificate for `localhost`; returns
/// the address and the certificate (DER).
async fn tls_h2_upstream<F, Fut>(f: F) -> (SocketAddr, Vec<u8>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<TestBody>> + Send + 'static,
{
    use tokio_rustls::rustls;
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        ck.signing_key.serialize_der(),
    ));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let f = f.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let f = f.clone();
                    async move { Ok::<_, Infallible>(f(req).await) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, cert.to_vec())
}

#[tokio::test]
async fn https_upstream_speaking_only_h2() {
    let (addr, cert) = h2_only_tls_upstream().await;
    let forward = ApiForward::builder()
        .callers(Callers::anyone())
        .add_root_certificate(cert)
        .upstream(
            Upstream::new("tls", format!("https://localhost:{}", addr.port()))
                .allow_methods([Method::GET])
                .allow_paths(["/"])
                .inject_header(header::AUTHORIZATION, Secret::bearer(KEY).unwrap())
                .allow_private(true),
        )
        .build()
        .unwrap();
    let gateway = serve(forward).await;
    let res = within(10, client().request(get(format!("http://{gateway}/tls/x"))))
        .await
        .unwrap();
    let (status, _, body) = assert_no_key(res).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "HTTP/2.0 auth_ok=true");
}

#[tokio::test]
async fn sse_over_an_h2_only_https_upstream_streams_event_by_event() {
    let (ack_tx, ack_rx) = mpsc::channel(1);
    let acks = Arc::new(Mutex::new(Some(ack_rx)));
    let (addr, cert) = tls_h2_upstream(move |req: Request<Incoming>| {
        let acks = acks.clone();
        async move {
            // The version goes back to the test in a header, where a mismatch fails the test
            // (a panic here would only show as a 502).
            let version = format!("{:?}", req.version());
            let Some(mut acks) = acks.lock().unwrap().take() else {
                return Response::builder()
                    .status(StatusCode::CONFLICT)
                    .body(full("a second stream"))
                    .unwrap();
            };
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(async move {
                for k in 0..EVENTS {
                    let event = format!("data: token {k}\n\n");
                    if tx.send(Ok(Frame::data(Bytes::from(event)))).await.is_err() {
                        return;
                    }
                    match tokio::time::timeout(Duration::from_secs(10), acks.recv()).await {
                        Ok(Some(a)) if a == k => {}
                        _ => return,
                    }
                }
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .header("x-upstream-version", version)
                .body(body_stream(rx))
                .unwrap()
        }
    })
    .await;
    let forward = ApiForward::builder()
        .callers(Callers::anyone())
        .add_root_certificate(cert)
        .upstream(
            Upstream::new("llm", format!("https://localhost:{}/v1", addr.port()))
                .allow_methods([Method::POST])
                .allow_paths(["/chat/completions"])
                .allow_private(true),
        )
        .build()
        .unwrap();
    let gateway = serve(
        ServiceBuilder::new()
            .layer(CompressionLayer::new())
            .service(forward),
    )
    .await;
    let req = Request::post(format!("http://{gateway}/llm/chat/completions"))
        .header(header::ACCEPT_ENCODING, "gzip")
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(r#"{"messages":[]}"#))
        .unwrap();
    let res = within(10, client().request(req)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-upstream-version"], "HTTP/2.0");
    assert!(!res.headers().contains_key(header::CONTENT_ENCODING));
    read_events(res, ack_tx).await;
}

#[tokio::test]
async fn wildcard_upstream_allowed_private_reaches_the_local_server() {
    let upstream = serve_fn(|_req: Request<Incoming>| async { Response::new(full("here")) }).await;
    let base = format!("http://0.0.0.0:{}", upstream.port());
    let forward = ApiForward::builder()
        .callers(Callers::anyone())
        .upstream(
            Upstream::new("wild0", base.as_str())
                .allow_methods([Method::GET])
                .allow_paths(["/"])
                .allow_private(true),
        )
        .build()
        .unwrap();
    let gateway = serve(forward).await;
    let res = within(5, client().request(get(format!("http://{gateway}/wild0/"))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(support::text(res).await, "here");
}

/// A plain-text HTTP/2 client (prior knowledge), as a browser speaks h2 to a TLS gateway.
fn h2_client(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, TestBody>
{
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// An h2-only TLS upstream streaming an event every 20 ms (at most 500), which reports on
/// `reset` the event it was at when its response stream went away.
async fn endless_h2_upstream(reset: mpsc::Sender<usize>) -> (SocketAddr, Vec<u8>) {
    tls_h2_upstream(move |_req: Request<Incoming>| {
        let reset = reset.clone();
        async move {
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(async move {
                for k in 0..500 {
                    let event = Bytes::from(format!("data: {k}\n\n"));
                    if tx.send(Ok(Frame::data(event))).await.is_err() {
                        // hyper dropped the body: the stream was reset by the peer.
                        let _ = reset.send(k).await;
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(body_stream(rx))
                .unwrap()
        }
    })
    .await
}

fn h2_forwarder(addr: SocketAddr, cert: Vec<u8>) -> ApiForward {
    ApiForward::builder()
        .callers(Callers::anyone())
        .add_root_certificate(cert)
        .upstream(
            Upstream::new("llm", format!("https://localhost:{}/v1", addr.port()))
                .allow_methods([Method::POST])
                .allow_paths(["/"])
                .allow_private(true),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn h2_client_abort_resets_the_upstream_stream() {
    let (reset_tx, mut reset_rx) = mpsc::channel(1);
    let (addr, cert) = endless_h2_upstream(reset_tx).await;
    let gateway = serve(h2_forwarder(addr, cert)).await;
    for client in [h2_client(), client()] {
        let req = Request::post(format!("http://{gateway}/llm/chat/completions"))
            .body(full("{}"))
            .unwrap();
        let res = within(10, client.request(req)).await.unwrap();
        let mut body = res.into_body();
        for _ in 0..2 {
            let frame = within(10, body.frame()).await.unwrap().unwrap();
            assert!(frame.into_data().unwrap().starts_with(b"data: "));
        }
        // The browser aborts: the response body is dropped, the client stays.
        drop(body);
        let at = within(10, reset_rx.recv())
            .await
            .expect("the upstream saw the reset");
        assert!(
            at < 100,
            "the upstream stream ended at event {at}, not at its end"
        );
        drop(client);
    }
}

#[tokio::test]
async fn h2_upstream_reset_mid_stream_reaches_the_client_as_an_error() {
    let (addr, cert) = tls_h2_upstream(|_req: Request<Incoming>| async move {
        let events = futures_util::stream::iter(0..3).then(|k| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if k < 2 {
                Ok(Frame::data(Bytes::from(format!("data: {k}\n\n"))))
            } else {
                // hyper answers a body error with RST_STREAM on the upstream's stream.
                Err::<Frame<Bytes>, BoxError>("the model crashed".into())
            }
        });
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(StreamBody::new(events).boxed_unsync())
            .unwrap()
    })
    .await;
    let gateway = serve(h2_forwarder(addr, cert)).await;
    for (name, client) in [("h2", h2_client()), ("http/1.1", client())] {
        let req = Request::post(format!("http://{gateway}/llm/chat/completions"))
            .body(full("{}"))
            .unwrap();
        let res = within(10, client.request(req)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let mut body = res.into_body();
        let mut seen = String::new();
        let end = within(10, async {
            loop {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            seen.push_str(&String::from_utf8_lossy(&data));
                        }
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                }
            }
        })
        .await;
        assert_eq!(seen, "data: 0\n\ndata: 1\n\n", "{name}");
        assert!(
            end.is_err(),
            "{name}: the reset must not look like a clean end"
        );
    }
}

/// The SSRF guard checks every connection, not only the first: a name answered with an allowed
/// address first and with a loopback address on the reconnect that follows (DNS rebinding on a
/// pooled upstream) is refused then, and the loopback server gets no connection.
#[tokio::test]
async fn ssrf_guard_checks_the_name_again_on_each_reconnect() {
    // The allowed server on 127.0.0.2 and the internal one on 127.0.0.1, the same port.
    let mut found = None;
    for _ in 0..20 {
        let allowed = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = allowed.local_addr().unwrap().port();
        if let Ok(internal) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            found = Some((allowed, internal));
            break;
        }
    }
    let (allowed, internal) = found.expect("a port free on 127.0.0.1 and 127.0.0.2");
    let port = allowed.local_addr().unwrap().port();
    let internal_hits = Arc::new(AtomicUsize::new(0));
    let hits = internal_hits.clone();
    tokio::spawn(async move {
        // Bounded by the runtime: the listener goes with the test.
        while let Ok((_conn, _)) = internal.accept().await {
            hits.fetch_add(1, Ordering::SeqCst);
        }
    });
    tokio::spawn(async move {
        while let Ok((tcp, _)) = allowed.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    // `Connection: close`: the next request needs a new connection.
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header(header::CONNECTION, "close")
                            .body(full("allowed"))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    let lookups = Arc::new(AtomicUsize::new(0));
    let counter = lookups.clone();
    let rebinding = tower::service_fn(
        move |_name: hyper_util::client::legacy::connect::dns::Name| {
            let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
            let ip: std::net::IpAddr = if first {
                [127, 0, 0, 2].into()
            } else {
                [127, 0, 0, 1].into()
            };
            async move { Ok::<_, std::io::Error>(vec![SocketAddr::new(ip, 0)].into_iter()) }
        },
    );
    let forward = ApiForward::builder()
        .callers(Callers::anyone())
        .guard(
            SsrfGuard::new()
                .resolver(rebinding)
                .allow_cidr("127.0.0.2/32".parse().unwrap()),
        )
        .upstream(
            Upstream::new("api", format!("http://rebind.test:{port}"))
                .allow_methods([Method::GET])
                .allow_paths(["/"]),
        )
        .build()
        .unwrap();
    let gateway = serve(forward).await;
    let c = client();
    let res = within(10, c.request(get(format!("http://{gateway}/api/"))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(support::text(res).await, "allowed");
    let res = within(10, c.request(get(format!("http://{gateway}/api/"))))
        .await
        .unwrap();
    let status = res.status();
    let body = support::text(res).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("resolves to a loopback"), "{body}");
    assert!(
        lookups.load(Ordering::SeqCst) >= 2,
        "the reconnect looked the name up again"
    );
    assert_eq!(internal_hits.load(Ordering::SeqCst), 0);
}

/// `https://localhost` is refused like `http://localhost` unless the upstream allows private
/// addresses; the TLS server it names gets no connection.
#[tokio::test]
async fn https_localhost_is_refused_without_allow_private() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((_conn, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let forward = ApiForward::builder()
        .callers(Callers::anyone())
        .upstream(
            Upstream::new("tls", format!("https://localhost:{port}"))
                .allow_methods([Method::GET])
                .allow_paths(["/"])
                .inject_header(header::AUTHORIZATION, Secret::bearer(KEY).unwrap()),
        )
        .build()
        .unwrap();
    let gateway = serve(forward).await;
    let res = within(10, client().request(get(format!("http://{gateway}/tls/x"))))
        .await
        .unwrap();
    let (status, _, body) = assert_no_key(res).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        message(&body).starts_with("refused by the SSRF guard: upstream host"),
        "{body}"
    );
    assert!(body.contains("resolves to a loopback"), "{body}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

/// The forwarder's connect timeout: an upstream whose SYNs are swallowed is a 504 naming the
/// address tried, within the configured time.
#[tokio::test]
async fn forward_connect_timeout_is_a_504() {
    let (hole, _held) = support::blackhole_v6(0).await.expect("a listener on [::1]");
    let port = hole.local_addr().unwrap().port();
    let forward = ApiForward::builder()
        .callers(Callers::anyone())
        .connect_timeout(Duration::from_millis(500))
        .upstream(
            Upstream::new("hole", format!("http://[::1]:{port}"))
                .allow_methods([Method::GET])
                .allow_paths(["/"])
                .allow_private(true),
        )
        .build()
        .unwrap();
    let gateway = serve(forward).await;
    let res = within(10, client().request(get(format!("http://{gateway}/hole/"))))
        .await
        .unwrap();
    let (status, _, body) = assert_no_key(res).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body.contains(&format!("[::1]:{port}")), "{body}");
    assert!(body.contains("connect timed out"), "{body}");
}

/// The forwarder's SSE heartbeat: an event stream silent after its first event gets `:\n\n`
/// comments, and the event itself passes unchanged.
#[tokio::test]
async fn forward_sse_heartbeat_fills_silence() {
    let upstream = serve_fn(|_req: Request<Incoming>| async {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"data: one\n\n"))))
                .await;
            // Silent, the stream held open until the client goes (bounded by the test).
            tx.closed().await;
        });
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(body_stream(rx))
            .unwrap()
    })
    .await;
    let forward = ApiForward::builder()
        .callers(Callers::anyone())
        .sse_heartbeat(Duration::from_millis(200))
        .upstream(allowed("events", upstream))
        .build()
        .unwrap();
    let gateway = serve(forward).await;
    let res = within(
        10,
        client().request(get(format!("http://{gateway}/events/"))),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    for expected in ["data: one\n\n", ":\n\n", ":\n\n"] {
        let frame = within(10, body.frame()).await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), expected);
    }
}
