//! The whole stack on an embedded demo sandbox.
//!
//! ```text
//! cargo run --example gateway -- [--listen ADDR] [--demo-port P] [--allow-port Q]...
//!     [--tls-cert CERT.pem --tls-key KEY.pem] [--ide-sandbox HOST:PORT] [--no-demo]
//! cargo run --example gateway --features metrics   # and the crate's counters at /metrics
//! ```
//!
//! Starts a demo dev server bound to `[::1]:P` only (as Vite binds `localhost` on modern Node) and
//! a gateway on ADDR (default `127.0.0.1:8080`) that proxies `/proxy/{P}/…` to it through
//! `localhost:{P}`: both loopbacks are raced, so the IPv6-only server is found without `--host`.
//! `--allow-port` adds ports that `/proxy/{port}/` may reach besides the demo's. The same dev servers
//! are also served by Host at `http://{port}.localhost:{gateway port}/` (browsers resolve
//! `*.localhost` to loopback). `/absproxy/{port}/…` reaches the same ports with the prefix kept, for
//! dev servers told that base (Vite: `base: "/absproxy/{port}/"`). Every path rewrites what the
//! sandbox and the browser see: X-Forwarded-* headers, and redirects and cookies mapped back under
//! the mount. The IDE flow (`/ide`) opens the demo dev server as sandbox `demo`; `--ide-sandbox`
//! points it at a real IDE instead, such as code-server. The runtime honours
//! `TOKIO_WORKER_THREADS`.
//!
//! The gateway is served by `sandbox_gateway::serve::Server`: HTTP/1.1 and HTTP/2, header-read and
//! idle timeouts, connection caps per client, and on Ctrl-C a graceful shutdown that lets requests
//! finish and then closes the WebSocket tunnels. With `--tls-cert` and `--tls-key` (PEM) it serves
//! HTTPS, `h2` and `http/1.1` by ALPN.
//!
//! The index (`/`) runs a self-check in the visitor's browser (`selfcheck.html`). `/metrics`
//! (loopback peers only) serves what the gateway counted in Prometheus text. `--no-demo` leaves the
//! demo sandbox stopped (its port then needs `--demo-port`), so the self-check shows what a visitor
//! sees when a sandbox is down.

mod demo;
mod ide;
mod llm;
mod metrics;

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use sandbox_gateway::auth::{SandboxHosts, SessionRedirect};
use sandbox_gateway::host::HostAllowlistLayer;
use sandbox_gateway::isolation::IsolationLayer;
use sandbox_gateway::proxy::ReverseProxy;
use sandbox_gateway::rewrite::RewriteLayer;
use sandbox_gateway::route::{check_public_port, HostPattern, HostRoute, PathMount, RouteLayer};
use sandbox_gateway::serve::{Server, TlsConfig};
use sandbox_gateway::sse::SseLayer;
use tower::{ServiceBuilder, ServiceExt};

struct Args {
    listen: SocketAddr,
    demo_port: u16,
    allow_ports: Vec<u16>,
    allow_origins: Vec<String>,
    allow_hosts: Vec<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    ide_sandbox: Option<String>,
    no_demo: bool,
}

const USAGE: &str = "usage: gateway [--listen ADDR] [--demo-port P] [--allow-port Q]... \
[--allow-origin ORIGIN]... [--allow-host NAME]... [--tls-cert CERT.pem --tls-key KEY.pem] \
[--ide-sandbox HOST:PORT] [--no-demo]

  --listen ADDR          where the gateway listens (default 127.0.0.1:8080)
  --demo-port P          the demo sandbox's port on [::1] (default 5173)
  --allow-port Q         another port /proxy/{port}/ may reach (repeatable)
  --allow-origin ORIGIN  an origin allowed to call /api/ cross-origin; patterns like
                         https://*.webcontainer-api.io allowed (repeatable;
                         default https://*.webcontainer-api.io)
  --allow-host NAME      a Host the gateway answers besides loopback names; *.suffix allowed
                         (repeatable)
  --tls-cert CERT.pem    serve HTTPS with this certificate chain (PEM; needs --tls-key)
  --tls-key KEY.pem      the certificate's private key (PEM)
  --ide-sandbox HOST:PORT
                         the IDE that sandbox demo opens from /ide, e.g. code-server started
                         with `code-server --auth none --bind-addr localhost:8081` (default:
                         the demo dev server)
  --no-demo              do not start the demo sandbox (needs --demo-port): the gateway
                         still routes to its port, so its pages show a stopped sandbox";

