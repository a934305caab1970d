//! The doctor against the `gateway` example itself, run as its own process: every check passes.
#![cfg(all(feature = "doctor", feature = "auth", feature = "forward"))]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sandbox_gateway::doctor::Probe;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `target/debug/examples/gateway`, built by `cargo test` along with the tests (run alone with
/// `--test doctor_gateway`, build it first: `cargo build --all-features --example gateway`).
fn gateway_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("examples")
        .join(format!("gateway{}", std::env::consts::EXE_SUFFIX))
}

#[tokio::test]
async fn the_gateway_example_passes_every_check() {
    let bin = gateway_binary();
    assert!(bin.exists(), "{} not built", bin.display());
    let mut child = Command::new(&bin)
        .args(["--listen", "127.0.0.1:0", "--demo-port", "0"])
        .args(["--allow-origin", "https://app.example"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the gateway example");
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);

    // Its start-up lines name the demo sandbox and the gateway.
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
    let (mut demo_port, mut gateway) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while (demo_port.is_none() || gateway.is_none()) && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        if let Some(rest) = line.strip_prefix("demo sandbox (dev server) on http://[::1]:") {
            demo_port = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(rest) = line.strip_prefix("gateway on ") {
            gateway = Some(rest.trim().to_owned());
        }
    }
    let (demo_port, gateway) = (
        demo_port.expect("the example names its demo port"),
        gateway.expect("the example names its address"),
    );

    let report = Probe::builder(format!("{gateway}/"))
        .origin("https://app.example")
        .api_path("/api/proxy/demo-llm/chat/completions")
        .preflight_headers(["content-type"])
        .sse_path(format!("/proxy/{demo_port}/events"))
        .ws_path(format!("/proxy/{demo_port}/ws"))
        .build()
        .unwrap()
        .run()
        .await;
    assert!(!report.failed(), "{report}");
    let text = report.to_string();
    assert!(
        text.lines().all(|l| l.starts_with("ok")),
        "every check passes:\n{text}"
    );
    drop(running);
}
