//! code-server 4 and Vite 7, as they ship, behind the examples, in headless Chromium.
//!
//! The upstreams are the real programs from the npm registry, installed by `./scripts/upstreams`
//! into `.upstreams/` (or `$SANDBOX_GATEWAY_UPSTREAMS`); `./scripts/test` (and so CI) runs it
//! first. A missing install fails these tests with that instruction: they never pass by skipping.
//! The examples run as their own processes, built by `cargo test` along with the tests (run this
//! file alone after `cargo build --all-features --examples`).
//!
//! Like the other browser suites these tests are `#[ignore]`d for a plain `cargo test`; run them
//! with `cargo test --all-features --test real_upstreams -- --include-ignored`. `UPSTREAM_LOG=1`
//! prints what the programs say.
#![cfg(all(feature = "auth", feature = "forward", feature = "tls"))]

mod support;

#[path = "support/chromium.rs"]
mod chromium;
#[path = "support/process.rs"]
mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::Router;
use chromium::{Driver, TempDir};
use fantoccini::key::Key;
use fantoccini::wd::WindowHandle;
use fantoccini::{Client, Locator};
use http::{header, Request, StatusCode};
use process::{example_binary, Process};
use sandbox_gateway::proxy::ReverseProxy;
use sandbox_gateway::rewrite::RewriteLayer;
use sandbox_gateway::route::{PathMount, RouteLayer};
use serde_json::{json, Value};
use support::{client, empty, text, within};
use tokio::sync::Mutex;
use tower::ServiceBuilder;

/// One Chromium at a time: two cores do not run several browsers (and IDEs) well.
static BROWSER_LOCK: Mutex<()> = Mutex::const_new(());

/// How long a program gets to say it is listening.
const START: Duration = Duration::from_secs(60);
/// How long the workbench gets to load and list the workspace (a first load on two cores).
const WORKBENCH: Duration = Duration::from_secs(90);
/// How long a connected workbench is watched for a reconnect dialog.
const SETTLE: Duration = Duration::from_secs(10);
/// How long one UI step (a palette, a terminal's output, a save) gets.
const STEP: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The real upstreams.