/// The CORS origins used when no `--allow-origin` is given: WebContainer apps.
const DEFAULT_ORIGINS: &[&str] = &["https://*.webcontainer-api.io"];

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:8080".parse().expect("valid default"),
        demo_port: 5173,
        allow_ports: Vec::new(),
        allow_origins: Vec::new(),
        allow_hosts: Vec::new(),
        tls_cert: None,
        tls_key: None,
        ide_sandbox: None,
        no_demo: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value("--listen")?;
                args.listen = v.parse().map_err(|_| {
                    format!("--listen: `{v}` is not an address like 127.0.0.1:8080")
                })?;
            }
            "--demo-port" => {
                let v = value("--demo-port")?;
                args.demo_port = v
                    .parse()
                    .map_err(|_| format!("--demo-port: `{v}` is not a port"))?;
            }
            "--allow-port" => {
                let v = value("--allow-port")?;
                args.allow_ports.push(
                    v.parse()
                        .map_err(|_| format!("--allow-port: `{v}` is not a port"))?,
                );
            }
            "--allow-origin" => args.allow_origins.push(value("--allow-origin")?),
            "--allow-host" => args.allow_hosts.push(value("--allow-host")?),
            "--tls-cert" => args.tls_cert = Some(value("--tls-cert")?),
            "--tls-key" => args.tls_key = Some(value("--tls-key")?),
            "--ide-sandbox" => args.ide_sandbox = Some(value("--ide-sandbox")?),
            "--no-demo" => args.no_demo = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    if args.tls_cert.is_some() != args.tls_key.is_some() {
        return Err("--tls-cert and --tls-key go together".to_owned());
    }
    if args.no_demo && args.demo_port == 0 {
        return Err("--no-demo needs --demo-port P (a port other than 0)".to_owned());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let mut args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.allow_origins.is_empty() {
        args.allow_origins = DEFAULT_ORIGINS.iter().map(|s| s.to_string()).collect();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,hyper_util=warn".into()),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let demo = if args.no_demo {
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, args.demo_port))
    } else {
        demo::start(args.demo_port).await.map_err(|e| {
            format!(
                "cannot start the demo sandbox on [::1]:{}: {e}",
                args.demo_port
            )
        })?
    };
    let counted = metrics::install()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            TlsConfig::from_pem_files(cert, key)
                .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?,
        ),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let gw = listener.local_addr()?;
    // Browsers refuse URLs on the Fetch standard's bad ports (ERR_UNSAFE_PORT).
    check_public_port(gw.port())?;
    let port = demo.port();

    let mut ports = args.allow_ports.clone();
    ports.push(port);
    let proxy = ReverseProxy::new();
    let previews = ServiceBuilder::new()
        .layer(SseLayer::new())
        .layer(RouteLayer::new(
            PathMount::strip("/proxy").allow_ports(ports.iter().copied()),
        ))
        .layer(RewriteLayer::new())
        .service(proxy.clone());

    // `/absproxy/{port}/…` → the same ports with the prefix kept, for dev servers told their base
    // (Vite's `base: "/absproxy/{port}/"`), whose root-relative URLs then stay under the mount.
    let abs_previews = ServiceBuilder::new()
        .layer(SseLayer::new())
        .layer(RouteLayer::new(
            PathMount::keep("/absproxy").allow_ports(ports.iter().copied()),
        ))
        .layer(RewriteLayer::new())
        .service(proxy.clone());

    // `http://{port}.localhost:{gw port}/…` → the dev server on localhost:{port}.
    let by_host = HostRoute::ports("{port}.localhost".parse::<HostPattern>()?, "port")?
        .allow_ports(ports.iter().copied());
    let pattern = by_host.pattern().clone();
    let host_previews = ServiceBuilder::new()
        .layer(SseLayer::new())
        .layer(RouteLayer::new(by_host))
        .layer(RewriteLayer::new())
        .service(proxy.clone());
    let preview_by_host = middleware::from_fn(move |req: Request, next: Next| {
        let pattern = pattern.clone();
        let host_previews = host_previews.clone();
        async move {
            let host = req
                .headers()
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.uri().authority().map(|a| a.as_str()));
            if host.is_some_and(|h| pattern.matches(h).is_some()) {
                match host_previews.oneshot(req).await {
                    Ok(res) => res.into_response(),
                    Err(never) => match never {},
                }
            } else {
                next.run(req).await
            }
        }
    });

    // Deny unknown Hosts (DNS rebinding); loopback names always pass.
    let hosts = HostAllowlistLayer::builder()
        .allow_all(args.allow_hosts.iter().cloned())
        .hint("restart the gateway with --allow-host {host}")
        .build()?;
    // The host page and everything it loads are cross-origin isolated (COOP + COEP credentialless).
    let isolation = IsolationLayer::new();

    let sandbox = match &args.ide_sandbox {
        Some(addr) => format!("http://{addr}")
            .parse()
            .map_err(|e| format!("--ide-sandbox: `{addr}` is not HOST:PORT: {e}"))?,
        None => format!("http://localhost:{port}").parse()?,
    };
    // The IDE of sandbox `demo` on a host of its own, `demo.ide.localhost:{gw port}`, and on the
    // shared origin under `/__ide/demo/`.
    let ide_hosts =
        SandboxHosts::new(&format!("{{id}}.ide.localhost:{}", gw.port()))?.https(scheme == "https");
    // An ended IDE session (logged out, expired) leads back to the host's `/ide` page.
    let ide_dashboard = SessionRedirect::new(format!("{scheme}://{gw}/ide"))?;
    let ide = ide::routes(
        ide::signer()?,
        sandbox,
        proxy.clone(),
        ide_hosts.clone(),
        ide_dashboard,
    )?;

    // `/api/proxy/demo-llm/…` → the embedded HTTPS, h2-only demo API; the key stays here and is
    // spent only for holders of a token from `POST /api/llm-token`.
    let llm = llm::start().await?;
    let (llm_token, api_proxy) = llm::api(&llm, &args.allow_origins)?;

    let index = index_page(port);
    let host_app = Router::new()
        .route("/", get(move || async move { Html(index) }))
        .route("/ide", get(|| async { Html(IDE_PAGE) }))
        .nest("/api", ide.api)
        .merge(llm_token)
        .merge(api_proxy)
        .merge(ide.pages)
        .route_service("/absproxy/{*rest}", abs_previews)
        .merge(metrics::route(counted))
        .fallback_service(previews)
        .layer(preview_by_host);
    // A sandbox's own host gets the IDE's bootstrap and tunnel, never the host's routes.
    let app = Router::new()
        .fallback_service(ide_hosts.split(ide.sandbox_host, host_app))
        .layer(isolation)
        .layer(hosts);

    if args.no_demo {
        println!(
            "demo sandbox not started (--no-demo); its port is {}",
            demo.port()
        );
    } else {
        println!("demo sandbox (dev server) on http://{demo} (IPv6 loopback only)");
    }
    println!("gateway on {scheme}://{gw}\n");
    println!("try:");
    for (path, what) in links(port) {
        println!("  {scheme}://{gw}{path:<28} {what}");
    }
    println!(
        "  curl -N -X POST {scheme}://{gw}/api/proxy/demo-llm/chat/completions -H \"authorization: Bearer $(curl -s -X POST {scheme}://{gw}/api/llm-token)\" -H 'content-type: application/json' -d '{{}}'\n  {:28} streamed tokens from the demo API (https://localhost:{}, h2 only): a token from the host's route, the key injected here",
        "",
        llm.addr.port()
    );
    println!("\nports reachable through /proxy/{{port}}/: {ports:?}");
    println!(
        "the same ports with the prefix kept (a dev server told its base, e.g. Vite's `base`): /absproxy/{{port}}/"
    );
    println!(
        "the same ports by Host: {scheme}://{{port}}.localhost:{}/ (e.g. {scheme}://{port}.localhost:{}/)",
        gw.port(),
        gw.port()
    );
    println!(
        "the IDE of sandbox demo on its own origin: http://demo.ide.localhost:{}/ (open it from /ide; log out at /.gateway/logout)",
        gw.port()
    );
    println!(
        "metrics (Prometheus text, loopback peers only): {scheme}://{gw}/metrics{}",
        if cfg!(feature = "metrics") {
            ""
        } else {
            " (the gateway's own series need --features metrics)"
        }
    );
    println!("CORS origins allowed on /api/: {:?}", args.allow_origins);
    println!(
        "Hosts answered: loopback names (localhost, *.localhost, 127.0.0.1, [::1]){}",
        if args.allow_hosts.is_empty() {
            String::new()
        } else {
            format!(", {:?}", args.allow_hosts)
        }
    );

    // Timeouts, connection caps and graceful shutdown: the defaults of `serve::Server`. Every
    // request carries the peer's address to the rewrite layers (`X-Forwarded-For`).
    let mut server = Server::builder().on_drained(move || proxy.close_tunnels());
    if let Some(tls) = tls {
        server = server.tls(tls);
    }
    server
        .build()?
        .serve(listener, app, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// A host page for the IDE flow: it asks the token route for a link and opens it in a new tab, as
/// a dashboard's "Open IDE" button does.
const IDE_PAGE: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>open the IDE</title></head>
<body><h1>Browser IDE</h1>
<button id="open">Open the IDE for sandbox demo in a new tab</button>
<button id="open-shared">… on the shared origin (/__ide/demo/)</button>
<p id="status"></p>
<script>
async function openIde(which) {
  const res = await fetch("/api/dev/demo/ide-token", { method: "POST" });
  const links = await res.json();
  const url = links[which];
  document.getElementById("status").textContent = "opened " + url.split("?")[0];
  window.open(url, "_blank");
}
document.getElementById("open").onclick = () => openIde("url");
document.getElementById("open-shared").onclick = () => openIde("shared_origin_url");
</script></body></html>"#;

fn links(port: u16) -> Vec<(String, &'static str)> {
    vec![
        (
            format!("/proxy/{port}/"),
            "the demo page (WebSocket + EventSource through the gateway)",
        ),
        (
            format!("/proxy/{port}/echo-headers"),
            "the headers the sandbox received",
        ),
        (format!("/proxy/{port}/events"), "an SSE stream, unbuffered"),
        (format!("/proxy/{port}/ws"), "a WebSocket echo (ws://)"),
        (
            format!("/proxy/{port}/redirect"),
            "a redirect with a root-relative Location",
        ),
        (format!("/proxy/{port}/cookie"), "a Set-Cookie with Path=/"),
        (
            "/ide".to_owned(),
            "the browser-IDE flow: token → cookie → the IDE on its own host demo.ide.localhost (or /__ide/demo/)",
        ),
    ]
}

/// Where the self-check page links a failed check to (a README section by anchor).
const DOCS: &str = "https://github.com/sandbox-gateway/sandbox-gateway/blob/main/README.md";

/// The index: the self-check that runs in the visitor's browser, then the list of pages.
fn index_page(port: u16) -> String {
    let items: String = links(port)
        .into_iter()
        .map(|(path, what)| format!("<li><a href=\"{path}\">{path}</a> — {what}</li>\n"))
        .collect();
    include_str!("selfcheck.html")
        .replace("{{PORT}}", &port.to_string())
        .replace("{{DOCS}}", DOCS)
        .replace("{{LINKS}}", &items)
}
