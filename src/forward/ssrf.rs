//! The SSRF guard: which addresses an outbound request may reach, judged after resolution.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::connect::LocalhostResolver;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The kind of a non-public address, as the SSRF guard names it in a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressClass {
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// `0.0.0.0/8` ("this network").
    ThisNetwork,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10/8`, `172.16/12`, `192.168/16`, `fc00::/7`, `fec0::/10`, `64:ff9b:1::/48`.
    Private,
    /// `100.64.0.0/10` (carrier-grade NAT, RFC 6598).
    SharedAddressSpace,
    /// `169.254/16`, `fe80::/10`.
    LinkLocal,
    /// Cloud instance metadata services: `169.254.169.254`, `169.254.170.2`, `100.100.100.200`,
    /// `fd00:ec2::254`. Never allowed by [`SsrfGuard::allow_private`] or an upstream's
    /// `allow_private`: only an explicit [`Cidr`] reaches them.
    CloudMetadata,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18/15`, `2001:2::/48`.
    Benchmarking,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Everything else that is not global unicast: `240/4`, `192.0.0/24`, `192.88.99/24`,
    /// `100::/64`, `2001::/23`, deprecated IPv4-compatible IPv6, and IPv6 outside `2000::/3`.
    Reserved,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressClass::Unspecified => "unspecified",
            AddressClass::ThisNetwork => "\"this network\" (0.0.0.0/8)",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::SharedAddressSpace => "carrier-grade NAT (100.64.0.0/10)",
            AddressClass::LinkLocal => "link-local",
            AddressClass::CloudMetadata => "cloud metadata",
            AddressClass::Documentation => "documentation",
            AddressClass::Benchmarking => "benchmarking",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Reserved => "reserved",
        })
    }
}

impl AddressClass {
    /// The class of `ip`, or `None` for a public (global unicast) address.
    ///
    /// IPv4 addresses embedded in IPv6 (IPv4-mapped `::ffff:0:0/96`, IPv4-compatible `::/96`, NAT64
    /// `64:ff9b::/96`, 6to4 `2002::/16`) are judged by the IPv4 address they carry.
    ///
    /// ```
    /// use std::net::IpAddr;
    /// use sandbox_gateway::forward::AddressClass;
    ///
    /// let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    /// assert_eq!(AddressClass::of(ip("10.1.2.3")), Some(AddressClass::Private));
    /// assert_eq!(AddressClass::of(ip("::ffff:127.0.0.1")), Some(AddressClass::Loopback));
    /// assert_eq!(AddressClass::of(ip("169.254.169.254")), Some(AddressClass::CloudMetadata));
    /// assert_eq!(AddressClass::of(ip("93.184.215.14")), None);
    /// ```
    pub fn of(ip: IpAddr) -> Option<AddressClass> {
        classify(ip).map(|(class, _)| class)
    }
}

/// How a refused address was written or reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    Plain,
    Ipv4Mapped,
    Ipv4Compatible,
    Nat64,
    SixToFour,
}

impl Form {
    fn suffix(self) -> &'static str {
        match self {
            Form::Plain => "",
            Form::Ipv4Mapped => " (IPv4-mapped IPv6)",
            Form::Ipv4Compatible => " (IPv4-compatible IPv6)",
            Form::Nat64 => " (NAT64 IPv6)",
            Form::SixToFour => " (6to4 IPv6)",
        }
    }
}

const METADATA_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
];
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    use AddressClass::*;
    if ip == Ipv4Addr::BROADCAST {
        return Some(Broadcast);
    }
    if METADATA_V4.contains(&ip) {
        return Some(CloudMetadata);
    }
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    let table: &[([u8; 4], u32, AddressClass)] = &[
        ([0, 0, 0, 0], 8, ThisNetwork),
        ([10, 0, 0, 0], 8, Private),
        ([100, 64, 0, 0], 10, SharedAddressSpace),
        ([127, 0, 0, 0], 8, Loopback),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([172, 16, 0, 0], 12, Private),
        ([192, 0, 0, 0], 24, Reserved),
        ([192, 0, 2, 0], 24, Documentation),
        ([192, 88, 99, 0], 24, Reserved),
        ([192, 168, 0, 0], 16, Private),
        ([198, 18, 0, 0], 15, Benchmarking),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([224, 0, 0, 0], 4, Multicast),
        ([240, 0, 0, 0], 4, Reserved),
    ];
    table
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, class)| *class)
}

