//! Which `Upgrade` protocols the proxy tunnels.

use std::sync::Arc;

use http::header::{self, HeaderMap};

/// The protocols a request may switch to through the proxy (the `Upgrade` header, RFC 9110 §7.8).
///
/// The default, [`UpgradeProtocols::websocket`], tunnels WebSocket only. A request asking for any
/// other protocol — `h2c` above all, whose tunnel would let a client speak HTTP/2 straight to the
/// upstream past every rule of the gateway ("h2c smuggling") — is forwarded as a plain request
/// with `Upgrade` removed, which is how RFC 9110 lets a server decline an upgrade: the client keeps
/// speaking HTTP/1.1 and gets the upstream's ordinary answer. Refusing it instead (a 4xx) would
/// break clients that offer `h2c` opportunistically, as `curl --http2` does on `http://` URLs.
///
/// ```
/// use sandbox_gateway::proxy::{ReverseProxy, UpgradeProtocols};
///
/// let proxy = ReverseProxy::builder()
///     .upgrades(UpgradeProtocols::only(["websocket", "x-custom-stream"])?)
///     .build()?;
/// # let _ = proxy;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeProtocols(Arc<[String]>);

/// A protocol name given to [`UpgradeProtocols::only`] is not an HTTP token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid upgrade protocol {0:?}: expected an HTTP token such as websocket")]
pub struct InvalidProtocol(pub String);

impl Default for UpgradeProtocols {
    fn default() -> Self {
        Self::websocket()
    }
}

impl UpgradeProtocols {
    /// WebSocket only (the default).
    pub fn websocket() -> Self {
        UpgradeProtocols(Arc::from(["websocket".to_owned()]))
    }

    /// No upgrade is tunnelled: every request is forwarded as a plain one.
    pub fn none() -> Self {
        UpgradeProtocols(Arc::from([]))
    }

    /// Exactly these protocol names (compared case-insensitively, any `/version` ignored).
    ///
    /// # Errors
    /// [`InvalidProtocol`] for a name that is empty or not an HTTP token (RFC 9110 §5.6.2).
    pub fn only<I, P>(protocols: I) -> Result<Self, InvalidProtocol>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<str>,
    {
        let mut out = Vec::new();
        for p in protocols {
            let p = p.as_ref();
            if !crate::util::is_token(p) {
                return Err(InvalidProtocol(p.to_owned()));
            }
            out.push(p.to_ascii_lowercase());
        }
        Ok(UpgradeProtocols(out.into()))
    }

    /// Whether every protocol the `Upgrade` header offers is allowed (and it offers one).
    pub(crate) fn allows(&self, headers: &HeaderMap) -> bool {
        let mut offered = headers
            .get_all(header::UPGRADE)
            .iter()
            .flat_map(|v| v.to_str().map(|s| s.split(',')).into_iter().flatten())
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .peekable();
        offered.peek().is_some()
            && offered.all(|p| {
                let name = p.split_once('/').map_or(p, |(name, _)| name).trim();
                self.0.iter().any(|a| a.eq_ignore_ascii_case(name))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::UPGRADE, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn websocket_only_by_default() {
        let d = UpgradeProtocols::default();
        assert!(d.allows(&upgrade(&["websocket"])));
        assert!(d.allows(&upgrade(&["WebSocket"])));
        for refused in [
            &["h2c"][..],
            &["websocket, h2c"],
            &["websocket", "h2c"],
            &["TLS/1.2"],
            &[""],
            &[],
        ] {
            assert!(!d.allows(&upgrade(refused)), "{refused:?}");
        }
        assert!(!UpgradeProtocols::none().allows(&upgrade(&["websocket"])));
    }

    #[test]
    fn custom_lists_are_checked() {
        let c = UpgradeProtocols::only(["websocket", "TLS"]).unwrap();
        assert!(c.allows(&upgrade(&["tls/1.3, websocket"])));
        assert!(!c.allows(&upgrade(&["h2c"])));
        for bad in ["", "a b", "web/socket", "a,b"] {
            assert_eq!(
                UpgradeProtocols::only([bad]),
                Err(InvalidProtocol(bad.to_owned()))
            );
        }
    }
}
