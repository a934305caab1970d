//! The host server of a browser app builder: the builder page served cross-origin isolated (COOP
//! `same-origin`, COEP `credentialless`, so WebContainers get `SharedArrayBuffer`), and
//! `/api/proxy/{name}/…` forwarding the generated app's calls to named external APIs with a key
//! that stays on the server. CORS admits the app's origins; event streams come back unbuffered.
//!
//! Run: `OPENAI_API_KEY=sk-… cargo run --example app_builder`, then try the printed `curl`.
//! Flags: `--listen ADDR` (127.0.0.1:8080), `--allow-origin ORIGIN` (repeatable; `*.` patterns;
//! default `https://*.webcontainer-api.io`), `--api NAME=URL` (repeatable: another upstream, its
//! key read from `{NAME}_API_KEY` when set; a loopback URL such as a local model server is let
//! past the SSRF guard). Environment: `OPENAI_API_KEY` adds `openai` → `https://api.openai.com/v1`.

use axum::response::Html;
use axum::routing::get;
use axum::Router;
use http::{header, Method};
use sandbox_gateway::cors::{AllowOrigin, CorsLayer};
use sandbox_gateway::forward::{ApiForward, Secret, Upstream};
use sandbox_gateway::isolation::IsolationLayer;
use sandbox_gateway::serve::Server;
use tower::ServiceBuilder;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The builder page; it reports whether the browser made it cross-origin isolated.
const PAGE: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>app builder</title></head>
<body><h1>App builder host</h1><p>crossOriginIsolated: <b id="iso"></b></p>
<script>document.getElementById("iso").textContent = self.crossOriginIsolated;</script>
</body></html>"#;

/// The host server: the page at `/`, the forwarder at `/api/proxy/{name}/…` behind CORS for
/// `origins`, everything cross-origin isolated.
pub fn app(apis: Vec<Upstream>, origins: Vec<String>) -> Result<Router, Error> {
    let mut forward = ApiForward::builder();
    for api in apis {
        forward = forward.upstream(api);
    }
    let cors = CorsLayer::builder()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE])
        .build()?;
    let api_proxy = ServiceBuilder::new().layer(cors).service(forward.build()?);
    Ok(Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .nest_service("/api/proxy", api_proxy)
        .layer(IsolationLayer::new()))
}

/// An upstream named `name` at `url` for GET and POST on every path, sending `key` as its
/// `Authorization`; a loopback URL (`localhost`, `127.0.0.1`, `[::1]`) may reach loopback.
pub fn api(name: &str, url: &str, key: Option<Secret>) -> Result<Upstream, Error> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("--api {name}={url}: not a URL ({e})"))?;
    let host = uri.host().ok_or(format!("--api {name}={url}: no host"))?;
    let local = matches!(host, "localhost" | "127.0.0.1" | "[::1]") || host.ends_with(".localhost");
    let mut up = Upstream::new(name, url)
        .allow_methods([Method::GET, Method::POST])
        .allow_paths(["/"])
        .allow_private(local);
    if let Some(key) = key {
        up = up.inject_header(header::AUTHORIZATION, key);
    }
    Ok(up)
}

/// `{NAME}_API_KEY` as a bearer, when set.
fn key_for(name: &str) -> Result<Option<Secret>, Error> {
    let var = format!(
        "{}_API_KEY",
        name.to_ascii_uppercase().replace(['-', '.'], "_")
    );
    match std::env::var_os(&var) {
        Some(_) => Ok(Some(Secret::bearer_from_env(&var)?)),
        None => Ok(None),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("app_builder: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let (mut listen, mut origins, mut apis) = ("127.0.0.1:8080".to_owned(), vec![], vec![]);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value,
            "--allow-origin" => origins.push(value),
            "--api" => {
                let (name, url) = value.split_once('=').ok_or("--api wants NAME=URL")?;
                apis.push(api(name, url, key_for(name)?)?);
            }
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    if origins.is_empty() {
        origins.push("https://*.webcontainer-api.io".to_owned());
    }
    // Most model servers (Ollama, LM Studio, vLLM) speak the OpenAI API.
    let mut example = apis
        .first()
        .map(|a| format!("{}/chat/completions", a.name()));
    if std::env::var_os("OPENAI_API_KEY").is_some() {
        let key = Secret::bearer_from_env("OPENAI_API_KEY")?;
        apis.push(
            Upstream::new("openai", "https://api.openai.com/v1")
                .allow_methods([Method::GET, Method::POST])
                .allow_paths(["/chat/completions", "/responses", "/embeddings", "/models"])
                .inject_header(header::AUTHORIZATION, key),
        );
        example = Some("openai/chat/completions".to_owned());
    }
    let app = app(apis, origins.clone())?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    println!("app builder host on http://{addr} (CORS origins: {origins:?})");
    match example {
        Some(path) => println!(
            "try:\n  curl -N -X POST http://{addr}/api/proxy/{path} -H 'content-type: application/json' \
             -d '{{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'"
        ),
        None => println!("no API configured: set OPENAI_API_KEY or pass --api NAME=URL"),
    }
    // Header and idle timeouts, connection caps; Ctrl-C lets streams in flight finish.
    Server::builder()
        .build()?
        .serve(listener, app, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
