//! A gateway whose IDE sessions end: revocation store, logout route and navigation redirect in
//! front of a WebSocket-echoing sandbox, for the tests of sessions ending (one process, several
//! processes sharing Redis, and headless Chromium).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message as AxMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{any, get, post};
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use sandbox_gateway::auth::{
    bootstrap_url, Bootstrap, CookieConfig, Logout, Revocation, RevocationStore, SessionRedirect,
    TokenSigner, TunnelAuthLayer,
};
use sandbox_gateway::proxy::ReverseProxy;
use sandbox_gateway::route::{RouteLayer, Upstream};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tower::ServiceBuilder;

/// The key every gateway of a test shares.
pub const KEY: [u8; 32] = [0x42; 32];
/// Where an ended session's navigations and the logout lead.
pub const REDIRECT: &str = "/dashboard?open={id}";
/// The logout path inside each tunnel.
pub const LOGOUT: &str = "/.gateway/logout";

/// The sandbox: `/__ide/{id}/ws` echoes WebSocket text as `echo:…`, every other path answers
/// `sandbox page`.
pub async fn sandbox() -> SocketAddr {
    async fn ws(up: WebSocketUpgrade) -> axum::response::Response {
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
    }
    let app = Router::new()
        .route("/__ide/{id}/ws", any(ws))
        .fallback(|| async { "sandbox page" });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A gateway on 127.0.0.1: the guarded tunnel `/__ide/{id}/…` (revocations from `store`, logout
/// at [`LOGOUT`], navigations without a session sent to [`REDIRECT`]) proxying to `sandbox`
/// (the mount kept); `POST /revoke/{session|subject|sandbox}/{value}` (the host's own route;
/// a session by its nonce in hex); `GET /open/{id}/{subject}`, a host page issuing a link and
/// sending the tab through the bootstrap; `GET /dashboard`. Cookies live `cookie_max_age`.
pub async fn gateway(
    store: Arc<dyn RevocationStore>,
    sandbox: SocketAddr,
    cookie_max_age: Duration,
) -> SocketAddr {
    let signer = TokenSigner::new(KEY).unwrap();
    logged_gateway(store, sandbox, cookie_max_age, signer)
        .await
        .0
}

/// What the gateway received: `{path} cookie={Cookie header}` for each request, in order.
pub type Seen = Arc<std::sync::Mutex<Vec<String>>>;

/// As [`gateway`], with `signer` (a clone of which the caller may rotate), also recording the
/// `Cookie` header of every request it receives.
pub async fn logged_gateway(
    store: Arc<dyn RevocationStore>,
    sandbox: SocketAddr,
    cookie_max_age: Duration,
    signer: TokenSigner,
) -> (SocketAddr, Seen) {
    let cookie = CookieConfig::builder()
        .max_age(cookie_max_age)
        .build()
        .unwrap();
    let to = SessionRedirect::new(REDIRECT).unwrap();
    let upstream: Upstream = format!("http://{sandbox}").parse().unwrap();
    let route = RouteLayer::new(move |parts: &http::request::Parts| {
        let target = parts
            .uri
            .path_and_query()
            .cloned()
            .map(|p| upstream.target(p));
        async move { target.ok_or(sandbox_gateway::route::RouteError::NotFound) }
    });
    let tunnel = ServiceBuilder::new()
        .layer(
            TunnelAuthLayer::new(signer.clone())
                .cookie(cookie.clone())
                .shared_revocations(store.clone())
                .redirect_navigations(to.clone())
                .logout(Logout::new(LOGOUT, to).unwrap()),
        )
        .layer(route)
        // As the examples stack it: the session's tunnel lifetime travels through the rewrite.
        .layer(sandbox_gateway::rewrite::RewriteLayer::new())
        .service(ReverseProxy::new());
    let bootstrap = Bootstrap::builder(signer.clone())
        .cookie(cookie)
        .build::<Body>()
        .unwrap();
    let open = move |Path((id, subject)): Path<(String, String)>| {
        let signer = signer.clone();
        async move {
            let token = signer
                .issue_for(&id, &subject, Duration::from_secs(60))
                .unwrap();
            axum::response::Redirect::to(&bootstrap_url(&id, &token))
        }
    };
    let app = Router::new()
        .route("/revoke/{kind}/{value}", post(revoke))
        .route("/open/{id}/{subject}", get(open))
        .route("/dashboard", get(|| async { "dashboard: open your IDE" }))
        .route_service("/api/dev/{id}/ide", bootstrap)
        .route_service("/__ide/{*rest}", tunnel)
        .with_state(store);
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = app.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let cookie = req
                .headers()
                .get("cookie")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            log.lock()
                .unwrap()
                .push(format!("{} cookie={cookie}", req.uri().path()));
            next.run(req)
        },
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

async fn revoke(
    State(store): State<Arc<dyn RevocationStore>>,
    Path((kind, value)): Path<(String, String)>,
) -> (StatusCode, &'static str) {
    let what = match kind.as_str() {
        "session" => {
            let bytes: Option<Vec<u8>> = (0..value.len())
                .step_by(2)
                .map(|i| {
                    value
                        .get(i..i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                })
                .collect();
            match bytes {
                Some(b) => Revocation::Session(b),
                None => return (StatusCode::BAD_REQUEST, "bad nonce"),
            }
        }
        "subject" => Revocation::Subject(value),
        "sandbox" => Revocation::Sandbox(value),
        _ => return (StatusCode::NOT_FOUND, "unknown kind"),
    };
    match store.revoke(what).await {
        Ok(()) => (StatusCode::OK, "revoked"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable"),
    }
}

/// A session cookie value for sandbox `id` and `subject`, living `ttl`.
pub fn session(id: &str, subject: &str, ttl: Duration) -> String {
    TokenSigner::new(KEY)
        .unwrap()
        .sign_for(
            id,
            Some(subject),
            sandbox_gateway::auth::Audience::Cookie,
            ttl,
        )
        .unwrap()
}

/// `GET /__ide/{id}/` on `gw` with the session cookie (none when empty): the status.
pub async fn status(gw: SocketAddr, id: &str, cookie: &str) -> u16 {
    let mut req = http::Request::get(format!("http://{gw}/__ide/{id}/"));
    if !cookie.is_empty() {
        req = req.header("cookie", format!("sgw_ide_{id}={cookie}"));
    }
    let res = super::client()
        .request(req.body(super::empty()).unwrap())
        .await
        .unwrap();
    res.status().as_u16()
}

/// A WebSocket through `gw`'s tunnel of sandbox `id`, with the session cookie; checked to echo.
pub async fn open_ws(
    gw: SocketAddr,
    id: &str,
    cookie: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut req = format!("ws://{gw}/__ide/{id}/ws")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("cookie", format!("sgw_ide_{id}={cookie}").parse().unwrap());
    let (mut ws, _) = super::within(10, tokio_tungstenite::connect_async(req))
        .await
        .expect("the upgrade is admitted");
    ws.send(Message::Text("hi".into())).await.unwrap();
    let reply = super::within(10, ws.next()).await.unwrap().unwrap();
    assert_eq!(reply, Message::Text("echo:hi".into()));
    ws
}

/// Waits (at most `secs`) for the WebSocket to be closed by the gateway; `Err` with what arrived
/// instead when it stays open.
pub async fn closed_within(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    secs: u64,
) -> Result<Duration, String> {
    let start = std::time::Instant::now();
    match tokio::time::timeout(Duration::from_secs(secs), ws.next()).await {
        Err(_) => Err(format!("still open after {secs}s")),
        Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => Ok(start.elapsed()),
        Ok(Some(Ok(m))) => Err(format!("unexpected message {m:?}")),
    }
}
