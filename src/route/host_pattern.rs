//! Routing by the request's Host: `dev-{id}.example.com`, `{port}-{id}.preview.example.com`,
//! `{port}.localhost`.

use std::collections::BTreeSet;
use std::fmt;
use std::future::{ready, Ready};
use std::str::FromStr;
use std::sync::Arc;

use http::header::{self, HeaderMap};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;

use super::{check_public_port, Resolve, RouteError, Target, Upstream};
use crate::cors::origin::{normalize_host, split_host_port};

/// A host name pattern with label captures, such as `dev-{id}.example.com` or
/// `{port}-{id}.preview.example.com`.
///
/// - The pattern has as many labels as the hosts it matches: `{id}.example.com` matches
///   `abc.example.com`, never `a.b.example.com`, and `dev-{id}.example.com` never matches the
///   look-alike `dev-1.example.com.evil.com`.
/// - A capture stands for one or more characters inside one label; it never spans a dot. Captures in
///   one label are separated by literal text; each takes the shortest text up to the next literal,
///   and the last one in a label takes the rest of it (`{port}-{id}` on `5173-my-app` gives
///   `port = 5173`, `id = my-app`).
/// - Matching is case-insensitive, ignores the port of the Host (unless the pattern names one) and a
///   trailing dot. IDNs are matched in their ASCII (punycode, `xn--…`) form, as browsers send them;
///   a pattern must be written in that form too.
/// - A pattern may end with `:port`, the port browsers use to reach it; the Host must then carry
///   that port (or none, when the port is 80 or 443). A port on the Fetch standard's
///   [bad-port list](super::is_bad_port) is refused: browsers would not load such URLs.
///
/// ```
/// use sandbox_gateway::route::HostPattern;
///
/// let p: HostPattern = "{port}-{id}.preview.example.com".parse().unwrap();
/// let c = p.matches("5173-abc.Preview.example.com.:443").unwrap();
/// assert_eq!(c.get("id"), Some("abc"));
/// assert_eq!(c.port("port"), Some(5173));
/// assert!(p.matches("5173-abc.preview.example.com.evil.com").is_none());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct HostPattern {
    inner: Arc<PatternInner>,
}

#[derive(PartialEq, Eq)]
struct PatternInner {
    source: String,
    labels: Vec<Vec<Part>>,
    port: Option<u16>,
    names: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    Cap(usize),
}

