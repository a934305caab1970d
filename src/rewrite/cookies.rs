//! The cookie firewall: which cookies cross between the browser and a sandbox.
//!
//! The mapping and the choices behind it are documented on [`CookieFirewall`].

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};

use super::RewriteError;
use crate::util::{cookie_pairs, is_token, split_cookie_pair};

/// The first part of every namespace, and the name family reserved to the gateway.
const BASE: &str = "sgw";
const SECURE: &str = "__Secure-";
const HOST: &str = "__Host-";

/// Which cookies cross between the browser and a sandbox. On by default in
/// [`RewriteLayer`](super::RewriteLayer).
///
/// On a shared origin every cookie of the origin whose `Path` matches reaches every mount: the
/// host's login session set at `Path=/`, the gateway's own cookies, the cookies of other
/// sandboxes. Paths are no isolation (RFC 6265 §8.5), and the browser sends the host's cookies and
/// the sandbox's in one `Cookie` header with nothing to tell them apart but their names. So the
/// gateway names the sandbox's cookies itself.
///
/// # The mapping
///
/// Each route to a sandbox has a namespace: `sgw` then its mount with `/` written `.` (letters,
/// digits, `-` and `_` kept, any other byte `%XX`), then `~`. For `/proxy/5173` it is
/// `sgw.proxy.5173~`, for `/__ide/demo` `sgw.__ide.demo~`; a route without a mount (a host route,
/// its own origin) has `sgw~`.
///
/// | the sandbox answers | the browser stores | the sandbox is sent back |
/// |---|---|---|
/// | `Set-Cookie: session=1; Path=/` | `sgw.proxy.5173~session=1; Path=/proxy/5173/` | `Cookie: session=1` |
/// | `Set-Cookie: __Secure-id=2; Secure` | `__Secure-sgw.proxy.5173~__Secure-id=2` | `Cookie: __Secure-id=2` |
/// | `Set-Cookie: __Host-id=3; Secure; Path=/` | `__Secure-sgw.proxy.5173~__Host-id=3; Path=/proxy/5173/` | `Cookie: __Host-id=3` |
/// | `Set-Cookie: sgw_ide_other=…` (a gateway name) | nothing: dropped | — |
/// | `Set-Cookie: =x` or a name that is not a token | nothing: dropped | — |
///
/// On the way in, only cookies of the route's own namespace pass, mapped back to the names the
/// sandbox set; every other cookie is dropped — the host's session, the gateway's cookies, other
/// sandboxes' namespaces, cookies a script wrote by hand — except the names the host chose to share
/// ([`CookieFirewall::share`]), which pass as they are. Several `Cookie` fields (HTTP/2) are read
/// alike and sent on as one.
///
/// - `__Secure-` and `__Host-` must come first in a name for the browser to enforce them, so a
///   name carrying either keeps an outer `__Secure-` (or, on a route without a mount, where `Path`
///   is not rewritten, `__Host-`) before the namespace; the inner name is sent back only when the
///   outer prefix is there, so the sandbox never receives a `__Host-` name the browser did not
///   vouch for. `__Host-` cannot stay outermost under a mount: it requires `Path=/`.
/// - The namespace lengthens names; browsers refuse a cookie whose name and value pass 4096 bytes.
/// - Scripts see the stored names: a page that reads its own cookie from `document.cookie` finds
///   it under its namespaced name. Servers never do. Name such cookies in
///   [`CookieFirewall::script_readable`] (JupyterLab's `_xsrf`), or give the app a route of its
///   own origin with [`CookieFirewall::namespace_host_routes`] off.
///
/// # Host routes
///
/// A sandbox served on an origin of its own (`5173-abc.preview.example.com`) is sent only its own
/// host-only cookies, plus any cookie set with `Domain=` on a parent (`Domain=example.com` from the
/// host's app, or from a sibling sandbox's script). The firewall namespaces these routes too by
/// default, so a parent-domain cookie of the host never reaches them. A deployment whose sandbox
/// domain is a registrable domain of its own (ideally on the Public Suffix List), where no host
/// cookie can reach it, may turn this off with [`CookieFirewall::namespace_host_routes`]: names
/// then pass unchanged both ways, but the gateway's names and other namespaces are still dropped.
///
/// On a shared origin, script of one sandbox can still read and write the non-`HttpOnly` cookies
/// of the whole origin; only per-sandbox origins stop that.
///
/// ```
/// use sandbox_gateway::rewrite::{CookieFirewall, RewriteLayer};
///
/// // The host's `theme` cookie reaches sandboxes on purpose; the tunnel cookie was renamed.
/// let firewall = CookieFirewall::new().share(["theme"])?.reserve(["my_ide"])?;
/// let layer = RewriteLayer::new().cookie_firewall(firewall);
/// # let _ = layer;
/// # Ok::<(), sandbox_gateway::rewrite::RewriteError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieFirewall {
    on: bool,
    host_routes: bool,
    share: Arc<[String]>,
    reserved: Arc<[String]>,
    readable: Arc<[String]>,
}

