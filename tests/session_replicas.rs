//! Two gateway processes sharing revocations in Redis.
//!
//! This test has no libtest harness: run as `session_replicas`, it starts `redis-server`, a
//! sandbox, and itself twice more as gateway processes (`session_replicas --gateway REDIS_URL
//! SANDBOX`), each with its own connection to Redis and a refresh interval of [`REFRESH`]. It opens
//! a WebSocket through the second gateway, revokes the session's subject on the first, and checks
//! that the second refuses the next request and closes the WebSocket within the stated bound. A
//! gateway process serves until its standard input closes (the parent holds it), at most two
//! minutes.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandbox_gateway::auth::{RedisRevocationStore, RevocationStore};
use support::redis::RedisServer;
use support::replica::{self, announce, Replica};
use support::sessions::{closed_within, gateway, open_ws, sandbox, session, status};
use support::{client, empty};

/// How often each gateway reads the revocations of the others: the stated bound (plus a Redis
/// round trip) within which a revocation holds on every replica.
const REFRESH: Duration = Duration::from_millis(250);
const HOUR: Duration = Duration::from_secs(3600);

fn main() {
    replica::main(
        "a_revocation_on_one_replica_holds_on_the_other",
        |redis_url, addr| async move { gateway_process(&redis_url, addr).await },
        a_revocation_on_one_replica_holds_on_the_other,
    );
}

/// One gateway process: the session gateway with its own Redis revocation store.
async fn gateway_process(redis_url: &str, sandbox: SocketAddr) {
    let store = RedisRevocationStore::connect(redis_url, HOUR)
        .await
        .unwrap()
        .refresh_every(REFRESH);
    let store: Arc<dyn RevocationStore> = Arc::new(store);
    let addr = gateway(store, sandbox, HOUR).await;
    announce(addr).await;
}

fn spawn_gateway(redis_url: &str, sandbox: SocketAddr) -> Replica {
    Replica::spawn(&["--gateway", redis_url, &sandbox.to_string()])
}

async fn a_revocation_on_one_replica_holds_on_the_other() {
    let redis = RedisServer::start().await;
    let sandbox = sandbox().await;
    let a = spawn_gateway(&redis.url, sandbox);
    let b = spawn_gateway(&redis.url, sandbox);

    let (u1, u2) = (session("demo", "u1", HOUR), session("demo", "u2", HOUR));
    for gw in [a.addr, b.addr] {
        assert_eq!(status(gw, "demo", &u1).await, 200);
    }
    let mut ws_b = open_ws(b.addr, "demo", &u1).await;
    let mut other_b = open_ws(b.addr, "demo", &u2).await;

    let req = http::Request::post(format!("http://{}/revoke/subject/u1", a.addr))
        .body(empty())
        .unwrap();
    let revoked_at = Instant::now();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    // On the replica that revoked: at once.
    assert_eq!(status(a.addr, "demo", &u1).await, 403);
    // On the other: the WebSocket closes within the bound (refresh + round trip; 4 s allowed
    // for a loaded machine), and the next request is refused.
    closed_within(&mut ws_b, 4).await.unwrap();
    let waited = revoked_at.elapsed();
    assert_eq!(status(b.addr, "demo", &u1).await, 403);
    println!("replica b closed the revoked tunnel {waited:?} after the revocation");
    // The other subject's session and tunnel live on, on both.
    assert_eq!(status(a.addr, "demo", &u2).await, 200);
    assert_eq!(status(b.addr, "demo", &u2).await, 200);
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    other_b.send(Message::Text("still".into())).await.unwrap();
    let reply = support::within(10, other_b.next()).await.unwrap().unwrap();
    assert_eq!(reply, Message::Text("echo:still".into()));

    // A replica started after the revocation reads it at start-up.
    let c = spawn_gateway(&redis.url, sandbox);
    assert_eq!(status(c.addr, "demo", &u1).await, 403);
    assert_eq!(status(c.addr, "demo", &u2).await, 200);
}