impl HostPattern {
    /// Parses a pattern.
    ///
    /// # Errors
    /// [`RouteError::Config`] for a malformed pattern (empty label, unclosed or empty `{}`, two
    /// captures side by side, a repeated name, non-ASCII text), [`RouteError::UnsafePort`] for a
    /// bad port.
    pub fn new(pattern: &str) -> Result<Self, RouteError> {
        let bad = |why: &str| RouteError::Config(format!("host pattern `{pattern}`: {why}"));
        if !pattern.is_ascii() {
            return Err(bad(
                "write international names in their ASCII (xn--) form, as browsers send them",
            ));
        }
        let (host, port) = match pattern.rsplit_once(':') {
            Some((h, p)) if !p.contains('}') => {
                let port: u16 = p
                    .parse()
                    .ok()
                    .filter(|_| !p.starts_with('0') && p.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| bad("the port is not a number"))?;
                check_public_port(port)?;
                (h, Some(port))
            }
            _ => (pattern, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() {
            return Err(bad("empty pattern"));
        }
        let mut names: Vec<String> = Vec::new();
        let mut labels = Vec::new();
        for label in host.split('.') {
            if label.is_empty() {
                return Err(bad("empty label"));
            }
            let mut parts = Vec::new();
            let mut rest = label;
            while !rest.is_empty() {
                if let Some(after) = rest.strip_prefix('{') {
                    let end = after.find('}').ok_or_else(|| bad("unclosed `{`"))?;
                    let name = &after[..end];
                    let valid_name = name
                        .bytes()
                        .next()
                        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                    if !valid_name {
                        return Err(bad("capture names are letters, digits and `_`"));
                    }
                    if names.iter().any(|n| n == name) {
                        return Err(bad("a capture name is used twice"));
                    }
                    if matches!(parts.last(), Some(Part::Cap(_))) {
                        return Err(bad("two captures need literal text between them"));
                    }
                    names.push(name.to_owned());
                    parts.push(Part::Cap(names.len() - 1));
                    rest = &after[end + 1..];
                } else {
                    let end = rest.find('{').unwrap_or(rest.len());
                    let lit = &rest[..end];
                    if !lit
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    {
                        return Err(bad("labels hold letters, digits, `-`, `_` and captures"));
                    }
                    parts.push(Part::Lit(lit.to_ascii_lowercase()));
                    rest = &rest[end..];
                }
            }
            labels.push(parts);
        }
        Ok(HostPattern {
            inner: Arc::new(PatternInner {
                source: pattern.to_owned(),
                labels,
                port,
                names,
            }),
        })
    }

    /// The names of the captures, in order.
    pub fn capture_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.inner.names.iter().map(String::as_str)
    }

    /// The port the pattern publishes, if it names one.
    pub fn public_port(&self) -> Option<u16> {
        self.inner.port
    }

    /// Matches a Host value (`name`, `name:port`, `name.`); `None` when it does not match or is not
    /// a valid host.
    pub fn matches(&self, host: &str) -> Option<Captures> {
        if host.contains('@') {
            return None;
        }
        let (name, port) = split_host_port(host)?;
        let name = normalize_host(name)?;
        if let Some(want) = self.inner.port {
            let ok = match port {
                Some(p) => p == want,
                None => want == 80 || want == 443,
            };
            if !ok {
                return None;
            }
        }
        let got: Vec<&str> = name.split('.').collect();
        if got.len() != self.inner.labels.len() {
            return None;
        }
        let mut values = vec![String::new(); self.inner.names.len()];
        for (parts, label) in self.inner.labels.iter().zip(got) {
            match_label(parts, label, &mut values)?;
        }
        Some(Captures {
            names: self.inner.clone(),
            values,
        })
    }
}

fn match_label(parts: &[Part], label: &str, values: &mut [String]) -> Option<()> {
    let mut rest = label;
    let mut i = 0;
    while i < parts.len() {
        match &parts[i] {
            Part::Lit(lit) => rest = rest.strip_prefix(lit.as_str())?,
            Part::Cap(idx) => {
                let value = match parts.get(i + 1) {
                    // The last capture takes the rest, up to the label's literal suffix.
                    None => std::mem::take(&mut rest),
                    Some(Part::Lit(lit)) if i + 2 == parts.len() => {
                        let v = rest.strip_suffix(lit.as_str())?;
                        rest = &rest[v.len()..];
                        v
                    }
                    Some(Part::Lit(lit)) => {
                        // Shortest text (at least one character) up to the next literal.
                        let pos = rest.get(1..)?.find(lit.as_str())? + 1;
                        let v = &rest[..pos];
                        rest = &rest[pos..];
                        v
                    }
                    Some(Part::Cap(_)) => return None,
                };
                if value.is_empty() {
                    return None;
                }
                values[*idx] = value.to_owned();
            }
        }
        i += 1;
    }
    rest.is_empty().then_some(())
}

impl HostPattern {
    /// Matches a request head: the host comes from the request target's authority (HTTP/2
    /// `:authority`, absolute-form) or the `Host` header; both present must agree. A missing,
    /// repeated or malformed Host is an error ([`RouteError::BadHost`]).
    pub(crate) fn match_head(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Option<Captures>, RouteError> {
        let host = request_host(uri, headers)?;
        let valid = !host.contains('@')
            && split_host_port(host).is_some_and(|(name, _)| normalize_host(name).is_some());
        if !valid {
            return Err(RouteError::BadHost("invalid Host"));
        }
        Ok(self.matches(host))
    }
}

impl FromStr for HostPattern {
    type Err = RouteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostPattern::new(s)
    }
}

impl fmt::Debug for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HostPattern")
            .field(&self.inner.source)
            .finish()
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.source)
    }
}

/// The values a [`HostPattern`] captured from a Host, lower-case.
#[derive(Clone)]
pub struct Captures {
    names: Arc<PatternInner>,
    values: Vec<String>,
}

