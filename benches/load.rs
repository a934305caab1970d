//! Load comparison, side by side in one run: the direct connection (the limit), two floors — a
//! bare TCP relay (the least any proxy in a process of its own does) and a bare hyper proxy (the
//! least any proxy built on hyper does) — this crate's `ReverseProxy`, nginx and node's
//! http-proxy, each proxy on one worker thread in a process of its own, in front of the same
//! upstream.
//!
//! Run everything with `./scripts/load-compare` (it installs `wrk`, `nginx` and `http-proxy`
//! first), or `cargo bench --bench load` when they are there. A proxy that is missing is
//! reported as such and skipped.
//!
//! Figures, per target:
//! - small GET: requests/s and p50 / p99 latency with `wrk`, 64 connections, one client thread
//!   (the median of three runs);
//! - CPU time per proxied request, from the proxy process's own accounting (`/proc/PID/stat`);
//! - 1 GiB streamed down: MB/s (the median of three runs), and the proxy's peak RSS (`VmHWM`);
//! - WebSocket echo round trip, 32 bytes, sequential, and the proxy's CPU time per round trip;
//! - SSE: time from the upstream writing an event to the client reading it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ws::{Message as AxMessage, WebSocketUpgrade};
use axum::http::{header, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use axum::Router;
use bytes::Bytes;
use futures_util::{stream, SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sandbox_gateway::proxy::ReverseProxy;
use sandbox_gateway::route::{RouteLayer, Upstream};
use tokio_tungstenite::tungstenite::Message;

const GIB: u64 = 1 << 30;
const CHUNK: usize = 64 * 1024;
const WRK_SECONDS: u32 = 5;
const WS_ROUNDS: usize = 2000;
const SSE_EVENTS: usize = 50;

const RELAY: &str = "TCP relay (no HTTP)";
const BARE: &str = "bare hyper proxy";
const OURS: &str = "sandbox-gateway";
const NGINX: &str = "nginx";
const NODE: &str = "node http-proxy";

fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn main() {
    if let Ok(upstream) = std::env::var("SGW_LOAD_PROXY_UPSTREAM") {
        run_proxy(upstream.parse().expect("upstream address"));
        return;
    }
    if let Ok(upstream) = std::env::var("SGW_LOAD_RELAY_UPSTREAM") {
        run_relay(upstream.parse().expect("upstream address"));
        return;
    }
    if let Ok(upstream) = std::env::var("SGW_LOAD_BARE_UPSTREAM") {
        run_bare_hyper(upstream.parse().expect("upstream address"));
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: do the work only
    // for the former.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    epoch();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(compare());
}

// ---------------------------------------------------------------------------------------------
// The proxy process: this crate's ReverseProxy on a single-threaded runtime.

fn run_proxy(upstream: SocketAddr) {
    let upstream: Upstream = format!("http://{upstream}").parse().unwrap();
    let svc = tower::ServiceBuilder::new()
        .layer(RouteLayer::new(upstream))
        .service(ReverseProxy::new());
    serve_each(move |stream| {
        let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
        serve_http1(stream, svc)
    });
}

/// One client connection to a proxy built on hyper, upgrades included.
async fn serve_http1<S>(stream: tokio::net::TcpStream, svc: S)
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _ = stream.set_nodelay(true);
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades()
        .await;
}

/// What each proxy process does: a single-threaded runtime, a listener on loopback whose address
/// goes to stdout for the parent, and `serve` spawned for each connection accepted.
fn serve_each<F, Fut>(serve: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream));
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The relay process: no HTTP at all, each client connection copied byte for byte to a connection
// of its own to the upstream, on a single-threaded runtime. Every proxy in a process of its own
// pays at least this: the extra hops, wake-ups and copies, with nothing parsed.

/// The relay's copy buffer, each way.
const RELAY_BUF: usize = 64 * 1024;

fn run_relay(upstream: SocketAddr) {
    serve_each(move |mut down| async move {
        let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
            return;
        };
        let _ = down.set_nodelay(true);
        let _ = up.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, RELAY_BUF, RELAY_BUF)
            .await;
    });
}