fn embedded_v4(ip: Ipv6Addr, at: usize) -> Ipv4Addr {
    let o = ip.octets();
    Ipv4Addr::new(o[at], o[at + 1], o[at + 2], o[at + 3])
}

/// The class of `ip` and the form it was reached in, or `None` when it is public.
pub(crate) fn classify(ip: IpAddr) -> Option<(AddressClass, Form)> {
    use AddressClass::*;
    let v6 = match ip {
        IpAddr::V4(v4) => return classify_v4(v4).map(|c| (c, Form::Plain)),
        IpAddr::V6(v6) => v6,
    };
    if v6 == METADATA_V6 {
        return Some((CloudMetadata, Form::Plain));
    }
    if v6.is_unspecified() {
        return Some((Unspecified, Form::Plain));
    }
    if v6.is_loopback() {
        return Some((Loopback, Form::Plain));
    }
    if in_v6(v6, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96) {
        return classify_v4(embedded_v4(v6, 12)).map(|c| (c, Form::Ipv4Mapped));
    }
    if in_v6(v6, [0; 8], 96) {
        // Deprecated (RFC 4291 §2.5.5.1): no legitimate use, whatever it embeds.
        let class = classify_v4(embedded_v4(v6, 12)).unwrap_or(Reserved);
        return Some((class, Form::Ipv4Compatible));
    }
    if in_v6(v6, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        return classify_v4(embedded_v4(v6, 12)).map(|c| (c, Form::Nat64));
    }
    if in_v6(v6, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return classify_v4(embedded_v4(v6, 2)).map(|c| (c, Form::SixToFour));
    }
    let table: &[([u16; 8], u32, AddressClass)] = &[
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, Private),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, Reserved),
        ([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48, Benchmarking),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, Documentation),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, Reserved),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Documentation),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, Private),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, LinkLocal),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, Private),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Multicast),
    ];
    if let Some((_, _, class)) = table.iter().find(|(n, p, _)| in_v6(v6, *n, *p)) {
        return Some((*class, Form::Plain));
    }
    if !in_v6(v6, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        return Some((Reserved, Form::Plain));
    }
    None
}

/// Parses the IPv4 spellings that `inet_aton` (and so `getaddrinfo`) and URL parsers accept besides
/// the dotted quad: 1 to 4 parts, each decimal, octal (`0` prefix) or hex (`0x` prefix), the last
/// part filling the remaining bytes (`127.1`, `2130706433`, `0x7f.1`, `0177.0.0.1`), with one
/// trailing dot allowed.
pub(crate) fn parse_loose_ipv4(host: &str) -> Option<Ipv4Addr> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        let (digits, radix) =
            if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
                (hex, 16)
            } else if part.len() > 1 && part.starts_with('0') {
                (&part[1..], 8)
            } else {
                (*part, 10)
            };
        if digits.is_empty() {
            return None;
        }
        if !digits.chars().all(|c| c.is_digit(radix)) || digits.len() > 32 {
            return None;
        }
        values.push(u64::from_str_radix(digits, radix).ok()?);
    }
    let (last, init) = values.split_last()?;
    if init.iter().any(|v| *v > 255) {
        return None;
    }
    let last_bits = 8 * (5 - values.len()) as u32;
    if last_bits < 64 && *last >= 1u64 << last_bits {
        return None;
    }
    let mut n: u64 = *last;
    for (i, v) in init.iter().enumerate() {
        n |= v << (24 - 8 * i as u32);
    }
    u32::try_from(n).ok().map(Ipv4Addr::from)
}

/// How a host of a URL names an address literally: a canonical IP (`127.0.0.1`, `[::1]`), another
/// IPv4 spelling (`2130706433`), or not at all (a name to resolve).
pub(crate) fn literal(host: &str) -> Option<(IpAddr, bool)> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some((ip, false));
    }
    parse_loose_ipv4(bare).map(|ip| (IpAddr::V4(ip), true))
}

