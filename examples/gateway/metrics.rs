//! `/metrics`: what the gateway counted, in Prometheus text, for loopback peers only.
//!
//! The crate records through the `metrics` facade (with its `metrics` feature); this example installs
//! `metrics-exporter-prometheus` as the recorder and renders it on request, without an HTTP listener
//! of its own.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sandbox_gateway::rewrite::ClientAddr;

/// Buckets of the latency histograms, in seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the Prometheus recorder for the whole process and keeps its histograms trimmed.
pub fn install() -> Result<PrometheusHandle, Box<dyn std::error::Error>> {
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// `GET /metrics`, answered to loopback peers (the `ClientAddr` the server put on the request);
/// every other peer gets `403`.
pub fn route(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move |req: Request| {
            let handle = handle.clone();
            async move { render(&handle, &req) }
        }),
    )
}

fn render(handle: &PrometheusHandle, req: &Request) -> Response {
    let loopback = req
        .extensions()
        .get::<ClientAddr>()
        .is_some_and(|ClientAddr(peer)| peer.ip().to_canonical().is_loopback());
    if !loopback {
        return (
            StatusCode::FORBIDDEN,
            "metrics are served to loopback peers only\n",
        )
            .into_response();
    }
    let mut body = String::new();
    if !cfg!(feature = "metrics") {
        body.push_str(
            "# built without the `metrics` feature of sandbox-gateway: the gateway records nothing\n\
             # (cargo run --example gateway --features metrics)\n",
        );
    }
    body.push_str(&handle.render());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
