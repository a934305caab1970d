//! Routing over real sockets: `HostRoute` with captures of the embedder's own, `PathMount` in
//! each style, and both reaching a dev server over HTTPS with `upstream_https`.
#![cfg(feature = "tls")]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sandbox_gateway::connect::Connector;
use sandbox_gateway::proxy::ReverseProxy;
use sandbox_gateway::route::{
    Captures, HostPattern, HostRoute, MountStyle, PathMount, Resolve, RouteError, RouteLayer,
    Upstream,
};
use support::{client, empty, full, serve, serve_fn, text, within};
use tokio_rustls::rustls;
use tower::Layer;

/// An upstream answering `{tag} {path and query}`.
async fn tagged(tag: &'static str) -> SocketAddr {
    serve_fn(move |req: Request<Incoming>| async move {
        let pq = req.uri().path_and_query().map(|p| p.to_string());
        Response::new(full(format!("{tag} {}", pq.unwrap_or_default())))
    })
    .await
}

/// The same over TLS (a self-signed `localhost` certificate, HTTP/1.1); returns its address and
/// the certificate to trust.
async fn tagged_tls(tag: &'static str) -> (SocketAddr, Vec<u8>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        ck.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let pq = req.uri().path_and_query().map(|p| p.to_string());
                    Ok::<_, std::convert::Infallible>(Response::new(full(format!(
                        "{tag} {}",
                        pq.unwrap_or_default()
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, cert.to_vec())
}

/// A gateway routing with `resolver` to a proxy that trusts `root` (if any).
async fn gateway<R>(resolver: R, root: Option<Vec<u8>>) -> SocketAddr
where
    R: Resolve + Clone + Send + 'static,
    R::Future: Send,
{
    let mut connector = Connector::builder();
    if let Some(root) = root {
        connector = connector.add_root_certificate(root);
    }
    let proxy = ReverseProxy::builder()
        .connector(connector)
        .response_timeout(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    serve(RouteLayer::new(resolver).layer(proxy)).await
}

/// GET `path` from the gateway with `host` as Host: the status and the body.
async fn get(gw: SocketAddr, host: &str, path: &str) -> (StatusCode, String) {
    let req = Request::get(format!("http://{gw}{path}"))
        .header(header::HOST, host)
        .body(empty())
        .unwrap();
    let res = within(10, client().request(req)).await.unwrap();
    let status = res.status();
    (status, text(res).await)
}

#[tokio::test]
async fn host_route_maps_custom_captures_to_an_upstream() {
    let alpha = tagged("alpha").await;
    let beta = tagged("beta").await;
    // `{app}--{user}.apps.test` → a table of the embedder's own.
    let route = HostRoute::new(
        "{app}--{user}.apps.test".parse::<HostPattern>().unwrap(),
        move |c: &Captures| {
            let addr = match (c.get("app"), c.get("user")) {
                (Some("shop"), Some("ann")) => alpha,
                (Some("blog"), Some("bob")) => beta,
                _ => return Err(RouteError::NotFound),
            };
            format!("http://{addr}/base").parse::<Upstream>()
        },
    );
    let gw = gateway(route, None).await;
    assert_eq!(
        get(gw, "shop--ann.apps.test", "/a?b=1").await,
        (StatusCode::OK, "alpha /base/a?b=1".into())
    );
    assert_eq!(
        get(gw, "BLOG--bob.apps.test", "/").await,
        (StatusCode::OK, "beta /base/".into())
    );
    // Captures the map does not know, and hosts the pattern does not match.
    for host in [
        "shop--bob.apps.test",
        "shop.apps.test",
        "shop--ann.apps.test.evil",
    ] {
        let (status, _) = get(gw, host, "/").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{host}");
    }
}

#[tokio::test]
async fn path_mount_with_style_strips_or_keeps_the_prefix() {
    let up = tagged("dev").await;
    let p = up.port();
    for (style, expected) in [
        (MountStyle::Strip, "dev /x?y=1".to_owned()),
        (MountStyle::Keep, format!("dev /mnt/{p}/x?y=1")),
    ] {
        let mount = PathMount::with_style("/mnt", style)
            .upstream_host("127.0.0.1")
            .allow_port(p);
        let gw = gateway(mount, None).await;
        assert_eq!(
            get(gw, "localhost", &format!("/mnt/{p}/x?y=1")).await,
            (StatusCode::OK, expected),
            "{style:?}"
        );
    }
}

/// `upstream_https` on both routes: the dev server is reached over TLS (and, without it, the
/// proxy speaks plain HTTP to the TLS server, which fails).
#[tokio::test]
async fn upstream_https_reaches_a_tls_dev_server() {
    let (up, cert) = tagged_tls("tls").await;
    let p = up.port();

    let by_host = || {
        HostRoute::ports("{port}.localhost".parse::<HostPattern>().unwrap(), "port")
            .unwrap()
            .allow_port(p)
    };
    let gw = gateway(by_host().upstream_https(), Some(cert.clone())).await;
    assert_eq!(
        get(gw, &format!("{p}.localhost"), "/h").await,
        (StatusCode::OK, "tls /h".into())
    );
    let gw = gateway(by_host(), Some(cert.clone())).await;
    assert_eq!(
        get(gw, &format!("{p}.localhost"), "/h").await.0,
        StatusCode::BAD_GATEWAY
    );

    let by_path = || PathMount::strip("/proxy").allow_port(p);
    let gw = gateway(by_path().upstream_https(), Some(cert.clone())).await;
    assert_eq!(
        get(gw, "localhost", &format!("/proxy/{p}/m")).await,
        (StatusCode::OK, "tls /m".into())
    );
    let gw = gateway(by_path(), Some(cert)).await;
    assert_eq!(
        get(gw, "localhost", &format!("/proxy/{p}/m")).await.0,
        StatusCode::BAD_GATEWAY
    );
}
