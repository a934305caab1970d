//! The `gateway` example run as its own process, as a user runs it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `gateway` example, killed on drop.
pub struct Gateway {
    child: Child,
    /// `http://127.0.0.1:{port}`, as it prints it.
    pub url: String,
    /// The demo sandbox's port (started or not).
    pub demo_port: u16,
}

/// `target/debug/examples/gateway`, built by `cargo test` along with the tests (run a test alone
/// with `--test NAME`: build it first with `cargo build --all-features --example gateway`).
pub fn binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("examples")
        .join(format!("gateway{}", std::env::consts::EXE_SUFFIX))
}

impl Gateway {
    /// Starts it with `args` after `--listen 127.0.0.1:0`, and reads its address and demo port
    /// from its start-up lines (within 30 s).
    pub fn start(args: &[&str]) -> Gateway {
        let bin = binary();
        assert!(bin.exists(), "{} not built", bin.display());
        let mut child = Command::new(&bin)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the gateway example");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Read to the end (the process's), so that its later lines never meet a closed pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut demo_port, mut url) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while (demo_port.is_none() || url.is_none()) && Instant::now() < deadline {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else {
                continue;
            };
            if let Some(rest) = line
                .strip_prefix("demo sandbox (dev server) on http://[::1]:")
                .or_else(|| line.strip_prefix("demo sandbox not started (--no-demo); its port is "))
            {
                demo_port = rest.split_whitespace().next().and_then(|p| p.parse().ok());
            }
            if let Some(rest) = line.strip_prefix("gateway on ") {
                url = Some(rest.trim().to_owned());
            }
        }
        let (Some(url), Some(demo_port)) = (url, demo_port) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the example named no address or demo port within 30 s");
        };
        Gateway {
            child,
            url,
            demo_port,
        }
    }

    /// `host:port` of the gateway.
    pub fn authority(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
