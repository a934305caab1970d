//! `examples/ide.rs` keeps its promise: token route → link → cookie → tunnel for HTTP and
//! WebSocket, Host preserved, Origin only when the browser sent one, no gateway credential inside;
//! on the shared origin with the mount stripped (as code-server needs) and on each sandbox's own
//! host with a host-only cookie; the token route refuses cross-origin requests.
#![cfg(feature = "auth")]

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::{header, Request, StatusCode};
use sandbox_gateway::auth::{MemoryNonceStore, SandboxHosts, TokenSigner};
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
    start_with_hosts(sandboxes, None).await
}

/// The example's app; its sandboxes' own hosts are `{id}.ide.localhost:{port}` (as its `main`
/// sets), or `pattern`.
async fn start_with_hosts(
    sandboxes: HashMap<String, sandbox_gateway::route::Upstream>,
    pattern: Option<&str>,
) -> std::net::SocketAddr {
    let signer = TokenSigner::new([7u8; 32]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pattern = pattern
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{{id}}.ide.localhost:{}", addr.port()));
    let app = ide::app(
        signer,
        sandboxes,
        Arc::new(MemoryNonceStore::new(64)),
        SECRET.to_owned(),
        SandboxHosts::new(&pattern).unwrap(),
    )
    .unwrap();
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
        let url = json["shared_origin_url"].as_str().unwrap().to_owned();
        // The default link is on the sandbox's own host, with the same token.
        assert_eq!(
            json["url"].as_str().unwrap(),
            format!("http://{id}.ide.localhost:{}{url}", gw.port())
        );
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

    // HTTP through the tunnel: mount stripped, Host preserved, no Origin invented, no credentials.
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
    assert_eq!(seen["path"], "/x?folder=/w");
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

/// Sends `req` to the gateway at `gw` (whatever its Host says: the OS need not resolve
/// `*.localhost`, browsers do it themselves).
fn to(gw: std::net::SocketAddr, method: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("http://{gw}{path}"))
}

fn set_cookie_of(res: &http::Response<hyper::body::Incoming>) -> String {
    res.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn ide_example_on_the_sandboxs_own_host() {
    let echo = echo_upstream("127.0.0.1:0").await;
    let ws = ws_sandbox().await;
    let mut sandboxes = HashMap::new();
    sandboxes.insert("demo".to_owned(), format!("http://{echo}").parse().unwrap());
    sandboxes.insert(
        "live".to_owned(),
        format!("http://localhost:{}", ws.port()).parse().unwrap(),
    );
    let gw = start(sandboxes).await;
    let own = format!("demo.ide.localhost:{}", gw.port());

    // The token route, as a same-origin page calls it.
    let res = within(
        10,
        client().request(
            to(gw, "POST", "/api/dev/demo/ide-token")
                .header(header::AUTHORIZATION, format!("Bearer {SECRET}"))
                .header("sec-fetch-site", "same-origin")
                .header(header::ORIGIN, format!("http://{gw}"))
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    let url = json["url"].as_str().unwrap();
    let path = url
        .strip_prefix(&format!("http://{own}"))
        .unwrap_or_else(|| panic!("{url}"))
        .to_owned();
    assert!(path.starts_with("/api/dev/demo/ide?token="), "{path}");

    // The bootstrap on the sandbox's host: host-only cookie for the whole origin, 303 to `/`.
    let res = within(
        10,
        client().request(
            to(gw, "GET", &path)
                .header(header::HOST, &own)
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[header::LOCATION], "/");
    let set = set_cookie_of(&res);
    assert!(set.starts_with("sgw_ide_demo="), "{set}");
    assert!(set.contains("; Path=/;"), "{set}");
    assert!(!set.contains("Domain"), "{set}");
    assert!(
        !set.contains("Secure"),
        "plain HTTP on a loopback host: {set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();

    // Every path on the sandbox's host reaches the sandbox unchanged, Host preserved.
    let res = within(
        10,
        client().request(
            to(gw, "GET", "/__ide/x/static/app.js?v=1")
                .header(header::HOST, &own)
                .header(header::COOKIE, format!("{cookie}; app=1"))
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(seen["path"], "/__ide/x/static/app.js?v=1");
    assert_eq!(seen["headers"]["host"][0], own.as_str());
    assert_eq!(seen["headers"]["cookie"][0], "app=1");

    // The token route is not served on a sandbox's host: there it is the sandbox's own path,
    // behind the tunnel guard.
    let res = within(
        10,
        client().request(
            to(gw, "POST", "/api/dev/demo/ide-token")
                .header(header::HOST, &own)
                .header(header::AUTHORIZATION, format!("Bearer {SECRET}"))
                .header("sec-fetch-site", "same-origin")
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        text(res).await,
        "No IDE session for this sandbox. Reopen the IDE from the dashboard.\n"
    );

    // demo's cookie opens neither live's host nor live's mount.
    let live_host = format!("live.ide.localhost:{}", gw.port());
    let res = within(
        10,
        client().request(
            to(gw, "GET", "/")
                .header(header::HOST, &live_host)
                .header(header::COOKIE, cookie.replace("demo", "live").as_str())
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // A link for live opened on demo's host is not served there.
    let res = within(
        10,
        client().request(
            to(gw, "GET", "/api/dev/live/ide?token=x")
                .header(header::HOST, &own)
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ide_example_issues_host_cookies_on_https_hosts() {
    let echo = echo_upstream("127.0.0.1:0").await;
    let mut sandboxes = HashMap::new();
    sandboxes.insert("demo".to_owned(), format!("http://{echo}").parse().unwrap());
    let gw = start_with_hosts(sandboxes, Some("{id}.ide.example-sandbox.net")).await;
    let own = "demo.ide.example-sandbox.net";

    // The link names the sandbox's HTTPS origin.
    let res = within(
        10,
        client().request(
            to(gw, "POST", "/api/dev/demo/ide-token")
                .header(header::HOST, "app.example.com")
                .header(header::AUTHORIZATION, format!("Bearer {SECRET}"))
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    let url = json["url"].as_str().unwrap();
    let path = url
        .strip_prefix("https://demo.ide.example-sandbox.net")
        .unwrap_or_else(|| panic!("{url}"))
        .to_owned();

    // Behind a TLS terminator that sends no X-Forwarded-Proto: still `Secure`, as `__Host-`.
    let res = within(
        10,
        client().request(
            to(gw, "GET", &path)
                .header(header::HOST, own)
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let set = set_cookie_of(&res);
    assert!(set.starts_with("__Host-sgw_ide_demo="), "{set}");
    assert!(set.contains("; Path=/;"), "{set}");
    assert!(set.contains("; Secure"), "{set}");
    assert!(!set.contains("Domain"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let value = cookie.split_once('=').unwrap().1.to_owned();

    let tunnel = |cookie: String| {
        within(
            10,
            client().request(
                to(gw, "GET", "/")
                    .header(header::HOST, own)
                    .header(header::COOKIE, cookie)
                    .body(empty())
                    .unwrap(),
            ),
        )
    };
    assert_eq!(
        tunnel(cookie.clone()).await.unwrap().status(),
        StatusCode::OK
    );
    // The same value under the bare name (which a sibling host could set with `Domain=`) or the
    // shared origin's `__Secure-` name is no credential here.
    for name in ["sgw_ide_demo", "__Secure-sgw_ide_demo"] {
        let res = tunnel(format!("{name}={value}")).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{name}");
    }

    // The shared origin of the same HTTPS deployment: `__Secure-`, scoped to the mount.
    let res = within(
        10,
        client().request(
            to(gw, "POST", "/api/dev/demo/ide-token")
                .header(header::HOST, "app.example.com")
                .header(header::AUTHORIZATION, format!("Bearer {SECRET}"))
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    let shared = json["shared_origin_url"].as_str().unwrap().to_owned();
    let res = within(
        10,
        client().request(
            to(gw, "GET", &shared)
                .header(header::HOST, "app.example.com")
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[header::LOCATION], "/__ide/demo/");
    let set = set_cookie_of(&res);
    assert!(set.starts_with("__Secure-sgw_ide_demo="), "{set}");
    assert!(set.contains("; Path=/__ide/demo/;"), "{set}");
    assert!(set.contains("; Secure"), "{set}");
    let value = set.split(';').next().unwrap().split_once('=').unwrap().1;
    let res = within(
        10,
        client().request(
            to(gw, "GET", "/__ide/demo/")
                .header(header::HOST, "app.example.com")
                .header(header::COOKIE, format!("sgw_ide_demo={value}"))
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "bare name on HTTPS");
}

#[tokio::test]
async fn ide_example_token_route_refuses_other_origins() {
    let echo = echo_upstream("127.0.0.1:0").await;
    let mut sandboxes = HashMap::new();
    sandboxes.insert("demo".to_owned(), format!("http://{echo}").parse().unwrap());
    let gw = start(sandboxes).await;
    let post = |headers: &[(&str, String)]| {
        let mut req = to(gw, "POST", "/api/dev/demo/ide-token")
            .header(header::AUTHORIZATION, format!("Bearer {SECRET}"));
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        within(10, client().request(req.body(empty()).unwrap()))
    };
    let sandbox_page = format!("http://demo.ide.localhost:{}", gw.port());
    for (what, headers) in [
        (
            "a sandbox's page (same-site, not same-origin)",
            vec![
                ("sec-fetch-site", "same-site".to_owned()),
                ("origin", sandbox_page.clone()),
            ],
        ),
        (
            "another site",
            vec![
                ("sec-fetch-site", "cross-site".to_owned()),
                ("origin", "https://evil.example".to_owned()),
            ],
        ),
        (
            "an older browser on a sandbox's page",
            vec![("origin", sandbox_page.clone())],
        ),
    ] {
        let res = post(&headers).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{what}");
        assert_eq!(text(res).await, "Cross-origin request refused.", "{what}");
    }
    // The host's own page, and curl (no browser page at all), get a link.
    let same = post(&[
        ("sec-fetch-site", "same-origin".to_owned()),
        ("origin", format!("http://{gw}")),
    ])
    .await
    .unwrap();
    assert_eq!(same.status(), StatusCode::OK);
    assert_eq!(post(&[]).await.unwrap().status(), StatusCode::OK);
}
