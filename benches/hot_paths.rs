//! The per-request hot paths, each driven through its public `Service` with an inner service that
//! answers at once, so the figure is the layer's own cost: the CORS decision (preflight and actual
//! request), route resolution (path mount and host pattern), request and response header
//! rewriting under a mount, and token verification.
//!
//! `cargo bench --bench hot_paths -- --warm-up-time 1 --measurement-time 3`

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use sandbox_gateway::auth::{Audience, TokenSigner};
use sandbox_gateway::cors::{AllowOrigin, CorsLayer};
use sandbox_gateway::rewrite::{ClientAddr, RewriteLayer};
use sandbox_gateway::route::{HostPattern, HostRoute, PathMount, RouteLayer, Target};
use tower::{service_fn, Layer, Service, ServiceExt};

type Body = Full<Bytes>;

fn ok(_: Request<Body>) -> std::future::Ready<Result<Response<Body>, Infallible>> {
    std::future::ready(Ok(Response::new(Body::default())))
}

/// An inner service that reports whether a target was resolved (so the work cannot be skipped).
fn target_seen(req: Request<Body>) -> std::future::Ready<Result<Response<Body>, Infallible>> {
    let status = if req.extensions().get::<Target>().is_some() {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let mut res = Response::new(Body::default());
    *res.status_mut() = status;
    std::future::ready(Ok(res))
}

/// Drives one call to completion on a current-thread runtime (every future here is ready at once
/// or nearly so).
fn call<S>(svc: &mut S, req: Request<Body>) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime");
    }
    RT.with(|rt| {
        rt.block_on(async {
            let svc = svc.ready().await.unwrap_or_else(|e| match e {});
            svc.call(req).await.unwrap_or_else(|e| match e {})
        })
    })
}

fn cors(c: &mut Criterion) {
    let layer = CorsLayer::builder()
        .allow_origin(AllowOrigin::list(["https://*.webcontainer-api.io"]))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .allow_credentials(true)
        .max_age(Duration::from_secs(600))
        .build()
        .expect("valid CORS configuration");
    let mut svc = layer.layer(service_fn(ok));
    const ORIGIN: &str = "https://k3x.local-credentialless.webcontainer-api.io";
    c.bench_function("cors/preflight", |b| {
        b.iter(|| {
            let req = Request::options("/api/proxy/llm")
                .header(header::ORIGIN, ORIGIN)
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header(
                    header::ACCESS_CONTROL_REQUEST_HEADERS,
                    "authorization, content-type",
                )
                .body(Body::default())
                .unwrap();
            let res = call(&mut svc, req);
            assert_eq!(res.status(), StatusCode::NO_CONTENT);
        })
    });
    c.bench_function("cors/actual_request", |b| {
        b.iter(|| {
            let req = Request::post("/api/proxy/llm")
                .header(header::ORIGIN, ORIGIN)
                .body(Body::default())
                .unwrap();
            let res = call(&mut svc, req);
            assert!(res
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        })
    });
}

fn route(c: &mut Criterion) {
    let mut by_path = RouteLayer::new(PathMount::strip("/proxy").allow_ports([5173, 3000]))
        .layer(service_fn(target_seen));
    c.bench_function("route/path_mount", |b| {
        b.iter(|| {
            let req = Request::get("/proxy/5173/src/main.tsx?t=1700000000")
                .header(header::HOST, "127.0.0.1:8080")
                .body(Body::default())
                .unwrap();
            assert_eq!(call(&mut by_path, req).status(), StatusCode::OK);
        })
    });
    let pattern: HostPattern = "{port}.localhost".parse().expect("valid pattern");
    let host_route = HostRoute::ports(pattern, "port")
        .expect("pattern has the capture")
        .allow_ports([5173]);
    let mut by_host = RouteLayer::new(host_route).layer(service_fn(target_seen));
    c.bench_function("route/host_pattern", |b| {
        b.iter(|| {
            let req = Request::get("/src/main.tsx")
                .header(header::HOST, "5173.localhost:8080")
                .body(Body::default())
                .unwrap();
            assert_eq!(call(&mut by_host, req).status(), StatusCode::OK);
        })
    });
}

fn rewrite(c: &mut Criterion) {
    // The upstream redirects to its login page and sets two cookies: what a mount must map back.
    let upstream = service_fn(|_req: Request<Body>| {
        let res = Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, "/login?next=%2F")
            .header(header::SET_COOKIE, "sid=abc; Path=/; HttpOnly")
            .header(header::SET_COOKIE, "theme=dark; Domain=localhost")
            .body(Body::default())
            .unwrap();
        std::future::ready(Ok::<_, Infallible>(res))
    });
    let mut svc = RewriteLayer::new().layer(upstream);
    let peer = ClientAddr("127.0.0.1:50000".parse().unwrap());
    c.bench_function("rewrite/request_and_response_under_mount", |b| {
        b.iter(|| {
            let target = Target::new(
                http::uri::Scheme::HTTP,
                "localhost:5173".parse().unwrap(),
                "/dashboard".parse().unwrap(),
            )
            .with_mount("/proxy/5173");
            let mut req = Request::get("/proxy/5173/dashboard")
                .header(header::HOST, "127.0.0.1:8080")
                .header(header::ORIGIN, "http://127.0.0.1:8080")
                .header("x-forwarded-for", "6.6.6.6")
                .body(Body::default())
                .unwrap();
            req.extensions_mut().insert(target);
            req.extensions_mut().insert(peer);
            let res = call(&mut svc, req);
            assert_eq!(
                res.headers()[header::LOCATION],
                "/proxy/5173/login?next=%2F"
            );
        })
    });
}

fn token(c: &mut Criterion) {
    let signer = TokenSigner::new([42u8; 32]).expect("32-byte key");
    let token = signer
        .sign("demo", Audience::Cookie, Duration::from_secs(3600))
        .expect("token issued");
    c.bench_function("auth/verify_cookie_token", |b| {
        b.iter(|| {
            let claims = signer
                .verify(&token, "demo", Audience::Cookie)
                .expect("valid token");
            assert_eq!(claims.sandbox_id(), "demo");
        })
    });
    let last = if token.ends_with('A') { 'B' } else { 'A' };
    let tampered = format!("{}{last}", &token[..token.len() - 1]);
    c.bench_function("auth/refuse_tampered_token", |b| {
        b.iter(|| assert!(signer.verify(&tampered, "demo", Audience::Cookie).is_err()))
    });
}

criterion_group!(benches, cors, route, rewrite, token);
criterion_main!(benches);
