//! IDE sessions that end, in headless Chromium (chromedriver + fantoccini): logout clears the
//! tunnel cookie and the next navigation to the tunnel lands on the configured page; a session
//! that expired does the same.
//!
//! `#[ignore]`d like the other browser suites (they need `chromium` and `chromium-driver`); run
//! with `cargo test --all-features --test sessions_browser -- --include-ignored`.
#![cfg(feature = "auth")]

mod support;

#[path = "support/chromium.rs"]
mod chromium;

use std::sync::Arc;
use std::time::Duration;

use fantoccini::Client;
use sandbox_gateway::auth::TokenSigner;
use sandbox_gateway::auth::{MemoryRevocationStore, RevocationStore};
use support::sessions::{logged_gateway, sandbox, Seen, KEY};

fn signer() -> TokenSigner {
    TokenSigner::new(KEY).unwrap()
}

const HOUR: Duration = Duration::from_secs(3600);

/// One Chromium at a time: two cores do not run several browsers well.
static BROWSER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn page(browser: &Client) -> (String, String) {
    let url = browser.current_url().await.unwrap().to_string();
    let body = browser
        .find(fantoccini::Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (url, body)
}

/// The `Cookie` header the gateway received with the last request for `path`.
fn last_cookie(seen: &Seen, path: &str) -> String {
    let prefix = format!("{path} cookie=");
    seen.lock()
        .unwrap()
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("no request for {path}"))
}

async fn open_ide(browser: &Client, origin: &str) {
    browser
        .goto(&format!("{origin}/open/demo/u1"))
        .await
        .unwrap();
    let (url, body) = page(browser).await;
    assert_eq!(url, format!("{origin}/__ide/demo/"));
    assert_eq!(body, "sandbox page");
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn logout_clears_the_cookie_and_the_next_navigation_goes_to_the_dashboard() {
    let store: Arc<dyn RevocationStore> = Arc::new(MemoryRevocationStore::new(HOUR));
    let (gw, seen) = logged_gateway(store, sandbox().await, HOUR, signer()).await;
    let origin = format!("http://127.0.0.1:{}", gw.port());
    let _one = BROWSER_LOCK.lock().await;
    let mut driver = chromium::Driver::start().await;
    let browser = driver.browser().await;

    open_ide(&browser, &origin).await;
    assert!(last_cookie(&seen, "/__ide/demo/").contains("sgw_ide_demo="));

    // The logout link inside the tunnel.
    browser
        .goto(&format!("{origin}/__ide/demo/.gateway/logout"))
        .await
        .unwrap();
    let (url, body) = page(&browser).await;
    assert_eq!(url, format!("{origin}/dashboard?open=demo"));
    assert_eq!(body, "dashboard: open your IDE");

    // The browser no longer sends the cookie, and the tunnel sends the navigation back.
    browser
        .goto(&format!("{origin}/__ide/demo/"))
        .await
        .unwrap();
    assert_eq!(last_cookie(&seen, "/__ide/demo/"), "");
    let (url, _) = page(&browser).await;
    assert_eq!(url, format!("{origin}/dashboard?open=demo"));

    // Opening the IDE again from the dashboard works.
    open_ide(&browser, &origin).await;
    browser.close().await.unwrap();
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver"]
async fn an_expired_session_navigates_to_the_dashboard() {
    let store: Arc<dyn RevocationStore> = Arc::new(MemoryRevocationStore::new(HOUR));
    // Sessions of 2 s; the browser drops the cookie at its Max-Age, the gateway refuses the token
    // at its expiry: either way the navigation lands on the dashboard.
    let (gw, _seen) =
        logged_gateway(store, sandbox().await, Duration::from_secs(2), signer()).await;
    let origin = format!("http://127.0.0.1:{}", gw.port());
    let _one = BROWSER_LOCK.lock().await;
    let mut driver = chromium::Driver::start().await;
    let browser = driver.browser().await;

    open_ide(&browser, &origin).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    browser
        .goto(&format!("{origin}/__ide/demo/"))
        .await
        .unwrap();
    let (url, body) = page(&browser).await;
    assert_eq!(url, format!("{origin}/dashboard?open=demo"));
    assert_eq!(body, "dashboard: open your IDE");
    browser.close().await.unwrap();
}
