//! Who may spend the server's keys, over real sockets: API tokens the host issued, a check of the
//! host's own, bring-your-own-key upstreams, and the body limit per upstream. Each refusal is
//! checked against the upstream's request counter: a refused caller never reaches it.
#![cfg(all(feature = "forward", feature = "auth"))]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{header, HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sandbox_gateway::auth::{Audience, TokenSigner};
use sandbox_gateway::forward::{
    ApiForward, Caller, CallerRefusal, Callers, Secret, Upstream, DEFAULT_BODY_LIMIT,
};
use support::{client, full, serve, serve_fn, within, TestBody};

const KEY: &str = "sk-server-held-5e1f";
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The headers of every request an upstream received.
type Seen = Arc<Mutex<Vec<HeaderMap>>>;

async fn counting_upstream(seen: Seen) -> SocketAddr {
    serve_fn(move |req: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            let (parts, body) = req.into_parts();
            let len = body
                .collect()
                .await
                .map(|b| b.to_bytes().len())
                .unwrap_or(0);
            seen.lock().unwrap().push(parts.headers);
            Response::new(full(format!("ok {len}")))
        }
    })
    .await
}

fn openai_like(addr: SocketAddr) -> Upstream {
    Upstream::new("openai", format!("http://{addr}/v1"))
        .allow_methods([Method::POST])
        .allow_paths(["/chat/completions"])
        .inject_header(header::AUTHORIZATION, Secret::bearer(KEY).unwrap())
        .allow_private(true)
}

fn anthropic_like(addr: SocketAddr) -> Upstream {
    Upstream::new("anthropic", format!("http://{addr}/v1"))
        .allow_methods([Method::POST])
        .allow_paths(["/messages"])
        .inject_header(X_API_KEY, Secret::new(KEY).unwrap())
        .allow_private(true)
}

fn post(url: String, headers: &[(&str, &str)]) -> Request<TestBody> {
    let mut req = Request::post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(r#"{"model":"m","messages":[]}"#))
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    req
}

/// Status, headers and the parsed JSON error body (or the raw text as a JSON string).
async fn send(req: Request<TestBody>) -> (StatusCode, HeaderMap, serde_json::Value) {
    let res = within(10, client().request(req)).await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let text = support::text(res).await;
    assert!(!text.contains(KEY), "the server key came back: {text}");
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, headers, json)
}

