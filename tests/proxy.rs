//! The reverse proxy over real sockets: bodies, hop-by-hop headers, failures as answers, paths.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sandbox_gateway::proxy::ReverseProxy;
use sandbox_gateway::route::{PathMount, RouteLayer, Upstream};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::ServiceBuilder;

fn fixed(upstream: std::net::SocketAddr) -> ReverseProxy {
    ReverseProxy::builder()
        .upstream(format!("http://{upstream}").parse().unwrap())
        .response_timeout(Some(Duration::from_secs(2)))
        .build()
        .unwrap()
}

async fn json(res: hyper::Response<hyper::body::Incoming>) -> serde_json::Value {
    serde_json::from_str(&text(res).await).expect("json")
}

#[tokio::test]
async fn methods_and_bodies_sized_and_chunked() {
    let up = echo_upstream("127.0.0.1:0").await;
    let gw = serve(fixed(up)).await;
    let c = client();
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ] {
        let body = if method == Method::GET {
            ""
        } else {
            "hello body"
        };
        let req = Request::builder()
            .method(method.clone())
            .uri(format!("http://{gw}/items/1?x=y"))
            .body(full(body))
            .unwrap();
        let res = within(10, c.request(req)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let v = json(res).await;
        assert_eq!(v["method"], method.as_str());
        assert_eq!(v["path"], "/items/1?x=y");
        assert_eq!(v["body"], body);
        if !body.is_empty() {
            assert_eq!(v["headers"]["content-length"][0], body.len().to_string());
        }
    }
    // A chunked upload (no length known) arrives whole, still chunked.
    let chunks = futures_util::stream::iter(
        (0..50).map(|i| Ok::<_, BoxError>(Frame::data(Bytes::from(format!("chunk{i:02};"))))),
    );
    let req = Request::post(format!("http://{gw}/upload"))
        .body(StreamBody::new(chunks).boxed_unsync())
        .unwrap();
    let v = json(within(10, c.request(req)).await.unwrap()).await;
    assert_eq!(v["body_len"], 50 * 8);
    assert_eq!(v["headers"]["transfer-encoding"][0], "chunked");
    assert!(v["headers"].get("content-length").is_none());
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let up = serve_fn(|req| async move {
        let seen: Vec<String> = req.headers().keys().map(|k| k.to_string()).collect();
        let mut res = hyper::Response::new(full(seen.join(",")));
        let h = res.headers_mut();
        h.insert("connection", "x-up-private".parse().unwrap());
        h.insert("x-up-private", "secret".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-authenticate", "Basic".parse().unwrap());
        h.append("set-cookie", "a=1; Path=/".parse().unwrap());
        h.append("set-cookie", "b=2; Path=/".parse().unwrap());
        res
    })
    .await;
    let gw = serve(fixed(up)).await;
    let req = Request::get(format!("http://{gw}/"))
        .header("connection", "x-foo, keep-alive")
        .header("x-foo", "must not pass")
        .header("x-bar", "passes")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("trailer", "x-sum")
        .header("upgrade", "h2c")
        .body(empty())
        .unwrap();
    let res = within(10, client().request(req)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("x-up-private").is_none());
    assert!(res.headers().get("keep-alive").is_none());
    assert!(res.headers().get("proxy-authenticate").is_none());
    assert_eq!(res.headers().get_all("set-cookie").iter().count(), 2);
    let seen = text(res).await;
    let seen: Vec<&str> = seen.split(',').collect();
    assert!(seen.contains(&"x-bar"), "{seen:?}");
    assert!(seen.contains(&"te"), "TE: trailers is kept: {seen:?}");
    for gone in [
        "x-foo",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "trailer",
        "upgrade",
    ] {
        assert!(
            !seen.contains(&gone),
            "{gone} reached the upstream: {seen:?}"
        );
    }
}

/// An upstream that writes a response head and part of the body, then drops the connection.
async fn breaking_upstream(head: &'static str, body_part: &'static [u8]) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body_part).await;
                let _ = s.flush().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                drop(s);
            });
        }
    });
    a
}

#[tokio::test]
async fn upstream_cut_mid_body_is_cut_downstream() {
    for (head, part) in [
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n",
            &b"only a little"[..],
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            &b"5\r\nhello\r\n5\r\nworld\r\n"[..],
        ),
    ] {
        let up = breaking_upstream(head, part).await;
        let gw = serve(fixed(up)).await;
        let res = within(
            10,
            client().request(Request::get(format!("http://{gw}/")).body(empty()).unwrap()),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let collected = within(10, res.into_body().collect()).await;
        assert!(
            collected.is_err(),
            "a body cut upstream must end in an error downstream ({head:?})"
        );
    }
}

