//! The `gateway` example's `/metrics`, scraped from its own process: a proxied request, a refused
//! Host, a WebSocket, a failed upstream, a refused CORS preflight and an IDE link used twice are
//! each counted once, and the tunnel gauge is back to zero once the WebSocket is closed.
//! `/metrics` answers loopback peers only.
#![cfg(all(
    feature = "metrics",
    feature = "auth",
    feature = "forward",
    feature = "tls",
    feature = "serve"
))]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{header, Request, StatusCode};
use support::gateway::Gateway;
use support::{client, closed_port_addr, empty, text, within};
use tokio_tungstenite::tungstenite::Message;

#[allow(dead_code)]
#[path = "../examples/gateway/metrics.rs"]
mod example_metrics;

/// A series: its name and its labels as `k="v"` pairs, sorted.
type Series = (String, Vec<String>);

/// The samples of a Prometheus text page, comments skipped.
fn parse(page: &str) -> BTreeMap<Series, f64> {
    let mut out = BTreeMap::new();
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let mut labels: Vec<String> = rest
                    .trim_end_matches('}')
                    .split(',')
                    .map(str::to_owned)
                    .collect();
                labels.sort();
                (n.to_owned(), labels)
            }
            None => (series.to_owned(), Vec::new()),
        };
        out.insert((name, labels), value.parse().expect("a number"));
    }
    out
}

fn key(name: &str, labels: &[&str]) -> Series {
    let mut labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
    labels.sort();
    (name.to_owned(), labels)
}

async fn get(gw: &Gateway, path: &str, host: &str) -> (StatusCode, String) {
    let req = Request::get(format!("{}{path}", gw.url))
        .header(header::HOST, host)
        .body(empty())
        .unwrap();
    let res = within(10, client().request(req)).await.unwrap();
    (res.status(), text(res).await)
}