#[tokio::test]
async fn api_tokens_admit_only_authorised_callers() {
    let signer = TokenSigner::new([9u8; 32]).unwrap();
    let seen: Seen = Arc::default();
    let upstream = counting_upstream(seen.clone()).await;
    let forward = ApiForward::builder()
        .callers(Callers::api_tokens(signer.clone()))
        .upstream(openai_like(upstream))
        .upstream(anthropic_like(upstream))
        .build()
        .unwrap();
    let gw = serve(forward).await;
    let openai = format!("http://{gw}/openai/chat/completions");
    let anthropic = format!("http://{gw}/anthropic/messages");
    let ttl = Duration::from_secs(300);
    let for_openai = signer.issue_api("user-1", ["openai"], ttl).unwrap();
    let for_both = signer
        .issue_api("user-2", ["openai", "anthropic"], ttl)
        .unwrap();
    let bearer = |t: &str| format!("Bearer {t}");

    // No credential: 401 with a JSON error and a challenge, and the upstream is not contacted.
    let (s, h, body) = send(post(openai.clone(), &[])).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h[header::CONTENT_TYPE], "application/json");
    assert_eq!(h[header::WWW_AUTHENTICATE], "Bearer realm=\"api\"");
    assert_eq!(body["error"]["type"], "unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("missing credential"),
        "{body}"
    );

    // Refused credentials, each with its reason.
    let other_key = TokenSigner::new([1u8; 32]).unwrap();
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![("authorization", bearer("not-a-token"))],
            "the API token is not valid",
        ),
        (
            vec![(
                "authorization",
                bearer(&other_key.issue_api("u", ["openai"], ttl).unwrap()),
            )],
            "the API token is not valid",
        ),
        // An IDE link and a tunnel cookie of the same signer are not API tokens.
        (
            vec![(
                "authorization",
                bearer(&signer.issue("user-1", ttl).unwrap()),
            )],
            "the API token is not valid",
        ),
        (
            vec![(
                "authorization",
                bearer(&signer.sign("user-1", Audience::Cookie, ttl).unwrap()),
            )],
            "the API token is not valid",
        ),
        (
            vec![(
                "authorization",
                bearer(
                    &signer
                        .issue_api("user-1", ["openai"], Duration::ZERO)
                        .unwrap(),
                ),
            )],
            "the API token has expired: get a new one from the host",
        ),
        (
            vec![("authorization", format!("Basic {for_openai}"))],
            "Authorization must be `Bearer <token>`",
        ),
        (
            vec![
                ("authorization", bearer(&for_openai)),
                ("authorization", bearer(&for_both)),
            ],
            "the request carries several different credentials",
        ),
    ];
    for (headers, why) in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (s, _, body) = send(post(openai.clone(), &headers)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(body["error"]["message"], *why, "{headers:?}");
    }
    // An upstream the token does not name: 403.
    let (s, _, body) = send(post(anthropic.clone(), &[("x-api-key", &for_openai)])).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        body["error"]["message"],
        "this caller may not use the upstream `anthropic`"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        0,
        "no refused request reached the upstream"
    );

    // A valid token where the OpenAI SDK puts its key: the token goes, the server's key comes.
    let (s, _, body) = send(post(
        openai.clone(),
        &[("authorization", &bearer(&for_openai))],
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // Where the Anthropic SDK puts it: `x-api-key`, which the upstream takes its key in.
    let (s, _, body) = send(post(anthropic.clone(), &[("x-api-key", &for_both)])).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // Authorization: Bearer works for it as well.
    let (s, _, _) = send(post(anthropic, &[("authorization", &bearer(&for_both))])).await;
    assert_eq!(s, StatusCode::OK);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[0][header::AUTHORIZATION],
        format!("Bearer {KEY}").as_str()
    );
    assert_eq!(seen[1][X_API_KEY], KEY);
    assert!(!seen[1].contains_key(header::AUTHORIZATION));
    assert_eq!(seen[2].get_all(X_API_KEY).iter().count(), 1);
    for h in seen.iter() {
        for (name, value) in h {
            let v = String::from_utf8_lossy(value.as_bytes());
            assert!(
                !v.contains(&for_openai) && !v.contains(&for_both),
                "a caller token reached the upstream in {name}"
            );
        }
    }
}

#[tokio::test]
async fn a_check_of_the_hosts_own_decides_as_a_service_or_a_closure() {
    let seen: Seen = Arc::default();
    let upstream = counting_upstream(seen.clone()).await;
    // The host's own keys: a tower service looking them up.
    let service = tower::service_fn(|req: Request<()>| async move {
        match req
            .headers()
            .get("x-host-session")
            .and_then(|v| v.to_str().ok())
        {
            Some("s-1") => Ok(Caller::new("alice")),
            Some("s-2") => Ok(Caller::new("bob").only(["other"])),
            Some(_) => Err(CallerRefusal::unauthorized("unknown session")),
            None => Err(CallerRefusal::unauthorized("log in first")),
        }
    });
    let by_service = Callers::check(service);
    let by_closure = Callers::check_fn(|req: Request<()>| async move {
        assert!(req.uri().path().starts_with("/openai/"));
        match req
            .headers()
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok())
        {
            Some("host_session=alice") => Ok(Caller::new("alice")),
            _ => Err(CallerRefusal::forbidden("not a member of this workspace")),
        }
    });
    for (callers, good, bad, bad_status, bad_msg) in [
        (
            by_service,
            ("x-host-session", "s-1"),
            ("x-host-session", "s-2"),
            StatusCode::FORBIDDEN,
            "this caller may not use the upstream `openai`",
        ),
        (
            by_closure,
            ("cookie", "host_session=alice"),
            ("cookie", "host_session=mallory"),
            StatusCode::FORBIDDEN,
            "not a member of this workspace",
        ),
    ] {
        let before = seen.lock().unwrap().len();
        let gw = serve(
            ApiForward::builder()
                .callers(callers)
                .upstream(openai_like(upstream))
                .build()
                .unwrap(),
        )
        .await;
        let url = format!("http://{gw}/openai/chat/completions");
        let (s, _, _) = send(post(url.clone(), &[])).await;
        assert!(s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN);
        let (s, _, body) = send(post(url.clone(), &[bad])).await;
        assert_eq!(s, bad_status);
        assert_eq!(body["error"]["message"], bad_msg);
        assert_eq!(seen.lock().unwrap().len(), before);
        let (s, _, _) = send(post(url, &[good])).await;
        assert_eq!(s, StatusCode::OK);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), before + 1);
        assert_eq!(
            seen[before][header::AUTHORIZATION],
            format!("Bearer {KEY}").as_str()
        );
        assert!(!seen[before].contains_key(header::COOKIE));
    }
}

