//! The IDE tunnel over real sockets: token route → bootstrap (303 + Set-Cookie) → guarded tunnel,
//! with a stand-in for the sandbox that echoes the request headers it received.
#![cfg(feature = "auth")]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message as AxMessage, WebSocket, WebSocketUpgrade};
use axum::extract::Path;
use axum::http::{header, HeaderMap, Request, Response, StatusCode};
use axum::routing::{any, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use sandbox_gateway::auth::{
    bootstrap_url, Bootstrap, Claims, CookieConfig, NonceStore, SecureCookie, TokenSigner,
    TunnelAuthLayer,
};
use sandbox_gateway::proxy::ReverseProxy;
use sandbox_gateway::route::{RouteError, RouteLayer, Upstream};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::ServiceBuilder;

const KEY: &[u8; 32] = b"0123456789abcdef0123456789abcdef";
const HOST_SECRET: &str = "Bearer host-session-secret";
const STEP: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The gateway under test.

/// The stand-in for the sandbox: echoes what it received as JSON; `/__ide/{id}/ws` echoes
/// WebSocket messages.
fn sandbox() -> Router {
    async fn echo(req: Request<Body>) -> Json<Value> {
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in req.headers() {
            headers
                .entry(name.as_str().to_owned())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        let sandbox = req
            .extensions()
            .get::<Claims>()
            .map(|c| c.sandbox_id().to_owned());
        Json(json!({ "path": req.uri().path(), "sandbox": sandbox, "headers": headers }))
    }
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
    Router::new()
        .route("/__ide/{id}/ws", any(ws))
        .fallback(echo)
}

struct Gateway {
    addr: SocketAddr,
    signer: TokenSigner,
    task: JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn gateway(cookie: CookieConfig, store: Option<Arc<dyn NonceStore>>) -> Gateway {
    build_gateway(cookie, store, None).await
}

/// The sandbox on a real socket of its own, reached through `ReverseProxy`.
async fn proxied_gateway() -> Gateway {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, sandbox()).await.unwrap() });
    build_gateway(CookieConfig::default(), None, Some(addr)).await
}

async fn build_gateway(
    cookie: CookieConfig,
    store: Option<Arc<dyn NonceStore>>,
    sandbox_addr: Option<SocketAddr>,
) -> Gateway {
    let signer = TokenSigner::new(KEY).unwrap();

    // The host's own authenticated route issuing the link.
    let issue = {
        let signer = signer.clone();
        move |Path(id): Path<String>, headers: HeaderMap| async move {
            if headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())
                != Some(HOST_SECRET.as_bytes())
            {
                return Err(StatusCode::UNAUTHORIZED);
            }
            let token = signer
                .issue(&id, Duration::from_secs(60))
                .map_err(|_| StatusCode::BAD_REQUEST)?;
            Ok(Json(json!({ "url": bootstrap_url(&id, &token) })))
        }
    };

    let mut bootstrap = Bootstrap::builder(signer.clone()).cookie(cookie.clone());
    if let Some(store) = store {
        bootstrap = bootstrap.shared_nonce_store(store);
    }
    let bootstrap = bootstrap.build::<Body>().unwrap();

    let guard = TunnelAuthLayer::new(signer.clone()).cookie(cookie);
    let tunnel = match sandbox_addr {
        // The sandbox called in-process, behind the guard alone.
        None => Router::new().route_service(
            "/__ide/{*rest}",
            ServiceBuilder::new().layer(guard).service(sandbox()),
        ),
        // The deployment shape: guard → per-request route → ReverseProxy → the sandbox's socket.
        Some(addr) => {
            let upstream: Upstream = format!("http://{addr}").parse().unwrap();
            let route = RouteLayer::new(move |parts: &http::request::Parts| {
                let id = parts
                    .extensions
                    .get::<Claims>()
                    .map(|c| c.sandbox_id().to_owned());
                let path = parts.uri.path_and_query().cloned();
                let upstream = upstream.clone();
                async move {
                    match (id.as_deref(), path) {
                        (Some("demo"), Some(path)) => Ok(upstream.target(path)),
                        (Some(id), _) => Err(RouteError::Unavailable(format!(
                            "sandbox {id} is not running"
                        ))),
                        _ => Err(RouteError::NotFound),
                    }
                }
            });
            Router::new().route_service(
                "/__ide/{*rest}",
                ServiceBuilder::new()
                    .layer(guard)
                    .layer(route)
                    .service(ReverseProxy::new()),
            )
        }
    };

    let app = Router::new()
        .route("/api/dev/{id}/ide-token", post(issue))
        .route_service("/api/dev/{id}/ide", bootstrap)
        .merge(tunnel);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Gateway { addr, signer, task }
}

