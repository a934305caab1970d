//! The three field scenarios in a real browser: headless Chromium driven over WebDriver
//! (chromedriver + fantoccini). CORS, cross-origin isolation, cookies, new tabs, EventSource and
//! WebSocket are enforced by the browser, so only a browser can prove them.
//!
//! These tests are `#[ignore]`d so that a plain `cargo test` passes on a machine without a
//! browser; `./scripts/test` (and CI) installs Debian's `chromium` and `chromium-driver` and runs
//! them with `--include-ignored`. Run them alone with
//! `cargo test --all-features --test browser -- --include-ignored`.
//!
//! Each scenario is a check that returns what the browser saw; every scenario is run once against
//! the full stack (it must pass) and once against a stack missing its key layer (it must fail), so
//! the suite notices when a layer stops doing its job.
#![cfg(feature = "auth")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message as AxMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use fantoccini::{Client, Locator};
use futures_util::{stream, StreamExt};
use sandbox_gateway::auth::{bootstrap_url, Bootstrap, CookieConfig, TokenSigner, TunnelAuthLayer};
use sandbox_gateway::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use sandbox_gateway::forward::{ApiForward, Callers, Secret, Upstream as ApiUpstream};
use sandbox_gateway::isolation::IsolationLayer;
use sandbox_gateway::proxy::ReverseProxy;
use sandbox_gateway::rewrite::RewriteLayer;
use sandbox_gateway::route::{HostPattern, HostRoute, PathMount, RouteError, RouteLayer, Upstream};
use sandbox_gateway::sse::SseLayer;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};
use tower::ServiceBuilder;

#[allow(dead_code)]
#[path = "support/gateway.rs"]
mod gateway_process;

/// How long the browser gets for one scenario step.
const STEP: Duration = Duration::from_secs(20);
/// How long a scenario that is expected to fail is watched before it is declared failed. Only
/// used where the failure is then confirmed by what the loaded page shows, so a slow machine
/// cannot turn a pass into this failure.
const SHORT: Duration = Duration::from_secs(4);

/// One Chromium at a time: two cores do not run several browsers well.
static BROWSER_LOCK: Mutex<()> = Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// The harness: chromedriver in a process group of its own, killed with its browsers on drop.

#[path = "support/chromium.rs"]
mod chromium;
use chromium::{Driver, TempDir};

/// Waits for the page to write `<pre id="done">JSON</pre>`, and returns the JSON.
async fn result(browser: &Client, within: Duration) -> Result<Value, String> {
    let found = browser
        .wait()
        .at_most(within)
        .every(Duration::from_millis(100))
        .for_element(Locator::Id("done"))
        .await;
    match found {
        Ok(el) => {
            let text = el.text().await.map_err(|e| e.to_string())?;
            serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
        }
        Err(_) => Err(format!(
            "the page reported nothing; it shows: {:?}",
            page_text(browser).await
        )),
    }
}

/// The text the current page shows (empty when there is no page body to read).
async fn page_text(browser: &Client) -> String {
    match browser.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn serve(addr: &str, router: Router) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    local
}

/// A WebSocket echo: answers every text message `m` with `echo:m`.
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
}

