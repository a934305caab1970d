//! The `gateway` example, run as its own process, serves `/absproxy/{port}/` beside
//! `/proxy/{port}/`: the same ports, the prefix kept, redirects and cookies mapped under the mount,
//! WebSockets through.
#![cfg(all(feature = "auth", feature = "forward", feature = "tls"))]

mod support;

#[path = "support/process.rs"]
mod process;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{Message as AxMessage, WebSocket, WebSocketUpgrade};
use axum::extract::OriginalUri;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use http::Request;
use process::{example_binary, Process};
use support::{client, empty, text, within};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A dev server told its base (`/absproxy/{port}/`), as Vite is with `base`: it serves under it,
/// and answers with a redirect out of it, cookies on `/`, and a WebSocket echo.
async fn based_dev_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("/absproxy/{}", addr.port());
    let router = Router::new().nest(
        &base,
        Router::new()
            .route(
                "/echo",
                get(
                    |OriginalUri(uri): OriginalUri, headers: HeaderMap| async move {
                        let host = |n: &str| {
                            headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        Json(serde_json::json!({
                            "path": uri.to_string(),
                            "host": host("host"),
                            "x-forwarded-prefix": host("x-forwarded-prefix"),
                            "forwarded": host("forwarded"),
                        }))
                    },
                ),
            )
            .route(
                "/login",
                get(|| async {
                    (
                        StatusCode::FOUND,
                        [
                            (header::LOCATION, "/signed-in?next=%2Fa"),
                            (header::SET_COOKIE, "sid=1; Path=/; HttpOnly"),
                        ],
                    )
                }),
            )
            .route("/ws", any(ws_echo)),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

async fn ws_echo(up: WebSocketUpgrade) -> Response {
    up.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            if let AxMessage::Text(t) = msg {
                let reply = format!("echo:{}", t.as_str());
                if socket.send(AxMessage::Text(reply.into())).await.is_err() {
                    break;
                }
            }
        }
    })
    .into_response()
}

fn gateway(ports: &[u16]) -> (Process, SocketAddr) {
    let mut args = vec!["--listen", "127.0.0.1:0", "--demo-port", "0"];
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    for p in &ports {
        args.extend(["--allow-port", p]);
    }
    let mut process = Process::start(example_binary("gateway"), &args, &[], None);
    let addr = process.wait_for(Duration::from_secs(30), |line| {
        line.strip_prefix("gateway on http://")?.trim().parse().ok()
    });
    (process, addr)
}

async fn get_path(gw: SocketAddr, path: &str) -> http::Response<hyper::body::Incoming> {
    let req = Request::get(format!("http://{gw}{path}"))
        .body(empty())
        .unwrap();
    within(10, client().request(req)).await.unwrap()
}

#[tokio::test]
async fn absproxy_keeps_the_prefix_maps_redirects_and_cookies_and_carries_websockets() {
    let dev = based_dev_server().await;
    let p = dev.port();
    let (_gateway, gw) = gateway(&[p]);
    let m = format!("/absproxy/{p}");

    // The path arrives whole, with the browser's Host and the mount as X-Forwarded-Prefix.
    let res = get_path(gw, &format!("{m}/echo?x=1")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let seen: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(seen["path"], format!("{m}/echo?x=1"));
    assert_eq!(seen["host"], gw.to_string());
    assert_eq!(seen["x-forwarded-prefix"], m);
    assert_eq!(seen["forwarded"], "", "no RFC 7239 header by default");

    // A redirect and a cookie aimed at `/` stay under the mount.
    let res = get_path(gw, &format!("{m}/login")).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(
        res.headers()[header::LOCATION],
        format!("{m}/signed-in?next=%2Fa").as_str()
    );
    // The cookie firewall stores it under the route's namespace (`sgw.absproxy.{port}~`).
    let ns = format!("sgw{}~", m.replace('/', "."));
    assert_eq!(
        res.headers()[header::SET_COOKIE],
        format!("{ns}sid=1; Path={m}/; HttpOnly").as_str()
    );

    // The bare mount goes to its slash form; ports not allowed and unknown paths are refused.
    let res = get_path(gw, &m).await;
    assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(res.headers()[header::LOCATION], format!("{m}/").as_str());
    let closed = support::closed_port_addr().await.port();
    let res = get_path(gw, &format!("/absproxy/{closed}/echo")).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // The same dev server under `/proxy/` sees the prefix stripped, so its own routes miss.
    let res = get_path(gw, &format!("/proxy/{p}/echo")).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // A WebSocket through the mount, from a page on the gateway's origin.
    let mut req = format!("ws://{gw}{m}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert(header::ORIGIN, format!("http://{gw}").parse().unwrap());
    let (mut socket, res) = within(10, tokio_tungstenite::connect_async(req))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    socket.send(Message::text("hmr")).await.unwrap();
    let reply = within(10, socket.next()).await.unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "echo:hmr");
    socket.close(None).await.unwrap();

    // A page of another site cannot open it.
    let mut req = format!("ws://{gw}{m}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert(header::ORIGIN, "http://evil.example".parse().unwrap());
    let err = within(10, tokio_tungstenite::connect_async(req))
        .await
        .expect_err("a cross-site WebSocket was accepted");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(res) => {
            assert_eq!(res.status(), StatusCode::FORBIDDEN)
        }
        other => panic!("{other}"),
    }
}
