//! The embedded demo sandbox: a tiny "dev server" bound to `[::1]` only, as Vite is on modern Node.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream::{self, Stream};

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>demo sandbox</title></head>
<body>
<h1>Demo dev server</h1>
<p>This page is served by the sandbox's dev server, bound to <code>[::1]</code> only.</p>
<ul>
  <li><a href="echo-headers">echo-headers</a>: the request headers this server received</li>
  <li><a href="events">events</a>: a Server-Sent Events stream</li>
  <li><a href="redirect">redirect</a>: a 302 with a root-relative Location</li>
  <li><a href="cookie">cookie</a>: a Set-Cookie with Path=/</li>
</ul>
<p>WebSocket echo: <span id="ws">connecting…</span></p>
<p>EventSource: <span id="sse">waiting…</span></p>
<script>
  const wsUrl = new URL("ws", location.href);
  wsUrl.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(wsUrl);
  ws.onopen = () => ws.send("hello through the gateway");
  ws.onmessage = (e) => { document.getElementById("ws").textContent = "echo: " + e.data; };
  ws.onerror = () => { document.getElementById("ws").textContent = "error"; };
  const es = new EventSource("events");
  let n = 0;
  es.onmessage = (e) => { n++; document.getElementById("sse").textContent = n + " events, last: " + e.data; };
  es.onerror = () => { document.getElementById("sse").textContent += " (reconnecting)"; };
</script>
</body></html>
"#;

/// The demo dev server's routes.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/echo-headers", get(echo_headers).post(echo_headers))
        .route("/events", get(events))
        .route("/ws", get(ws))
        .route("/redirect", get(redirect))
        .route("/cookie", get(cookie))
}

/// Serves the demo on `[::1]:port` only.
pub async fn start(port: u16) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("::1", port)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router()).await {
            eprintln!("demo sandbox stopped: {e}");
        }
    });
    Ok(addr)
}

async fn echo_headers(headers: HeaderMap) -> Json<serde_json::Value> {
    let mut map = serde_json::Map::new();
    for (name, value) in &headers {
        let entry = map
            .entry(name.as_str().to_owned())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let Some(list) = entry.as_array_mut() {
            list.push(
                String::from_utf8_lossy(value.as_bytes())
                    .into_owned()
                    .into(),
            );
        }
    }
    Json(serde_json::Value::Object(map))
}

async fn events(
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let start: u64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .map_or(0, |n: u64| n + 1);
    let ticks = stream::unfold(start, move |n| async move {
        if n >= start + 1000 {
            return None;
        }
        if n > start {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let event = Event::default().id(n.to_string()).data(format!("tick {n}"));
        Some((Ok(event), n + 1))
    });
    Sse::new(ticks)
}

async fn ws(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(echo)
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(t) => Message::Text(t),
            Message::Binary(b) => Message::Binary(b),
            Message::Close(c) => {
                let _ = socket.send(Message::Close(c)).await;
                return;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
}

async fn redirect() -> impl IntoResponse {
    (StatusCode::FOUND, [(header::LOCATION, "/")])
}

async fn cookie() -> impl IntoResponse {
    (
        [(header::SET_COOKIE, "demo=1; Path=/; SameSite=Lax")],
        "a cookie named demo was set with Path=/\n",
    )
}