// ---------------------------------------------------------------------------------------------
// The bare hyper proxy: hyper's HTTP/1.1 server and connection-level client, the parts
// `ReverseProxy` is built on, joined by a plain list of idle connections, with nothing else: no
// routing, header rewriting, checks, timeouts or limits. What any proxy built on hyper pays.

fn run_bare_hyper(upstream: SocketAddr) {
    use hyper::body::Incoming;
    use hyper::client::conn::http1::{self as client, SendRequest};
    use std::sync::{Arc, Mutex};

    type Idle = Arc<Mutex<Vec<SendRequest<Incoming>>>>;

    async fn open(upstream: SocketAddr) -> Option<SendRequest<Incoming>> {
        let stream = tokio::net::TcpStream::connect(upstream).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (tx, conn) = client::handshake(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(conn.with_upgrades());
        Some(tx)
    }

    /// On an error hyper closes the client's connection: the bench's upstream is always there.
    type Error = Box<dyn std::error::Error + Send + Sync>;

    async fn forward(
        mut req: Request<Incoming>,
        idle: Idle,
        upstream: SocketAddr,
    ) -> Result<Response<Incoming>, Error> {
        if req.headers().contains_key(header::UPGRADE) {
            let mut tx = open(upstream).await.ok_or("upstream refused")?;
            let down = hyper::upgrade::on(&mut req);
            let mut res = tx.send_request(req).await?;
            if res.status() == StatusCode::SWITCHING_PROTOCOLS {
                let up = hyper::upgrade::on(&mut res);
                tokio::spawn(async move {
                    if let (Ok(down), Ok(up)) = tokio::join!(down, up) {
                        let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
            return Ok(res);
        }
        // The most recently used connection that is still open, once its last exchange is over.
        let mut tx = loop {
            let last = idle.lock().unwrap().pop();
            match last {
                Some(mut tx) => {
                    if tx.ready().await.is_ok() {
                        break tx;
                    }
                }
                None => break open(upstream).await.ok_or("upstream refused")?,
            }
        };
        let res = tx.send_request(req).await;
        idle.lock().unwrap().push(tx);
        Ok(res?)
    }

    let idle = Idle::default();
    serve_each(move |stream| {
        let idle = idle.clone();
        let svc = hyper::service::service_fn(move |req| forward(req, idle.clone(), upstream));
        serve_http1(stream, svc)
    });
}

// ---------------------------------------------------------------------------------------------
// The upstream, shared by every target.

async fn upstream() -> SocketAddr {
    async fn big() -> impl IntoResponse {
        let chunk = Bytes::from(vec![b'x'; CHUNK]);
        let n = GIB as usize / CHUNK;
        let body = stream::iter((0..n).map(move |_| Ok::<_, Infallible>(chunk.clone())));
        (
            [(header::CONTENT_LENGTH, GIB.to_string())],
            Body::from_stream(body),
        )
    }
    async fn ws(up: WebSocketUpgrade) -> impl IntoResponse {
        up.on_upgrade(|mut socket| async move {
            while let Some(Ok(msg)) = socket.recv().await {
                if matches!(msg, AxMessage::Binary(_) | AxMessage::Text(_))
                    && socket.send(msg).await.is_err()
                {
                    break;
                }
            }
        })
    }
    async fn sse() -> impl IntoResponse {
        let events = stream::unfold(0usize, |n| async move {
            if n == SSE_EVENTS {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            let at = epoch().elapsed().as_nanos();
            Some((
                Ok::<_, Infallible>(Bytes::from(format!("data: {at}\n\n"))),
                n + 1,
            ))
        });
        (
            [(header::CONTENT_TYPE, "text/event-stream")],
            Body::from_stream(events),
        )
    }
    let app = Router::new()
        .route("/small", get(|| async { "hello, world\n" }))
        .route("/big", get(big))
        .route("/ws", any(ws))
        .route("/sse", get(sse));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

// ---------------------------------------------------------------------------------------------
// The targets.

struct Target {
    name: &'static str,
    addr: SocketAddr,
    process: Option<Child>,
    _dir: Option<TempDir>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.process {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("sgw-load-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_listening(addr: SocketAddr) -> bool {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// This executable again, as the proxy (`SGW_LOAD_PROXY_UPSTREAM`), the relay
/// (`SGW_LOAD_RELAY_UPSTREAM`) or the bare hyper proxy (`SGW_LOAD_BARE_UPSTREAM`); it prints the
/// address it listens on.
fn this_exe_as(name: &'static str, var: &str, upstream: SocketAddr) -> Option<Target> {
    let mut child = Command::new(std::env::current_exe().ok()?)
        .env(var, upstream.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take()?)
        .read_line(&mut line)
        .ok()?;
    Some(Target {
        name,
        addr: line.trim().parse().ok()?,
        process: Some(child),
        _dir: None,
    })
}

fn nginx(upstream: SocketAddr) -> Result<Target, String> {
    let exe = which("nginx").ok_or("nginx not installed (apt-get install nginx)")?;
    let dir = TempDir::new("nginx");
    let port = free_port();
    let d = dir.0.display();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  upstream up {{ server {upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_buffering off;
      proxy_read_timeout 300s;
    }}
  }}
}}
"
    );
    let path = dir.0.join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(&dir.0)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    Ok(Target {
        name: NGINX,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        process: Some(child),
        _dir: Some(dir),
    })
}

fn node_http_proxy(upstream: SocketAddr) -> Result<Target, String> {
    let exe = which("node").ok_or("node not installed")?;
    let modules = std::env::var("SGW_LOAD_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/load-node/node_modules")
        });
    if !modules.join("http-proxy").exists() {
        return Err(format!(
            "http-proxy not found in {} (./scripts/load-compare installs it)",
            modules.display()
        ));
    }
    let port = free_port();
    let script = format!(
        "const http = require('http'); const httpProxy = require('http-proxy');
const agent = new http.Agent({{ keepAlive: true, maxSockets: 64 }});
const proxy = httpProxy.createProxyServer({{ target: 'http://{upstream}', agent, ws: true }});
proxy.on('error', (e, req, res) => {{ try {{ res.writeHead(502); res.end(); }} catch (_) {{}} }});
const server = http.createServer((req, res) => proxy.web(req, res));
server.on('upgrade', (req, socket, head) => proxy.ws(req, socket, head));
server.listen({port}, '127.0.0.1');"
    );
    let child = Command::new(exe)
        .arg("-e")
        .arg(script)
        .env("NODE_PATH", &modules)
        .spawn()
        .map_err(|e| e.to_string())?;
    Ok(Target {
        name: NODE,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        process: Some(child),
        _dir: None,
    })
}

fn which(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------------
// The measurements.

#[derive(Default, Clone)]
struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_req: Option<f64>,
    mb_per_s: f64,
    peak_rss_mib: Option<f64>,
    ws_rtt_us: f64,
    /// The proxy's own CPU time per WebSocket round trip (two messages through it).
    ws_cpu_us: Option<f64>,
    sse_ms: f64,
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn wrk_duration(v: &str) -> Option<f64> {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => return None,
    })
}

async fn small_get(addr: SocketAddr) -> Result<(f64, f64, f64, f64), String> {
    let out = tokio::process::Command::new("wrk")
        .args(["-t1", "-c64", &format!("-d{WRK_SECONDS}s"), "--latency"])
        .arg(format!("http://{addr}/small"))
        .output()
        .await
        .map_err(|e| format!("wrk: {e} (apt-get install wrk)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let find = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
    };
    let rps: f64 = find("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .ok_or(format!("wrk said: {text}"))?;
    let p50 = find("50%")
        .and_then(|v| wrk_duration(&v))
        .unwrap_or(f64::NAN);
    let p99 = find("99%")
        .and_then(|v| wrk_duration(&v))
        .unwrap_or(f64::NAN);
    let total: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(rps * f64::from(WRK_SECONDS));
    // A run with failed requests measured something else than the proxy: no figure for it.
    let errors: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Non-2xx") || l.starts_with("Socket errors"))
        .collect();
    if !errors.is_empty() {
        return Err(format!(
            "wrk reported errors against {addr} ({}); no figure",
            errors.join("; ")
        ));
    }
    Ok((rps, p50, p99, total))
}

async fn stream_gib(addr: SocketAddr) -> Result<f64, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let started = Instant::now();
    let res = client
        .get(format!("http://{addr}/big").parse().unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let mut body = res.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            n += data.len() as u64;
        }
    }
    if n != GIB {
        return Err(format!("received {n} of {GIB} bytes"));
    }
    Ok(GIB as f64 / 1e6 / started.elapsed().as_secs_f64())
}

async fn ws_rtt(addr: SocketAddr) -> Result<f64, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .map_err(|e| e.to_string())?;
    let mut rtts = Vec::with_capacity(WS_ROUNDS);
    for round in 0..WS_ROUNDS {
        // Each round's payload is its own, so a stale or altered echo is caught.
        let mut payload = [7u8; 32];
        payload[..8].copy_from_slice(&(round as u64).to_be_bytes());
        let payload = Bytes::copy_from_slice(&payload);
        let t = Instant::now();
        ws.send(Message::Binary(payload.clone()))
            .await
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Binary(echoed)))) if echoed == payload => {
                rtts.push(t.elapsed().as_secs_f64() * 1e6)
            }
            other => return Err(format!("echo of round {round}: {other:?}; no figure")),
        }
    }
    let _ = ws.close(None).await;
    Ok(median(&mut rtts))
}