async fn scrape(gw: &Gateway) -> BTreeMap<Series, f64> {
    let (status, page) = get(gw, "/metrics", gw.authority()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    parse(&page)
}

#[tokio::test]
async fn metrics_count_each_outcome_once() {
    let dead = closed_port_addr().await.port();
    let gw = Gateway::start(&["--demo-port", "0", "--allow-port", &dead.to_string()]);
    let host = gw.authority().to_owned();
    let demo = gw.demo_port;

    let before = scrape(&gw).await;
    assert_eq!(
        before.get(&key(
            "sandbox_gateway_requests_total",
            &["route=\"proxy\"", "status=\"2xx\""]
        )),
        None
    );

    // A proxied request.
    let (status, body) = get(&gw, &format!("/proxy/{demo}/echo-headers"), &host).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let proxied_body = body.len();
    // A Host not on the allowlist.
    let (status, body) = get(&gw, "/", "rebind.attacker.example").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // An upstream that is not there.
    let (status, body) = get(&gw, &format!("/proxy/{dead}/"), &host).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    // A CORS preflight from an origin not allowed.
    let preflight = Request::options(format!("{}/api/proxy/demo-llm/chat/completions", gw.url))
        .header(header::ORIGIN, "https://attacker.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(empty())
        .unwrap();
    let res = within(10, client().request(preflight)).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // An IDE link used once, then again.
    let mint = Request::post(format!("{}/api/dev/demo/ide-token", gw.url))
        .header("sec-fetch-site", "same-origin")
        .body(empty())
        .unwrap();
    let minted = text(within(10, client().request(mint)).await.unwrap()).await;
    let link: serde_json::Value = serde_json::from_str(&minted).unwrap();
    let link = link["shared_origin_url"].as_str().unwrap().to_owned();
    let (status, body) = get(&gw, &link, &host).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let (status, body) = get(&gw, &link, &host).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // A WebSocket through the proxy: open, echoed, counted as an open tunnel.
    let (mut ws, _) = within(
        10,
        tokio_tungstenite::connect_async(format!("ws://{host}/proxy/{demo}/ws")),
    )
    .await
    .expect("WebSocket through the gateway");
    ws.send(Message::text("ping")).await.unwrap();
    let echo = within(10, ws.next()).await.unwrap().unwrap();
    assert_eq!(echo, Message::text("ping"));
    let open = scrape(&gw).await;
    assert_eq!(
        open.get(&key("sandbox_gateway_tunnels", &[])),
        Some(&1.0),
        "{open:?}"
    );

    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = within(10, ws.next()).await {}
    drop(ws);
    let mut after = scrape(&gw).await;
    for _ in 0..50 {
        if after.get(&key("sandbox_gateway_tunnels", &[])) == Some(&0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = scrape(&gw).await;
    }
    let count = |name: &str, labels: &[&str]| after.get(&key(name, labels)).copied();
    assert_eq!(
        count("sandbox_gateway_tunnels", &[]),
        Some(0.0),
        "the gauge returns to zero"
    );
    let requests = "sandbox_gateway_requests_total";
    assert_eq!(
        count(requests, &["route=\"proxy\"", "status=\"2xx\""]),
        Some(1.0),
        "{after:?}"
    );
    assert_eq!(
        count(requests, &["route=\"proxy\"", "status=\"1xx\""]),
        Some(1.0),
        "the upgrade"
    );
    assert_eq!(
        count(requests, &["route=\"proxy\"", "status=\"5xx\""]),
        Some(1.0),
        "the 502"
    );
    assert_eq!(
        count("sandbox_gateway_refusals_total", &["reason=\"host\""]),
        Some(1.0)
    );
    // The scrape's own connection is open in the example's `serve::Server`.
    assert!(
        count("sandbox_gateway_connections", &[]).is_some_and(|n| n >= 1.0),
        "{after:?}"
    );
    assert_eq!(
        count("sandbox_gateway_refusals_total", &["reason=\"cors\""]),
        Some(1.0)
    );
    let tokens = "sandbox_gateway_token_verifications_total";
    assert_eq!(
        count(tokens, &["kind=\"bootstrap\"", "outcome=\"ok\""]),
        Some(1.0)
    );
    assert_eq!(
        count(tokens, &["kind=\"bootstrap\"", "outcome=\"replayed\""]),
        Some(1.0)
    );
    assert_eq!(
        count(
            "sandbox_gateway_upstream_connect_failures_total",
            &["cause=\"refused\""]
        ),
        Some(1.0),
        "{after:?}"
    );
    // "ping" up and its echo down, framed (client frames are masked: 4 bytes more).
    let up = count("sandbox_gateway_tunnel_bytes_total", &["direction=\"up\""]).unwrap_or(0.0);
    let down = count(
        "sandbox_gateway_tunnel_bytes_total",
        &["direction=\"down\""],
    )
    .unwrap_or(0.0);
    assert!(up >= 10.0 && down >= 6.0, "up {up}, down {down}");
    // The one HTTP body proxied is the echo's answer (the 502 is the gateway's own, the upgrade has
    // none); no request had a body.
    assert_eq!(
        count("sandbox_gateway_body_bytes_total", &["direction=\"down\""]),
        Some(proxied_body as f64),
        "{after:?}"
    );
    assert_eq!(
        count("sandbox_gateway_body_bytes_total", &["direction=\"up\""]),
        None
    );
    // One upstream connection served the request, went back to the pool, then carried the upgrade;
    // its connect latency is a histogram, and it is closed with the tunnel.
    assert_eq!(
        count("sandbox_gateway_upstream_connect_seconds_count", &[]),
        Some(1.0),
        "{after:?}"
    );
    assert_eq!(
        count("sandbox_gateway_upstream_connections", &[]),
        Some(0.0)
    );
    assert_eq!(
        count(
            "sandbox_gateway_response_seconds_count",
            &["route=\"proxy\""]
        ),
        Some(3.0)
    );
}

#[tokio::test]
async fn metrics_refuse_other_peers() {
    use sandbox_gateway::rewrite::ClientAddr;
    use tower::ServiceExt;

    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let app = example_metrics::route(handle);
    for (peer, want) in [
        ("192.0.2.7:5000", StatusCode::FORBIDDEN),
        ("[2001:db8::1]:5000", StatusCode::FORBIDDEN),
        ("127.0.0.1:5000", StatusCode::OK),
        ("[::1]:5000", StatusCode::OK),
        ("[::ffff:127.0.0.1]:5000", StatusCode::OK),
    ] {
        let mut req = Request::get("/metrics")
            .body(axum::body::Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ClientAddr(peer.parse().unwrap()));
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), want, "{peer}");
    }
    // No peer address known: refused too.
    let req = Request::get("/metrics")
        .body(axum::body::Body::empty())
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}
