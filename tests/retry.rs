//! The keep-alive race: an upstream that closes a reused connection as a request lands on it. An
//! idempotent request is sent once more on a fresh connection; a POST never is, and nothing is
//! sent again once response bytes came back.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use sandbox_gateway::proxy::ReverseProxy;
use sandbox_gateway::route::Upstream;
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

#[derive(Clone, Copy)]
enum Second {
    /// Close without a byte.
    Close,
    /// Send the start of a status line, then close.
    Partial,
}

/// What the upstream saw: (connection number, method, path) per request.
type Seen = Arc<Mutex<Vec<(usize, String, String)>>>;

/// A raw HTTP/1.1 upstream: the first request on each connection is answered (kept alive), the
/// second is read whole and then answered by `second`.
async fn racing_upstream(second: Second) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        for conn in 0..100 {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                for n in 0..2 {
                    let Some((method, path)) = read_request(&mut stream).await else {
                        return;
                    };
                    log.lock().unwrap().push((conn, method, path));
                    if n == 0 {
                        let answer = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfresh";
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    } else {
                        if let Second::Partial = second {
                            let _ = stream.write_all(b"HTTP/1.1 200 O").await;
                            let _ = stream.flush().await;
                        }
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Reads one request (head and `content-length` body); its method and path.
async fn read_request(stream: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut words = head.split_whitespace();
    Some((words.next()?.to_owned(), words.next()?.to_owned()))
}

fn proxy_to(addr: SocketAddr) -> ReverseProxy {
    ReverseProxy::builder()
        .upstream(format!("http://{addr}").parse::<Upstream>().unwrap())
        .build()
        .unwrap()
}

async fn send(
    proxy: &ReverseProxy,
    method: Method,
    path: &str,
    body: &'static str,
) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let res = within(10, proxy.clone().oneshot(req)).await.unwrap();
    let status = res.status();
    let body = within(10, res.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn seen_of(seen: &Seen) -> Vec<(usize, String, String)> {
    seen.lock().unwrap().clone()
}

#[tokio::test]
async fn a_get_on_a_reused_connection_closed_under_it_is_sent_again_on_a_new_one() {
    let (up, seen) = racing_upstream(Second::Close).await;
    let proxy = proxy_to(up);
    assert_eq!(
        send(&proxy, Method::GET, "/a", "").await,
        (StatusCode::OK, "fresh".into())
    );
    // The pooled connection is reused, and the upstream closes it as this request lands.
    assert_eq!(
        send(&proxy, Method::GET, "/b", "").await,
        (StatusCode::OK, "fresh".into())
    );
    assert_eq!(
        seen_of(&seen),
        vec![
            (0, "GET".into(), "/a".into()),
            (0, "GET".into(), "/b".into()),
            (1, "GET".into(), "/b".into()),
        ],
        "sent once more, on a new connection"
    );
}

#[tokio::test]
async fn put_and_delete_without_a_body_are_sent_again_too() {
    for method in [Method::PUT, Method::DELETE, Method::HEAD] {
        let (up, seen) = racing_upstream(Second::Close).await;
        let proxy = proxy_to(up);
        assert_eq!(send(&proxy, Method::GET, "/a", "").await.0, StatusCode::OK);
        assert_eq!(
            send(&proxy, method.clone(), "/b", "").await.0,
            StatusCode::OK,
            "{method}"
        );
        assert_eq!(seen_of(&seen).len(), 3, "{method}: sent again once");
    }
}

#[tokio::test]
async fn a_post_is_never_sent_twice() {
    let (up, seen) = racing_upstream(Second::Close).await;
    let proxy = proxy_to(up);
    assert_eq!(send(&proxy, Method::GET, "/a", "").await.0, StatusCode::OK);
    let (status, message) = send(&proxy, Method::POST, "/order", "pay=1").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        message.contains("closed the connection before answering"),
        "{message}"
    );
    let posts = seen_of(&seen)
        .into_iter()
        .filter(|(_, m, _)| m == "POST")
        .count();
    assert_eq!(posts, 1, "the upstream saw the POST once");
}

#[tokio::test]
async fn a_put_with_a_body_is_never_sent_twice() {
    let (up, seen) = racing_upstream(Second::Close).await;
    let proxy = proxy_to(up);
    assert_eq!(send(&proxy, Method::GET, "/a", "").await.0, StatusCode::OK);
    let (status, _) = send(&proxy, Method::PUT, "/file", "contents").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(seen_of(&seen).len(), 2, "the PUT went out once");
}

#[tokio::test]
async fn nothing_is_sent_again_after_response_bytes() {
    let (up, seen) = racing_upstream(Second::Partial).await;
    let proxy = proxy_to(up);
    assert_eq!(send(&proxy, Method::GET, "/a", "").await.0, StatusCode::OK);
    let (status, _) = send(&proxy, Method::GET, "/b", "").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        seen_of(&seen),
        vec![
            (0, "GET".into(), "/a".into()),
            (0, "GET".into(), "/b".into())
        ],
        "a response had begun: the GET is not sent again"
    );
}
