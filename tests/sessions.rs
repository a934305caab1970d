//! IDE sessions that end, over real sockets: a tunnel (WebSocket) open across its session's
//! expiry is closed by it; revoking a session, a subject or a sandbox refuses the next request and
//! closes exactly the matching tunnels; logout clears the cookie and ends the session.
#![cfg(feature = "auth")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sandbox_gateway::auth::{Audience, MemoryRevocationStore, RevocationStore, TokenSigner};
use support::sessions::{closed_within, gateway, open_ws, sandbox, session, status, KEY};
use support::{client, empty};
use tokio_tungstenite::tungstenite::Message;

const HOUR: Duration = Duration::from_secs(3600);

async fn one_gateway() -> std::net::SocketAddr {
    let store: Arc<dyn RevocationStore> = Arc::new(MemoryRevocationStore::new(HOUR));
    gateway(store, sandbox().await, HOUR).await
}

async fn still_echoes(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) {
    ws.send(Message::Text("again".into())).await.unwrap();
    let reply = support::within(10, ws.next()).await.unwrap().unwrap();
    assert_eq!(reply, Message::Text("echo:again".into()));
}

async fn revoke(gw: std::net::SocketAddr, what: &str) {
    let req = http::Request::post(format!("http://{gw}/revoke/{what}"))
        .body(empty())
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), 200, "revoke {what}");
}

#[tokio::test]
async fn a_tunnel_open_across_its_expiry_is_closed_by_it() {
    let gw = one_gateway().await;
    let short = session("demo", "u1", Duration::from_secs(2));
    let long = session("demo", "u1", HOUR);
    let mut ending = open_ws(gw, "demo", &short).await;
    let mut lasting = open_ws(gw, "demo", &long).await;
    // Closed by the expiry (2 s after issue), not before it and well within the bound.
    let waited = closed_within(&mut ending, 15).await.unwrap();
    assert!(
        waited >= Duration::from_millis(500),
        "closed after {waited:?}, before the expiry"
    );
    assert_eq!(status(gw, "demo", &short).await, 403);
    // The other session's tunnel is untouched.
    still_echoes(&mut lasting).await;
}

#[tokio::test]
async fn revoking_a_subject_refuses_it_and_closes_only_its_tunnels() {
    let gw = one_gateway().await;
    let (u1, u2) = (session("demo", "u1", HOUR), session("demo", "u2", HOUR));
    let mut ws1 = open_ws(gw, "demo", &u1).await;
    let mut ws2 = open_ws(gw, "demo", &u2).await;
    assert_eq!(status(gw, "demo", &u1).await, 200);
    revoke(gw, "subject/u1").await;
    closed_within(&mut ws1, 5).await.unwrap();
    assert_eq!(status(gw, "demo", &u1).await, 403);
    assert_eq!(status(gw, "demo", &u2).await, 200);
    still_echoes(&mut ws2).await;
    // A session issued after the revocation is valid: the host decides who gets new links.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let fresh = session("demo", "u1", HOUR);
    assert_eq!(status(gw, "demo", &fresh).await, 200);
}

#[tokio::test]
async fn revoking_a_session_or_a_sandbox() {
    let gw = one_gateway().await;
    let (a, b, other) = (
        session("demo", "u1", HOUR),
        session("demo", "u1", HOUR),
        session("other", "u1", HOUR),
    );
    let nonce: String = TokenSigner::new(KEY)
        .unwrap()
        .verify(&a, "demo", Audience::Cookie)
        .unwrap()
        .nonce()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut wa = open_ws(gw, "demo", &a).await;
    let mut wb = open_ws(gw, "demo", &b).await;
    let mut wo = open_ws(gw, "other", &other).await;
    revoke(gw, &format!("session/{nonce}")).await;
    closed_within(&mut wa, 5).await.unwrap();
    assert_eq!(status(gw, "demo", &a).await, 403);
    still_echoes(&mut wb).await;
    revoke(gw, "sandbox/demo").await;
    closed_within(&mut wb, 5).await.unwrap();
    assert_eq!(status(gw, "demo", &b).await, 403);
    still_echoes(&mut wo).await;
    assert_eq!(status(gw, "other", &other).await, 200);
}

#[tokio::test]
async fn logout_clears_the_cookie_and_ends_the_session_and_its_tunnels() {
    let gw = one_gateway().await;
    let s = session("demo", "u1", HOUR);
    let mut ws = open_ws(gw, "demo", &s).await;
    let req = http::Request::get(format!("http://{gw}/__ide/demo/.gateway/logout"))
        .header("cookie", format!("sgw_ide_demo={s}"))
        .body(empty())
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/dashboard?open=demo");
    assert_eq!(
        res.headers()["set-cookie"],
        "sgw_ide_demo=; Path=/__ide/demo/; Max-Age=0; HttpOnly; SameSite=Lax"
    );
    closed_within(&mut ws, 5).await.unwrap();
    assert_eq!(status(gw, "demo", &s).await, 403);
    // A navigation with the ended session is sent to the dashboard; a script's request is not.
    let nav = http::Request::get(format!("http://{gw}/__ide/demo/"))
        .header("cookie", format!("sgw_ide_demo={s}"))
        .header("sec-fetch-mode", "navigate")
        .body(empty())
        .unwrap();
    let res = client().request(nav).await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/dashboard?open=demo");
    let fetch = http::Request::get(format!("http://{gw}/__ide/demo/"))
        .header("cookie", format!("sgw_ide_demo={s}"))
        .header("sec-fetch-mode", "cors")
        .body(empty())
        .unwrap();
    let res = client().request(fetch).await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(
        support::text(res).await,
        "Your IDE session has ended. Reopen the IDE from the dashboard.\n"
    );
}

