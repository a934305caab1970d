//! Path mounts in code-server's two styles: `/proxy/{port}/…` and `/absproxy/{port}/…`.

use std::collections::BTreeSet;
use std::future::{ready, Ready};
use std::sync::Arc;

use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};

use super::{Resolve, RouteError, Target};

/// Whether a [`PathMount`] strips its prefix before proxying or keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MountStyle {
    /// `/proxy/{port}/a` reaches the upstream as `/a` (code-server's `/proxy/`).
    Strip,
    /// `/absproxy/{port}/a` reaches the upstream as `/absproxy/{port}/a`, for apps configured with
    /// that base path (code-server's `/absproxy/`, Vite's `base`).
    Keep,
}

/// Routes `{prefix}/{port}/…` to a dev server on `{host}:{port}` (by default `localhost`, which the
/// [`connect`](crate::connect) module resolves to both loopbacks).
///
/// Ports are denied by default: only ports added with [`allow_port`](Self::allow_port) or
/// [`allow_ports`](Self::allow_ports) are reachable, anything else is answered 403. A request for the
/// bare mount (`/proxy/5173`) is redirected to its slash form (`/proxy/5173/`), so that cookies and
/// relative URLs scoped to the mount work.
///
/// ```
/// use sandbox_gateway::route::PathMount;
///
/// let mount = PathMount::strip("/proxy").allow_ports([5173, 3000]);
/// # let _ = mount;
/// ```
#[derive(Clone, Debug)]
pub struct PathMount {
    inner: Arc<MountConfig>,
}

#[derive(Clone, Debug)]
struct MountConfig {
    prefix: String,
    style: MountStyle,
    host: String,
    scheme: Scheme,
    ports: BTreeSet<u16>,
}

impl PathMount {
    /// A mount at `prefix` that strips `{prefix}/{port}` from the path.
    ///
    /// # Panics
    /// If `prefix` does not start with `/` or holds characters outside a plain path segment; this is
    /// a configuration mistake found when the gateway is built.
    pub fn strip(prefix: &str) -> Self {
        Self::with_style(prefix, MountStyle::Strip)
    }

    /// A mount at `prefix` that keeps the whole path.
    ///
    /// # Panics
    /// As [`strip`](Self::strip).
    pub fn keep(prefix: &str) -> Self {
        Self::with_style(prefix, MountStyle::Keep)
    }

    /// A mount at `prefix` in the given style.
    ///
    /// # Panics
    /// As [`strip`](Self::strip).
    pub fn with_style(prefix: &str, style: MountStyle) -> Self {
        let prefix = prefix.trim_end_matches('/');
        assert!(
            prefix.is_empty()
                || (prefix.starts_with('/')
                    && super::check_path(prefix).is_ok()
                    && prefix
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/-_.~@".contains(&b))),
            "mount prefix `{prefix}` must start with `/` and be a plain path"
        );
        PathMount {
            inner: Arc::new(MountConfig {
                prefix: prefix.to_owned(),
                style,
                host: "localhost".to_owned(),
                scheme: Scheme::HTTP,
                ports: BTreeSet::new(),
            }),
        }
    }

    /// Allows one upstream port.
    ///
    /// Ports on the Fetch standard's [bad-port list](super::is_bad_port) (such as 6000 or 6666) are
    /// accepted on purpose: the upstream port is a path segment here, never the port of a URL the
    /// browser loads, so `/proxy/6000/` is how a browser reaches a dev server it would refuse to
    /// load from `http://localhost:6000/`. Check the gateway's own listening port with
    /// [`check_public_port`](super::check_public_port).
    pub fn allow_port(self, port: u16) -> Self {
        self.allow_ports([port])
    }

    /// Allows several upstream ports.
    pub fn allow_ports(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        let cfg = Arc::make_mut(&mut self.inner);
        cfg.ports.extend(ports.into_iter().filter(|&p| p != 0));
        self
    }

    /// The host the dev servers listen on (default `localhost`: both loopbacks are tried).
    ///
    /// # Panics
    /// If `host` is not a valid host name or IP literal.
    pub fn upstream_host(mut self, host: &str) -> Self {
        assert!(
            !host.contains(['@', '/']) && format!("{host}:1").parse::<Authority>().is_ok(),
            "upstream host `{host}` is not a valid host"
        );
        Arc::make_mut(&mut self.inner).host = host.to_owned();
        self
    }

    /// Use `https` to reach the dev servers (default `http`).
    pub fn upstream_https(mut self) -> Self {
        Arc::make_mut(&mut self.inner).scheme = Scheme::HTTPS;
        self
    }

    /// The mount prefix, without a trailing slash.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The ports this mount lets through.
    pub fn allowed_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.inner.ports.iter().copied()
    }