// ---------------------------------------------------------------------------------------------
// A browser: a hyper client and a tiny cookie jar.

#[derive(Debug, Clone)]
struct SetCookie {
    name: String,
    value: String,
    attrs: Vec<String>,
}

impl SetCookie {
    fn parse(header: &str) -> Self {
        let mut parts = header.split(';').map(str::trim);
        let (name, value) = parts.next().unwrap().split_once('=').unwrap();
        Self {
            name: name.to_owned(),
            value: value.to_owned(),
            attrs: parts.map(str::to_owned).collect(),
        }
    }

    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find_map(|a| {
            let (k, v) = a.split_once('=').unwrap_or((a, ""));
            k.eq_ignore_ascii_case(name).then_some(v)
        })
    }

    fn path(&self) -> &str {
        self.attr("Path").unwrap_or("/")
    }
}

struct Browser {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    jar: Vec<SetCookie>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn location(&self) -> &str {
        self.headers[header::LOCATION].to_str().unwrap()
    }
}

impl Browser {
    fn new(gw: &Gateway) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{}", gw.addr),
            jar: Vec::new(),
        }
    }

    /// The `Cookie` value the jar sends to `path` (path-match as RFC 6265 §5.1.4, prefix form).
    fn cookie_header(&self, path: &str) -> Option<String> {
        let pairs: Vec<String> = self
            .jar
            .iter()
            .filter(|c| path.starts_with(c.path()))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    async fn send(&mut self, method: &str, path: &str, extra: &[(&str, &str)]) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        let path_only = path.split('?').next().unwrap();
        if let Some(c) = self.cookie_header(path_only) {
            req = req.header(header::COOKIE, c);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let res = tokio::time::timeout(
            STEP,
            self.client.request(req.body(Full::default()).unwrap()),
        )
        .await
        .expect("answer in time")
        .expect("request sent");
        let status = res.status();
        let headers = res.headers().clone();
        for sc in headers.get_all(header::SET_COOKIE) {
            let sc = SetCookie::parse(sc.to_str().unwrap());
            self.jar
                .retain(|c| !(c.name == sc.name && c.path() == sc.path()));
            self.jar.push(sc);
        }
        let body = tokio::time::timeout(STEP, res.into_body().collect())
            .await
            .expect("body in time")
            .unwrap()
            .to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Answer {
        self.send("GET", path, &[]).await
    }

    /// Asks the host's token route for a link to sandbox `id`.
    async fn ide_link(&mut self, id: &str) -> String {
        let a = self
            .send(
                "POST",
                &format!("/api/dev/{id}/ide-token"),
                &[("authorization", HOST_SECRET)],
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.json()["url"].as_str().unwrap().to_owned()
    }
}

fn assert_refused(a: &Answer, what: &str) {
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{what}: {}", a.body);
    assert!(
        a.body.contains("Reopen the IDE from the dashboard"),
        "{what}: {}",
        a.body
    );
    assert_eq!(a.headers[header::CACHE_CONTROL], "no-store", "{what}");
    assert!(!a.headers.contains_key(header::SET_COOKIE), "{what}");
}

fn token_of(url: &str) -> &str {
    url.split_once("?token=").unwrap().1
}

// ---------------------------------------------------------------------------------------------
// The whole flow.

#[tokio::test]
async fn token_to_cookie_to_tunnel() {
    let gw = gateway(CookieConfig::default(), None).await;
    let mut browser = Browser::new(&gw);

    // The host route is the host's: no credentials, no link.
    let anon = browser.send("POST", "/api/dev/demo/ide-token", &[]).await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);

    let url = browser.ide_link("demo").await;
    assert!(url.starts_with("/api/dev/demo/ide?token="), "{url}");

    let boot = browser.get(&url).await;
    assert_eq!(boot.status, StatusCode::SEE_OTHER, "{}", boot.body);
    assert_eq!(boot.location(), "/__ide/demo/");
    assert!(!boot.location().contains("token"));
    assert_eq!(boot.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(boot.headers[header::REFERRER_POLICY], "no-referrer");

    // Every attribute of the cookie.
    let set: Vec<_> = boot.headers.get_all(header::SET_COOKIE).iter().collect();
    assert_eq!(set.len(), 1);
    let sc = SetCookie::parse(set[0].to_str().unwrap());
    assert_eq!(sc.name, "sgw_ide_demo", "plain http: no __Secure- prefix");
    assert!(!sc.name.starts_with("__Host-"));
    assert_ne!(sc.value, token_of(&url), "the cookie is a token of its own");
    assert!(gw
        .signer
        .verify(&sc.value, "demo", sandbox_gateway::auth::Audience::Cookie)
        .is_ok());
    assert_eq!(sc.attr("Path"), Some("/__ide/demo/"));
    assert_eq!(sc.attr("Max-Age"), Some("43200"));
    assert_eq!(sc.attr("HttpOnly"), Some(""));
    assert_eq!(sc.attr("SameSite"), Some("Lax"));
    assert_eq!(sc.attr("Secure"), None, "the request came over plain http");
    assert_eq!(sc.attr("Partitioned"), None);
    assert_eq!(sc.attr("Domain"), None);
    assert_eq!(sc.attrs.len(), 4, "{:?}", sc.attrs);

    // Follow the 303 with the jar, plus a cookie of the app's own and the host's Authorization,
    // sent as two Cookie headers.
    let tunnel = browser
        .send(
            "GET",
            "/__ide/demo/index.html?folder=/work",
            &[
                ("cookie", "theme=dark; lang=en"),
                ("authorization", HOST_SECRET),
            ],
        )
        .await;
    assert_eq!(tunnel.status, StatusCode::OK, "{}", tunnel.body);
    let echoed = tunnel.json();
    assert_eq!(echoed["sandbox"], "demo");
    assert_eq!(echoed["path"], "/__ide/demo/index.html");
    let headers = &echoed["headers"];
    assert!(headers.get("authorization").is_none(), "{headers}");
    assert_eq!(
        headers["cookie"],
        json!(["theme=dark; lang=en"]),
        "{headers}"
    );
    assert!(!tunnel.body.contains("sgw_ide"), "{}", tunnel.body);
    assert!(!tunnel.body.contains(&sc.value));

    // A request with only the gateway cookie reaches the sandbox with no Cookie header at all.
    let only = browser.get("/__ide/demo/").await;
    assert_eq!(only.status, StatusCode::OK);
    assert!(
        only.json()["headers"].get("cookie").is_none(),
        "{}",
        only.body
    );

    // The bare mount redirects to its slash form, where the cookie's path matches.
    let bare = browser.get("/__ide/demo").await;
    assert_eq!(bare.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(bare.location(), "/__ide/demo/");
    assert_eq!(browser.get(bare.location()).await.status, StatusCode::OK);
}

#[tokio::test]
async fn websocket_through_the_tunnel() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};

    let gw = gateway(CookieConfig::default(), None).await;
    let mut browser = Browser::new(&gw);
    let url = browser.ide_link("demo").await;
    assert_eq!(browser.get(&url).await.status, StatusCode::SEE_OTHER);
    let cookie = browser.cookie_header("/__ide/demo/ws").unwrap();

    let ws_url = format!("ws://{}/__ide/demo/ws", gw.addr);
    let mut req = ws_url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("cookie", format!("{cookie}; app=1").parse().unwrap());
    let (mut ws, res) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .expect("upgrade admitted");
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("hello")).await.unwrap();
    let reply = tokio::time::timeout(STEP, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "echo:hello");
    ws.close(None).await.unwrap();

    // Without the cookie, the upgrade is refused before reaching the sandbox.
    let req = ws_url.as_str().into_client_request().unwrap();
    match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
    {
        Err(WsError::Http(res)) => assert_eq!(res.status(), StatusCode::FORBIDDEN),
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn whole_flow_through_the_reverse_proxy() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let gw = proxied_gateway().await;
    let mut browser = Browser::new(&gw);
    let url = browser.ide_link("demo").await;
    let boot = browser.get(&url).await;
    assert_eq!(boot.status, StatusCode::SEE_OTHER, "{}", boot.body);
    let cookie = browser.cookie_header("/__ide/demo/").unwrap();
    let (gateway_cookie, _) = cookie.split_once('=').unwrap();

    // HTTP: the sandbox's own echo, over its socket, sees neither the gateway cookie nor the
    // host's Authorization; the app's cookies and the browser's Host arrive.
    let res = browser
        .send(
            "GET",
            "/__ide/demo/echo-headers?x=1",
            &[("cookie", "theme=dark"), ("authorization", HOST_SECRET)],
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let echoed = res.json();
    assert_eq!(echoed["path"], "/__ide/demo/echo-headers");
    assert_eq!(
        echoed["sandbox"],
        Value::Null,
        "claims do not cross the network"
    );
    let headers = &echoed["headers"];
    assert!(headers.get("authorization").is_none(), "{headers}");
    assert_eq!(headers["cookie"], json!(["theme=dark"]), "{headers}");
    assert_eq!(headers["host"], json!([gw.addr.to_string()]));
    assert!(!res.body.contains(gateway_cookie), "{}", res.body);

    // WebSocket: the upgrade passes the guard and is spliced to the sandbox.
    let ws_url = format!("ws://{}/__ide/demo/ws", gw.addr);
    let mut req = ws_url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut ws, res) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .expect("upgrade admitted");
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    for n in 0..3 {
        ws.send(Message::text(format!("m{n}"))).await.unwrap();
        let reply = tokio::time::timeout(STEP, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(reply.into_text().unwrap().as_str(), format!("echo:m{n}"));
    }
    ws.close(None).await.unwrap();

    // Without a cookie neither HTTP nor the upgrade gets through.
    let mut stranger = Browser::new(&gw);
    assert_eq!(
        stranger.get("/__ide/demo/echo-headers").await.status,
        StatusCode::FORBIDDEN
    );
    let req = ws_url.as_str().into_client_request().unwrap();
    match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(refusal)) => {
            assert_eq!(refusal.status(), StatusCode::FORBIDDEN);
        }
        other => panic!("upgrade without a cookie: expected a 403 refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn refusals() {
    let gw = gateway(CookieConfig::default(), None).await;

    // No cookie.
    let mut browser = Browser::new(&gw);
    assert_refused(&browser.get("/__ide/demo/").await, "no cookie");

    // A token in the tunnel URL instead of the cookie.
    let url = browser.ide_link("demo").await;
    let token = token_of(&url).to_owned();
    let in_url = browser.get(&format!("/__ide/demo/?token={token}")).await;
    assert_refused(&in_url, "token in tunnel URL");
    // ...which left the link unspent: it still bootstraps once.
    assert_eq!(browser.get(&url).await.status, StatusCode::SEE_OTHER);
    assert_eq!(browser.get("/__ide/demo/").await.status, StatusCode::OK);

    // Replayed token.
    let mut other_tab = Browser::new(&gw);
    assert_refused(&other_tab.get(&url).await, "replayed token");
    assert!(other_tab.get(&url).await.body.contains("already used"));

    // Tampered cookie: each character replaced in turn is refused.
    let good = browser.jar[0].value.clone();
    for i in 0..good.len() {
        let mut bad = good.clone().into_bytes();
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap();
        let mut b = Browser::new(&gw);
        let a = b
            .send(
                "GET",
                "/__ide/demo/",
                &[("cookie", &format!("sgw_ide_demo={bad}"))],
            )
            .await;
        assert_refused(&a, &format!("tampered cookie at {i}"));
    }

    // A cookie for sandbox demo never opens sandbox other, whatever name it is sent under.
    let mut b = Browser::new(&gw);
    for (name, path) in [
        ("sgw_ide_other", "/__ide/other/"),
        ("sgw_ide_demo", "/__ide/other/"),
    ] {
        let a = b
            .send("GET", path, &[("cookie", &format!("{name}={good}"))])
            .await;
        assert_refused(&a, &format!("cookie of another sandbox as {name}"));
    }
    // And the browser's own jar does not even send it there (Path=/__ide/demo/).
    assert!(browser.cookie_header("/__ide/other/").is_none());
    assert_refused(&browser.get("/__ide/other/").await, "other sandbox");

    // A bootstrap token used as the cookie value (wrong audience).
    let url2 = b.ide_link("demo").await;
    let a = b
        .send(
            "GET",
            "/__ide/demo/",
            &[("cookie", &format!("sgw_ide_demo={}", token_of(&url2)))],
        )
        .await;
    assert_refused(&a, "bootstrap token as cookie");

    // A token for another id.
    let other_url = b.ide_link("other").await;
    let a = b
        .get(&format!("/api/dev/demo/ide?token={}", token_of(&other_url)))
        .await;
    assert_refused(&a, "token for another id");
    assert_eq!(a.headers[header::REFERRER_POLICY], "no-referrer");
    // ...was not spent by that attempt.
    assert_eq!(b.get(&other_url).await.status, StatusCode::SEE_OTHER);

    // Expired token.
    let short = gw.signer.issue("demo", Duration::from_millis(1)).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let a = b.get(&bootstrap_url("demo", &short)).await;
    assert_refused(&a, "expired token");
    assert!(a.body.contains("expired"), "{}", a.body);

    // Garbage, missing token, bad methods and bad ids.
    assert_refused(&b.get("/api/dev/demo/ide?token=%00%ff").await, "garbage");
    assert_refused(&b.get("/api/dev/demo/ide").await, "missing token");
    let post = b.send("POST", &url2, &[]).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        b.get(&url2).await.status,
        StatusCode::SEE_OTHER,
        "POST did not spend it"
    );
    assert_eq!(b.get("/__ide/a.b/").await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn secure_cookie_behind_a_trusted_https_proxy() {
    let cookie = CookieConfig::builder()
        .trust_forwarded_proto(true)
        .max_age(Duration::from_secs(3600))
        .build()
        .unwrap();
    let gw = gateway(cookie, None).await;
    let mut browser = Browser::new(&gw);
    let url = browser.ide_link("demo").await;
    let boot = browser
        .send("GET", &url, &[("x-forwarded-proto", "https")])
        .await;
    assert_eq!(boot.status, StatusCode::SEE_OTHER);
    let sc = SetCookie::parse(boot.headers[header::SET_COOKIE].to_str().unwrap());
    assert_eq!(sc.name, "__Secure-sgw_ide_demo");
    assert_eq!(sc.attr("Secure"), Some(""));
    assert_eq!(sc.attr("SameSite"), Some("Lax"));
    assert_eq!(sc.attr("Max-Age"), Some("3600"));
    assert_eq!(sc.attr("Path"), Some("/__ide/demo/"));

    // Every request through that proxy says HTTPS; the `__Secure-` cookie is the credential.
    let a = browser
        .send("GET", "/__ide/demo/x", &[("x-forwarded-proto", "https")])
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.json()["headers"].get("cookie").is_none());
}

#[tokio::test]
async fn third_party_embed_cookie() {
    let cookie = CookieConfig::builder()
        .third_party_embed(true)
        .tunnel_prefix("/embed/ide")
        .name("ide")
        .build()
        .unwrap();
    let gw = gateway(cookie, None).await;
    let mut browser = Browser::new(&gw);
    let url = browser.ide_link("demo").await;
    let boot = browser.get(&url).await;
    assert_eq!(boot.status, StatusCode::SEE_OTHER);
    assert_eq!(boot.location(), "/embed/ide/demo/");
    let sc = SetCookie::parse(boot.headers[header::SET_COOKIE].to_str().unwrap());
    assert_eq!(sc.name, "__Secure-ide_demo");
    assert_eq!(sc.attr("SameSite"), Some("None"));
    assert_eq!(sc.attr("Secure"), Some(""));
    assert_eq!(sc.attr("Partitioned"), Some(""));
    assert_eq!(sc.attr("Path"), Some("/embed/ide/demo/"));
}

#[tokio::test]
async fn secure_always_is_configurable() {
    let cookie = CookieConfig::builder()
        .secure(SecureCookie::Always)
        .build()
        .unwrap();
    let gw = gateway(cookie, None).await;
    let mut browser = Browser::new(&gw);
    let url = browser.ide_link("demo").await;
    let boot = browser.get(&url).await;
    let sc = SetCookie::parse(boot.headers[header::SET_COOKIE].to_str().unwrap());
    assert_eq!(sc.name, "__Secure-sgw_ide_demo");
    assert_eq!(sc.attr("Secure"), Some(""));
}

/// A handler that is not a router: the guard works around any service, and answers refusals
/// with that service's body type.
#[tokio::test]
async fn guard_around_a_plain_service() {
    let signer = TokenSigner::new(KEY).unwrap();
    let svc = ServiceBuilder::new()
        .layer(TunnelAuthLayer::new(signer.clone()))
        .service_fn(|_req: Request<hyper::body::Incoming>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"inside"))))
        });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let cookie = signer
        .sign("x", sandbox_gateway::auth::Audience::Cookie, STEP)
        .unwrap();
    let ok = client
        .request(
            Request::get(format!("http://{addr}/__ide/x/"))
                .header("cookie", format!("sgw_ide_x={cookie}"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let refused = client
        .request(
            Request::get(format!("http://{addr}/__ide/y/"))
                .header("cookie", format!("sgw_ide_y={cookie}"))
                .header("connection", "close")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    server.abort();
}

// ---------------------------------------------------------------------------------------------
// Redis: single use across gateway replicas.

#[cfg(feature = "redis")]
#[path = "support/redis.rs"]
mod redis_server;

#[cfg(feature = "redis")]
mod redis_shared {
    use super::redis_server::RedisServer;
    use super::*;
    use sandbox_gateway::auth::RedisNonceStore;
    use std::time::SystemTime;

    #[tokio::test]
    async fn redis_store_semantics() {
        let server = RedisServer::start().await;
        let store = RedisNonceStore::connect(&server.url).await.unwrap();
        let exp = SystemTime::now() + Duration::from_secs(60);
        assert!(store.record(b"n1", exp).await.unwrap());
        assert!(!store.record(b"n1", exp).await.unwrap());
        assert!(store.record(b"n2", exp).await.unwrap());

        // Expiry: Redis forgets the nonce when the token expires.
        // One second: the duplicate below takes a loopback round trip (milliseconds), and
        // Redis expires keys to the millisecond, well inside the half second after.
        let soon = SystemTime::now() + Duration::from_secs(1);
        assert!(store.record(b"short", soon).await.unwrap());
        assert!(!store.record(b"short", soon).await.unwrap());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(store
            .record(b"short", SystemTime::now() + Duration::from_secs(1))
            .await
            .unwrap());

        // Atomic: of concurrent records from two connections, exactly one is fresh.
        let other = Arc::new(RedisNonceStore::connect(&server.url).await.unwrap());
        let store = Arc::new(store);
        let mut tasks = Vec::new();
        for i in 0..16 {
            let s: Arc<RedisNonceStore> = if i % 2 == 0 {
                store.clone()
            } else {
                other.clone()
            };
            tasks.push(tokio::spawn(async move {
                s.record(b"race", exp).await.unwrap()
            }));
        }
        let mut fresh = 0;
        for t in tasks {
            fresh += usize::from(t.await.unwrap());
        }
        assert_eq!(fresh, 1);

        // Prefixes keep deployments apart.
        let prefixed = RedisNonceStore::connect(&server.url)
            .await
            .unwrap()
            .key_prefix("other-deployment:");
        assert!(prefixed.record(b"n1", exp).await.unwrap());
    }

    #[tokio::test]
    async fn store_down_means_refusal_not_admission() {
        let server = RedisServer::start().await;
        let store: Arc<dyn NonceStore> =
            Arc::new(RedisNonceStore::connect(&server.url).await.unwrap());
        let gw = gateway(CookieConfig::default(), Some(store)).await;
        let mut browser = Browser::new(&gw);
        let url = browser.ide_link("demo").await;
        drop(server);
        let a = browser.get(&url).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
        assert!(!a.headers.contains_key(header::SET_COOKIE));
    }

    #[tokio::test]
    async fn replay_across_two_gateways_sharing_redis() {
        let server = RedisServer::start().await;
        let one: Arc<dyn NonceStore> =
            Arc::new(RedisNonceStore::connect(&server.url).await.unwrap());
        let two: Arc<dyn NonceStore> =
            Arc::new(RedisNonceStore::connect(&server.url).await.unwrap());
        let gw1 = gateway(CookieConfig::default(), Some(one)).await;
        let gw2 = gateway(CookieConfig::default(), Some(two)).await;

        let mut b1 = Browser::new(&gw1);
        let mut b2 = Browser::new(&gw2);
        let url = b1.ide_link("demo").await;
        let first = b1.get(&url).await;
        assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
        assert_eq!(b1.get("/__ide/demo/").await.status, StatusCode::OK);

        // Same token on the other replica: spent.
        let replay = b2.get(&url).await;
        assert_refused(&replay, "replay on the second gateway");
        assert!(replay.body.contains("already used"));

        // A token issued by one replica is good on the other (shared key), once.
        let url2 = b2.ide_link("demo").await;
        assert_eq!(b2.get(&url2).await.status, StatusCode::SEE_OTHER);
        assert_refused(&b1.get(&url2).await, "replay on the first gateway");
        // And the cookie set by one replica opens the tunnel on the other.
        let cookie = b2.cookie_header("/__ide/demo/").unwrap();
        let a = b1.send("GET", "/__ide/demo/", &[("cookie", &cookie)]).await;
        assert_eq!(a.status, StatusCode::OK);
    }
}
