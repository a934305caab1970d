//! The layer, its builder and its service.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::future::ResponseFuture;
use super::name::{is_loopback_host, request_host, AllowedHost, HostError};
use crate::util::text_response;

/// Builds a [`HostAllowlistLayer`]. Loopback names are always allowed; nothing else is until
/// listed.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct HostAllowlistBuilder {
    names: Vec<String>,
    hint: Option<String>,
}

impl HostAllowlistBuilder {
    /// Allows a host name or IP address (`preview.example.com`, `10.0.0.5`, `[fd00::1]`), or every
    /// subdomain of a name (`*.preview.example.com`: one or more labels, not the bare name).
    /// No port: any port is accepted.
    pub fn allow(mut self, name: impl Into<String>) -> Self {
        self.names.push(name.into());
        self
    }

    /// Allows each of several names, as [`allow`](Self::allow).
    pub fn allow_all<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.names.extend(names.into_iter().map(Into::into));
        self
    }

    /// How the refusal tells the reader to allow a host, `{host}` standing for the refused name;
    /// for a command-line program, e.g. `"restart with --allow-host {host}"`. The default names
    /// [`HostAllowlistBuilder::allow`].
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Checks every entry and builds the layer.
    ///
    /// # Errors
    ///
    /// [`HostError::InvalidName`] for an entry that is not a name, an IP address or a `*.suffix`
    /// pattern, for `*` (every host), for a port, and for a pattern over a single label
    /// (`*.com`).
    pub fn build(self) -> Result<HostAllowlistLayer, HostError> {
        let allowed = self
            .names
            .iter()
            .map(|n| AllowedHost::parse(n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HostAllowlistLayer {
            config: Arc::new(Config {
                allowed,
                hint: self.hint.unwrap_or_else(|| {
                    "allow it with HostAllowlistBuilder::allow(\"{host}\")".into()
                }),
            }),
        })
    }
}

struct Config {
    allowed: Vec<AllowedHost>,
    hint: String,
}

impl Config {
    fn allows(&self, host: &str) -> bool {
        is_loopback_host(host) || self.allowed.iter().any(|a| a.matches(host))
    }
}

/// Refuses requests addressed to a Host that is not on the allowlist: the guard against DNS
/// rebinding, where a hostile page makes a browser send requests to a local server under the
/// hostile page's own name.
///
/// Deny by default, like Vite's `server.allowedHosts` but without an "allow all" switch. See the
/// [module docs](super) for the rules.
#[derive(Clone)]
#[must_use]
pub struct HostAllowlistLayer {
    config: Arc<Config>,
}

impl HostAllowlistLayer {
    /// Starts an allowlist holding only the loopback names.
    pub fn builder() -> HostAllowlistBuilder {
        HostAllowlistBuilder::default()
    }

    /// Whether `host` (a host name, with or without port) would be let through.
    pub fn allows(&self, host: &str) -> bool {
        let uri = http::Uri::from_static("/");
        let mut headers = http::HeaderMap::new();
        match http::HeaderValue::from_str(host) {
            Ok(v) => headers.insert(http::header::HOST, v),
            Err(_) => return false,
        };
        request_host(&uri, &headers).is_ok_and(|h| self.config.allows(&h))
    }
}

impl std::fmt::Debug for HostAllowlistLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .config
            .allowed
            .iter()
            .map(ToString::to_string)
            .collect();
        f.debug_struct("HostAllowlistLayer")
            .field("allowed", &names)
            .finish()
    }
}

impl<S> Layer<S> for HostAllowlistLayer {
    type Service = HostAllowlist<S>;

    fn layer(&self, inner: S) -> HostAllowlist<S> {
        HostAllowlist {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service made by [`HostAllowlistLayer`].
#[derive(Clone)]
pub struct HostAllowlist<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for HostAllowlist<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostAllowlist")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for HostAllowlist<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match request_host(req.uri(), req.headers()) {
            Ok(host) if self.config.allows(&host) => ResponseFuture::inner(self.inner.call(req)),
            Ok(host) => {
                tracing::debug!(%host, "request for a Host not on the allowlist refused");
                crate::metrics::refused("host");
                let hint = self.config.hint.replace("{host}", &host);
                ResponseFuture::ready(text_response(
                    StatusCode::FORBIDDEN,
                    format!(
                        "Blocked request: Host \"{host}\" is not allowed by this server \
                         (DNS rebinding protection); {hint}"
                    ),
                ))
            }
            Err(bad) => {
                ResponseFuture::ready(text_response(StatusCode::BAD_REQUEST, bad.message()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_loopback_and_listed_names_only() {
        let l = HostAllowlistLayer::builder()
            .allow("preview.example.com")
            .allow_all(["*.preview.example.com"])
            .build()
            .unwrap();
        for ok in [
            "localhost:5173",
            "LOCALHOST.",
            "app.localhost",
            "127.0.0.1:80",
            "[::1]:8080",
            "preview.example.com",
            "Preview.Example.Com.:443",
            "3000-abc.preview.example.com",
        ] {
            assert!(l.allows(ok), "{ok}");
        }
        for no in [
            "evil.example",
            "preview.example.com.evil.example",
            "evilpreview.example.com",
            "192.168.1.10",
            "localhost.evil.example",
            "user@localhost",
        ] {
            assert!(!l.allows(no), "{no}");
        }
    }

    #[test]
    fn build_reports_the_bad_entry() {
        let e = HostAllowlistLayer::builder()
            .allow("ok.example")
            .allow("*")
            .build()
            .unwrap_err();
        assert!(matches!(e, HostError::InvalidName { ref name, .. } if name == "*"));
        assert!(e.to_string().contains("DNS rebinding"));
    }
}
