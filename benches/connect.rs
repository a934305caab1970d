//! Connection set-up cost: the [`Connector`] dialling `localhost:{port}` (resolved without DNS to
//! `::1` then `127.0.0.1`) against a direct `TcpStream::connect` to the address the server listens
//! on, for a server on `[::1]` only (the first address wins) and on `127.0.0.1` only (`::1` is refused
//! first, then `127.0.0.1` is dialled at once).
//!
//! `cargo bench --bench connect -- --warm-up-time 1 --measurement-time 3`

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sandbox_gateway::connect::Connector;
use tokio::net::{TcpListener, TcpStream};
use tower::{Service, ServiceExt};

/// A listener that accepts and drops every connection, so its queue never fills.
async fn sink(ip: std::net::IpAddr, port: u16) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::new(ip, port)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    Ok(addr)
}

/// A port free on `::1` (so that a `localhost` dial is refused there) with a sink on 127.0.0.1.
async fn ipv4_only_sink() -> SocketAddr {
    for _ in 0..20 {
        let probe = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1");
        let port = probe.local_addr().expect("local address").port();
        if std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, port)).is_err() {
            continue;
        }
        drop(probe);
        if let Ok(addr) = sink(Ipv4Addr::LOCALHOST.into(), port).await {
            return addr;
        }
    }
    panic!("no port free on both loopbacks");
}

fn connect(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let connector = Connector::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("connector");
    let v6 = rt
        .block_on(sink(Ipv6Addr::LOCALHOST.into(), 0))
        .expect("bind [::1]");
    let v4 = rt.block_on(ipv4_only_sink());

    let mut group = c.benchmark_group("connect");
    for (name, addr) in [("ipv6_only_listener", v6), ("ipv4_only_listener", v4)] {
        let uri: http::Uri = format!("http://localhost:{}", addr.port())
            .parse()
            .expect("uri");
        group.bench_function(format!("{name}/connector_localhost"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut svc = connector.clone();
                    let stream = svc
                        .ready()
                        .await
                        .expect("ready")
                        .call(uri.clone())
                        .await
                        .expect("connected");
                    drop(stream);
                })
            })
        });
        group.bench_function(format!("{name}/direct_tcp"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let stream = TcpStream::connect(addr).await.expect("connected");
                    stream.set_nodelay(true).expect("nodelay");
                    drop(stream);
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, connect);
criterion_main!(benches);