/// An IP network (`10.0.0.0/8`, `fd00::/8`, or a single address), for [`SsrfGuard::allow_cidr`].
///
/// ```
/// use sandbox_gateway::forward::Cidr;
///
/// let net: Cidr = "10.20.0.0/16".parse().unwrap();
/// assert!(net.contains("10.20.1.2".parse().unwrap()));
/// assert!(net.contains("::ffff:10.20.1.2".parse().unwrap()));
/// assert!(!net.contains("10.21.0.1".parse().unwrap()));
/// assert!("10.0.0.0/33".parse::<Cidr>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr` with `prefix` leading bits; `None` when the prefix is longer than the
    /// address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// Whether `ip` lies in this network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are
    /// compared as the IPv4 address they carry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => in_v4(ip, net.octets(), u32::from(self.prefix)),
            (IpAddr::V6(net), IpAddr::V6(ip)) => in_v6(ip, net.segments(), u32::from(self.prefix)),
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A string is not a network in `address/prefix` form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a network like 10.0.0.0/8 or fd00::/8")]
pub struct CidrParseError(String);

impl FromStr for Cidr {
    type Err = CidrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrParseError(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => {
                let addr: IpAddr = a.parse().map_err(|_| bad())?;
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                (addr, p.parse::<u8>().map_err(|_| bad())?)
            }
            None => {
                let addr: IpAddr = s.parse().map_err(|_| bad())?;
                (addr, if addr.is_ipv4() { 32 } else { 128 })
            }
        };
        Cidr::new(addr, prefix).ok_or_else(bad)
    }
}

/// An upstream address the [`SsrfGuard`] refused. Its message names the upstream host and the
/// class of address, never the address itself (which the server log has).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct SsrfRefusal {
    host: String,
    ip: IpAddr,
    class: Option<AddressClass>,
    form: Form,
    odd_notation: bool,
}

impl SsrfRefusal {
    /// The upstream host that was refused, as configured.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The refused address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The class of the refused address; `None` when a public address was refused because the host
    /// spelled it in a non-canonical IPv4 notation (`0x5db8d70e`).
    pub fn class(&self) -> Option<AddressClass> {
        self.class
    }

