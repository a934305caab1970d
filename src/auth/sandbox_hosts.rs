//! Per-sandbox origins: each sandbox served on a host of its own, `{id}.ide.example.com`.

use http::uri::Scheme;
use http::{HeaderMap, Request, Uri};

use super::cookie::ConfigError;
use crate::route::{HostPattern, RouteError};

/// The hosts that serve one sandbox each, such as `{id}.ide.example.com` or, locally,
/// `{id}.ide.localhost:8080`: a [`HostPattern`] with one capture named `id`.
///
/// On such a host the browser's same-origin policy separates the sandbox from the host app and
/// from every other sandbox: the sandbox's pages cannot read the host's or a sibling's pages,
/// cookies or storage, and its cookies are its own. Give it to
/// [`CookieConfigBuilder::sandbox_hosts`](super::CookieConfigBuilder::sandbox_hosts); then, on a
/// request whose Host matches,
///
/// - [`Bootstrap`](super::Bootstrap) reads the sandbox id from the Host (the id in its path must
///   be the same), sets a host-only cookie (`Path=/`, no `Domain`, named `__Host-…` when `Secure`)
///   and redirects to `/`;
/// - [`TunnelAuth`](super::TunnelAuth) reads the sandbox id from the Host, and the whole origin is
///   the tunnel: every path goes to the sandbox unchanged (no mount prefix);
///
/// while requests on other hosts keep using the path mount `/__ide/{id}/` (shared origin).
///
/// Ids are matched in lower case, as host names are: a sandbox served this way needs an id that
/// is a DNS label (`a-z 0-9 -`, not starting or ending with `-`); [`origin`](Self::origin) is
/// `None` for other ids.
///
/// The scheme of the URLs it builds is `http` for loopback patterns (`*.localhost`) and `https`
/// otherwise; change it with [`https`](Self::https).
///
/// Deployment: a wildcard DNS record and a wildcard certificate for `*.ide.example.com`. Put the
/// sandboxes on a registrable domain of their own (say `example-sandbox.net`, not a subdomain of
/// the host app's domain), ideally listed on the Public Suffix List: sibling hosts under one
/// registrable domain can set cookies for the whole domain (`Domain=example-sandbox.net`), which
/// the browser then sends to every sibling, so one sandbox could plant cookies in another; under a
/// public suffix, browsers refuse such cookies. Locally, `*.localhost` resolves to loopback in
/// browsers and is a secure context; there `ide.localhost` is the sandboxes' common parent, and
/// Chromium accepts `Domain=ide.localhost` cookies from any of them (never `Domain=localhost`, so
/// the host's cookies stay out of reach). A pattern one label under `localhost`, `{id}.localhost`,
/// leaves siblings no common parent to name, as a public suffix would (beware of host routes
/// such as `{port}.localhost` on the same gateway). The gateway's own cookie holds either way:
/// its value is signed and bound to the sandbox id, and over HTTPS its `__Host-` name cannot be
/// set with `Domain` at all.
///
/// ```
/// use sandbox_gateway::auth::SandboxHosts;
///
/// let hosts = SandboxHosts::new("{id}.ide.localhost:8080")?;
/// assert_eq!(hosts.origin("demo").as_deref(), Some("http://demo.ide.localhost:8080"));
/// assert_eq!(
///     hosts.url("demo", "/api/dev/demo/ide?token=T").as_deref(),
///     Some("http://demo.ide.localhost:8080/api/dev/demo/ide?token=T")
/// );
/// assert_eq!(hosts.origin("Not_a_label"), None);
///
/// let public = SandboxHosts::new("{id}.ide.example.com")?;
/// assert_eq!(public.origin("demo").as_deref(), Some("https://demo.ide.example.com"));
/// # Ok::<(), sandbox_gateway::auth::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxHosts {
    pattern: HostPattern,
    scheme: Scheme,
}

impl SandboxHosts {
    /// Parses the pattern: a [`HostPattern`] whose only capture is `id`.
    ///
    /// # Errors
    /// [`ConfigError::SandboxHosts`] for a malformed pattern, a capture other than `id`, or no
    /// capture at all.
    pub fn new(pattern: &str) -> Result<Self, ConfigError> {
        let bad = |why: String| ConfigError::SandboxHosts(why);
        let parsed: HostPattern = pattern
            .parse()
            .map_err(|e: RouteError| bad(e.to_string()))?;
        let names: Vec<&str> = parsed.capture_names().collect();
        if names != ["id"] {
            return Err(bad(format!(
                "host pattern `{pattern}` must capture `{{id}}` and nothing else"
            )));
        }
        let name = pattern
            .rsplit_once(':')
            .filter(|(_, p)| !p.contains('}'))
            .map_or(pattern, |(h, _)| h)
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let loopback = name == "localhost" || name.ends_with(".localhost");
        Ok(SandboxHosts {
            pattern: parsed,
            scheme: if loopback {
                Scheme::HTTP
            } else {
                Scheme::HTTPS
            },
        })
    }