#[tokio::test]
async fn upstream_down_is_502_naming_it() {
    let dead = closed_port_addr().await;
    let gw = serve(fixed(dead)).await;
    let res = within(
        10,
        client().request(Request::get(format!("http://{gw}/")).body(empty()).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    let msg = text(res).await;
    assert!(msg.contains(&dead.to_string()), "{msg}");
    assert!(msg.contains("connection refused"), "{msg}");
}

#[tokio::test]
async fn localhost_upstream_down_names_both_addresses_tried() {
    let port = closed_port_addr().await.port();
    let proxy = ReverseProxy::builder()
        .upstream(format!("http://localhost:{port}").parse().unwrap())
        .build()
        .unwrap();
    let gw = serve(proxy).await;
    let res = within(
        10,
        client().request(Request::get(format!("http://{gw}/")).body(empty()).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let msg = text(res).await;
    assert!(msg.contains(&format!("[::1]:{port}")), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
}

#[tokio::test]
async fn silent_upstream_is_504_within_the_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            conns.push(s); // accept, read nothing, answer nothing
        }
    });
    let proxy = ReverseProxy::builder()
        .upstream(format!("http://{up}").parse().unwrap())
        .response_timeout(Some(Duration::from_millis(500)))
        .build()
        .unwrap();
    let gw = serve(proxy).await;
    let start = Instant::now();
    let res = within(
        10,
        client().request(Request::get(format!("http://{gw}/")).body(empty()).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(text(res).await.contains("sent no response"));
    held.abort();
}

#[tokio::test]
async fn malformed_upstream_response_is_502() {
    let up = breaking_upstream("this is not http\r\n\r\n", b"").await;
    let gw = serve(fixed(up)).await;
    let res = within(
        10,
        client().request(Request::get(format!("http://{gw}/")).body(empty()).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert!(text(res).await.contains("malformed"));
}

#[tokio::test]
async fn no_target_is_500_not_a_default_address() {
    let gw = serve(ReverseProxy::new()).await;
    let res = within(
        10,
        client().request(Request::get(format!("http://{gw}/")).body(empty()).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(text(res).await.contains("no upstream target"));
}

/// Sends raw bytes and returns the status line of the answer.
async fn raw_status(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = within(10, s.read(&mut buf)).await.unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn path_traversal_is_400_and_ports_are_denied_by_default() {
    let up = echo_upstream("127.0.0.1:0").await;
    let svc = ServiceBuilder::new()
        .layer(RouteLayer::new(
            PathMount::strip("/proxy")
                .upstream_host("127.0.0.1")
                .allow_port(up.port()),
        ))
        .service(ReverseProxy::new());
    let gw = serve(svc).await;
    let p = up.port();
    for path in [
        format!("/proxy/{p}/../{p}/"),
        format!("/proxy/{p}/%2e%2e/x"),
        format!("/proxy/{p}/.%2E/x"),
        format!("/proxy/{p}/a%2f..%2f..%2fb"),
        format!("/proxy/{p}/a\\..\\b"),
        format!("/proxy/{p}//etc/passwd"),
        format!("/proxy/{p}/%252e%252e/"),
    ] {
        let status = raw_status(gw, &format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n")).await;
        assert!(status.contains(" 400 "), "{path}: {status}");
    }
    let status = raw_status(gw, "GET /proxy/22/ HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(status.contains(" 403 "), "{status}");
    let status = raw_status(gw, &format!("GET /proxy/{p} HTTP/1.1\r\nhost: x\r\n\r\n")).await;
    assert!(status.contains(" 308 "), "{status}");
    let status = raw_status(
        gw,
        &format!("GET /proxy/{p}/ok HTTP/1.1\r\nhost: x\r\n\r\n"),
    )
    .await;
    assert!(status.contains(" 200 "), "{status}");
}

#[tokio::test]
async fn smuggling_and_bad_host_are_400() {
    let up = echo_upstream("127.0.0.1:0").await;
    let gw = serve(fixed(up)).await;
    for req in [
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: user@a\r\n\r\n",
    ] {
        let status = raw_status(gw, req).await;
        assert!(status.contains(" 400 "), "{req:?}: {status}");
    }
    // Both framings: hyper's server drops Content-Length, decodes chunked and closes the connection
    // after answering (RFC 9112 §6.3); the upstream never sees both framings.
    let mut s = tokio::net::TcpStream::connect(gw).await.unwrap();
    s.write_all(
        b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    within(10, s.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(v["headers"].get("content-length").is_none(), "{v}");
    assert_eq!(v["body"], "abc");
}

#[tokio::test]
async fn axum_nest_service_drives_it() {
    let up = echo_upstream("127.0.0.1:0").await;
    let app = axum::Router::new()
        .nest_service("/app", fixed(up))
        .route("/health", axum::routing::get(|| async { "ok" }));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    let c = client();
    let res = within(
        10,
        c.request(
            Request::post(format!("http://{gw}/app/x?q=1"))
                .body(full("abc"))
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let v = json(res).await;
    assert_eq!(v["path"], "/x?q=1");
    assert_eq!(v["body"], "abc");
    let res = within(
        10,
        c.request(
            Request::get(format!("http://{gw}/health"))
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(text(res).await, "ok");
}

#[tokio::test]
async fn plain_hyper_service_fn_drives_it() {
    let up = echo_upstream("127.0.0.1:0").await;
    let proxy = fixed(up);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let mut proxy = proxy.clone();
                    tower::Service::call(&mut proxy, req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    let res = within(
        10,
        client().request(
            Request::get(format!("http://{gw}/plain"))
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(json(res).await["path"], "/plain");
}

#[tokio::test]
async fn upstream_base_path_and_expect_continue() {
    let up = echo_upstream("127.0.0.1:0").await;
    let upstream: Upstream = format!("http://{up}/base").parse().unwrap();
    let proxy = ReverseProxy::builder().upstream(upstream).build().unwrap();
    let gw = serve(proxy).await;
    let req = Request::put(format!("http://{gw}/file"))
        .header("expect", "100-continue")
        .body(full("payload"))
        .unwrap();
    let v = json(within(10, client().request(req)).await.unwrap()).await;
    assert_eq!(v["path"], "/base/file");
    assert_eq!(v["body"], "payload");
    assert!(v["headers"].get("expect").is_none());
}