    fn describe(&self) -> String {
        let class = match self.class {
            Some(c) => format!("a {c} address{}", self.form.suffix()),
            None => "an address".to_owned(),
        };
        if self.odd_notation {
            format!(
                "upstream host `{}` is a non-canonical IPv4 spelling of {class}",
                self.host
            )
        } else if literal(&self.host).is_some() {
            format!("upstream host `{}` is {class}", self.host)
        } else {
            format!("upstream host `{}` resolves to {class}", self.host)
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Policy {
    allow_private: bool,
    hosts: Vec<String>,
    cidrs: Vec<Cidr>,
}

fn normalize_host(host: &str) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.strip_suffix('.').unwrap_or(bare).to_ascii_lowercase()
}

impl Policy {
    fn check(&self, host: &str, ip: IpAddr, odd_notation: bool) -> Result<(), SsrfRefusal> {
        if self.cidrs.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        let classified = classify(ip);
        if classified.is_none() && !odd_notation {
            return Ok(());
        }
        let metadata = matches!(classified, Some((AddressClass::CloudMetadata, _)));
        if !metadata && (self.allow_private || self.host_allowed(host)) {
            return Ok(());
        }
        let (class, form) = match classified {
            Some((c, f)) => (Some(c), f),
            None => (None, Form::Plain),
        };
        Err(SsrfRefusal {
            host: host.to_owned(),
            ip,
            class,
            form,
            odd_notation,
        })
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.hosts.contains(&host)
    }
}

/// The SSRF guard: a resolver (a `tower::Service<Name>`, as hyper-util's `HttpConnector` takes)
/// that asks the resolver it wraps, then refuses the whole answer when any address in it is not
/// public. The connector then dials exactly the addresses that were checked: there is no second
/// lookup, so no DNS-rebinding window.
///
/// Refused unless allowed: loopback, private (RFC 1918, `fc00::/7`), link-local, carrier-grade
/// NAT, cloud metadata, unspecified, "this network" (`0.0.0.0/8`), broadcast, multicast,
/// documentation, benchmarking and reserved ranges, and IPv4 addresses of those classes embedded
/// in IPv6 (IPv4-mapped, IPv4-compatible, NAT64, 6to4). See [`AddressClass`].
///
/// Hosts written as IP literals never reach a resolver; [`ApiForward`](super::ApiForward) checks
/// them with the same policy before it connects, including IPv4 spellings such as `2130706433`,
/// `0177.0.0.1`, `0x7f.1` or `127.1` (a public address spelled that way is refused too). Used on
/// its own in a [`Connector`](crate::connect::Connector), the guard sees names only.
///
/// Exceptions, for tests and on-premises upstreams:
/// - [`allow_host`](Self::allow_host): that host may resolve to any non-public address but cloud
///   metadata (what an upstream's `allow_private(true)` registers);
/// - [`allow_cidr`](Self::allow_cidr): addresses in that network are allowed for every host,
///   metadata included if the network covers it;
/// - [`allow_private`](Self::allow_private): every non-public address but cloud metadata, for
///   every host.
///
/// ```
/// use sandbox_gateway::forward::SsrfGuard;
///
/// let guard = SsrfGuard::new()
///     .allow_host("llm.internal.example")
///     .allow_cidr("10.20.0.0/16".parse()?);
/// assert!(guard.check("api.example.com", "10.20.3.4".parse()?).is_ok());
/// assert!(guard.check("api.example.com", "10.21.3.4".parse()?).is_err());
/// assert!(guard.check("llm.internal.example", "192.168.1.5".parse()?).is_ok());
/// assert!(guard.check("llm.internal.example", "169.254.169.254".parse()?).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SsrfGuard<R = LocalhostResolver> {
    resolver: R,
    policy: Arc<Policy>,
}

impl<R> fmt::Debug for SsrfGuard<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SsrfGuard")
            .field("allow_private", &self.policy.allow_private)
            .field("allow_hosts", &self.policy.hosts)
            .field("allow_cidrs", &self.policy.cidrs)
            .finish_non_exhaustive()
    }
}

impl Default for SsrfGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl SsrfGuard {
    /// A guard over the [`LocalhostResolver`] (`localhost` → both loopbacks, other names → the
    /// system resolver) that refuses every non-public address.
    pub fn new() -> Self {
        SsrfGuard {
            resolver: LocalhostResolver::new(),
            policy: Arc::new(Policy::default()),
        }
    }
}

impl<R> SsrfGuard<R> {
    /// The same policy over another resolver (any `tower::Service<Name>` yielding socket
    /// addresses).
    pub fn resolver<R2>(self, resolver: R2) -> SsrfGuard<R2> {
        SsrfGuard {
            resolver,
            policy: self.policy,
        }
    }

    /// Allows every non-public address except cloud metadata, for every host (tests, on-premises
    /// deployments). Off by default.
    pub fn allow_private(mut self, yes: bool) -> Self {
        Arc::make_mut(&mut self.policy).allow_private = yes;
        self
    }

    /// Lets `host` (a name or an IP literal, compared case-insensitively, trailing dot ignored)
    /// resolve to non-public addresses, cloud metadata excepted.
    pub fn allow_host(mut self, host: impl AsRef<str>) -> Self {
        let host = normalize_host(host.as_ref());
        let policy = Arc::make_mut(&mut self.policy);
        if !policy.hosts.contains(&host) {
            policy.hosts.push(host);
        }
        self
    }

    /// Allows every address in `net`, for every host.
    pub fn allow_cidr(mut self, net: Cidr) -> Self {
        Arc::make_mut(&mut self.policy).cidrs.push(net);
        self
    }

