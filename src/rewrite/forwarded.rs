//! Who the client is: `ClientAddr`, `ClientTls`, trusted proxies, and the `Forwarded` /
//! `X-Forwarded-*` headers built from them.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use super::RewriteError;

/// The address of the peer that opened the connection, as a request extension.
///
/// The gateway's server inserts it (hyper and axum do not on their own); without it the client is
/// unknown: `X-Forwarded-For` is not sent, `Forwarded` says `for=unknown`, and no peer is trusted.
/// `serve::Server` (feature `serve`) inserts it on every request, and [`ClientTls`] under TLS.
///
/// From a hyper accept loop of your own:
///
/// ```no_run
/// use hyper_util::rt::{TokioExecutor, TokioIo};
/// use hyper_util::server::conn::auto;
/// use hyper_util::service::TowerToHyperService;
/// use sandbox_gateway::rewrite::ClientAddr;
/// use tower::ServiceExt;
///
/// # async fn run<S>(svc: S) -> std::io::Result<()>
/// # where S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<sandbox_gateway::proxy::ProxyBody>, Error = std::convert::Infallible> + Clone + Send + 'static, S::Future: Send + 'static {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// loop {
///     let (stream, peer) = listener.accept().await?;
///     // Every request on this connection carries the peer address.
///     let svc = svc.clone().map_request(move |mut req: http::Request<_>| {
///         req.extensions_mut().insert(ClientAddr(peer));
///         req
///     });
///     tokio::spawn(async move {
///         let _ = auto::Builder::new(TokioExecutor::new())
///             .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(svc))
///             .await;
///     });
/// }
/// # }
/// ```
///
/// With axum, serve with `ConnectInfo` and copy it in a `map_request` middleware:
///
/// ```no_run
/// use std::net::SocketAddr;
/// use axum::extract::{ConnectInfo, Request};
/// use axum::{middleware, Router};
/// use sandbox_gateway::rewrite::ClientAddr;
///
/// async fn client_addr(ConnectInfo(peer): ConnectInfo<SocketAddr>, mut req: Request) -> Request {
///     req.extensions_mut().insert(ClientAddr(peer));
///     req
/// }
///
/// # async fn run(app: Router) -> std::io::Result<()> {
/// let app = app.layer(middleware::map_request(client_addr));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

impl From<SocketAddr> for ClientAddr {
    fn from(addr: SocketAddr) -> Self {
        ClientAddr(addr)
    }
}

/// A request extension saying the client's connection was TLS: the forwarded protocol is then
/// `https`. Insert it where TLS is terminated (or set
/// [`RewriteLayer::assume_https`](super::RewriteLayer::assume_https) when every connection is).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientTls;

/// An IP network: an address and a prefix length (`10.0.0.0/8`, `::1/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in the network. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) count as
    /// their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = RewriteError;

    /// Parses `address/prefix` or a bare address (a network of one). Bits set past the prefix are
    /// refused (`10.0.0.1/8` is most likely a typo).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| RewriteError::InvalidNetwork {
            value: s.to_owned(),
            reason,
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad("not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => Some(p)
                .filter(|p| {
                    !p.is_empty()
                        && p.len() <= 3
                        && p.bytes().all(|b| b.is_ascii_digit())
                        && (p == &"0" || !p.starts_with('0'))
                })
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|&p| p <= max)
                .ok_or_else(|| bad("the prefix length is not a number within the address size"))?,
        };
        let net = IpNet { addr, prefix };
        if !net.contains(addr) || net.network() != addr {
            return Err(bad("bits are set past the prefix length"));
        }
        Ok(net)
    }
}

impl IpNet {
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which immediate peers are trusted to report the client before them.
///
/// A trusted peer's `X-Forwarded-*` and `Forwarded` headers are kept and this hop is appended; an
/// untrusted peer's are dropped and replaced with what this gateway saw, so a browser cannot spoof
/// its address or the host it used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trust {
    /// No peer is trusted (the default): the gateway faces browsers directly.
    #[default]
    None,
    /// Loopback peers (`127.0.0.0/8`, `::1`) are trusted: a proxy on the same machine is in front.
    Loopback,
    /// Peers in these networks are trusted.
    Networks(Arc<[IpNet]>),
}

impl Trust {
    /// Trusts peers in the given networks (`"10.0.0.0/8"`, `"::1/128"`, or bare addresses).
    ///
    /// # Errors
    /// [`RewriteError::InvalidNetwork`] for an entry that is not a network.
    ///
    /// ```
    /// use sandbox_gateway::rewrite::Trust;
    ///
    /// let trust = Trust::networks(["10.0.0.0/8", "fd00::/8", "192.0.2.7"]).unwrap();
    /// assert!(trust.trusts("10.1.2.3".parse().unwrap()));
    /// assert!(!trust.trusts("127.0.0.1".parse().unwrap()));
    /// assert!(Trust::networks(["10.0.0.1/8"]).is_err());
    /// ```
    pub fn networks<I, S>(networks: I) -> Result<Self, RewriteError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nets = networks
            .into_iter()
            .map(|s| s.as_ref().trim().parse())
            .collect::<Result<Vec<IpNet>, _>>()?;
        Ok(Trust::Networks(nets.into()))
    }

    /// Whether a peer at `ip` is trusted.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        match self {
            Trust::None => false,
            Trust::Loopback => ip.to_canonical().is_loopback(),
            Trust::Networks(nets) => nets.iter().any(|n| n.contains(ip)),
        }
    }
}

