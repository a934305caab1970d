//! Refusing cross-site requests to the token route.

use http::request::Parts;

use crate::proxy::OriginCheck;

/// Whether a request comes from a page of the server's own origin, or from no page at all: the
/// check for the host's token route (`POST /api/dev/{id}/ide-token`), on top of the host's own
/// authentication, so that no other page can mint a link with the user's session.
///
/// - With `Sec-Fetch-Site` (every current browser sends it), only `same-origin` passes.
///   `same-site` is refused on purpose: `{id}.ide.example.com` is same-site with
///   `app.example.com`, so a sandbox's page would pass a same-site check. (Chromium counts
///   `{id}.ide.localhost` → `localhost` as `cross-site`, but sibling sandboxes as same-site.)
/// - Otherwise, with `Origin`, its host and port must be the ones the request was addressed to
///   (the rule of [`OriginCheck::SameOrigin`]).
/// - With neither, the request passes: it came from no browser page (`curl`, a server), so it
///   carries no ambient browser credentials.
///
/// ```
/// use http::Request;
/// use sandbox_gateway::auth::is_same_origin_request;
///
/// let from = |site: &str| {
///     let req = Request::post("/api/dev/demo/ide-token")
///         .header("host", "localhost:8080")
///         .header("sec-fetch-site", site)
///         .body(())
///         .unwrap();
///     is_same_origin_request(&req.into_parts().0)
/// };
/// assert!(from("same-origin"));
/// assert!(!from("same-site"));
/// assert!(!from("cross-site"));
/// ```
pub fn is_same_origin_request(parts: &Parts) -> bool {
    let mut sites = parts.headers.get_all("sec-fetch-site").iter();
    match (sites.next(), sites.next()) {
        (Some(site), None) => site.as_bytes().eq_ignore_ascii_case(b"same-origin"),
        (Some(_), Some(_)) => false,
        (None, _) => OriginCheck::SameOrigin.check(parts).is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(pairs: &[(&str, &str)]) -> Parts {
        let mut req = http::Request::post("/api/dev/demo/ide-token");
        for (k, v) in pairs {
            req = req.header(*k, *v);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn fetch_metadata_decides_when_present() {
        let host = ("host", "localhost:8080");
        assert!(is_same_origin_request(&parts(&[
            host,
            ("sec-fetch-site", "same-origin")
        ])));
        for site in ["same-site", "cross-site", "none", ""] {
            assert!(
                !is_same_origin_request(&parts(&[host, ("sec-fetch-site", site)])),
                "{site}"
            );
        }
        // Fetch metadata wins over a matching Origin.
        assert!(!is_same_origin_request(&parts(&[
            host,
            ("sec-fetch-site", "same-site"),
            ("origin", "http://localhost:8080"),
        ])));
        assert!(!is_same_origin_request(&parts(&[
            host,
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-site", "same-origin"),
        ])));
    }

    #[test]
    fn origin_decides_otherwise() {
        let host = ("host", "localhost:8080");
        assert!(is_same_origin_request(&parts(&[
            host,
            ("origin", "http://localhost:8080")
        ])));
        for origin in [
            "http://demo.ide.localhost:8080",
            "http://localhost:8081",
            "http://evil.example",
            "null",
        ] {
            assert!(
                !is_same_origin_request(&parts(&[host, ("origin", origin)])),
                "{origin}"
            );
        }
        // No browser page: no ambient credentials to abuse.
        assert!(is_same_origin_request(&parts(&[host])));
    }
}