impl Default for CookieFirewall {
    fn default() -> Self {
        Self::new()
    }
}

impl CookieFirewall {
    /// The default: every route namespaced, nothing shared, the `sgw` names reserved.
    pub fn new() -> Self {
        CookieFirewall {
            on: true,
            host_routes: true,
            share: Arc::from([]),
            reserved: Arc::from([BASE.to_owned()]),
            readable: Arc::from([]),
        }
    }

    /// No firewall: `Cookie` and `Set-Cookie` names pass unchanged (a `Set-Cookie` of a reserved
    /// name, or whose name is not a token, is still dropped). For an upstream that is not a
    /// sandbox.
    pub fn off() -> Self {
        CookieFirewall {
            on: false,
            ..Self::new()
        }
    }

    /// Host cookies (exact names) that reach sandboxes unchanged, on purpose. Sandboxes cannot set
    /// them: a `Set-Cookie` of such a name is namespaced like any other.
    ///
    /// # Errors
    /// [`RewriteError::InvalidCookieName`] for a name that is not a token, or that is reserved.
    pub fn share<I, N>(mut self, names: I) -> Result<Self, RewriteError>
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        let mut share: Vec<String> = self.share.to_vec();
        for n in names {
            let n = n.as_ref();
            if !is_token(n) || self.is_reserved(n) {
                return Err(RewriteError::InvalidCookieName(n.to_owned()));
            }
            share.push(n.to_owned());
        }
        self.share = share.into();
        Ok(self)
    }

    /// Names of the gateway's own cookies, besides the `sgw` family reserved by default (which
    /// covers the tunnel cookie `sgw_ide_{id}`; add its base name here if you renamed it). A name
    /// is reserved with every name that continues it after `_`, `.` or `~`, with or without a
    /// `__Secure-`/`__Host-` prefix; a sandbox's `Set-Cookie` of a reserved name is dropped.
    ///
    /// # Errors
    /// [`RewriteError::InvalidCookieName`] for a name that is not a token.
    pub fn reserve<I, N>(mut self, names: I) -> Result<Self, RewriteError>
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        let mut reserved: Vec<String> = self.reserved.to_vec();
        for n in names {
            let n = n.as_ref();
            if !is_token(n) {
                return Err(RewriteError::InvalidCookieName(n.to_owned()));
            }
            reserved.push(n.to_owned());
        }
        self.reserved = reserved.into();
        Ok(self)
    }

    /// Names a sandbox keeps as it set them, for a page whose script reads its own cookie from
    /// `document.cookie` (JupyterLab sends its `_xsrf` cookie back as the `X-XSRFToken` header:
    /// `script_readable(["_xsrf"])`). Such a cookie is stored under its own name, its `Path` still
    /// kept under the mount; on the way in only the first cookie of that name passes, which is the
    /// one with the longest path (RFC 6265 §5.4), so the sandbox's own when it set one, never one
    /// of another mount. List only names the host does not use itself: when the sandbox set none,
    /// a host cookie of that name would pass.
    ///
    /// # Errors
    /// [`RewriteError::InvalidCookieName`] for a name that is not a token, or that is reserved.
    pub fn script_readable<I, N>(mut self, names: I) -> Result<Self, RewriteError>
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        let mut readable: Vec<String> = self.readable.to_vec();
        for n in names {
            let n = n.as_ref();
            if !is_token(n) || self.is_reserved(n) {
                return Err(RewriteError::InvalidCookieName(n.to_owned()));
            }
            readable.push(n.to_owned());
        }
        self.readable = readable.into();
        Ok(self)
    }

    /// Whether routes without a mount (their own origin) are namespaced too (default `true`).
    /// Turn off only when sandboxes live on a registrable domain of their own, which no host cookie
    /// can reach; see the [type docs](CookieFirewall).
    pub fn namespace_host_routes(mut self, on: bool) -> Self {
        self.host_routes = on;
        self
    }

    /// Whether a cookie name belongs to the gateway.
    pub(crate) fn is_reserved(&self, name: &str) -> bool {
        let bare = strip_prefix_ci(name, SECURE)
            .or_else(|| strip_prefix_ci(name, HOST))
            .unwrap_or(name);
        self.reserved.iter().any(|r| {
            strip_prefix_ci(bare, r)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['_', '.', '~']))
        })
    }

    /// The namespace of a route (`Some(mount)` for a mount, `None` for a host route), or `None`
    /// when its names pass unchanged.
    pub(crate) fn namespace(&self, mount: Option<&str>) -> Option<Namespace> {
        if !self.on || (mount.is_none() && !self.host_routes) {
            return None;
        }
        let mut prefix = String::from(BASE);
        for &b in mount.unwrap_or("").as_bytes() {
            match b {
                b'/' => prefix.push('.'),
                b if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' => prefix.push(b as char),
                b => prefix.push_str(&format!("%{b:02X}")),
            }
        }
        prefix.push('~');
        Some(Namespace {
            prefix,
            mounted: mount.is_some(),
        })
    }

    /// Filters the `Cookie` headers of a request to a sandbox: see the [type docs](CookieFirewall).
    pub(crate) fn filter_request(&self, headers: &mut HeaderMap, ns: Option<&Namespace>) {
        if !headers.contains_key(header::COOKIE) {
            return;
        }
        let mut out: Vec<u8> = Vec::new();
        let mut changed = false;
        let mut fields = 0;
        let mut readable_seen: Vec<&[u8]> = Vec::new();
        for v in headers.get_all(header::COOKIE) {
            fields += 1;
            for pair in cookie_pairs(v.as_bytes()) {
                let (name, value) = split_cookie_pair(pair);
                let name = std::str::from_utf8(name).unwrap_or("");
                let kept = match ns {
                    _ if !is_token(name) => None,
                    Some(ns) => ns.inbound(name).or_else(|| {
                        let first_readable = self.readable.iter().any(|r| r == name)
                            && !readable_seen.contains(&name.as_bytes());
                        if first_readable {
                            readable_seen.push(name.as_bytes());
                        }
                        (first_readable || self.is_shared(name)).then_some(name)
                    }),
                    // Names unchanged: only the gateway's own and namespaced ones stay out.
                    None if self.is_reserved(name) => None,
                    None => Some(name),
                };
                match kept {
                    Some(n) => {
                        changed |= n.len() != name.len();
                        if !out.is_empty() {
                            out.extend_from_slice(b"; ");
                        }
                        out.extend_from_slice(n.as_bytes());
                        out.push(b'=');
                        out.extend_from_slice(value);
                    }
                    None => changed = true,
                }
            }
        }
        if !changed && fields == 1 {
            return;
        }
        headers.remove(header::COOKIE);
        if let (false, Ok(v)) = (out.is_empty(), HeaderValue::from_bytes(&out)) {
            headers.insert(header::COOKIE, v);
        }
    }

    fn is_shared(&self, name: &str) -> bool {
        self.share.iter().any(|s| s == name)
    }

    /// The `Set-Cookie` of a sandbox with its name mapped into `ns`; `None` when it is dropped
    /// (no name, not a token, reserved). `Some(None)` when it passes unchanged.
    pub(crate) fn outbound(
        &self,
        set_cookie: &str,
        ns: Option<&Namespace>,
    ) -> Option<Option<String>> {
        let first = set_cookie.split(';').next().unwrap_or("");
        let (name, rest) = first.split_once('=')?;
        let name = name.trim();
        if !is_token(name) || self.is_reserved(name) {
            return None;
        }
        let Some(ns) = ns else {
            return Some(None);
        };
        if self.readable.iter().any(|r| r == name) {
            return Some(None);
        }
        let after = &set_cookie[first.len()..];
        Some(Some(format!(
            "{}={}{}",
            ns.outbound(name),
            rest.trim(),
            after
        )))
    }
}