    /// Resolves a path and query to a target, the logic behind the [`Resolve`] implementation.
    pub fn resolve_path(&self, path_and_query: &PathAndQuery) -> Result<Target, RouteError> {
        let cfg = &*self.inner;
        let path = path_and_query.path();
        let rest = path
            .strip_prefix(cfg.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or(RouteError::NotFound)?;
        let (port_str, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let port = parse_port(port_str)?;
        let mount = format!("{}/{}", cfg.prefix, port_str);
        let Some(tail) = tail else {
            let mut location = format!("{mount}/");
            if let Some(q) = path_and_query.query() {
                location.push('?');
                location.push_str(q);
            }
            return Err(RouteError::AddSlash(location));
        };
        if !cfg.ports.contains(&port) {
            return Err(RouteError::PortNotAllowed(port));
        }
        let upstream_path = match cfg.style {
            MountStyle::Strip => tail,
            MountStyle::Keep => path,
        };
        let pq = match path_and_query.query() {
            Some(q) => PathAndQuery::from_maybe_shared(format!("{upstream_path}?{q}")),
            None => upstream_path.parse(),
        }
        .map_err(|_| RouteError::BadPath("invalid path"))?;
        let authority: Authority = format!("{}:{}", cfg.host, port)
            .parse()
            .map_err(|_| RouteError::Config("invalid upstream host".into()))?;
        Ok(Target::new(cfg.scheme.clone(), authority, pq).with_mount(mount))
    }
}

fn parse_port(s: &str) -> Result<u16, RouteError> {
    let canonical = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && !s.starts_with('0');
    if !canonical {
        return Err(RouteError::BadPath(
            "the segment after the mount must be a port number",
        ));
    }
    match s.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(RouteError::BadPath("port out of range")),
    }
}

impl Resolve for PathMount {
    type Future = Ready<Result<Target, RouteError>>;

    fn resolve(&self, parts: &Parts) -> Self::Future {
        let pq = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        ready(self.resolve_path(&pq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pq(s: &str) -> PathAndQuery {
        s.parse().unwrap()
    }

    #[test]
    fn strip_mount_strips_prefix_and_keeps_query() {
        let m = PathMount::strip("/proxy").allow_port(5173);
        let t = m.resolve_path(&pq("/proxy/5173/src/a.ts?v=1")).unwrap();
        assert_eq!(t.uri().to_string(), "http://localhost:5173/src/a.ts?v=1");
        assert_eq!(t.mount(), Some("/proxy/5173"));
        let t = m.resolve_path(&pq("/proxy/5173/")).unwrap();
        assert_eq!(t.path_and_query().as_str(), "/");
    }

    #[test]
    fn keep_mount_keeps_prefix() {
        let m = PathMount::keep("/absproxy").allow_port(3000);
        let t = m.resolve_path(&pq("/absproxy/3000/x")).unwrap();
        assert_eq!(t.uri().to_string(), "http://localhost:3000/absproxy/3000/x");
        assert_eq!(t.mount(), Some("/absproxy/3000"));
    }

    #[test]
    fn ports_are_denied_by_default() {
        let m = PathMount::strip("/proxy");
        assert_eq!(
            m.resolve_path(&pq("/proxy/5173/")),
            Err(RouteError::PortNotAllowed(5173))
        );
        let m = m.allow_port(5173);
        assert_eq!(
            m.resolve_path(&pq("/proxy/22/")),
            Err(RouteError::PortNotAllowed(22))
        );
    }

    #[test]
    fn bare_mount_redirects_to_slash_form() {
        let m = PathMount::strip("/proxy").allow_port(5173);
        assert_eq!(
            m.resolve_path(&pq("/proxy/5173?a=b")),
            Err(RouteError::AddSlash("/proxy/5173/?a=b".into()))
        );
    }

    #[test]
    fn malformed_ports_and_other_prefixes() {
        let m = PathMount::strip("/proxy").allow_port(5173);
        for bad in [
            "/proxy/05173/",
            "/proxy/+5173/",
            "/proxy/99999/",
            "/proxy/0/",
            "/proxy/abc/",
            "/proxy//",
        ] {
            assert!(
                matches!(m.resolve_path(&pq(bad)), Err(RouteError::BadPath(_))),
                "{bad}"
            );
        }
        assert_eq!(
            m.resolve_path(&pq("/proxyx/5173/")),
            Err(RouteError::NotFound)
        );
        assert_eq!(m.resolve_path(&pq("/other")), Err(RouteError::NotFound));
    }
}