impl Captures {
    /// The value captured under `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let i = self.names.names.iter().position(|n| n == name)?;
        Some(self.values[i].as_str())
    }

    /// The value captured under `name` read as a port: canonical decimal digits (no sign, no leading
    /// zero), 1 to 65535.
    pub fn port(&self, name: &str) -> Option<u16> {
        let v = self.get(name)?;
        if v.is_empty()
            || v.len() > 5
            || v.starts_with('0')
            || !v.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        v.parse().ok()
    }

    /// Every capture as `(name, value)`, in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.names
            .names
            .iter()
            .map(String::as_str)
            .zip(self.values.iter().map(String::as_str))
    }
}

impl fmt::Debug for Captures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Maps a [`HostPattern`]'s captures to the upstream a request goes to; see [`HostRoute`].
///
/// Implemented by closures `Fn(&Captures) -> Result<Upstream, RouteError>` and by
/// [`LocalPorts`].
pub trait MapCaptures {
    /// The upstream for these captures, or why there is none.
    fn upstream(&self, captures: &Captures) -> Result<Upstream, RouteError>;
}

impl<F> MapCaptures for F
where
    F: Fn(&Captures) -> Result<Upstream, RouteError>,
{
    fn upstream(&self, captures: &Captures) -> Result<Upstream, RouteError> {
        self(captures)
    }
}

/// Routes by the request's Host: a [`HostPattern`] and a map from its captures to an upstream. The
/// request path goes upstream unchanged (joined under the upstream's base path), with no mount
/// prefix.
///
/// A Host that does not match is answered 404; a missing, repeated or malformed Host 400. For a
/// lookup that has to wait (an orchestrator call), use [`HostPattern::matches`] inside your own
/// async [`Resolve`] closure.
///
/// ```
/// use sandbox_gateway::route::{HostPattern, HostRoute, RouteError, RouteLayer, Upstream};
///
/// // `{port}-{id}.preview.example.com` → the sandbox's address, from a table of your own.
/// let route = HostRoute::new(
///     "{port}-{id}.preview.example.com".parse::<HostPattern>()?,
///     |c: &sandbox_gateway::route::Captures| {
///         let port = c.port("port").ok_or(RouteError::NotFound)?;
///         let id = c.get("id").ok_or(RouteError::NotFound)?;
///         format!("http://sandbox-{id}.internal:{port}").parse::<Upstream>()
///     },
/// );
/// let layer = RouteLayer::new(route);
/// # let _ = layer;
/// # Ok::<(), RouteError>(())
/// ```
#[derive(Clone, Debug)]
pub struct HostRoute<M> {
    pattern: HostPattern,
    map: M,
}

impl<M: MapCaptures> HostRoute<M> {
    /// A route matching `pattern`, its upstream chosen by `map`.
    pub fn new(pattern: HostPattern, map: M) -> Self {
        HostRoute { pattern, map }
    }
}

impl<M> HostRoute<M> {
    /// The pattern.
    pub fn pattern(&self) -> &HostPattern {
        &self.pattern
    }

    /// Matches a request head: the host comes from the request target's authority (HTTP/2
    /// `:authority`, absolute-form) or the `Host` header; both present must agree.
    pub fn match_request(&self, parts: &Parts) -> Result<Option<Captures>, RouteError> {
        self.pattern.match_head(&parts.uri, &parts.headers)
    }
}

impl HostRoute<LocalPorts> {
    /// Dev servers by port: `{port}.localhost` (or `{port}-{id}.preview.example.com`, …) goes to
    /// `localhost:{port}`, the port read from the capture `capture`. Like
    /// [`PathMount`](super::PathMount), ports are denied until allowed.
    ///
    /// # Errors
    /// [`RouteError::Config`] when the pattern has no capture named `capture`.
    ///
    /// ```
    /// use sandbox_gateway::route::{HostPattern, HostRoute, RouteLayer};
    ///
    /// let route = HostRoute::ports("{port}.localhost".parse::<HostPattern>()?, "port")?
    ///     .allow_ports([5173, 3000]);
    /// let layer = RouteLayer::new(route);
    /// # let _ = layer;
    /// # Ok::<(), sandbox_gateway::route::RouteError>(())
    /// ```
    pub fn ports(pattern: HostPattern, capture: &str) -> Result<Self, RouteError> {
        if !pattern.capture_names().any(|n| n == capture) {
            return Err(RouteError::Config(format!(
                "host pattern `{pattern}` has no capture named `{capture}`"
            )));
        }
        Ok(HostRoute {
            pattern,
            map: LocalPorts {
                capture: capture.to_owned(),
                host: "localhost".to_owned(),
                scheme: Scheme::HTTP,
                ports: BTreeSet::new(),
            },
        })
    }

