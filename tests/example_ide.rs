//! `examples/ide.rs` keeps its promise: token route → link → cookie → tunnel for HTTP and
//! WebSocket, Host preserved, Origin only when the browser sent one, no gateway credential inside.
#![cfg(feature = "auth")]

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::{header, Request, StatusCode};
use sandbox_gateway::auth::{MemoryNonceStore, TokenSigner};
use support::{client, echo_upstream, empty, text, within};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[allow(dead_code)]
#[path = "../examples/ide.rs"]
mod ide;

const SECRET: &str = "host-secret";

async fn start(
    sandboxes: HashMap<String, sandbox_gateway::route::Upstream>,
) -> std::net::SocketAddr {
    let signer = TokenSigner::new([7u8; 32]).unwrap();
    let app = ide::app(
        signer,
        sandboxes,
        Arc::new(MemoryNonceStore::new(64)),
        SECRET.to_owned(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A WebSocket echo server standing in for the IDE's live connection.
async fn ws_sandbox() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn ide_example_token_cookie_tunnel() {
    let echo = echo_upstream("127.0.0.1:0").await;
    let ws = ws_sandbox().await;
    let mut sandboxes = HashMap::new();
    sandboxes.insert("demo".to_owned(), format!("http://{echo}").parse().unwrap());
    // A sandbox reached through `localhost`, the way dev servers bind.
    sandboxes.insert(
        "live".to_owned(),
        format!("http://localhost:{}", ws.port()).parse().unwrap(),
    );
    let gw = start(sandboxes).await;

    // The token route is the host's: no bearer, no link; an unknown sandbox, no link.
    let post = |id: &str, bearer: Option<&str>| {
        let mut req = Request::post(format!("http://{gw}/api/dev/{id}/ide-token"));
        if let Some(b) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {b}"));
        }
        req.body(empty()).unwrap()
    };
    let res = within(10, client().request(post("demo", None)))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = within(10, client().request(post("ghost", Some(SECRET))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    let open_link = |url: &str| {
        let req = Request::get(format!("http://{gw}{url}"))
            .body(empty())
            .unwrap();
        within(10, client().request(req))
    };
    let mut cookies = Vec::new();
    for id in ["demo", "live"] {
        let res = within(10, client().request(post(id, Some(SECRET))))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let json: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
        let url = json["url"].as_str().unwrap().to_owned();
        let res = open_link(&url).await.unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(res.headers()[header::LOCATION], format!("/__ide/{id}/"));
        let set = res.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(set.contains("HttpOnly"), "{set}");
        cookies.push(set.split(';').next().unwrap().to_owned());
        // The link is single use.
        let again = open_link(&url).await.unwrap();
        assert_eq!(again.status(), StatusCode::FORBIDDEN);
    }

    // HTTP through the tunnel: path kept, Host preserved, no Origin invented, no credentials.
    let get = |path: &str, cookie: &str, origin: Option<&str>| {
        let mut req = Request::get(format!("http://{gw}{path}"))
            // The host's `session`, and the sandbox's own `app` as the browser stores it under
            // the tunnel's namespace.
            .header(
                header::COOKIE,
                format!("{cookie}; session=HOST; sgw.__ide.demo~app=1"),
            )
            .header(header::AUTHORIZATION, format!("Bearer {SECRET}"));
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        req.body(empty()).unwrap()
    };
    let res = within(
        10,
        client().request(get("/__ide/demo/x?folder=/w", &cookies[0], None)),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(seen["path"], "/__ide/demo/x?folder=/w");
    assert_eq!(seen["headers"]["host"][0], gw.to_string());
    assert!(seen["headers"].get("origin").is_none(), "{seen}");
    assert!(seen["headers"].get("authorization").is_none(), "{seen}");
    assert_eq!(seen["headers"]["cookie"], serde_json::json!(["app=1"]));
    let origin = format!("http://{gw}");
    let res = within(
        10,
        client().request(get("/__ide/demo/", &cookies[0], Some(&origin))),
    )
    .await
    .unwrap();
    let seen: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(seen["headers"]["origin"][0], origin.as_str());

    // A cookie for `demo` does not open `live`.
    let res = within(10, client().request(get("/__ide/live/", &cookies[0], None)))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // WebSocket through the tunnel of `live`, to the sandbox bound on [::1] only.
    let mut req = format!("ws://{gw}/__ide/live/socket")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert(header::COOKIE, cookies[1].parse().unwrap());
    req.headers_mut()
        .insert(header::ORIGIN, origin.parse().unwrap());
    let (mut socket, _) = within(10, tokio_tungstenite::connect_async(req))
        .await
        .unwrap();
    socket.send(Message::text("hello ide")).await.unwrap();
    let reply = within(10, socket.next()).await.unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "hello ide");
    socket.close(None).await.unwrap();
}
