//! Headless Chromium over WebDriver for the browser suites: chromedriver in a process group of
//! its own, killed with its browsers on drop; each browser with its own profile (so its own cookie
//! jar), reaching loopback only.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// How long a browser gets to start.
const START: Duration = Duration::from_secs(20);

/// chromedriver, and the browsers it started.
pub struct Driver {
    child: Child,
    url: String,
    _profiles: Vec<TempDir>,
}

impl Driver {
    /// Starts chromedriver on a free loopback port; panics (with how to install it) when missing.
    pub async fn start() -> Driver {
        let exe = which("chromedriver").unwrap_or_else(|| {
            panic!(
                "chromedriver not found: install Debian's chromium and chromium-driver \
                 (./scripts/test does) to run the browser suite"
            )
        });
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut cmd = Command::new(exe);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("BROWSER_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let child = cmd.spawn().expect("spawn chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let driver = Driver {
            child,
            url,
            _profiles: Vec::new(),
        };
        // Wait until it accepts connections, bounded.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start listening within 10 s");
    }

    /// A fresh browser: its own profile, so its own cookie jar.
    pub async fn browser(&mut self) -> Client {
        self.browser_with(&[]).await
    }

    /// A fresh browser started with `extra` command-line switches too.
    pub async fn browser_with(&mut self, extra: &[&str]) -> Client {
        let profile = TempDir::new("profile");
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--window-size=1280,900".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-popup-blocking".to_owned(),
            // Loopback only: everything else goes to a proxy on a closed loopback port, so
            // Chromium neither resolves nor reaches any other host (loopback bypasses proxies).
            "--proxy-server=http://127.0.0.1:9".to_owned(),
            "--no-pings".to_owned(),
            "--disable-domain-reliability".to_owned(),
            "--disable-client-side-phishing-detection".to_owned(),
            "--disable-default-apps".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-breakpad".to_owned(),
            "--safebrowsing-disable-auto-update".to_owned(),
            "--metrics-recording-only".to_owned(),
            format!("--user-data-dir={}", profile.path.display()),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        if std::env::var_os("BROWSER_LOG").is_some() {
            args.push("--enable-logging=stderr".to_owned());
        }
        let mut options = json!({ "args": args });
        if let Some(bin) = which("chromium") {
            options["binary"] = json!(bin.display().to_string());
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".to_owned(), options);
        self._profiles.push(profile);
        let client = tokio::time::timeout(
            START,
            ClientBuilder::new(HttpConnector::new())
                .capabilities(caps)
                .connect(&self.url),
        )
        .await
        .expect("starting Chromium timed out")
        .expect("start a Chromium session");
        client
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and every Chromium it started. `--` keeps the negative
        // group id from being read as an option (`kill -KILL -N` can mean every process).
        let group = self.child.id();
        if group > 1 {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{group}")])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory under the system's temporary one, removed on drop.
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "sgw-browser-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `name` found on `PATH`.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}
