//! The `gateway` example's API route, run as its own process: the `curl` command it prints at
//! start-up works verbatim (it fetches a token from the host's route, then streams the demo
//! API's answer with it), and the same call without a token is refused before the demo API.
#![cfg(all(feature = "auth", feature = "forward", feature = "tls"))]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::{header, Request, StatusCode};
use support::{client, full, within};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_printed_curl_command_streams_with_a_token_and_nothing_without() {
    let bin = support::example_binary("gateway");
    assert!(bin.exists(), "{} not built", bin.display());
    let mut child = Command::new(&bin)
        .args(["--listen", "127.0.0.1:0", "--demo-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the gateway example");
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
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
    let mut command = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while command.is_none() && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        if line.contains("/api/proxy/demo-llm/") {
            command = Some(line.trim().to_owned());
        }
    }
    let command = command.expect("the example prints its API command");
    assert!(command.starts_with("curl "), "{command}");

    // The command as printed, in a shell.
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("sh")
            .args(["-c", &command])
            .stderr(Stdio::null())
            .output(),
    )
    .await
    .expect("the command finished in time")
    .expect("sh and curl are installed");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{command}: {body}");
    let events: Vec<&str> = body.lines().filter(|l| l.starts_with("data: ")).collect();
    assert_eq!(
        events.first(),
        Some(&r#"data: {"token":"Hello"}"#),
        "{body}"
    );
    assert_eq!(events.last(), Some(&"data: [DONE]"), "{body}");

    // Without the token: 401, as JSON.
    let url = command
        .split_whitespace()
        .find(|w| w.contains("/api/proxy/demo-llm/"))
        .unwrap()
        .to_owned();
    let req = Request::post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full("{}"))
        .unwrap();
    let res = within(10, client().request(req)).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(support::text(res)
        .await
        .contains(r#""type":"unauthorized""#));
    drop(running);
}