    /// Whether `host` may be reached at `ip`.
    ///
    /// # Errors
    /// A [`SsrfRefusal`] naming the class of address.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), SsrfRefusal> {
        self.policy.check(host, ip, false)
    }

    /// Checks a host written as an IP literal or in another IPv4 spelling; `None` for a name (which
    /// the resolver judges).
    pub(crate) fn check_literal(&self, host: &str) -> Option<Result<(), SsrfRefusal>> {
        literal(host).map(|(ip, odd)| self.policy.check(host, ip, odd))
    }

    pub(crate) fn allows_host(&self, host: &str) -> bool {
        self.policy.host_allowed(host)
    }
}

impl<R> Service<Name> for SsrfGuard<R>
where
    R: Service<Name>,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<BoxError>,
{
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Resolving<R::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.resolver.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().to_owned();
        // A name that is an IPv4 spelling (`2130706433`) would be turned into an address by the
        // system resolver: judge it as that address.
        let early = self.check_literal(&host).and_then(Result::err);
        Resolving {
            inner: self.resolver.call(name),
            host,
            policy: self.policy.clone(),
            early,
        }
    }
}

pin_project! {
    /// The future of a [`SsrfGuard`] lookup.
    pub struct Resolving<F> {
        #[pin]
        inner: F,
        host: String,
        policy: Arc<Policy>,
        early: Option<SsrfRefusal>,
    }
}

