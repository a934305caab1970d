//! A preview gateway for dev servers in sandboxes, on plain hyper (no framework).
//!
//! A dev server on `localhost:{port}` (IPv4 or IPv6 loopback, whichever it bound) is opened at
//! `http://{gateway}/proxy/{port}/` (prefix stripped; redirects and cookies mapped back under it)
//! or at `http://{port}.localhost:{gateway port}/` (by Host; browsers resolve `*.localhost` to
//! loopback). HTTP, WebSocket (HMR) and event streams go through; only allowed ports are reached;
//! Hosts other than loopback names and `--allow-host` are refused (DNS rebinding).
//!
//! Run: `cargo run --example preview -- --allow-port 5173`, with e.g. `npm run dev` (Vite) as the
//! dev server, then open the printed URL.
//! Flags: `--listen ADDR` (127.0.0.1:8080), `--allow-port PORT` (repeatable; default 5173),
//! `--allow-host NAME` (repeatable; `*.suffix` allowed).

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{header, Request, Response};
use hyper::body::Incoming;
use sandbox_gateway::host::HostAllowlistLayer;
use sandbox_gateway::proxy::{ProxyBody, ReverseProxy};
use sandbox_gateway::rewrite::RewriteLayer;
use sandbox_gateway::route::{check_public_port, HostPattern, HostRoute, PathMount, RouteLayer};
use sandbox_gateway::serve::Server;
use sandbox_gateway::sse::{SseBody, SseLayer};
use tower::util::BoxCloneSyncService;
use tower::{service_fn, ServiceBuilder, ServiceExt};

type Error = Box<dyn std::error::Error + Send + Sync>;
/// The whole gateway, boxed: what [`service`] returns and each connection serves.
pub type Gateway = BoxCloneSyncService<Request<Incoming>, Response<SseBody<ProxyBody>>, Infallible>;

/// The gateway as one cloneable service: Host allowlist, event streams unbuffered, then
/// `{port}.localhost` by Host or `/proxy/{port}/` by path, rewritten, to the dev server.
pub fn service(ports: Vec<u16>, hosts: Vec<String>) -> Result<Gateway, Error> {
    let proxy = ReverseProxy::new();
    let by_path = ServiceBuilder::new()
        .layer(RouteLayer::new(
            PathMount::strip("/proxy").allow_ports(ports.iter().copied()),
        ))
        .layer(RewriteLayer::new())
        .service(proxy.clone());
    let by_host = HostRoute::ports("{port}.localhost".parse::<HostPattern>()?, "port")?
        .allow_ports(ports.iter().copied());
    let pattern = by_host.pattern().clone();
    let by_host = ServiceBuilder::new()
        .layer(RouteLayer::new(by_host))
        .layer(RewriteLayer::new())
        .service(proxy);
    // Path mount or host route, decided by the Host (the URI's authority over HTTP/2).
    let dispatch = service_fn(move |req: Request<Incoming>| {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        let by_host_name = host.is_some_and(|h| pattern.matches(h).is_some());
        let (by_host, by_path) = (by_host.clone(), by_path.clone());
        async move {
            match by_host_name {
                true => by_host.oneshot(req).await,
                false => by_path.oneshot(req).await,
            }
        }
    });
    let allowlist = HostAllowlistLayer::builder()
        .allow_all(hosts)
        .hint("restart the gateway with --allow-host {host}")
        .build()?;
    Ok(BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(allowlist)
            .layer(SseLayer::new())
            .service(dispatch),
    ))
}

fn parse_args() -> Result<(SocketAddr, Vec<u16>, Vec<String>), Error> {
    let (mut listen, mut ports, mut hosts) = ("127.0.0.1:8080".to_owned(), vec![], vec![]);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value,
            "--allow-port" => ports.push(
                value
                    .parse()
                    .map_err(|_| format!("--allow-port: `{value}` is not a port"))?,
            ),
            "--allow-host" => hosts.push(value),
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    let listen = listen
        .parse()
        .map_err(|_| format!("--listen: `{listen}` is not an address like 127.0.0.1:8080"))?;
    if ports.is_empty() {
        ports.push(5173);
    }
    Ok((listen, ports, hosts))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("preview: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let (listen, ports, hosts) = parse_args()?;
    let svc = service(ports.clone(), hosts)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    // Browsers refuse URLs on the Fetch standard's bad ports (ERR_UNSAFE_PORT).
    check_public_port(addr.port())?;
    println!("preview gateway on http://{addr} for ports {ports:?}; open:");
    println!("  http://{addr}/proxy/{}/", ports[0]);
    println!("  http://{}.localhost:{}/", ports[0], addr.port());
    // HTTP/1.1 + HTTP/2 with header and idle timeouts and connection caps; each request carries
    // the peer's address to the rewrite layer (`Forwarded: for=`, `X-Forwarded-For`). Ctrl-C lets
    // requests in flight finish.
    Server::builder()
        .build()?
        .serve(listener, svc, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
