//! The link's subject over real sockets: a token minted for one user opens the IDE only in that
//! user's browser when the bootstrap checks it against the host's session.
#![cfg(feature = "auth")]

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::Router;
use http::{header, Request, StatusCode};
use sandbox_gateway::auth::{Audience, Bootstrap, TokenSigner};
use support::{client, empty, text, within};

/// The host's session cookie, `session=<user>`, as the host's own login would set it.
fn session_user(parts: &http::request::Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("session=").map(str::to_owned))
}

async fn gateway(signer: TokenSigner) -> std::net::SocketAddr {
    let bootstrap = Bootstrap::builder(signer)
        .check_subject(|parts, claims| {
            claims.subject().is_some() && session_user(parts).as_deref() == claims.subject()
        })
        .build::<Body>()
        .unwrap();
    let app = Router::new().route_service("/api/dev/{id}/ide", bootstrap);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn open(
    gw: std::net::SocketAddr,
    token: &str,
    session: Option<&str>,
) -> http::Response<hyper::body::Incoming> {
    let mut req = Request::get(format!("http://{gw}/api/dev/demo/ide?token={token}"));
    if let Some(user) = session {
        req = req.header(header::COOKIE, format!("theme=dark; session={user}"));
    }
    within(10, client().request(req.body(empty()).unwrap()))
        .await
        .unwrap()
}

#[tokio::test]
async fn bootstrap_checks_the_subject_against_the_session() {
    let signer = TokenSigner::new([5u8; 32]).unwrap();
    let gw = gateway(signer.clone()).await;
    let for_alice = signer
        .issue_for("demo", "alice", Duration::from_secs(60))
        .unwrap();

    // Bob's browser (a link leaked to him, or planted on him) and a browser with no session are
    // refused, and the link stays unspent for Alice.
    for session in [Some("bob"), None] {
        let res = open(gw, &for_alice, session).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{session:?}");
        assert!(!res.headers().contains_key(header::SET_COOKIE));
        assert_eq!(
            text(res).await,
            "This IDE link was issued for another user. Reopen the IDE from the dashboard.\n"
        );
    }

    // Alice's browser opens it; the session cookie carries her as its subject.
    let res = open(gw, &for_alice, Some("alice")).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let set = res.headers()[header::SET_COOKIE].to_str().unwrap();
    let value = set
        .split(';')
        .next()
        .and_then(|p| p.split_once('='))
        .unwrap()
        .1;
    let claims = signer.verify(value, "demo", Audience::Cookie).unwrap();
    assert_eq!(claims.subject(), Some("alice"));
    // Once only.
    assert_eq!(
        open(gw, &for_alice, Some("alice")).await.status(),
        StatusCode::FORBIDDEN
    );

    // A link without a subject fails this host's check.
    let anonymous = signer.issue("demo", Duration::from_secs(60)).unwrap();
    assert_eq!(
        open(gw, &anonymous, Some("alice")).await.status(),
        StatusCode::FORBIDDEN
    );
}