/// A node of a `Forwarded` header (RFC 7239 §6): an address, `unknown`, or an obfuscated
/// identifier, each with an optional port.
///
/// Its `Display` is the value as it goes on the wire, quoted where RFC 7239 requires it (IPv6, and
/// anything with a port): `for="[::1]:4711"`, `for=192.0.2.43`, `for=_hidden`.
///
/// ```
/// use sandbox_gateway::rewrite::Node;
///
/// assert_eq!(Node::from("[::1]:4711".parse::<std::net::SocketAddr>().unwrap()).to_string(), "\"[::1]:4711\"");
/// assert_eq!(Node::ip("192.0.2.43".parse().unwrap()).to_string(), "192.0.2.43");
/// assert_eq!(Node::obfuscated("_gw1").unwrap().to_string(), "_gw1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    name: NodeName,
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum NodeName {
    Ip(IpAddr),
    Unknown,
    Obfuscated(Arc<str>),
}

impl Node {
    /// An address without a port.
    pub fn ip(ip: IpAddr) -> Self {
        Node {
            name: NodeName::Ip(ip.to_canonical()),
            port: None,
        }
    }

    /// `unknown`: the node is not known or not disclosed.
    pub fn unknown() -> Self {
        Node {
            name: NodeName::Unknown,
            port: None,
        }
    }

    /// An obfuscated identifier such as `_gateway1` (RFC 7239 §6.3): `_` then letters, digits,
    /// `.`, `_` or `-`.
    ///
    /// # Errors
    /// [`RewriteError::InvalidObfuscated`] for anything else.
    pub fn obfuscated(id: &str) -> Result<Self, RewriteError> {
        let valid = id.len() > 1
            && id.starts_with('_')
            && id[1..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            return Err(RewriteError::InvalidObfuscated(id.to_owned()));
        }
        Ok(Node {
            name: NodeName::Obfuscated(id.into()),
            port: None,
        })
    }

    /// The same node with a port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
}

impl From<SocketAddr> for Node {
    fn from(addr: SocketAddr) -> Self {
        Node::ip(addr.ip()).with_port(addr.port())
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = String::new();
        match &self.name {
            NodeName::Ip(IpAddr::V6(ip)) => write!(raw, "[{ip}]")?,
            NodeName::Ip(IpAddr::V4(ip)) => write!(raw, "{ip}")?,
            NodeName::Unknown => raw.push_str("unknown"),
            NodeName::Obfuscated(id) => raw.push_str(id),
        }
        if let Some(port) = self.port {
            write!(raw, ":{port}")?;
        }
        write_value(f, &raw)
    }
}

/// Writes a `Forwarded` parameter value: a token as it is, anything else as a quoted-string
/// (RFC 7239 §4, RFC 9110 §5.6.4).
pub(crate) fn write_value(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    if crate::util::is_token(value) {
        return out.write_str(value);
    }
    out.write_char('"')?;
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.write_char('\\')?;
        }
        out.write_char(c)?;
    }
    out.write_char('"')
}

/// How the client appears in `for=` and `X-Forwarded-For`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientIdentity {
    /// The client's IP address (the default).
    #[default]
    Ip,
    /// The client's IP address and source port (`Forwarded` only; `X-Forwarded-For` carries
    /// addresses).
    IpAndPort,
    /// Not disclosed: `for=unknown`, and no `X-Forwarded-For` entry of this hop.
    Hidden,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_and_match() {
        let n: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains("10.255.0.1".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.1".parse().unwrap()));
        let n: IpNet = "::1/128".parse().unwrap();
        assert!(n.contains("::1".parse().unwrap()));
        assert!(!n.contains("::2".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!(!all.contains("::2".parse().unwrap()));
        let one: IpNet = "192.0.2.7".parse().unwrap();
        assert_eq!(one.to_string(), "192.0.2.7/32");
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "::1/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0/8",
            "example.com/8",
            "",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn trust_settings() {
        let lo: IpAddr = "127.0.0.2".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let other: IpAddr = "203.0.113.1".parse().unwrap();
        assert!(!Trust::None.trusts(lo));
        assert!(Trust::Loopback.trusts(lo) && Trust::Loopback.trusts(lo6));
        assert!(Trust::Loopback.trusts(mapped));
        assert!(!Trust::Loopback.trusts(other));
        let t = Trust::networks(["203.0.113.0/24", "::1/128"]).unwrap();
        assert!(t.trusts(other) && t.trusts(lo6) && !t.trusts(lo));
    }

    #[test]
    fn nodes_are_quoted_as_rfc7239_says() {
        let v6: SocketAddr = "[::1]:1234".parse().unwrap();
        assert_eq!(Node::from(v6).to_string(), r#""[::1]:1234""#);
        assert_eq!(Node::ip(v6.ip()).to_string(), r#""[::1]""#);
        let v4: SocketAddr = "192.0.2.43:47011".parse().unwrap();
        assert_eq!(Node::from(v4).to_string(), r#""192.0.2.43:47011""#);
        assert_eq!(Node::ip(v4.ip()).to_string(), "192.0.2.43");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(Node::ip(mapped).to_string(), "192.0.2.1");
        assert_eq!(Node::unknown().to_string(), "unknown");
        assert_eq!(
            Node::obfuscated("_hidden")
                .unwrap()
                .with_port(8080)
                .to_string(),
            r#""_hidden:8080""#
        );
        for bad in ["hidden", "_", "_a b", "_a\"", ""] {
            assert!(Node::obfuscated(bad).is_err(), "{bad}");
        }
        let mut s = String::new();
        write_value(&mut s, r#"a"b\c"#).unwrap();
        assert_eq!(s, r#""a\"b\\c""#);
    }
}
