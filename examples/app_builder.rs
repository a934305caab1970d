//! The host server of a browser app builder: the builder page served cross-origin isolated (COOP
//! `same-origin`, COEP `credentialless`, so WebContainers get `SharedArrayBuffer`), and
//! `/api/proxy/{name}/…` forwarding the generated app's calls to named external APIs with a key
//! that stays on the server. CORS admits the app's origins and the headers API SDKs send; event
//! streams come back unbuffered, with a heartbeat every 15 s.
//!
//! Only callers the host authorised spend the keys: the builder page asks the host's own route
//! `POST /api/token` for a short-lived API token (in a real host, that route first checks the
//! user's session), and hands it to the generated app, which uses it as its SDK's API key:
//! `new OpenAI({ baseURL: "http://host/api/proxy/openai", apiKey: token,
//! dangerouslyAllowBrowser: true })`. No token: 401; a token for another API: 403; over 60
//! requests a minute or 4 streams at once per caller: 429.
//!
//! Run: `OPENAI_API_KEY=sk-… cargo run --example app_builder`, then try the printed `curl`.
//! Flags: `--listen ADDR` (127.0.0.1:8080), `--allow-origin ORIGIN` (repeatable; `*.` patterns;
//! default `https://*.webcontainer-api.io`), `--api NAME=URL` (repeatable: another upstream, its
//! key read from `{NAME}_API_KEY` when set; a loopback URL such as a local model server is let
//! past the SSRF guard). Environment: `OPENAI_API_KEY` adds `openai` → `https://api.openai.com/v1`.

use std::time::Duration;

use axum::extract::State;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::Router;
use http::{header, Method, StatusCode};
use sandbox_gateway::auth::TokenSigner;
use sandbox_gateway::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};
use sandbox_gateway::forward::{ApiForward, Callers, Quota, Secret, Upstream};
use sandbox_gateway::isolation::IsolationLayer;
use sandbox_gateway::serve::Server;
use tower::ServiceBuilder;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The builder page: it reports whether the browser made it cross-origin isolated, and mints the
/// API token it would hand to the generated app (as its SDK's API key).
const PAGE: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>app builder</title></head>
<body><h1>App builder host</h1><p>crossOriginIsolated: <b id="iso"></b></p>
<p>API token for the generated app (valid 15 minutes): <code id="token"></code></p>
<script>
document.getElementById("iso").textContent = self.crossOriginIsolated;
fetch("/api/token", { method: "POST" }).then(r => r.text()).then(token => {
  document.getElementById("token").textContent = token;
  // The app gets it as its API key, e.g. new OpenAI({ baseURL, apiKey: token, dangerouslyAllowBrowser: true }).
});
</script>
</body></html>"#;

/// How long an API token minted for the app is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// The host's token route and the upstream names its tokens may use.
#[derive(Clone)]
struct Minter {
    signer: TokenSigner,
    upstreams: Vec<String>,
}

/// `POST /api/token`: a short-lived API token, as plain text. A real host authenticates the user
/// here (its session cookie) and uses the user's or the project's id as the subject.
async fn mint(State(minter): State<Minter>) -> impl IntoResponse {
    match minter
        .signer
        .issue_api("demo-user", &minter.upstreams, TOKEN_TTL)
    {
        Ok(token) => (StatusCode::OK, token).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The host server: the page at `/`, its token route at `POST /api/token`, the forwarder at
/// `/api/proxy/{name}/…` for callers holding a token signed by `signer`, behind CORS for
/// `origins`; everything cross-origin isolated.
pub fn app(
    apis: Vec<Upstream>,
    origins: Vec<String>,
    signer: TokenSigner,
) -> Result<Router, Error> {
    let minter = Minter {
        signer: signer.clone(),
        upstreams: apis.iter().map(|a| a.name().to_owned()).collect(),
    };
    let mut forward = ApiForward::builder()
        .callers(Callers::api_tokens(signer))
        .quota(
            Quota::new()
                .requests(60, Duration::from_secs(60))
                .concurrent_streams(4),
        )
        // A comment line after 15 s of silence keeps tunnels and CDNs (about 100 s idle
        // timeouts) from cutting a model that thinks long.
        .sse_heartbeat(Duration::from_secs(15));
    for api in apis {
        forward = forward.upstream(api);
    }
    // CORS lets the SDKs' requests through the browser; the token check above is the access
    // control.
    let cors = CorsLayer::builder()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(AllowHeaders::api_sdks())
        .expose_headers(ExposeHeaders::api_sdks())
        .max_age(Duration::from_secs(7200))
        .build()?;
    let api_proxy = ServiceBuilder::new().layer(cors).service(forward.build()?);
    Ok(Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/token", post(mint).with_state(minter))
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
    // One process: a random key. Replicas share one key (`TokenSigner::new`).
    let app = app(apis, origins.clone(), TokenSigner::random()?)?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    println!("app builder host on http://{addr} (CORS origins: {origins:?})");
    match example {
        Some(path) => println!(
            "try (a token from the host's route, then the API call with it as the key):\n  \
             TOKEN=$(curl -s -X POST http://{addr}/api/token)\n  \
             curl -N -X POST http://{addr}/api/proxy/{path} -H \"authorization: Bearer $TOKEN\" \
             -H 'content-type: application/json' \
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
