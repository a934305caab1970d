//! A request body trickled below the proxy's minimum upload rate is cut off with 408; a slow but
//! steady one passes.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sandbox_gateway::proxy::ReverseProxy;
use sandbox_gateway::route::Upstream;
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The proxy (at least 1000 bytes/s after a 1 s grace) in front of an upstream that reads the
/// whole body and says how long it was.
async fn gateway() -> SocketAddr {
    let up = support::echo_upstream("127.0.0.1:0").await;
    let proxy = ReverseProxy::builder()
        .upstream(format!("http://{up}").parse::<Upstream>().unwrap())
        .min_upload_rate(Some(1000))
        .upload_grace(Duration::from_secs(1))
        .build()
        .unwrap();
    support::serve(proxy).await
}

/// Sends a POST head announcing `len` bytes, then `pieces` of `piece` bytes `every` apart; returns
/// the answer's status line and body, and when it came.
async fn upload(gw: SocketAddr, len: usize, piece: usize, every: Duration) -> (String, Duration) {
    let mut stream = TcpStream::connect(gw).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let start = Instant::now();
    let (mut r, mut w) = stream.into_split();
    let sender = tokio::spawn(async move {
        let mut sent = 0;
        while sent < len {
            let n = piece.min(len - sent);
            if w.write_all(&vec![b'u'; n]).await.is_err() {
                return;
            }
            sent += n;
            tokio::time::sleep(every).await;
        }
    });
    let mut got = Vec::new();
    within(20, async {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let when = start.elapsed();
    sender.abort();
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or("").to_owned();
    (format!("{status}\n{body}"), when)
}

#[tokio::test]
async fn a_trickled_upload_is_cut_off_with_408() {
    let gw = gateway().await;
    // One byte every 200 ms: 5 bytes/s, far below 1000.
    let (answer, after) = upload(gw, 100_000, 1, Duration::from_millis(200)).await;
    assert_eq!(
        answer,
        "HTTP/1.1 408 Request Timeout\nthe request body arrived slower than 1000 bytes/s; the upload was cut off\n"
    );
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(4),
        "answered after {after:?}; the grace is 1 s"
    );
}

#[tokio::test]
async fn a_slow_but_steady_upload_passes() {
    let gw = gateway().await;
    // 600 bytes every 300 ms (2000 bytes/s) for 3 s: three times the grace, above the rate.
    let (answer, _) = upload(gw, 6000, 600, Duration::from_millis(300)).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\n"), "{answer}");
    assert!(answer.contains("\"body_len\":6000"), "{answer}");
}

#[test]
fn a_zero_rate_is_refused() {
    assert!(ReverseProxy::builder()
        .min_upload_rate(Some(0))
        .build()
        .is_err());
}