async fn sse_latency(addr: SocketAddr) -> Result<f64, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let res = client
        .get(format!("http://{addr}/sse").parse().unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let mut body = res.into_body();
    let mut lat = Vec::new();
    let mut buf = String::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let now = epoch().elapsed().as_nanos();
        if let Some(data) = frame.data_ref() {
            buf.push_str(&String::from_utf8_lossy(data));
            while let Some(i) = buf.find("\n\n") {
                let event: String = buf.drain(..i + 2).collect();
                if let Some(at) = event
                    .trim()
                    .strip_prefix("data: ")
                    .and_then(|v| v.parse::<u128>().ok())
                {
                    lat.push((now - at) as f64 / 1e6);
                }
            }
        }
    }
    if lat.len() != SSE_EVENTS {
        return Err(format!("{} of {SSE_EVENTS} events", lat.len()));
    }
    Ok(median(&mut lat))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Each throughput figure is the median of this many runs, so that one run disturbed by the
/// machine does not decide a ratio.
const RUNS: usize = 3;

async fn measure(target: &Target) -> Result<Figures, String> {
    if !wait_listening(target.addr).await {
        return Err("did not start listening".into());
    }
    let pid = target.process.as_ref().map(Child::id);
    let mut gets = Vec::with_capacity(RUNS);
    let mut cpu_per_req = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let cpu_before = pid.and_then(cpu_seconds);
        let (rps, p50_ms, p99_ms, total) = small_get(target.addr).await?;
        if let (Some(after), Some(before)) = (pid.and_then(cpu_seconds), cpu_before) {
            cpu_per_req.push((after - before) / total * 1e6);
        }
        gets.push((rps, p50_ms, p99_ms));
    }
    gets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (rps, p50_ms, p99_ms) = gets[RUNS / 2];
    let cpu_us_per_req = (!cpu_per_req.is_empty()).then(|| median(&mut cpu_per_req));
    let cpu_before = pid.and_then(cpu_seconds);
    let ws_rtt_us = ws_rtt(target.addr).await?;
    let ws_cpu_us = match (pid.and_then(cpu_seconds), cpu_before) {
        (Some(after), Some(before)) => Some((after - before) / WS_ROUNDS as f64 * 1e6),
        _ => None,
    };
    let sse_ms = sse_latency(target.addr).await?;
    let mut streams = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        streams.push(stream_gib(target.addr).await?);
    }
    let mb_per_s = median(&mut streams);
    let peak_rss_mib = pid.and_then(peak_rss_mib);
    Ok(Figures {
        rps,
        p50_ms,
        p99_ms,
        cpu_us_per_req,
        mb_per_s,
        peak_rss_mib,
        ws_rtt_us,
        ws_cpu_us,
        sse_ms,
    })
}