    /// Whether the URLs built by [`origin`](Self::origin) use `https` (default: yes, except for
    /// `*.localhost` patterns).
    pub fn https(mut self, on: bool) -> Self {
        self.scheme = if on { Scheme::HTTPS } else { Scheme::HTTP };
        self
    }

    /// The pattern.
    pub fn pattern(&self) -> &HostPattern {
        &self.pattern
    }

    /// The origin of sandbox `id`, `scheme://host[:port]`; `None` when `id` is not a DNS label
    /// (`a-z 0-9 -`, 1 to 63 characters, not starting or ending with `-`).
    pub fn origin(&self, id: &str) -> Option<String> {
        let label_ok = !id.is_empty()
            && id.len() <= 63
            && !id.starts_with('-')
            && !id.ends_with('-')
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !label_ok {
            return None;
        }
        let host = self.pattern.to_string().replace("{id}", id);
        // What the browser will send must come back to this sandbox.
        let back = self.pattern.matches(&host)?;
        (back.get("id") == Some(id)).then(|| format!("{}://{host}", self.scheme))
    }

    /// `path_and_query` (starting with `/`) on the origin of sandbox `id`; `None` as for
    /// [`origin`](Self::origin).
    pub fn url(&self, id: &str, path_and_query: &str) -> Option<String> {
        if !path_and_query.starts_with('/') {
            return None;
        }
        Some(format!("{}{path_and_query}", self.origin(id)?))
    }

    /// The sandbox a request is addressed to, when its Host matches the pattern: use it to send the
    /// sandboxes' hosts to the tunnel and every other host to the host app.
    pub fn sandbox_id<B>(&self, req: &Request<B>) -> Option<String> {
        self.id_of_head(req.uri(), req.headers()).ok().flatten()
    }

    /// The sandbox id of a request head; `Err` when the Host is missing, repeated or malformed.
    pub(crate) fn id_of_head(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Option<String>, RouteError> {
        Ok(self
            .pattern
            .match_head(uri, headers)?
            .and_then(|c| c.get("id").map(str::to_owned)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_need_exactly_the_id_capture() {
        assert!(SandboxHosts::new("{id}.ide.example.com").is_ok());
        assert!(SandboxHosts::new("ide-{id}.example.com:8443").is_ok());
        for bad in [
            "ide.example.com",
            "{port}.localhost",
            "{port}-{id}.preview.localhost",
            "{id}..x",
            "{id}.x:6000",
        ] {
            assert!(
                matches!(SandboxHosts::new(bad), Err(ConfigError::SandboxHosts(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn origins_and_schemes() {
        let local = SandboxHosts::new("{id}.ide.localhost:8080").unwrap();
        assert_eq!(
            local.origin("a-1").as_deref(),
            Some("http://a-1.ide.localhost:8080")
        );
        for bad in ["", "A", "a_b", "-a", "a-", &"a".repeat(64)] {
            assert_eq!(local.origin(bad), None, "{bad}");
        }
        assert_eq!(local.url("a", "x"), None);
        let public = SandboxHosts::new("ide-{id}.example.com").unwrap();
        assert_eq!(
            public.origin("x").as_deref(),
            Some("https://ide-x.example.com")
        );
        assert_eq!(
            public.https(false).origin("x").as_deref(),
            Some("http://ide-x.example.com")
        );
    }

    #[test]
    fn reads_the_id_from_the_host() {
        let hosts = SandboxHosts::new("{id}.ide.localhost").unwrap();
        let req = |host: &str| Request::get("/x").header("host", host).body(()).unwrap();
        assert_eq!(
            hosts.sandbox_id(&req("Demo.IDE.localhost:8080")).as_deref(),
            Some("demo")
        );
        assert_eq!(hosts.sandbox_id(&req("localhost:8080")), None);
        assert_eq!(hosts.sandbox_id(&req("a.b.ide.localhost")), None);
        assert_eq!(hosts.sandbox_id(&req("demo.ide.localhost.evil.com")), None);
        let two = Request::get("/")
            .header("host", "a.ide.localhost")
            .header("host", "b.ide.localhost")
            .body(())
            .unwrap();
        assert!(hosts.id_of_head(two.uri(), two.headers()).is_err());
    }
}