/// Where `./scripts/upstreams` installed them.
fn upstreams_dir() -> PathBuf {
    std::env::var_os("SANDBOX_GATEWAY_UPSTREAMS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".upstreams"))
}

/// `entry` of the installed upstream `what`; panics with the install command when it is missing.
fn installed(what: &str, entry: &str) -> PathBuf {
    let root = upstreams_dir().join(what);
    let path = root.join(entry);
    assert!(
        root.join(".installed").is_file() && path.is_file(),
        "{what} is not installed in {}: run ./scripts/upstreams (./scripts/test does)",
        root.display()
    );
    path
}

/// A port free on both loopbacks, for programs that must be told theirs before they start (Vite
/// binds `localhost`, which Node may resolve to either).
fn free_port() -> u16 {
    for _ in 0..50 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("::1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both 127.0.0.1 and [::1] in 50 tries");
}

/// code-server with `--auth none` on a free port of 127.0.0.1, a workspace of two files.
struct CodeServer {
    port: u16,
    work: PathBuf,
    _process: Process,
    _dir: TempDir,
}

/// A file the explorer lists once the workbench reached the server over its WebSocket.
const LISTED_FILE: &str = "listed-through-the-gateway.txt";
/// The file the editor test changes.
const EDITED_FILE: &str = "notes.txt";

impl CodeServer {
    fn start() -> CodeServer {
        let entry = installed("code-server", "node_modules/code-server/out/node/entry.js");
        let dir = TempDir::new("code-server");
        let data = dir.path.join("data");
        let work = dir.path.join("work");
        std::fs::create_dir_all(data.join("User")).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        std::fs::write(work.join(LISTED_FILE), "hello\n").unwrap();
        std::fs::write(work.join(EDITED_FILE), "").unwrap();
        // Terminal text in the DOM (not a canvas) so it can be read; nothing that opens on its own.
        let settings = json!({
            "terminal.integrated.gpuAcceleration": "off",
            "terminal.integrated.defaultProfile.linux": "bash",
            "workbench.startupEditor": "none",
            "workbench.tips.enabled": false,
            "security.workspace.trust.enabled": false,
            "extensions.ignoreRecommendations": true,
            "telemetry.telemetryLevel": "off",
            "update.mode": "none",
            "files.autoSave": "off",
        });
        std::fs::write(
            data.join("User").join("settings.json"),
            settings.to_string(),
        )
        .unwrap();
        let s = |p: &Path| p.display().to_string();
        let mut process = Process::start(
            "node",
            &[
                &s(&entry),
                "--auth",
                "none",
                "--bind-addr",
                "127.0.0.1:0",
                "--user-data-dir",
                &s(&data),
                "--extensions-dir",
                &s(&dir.path.join("extensions")),
                "--config",
                &s(&dir.path.join("config.yaml")),
                "--disable-telemetry",
                "--disable-update-check",
                "--disable-workspace-trust",
                &s(&work),
            ],
            &[("SHELL", "/bin/bash")],
            Some(&dir.path),
        );
        let port = process.wait_for(START, |line| {
            let rest = line
                .split("HTTP server listening on http://127.0.0.1:")
                .nth(1)?;
            rest.trim_end_matches('/').parse::<u16>().ok()
        });
        CodeServer {
            port,
            work,
            _process: process,
            _dir: dir,
        }
    }
}

/// A Vite dev server on `localhost:{port}` for a one-module app, with `base` when given.
struct Vite {
    port: u16,
    main_js: PathBuf,
    _process: Process,
    _dir: TempDir,
}

/// The app: a heading its module writes, and a record of the page's WebSockets (opened before
/// Vite's client runs), so the test sees where the HMR client connected.
const VITE_INDEX: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>vite app</title>
<script>
  window.__sockets = [];
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      const entry = { url: String(url), open: false };
      window.__sockets.push(entry);
      this.addEventListener("open", () => { entry.open = true; });
      this.addEventListener("close", () => { entry.open = false; });
    }
  };
</script>
</head><body><h1 id="app">not run</h1><script type="module" src="/src/main.js"></script></body></html>
"#;

fn vite_main_js(version: u32) -> String {
    format!(
        "document.getElementById('app').textContent = 'version {version}';\n\
         if (import.meta.hot) import.meta.hot.accept();\n"
    )
}