/// The namespace of one route to a sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Namespace {
    /// `sgw.proxy.5173~`.
    prefix: String,
    /// Whether the route is under a mount (where `Path` is rewritten, so `__Host-` cannot stay).
    mounted: bool,
}

impl Namespace {
    /// The name the browser stores for a cookie the sandbox names `name`.
    fn outbound(&self, name: &str) -> String {
        let outer = if strip_prefix_ci(name, HOST).is_some() && !self.mounted {
            HOST
        } else if strip_prefix_ci(name, SECURE).is_some() || strip_prefix_ci(name, HOST).is_some() {
            SECURE
        } else {
            ""
        };
        format!("{outer}{}{name}", self.prefix)
    }

    /// The name the sandbox set, for a cookie the browser sent as `name`; `None` when it is not of
    /// this namespace.
    fn inbound<'a>(&self, name: &'a str) -> Option<&'a str> {
        let (outer, rest) = match strip_prefix_ci(name, SECURE) {
            Some(rest) => (true, rest),
            None => match strip_prefix_ci(name, HOST) {
                Some(rest) => (true, rest),
                None => (false, name),
            },
        };
        let inner = rest.strip_prefix(self.prefix.as_str())?;
        let prefixed =
            strip_prefix_ci(inner, SECURE).is_some() || strip_prefix_ci(inner, HOST).is_some();
        (!inner.is_empty() && outer == prefixed).then_some(inner)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookies(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn sent(h: &HeaderMap) -> Vec<&str> {
        h.get_all(header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn namespaces_of_mounts() {
        let f = CookieFirewall::new();
        let ns = |m| f.namespace(m).map(|n| n.prefix);
        assert_eq!(ns(Some("/proxy/5173")).unwrap(), "sgw.proxy.5173~");
        assert_eq!(ns(Some("/__ide/demo")).unwrap(), "sgw.__ide.demo~");
        assert_eq!(ns(Some("/x/ide.v2")).unwrap(), "sgw.x.ide%2Ev2~");
        assert_eq!(ns(Some("/a~b/c")).unwrap(), "sgw.a%7Eb.c~");
        assert_eq!(ns(None).unwrap(), "sgw~");
        // Nested mounts never share a namespace: `~` ends it and never occurs inside.
        assert!(!ns(Some("/proxy/5173/x"))
            .unwrap()
            .starts_with(&ns(Some("/proxy/5173")).unwrap()));
        for m in ["/proxy/5173", "/x/ide.v2", "/a~b/c"] {
            assert!(
                ns(Some(m)).unwrap().bytes().all(crate::util::is_tchar),
                "{m}"
            );
        }
        assert_eq!(CookieFirewall::off().namespace(Some("/m")), None);
        let open_hosts = CookieFirewall::new().namespace_host_routes(false);
        assert_eq!(open_hosts.namespace(None), None);
        assert!(open_hosts.namespace(Some("/m")).is_some());
    }

    #[test]
    fn set_cookie_names_round_trip() {
        let f = CookieFirewall::new();
        let mounted = f.namespace(Some("/proxy/5173")).unwrap();
        let own = f.namespace(None).unwrap();
        for (ns, name, stored) in [
            (&mounted, "session", "sgw.proxy.5173~session"),
            (&mounted, "_xsrf", "sgw.proxy.5173~_xsrf"),
            (
                &mounted,
                "__Secure-id",
                "__Secure-sgw.proxy.5173~__Secure-id",
            ),
            (&mounted, "__Host-id", "__Secure-sgw.proxy.5173~__Host-id"),
            (&mounted, "__host-id", "__Secure-sgw.proxy.5173~__host-id"),
            (&own, "__Host-id", "__Host-sgw~__Host-id"),
            (&own, "__Secure-id", "__Secure-sgw~__Secure-id"),
            (&own, "a", "sgw~a"),
        ] {
            assert_eq!(ns.outbound(name), stored, "{name}");
            assert_eq!(ns.inbound(stored), Some(name), "{stored}");
        }
        // A prefixed inner name needs the browser's outer prefix, and the reverse.
        assert_eq!(mounted.inbound("sgw.proxy.5173~__Host-id"), None);
        assert_eq!(mounted.inbound("__Secure-sgw.proxy.5173~id"), None);
        assert_eq!(mounted.inbound("sgw.proxy.5173~"), None);
        assert_eq!(mounted.inbound("sgw.proxy.51734~a"), None);
        assert_eq!(mounted.inbound("sgw~a"), None);
        assert_eq!(own.inbound("sgw.proxy.5173~a"), None);
    }

    #[test]
    fn set_cookie_values() {
        let f = CookieFirewall::new();
        let ns = f.namespace(Some("/p")).unwrap();
        let out = |s| f.outbound(s, Some(&ns));
        assert_eq!(
            out("a=1; Path=/; HttpOnly"),
            Some(Some("sgw.p~a=1; Path=/; HttpOnly".to_owned()))
        );
        assert_eq!(out(" b = x=y "), Some(Some("sgw.p~b=x=y".to_owned())));
        for dropped in [
            "sgw_ide_demo=forged; Path=/__ide/demo/",
            "__Secure-sgw_ide_demo=forged",
            "SGW.proxy.1~a=1",
            "sgw~a=1",
            "nameless",
            "=value",
            "a b=1",
            "a;=1",
        ] {
            assert_eq!(out(dropped), None, "{dropped}");
        }
        assert_eq!(f.outbound("sgwx=1", None), Some(None));
        assert_eq!(f.outbound("sgw_ide_x=1", None), None);
    }

    #[test]
    fn requests_carry_only_their_namespace() {
        let f = CookieFirewall::new().share(["theme"]).unwrap();
        let ns = f.namespace(Some("/proxy/5173")).unwrap();
        let mut h = cookies(&[
            "session=HOST; sgw.proxy.5173~session=mine; theme=dark",
            "sgw_ide_demo=T; sgw.proxy.3000~session=other; __Secure-sgw.proxy.5173~__Host-id=h",
            "nameless; sgw.proxy.5173~_xsrf=\"q\"",
        ]);
        f.filter_request(&mut h, Some(&ns));
        assert_eq!(
            sent(&h),
            ["session=mine; theme=dark; __Host-id=h; _xsrf=\"q\""]
        );
        // Nothing of the namespace: no Cookie header at all.
        let mut h = cookies(&["session=HOST", "sgw_ide_demo=T"]);
        f.filter_request(&mut h, Some(&ns));
        assert!(!h.contains_key(header::COOKIE));
        // Names unchanged (host routes opted out): only gateway names stay out.
        let open = CookieFirewall::new().namespace_host_routes(false);
        let mut h = cookies(&["a=1;sgw~b=2", "c=3"]);
        open.filter_request(&mut h, open.namespace(None).as_ref());
        assert_eq!(sent(&h), ["a=1; c=3"]);
        let mut h = cookies(&["a=1;b=2"]);
        open.filter_request(&mut h, None);
        assert_eq!(sent(&h), ["a=1;b=2"], "untouched when nothing changes");
    }

    #[test]
    fn script_readable_names_keep_their_name_and_only_the_first_passes() {
        let f = CookieFirewall::new().script_readable(["_xsrf"]).unwrap();
        let ns = f.namespace(Some("/proxy/8888")).unwrap();
        assert_eq!(f.outbound("_xsrf=2|abc; Path=/", Some(&ns)), Some(None));
        assert_eq!(
            f.outbound("other=1", Some(&ns)),
            Some(Some("sgw.proxy.8888~other=1".to_owned()))
        );
        // The browser lists the longest path first: the sandbox's own, then the host's.
        let mut h = cookies(&["_xsrf=mine; session=HOST", "_xsrf=host"]);
        f.filter_request(&mut h, Some(&ns));
        assert_eq!(sent(&h), ["_xsrf=mine"]);
        assert!(CookieFirewall::new().script_readable(["sgw_x"]).is_err());
        assert!(CookieFirewall::new().script_readable(["a,b"]).is_err());
    }

    #[test]
    fn settings_are_checked() {
        assert!(CookieFirewall::new().share(["a b"]).is_err());
        assert!(CookieFirewall::new().share(["sgw_ide_demo"]).is_err());
        assert!(CookieFirewall::new().share([""]).is_err());
        assert!(CookieFirewall::new().reserve(["a;b"]).is_err());
        let f = CookieFirewall::new().reserve(["my_ide"]).unwrap();
        assert!(f.is_reserved("my_ide_demo"));
        assert!(f.is_reserved("__Host-MY_IDE"));
        assert!(!f.is_reserved("my_idea"));
        assert!(f.is_reserved("sgw"));
        assert!(!f.is_reserved("sgwx"));
    }
}
