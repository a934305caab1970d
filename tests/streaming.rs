//! 1 GiB up and 1 GiB down through the proxy with flat memory: bodies stream, nothing buffers.
//!
//! Its own test binary, so the peak-RSS reading (`VmHWM`) sees only this test.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use sandbox_gateway::proxy::ReverseProxy;
use support::*;

const GIB: u64 = 1 << 30;
const CHUNK: usize = 64 * 1024;

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM line")
}

/// A body of `total` bytes made of one shared chunk, so the sender allocates nothing per chunk.
fn generated(total: u64) -> TestBody {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let n = total / CHUNK as u64;
    let stream = futures_util::stream::iter(
        (0..n).map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone()))),
    );
    StreamBody::new(stream).boxed_unsync()
}

async fn count(mut body: Incoming) -> Result<u64, hyper::Error> {
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame?.into_data() {
            n += d.len() as u64;
        }
    }
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_each_way_with_flat_memory() {
    let up = serve(tower::service_fn(|req: Request<Incoming>| async move {
        let res = if req.uri().path() == "/sink" {
            let n = count(req.into_body()).await.unwrap_or(0);
            Response::new(full(n.to_string()))
        } else {
            let mut res = Response::new(generated(GIB));
            res.headers_mut()
                .insert("content-length", GIB.to_string().parse().unwrap());
            res
        };
        Ok::<_, Infallible>(res)
    }))
    .await;
    let proxy = ReverseProxy::builder()
        .upstream(format!("http://{up}").parse().unwrap())
        .build()
        .unwrap();
    let gw = serve(proxy).await;
    let c = client();

    // Warm up every path once so allocator pools and connection buffers are in place.
    let res = c
        .request(
            Request::post(format!("http://{gw}/sink"))
                .body(generated(CHUNK as u64 * 16))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(text(res).await, (CHUNK * 16).to_string());
    let before = vm_hwm_kib();

    let up_res = within(
        300,
        c.request(
            Request::post(format!("http://{gw}/sink"))
                .body(generated(GIB))
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(up_res.status(), StatusCode::OK);
    assert_eq!(text(up_res).await, GIB.to_string(), "upload arrived whole");

    let down = within(
        300,
        c.request(
            Request::get(format!("http://{gw}/source"))
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(down.status(), StatusCode::OK);
    let n = within(300, count(down.into_body())).await.unwrap();
    assert_eq!(n, GIB, "download arrived whole");

    let grown_mib = (vm_hwm_kib().saturating_sub(before)) / 1024;
    eprintln!("peak RSS grew by {grown_mib} MiB while streaming 2 GiB");
    assert!(
        grown_mib < 64,
        "memory grew with body size: +{grown_mib} MiB"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}