impl Vite {
    fn start(base: Option<&str>, port: u16) -> Vite {
        let bin = installed("vite", "node_modules/vite/bin/vite.js");
        let dir = TempDir::new("vite");
        std::fs::create_dir_all(dir.path.join("src")).unwrap();
        std::fs::write(dir.path.join("index.html"), VITE_INDEX).unwrap();
        let main_js = dir.path.join("src").join("main.js");
        std::fs::write(&main_js, vite_main_js(1)).unwrap();
        let port_s = port.to_string();
        let mut args = vec![
            bin.to_str().unwrap(),
            "--port",
            &port_s,
            "--strictPort",
            "--clearScreen",
            "false",
        ];
        if let Some(b) = base {
            args.extend(["--base", b]);
        }
        let mut process = Process::start("node", &args, &[("NO_COLOR", "1")], Some(&dir.path));
        process.wait_for(START, |line| line.contains("ready in").then_some(()));
        Vite {
            port,
            main_js,
            _process: process,
            _dir: dir,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The examples, as their own processes.

/// `cargo run --example gateway -- --listen 127.0.0.1:0 --demo-port 0 ARGS...`
fn gateway_example(args: &[&str]) -> (Process, SocketAddr) {
    let mut all = vec!["--listen", "127.0.0.1:0", "--demo-port", "0"];
    all.extend_from_slice(args);
    let mut process = Process::start(example_binary("gateway"), &all, &[], None);
    let addr = process.wait_for(START, |line| {
        line.strip_prefix("gateway on http://")?.trim().parse().ok()
    });
    (process, addr)
}

/// `--allow-port P` for each port.
fn allow_ports(ports: &[u16]) -> Vec<String> {
    ports
        .iter()
        .flat_map(|p| ["--allow-port".to_owned(), p.to_string()])
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Driving the workbench.

/// Runs `script` (a function body returning a value) in the page.
async fn eval(browser: &Client, script: &str) -> Result<Value, String> {
    browser
        .execute(script, vec![])
        .await
        .map_err(|e| format!("script failed: {e}"))
}

/// Polls `script` every 250 ms until it returns `true`, for at most `within`.
async fn until(browser: &Client, within: Duration, what: &str, script: &str) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if eval(browser, script).await? == json!(true) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{what}: not within {within:?}; the page shows: {}",
                page_text(browser).await
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The text the page shows, shortened.
async fn page_text(browser: &Client) -> String {
    let text = eval(
        browser,
        "return document.body ? document.body.innerText : ''",
    )
    .await
    .ok()
    .and_then(|v| v.as_str().map(str::to_owned))
    .unwrap_or_default();
    text.chars().take(1500).collect()
}

/// What VS Code shows when its connection to the server fails or drops.
const CONNECTION_TROUBLE: &[&str] = &[
    "failed to connect",
    "attempting to reconnect",
    "cannot reconnect",
    "connection lost",
    "reconnecting",
    "websocket close",
];

/// Fails when the page shows a connection failure or a reconnect dialog.
async fn no_connection_trouble(browser: &Client) -> Result<(), String> {
    let text = eval(browser, "return document.body.innerText.toLowerCase()")
        .await?
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match CONNECTION_TROUBLE.iter().find(|m| text.contains(*m)) {
        Some(m) => Err(format!(
            "the workbench shows {m:?}: {}",
            text.chars().take(1500).collect::<String>()
        )),
        None => Ok(()),
    }
}

/// The workbench loaded, listed the workspace over its server connection (so the WebSocket
/// works), and shows no connection trouble `SETTLE` later. Connection trouble fails it at once.
async fn workbench_connected(browser: &Client) -> Result<(), String> {
    let listed = format!(
        "return !!document.querySelector('.monaco-workbench') && \
         document.body.innerText.includes('{LISTED_FILE}')"
    );
    let deadline = Instant::now() + WORKBENCH;
    loop {
        no_connection_trouble(browser).await?;
        if eval(browser, &listed).await? == json!(true) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the workbench did not list the workspace within {WORKBENCH:?}; it shows: {}",
                page_text(browser).await
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(SETTLE).await;
    no_connection_trouble(browser).await
}

/// Sends keys to whatever has the focus.
async fn keys(browser: &Client, keys: &str) -> Result<(), String> {
    browser
        .active_element()
        .await
        .map_err(|e| e.to_string())?
        .send_keys(keys)
        .await
        .map_err(|e| e.to_string())
}

/// Opens the command palette (F1) with `text` typed in it, once its list shows `row`.
async fn palette(browser: &Client, text: &str, row: &str) -> Result<(), String> {
    keys(browser, &Key::F1.to_string()).await?;
    until(
        browser,
        STEP,
        "the command palette opens",
        "const i = document.querySelector('.quick-input-widget input'); \
         return !!i && document.activeElement === i",
    )
    .await?;
    keys(browser, text).await?;
    until(
        browser,
        STEP,
        &format!("the palette lists {row:?}"),
        &format!(
            "return [...document.querySelectorAll('.quick-input-list .monaco-list-row')]\
             .some(r => r.innerText.includes({}))",
            json!(row)
        ),
    )
    .await
}

/// A terminal opened from the palette runs `echo` and shows its output.
async fn terminal_runs_echo(browser: &Client) -> Result<(), String> {
    palette(
        browser,
        "Terminal: Create New Terminal",
        "Terminal: Create New Terminal",
    )
    .await?;
    keys(browser, &Key::Enter.to_string()).await?;
    until(
        browser,
        STEP,
        "a terminal has the focus",
        "const a = document.activeElement; \
         return !!a && !!a.closest('.xterm') && !!document.querySelector('.xterm-rows')",
    )
    .await?;
    // The shell computes the output: the typed line itself does not contain it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    keys(
        browser,
        &format!("echo through-$((6*7))-gateway{}", Key::Enter),
    )
    .await?;
    until(
        browser,
        STEP,
        "the terminal shows the echo's output",
        "return [...document.querySelectorAll('.xterm-rows')]\
         .some(r => r.innerText.includes('through-42-gateway'))",
    )
    .await
}

/// A file opened from quick open, typed into and saved with Ctrl+S, is on disk.
async fn editor_saves_to_disk(browser: &Client, work: &Path) -> Result<(), String> {
    // F1 opens the palette in command mode (`>`); without it, it is quick open.
    palette(
        browser,
        &format!("{}{EDITED_FILE}", Key::Backspace),
        EDITED_FILE,
    )
    .await?;
    keys(browser, &Key::Enter.to_string()).await?;
    until(
        browser,
        STEP,
        "the editor has the focus",
        "const a = document.activeElement; return !!a && !!a.closest('.monaco-editor') \
         && !a.closest('.quick-input-widget')",
    )
    .await?;
    let line = "saved through the gateway";
    keys(browser, line).await?;
    keys(browser, &format!("{}s", Key::Control)).await?;
    let path = work.join(EDITED_FILE);
    let deadline = Instant::now() + STEP;
    loop {
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk.contains(line) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} holds {on_disk:?} {STEP:?} after Ctrl+S; the page shows: {}",
                path.display(),
                page_text(browser).await
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Switches to a tab that is not among `known`, once one opened.
async fn switch_to_new_tab(browser: &Client, known: &[WindowHandle]) -> Result<(), String> {
    for _ in 0..100 {
        let windows = browser.windows().await.map_err(|e| e.to_string())?;
        if let Some(tab) = windows.into_iter().find(|w| !known.contains(w)) {
            return browser
                .switch_to_window(tab)
                .await
                .map_err(|e| e.to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("no new tab opened".to_owned())
}

/// The page's origin and path.
async fn location(browser: &Client) -> (String, String) {
    let v = eval(browser, "return [location.origin, location.pathname]")
        .await
        .unwrap();
    (
        v[0].as_str().unwrap_or_default().to_owned(),
        v[1].as_str().unwrap_or_default().to_owned(),
    )
}

/// Everything the IDE flow promises once the workbench tab is open: connected, a terminal that
/// runs commands, an editor that saves.
async fn ide_works(browser: &Client, code: &CodeServer) -> Result<(), String> {
    workbench_connected(browser).await?;
    terminal_runs_echo(browser).await?;
    editor_saves_to_disk(browser, &code.work).await?;
    no_connection_trouble(browser).await
}

// ---------------------------------------------------------------------------------------------
// code-server.

#[tokio::test]
#[ignore = "needs chromium, chromedriver and ./scripts/upstreams; run with --include-ignored"]
async fn code_server_behind_the_gateway_proxy_mount() {
    let _one = BROWSER_LOCK.lock().await;
    let code = CodeServer::start();
    let ports = allow_ports(&[code.port]);
    let (_gateway, gw) = gateway_example(&ports.iter().map(String::as_str).collect::<Vec<_>>());
    let mut driver = Driver::start().await;
    let browser = driver.browser().await;
    browser
        .goto(&format!("http://{gw}/proxy/{}/", code.port))
        .await
        .unwrap();
    ide_works(&browser, &code).await.unwrap();
    browser.close().await.unwrap();
}

/// The same code-server behind a gateway that also sends RFC 7239 `Forwarded`: code-server reads
/// its quoted `host=` as the host, refuses every WebSocket, and the workbench never connects. This
/// is why `X-Forwarded-*` alone is the default, and it shows the check above can fail.
#[tokio::test]
#[ignore = "needs chromium, chromedriver and ./scripts/upstreams; run with --include-ignored"]
async fn code_server_refuses_a_gateway_sending_forwarded() {
    let _one = BROWSER_LOCK.lock().await;
    let code = CodeServer::start();
    let router = Router::new().route_service(
        "/proxy/{*rest}",
        ServiceBuilder::new()
            .layer(RouteLayer::new(
                PathMount::strip("/proxy").allow_port(code.port),
            ))
            .layer(RewriteLayer::new().forwarded(true))
            .service(ReverseProxy::new()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let mut driver = Driver::start().await;
    let browser = driver.browser().await;
    browser
        .goto(&format!("http://{gw}/proxy/{}/", code.port))
        .await
        .unwrap();
    let outcome = workbench_connected(&browser).await;
    let err = outcome.expect_err("the workbench connected although Forwarded was sent");
    assert!(err.contains("the workbench shows"), "{err}");
    eprintln!("as expected, {}", err.chars().take(300).collect::<String>());
    browser.close().await.unwrap();
}

/// `examples/ide.rs` run as its header says (`--sandbox demo=localhost:{port}`), code-server as
/// the sandbox, its link fetched as the header shows and opened in a new tab: on the sandbox's own
/// origin the workbench connects, its terminal runs a command and its editor saves; the
/// shared-origin link (`/__ide/demo/`) connects too.
#[tokio::test]
#[ignore = "needs chromium, chromedriver and ./scripts/upstreams; run with --include-ignored"]
async fn ide_example_opens_a_working_code_server() {
    let _one = BROWSER_LOCK.lock().await;
    let code = CodeServer::start();
    let secret = "real-upstreams-secret";
    let sandbox = format!("demo=localhost:{}", code.port);
    let mut ide = Process::start(
        example_binary("ide"),
        &["--listen", "127.0.0.1:0", "--sandbox", &sandbox],
        &[("IDE_HOST_SECRET", secret)],
        None,
    );
    let gw: SocketAddr = ide.wait_for(START, |line| {
        let rest = line.strip_prefix("IDE gateway on http://")?;
        rest.split(';').next()?.parse().ok()
    });
    // `curl -X POST -H 'Authorization: Bearer …' http://{gw}/api/dev/demo/ide-token`.
    let link = |which: &'static str| async move {
        let req = Request::post(format!("http://{gw}/api/dev/demo/ide-token"))
            .header(header::AUTHORIZATION, format!("Bearer {secret}"))
            .body(empty())
            .unwrap();
        let res = within(10, client().request(req)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let links: Value = serde_json::from_str(&text(res).await).unwrap();
        let link = links[which].as_str().expect("a link").to_owned();
        if link.starts_with('/') {
            format!("http://{gw}{link}")
        } else {
            link
        }
    };

    let mut driver = Driver::start().await;
    let browser = driver.browser().await;
    let mut tabs = vec![browser.window().await.unwrap()];
    let own = link("url").await;
    browser.new_window(true).await.unwrap();
    switch_to_new_tab(&browser, &tabs).await.unwrap();
    tabs.push(browser.window().await.unwrap());
    browser.goto(&own).await.unwrap();
    ide_works(&browser, &code).await.unwrap();
    assert_eq!(
        location(&browser).await,
        (
            format!("http://demo.ide.localhost:{}", gw.port()),
            "/".to_owned()
        ),
        "the IDE runs on the sandbox's own origin"
    );

    let shared = link("shared_origin_url").await;
    browser.new_window(true).await.unwrap();
    switch_to_new_tab(&browser, &tabs).await.unwrap();
    browser.goto(&shared).await.unwrap();
    workbench_connected(&browser).await.unwrap();
    assert_eq!(
        location(&browser).await,
        (format!("http://{gw}"), "/__ide/demo/".to_owned()),
        "the IDE runs under the shared-origin mount"
    );
    browser.close().await.unwrap();
}

/// The `gateway` example's IDE flow with `--ide-sandbox` pointing at code-server: its `/ide` page
/// opens the IDE in a new tab, where the workbench connects, the terminal runs a command and the
/// editor saves.
#[tokio::test]
#[ignore = "needs chromium, chromedriver and ./scripts/upstreams; run with --include-ignored"]
async fn gateway_example_ide_flow_opens_a_working_code_server() {
    let _one = BROWSER_LOCK.lock().await;
    let code = CodeServer::start();
    let ide = format!("localhost:{}", code.port);
    let (_gateway, gw) = gateway_example(&["--ide-sandbox", &ide]);
    let mut driver = Driver::start().await;
    let browser = driver.browser().await;
    browser.goto(&format!("http://{gw}/ide")).await.unwrap();
    let home = browser.window().await.unwrap();
    browser
        .find(Locator::Id("open"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    switch_to_new_tab(&browser, &[home]).await.unwrap();
    ide_works(&browser, &code).await.unwrap();
    assert_eq!(
        location(&browser).await,
        (
            format!("http://demo.ide.localhost:{}", gw.port()),
            "/".to_owned()
        ),
    );
    browser.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Vite.

/// The app rendered, its HMR client connected through `gateway_ws` (and only there), and an edit
/// of its module changed the page without a reload.
async fn vite_hmr_through(browser: &Client, vite: &Vite, page: &str, gateway_ws: &str) {
    browser.goto(page).await.unwrap();
    until(
        browser,
        STEP,
        "the app renders",
        "const h = document.getElementById('app'); return !!h && h.innerText === 'version 1'",
    )
    .await
    .unwrap();
    until(
        browser,
        STEP,
        "the HMR client connects",
        "return window.__sockets.some(s => s.open)",
    )
    .await
    .unwrap();
    let sockets = eval(browser, "return window.__sockets").await.unwrap();
    let urls: Vec<&str> = sockets
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["url"].as_str())
        .collect();
    assert!(
        !urls.is_empty() && urls.iter().all(|u| u.starts_with(gateway_ws)),
        "every socket through the gateway ({gateway_ws}): {sockets}"
    );
    // A marker that an HMR update keeps and a reload would lose.
    eval(browser, "window.__kept = 'no reload'; return true")
        .await
        .unwrap();
    std::fs::write(&vite.main_js, vite_main_js(2)).unwrap();
    until(
        browser,
        STEP,
        "the edit reaches the page",
        "return document.getElementById('app').innerText === 'version 2'",
    )
    .await
    .unwrap();
    assert_eq!(
        eval(browser, "return window.__kept || null").await.unwrap(),
        json!("no reload"),
        "the page was reloaded instead of updated"
    );
}

#[tokio::test]
#[ignore = "needs chromium, chromedriver and ./scripts/upstreams; run with --include-ignored"]
async fn vite_hmr_by_host_and_under_absproxy() {
    let _one = BROWSER_LOCK.lock().await;
    // By Host, Vite needs nothing: it serves from `/`.
    let by_host = Vite::start(None, free_port());
    // Under a path mount it needs its base, and the prefix kept (`/absproxy/`).
    let port = free_port();
    let base = format!("/absproxy/{port}/");
    let mounted = Vite::start(Some(&base), port);
    let ports = allow_ports(&[by_host.port, mounted.port]);
    let (_gateway, gw) = gateway_example(&ports.iter().map(String::as_str).collect::<Vec<_>>());
    let mut driver = Driver::start().await;
    let browser = driver.browser().await;

    let origin = format!("{}.localhost:{}", by_host.port, gw.port());
    vite_hmr_through(
        &browser,
        &by_host,
        &format!("http://{origin}/"),
        &format!("ws://{origin}/"),
    )
    .await;
    vite_hmr_through(
        &browser,
        &mounted,
        &format!("http://{gw}{base}"),
        &format!("ws://{gw}{base}"),
    )
    .await;
    browser.close().await.unwrap();
}