#[tokio::test]
async fn removing_a_key_at_run_time_ends_its_sessions_and_their_tunnels() {
    // The gateway signs with a new key and still verifies the old one (`KEY`, which `session`
    // signs with).
    let signer = TokenSigner::new([7u8; 32])
        .unwrap()
        .with_previous_key(KEY)
        .unwrap();
    let store: Arc<dyn RevocationStore> = Arc::new(MemoryRevocationStore::new(HOUR));
    let (gw, _) =
        support::sessions::logged_gateway(store, sandbox().await, HOUR, signer.clone()).await;
    let old = session("demo", "u1", HOUR);
    let new = signer
        .sign_for("demo", Some("u1"), Audience::Cookie, HOUR)
        .unwrap();
    let mut on_old = open_ws(gw, "demo", &old).await;
    let mut on_new = open_ws(gw, "demo", &new).await;
    assert_eq!(status(gw, "demo", &old).await, 200);

    signer.remove_previous_keys();
    closed_within(&mut on_old, 5).await.unwrap();
    assert_eq!(status(gw, "demo", &old).await, 403);
    assert_eq!(status(gw, "demo", &new).await, 200);
    still_echoes(&mut on_new).await;

    // Rotating again keeps the sessions of the key just replaced.
    signer.rotate([8u8; 32]).unwrap();
    still_echoes(&mut on_new).await;
    assert_eq!(status(gw, "demo", &new).await, 200);
}

#[tokio::test]
async fn a_removed_signing_key_ends_its_sessions() {
    // Rotation: sessions signed with the old key verify while it is a previous key, and are
    // refused once it is removed (replicas restarted without it; their tunnels close with the
    // process).
    let old = TokenSigner::new([1u8; 32]).unwrap();
    let token = old
        .sign_for("demo", Some("u1"), Audience::Cookie, HOUR)
        .unwrap();
    let rotated = TokenSigner::new([2u8; 32])
        .unwrap()
        .with_previous_key([1u8; 32])
        .unwrap();
    assert!(rotated.verify(&token, "demo", Audience::Cookie).is_ok());
    let fresh = rotated
        .sign_for("demo", Some("u1"), Audience::Cookie, HOUR)
        .unwrap();
    assert!(
        old.verify(&fresh, "demo", Audience::Cookie).is_err(),
        "new key issues"
    );
    let removed = TokenSigner::new([2u8; 32]).unwrap();
    assert_eq!(
        removed.verify(&token, "demo", Audience::Cookie),
        Err(sandbox_gateway::auth::TokenError::BadSignature)
    );
    assert!(removed.verify(&fresh, "demo", Audience::Cookie).is_ok());
}

/// The Redis store on its own: a revocation is seen by a second store (another replica's) within
/// its refresh interval; with Redis gone, revoking fails (the host's route answers 503) and both
/// keep what they last read.
#[cfg(feature = "redis")]
#[tokio::test]
async fn the_redis_store_shares_revocations_and_keeps_its_view_when_redis_goes() {
    use sandbox_gateway::auth::{RedisRevocationStore, Revocation, RevocationError};
    let redis = support::redis::RedisServer::start().await;
    let refresh = Duration::from_millis(100);
    let a = RedisRevocationStore::connect(&redis.url, HOUR)
        .await
        .unwrap()
        .refresh_every(refresh);
    let b = RedisRevocationStore::connect(&redis.url, HOUR)
        .await
        .unwrap()
        .refresh_every(refresh);
    let signer = TokenSigner::new(KEY).unwrap();
    let claims = |t: &str| signer.verify(t, "demo", Audience::Cookie).unwrap();
    let (u1, u2) = (
        claims(&session("demo", "u1", HOUR)),
        claims(&session("demo", "u2", HOUR)),
    );
    let issued = std::time::SystemTime::now() - Duration::from_secs(1);
    let mut b_changes = b.changes();
    a.revoke(Revocation::Subject("u1".into())).await.unwrap();
    assert!(
        a.is_revoked(&u1, issued),
        "at once on the replica that revoked"
    );
    support::within(5, b_changes.changed()).await.unwrap();
    assert!(b.is_revoked(&u1, issued), "the other replica learned it");
    assert!(!b.is_revoked(&u2, issued));
    // Issued after the revocation: valid.
    assert!(!b.is_revoked(&u1, std::time::SystemTime::now() + Duration::from_secs(1)));

    drop(redis);
    tokio::time::sleep(refresh * 3).await;
    assert!(matches!(
        a.revoke(Revocation::Subject("u2".into())).await,
        Err(RevocationError::Unavailable(_))
    ));
    assert!(b.is_revoked(&u1, issued), "the last view is kept");
    assert!(!a.is_revoked(&u2, issued));
}