    /// Allows one upstream port. The upstream port never appears in a URL the browser sees, so
    /// ports on the [bad-port list](super::is_bad_port) (such as 6000) are fine here.
    pub fn allow_port(self, port: u16) -> Self {
        self.allow_ports([port])
    }

    /// Allows several upstream ports.
    pub fn allow_ports(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.map.ports.extend(ports.into_iter().filter(|&p| p != 0));
        self
    }

    /// The host the dev servers listen on (default `localhost`: both loopbacks are tried).
    ///
    /// # Errors
    /// [`RouteError::Config`] when `host` is not a host name or IP literal.
    pub fn upstream_host(mut self, host: &str) -> Result<Self, RouteError> {
        if host.contains(['@', '/']) || format!("{host}:1").parse::<Authority>().is_err() {
            return Err(RouteError::Config(format!(
                "upstream host `{host}` is not a valid host"
            )));
        }
        self.map.host = host.to_owned();
        Ok(self)
    }

    /// Use `https` to reach the dev servers (default `http`).
    pub fn upstream_https(mut self) -> Self {
        self.map.scheme = Scheme::HTTPS;
        self
    }
}

/// The [`MapCaptures`] of [`HostRoute::ports`]: a captured port to `{host}:{port}`, allowed ports
/// only.
#[derive(Clone, Debug)]
pub struct LocalPorts {
    capture: String,
    host: String,
    scheme: Scheme,
    ports: BTreeSet<u16>,
}

impl MapCaptures for LocalPorts {
    fn upstream(&self, captures: &Captures) -> Result<Upstream, RouteError> {
        let port = captures.port(&self.capture).ok_or(RouteError::NotFound)?;
        if !self.ports.contains(&port) {
            return Err(RouteError::PortNotAllowed(port));
        }
        let authority: Authority = format!("{}:{}", self.host, port)
            .parse()
            .map_err(|_| RouteError::Config("invalid upstream host".into()))?;
        Ok(Upstream::new(self.scheme.clone(), authority))
    }
}

impl<M: MapCaptures> Resolve for HostRoute<M> {
    type Future = Ready<Result<Target, RouteError>>;

    fn resolve(&self, parts: &Parts) -> Self::Future {
        let result = self.match_request(parts).and_then(|captures| {
            let captures = captures.ok_or(RouteError::NotFound)?;
            let upstream = self.map.upstream(&captures)?;
            let pq = parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            Ok(upstream.target(pq))
        });
        ready(result)
    }
}