impl<F> fmt::Debug for Resolving<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolving")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl<F, A, E> Future for Resolving<F>
where
    F: Future<Output = Result<A, E>>,
    A: Iterator<Item = SocketAddr>,
    E: Into<BoxError>,
{
    type Output = Result<std::vec::IntoIter<SocketAddr>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(refusal) = this.early.take() {
            tracing::warn!(host = %refusal.host, ip = %refusal.ip, "SSRF guard refused an upstream address");
            crate::metrics::refused("ssrf");
            return Poll::Ready(Err(Box::new(refusal)));
        }
        let addrs: Vec<SocketAddr> = ready!(this.inner.poll(cx)).map_err(Into::into)?.collect();
        for addr in &addrs {
            if let Err(refusal) = this.policy.check(this.host, addr.ip(), false) {
                tracing::warn!(host = %this.host, ip = %addr.ip(), "SSRF guard refused an upstream address");
                crate::metrics::refused("ssrf");
                return Poll::Ready(Err(Box::new(refusal)));
            }
        }
        Poll::Ready(Ok(addrs.into_iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classes() {
        use AddressClass::*;
        let cases: &[(&str, Option<AddressClass>)] = &[
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(ThisNetwork)),
            ("10.0.0.1", Some(Private)),
            ("100.64.0.1", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            ("100.128.0.1", None),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.0.9", Some(Loopback)),
            ("169.254.169.254", Some(CloudMetadata)),
            ("169.254.1.1", Some(LinkLocal)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.1", None),
            ("192.0.0.8", Some(Reserved)),
            ("192.0.2.1", Some(Documentation)),
            ("192.88.99.1", Some(Reserved)),
            ("192.168.1.1", Some(Private)),
            ("198.18.0.1", Some(Benchmarking)),
            ("198.19.255.1", Some(Benchmarking)),
            ("198.51.100.7", Some(Documentation)),
            ("203.0.113.9", Some(Documentation)),
            ("224.0.0.1", Some(Multicast)),
            ("239.1.1.1", Some(Multicast)),
            ("240.0.0.1", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:169.254.169.254", Some(CloudMetadata)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Loopback)),
            ("::8.8.8.8", Some(Reserved)),
            ("64:ff9b::10.0.0.1", Some(Private)),
            ("64:ff9b::8.8.8.8", None),
            ("64:ff9b:1::1", Some(Private)),
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:0808:0808::1", None),
            ("fc00::1", Some(Private)),
            ("fd12:3456::1", Some(Private)),
            ("fd00:ec2::254", Some(CloudMetadata)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", Some(Private)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff::1", Some(Documentation)),
            ("2001:2::1", Some(Benchmarking)),
            ("2001::1", Some(Reserved)),
            ("100::1", Some(Reserved)),
            ("4000::1", Some(Reserved)),
            ("2001:4860:4860::8888", None),
            ("2606:4700:4700::1111", None),
        ];
        for (addr, want) in cases {
            assert_eq!(AddressClass::of(ip(addr)), *want, "{addr}");
        }
    }

    #[test]
    fn loose_ipv4_spellings() {
        let lo = Some(Ipv4Addr::LOCALHOST);
        for s in [
            "2130706433",
            "0x7f000001",
            "017700000001",
            "0177.0.0.1",
            "0x7f.1",
            "127.1",
            "127.0.1",
            "0x7F.0.0.1",
            "127.0.0.1.",
            "0177.0.0.01",
        ] {
            assert_eq!(parse_loose_ipv4(s), lo, "{s}");
        }
        assert_eq!(parse_loose_ipv4("0"), Some(Ipv4Addr::UNSPECIFIED));
        for s in [
            "",
            "a.b",
            "1.2.3.4.5",
            "256.1.1.1",
            "1.2.3.256",
            "1.16777216",
            "1.2.65536",
            "4294967296",
            "0x",
            "08.1.1.1",
            "example.com",
            "1..1",
        ] {
            assert_eq!(parse_loose_ipv4(s), None, "{s}");
        }
    }

    #[test]
    fn literals_and_odd_notation() {
        assert_eq!(literal("[::1]"), Some((ip("::1"), false)));
        assert_eq!(literal("127.0.0.1"), Some((ip("127.0.0.1"), false)));
        assert_eq!(literal("127.1"), Some((ip("127.0.0.1"), true)));
        assert_eq!(literal("localhost"), None);
        let guard = SsrfGuard::new();
        let e = guard.check_literal("0x7f.1").unwrap().unwrap_err();
        assert_eq!(e.class(), Some(AddressClass::Loopback));
        assert!(e.to_string().contains("non-canonical"), "{e}");
        // A public address in an odd spelling is refused too.
        let e = guard.check_literal("134744072").unwrap().unwrap_err();
        assert_eq!(e.class(), None);
        assert!(guard.check_literal("8.8.8.8").unwrap().is_ok());
        assert!(guard.check_literal("api.example.com").is_none());
    }

    #[test]
    fn exceptions() {
        let guard = SsrfGuard::new().allow_host("Internal.Example.");
        assert!(guard.check("internal.example", ip("10.0.0.1")).is_ok());
        assert!(guard
            .check("internal.example", ip("fd00:ec2::254"))
            .is_err());
        assert!(guard.check("other.example", ip("10.0.0.1")).is_err());
        let guard = SsrfGuard::new().allow_private(true);
        assert!(guard.check("x", ip("127.0.0.1")).is_ok());
        assert!(guard.check("x", ip("169.254.169.254")).is_err());
        let guard = SsrfGuard::new().allow_cidr("169.254.169.254".parse().unwrap());
        assert!(guard.check("x", ip("169.254.169.254")).is_ok());
        assert!(guard.check("x", ip("169.254.169.253")).is_err());
    }

    #[test]
    fn refusal_message_names_class_not_address() {
        let e = SsrfGuard::new()
            .check("metadata.internal", ip("::ffff:169.254.169.254"))
            .unwrap_err();
        let msg = e.to_string();
        assert_eq!(
            msg,
            "upstream host `metadata.internal` resolves to a cloud metadata address (IPv4-mapped IPv6)"
        );
        assert!(!msg.contains("169.254"));
    }

    #[test]
    fn cidr_parsing() {
        for good in ["10.0.0.0/8", "fd00::/8", "1.2.3.4", "::1", "0.0.0.0/0"] {
            assert!(good.parse::<Cidr>().is_ok(), "{good}");
        }
        for bad in [
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "x/8",
            "10.0.0.0/+8",
            "10/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn resolver_refuses_loopback_names() {
        let mut guard = SsrfGuard::new();
        let err = guard.call("localhost".parse().unwrap()).await.unwrap_err();
        let refusal = err.downcast_ref::<SsrfRefusal>().expect("a refusal");
        assert_eq!(refusal.class(), Some(AddressClass::Loopback));
        let mut guard = SsrfGuard::new().allow_host("localhost");
        let addrs: Vec<_> = guard
            .call("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(addrs.len(), 2);
    }
}