async fn compare() {
    let up = upstream().await;
    let direct = Target {
        name: "direct (the limit)",
        addr: up,
        process: None,
        _dir: None,
    };
    let mut rows: Vec<(&str, Result<Figures, String>)> = Vec::new();
    rows.push((direct.name, measure(&direct).await));
    for (name, var) in [
        (RELAY, "SGW_LOAD_RELAY_UPSTREAM"),
        (BARE, "SGW_LOAD_BARE_UPSTREAM"),
        (OURS, "SGW_LOAD_PROXY_UPSTREAM"),
    ] {
        match this_exe_as(name, var, up) {
            Some(t) => rows.push((t.name, measure(&t).await)),
            None => rows.push((name, Err("could not start".into()))),
        }
    }
    match nginx(up) {
        Ok(t) => rows.push((t.name, measure(&t).await)),
        Err(e) => rows.push((NGINX, Err(e))),
    }
    match node_http_proxy(up) {
        Ok(t) => rows.push((t.name, measure(&t).await)),
        Err(e) => rows.push((NODE, Err(e))),
    }

    let base = rows[0].1.clone().ok();
    println!();
    println!(
        "machine: {} cores, {}; upstream and clients in this process, each proxy in its own on one worker thread",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned()))
            .unwrap_or_default()
    );
    println!();
    println!("| target | small GET req/s (× direct) | p50 / p99 ms | CPU µs/req | 1 GiB MB/s (× direct) | peak RSS MiB | WS RTT µs (× direct) | SSE ms (added) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, figures) in &rows {
        match figures {
            Ok(f) => {
                let ratio = |v: f64, b: Option<f64>| {
                    b.map(|b| format!(" ({:.2}×)", v / b)).unwrap_or_default()
                };
                println!(
                    "| {name} | {:.0}{} | {:.2} / {:.2} | {} | {:.0}{} | {} | {:.0}{} | {:.2} ({:+.2}) |",
                    f.rps,
                    ratio(f.rps, base.as_ref().map(|b| b.rps)),
                    f.p50_ms,
                    f.p99_ms,
                    f.cpu_us_per_req.map(|c| format!("{c:.1}")).unwrap_or("–".into()),
                    f.mb_per_s,
                    ratio(f.mb_per_s, base.as_ref().map(|b| b.mb_per_s)),
                    f.peak_rss_mib.map(|m| format!("{m:.1}")).unwrap_or("–".into()),
                    f.ws_rtt_us,
                    ratio(f.ws_rtt_us, base.as_ref().map(|b| b.ws_rtt_us)),
                    f.sse_ms,
                    f.sse_ms - base.as_ref().map(|b| b.sse_ms).unwrap_or(0.0),
                );
            }
            Err(e) => println!("| {name} | not measured: {e} | | | | | | |"),
        }
    }
    println!();
    println!(
        "median of {RUNS} runs for small GET and 1 GiB; proxy CPU per WebSocket round trip: {}",
        rows.iter()
            .skip(1)
            .filter_map(|(name, f)| {
                let cpu = f.as_ref().ok()?.ws_cpu_us?;
                Some(format!("{name} {cpu:.0} µs"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let get = |name: &str| {
        rows.iter()
            .find(|r| r.0 == name)
            .and_then(|r| r.1.as_ref().ok())
    };
    println!();
    if let (Some(ours), Some(ng), Some(node)) = (get(OURS), get(NGINX), get(NODE)) {
        println!(
            "{OURS} small-GET req/s: {:.2}× nginx, {:.2}× node http-proxy",
            ours.rps / ng.rps,
            ours.rps / node.rps
        );
    }
    for floor in [RELAY, BARE] {
        if let (Some(ours), Some(f)) = (get(OURS), get(floor)) {
            println!(
                "{OURS} against the {floor}: small GET {:.2}×, 1 GiB {:.2}×, WS RTT {:.2}×",
                ours.rps / f.rps,
                ours.mb_per_s / f.mb_per_s,
                ours.ws_rtt_us / f.ws_rtt_us
            );
        }
    }
    if let (Some(bare), Some(ng)) = (get(BARE), get(NGINX)) {
        println!("{BARE} small-GET req/s: {:.2}× nginx", bare.rps / ng.rps);
    }
}