/// The host a request is addressed to, as sent (port included).
fn request_host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Result<&'a str, RouteError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let header_host = match (hosts.next(), hosts.next()) {
        (None, _) => None,
        (Some(v), None) => Some(
            v.to_str()
                .map_err(|_| RouteError::BadHost("invalid Host header"))?,
        ),
        (Some(_), Some(_)) => return Err(RouteError::BadHost("several Host headers")),
    };
    match (uri.authority().map(Authority::as_str), header_host) {
        (Some(u), Some(h)) if !u.eq_ignore_ascii_case(h) => Err(RouteError::BadHost(
            "Host header and request target name different hosts",
        )),
        (Some(u), _) => Ok(u),
        (None, Some(h)) => Ok(h),
        (None, None) => Err(RouteError::BadHost("missing Host header")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        s.parse().unwrap()
    }

    #[test]
    fn single_capture_and_look_alikes() {
        let pat = p("dev-{id}.example.com");
        assert_eq!(
            pat.matches("dev-1.example.com").unwrap().get("id"),
            Some("1")
        );
        assert_eq!(
            pat.matches("DEV-Abc.Example.COM.:8080").unwrap().get("id"),
            Some("abc")
        );
        for bad in [
            "dev-1.example.com.evil.com",
            "evil.dev-1.example.com",
            "xdev-1.example.com",
            "dev-.example.com",
            "dev-1.example.co",
            "dev-1.examplexcom",
            "dev-1.example.com..",
            "u@dev-1.example.com",
            "dev-1.example.com:abc",
            "[::1]",
            "",
        ] {
            assert!(pat.matches(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn two_captures_in_one_label() {
        let pat = p("{port}-{id}.preview.example.com");
        let c = pat.matches("5173-my-app.preview.example.com").unwrap();
        assert_eq!(c.port("port"), Some(5173));
        assert_eq!(c.get("id"), Some("my-app"));
        assert!(pat.matches("5173.preview.example.com").is_none());
        assert!(pat.matches("-x.preview.example.com").is_none());
        let c = pat.matches("abc-x.preview.example.com").unwrap();
        assert_eq!(c.port("port"), None);
        let names: Vec<_> = c.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["port", "id"]);
    }

    #[test]
    fn literal_suffix_and_punycode() {
        let pat = p("{id}-dev.{region}.example.com");
        let c = pat.matches("a-b-dev.eu.example.com").unwrap();
        assert_eq!(c.get("id"), Some("a-b"));
        assert_eq!(c.get("region"), Some("eu"));
        assert!(pat.matches("-dev.eu.example.com").is_none());
        let pat = p("{id}.xn--bcher-kva.example");
        let c = pat.matches("xn--caf-dma.XN--BCHER-KVA.example").unwrap();
        assert_eq!(c.get("id"), Some("xn--caf-dma"));
        assert!(pat.matches("café.bücher.example").is_none());
    }

    #[test]
    fn ports_in_captures_are_canonical() {
        let pat = p("{port}.localhost");
        for (host, port) in [
            ("5173.localhost", Some(5173)),
            ("5173.localhost:8080", Some(5173)),
            ("05173.localhost", None),
            ("99999.localhost", None),
            ("0.localhost", None),
        ] {
            assert_eq!(
                pat.matches(host).and_then(|c| c.port("port")),
                port,
                "{host}"
            );
        }
    }

    #[test]
    fn pattern_port_must_match_and_not_be_bad() {
        let pat = p("{id}.example.com:8443");
        assert!(pat.matches("a.example.com:8443").is_some());
        assert!(pat.matches("a.example.com:8080").is_none());
        assert!(pat.matches("a.example.com").is_none());
        assert!(p("{id}.example.com:443").matches("a.example.com").is_some());
        assert_eq!(
            HostPattern::new("{id}.example.com:6000"),
            Err(RouteError::UnsafePort(6000))
        );
    }

    #[test]
    fn malformed_patterns() {
        for bad in [
            "",
            "a..b",
            "{id",
            "{}.x",
            "{Id}.x",
            "{a}{b}.x",
            "{a}.{a}.x",
            "bücher.{id}",
            "a b.{id}",
            "{id}.x:0x1",
            "{id}.x:099",
        ] {
            assert!(
                matches!(HostPattern::new(bad), Err(RouteError::Config(_))),
                "{bad}"
            );
        }
    }

    fn parts(host: Option<&str>, uri: &str) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn resolves_ports_by_host() {
        let route = HostRoute::ports(p("{port}.localhost"), "port")
            .unwrap()
            .allow_port(6000);
        let t = route
            .resolve(&parts(Some("6000.localhost:8080"), "/a?b"))
            .into_inner()
            .unwrap();
        assert_eq!(t.uri().to_string(), "http://localhost:6000/a?b");
        assert_eq!(t.mount(), None);
        assert_eq!(
            route
                .resolve(&parts(Some("5173.localhost"), "/"))
                .into_inner(),
            Err(RouteError::PortNotAllowed(5173))
        );
        assert_eq!(
            route
                .resolve(&parts(Some("other.localhost"), "/"))
                .into_inner(),
            Err(RouteError::NotFound)
        );
        assert!(matches!(
            route.resolve(&parts(None, "/")).into_inner(),
            Err(RouteError::BadHost(_))
        ));
        assert!(matches!(
            route
                .resolve(&parts(Some("6000.localhost"), "http://5173.localhost/"))
                .into_inner(),
            Err(RouteError::BadHost(_))
        ));
        assert!(HostRoute::ports(p("{id}.localhost"), "port").is_err());
    }
}
