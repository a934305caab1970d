//! `examples/preview.rs` keeps its promise: a dev server bound to `[::1]` only is reached through
//! `/proxy/{port}/` and through `{port}.localhost`, HTTP and WebSocket, redirects mapped back under
//! the mount; foreign Hosts and ports not allowed are refused.

mod support;

use std::convert::Infallible;

use futures_util::{SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use support::{client, empty, full, text, within, TestBody};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

#[allow(dead_code)]
#[path = "../examples/preview.rs"]
mod preview;

/// A dev server on `[::1]` only: a page at `/`, `/redirect` → `/login`, a WebSocket echo at `/ws`.
async fn dev_server() -> u16 {
    let svc = tower::service_fn(|mut req: Request<Incoming>| async move {
        let res = match req.uri().path() {
            "/" => Response::builder()
                .header(header::CONTENT_TYPE, "text/html")
                .body(full("<h1>dev server</h1>")),
            "/redirect" => Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, "/login")
                .body(full("")),
            "/ws" => {
                let key = req.headers()["sec-websocket-key"].clone();
                let upgrade = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    let Ok(io) = upgrade.await else { return };
                    let mut ws =
                        WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None)
                            .await;
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_text() && ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                });
                Response::builder()
                    .status(StatusCode::SWITCHING_PROTOCOLS)
                    .header(header::CONNECTION, "upgrade")
                    .header(header::UPGRADE, "websocket")
                    .header(
                        header::SEC_WEBSOCKET_ACCEPT,
                        derive_accept_key(key.as_bytes()),
                    )
                    .body(full(""))
            }
            _ => Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(full("")),
        };
        Ok::<Response<TestBody>, Infallible>(res.unwrap())
    });
    support::serve_on("[::1]:0", svc).await.port()
}

async fn get(gw: std::net::SocketAddr, path: &str, host: &str) -> Response<Incoming> {
    let req = Request::get(format!("http://{gw}{path}"))
        .header(header::HOST, host)
        .body(empty())
        .unwrap();
    within(10, client().request(req)).await.unwrap()
}

async fn echo(uri: String, host: &str) {
    let mut req = uri.into_client_request().unwrap();
    req.headers_mut()
        .insert(header::HOST, host.parse().unwrap());
    let (mut socket, _) = within(10, tokio_tungstenite::connect_async(req))
        .await
        .unwrap();
    socket.send(Message::text("hmr update")).await.unwrap();
    let reply = within(10, socket.next()).await.unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "hmr update");
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn preview_example_by_path_and_by_host() {
    let port = dev_server().await;
    let svc = preview::service(vec![port], vec![]).unwrap();
    let gw = support::serve(svc).await;
    let local = format!("127.0.0.1:{}", gw.port());
    let by_host = format!("{port}.localhost:{}", gw.port());

    // By path: the page, and a redirect mapped back under the mount.
    let res = get(gw, &format!("/proxy/{port}/"), &local).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(text(res).await, "<h1>dev server</h1>");
    let res = get(gw, &format!("/proxy/{port}/redirect"), &local).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(
        res.headers()[header::LOCATION],
        format!("/proxy/{port}/login")
    );

    // By Host: the same dev server at the root, its redirect untouched.
    let res = get(gw, "/", &by_host).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(text(res).await, "<h1>dev server</h1>");
    let res = get(gw, "/redirect", &by_host).await;
    assert_eq!(res.headers()[header::LOCATION], "/login");

    // WebSocket (HMR) through both.
    echo(format!("ws://{gw}/proxy/{port}/ws"), &local).await;
    echo(format!("ws://{gw}/ws"), &by_host).await;

    // A foreign Host (DNS rebinding) and a port not allowed, both ways, are refused.
    let res = get(gw, &format!("/proxy/{port}/"), "evil.example.com").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let other = if port == 1 { 2 } else { port - 1 };
    let res = get(gw, &format!("/proxy/{other}/"), &local).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = get(gw, "/", &format!("{other}.localhost:{}", gw.port())).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}