#[tokio::test]
async fn bring_your_own_key_passes_the_callers_credential_and_keeps_the_walls() {
    let seen: Seen = Arc::default();
    let upstream = counting_upstream(seen.clone()).await;
    // No caller check needed: no server key is spent.
    let forward = ApiForward::builder()
        .upstream(
            Upstream::new("byok", format!("http://{upstream}/v1"))
                .allow_methods([Method::POST])
                .allow_paths(["/chat/completions"])
                .bring_your_own_key(true)
                .allow_private(true),
        )
        .upstream(
            Upstream::new("inside", "http://10.0.0.7/v1")
                .allow_methods([Method::POST])
                .allow_paths(["/"])
                .bring_your_own_key(true),
        )
        .build()
        .unwrap();
    let gw = serve(forward).await;
    let own = [
        ("authorization", "Bearer sk-user-own"),
        ("x-api-key", "sk-user-own"),
    ];
    let (s, _, _) = send(post(format!("http://{gw}/byok/chat/completions"), &own)).await;
    assert_eq!(s, StatusCode::OK);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0][header::AUTHORIZATION], "Bearer sk-user-own");
        assert_eq!(seen[0][X_API_KEY], "sk-user-own");
    }
    // Paths, methods and the SSRF guard still hold.
    let (s, _, _) = send(post(format!("http://{gw}/byok/admin"), &own)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let req = Request::get(format!("http://{gw}/byok/chat/completions"))
        .body(full(""))
        .unwrap();
    let (s, _, _) = send(req).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let (s, _, body) = send(post(format!("http://{gw}/inside/x"), &own)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("private address"));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn body_limits_per_upstream_with_a_default_for_images() {
    assert_eq!(DEFAULT_BODY_LIMIT, 20 * 1024 * 1024);
    let seen: Seen = Arc::default();
    let upstream = counting_upstream(seen.clone()).await;
    let forward = ApiForward::builder()
        .callers(Callers::anyone())
        .upstream(openai_like(upstream))
        .upstream(anthropic_like(upstream).body_limit(64))
        .build()
        .unwrap();
    let gw = serve(forward).await;
    // A 5 MiB chat request with an inlined image passes the default limit.
    let big = Request::post(format!("http://{gw}/openai/chat/completions"))
        .body(full(vec![b'i'; 5 * 1024 * 1024]))
        .unwrap();
    let (s, _, body) = send(big).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body,
        serde_json::Value::String(format!("ok {}", 5 * 1024 * 1024))
    );
    let over = Request::post(format!("http://{gw}/anthropic/messages"))
        .body(full(vec![b'i'; 65]))
        .unwrap();
    let (s, _, body) = send(over).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["type"], "payload_too_large");
    assert_eq!(
        body["error"]["message"],
        "request body larger than the limit of 64 bytes"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}