/// An event stream of three events, then held open.
async fn three_events() -> Response {
    let events =
        stream::iter((1..=3).map(|n| Ok::<_, Infallible>(Bytes::from(format!("data: {n}\n\n")))))
            .chain(stream::pending());
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(events),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Scenario "preview": a dev server bound only to [::1], loaded through /proxy/{port}/.

/// The dev server's page: opens a WebSocket and an EventSource by relative URL (so through the
/// mount) and reports what arrived.
const PREVIEW_PAGE: &str = r#"<!doctype html><title>dev server</title><body><h1>dev server</h1>
<script>
const out = {};
function finish() {
  if (out.ws === undefined || out.sse === undefined || document.getElementById('done')) return;
  const p = document.createElement('pre'); p.id = 'done'; p.textContent = JSON.stringify(out);
  document.body.append(p);
}
const ws = new WebSocket(new URL('ws', location.href).href.replace(/^http/, 'ws'));
ws.onopen = () => ws.send('hmr');
ws.onmessage = (e) => { out.ws = e.data; finish(); };
ws.onerror = () => { out.ws = 'error'; finish(); };
const seen = [];
const es = new EventSource('events');
es.onmessage = (e) => { seen.push(e.data); if (seen.length === 3) { es.close(); out.sse = seen; finish(); } };
es.onerror = () => { if (seen.length < 3) { es.close(); out.sse = 'error'; finish(); } };
</script>"#;

async fn dev_server_on_v6_loopback() -> SocketAddr {
    let router = Router::new()
        .route("/", get(|| async { Html(PREVIEW_PAGE) }))
        .route("/ws", any(ws_echo))
        .route("/events", get(three_events));
    serve("[::1]:0", router).await
}

/// The preview gateway: `/proxy/{port}/` → `localhost:{port}`, or, without the localhost
/// connector's knowledge of both loopbacks, a proxy aimed at `127.0.0.1:{port}`.
async fn preview_gateway(dev_port: u16, via_localhost: bool) -> SocketAddr {
    let proxy = ServiceBuilder::new().layer(SseLayer::new());
    let router = if via_localhost {
        // `/proxy/{port}/…` by path, and `{port}.localhost` by Host for everything else.
        let by_host = HostRoute::ports("{port}.localhost".parse::<HostPattern>().unwrap(), "port")
            .unwrap()
            .allow_port(dev_port);
        Router::new()
            .route_service(
                "/proxy/{*rest}",
                proxy
                    .layer(RouteLayer::new(
                        PathMount::strip("/proxy").allow_port(dev_port),
                    ))
                    .layer(RewriteLayer::new())
                    .service(ReverseProxy::new()),
            )
            .fallback_service(
                ServiceBuilder::new()
                    .layer(SseLayer::new())
                    .layer(RouteLayer::new(by_host))
                    .layer(RewriteLayer::new())
                    .service(ReverseProxy::new()),
            )
    } else {
        let upstream: Upstream = format!("http://127.0.0.1:{dev_port}").parse().unwrap();
        let prefix = format!("/proxy/{dev_port}");
        Router::new().route_service(
            "/proxy/{*rest}",
            proxy
                .layer(RouteLayer::new(move |parts: &http::request::Parts| {
                    let pq = parts
                        .uri
                        .path_and_query()
                        .map(|pq| pq.as_str())
                        .unwrap_or("/");
                    let rest = pq.strip_prefix(prefix.as_str()).unwrap_or(pq).to_owned();
                    let upstream = upstream.clone();
                    async move {
                        let rest = rest
                            .parse()
                            .map_err(|_| RouteError::BadPath("invalid path"))?;
                        Ok(upstream.target(rest))
                    }
                }))
                .service(ReverseProxy::new()),
        )
    };
    serve("127.0.0.1:0", router).await
}

/// Loads `url` (the dev server's page through the gateway) and checks what the page saw.
async fn preview_scenario(browser: &Client, url: &str) -> Result<(), String> {
    browser.goto(url).await.map_err(|e| e.to_string())?;
    let seen = result(browser, STEP).await?;
    if seen["ws"] != "echo:hmr" {
        return Err(format!("WebSocket through the proxy: {seen}"));
    }
    if seen["sse"] != json!(["1", "2", "3"]) {
        return Err(format!("EventSource through the proxy: {seen}"));
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs chromium and chromedriver; run with --include-ignored"]
async fn preview_of_a_dev_server_bound_only_to_v6_loopback() {
    let _one = BROWSER_LOCK.lock().await;
    let mut driver = Driver::start().await;
    let browser = driver.browser().await;
    let dev = dev_server_on_v6_loopback().await;

    let (p, g) = (dev.port(), preview_gateway(dev.port(), true).await.port());
    let by_path = format!("http://localhost:{g}/proxy/{p}/");
    assert_eq!(preview_scenario(&browser, &by_path).await, Ok(()));
    // The same dev server by Host: browsers resolve `*.localhost` to loopback themselves.
    let by_host = format!("http://{p}.localhost:{g}/");
    assert_eq!(preview_scenario(&browser, &by_host).await, Ok(()));

    // Without the localhost connector (a proxy aimed at 127.0.0.1), the same page never loads.
    let broken = preview_gateway(p, false).await.port();
    let outcome =
        preview_scenario(&browser, &format!("http://localhost:{broken}/proxy/{p}/")).await;
    assert!(
        outcome.is_err(),
        "a proxy aimed at 127.0.0.1 reached a [::1]-only server"
    );
    let body = page_text(&browser).await;
    assert!(body.contains("could not connect"), "{body}");

    browser.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Scenario "IDE": token route → bootstrap in a new tab → cookie → tunnel with a WebSocket.

const KEY: &[u8; 32] = b"browser-suite-key-0123456789abcd";

/// The IDE's page inside the sandbox (served under its kept path `/__ide/demo/`).
const IDE_PAGE: &str = r#"<!doctype html><title>ide</title><body><h1>ide</h1>
<script>
const ws = new WebSocket(new URL('ws', location.href).href.replace(/^http/, 'ws'));
function finish(v) {
  if (document.getElementById('done')) return;
  const p = document.createElement('pre'); p.id = 'done';
  p.textContent = JSON.stringify({ ws: v, cookie: document.cookie, path: location.pathname, search: location.search });
  document.body.append(p);
}
ws.onopen = () => ws.send('keystroke');
ws.onmessage = (e) => finish(e.data);
ws.onerror = () => finish('error');
</script>"#;

/// The host's dashboard page: opens the IDE in a new tab the way platforms do.
const DASHBOARD: &str = r#"<!doctype html><title>dashboard</title><body>
<button id="open" onclick="openIde()">Open IDE</button>
<script>
async function openIde() {
  const tab = window.open('about:blank', '_blank');
  const res = await fetch('/api/dev/demo/ide-token', { method: 'POST' });
  const { url } = await res.json();
  tab.location = url;
}
</script>"#;

async fn ide_sandbox() -> SocketAddr {
    let router = Router::new()
        .route("/__ide/demo/", get(|| async { Html(IDE_PAGE) }))
        .route("/__ide/demo/ws", any(ws_echo));
    serve("127.0.0.1:0", router).await
}

async fn ide_gateway(sandbox: SocketAddr, guarded: bool) -> SocketAddr {
    let signer = TokenSigner::new(KEY).unwrap();
    let issue = {
        let signer = signer.clone();
        // A real host guards this route with its own session; the suite is that host's user.
        move || async move {
            let token = signer.issue("demo", Duration::from_secs(60)).unwrap();
            Json(json!({ "url": bootstrap_url("demo", &token) }))
        }
    };
    let bootstrap = Bootstrap::builder(signer.clone())
        .cookie(CookieConfig::default())
        .build::<Body>()
        .unwrap();
    let upstream: Upstream = format!("http://{sandbox}").parse().unwrap();
    let route = RouteLayer::new(move |parts: &http::request::Parts| {
        let path = parts.uri.path_and_query().cloned();
        let upstream = upstream.clone();
        async move {
            let path = path.ok_or(RouteError::NotFound)?;
            if !path.path().starts_with("/__ide/demo/") {
                return Err(RouteError::NotFound);
            }
            Ok(upstream.target(path))
        }
    });
    let tunnel = if guarded {
        Router::new().route_service(
            "/__ide/{*rest}",
            ServiceBuilder::new()
                .layer(TunnelAuthLayer::new(signer).cookie(CookieConfig::default()))
                .layer(route)
                .service(ReverseProxy::new()),
        )
    } else {
        Router::new().route_service(
            "/__ide/{*rest}",
            ServiceBuilder::new()
                .layer(route)
                .service(ReverseProxy::new()),
        )
    };
    let router = Router::new()
        .route("/", get(|| async { Html(DASHBOARD) }))
        .route("/api/dev/demo/ide-token", post(issue))
        .route_service("/api/dev/{id}/ide", bootstrap)
        .merge(tunnel);
    serve("127.0.0.1:0", router).await
}

/// The dashboard opens the IDE in a new tab; returns what the IDE page reported there.
async fn open_ide_in_new_tab(browser: &Client, gateway: SocketAddr) -> Result<Value, String> {
    browser
        .goto(&format!("http://127.0.0.1:{}/", gateway.port()))
        .await
        .map_err(|e| e.to_string())?;
    let home = browser.window().await.map_err(|e| e.to_string())?;
    browser
        .find(Locator::Id("open"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    let mut tab = None;
    for _ in 0..100 {
        let windows = browser.windows().await.map_err(|e| e.to_string())?;
        if let Some(w) = windows.into_iter().find(|w| *w != home) {
            tab = Some(w);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tab = tab.ok_or("no new tab opened")?;
    browser
        .switch_to_window(tab)
        .await
        .map_err(|e| e.to_string())?;
    result(browser, STEP).await
}

/// A browser that never went through the bootstrap opens the tunnel directly; the page gets
/// `within` to report.
async fn stranger_reaches_tunnel(
    browser: &Client,
    gateway: SocketAddr,
    within: Duration,
) -> Result<Value, String> {
    browser
        .goto(&format!("http://127.0.0.1:{}/__ide/demo/", gateway.port()))
        .await
        .map_err(|e| e.to_string())?;
    result(browser, within).await
}

#[tokio::test]
#[ignore = "needs chromium and chromedriver; run with --include-ignored"]
async fn ide_opens_in_a_new_tab_with_an_httponly_cookie() {
    let _one = BROWSER_LOCK.lock().await;
    let mut driver = Driver::start().await;
    let sandbox = ide_sandbox().await;
    let gateway = ide_gateway(sandbox, true).await;

    let browser = driver.browser().await;
    let seen = open_ide_in_new_tab(&browser, gateway).await.unwrap();
    assert_eq!(seen["ws"], "echo:keystroke", "{seen}");
    assert_eq!(seen["path"], "/__ide/demo/", "landed in the tunnel: {seen}");
    assert_eq!(
        seen["search"], "",
        "the token is not left in the URL: {seen}"
    );
    assert_eq!(seen["cookie"], "", "the session cookie is HttpOnly: {seen}");
    // The cookie is there all the same: the browser sends it on a reload.
    browser.refresh().await.unwrap();
    let again = result(&browser, STEP).await.unwrap();
    assert_eq!(again["ws"], "echo:keystroke");

    // A fresh browser context without the bootstrap is refused.
    let stranger = driver.browser().await;
    let refused = stranger_reaches_tunnel(&stranger, gateway, SHORT).await;
    assert!(
        refused.is_err(),
        "a stranger opened the tunnel: {refused:?}"
    );
    let body = page_text(&stranger).await;
    assert!(body.contains("No IDE session"), "{body}");

    // Without the tunnel guard the same stranger walks in: the check above would catch it.
    let open_gateway = ide_gateway(sandbox, false).await;
    let walked_in = stranger_reaches_tunnel(&stranger, open_gateway, STEP).await;
    assert!(walked_in.is_ok(), "{walked_in:?}");

    stranger.close().await.unwrap();
    browser.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Scenario "app builder": an app on a foreign origin, holding an API token the host minted, calls
// the API the way OpenAI's SDK does and streams the answer through the gateway; without a token,
// or with a token for another API, it is refused; the host page is cross-origin isolated.

/// The page of the app (served on its own origin). As the OpenAI SDK's `fetch` does, it POSTs
/// JSON with `Authorization: Bearer <token>` and the SDK's `X-Stainless-*` headers: first without
/// a token and with a token for another API (both must be refused, readably), then with its
/// token, reading the event stream chunk by chunk and acknowledging each event to its own server.
const APP_PAGE: &str = r#"<!doctype html><title>app</title><body><h1>app</h1>
<script>
const sdkHeaders = (token) => {
  const h = {
    'Content-Type': 'application/json',
    'Accept': 'application/json',
    'X-Stainless-Lang': 'js',
    'X-Stainless-Package-Version': '4.104.0',
    'X-Stainless-OS': 'Linux',
    'X-Stainless-Arch': 'x64',
    'X-Stainless-Runtime': 'browser:chrome',
    'X-Stainless-Runtime-Version': '138.0.0',
    'X-Stainless-Retry-Count': '0',
    'X-Stainless-Timeout': '600',
  };
  if (token) h['Authorization'] = 'Bearer ' + token;
  return h;
};
const call = (token) => fetch(GATEWAY + '/api/proxy/demo-llm/chat', {
  method: 'POST',
  headers: sdkHeaders(token),
  body: JSON.stringify({ model: 'demo', stream: true, messages: [{ role: 'user', content: 'hello' }] }),
});
// A refusal's status and error type, read as the SDK reads it; an answer that is not a refusal
// is cancelled.
const refusal = async (res) => {
  if (res.status < 400) { await res.body.cancel(); return [res.status, null]; }
  return [res.status, (await res.json()).error.type];
};
(async () => {
  const out = { events: [] };
  try {
    out.no_token = await refusal(await call(null));
    out.other_api = await refusal(await call(OTHER_TOKEN));
    const res = await call(TOKEN);
    out.status = res.status;
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, i); buf = buf.slice(i + 2);
        const data = event.replace(/^data: /, '');
        out.events.push(data);
        await fetch('/ack?k=' + out.events.length);
      }
    }
  } catch (e) {
    out.error = String(e);
  }
  const p = document.createElement('pre'); p.id = 'done'; p.textContent = JSON.stringify(out);
  document.body.append(p);
})();
</script>"#;

/// The gateway's own page: reports whether it is cross-origin isolated.
const HOST_PAGE: &str = r#"<!doctype html><title>host</title><body><h1>host</h1>
<script>
let sab = false;
try { new SharedArrayBuffer(8); sab = true; } catch (e) {}
const p = document.createElement('pre'); p.id = 'done';
p.textContent = JSON.stringify({ isolated: self.crossOriginIsolated, sab });
document.body.append(p);
</script>"#;

const EVENTS: usize = 10;
/// The API key only the gateway holds.
const API_KEY: &str = "Bearer demo-key";

/// The API upstream sends event k+1 only after the app acknowledged event k, so the events can
/// only all arrive if each was delivered to the page before the next was written.
async fn llm_upstream(acks: Arc<Mutex<mpsc::Receiver<usize>>>) -> SocketAddr {
    async fn answer(
        State(acks): State<Arc<Mutex<mpsc::Receiver<usize>>>>,
        headers: axum::http::HeaderMap,
    ) -> Response {
        // Only the key the gateway holds opens the API; the app's own token never arrives.
        if headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .collect::<Vec<_>>()
            != [API_KEY]
        {
            return (StatusCode::UNAUTHORIZED, "bad key").into_response();
        }
        let events = stream::unfold(0usize, move |k| {
            let acks = acks.clone();
            async move {
                if k == EVENTS {
                    return None;
                }
                if k > 0 {
                    // Wait for the acknowledgement of event k, bounded.
                    let got = tokio::time::timeout(STEP, acks.lock().await.recv()).await;
                    if !matches!(got, Ok(Some(n)) if n == k) {
                        return Some((
                            Err(std::io::Error::other("event not acknowledged")),
                            EVENTS,
                        ));
                    }
                }
                Some((Ok(Bytes::from(format!("data: token{}\n\n", k + 1))), k + 1))
            }
        });
        (
            [(header::CONTENT_TYPE, "text/event-stream")],
            Body::from_stream(events),
        )
            .into_response()
    }
    serve(
        "127.0.0.1:0",
        Router::new()
            .route("/v1/chat", post(answer))
            .with_state(acks),
    )
    .await
}

struct AppGateway {
    cors: bool,
    isolation: bool,
    /// Whether the forwarder checks API tokens (otherwise anyone spends the key).
    tokens: bool,
}

async fn app_gateway(
    upstream: SocketAddr,
    allowed_origin: &str,
    with: AppGateway,
    signer: TokenSigner,
) -> SocketAddr {
    let callers = if with.tokens {
        Callers::api_tokens(signer)
    } else {
        Callers::anyone()
    };
    let api = ApiForward::builder()
        .callers(callers)
        .upstream(
            ApiUpstream::new("demo-llm", format!("http://{upstream}/v1"))
                .allow_methods([Method::POST])
                .allow_paths(["/chat"])
                .inject_header(header::AUTHORIZATION, Secret::new(API_KEY).unwrap())
                // The stand-in API is on loopback, which the SSRF guard refuses unless told.
                .allow_private(true),
        )
        .build()
        .unwrap();
    let api = if with.cors {
        let cors = CorsLayer::builder()
            .allow_origin(AllowOrigin::list([allowed_origin]))
            .allow_methods([Method::POST])
            .allow_headers(AllowHeaders::api_sdks())
            .build()
            .unwrap();
        Router::new().nest_service("/api/proxy", ServiceBuilder::new().layer(cors).service(api))
    } else {
        Router::new().nest_service("/api/proxy", api)
    };
    let mut router = Router::new()
        .route("/", get(|| async { Html(HOST_PAGE) }))
        .merge(api);
    if with.isolation {
        router = router.layer(IsolationLayer::new());
    }
    serve("127.0.0.1:0", router).await
}

async fn app_calls_api(browser: &Client, app: SocketAddr) -> Result<Value, String> {
    browser
        .goto(&format!("http://127.0.0.1:{}/", app.port()))
        .await
        .map_err(|e| e.to_string())?;
    let seen = result(browser, STEP).await?;
    if seen.get("error").is_none()
        && (seen["no_token"] != json!([401, "unauthorized"])
            || seen["other_api"] != json!([403, "forbidden"]))
    {
        return Err(format!(
            "callers without a token for this API were not refused: {seen}"
        ));
    }
    let expected: Vec<String> = (1..=EVENTS).map(|k| format!("token{k}")).collect();
    if seen["status"] != 200 || seen["events"] != json!(expected) {
        return Err(format!("the app's streamed call: {seen}"));
    }
    Ok(seen)
}

async fn host_page_isolated(browser: &Client, gateway: SocketAddr) -> Result<(), String> {
    browser
        .goto(&format!("http://localhost:{}/", gateway.port()))
        .await
        .map_err(|e| e.to_string())?;
    let seen = result(browser, STEP).await?;
    if seen != json!({ "isolated": true, "sab": true }) {
        return Err(format!(
            "the host page is not cross-origin isolated: {seen}"
        ));
    }
    Ok(())
}

/// One app origin with its acknowledgement channel and its API upstream, and a gateway in front.
async fn app_builder_stack(with: AppGateway, allow_the_app: bool) -> (SocketAddr, SocketAddr) {
    let (tx, rx) = mpsc::channel(EVENTS);
    let upstream = llm_upstream(Arc::new(Mutex::new(rx))).await;
    // The gateway's port must be known to the app page, and the app's origin to the gateway:
    // reserve the app's port first.
    let app_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let app_port = app_listener.local_addr().unwrap().port();
    drop(app_listener);
    let app_origin_str = format!("http://127.0.0.1:{app_port}");
    let allowed = if allow_the_app {
        app_origin_str.clone()
    } else {
        "http://127.0.0.1:1".to_owned()
    };
    // The host minted the app's token (its own route does, see examples/app_builder.rs) and a
    // token for another API.
    let signer = TokenSigner::random().unwrap();
    let ttl = Duration::from_secs(300);
    let token = signer.issue_api("app-1", ["demo-llm"], ttl).unwrap();
    let other = signer.issue_api("app-1", ["other-api"], ttl).unwrap();
    let gateway = app_gateway(upstream, &allowed, with, signer).await;
    let router_origin = format!("http://localhost:{}", gateway.port());
    let app = {
        let page = APP_PAGE
            .replace("GATEWAY", &format!("{router_origin:?}"))
            .replace("OTHER_TOKEN", &format!("{other:?}"))
            .replace("TOKEN", &format!("{token:?}"));
        let router = Router::new()
            .route("/", get(move || async move { Html(page) }))
            .route(
                "/ack",
                get(
                    move |q: axum::extract::Query<std::collections::HashMap<String, usize>>| {
                        let acks = tx.clone();
                        async move {
                            let _ = acks.send(q.0.get("k").copied().unwrap_or(0)).await;
                            StatusCode::NO_CONTENT
                        }
                    },
                ),
            );
        serve(&format!("127.0.0.1:{app_port}"), router).await
    };
    (app, gateway)
}

#[tokio::test]
#[ignore = "needs chromium and chromedriver; run with --include-ignored"]
async fn app_builder_streams_a_cross_origin_api_call() {
    let _one = BROWSER_LOCK.lock().await;
    let mut driver = Driver::start().await;
    let browser = driver.browser().await;

    let full = AppGateway {
        cors: true,
        isolation: true,
        tokens: true,
    };
    let (app, gateway) = app_builder_stack(full, true).await;
    let seen = app_calls_api(&browser, app).await;
    assert!(seen.is_ok(), "{seen:?}");
    assert_eq!(host_page_isolated(&browser, gateway).await, Ok(()));

    // A disallowed origin's fetch fails in the browser.
    let full = AppGateway {
        cors: true,
        isolation: true,
        tokens: true,
    };
    let (app, _) = app_builder_stack(full, false).await;
    let refused = app_calls_api(&browser, app).await;
    assert!(
        matches!(&refused, Err(e) if e.contains("TypeError")),
        "{refused:?}"
    );

    // Without the CORS layer the allowed app is refused by the browser too…
    let (app, _) = app_builder_stack(
        AppGateway {
            cors: false,
            isolation: true,
            tokens: true,
        },
        true,
    )
    .await;
    let refused = app_calls_api(&browser, app).await;
    assert!(
        matches!(&refused, Err(e) if e.starts_with("the app's streamed call") && e.contains("TypeError")),
        "the page loaded and its fetch failed in the browser: {refused:?}"
    );
    // …and without the isolation layer the host page loses crossOriginIsolated.
    let (_, gateway) = app_builder_stack(
        AppGateway {
            cors: true,
            isolation: false,
            tokens: true,
        },
        true,
    )
    .await;
    assert_eq!(
        host_page_isolated(&browser, gateway).await,
        Err(format!(
            "the host page is not cross-origin isolated: {}",
            json!({ "isolated": false, "sab": false })
        )),
        "the page loaded and reported itself not isolated"
    );
    // …and without the token check a caller with no token spends the key: the scenario fails.
    let (app, _) = app_builder_stack(
        AppGateway {
            cors: true,
            isolation: true,
            tokens: false,
        },
        true,
    )
    .await;
    let open = app_calls_api(&browser, app).await;
    assert!(
        matches!(&open, Err(e) if e.contains("were not refused")),
        "{open:?}"
    );

    browser.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The `gateway` example served over HTTPS with a test certificate.

/// The `gateway` example's binary, built by `cargo test` along with the tests.
#[cfg(all(feature = "forward", feature = "tls", feature = "serve"))]
fn gateway_example() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("examples")
        .join(format!("gateway{}", std::env::consts::EXE_SUFFIX))
}

/// Kills the example when the test ends, however it ends.
#[cfg(all(feature = "forward", feature = "tls", feature = "serve"))]
struct Running(Child);

#[cfg(all(feature = "forward", feature = "tls", feature = "serve"))]
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(all(feature = "forward", feature = "tls", feature = "serve"))]
#[tokio::test]
#[ignore = "needs chromium and chromedriver; run with --include-ignored"]
async fn the_gateway_example_over_https_is_cross_origin_isolated_and_speaks_h2() {
    use std::io::{BufRead, BufReader};

    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = TempDir::new("tls");
    let (cert, key) = (dir.path.join("cert.pem"), dir.path.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();

    let bin = gateway_example();
    assert!(bin.exists(), "{} not built", bin.display());
    let mut child = Command::new(&bin)
        .args(["--listen", "127.0.0.1:0", "--demo-port", "0"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the gateway example");
    let stdout = child.stdout.take().unwrap();
    let _running = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(200)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (mut port, mut demo) = (None, None);
    while port.is_none() && std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
            if let Some(rest) = line.strip_prefix("demo sandbox (dev server) on http://[::1]:") {
                demo = rest.split_whitespace().next().map(str::to_owned);
            }
            port = line
                .strip_prefix("gateway on https://127.0.0.1:")
                .map(|p| p.trim().to_owned());
        }
    }
    let port = port.expect("the example names its https address");
    let demo = demo.expect("the example names its demo port");

    let _one = BROWSER_LOCK.lock().await;
    let mut driver = Driver::start().await;
    // The test certificate is self-signed: Chromium is told to accept it; the page is still an
    // https origin, hence a secure context.
    let browser = driver.browser_with(&["--ignore-certificate-errors"]).await;
    browser
        .goto(&format!("https://localhost:{port}/"))
        .await
        .expect("the page loads over https");
    let seen = browser
        .execute(
            "return { isolated: self.crossOriginIsolated, secure: self.isSecureContext, \
             protocol: location.protocol, \
             alpn: performance.getEntriesByType('navigation')[0].nextHopProtocol };",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        seen,
        json!({ "isolated": true, "secure": true, "protocol": "https:", "alpn": "h2" })
    );

    // The demo sandbox's page through the gateway: its WebSocket (wss, over HTTP/1.1) echoes and
    // its event stream arrives.
    browser
        .goto(&format!("https://localhost:{port}/proxy/{demo}/"))
        .await
        .unwrap();
    let echoed = browser
        .wait()
        .at_most(STEP)
        .every(Duration::from_millis(100))
        .for_element(Locator::XPath(
            "//span[@id='ws' and text()='echo: hello through the gateway']",
        ))
        .await;
    assert!(
        echoed.is_ok(),
        "no wss echo: {:?}",
        page_text(&browser).await
    );
    let streamed = browser
        .wait()
        .at_most(STEP)
        .every(Duration::from_millis(100))
        .for_element(Locator::XPath(
            "//span[@id='sse' and contains(text(), 'events, last:')]",
        ))
        .await;
    assert!(
        streamed.is_ok(),
        "no events: {:?}",
        page_text(&browser).await
    );
    browser.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Scenario "walls": a sandbox on the gateway's own origin (`/proxy/{port}/`, `/__ide/{id}/`)
// tries to read the host's session and to change browser state outside its mount.

/// The sandbox's page: reports the cookies its server receives over HTTP and WebSocket, then sets
/// cookies (one named like the gateway's tunnel cookie) and sends `Clear-Site-Data`, then tries to
/// register a service worker for the whole origin.
const SANDBOX_PAGE: &str = r#"<!doctype html><title>sandbox</title><body><h1>sandbox</h1>
<script>
(async () => {
  const out = {};
  const echo = async () => (await fetch('echo')).text();
  try {
    out.http_before = await echo();
    out.ws = await new Promise((resolve) => {
      const ws = new WebSocket(new URL('ws', location.href).href.replace(/^http/, 'ws'));
      ws.onmessage = (e) => { resolve(e.data); ws.close(); };
      ws.onerror = () => resolve('error');
    });
    await fetch('set');
    out.http_after = await echo();
    out.script_sees = document.cookie;
    const sw = location.pathname + 'sw.js';
    try {
      await navigator.serviceWorker.register(sw, { scope: '/' });
      out.sw_root = 'registered';
    } catch (e) { out.sw_root = 'refused: ' + e.name; }
    try {
      const r = await navigator.serviceWorker.register(sw, { scope: location.pathname });
      out.sw_mount = 'registered';
      await r.unregister();
    } catch (e) { out.sw_mount = 'refused: ' + e.name; }
  } catch (e) { out.error = String(e); }
  const p = document.createElement('pre'); p.id = 'done'; p.textContent = JSON.stringify(out);
  document.body.append(p);
})();
</script>"#;

fn cookie_text(headers: &axum::http::HeaderMap) -> String {
    headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap_or("?"))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn greedy_sandbox() -> SocketAddr {
    async fn ws_cookies(up: WebSocketUpgrade, headers: axum::http::HeaderMap) -> Response {
        let cookies = cookie_text(&headers);
        up.on_upgrade(move |mut socket: WebSocket| async move {
            let _ = socket.send(AxMessage::Text(cookies.into())).await;
        })
    }
    let router = Router::new()
        .route("/", get(|| async { Html(SANDBOX_PAGE) }))
        .route(
            "/echo",
            get(|headers: axum::http::HeaderMap| async move { cookie_text(&headers) }),
        )
        .route("/ws", any(ws_cookies))
        .route(
            "/set",
            get(|| async {
                let mut res = "set".into_response();
                let h = res.headers_mut();
                for c in [
                    "session=SANDBOX; Path=/",
                    "sgw_ide_demo=forged; Path=/__ide/demo/",
                    "own=mine; Path=/",
                ] {
                    h.append(header::SET_COOKIE, c.parse().unwrap());
                }
                h.insert("clear-site-data", "\"cookies\"".parse().unwrap());
                res
            }),
        )
        .route(
            "/sw.js",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/javascript"),
                        (
                            header::HeaderName::from_static("service-worker-allowed"),
                            "/",
                        ),
                    ],
                    "self.addEventListener('fetch', () => {});",
                )
            }),
        );
    serve("127.0.0.1:0", router).await
}

/// The host: `/login` sets its HttpOnly session at `Path=/`; any other path outside the mount
/// reports the cookies the browser sent it.
async fn walls_gateway(sandbox: u16, walls: bool) -> SocketAddr {
    let rewrite = if walls {
        RewriteLayer::new()
    } else {
        RewriteLayer::new()
            .cookie_firewall(sandbox_gateway::rewrite::CookieFirewall::off())
            .sandbox_responses(false)
    };
    let previews = ServiceBuilder::new()
        .layer(RouteLayer::new(
            PathMount::strip("/proxy")
                .allow_port(sandbox)
                .upstream_host("127.0.0.1"),
        ))
        .layer(rewrite)
        .service(ReverseProxy::new());
    let router = Router::new()
        .route(
            "/login",
            get(|| async {
                (
                    [(header::SET_COOKIE, "session=HOSTSECRET; Path=/; HttpOnly")],
                    Html("<title>host</title>logged in"),
                )
            }),
        )
        .route_service("/proxy/{*rest}", previews)
        .fallback(|headers: axum::http::HeaderMap| async move { cookie_text(&headers) });
    serve("127.0.0.1:0", router).await
}

/// The IDE's tunnel to the same sandbox on the host's origin: bootstrap link → cookie →
/// `/__ide/demo/…` (prefix stripped), guarded, then walled by the `RewriteLayer`.
async fn walled_ide_gateway(sandbox: u16, walls: bool) -> SocketAddr {
    let signer = TokenSigner::new(KEY).unwrap();
    let bootstrap = Bootstrap::builder(signer.clone())
        .cookie(CookieConfig::default())
        .build::<Body>()
        .unwrap();
    let upstream: Upstream = format!("http://127.0.0.1:{sandbox}").parse().unwrap();
    let route = RouteLayer::new(move |parts: &http::request::Parts| {
        let rest = parts
            .uri
            .path_and_query()
            .and_then(|pq| pq.as_str().strip_prefix("/__ide/demo"))
            .map(str::to_owned);
        let upstream = upstream.clone();
        async move {
            let rest = rest.ok_or(RouteError::NotFound)?;
            let rest = rest
                .parse()
                .map_err(|_| RouteError::BadPath("invalid path"))?;
            Ok(upstream.target(rest).with_mount("/__ide/demo"))
        }
    });
    let rewrite = if walls {
        RewriteLayer::new()
    } else {
        RewriteLayer::new()
            .cookie_firewall(sandbox_gateway::rewrite::CookieFirewall::off())
            .sandbox_responses(false)
    };
    let tunnel = ServiceBuilder::new()
        .layer(TunnelAuthLayer::new(signer).cookie(CookieConfig::default()))
        .layer(route)
        .layer(rewrite)
        .service(ReverseProxy::new());
    let router = Router::new()
        .route(
            "/login",
            get(|| async {
                (
                    [(header::SET_COOKIE, "session=HOSTSECRET; Path=/; HttpOnly")],
                    Html("<title>host</title>logged in"),
                )
            }),
        )
        .route_service("/api/dev/{id}/ide", bootstrap)
        .route_service("/__ide/{*rest}", tunnel)
        .fallback(|headers: axum::http::HeaderMap| async move { cookie_text(&headers) });
    serve("127.0.0.1:0", router).await
}

/// Logs in on the host, opens the sandbox's page at `start` (a path on the gateway), and checks
/// the walls held: inside, and at each path of `outside`, outside the mount.
async fn walls_scenario(
    browser: &Client,
    gateway: SocketAddr,
    start: &str,
    outside: &[&str],
) -> Result<(), String> {
    let origin = format!("http://127.0.0.1:{}", gateway.port());
    browser
        .goto(&format!("{origin}/login"))
        .await
        .map_err(|e| e.to_string())?;
    browser
        .goto(&format!("{origin}{start}"))
        .await
        .map_err(|e| e.to_string())?;
    let seen = result(browser, STEP).await?;
    let sorted = |v: &Value| {
        let mut pairs: Vec<String> = v
            .as_str()
            .unwrap_or("?")
            .split("; ")
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        pairs.sort();
        pairs
    };
    let mut problems = Vec::new();
    if seen["http_before"] != "" || seen["ws"] != "" {
        problems.push("the sandbox received cookies it did not set (HTTP or WebSocket)");
    }
    if sorted(&seen["http_after"]) != ["own=mine", "session=SANDBOX"] {
        problems.push("the sandbox's own cookies did not round-trip under their names");
    }
    if seen["script_sees"]
        .as_str()
        .unwrap_or("")
        .contains("HOSTSECRET")
    {
        problems.push("the sandbox's script read the host session");
    }
    if !seen["sw_root"]
        .as_str()
        .unwrap_or("")
        .starts_with("refused")
    {
        problems.push("a service worker claimed the whole origin");
    }
    if seen["sw_mount"] != "registered" {
        problems.push("a service worker could not be registered for the mount itself");
    }
    // Outside the mount the browser's cookies are what the host set, nothing more or less.
    for path in outside {
        browser
            .goto(&format!("{origin}{path}"))
            .await
            .map_err(|e| e.to_string())?;
        if page_text(browser).await != "session=HOSTSECRET" {
            problems.push("the cookies outside the mount changed");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{problems:?}: {seen}"))
    }
}

#[tokio::test]
#[ignore = "needs chromium and chromedriver; run with --include-ignored"]
async fn a_sandbox_on_a_shared_origin_cannot_reach_the_hosts_cookies() {
    let _one = BROWSER_LOCK.lock().await;
    let mut driver = Driver::start().await;
    let sandbox = greedy_sandbox().await.port();

    let by_port = format!("/proxy/{sandbox}/");
    let outside = ["/host-cookies", "/__ide/demo/x"];

    let browser = driver.browser().await;
    let gateway = walls_gateway(sandbox, true).await;
    let held = walls_scenario(&browser, gateway, &by_port, &outside).await;
    assert_eq!(held, Ok(()));
    browser.close().await.unwrap();

    // The same page through the IDE tunnel: its Set-Cookie named like the gateway's cookie does
    // not replace the real one (its requests after it still pass the guard).
    let link = || {
        let token = TokenSigner::new(KEY)
            .unwrap()
            .issue("demo", Duration::from_secs(60))
            .unwrap();
        bootstrap_url("demo", &token)
    };
    let outside_ide = ["/host-cookies", "/proxy/1/x"];
    let browser = driver.browser().await;
    let gateway = walled_ide_gateway(sandbox, true).await;
    let held = walls_scenario(&browser, gateway, &link(), &outside_ide).await;
    assert_eq!(held, Ok(()));
    browser.close().await.unwrap();
    // Without the walls the tunnel guard alone lets the host's session in.
    let browser = driver.browser().await;
    let open = walled_ide_gateway(sandbox, false).await;
    let broken = walls_scenario(&browser, open, &link(), &outside_ide).await;
    let err = broken.expect_err("the tunnel without walls passed");
    assert!(err.contains("did not set"), "{err}");
    browser.close().await.unwrap();

    // Without the firewall and the response filter, the same page gets through: the host's
    // session reaches the sandbox, its worker claims `/`, its Clear-Site-Data logs the host out.
    let browser = driver.browser().await;
    let open = walls_gateway(sandbox, false).await;
    let broken = walls_scenario(&browser, open, &by_port, &outside).await;
    let err = broken.expect_err("the walls were off, yet the scenario passed");
    assert!(err.contains("did not set"), "{err}");
    assert!(err.contains("whole origin"), "{err}");
    browser.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Scenario "own origins": each sandbox on a host of its own, `{id}.ide.localhost:{port}`. The
// IDE flow works there, and a page of sandbox X can use neither sandbox V nor the host.

mod own_origins {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::request::Parts;
    use sandbox_gateway::auth::{
        is_same_origin_request, SandboxHosts, TunnelAuthLayer, TunnelResolver,
    };

    /// The host's dashboard for sandbox ID: logs the user in (a `Path=/` session cookie) and
    /// opens the IDE in a new tab.
    fn dashboard(id: &str) -> String {
        format!(
            r#"<!doctype html><title>dashboard</title><body>
<button id="open" onclick="openIde()">Open IDE</button>
<script>
async function openIde() {{
  const tab = window.open('about:blank', '_blank');
  const res = await fetch('/api/dev/{id}/ide-token', {{ method: 'POST' }});
  const {{ url }} = await res.json();
  tab.location = url;
}}
</script>"#
        )
    }

    /// Sandbox X's IDE page: reports its origin, its readable cookies and a WebSocket echo.
    const X_IDE: &str = r#"<!doctype html><title>x</title><body><h1>x</h1>
<script>
const ws = new WebSocket(new URL('ws', location.href).href.replace(/^http/, 'ws'));
function finish(v) {
  if (document.getElementById('done')) return;
  const p = document.createElement('pre'); p.id = 'done';
  p.textContent = JSON.stringify({ ws: v, cookie: document.cookie, origin: location.origin, path: location.pathname, search: location.search });
  document.body.append(p);
}
ws.onopen = () => ws.send('keystroke');
ws.onmessage = (e) => finish(e.data);
ws.onerror = () => finish('error');
</script>"#;

    /// Sandbox X's hostile page: reads V, mints a link for V, plants cookies for V and the host.
    const X_ATTACK: &str = r#"<!doctype html><title>attack</title><body><h1>attack</h1>
<script>
(async () => {
  const out = {};
  async function attempt(name, f) {
    try { out[name] = await f(); } catch (e) { out[name] = 'error: ' + e.name; }
  }
  await attempt('read_v', async () => (await fetch(V_ORIGIN + '/', { credentials: 'include' })).text());
  await attempt('mint_cors', async () => (await fetch(HOST_ORIGIN + '/api/dev/victim/ide-token', { method: 'POST', credentials: 'include' })).text());
  await attempt('mint_no_cors', async () => (await fetch(HOST_ORIGIN + '/api/dev/victim/ide-token', { method: 'POST', mode: 'no-cors', credentials: 'include' })).type);
  for (const c of [
    'planted=1; path=/; domain=localhost',
    'planted=2; path=/; domain=' + PARENT,
    'sgw_ide_victim=forged; path=/; domain=' + PARENT,
    'session=EVIL; path=/; domain=localhost',
    'own=x; path=/',
  ]) { document.cookie = c; }
  out.cookie = document.cookie;
  const p = document.createElement('pre'); p.id = 'done'; p.textContent = JSON.stringify(out);
  document.body.append(p);
})();
</script>"#;

    /// Sandbox V's page: reports the cookies its server received, and its secret.
    const V_PAGE: &str = r#"<!doctype html><title>v</title><body><h1>v</h1>
<script>
(async () => {
  const seen = await (await fetch('/echo-cookies')).text();
  const p = document.createElement('pre'); p.id = 'done';
  p.textContent = JSON.stringify({ seen, origin: location.origin });
  document.body.append(p);
})();
</script>"#;

    fn cookies_of(headers: &axum::http::HeaderMap) -> String {
        headers
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn sandbox_x() -> SocketAddr {
        let router = Router::new()
            .route("/", get(|| async { Html(X_IDE) }))
            .route("/ws", any(ws_echo))
            .route(
                "/attack",
                get(|headers: axum::http::HeaderMap| async move {
                    // The origins around the page, as the browser sees them: X is
                    // `demo.{parent}:{port}`, V `victim.{parent}:{port}`.
                    let host = headers
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("");
                    let (name, port) = host.rsplit_once(':').unwrap_or((host, ""));
                    let parent = name.strip_prefix("demo.").unwrap_or(name);
                    Html(
                        X_ATTACK
                            .replace("PARENT", &format!("{parent:?}"))
                            .replace(
                                "V_ORIGIN",
                                &format!("{:?}", format!("http://victim.{parent}:{port}")),
                            )
                            .replace(
                                "HOST_ORIGIN",
                                &format!("{:?}", format!("http://localhost:{port}")),
                            ),
                    )
                }),
            );
        serve("127.0.0.1:0", router).await
    }

    async fn sandbox_v() -> SocketAddr {
        let router = Router::new()
            .route("/", get(|| async { Html(V_PAGE) }))
            .route(
                "/echo-cookies",
                get(|headers: axum::http::HeaderMap| async move { cookies_of(&headers) }),
            );
        serve("127.0.0.1:0", router).await
    }

    struct OwnOrigins {
        port: u16,
        /// Links the token route handed out.
        issued: Arc<AtomicUsize>,
        /// The `Sec-Fetch-Site` of every call to the token route.
        sites: Arc<std::sync::Mutex<Vec<String>>>,
    }

    /// The gateway: the host's origin `localhost:{port}` (dashboards, token route) and the
    /// sandboxes' own hosts `{id}.ide.localhost:{port}`. `same_origin_only` is the token route's
    /// cross-origin refusal.
    async fn gateway(x: SocketAddr, v: SocketAddr, same_origin_only: bool) -> OwnOrigins {
        gateway_on(x, v, same_origin_only, "ide.localhost").await
    }

    /// As [`gateway`], the sandboxes on `{id}.{parent}:{port}`.
    async fn gateway_on(
        x: SocketAddr,
        v: SocketAddr,
        same_origin_only: bool,
        parent: &str,
    ) -> OwnOrigins {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hosts = SandboxHosts::new(&format!("{{id}}.{parent}:{port}")).unwrap();
        let cookie = CookieConfig::builder()
            .sandbox_hosts(hosts.clone())
            .build()
            .unwrap();
        let signer = TokenSigner::new(KEY).unwrap();
        let issued = Arc::new(AtomicUsize::new(0));
        let sites = Arc::new(std::sync::Mutex::new(Vec::new()));
        let issue = {
            let (signer, hosts, issued) = (signer.clone(), hosts.clone(), issued.clone());
            let sites = sites.clone();
            move |axum::extract::Path(id): axum::extract::Path<String>, parts: Parts| async move {
                let site = parts
                    .headers
                    .get("sec-fetch-site")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                sites.lock().unwrap().push(site);
                if same_origin_only && !is_same_origin_request(&parts) {
                    return Err((StatusCode::FORBIDDEN, "Cross-origin request refused."));
                }
                // (The host's own session check would follow; it is left out here so that the
                // origin check alone decides, and a missing one shows.)
                let token = signer.issue(&id, Duration::from_secs(60)).unwrap();
                issued.fetch_add(1, Ordering::SeqCst);
                let url = hosts.url(&id, &bootstrap_url(&id, &token)).unwrap();
                Ok(Json(json!({ "url": url })))
            }
        };
        let bootstrap = Bootstrap::builder(signer.clone())
            .cookie(cookie.clone())
            .build::<Body>()
            .unwrap();
        let tunnel = ServiceBuilder::new()
            .layer(TunnelAuthLayer::new(signer).cookie(cookie))
            .layer(RouteLayer::new(TunnelResolver::new(
                move |id: String| async move {
                    match id.as_str() {
                        "demo" => format!("http://{x}").parse::<Upstream>(),
                        "victim" => format!("http://{v}").parse::<Upstream>(),
                        _ => Err(RouteError::Unavailable(format!("no sandbox {id}"))),
                    }
                },
            )))
            .service(ReverseProxy::new());
        let host_side = Router::new()
            .route(
                "/dash/{id}",
                get(
                    |axum::extract::Path(id): axum::extract::Path<String>| async move {
                        (
                            [(header::SET_COOKIE, "session=HOST; Path=/; HttpOnly")],
                            Html(dashboard(&id)),
                        )
                    },
                ),
            )
            .route(
                "/whoami",
                get(|headers: axum::http::HeaderMap| async move { cookies_of(&headers) }),
            )
            .route("/api/dev/{id}/ide-token", post(issue))
            .route_service("/api/dev/{id}/ide", bootstrap.clone());
        let sandbox_side = Router::new()
            .route_service("/api/dev/{id}/ide", bootstrap)
            .fallback_service(tunnel);
        let app = Router::new().fallback_service(hosts.split(sandbox_side, host_side));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        OwnOrigins {
            port,
            issued,
            sites,
        }
    }

    /// Opens sandbox `id`'s IDE from its dashboard in a new tab; returns what the page there
    /// reported. The browser stays on that tab.
    async fn open_from_dashboard(browser: &Client, port: u16, id: &str) -> Result<Value, String> {
        browser
            .goto(&format!("http://localhost:{port}/dash/{id}"))
            .await
            .map_err(|e| e.to_string())?;
        let home = browser.window().await.map_err(|e| e.to_string())?;
        let before = browser.windows().await.map_err(|e| e.to_string())?;
        browser
            .find(Locator::Id("open"))
            .await
            .map_err(|e| e.to_string())?
            .click()
            .await
            .map_err(|e| e.to_string())?;
        let mut tab = None;
        for _ in 0..100 {
            let windows = browser.windows().await.map_err(|e| e.to_string())?;
            if let Some(w) = windows
                .into_iter()
                .find(|w| *w != home && !before.contains(w))
            {
                tab = Some(w);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let tab = tab.ok_or("no new tab opened")?;
        browser
            .switch_to_window(tab)
            .await
            .map_err(|e| e.to_string())?;
        result(browser, STEP).await
    }

    async fn page(browser: &Client, url: &str) -> Result<Value, String> {
        browser.goto(url).await.map_err(|e| e.to_string())?;
        result(browser, STEP).await
    }

    #[tokio::test]
    #[ignore = "needs chromium and chromedriver; run with --include-ignored"]
    async fn ide_on_its_own_origin_and_sandboxes_kept_apart() {
        let _one = BROWSER_LOCK.lock().await;
        let mut driver = Driver::start().await;
        let browser = driver.browser().await;
        let (x, v) = (sandbox_x().await, sandbox_v().await);
        let gw = gateway(x, v, true).await;
        let p = gw.port;

        // The IDE flow on `demo.ide.localhost`: token on the host's origin → new tab → bootstrap
        // on the sandbox's origin → host-only HttpOnly cookie → the IDE page and its WebSocket.
        let seen = open_from_dashboard(&browser, p, "demo").await.unwrap();
        assert_eq!(seen["ws"], "echo:keystroke", "{seen}");
        assert_eq!(seen["origin"], format!("http://demo.ide.localhost:{p}"));
        assert_eq!(seen["path"], "/", "{seen}");
        assert_eq!(
            seen["search"], "",
            "the token is not left in the URL: {seen}"
        );
        assert_eq!(seen["cookie"], "", "the session cookie is HttpOnly: {seen}");
        browser.refresh().await.unwrap();
        assert_eq!(
            result(&browser, STEP).await.unwrap()["ws"],
            "echo:keystroke"
        );

        // The same browser opens V too.
        let seen = open_from_dashboard(&browser, p, "victim").await.unwrap();
        assert_eq!(seen["origin"], format!("http://victim.ide.localhost:{p}"));
        assert_eq!(
            seen["seen"], "",
            "V's server sees no gateway or host cookie: {seen}"
        );
        assert_eq!(gw.issued.load(Ordering::SeqCst), 2);

        // X's page turns on V and the host.
        let attack = page(&browser, &format!("http://demo.ide.localhost:{p}/attack"))
            .await
            .unwrap();
        assert_eq!(
            attack["read_v"], "error: TypeError",
            "V's page is CORS-blocked: {attack}"
        );
        assert_eq!(
            attack["mint_cors"], "error: TypeError",
            "the token route's answer is CORS-blocked: {attack}"
        );
        assert_eq!(attack["mint_no_cors"], "opaque", "{attack}");
        assert_eq!(
            gw.issued.load(Ordering::SeqCst),
            2,
            "the token route minted nothing for X's page"
        );
        // Chromium counts `demo.ide.localhost` → `localhost` as cross-site; in production,
        // `{id}.ide.example.com` → `app.example.com` is same-site: only same-origin passes both.
        assert_eq!(
            *gw.sites.lock().unwrap(),
            ["same-origin", "same-origin", "cross-site", "cross-site"]
        );
        // The host's cookies are out of X's reach (`Domain=localhost` is refused). Siblings share
        // the parent `ide.localhost`, which Chromium lets X name in `Domain=` (no public suffix
        // separates them locally; in production the sandboxes' domain belongs on the Public
        // Suffix List): X can plant ordinary cookies there, and a forged gateway cookie for V.
        assert_eq!(
            attack["cookie"], "planted=2; sgw_ide_victim=forged; own=x",
            "{attack}"
        );

        // V still opens (the forged cookie is no credential, the real one still is), and V's
        // server never sees the gateway's cookies, forged or real, nor the host's.
        let seen = page(&browser, &format!("http://victim.ide.localhost:{p}/"))
            .await
            .unwrap();
        let v_sees = seen["seen"].as_str().unwrap_or("?");
        assert!(
            !v_sees.contains("sgw_ide")
                && !v_sees.contains("session=")
                && !v_sees.contains("planted=1"),
            "{seen}"
        );
        browser
            .goto(&format!("http://localhost:{p}/whoami"))
            .await
            .unwrap();
        let host_sees = page_text(&browser).await;
        assert_eq!(host_sees, "session=HOST", "the host's cookies are its own");

        // Without the token route's same-origin check, X's page mints links with the user's
        // session: the count above would catch it.
        let open = gateway(x, v, false).await;
        open_from_dashboard(&browser, open.port, "demo")
            .await
            .unwrap();
        assert_eq!(open.issued.load(Ordering::SeqCst), 1);
        page(
            &browser,
            &format!("http://demo.ide.localhost:{}/attack", open.port),
        )
        .await
        .unwrap();
        assert!(
            open.issued.load(Ordering::SeqCst) > 1,
            "an unguarded token route served X's page"
        );

        browser.close().await.unwrap();
    }

    /// With the sandboxes one label under `localhost` (`{id}.localhost`), Chromium knows no
    /// common parent they may name in `Domain=`: siblings cannot set cookies for each other
    /// either, as under a domain on the Public Suffix List.
    #[tokio::test]
    #[ignore = "needs chromium and chromedriver; run with --include-ignored"]
    async fn sandboxes_one_label_under_localhost_cannot_set_cookies_for_each_other() {
        let _one = BROWSER_LOCK.lock().await;
        let mut driver = Driver::start().await;
        let browser = driver.browser().await;
        let (x, v) = (sandbox_x().await, sandbox_v().await);
        let gw = gateway_on(x, v, true, "localhost").await;
        let p = gw.port;
        let seen = open_from_dashboard(&browser, p, "demo").await.unwrap();
        assert_eq!(seen["ws"], "echo:keystroke", "{seen}");
        assert_eq!(seen["origin"], format!("http://demo.localhost:{p}"));
        open_from_dashboard(&browser, p, "victim").await.unwrap();
        let attack = page(&browser, &format!("http://demo.localhost:{p}/attack"))
            .await
            .unwrap();
        assert_eq!(attack["read_v"], "error: TypeError", "{attack}");
        assert_eq!(attack["cookie"], "own=x", "{attack}");
        let seen = page(&browser, &format!("http://victim.localhost:{p}/"))
            .await
            .unwrap();
        assert_eq!(seen["seen"], "", "{seen}");
        assert_eq!(gw.issued.load(Ordering::SeqCst), 2);
        browser.close().await.unwrap();
    }

    /// A page on another site auto-submits a form POST to the token route.
    const CROSS_SITE_FORM: &str = r#"<!doctype html><title>elsewhere</title><body>
<form id="f" method="POST" action="TARGET"></form>
<script>document.getElementById('f').submit();</script>"#;

    #[tokio::test]
    #[ignore = "needs chromium and chromedriver; run with --include-ignored"]
    async fn cross_site_post_to_the_token_route_is_refused() {
        let _one = BROWSER_LOCK.lock().await;
        let mut driver = Driver::start().await;
        let browser = driver.browser().await;
        let (x, v) = (sandbox_x().await, sandbox_v().await);
        let gw = gateway(x, v, true).await;
        // Logged in on the host.
        browser
            .goto(&format!("http://localhost:{}/dash/demo", gw.port))
            .await
            .unwrap();
        let target = format!("http://localhost:{}/api/dev/demo/ide-token", gw.port);
        let form = CROSS_SITE_FORM.replace("TARGET", &target);
        let elsewhere = serve(
            "127.0.0.1:0",
            Router::new().route("/", get(move || async move { Html(form) })),
        )
        .await;
        browser
            .goto(&format!("http://127.0.0.1:{}/", elsewhere.port()))
            .await
            .unwrap();
        let mut shown = String::new();
        for _ in 0..100 {
            shown = page_text(&browser).await;
            if !shown.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(shown, "Cross-origin request refused.");
        assert_eq!(gw.issued.load(Ordering::SeqCst), 0);
        browser.close().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The `gateway` example, run as its own process: its `/ide` page opens the IDE on
// `demo.ide.localhost:{port}` by default, and on the shared origin under `/__ide/demo/`.

mod gateway_example {
    use super::*;
    use std::io::{BufRead, BufReader};

    struct Running(Child);

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// `target/debug/examples/gateway`, built by `cargo test` along with the tests (run alone,
    /// build it first: `cargo build --all-features --example gateway`).
    fn start_gateway() -> (Running, String) {
        let exe = std::env::current_exe().expect("test binary path");
        let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
        let bin = dir
            .join("examples")
            .join(format!("gateway{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} not built", bin.display());
        let mut child = Command::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--demo-port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the gateway example");
        let stdout = child.stdout.take().unwrap();
        let running = Running(child);
        // Keep reading its output to the end, so its later lines never meet a closed pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(g) = line.strip_prefix("gateway on ") {
                    let _ = tx.send(g.trim().to_owned());
                }
            }
        });
        let gateway = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the example names its address");
        (running, gateway)
    }

    /// Clicks `button` on the example's `/ide` page; returns the new tab's URL once the demo
    /// page there shows its WebSocket echo.
    async fn open(browser: &Client, gateway: &str, button: &str) -> Result<String, String> {
        browser
            .goto(&format!("{gateway}/ide"))
            .await
            .map_err(|e| e.to_string())?;
        let home = browser.window().await.map_err(|e| e.to_string())?;
        let before = browser.windows().await.map_err(|e| e.to_string())?;
        browser
            .find(Locator::Id(button))
            .await
            .map_err(|e| e.to_string())?
            .click()
            .await
            .map_err(|e| e.to_string())?;
        let mut tab = None;
        for _ in 0..100 {
            let windows = browser.windows().await.map_err(|e| e.to_string())?;
            if let Some(w) = windows
                .into_iter()
                .find(|w| *w != home && !before.contains(w))
            {
                tab = Some(w);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        browser
            .switch_to_window(tab.ok_or("no new tab opened")?)
            .await
            .map_err(|e| e.to_string())?;
        let mut shown = String::new();
        for _ in 0..200 {
            if let Ok(el) = browser.find(Locator::Id("ws")).await {
                shown = el.text().await.unwrap_or_default();
                if shown.starts_with("echo:") {
                    let url = browser.current_url().await.map_err(|e| e.to_string())?;
                    return Ok(format!("{url} {shown}"));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "the IDE page's WebSocket shows {shown:?}; page: {:?}",
            page_text(browser).await
        ))
    }

    #[tokio::test]
    #[ignore = "needs chromium and chromedriver; run with --include-ignored"]
    async fn the_gateway_examples_ide_link_opens_the_sandboxs_own_origin() {
        let _one = BROWSER_LOCK.lock().await;
        let (_running, gateway) = start_gateway();
        let port = gateway.rsplit(':').next().unwrap().to_owned();
        let mut driver = Driver::start().await;
        let browser = driver.browser().await;

        let seen = open(&browser, &gateway, "open").await.unwrap();
        assert_eq!(
            seen,
            format!("http://demo.ide.localhost:{port}/ echo: hello through the gateway")
        );
        let seen = open(&browser, &gateway, "open-shared").await.unwrap();
        assert_eq!(
            seen,
            format!("{gateway}/__ide/demo/ echo: hello through the gateway")
        );
        browser.close().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The `gateway` example's index runs its self-check in the visitor's browser.

/// Opens the example's index and returns what its self-check reported, check by check.
#[cfg(all(feature = "forward", feature = "tls", feature = "serve"))]
async fn self_check(browser: &Client, gateway: &gateway_process::Gateway) -> Value {
    browser.goto(&format!("{}/", gateway.url)).await.unwrap();
    let report = result(browser, STEP).await.unwrap();
    // The page keeps its list of links under the checks.
    let text = page_text(browser).await;
    assert!(
        text.contains(&format!("/proxy/{}/echo-headers", gateway.demo_port)),
        "{text}"
    );
    report
}

#[cfg(all(feature = "forward", feature = "tls", feature = "serve"))]
#[tokio::test]
#[ignore = "needs chromium and chromedriver; run with --include-ignored"]
async fn the_gateway_examples_self_check_passes_and_names_a_stopped_sandbox() {
    let _one = BROWSER_LOCK.lock().await;
    let mut driver = Driver::start().await;

    let gateway = gateway_process::Gateway::start(&["--demo-port", "0"]);
    let browser = driver.browser().await;
    let report = self_check(&browser, &gateway).await;
    for check in ["isolation", "websocket", "sse", "ide", "api"] {
        assert_eq!(
            report[check]["passed"],
            json!(true),
            "{check}: {}",
            report[check]
        );
    }
    let shown = page_text(&browser).await;
    assert_eq!(shown.matches(" passed").count(), 5, "{shown}");
    browser.close().await.unwrap();
    drop(gateway);

    // The demo sandbox stopped: its WebSocket and its event stream fail, and say why.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let stopped = gateway_process::Gateway::start(&["--demo-port", &port.to_string(), "--no-demo"]);
    let browser = driver.browser().await;
    let report = self_check(&browser, &stopped).await;
    assert_eq!(report["isolation"]["passed"], json!(true), "{report}");
    assert_eq!(report["api"]["passed"], json!(true), "{report}");
    for (check, path) in [("websocket", "ws"), ("sse", "events")] {
        assert_eq!(report[check]["passed"], json!(false), "{report}");
        let reason = report[check]["reason"].as_str().unwrap_or_default();
        let answer = format!("GET /proxy/{port}/{path} answers 502: ");
        assert!(reason.contains(&answer), "{check}: {reason}");
        assert!(reason.contains("connection refused"), "{check}: {reason}");
    }
    // Each failure links to its section of the README.
    let links = browser
        .find_all(Locator::Css("#checks li[data-state=failed] a"))
        .await
        .unwrap();
    let mut hrefs = Vec::new();
    for link in links {
        hrefs.push(link.attr("href").await.unwrap().unwrap_or_default());
    }
    assert!(
        hrefs
            .iter()
            .any(|h| h.ends_with("README.md#check-websocket"))
            && hrefs
                .iter()
                .any(|h| h.ends_with("README.md#check-server-sent-events")),
        "{hrefs:?}"
    );
    browser.close().await.unwrap();
}
