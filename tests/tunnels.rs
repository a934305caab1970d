//! Tunnel caps (in total and per client) and the idle timeout, through `serve::Server`, which
//! hands each request its client's address.
#![cfg(feature = "serve")]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as AxMessage, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use sandbox_gateway::proxy::ReverseProxy;
use sandbox_gateway::route::Upstream;
use sandbox_gateway::serve::Server;
use support::within;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// A WebSocket echo upstream at `/ws`.
async fn echo_upstream() -> SocketAddr {
    let router = Router::new().route(
        "/ws",
        get(|ws: WebSocketUpgrade| async move {
            ws.on_upgrade(|mut socket| async move {
                while let Some(Ok(msg)) = socket.recv().await {
                    if let AxMessage::Text(_) = msg {
                        if socket.send(msg).await.is_err() {
                            return;
                        }
                    }
                }
            })
            .into_response()
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// The proxy to the echo upstream, served by `Server` on 127.0.0.1.
async fn gateway(
    proxy: impl FnOnce(sandbox_gateway::proxy::Builder) -> sandbox_gateway::proxy::Builder,
) -> (SocketAddr, ReverseProxy) {
    let up = echo_upstream().await;
    let proxy = proxy(
        ReverseProxy::builder().upstream(format!("http://{up}").parse::<Upstream>().unwrap()),
    )
    .build()
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder().build().unwrap();
    let app = Router::new().fallback_service(proxy.clone());
    tokio::spawn(server.serve(listener, app, std::future::pending()));
    (addr, proxy)
}

type Ws = WebSocketStream<TcpStream>;

/// A WebSocket to `gw` from the loopback address `source`.
async fn ws_from(source: &str, gw: SocketAddr) -> Result<Ws, tungstenite::Error> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let tcp = socket.connect(gw).await.unwrap();
    within(
        5,
        tokio_tungstenite::client_async(format!("ws://{gw}/ws"), tcp),
    )
    .await
    .map(|(ws, _)| ws)
}

async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let got = within(5, ws.next()).await.unwrap().unwrap();
    assert_eq!(got, Message::text(text));
}

/// The status and body of a refused handshake.
fn refusal(r: Result<Ws, tungstenite::Error>) -> (u16, String) {
    match r {
        Err(tungstenite::Error::Http(res)) => (
            res.status().as_u16(),
            String::from_utf8_lossy(res.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(e) => panic!("refused with {e}, not an HTTP answer"),
        Ok(_) => panic!("the upgrade over the cap was let through"),
    }
}

#[tokio::test]
async fn upgrades_over_the_caps_get_503() {
    let (gw, proxy) = gateway(|b| b.max_tunnels(3).max_tunnels_per_client(2)).await;
    let mut a1 = ws_from("127.0.0.1", gw).await.unwrap();
    let mut a2 = ws_from("127.0.0.1", gw).await.unwrap();
    echo(&mut a1, "a1").await;
    echo(&mut a2, "a2").await;
    assert_eq!(proxy.open_tunnels(), 2);

    // A third from the same client: refused, before any upstream connection.
    let (status, body) = refusal(ws_from("127.0.0.1", gw).await);
    assert_eq!(status, 503);
    assert_eq!(
        body,
        "too many open WebSockets from this client: the limit is 2; close one and retry\n"
    );

    // Another client gets the last place of the total, then a third client is refused.
    let mut b1 = ws_from("127.0.0.2", gw).await.unwrap();
    echo(&mut b1, "b1").await;
    assert_eq!(proxy.open_tunnels(), 3);
    let (status, body) = refusal(ws_from("127.0.0.3", gw).await);
    assert_eq!(status, 503);
    assert_eq!(
        body,
        "too many open WebSockets through this gateway: the limit is 3; close one and retry\n"
    );

    // Closing one frees its place; the tunnels still open keep working.
    a1.close(None).await.unwrap();
    drop(a1);
    within(5, async {
        while proxy.open_tunnels() != 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut a3 = ws_from("127.0.0.1", gw).await.unwrap();
    echo(&mut a3, "a3").await;
    echo(&mut a2, "a2 again").await;
    echo(&mut b1, "b1 again").await;
}

#[tokio::test]
async fn an_idle_tunnel_closes_after_the_timeout_and_a_pinged_one_stays() {
    let (gw, proxy) = gateway(|b| b.tunnel_idle_timeout(Some(Duration::from_secs(1)))).await;
    let mut silent = ws_from("127.0.0.1", gw).await.unwrap();
    let mut chatty = ws_from("127.0.0.1", gw).await.unwrap();
    echo(&mut silent, "hello").await;
    echo(&mut chatty, "hello").await;
    let start = Instant::now();

    // The chatty one sends a message every 300 ms for 2.5 s: more than twice the timeout.
    let chat = async {
        for k in 0..8 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            echo(&mut chatty, &format!("ping {k}")).await;
        }
    };
    let silence = async {
        loop {
            match silent.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return start.elapsed(),
                Some(Ok(_)) => {}
            }
        }
    };
    let (closed_after, ()) = within(10, async { tokio::join!(silence, chat) }).await;
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(3),
        "the silent tunnel closed after {closed_after:?}, the timeout being 1 s"
    );
    echo(&mut chatty, "still here").await;
    assert_eq!(proxy.open_tunnels(), 1);
}

#[test]
fn the_default_idle_timeout_is_set_and_zero_caps_are_refused() {
    assert_eq!(
        sandbox_gateway::proxy::DEFAULT_TUNNEL_IDLE_TIMEOUT,
        Duration::from_secs(300)
    );
    assert!(ReverseProxy::builder().max_tunnels(0).build().is_err());
    assert!(ReverseProxy::builder()
        .max_tunnels_per_client(0)
        .build()
        .is_err());
}
