//! The builder, its error, and the checked configuration with the decisions made from it.

use std::time::Duration;

use http::header::{self, HeaderName};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method};

use super::origin::{Origin, OriginKind, OriginPattern};
use super::policy::{ExposeKind, HeadersKind, MethodsKind};
use super::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer, ExposeHeaders};

/// An invalid CORS configuration, reported by [`CorsBuilder::build`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorsError {
    /// An entry of the origin list is not an origin or a valid `*.` pattern.
    #[error("invalid allowed origin {origin:?}: {reason}")]
    InvalidOrigin {
        /// The entry as given.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Credentials were allowed together with a wildcard, which browsers refuse (they take `*`
    /// literally, or reject the response) and which would let any site act as the user.
    #[error("credentials cannot be combined with {what}: list the allowed values explicitly")]
    CredentialsWithWildcard {
        /// Which setting holds the wildcard.
        what: &'static str,
    },
}

/// Builds a [`CorsLayer`]; see the [module docs](super) for the behaviour.
///
/// Nothing is allowed by default: no origin, only the CORS-safelisted methods (`GET`, `HEAD`,
/// `POST`) and request headers, no credentials, no exposed headers, no `Max-Age` (browsers then
/// cache a preflight for 5 s).
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct CorsBuilder {
    origin: AllowOrigin,
    methods: AllowMethods,
    headers: AllowHeaders,
    expose: ExposeHeaders,
    credentials: bool,
    allow_null: bool,
    private_network: bool,
    max_age: Option<Duration>,
}

impl CorsBuilder {
    /// Which origins may read responses.
    pub fn allow_origin(mut self, origin: AllowOrigin) -> Self {
        self.origin = origin;
        self
    }

    /// Which methods a preflight may ask for, beyond `GET`, `HEAD` and `POST`.
    pub fn allow_methods(mut self, methods: impl Into<AllowMethods>) -> Self {
        self.methods = methods.into();
        self
    }

    /// Which request headers a preflight may ask for.
    pub fn allow_headers(mut self, headers: impl Into<AllowHeaders>) -> Self {
        self.headers = headers.into();
        self
    }

    /// Which response headers the page may read.
    pub fn expose_headers(mut self, headers: impl Into<ExposeHeaders>) -> Self {
        self.expose = headers.into();
        self
    }

    /// Sends `Access-Control-Allow-Credentials: true` to allowed origins, so that requests made
    /// with cookies or `credentials: "include"` can be read. Wildcards are then refused by
    /// [`build`](Self::build).
    pub fn allow_credentials(mut self, yes: bool) -> Self {
        self.credentials = yes;
        self
    }

    /// Lets the opaque origin `null` (sandboxed iframes, `file:` pages, cross-origin redirects)
    /// through. Off by default: any page can make its requests come from `null`.
    pub fn allow_null_origin(mut self, yes: bool) -> Self {
        self.allow_null = yes;
        self
    }

    /// Answers `Access-Control-Request-Private-Network: true` in a preflight with
    /// `Access-Control-Allow-Private-Network: true` (Private Network Access: a public page reaching
    /// a loopback or private address). Chromium is moving to a permission prompt; the header is
    /// still answered, but do not rely on it alone.
    pub fn allow_private_network(mut self, yes: bool) -> Self {
        self.private_network = yes;
        self
    }

    /// `Access-Control-Max-Age`: how long a browser may reuse a preflight answer, in whole
    /// seconds. Chromium caps it at 7200 s (2 h), Firefox at 86400 s.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Checks the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// [`CorsError::InvalidOrigin`] for a bad origin entry, and
    /// [`CorsError::CredentialsWithWildcard`] when credentials are combined with a `*` origin,
    /// method, request-header or exposed-header list, or with a mirrored origin.
    pub fn build(self) -> Result<CorsLayer, CorsError> {
        let origin = match self.origin.0 {
            OriginKind::Specs(specs) => OriginKind::List(
                specs
                    .iter()
                    .map(|s| OriginPattern::parse(s))
                    .collect::<Result<_, _>>()?,
            ),
            other => other,
        };
        if self.credentials {
            let what = if matches!(origin, OriginKind::Any) {
                Some("Access-Control-Allow-Origin: *")
            } else if matches!(origin, OriginKind::Mirror) {
                Some("an origin mirrored from every request")
            } else if self.methods.is_wildcard() {
                Some("Access-Control-Allow-Methods: *")
            } else if self.headers.is_wildcard() {
                Some("Access-Control-Allow-Headers: *")
            } else if self.expose.is_wildcard() {
                Some("Access-Control-Expose-Headers: *")
            } else {
                None
            };
            if let Some(what) = what {
                return Err(CorsError::CredentialsWithWildcard { what });
            }
        }
        let allow_methods_value = match &self.methods.0 {
            MethodsKind::List(l) => join(l.iter().map(Method::as_str)),
            MethodsKind::Any => Some(HeaderValue::from_static("*")),
            MethodsKind::None | MethodsKind::Mirror => None,
        };
        let allow_headers_value = match &self.headers.0 {
            HeadersKind::List(l) => join(l.iter().map(HeaderName::as_str)),
            HeadersKind::Any(extra) => {
                join(std::iter::once("*").chain(extra.iter().map(HeaderName::as_str)))
            }
            HeadersKind::None | HeadersKind::Mirror => None,
        };
        let expose_value = match &self.expose.0 {
            ExposeKind::List(l) => join(l.iter().map(HeaderName::as_str)),
            ExposeKind::Any => Some(HeaderValue::from_static("*")),
            ExposeKind::None => None,
        };
        let max_age = self.max_age.map(|d| HeaderValue::from(d.as_secs()));
        let mut preflight_vary =
            String::from("origin, access-control-request-method, access-control-request-headers");
        if self.private_network {
            preflight_vary.push_str(", access-control-request-private-network");
        }
        Ok(CorsLayer::from_config(Config {
            origin,
            allow_null: self.allow_null,
            credentials: self.credentials,
            methods: self.methods.0,
            headers: self.headers.0,
            private_network: self.private_network,
            allow_methods_value,
            allow_headers_value,
            expose_value,
            max_age,
            preflight_vary: HeaderValue::from_str(&preflight_vary)
                .expect("static ASCII header names"),
        }))
    }
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let s = items.collect::<Vec<_>>().join(", ");
    if s.is_empty() {
        None
    } else {
        // Method and header names are tokens, so the joined list is a valid value.
        HeaderValue::from_str(&s).ok()
    }
}

/// Request header asking for Private Network Access.
pub(crate) const REQUEST_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-request-private-network");
/// Response header granting Private Network Access.
pub(crate) const ALLOW_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-allow-private-network");

/// Every response header the layer owns: stripped from what the inner service sends.
pub(crate) const CORS_RESPONSE_HEADERS: [HeaderName; 7] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
    ALLOW_PRIVATE_NETWORK,
];

/// The checked configuration, shared by every clone of the layer and service.
pub(crate) struct Config {
    origin: OriginKind,
    allow_null: bool,
    pub(crate) credentials: bool,
    methods: MethodsKind,
    headers: HeadersKind,
    private_network: bool,
    allow_methods_value: Option<HeaderValue>,
    allow_headers_value: Option<HeaderValue>,
    pub(crate) expose_value: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    pub(crate) preflight_vary: HeaderValue,
}

impl Config {
    pub(crate) fn permissive() -> Config {
        CorsBuilder::default()
            .allow_origin(AllowOrigin::any())
            .allow_methods(AllowMethods::any())
            .allow_headers(AllowHeaders::any())
            .expose_headers(ExposeHeaders::any())
            .build()
            .expect("a permissive configuration has no credentials")
            .into_config()
    }

    /// The `Access-Control-Allow-Origin` value for a request whose only `Origin` header is
    /// `origin`, or `None` when that origin is not allowed.
    pub(crate) fn allow_origin(&self, origin: &HeaderValue, parts: &Parts) -> Option<HeaderValue> {
        if origin.as_bytes() == b"null" {
            if !self.allow_null {
                return None;
            }
            return Some(if matches!(self.origin, OriginKind::Any) {
                HeaderValue::from_static("*")
            } else {
                origin.clone()
            });
        }
        let allowed = match &self.origin {
            OriginKind::None | OriginKind::Specs(_) => false,
            OriginKind::Any => return Some(HeaderValue::from_static("*")),
            OriginKind::Mirror => origin.to_str().ok().and_then(Origin::parse).is_some(),
            OriginKind::List(list) => match origin.to_str().ok().and_then(Origin::parse) {
                Some(o) => list.iter().any(|p| p.matches_parsed(&o)),
                None => false,
            },
            OriginKind::Predicate(f) => f(origin, parts),
        };
        allowed.then(|| origin.clone())
    }

    /// The CORS headers of a preflight answer, or a message saying why it is refused.
    pub(crate) fn preflight(&self, parts: &Parts) -> Result<HeaderMap, String> {
        let origin = single(&parts.headers, &header::ORIGIN)
            .ok_or("CORS preflight refused: several Origin headers")?;
        let shown = printable(origin);
        let acao = self
            .allow_origin(origin, parts)
            .ok_or_else(|| format!("CORS preflight refused: origin {shown} is not allowed"))?;
        let method = single(&parts.headers, &header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .ok_or("CORS preflight refused: invalid Access-Control-Request-Method")?;
        let safelisted = method == Method::GET || method == Method::HEAD || method == Method::POST;
        let method_ok = safelisted
            || match &self.methods {
                MethodsKind::None => false,
                MethodsKind::List(l) => l.contains(&method),
                MethodsKind::Any | MethodsKind::Mirror => true,
            };
        if !method_ok {
            return Err(format!(
                "CORS preflight refused: method {method} is not allowed for origin {shown}"
            ));
        }
        let requested = requested_headers(&parts.headers)
            .ok_or("CORS preflight refused: invalid Access-Control-Request-Headers")?;
        for name in &requested {
            let ok = match &self.headers {
                HeadersKind::None => false,
                HeadersKind::List(l) => l.contains(name),
                HeadersKind::Any(extra) => name != header::AUTHORIZATION || extra.contains(name),
                HeadersKind::Mirror => true,
            };
            if !ok {
                let hint = if name == header::AUTHORIZATION && self.headers_is_any() {
                    " (`*` never covers Authorization; name it explicitly)"
                } else {
                    ""
                };
                return Err(format!(
                    "CORS preflight refused: request header {name} is not allowed for origin {shown}{hint}"
                ));
            }
        }
        let wants_private_network = parts
            .headers
            .get(REQUEST_PRIVATE_NETWORK)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        if wants_private_network && !self.private_network {
            return Err(format!(
                "CORS preflight refused: private network access is not allowed for origin {shown}"
            ));
        }

        let mut h = HeaderMap::with_capacity(8);
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, acao);
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        let methods = match &self.methods {
            MethodsKind::Mirror => HeaderValue::from_str(method.as_str()).ok(),
            _ => self.allow_methods_value.clone(),
        };
        if let Some(v) = methods {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        let headers = match &self.headers {
            HeadersKind::Mirror if !requested.is_empty() => {
                let list: Vec<&str> = requested.iter().map(HeaderName::as_str).collect();
                HeaderValue::from_str(&list.join(", ")).ok()
            }
            HeadersKind::Mirror => None,
            _ => self.allow_headers_value.clone(),
        };
        if let Some(v) = headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        if let Some(v) = &self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
        }
        if wants_private_network {
            h.insert(ALLOW_PRIVATE_NETWORK, HeaderValue::from_static("true"));
        }
        Ok(h)
    }

    fn headers_is_any(&self) -> bool {
        matches!(self.headers, HeadersKind::Any(_))
    }
}

/// The value of a header sent exactly once.
pub(crate) fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    all.next().is_none().then_some(first)
}

/// The names listed in `Access-Control-Request-Headers` (all of its fields), lower-cased.
/// `None` when one is not a valid header name.
fn requested_headers(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut out = Vec::new();
    for v in headers.get_all(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        let v = v.to_str().ok()?;
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            out.push(HeaderName::from_bytes(item.as_bytes()).ok()?);
        }
    }
    Some(out)
}

/// An origin as shown in a refusal message: printable ASCII only, bounded in length.
fn printable(v: &HeaderValue) -> String {
    let s: String = String::from_utf8_lossy(v.as_bytes())
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .take(200)
        .collect();
    format!("{s:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().method(Method::OPTIONS).uri("/api");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn cfg(b: CorsBuilder) -> Config {
        b.build().unwrap().into_config()
    }

    fn wc() -> CorsBuilder {
        CorsBuilder::default().allow_origin(AllowOrigin::list(["https://*.webcontainer-api.io"]))
    }

    const APP: &str = "https://k3x.local-credentialless.webcontainer-api.io";

    #[test]
    fn seed_preflight_post_with_authorization_passes() {
        let c = cfg(wc()
            .allow_methods([Method::GET, Method::POST, Method::PUT])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(Duration::from_secs(7200)));
        let h = c
            .preflight(&parts(&[
                ("origin", APP),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization,content-type",
                ),
            ]))
            .unwrap();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], APP);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, POST, PUT");
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization, content-type"
        );
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "7200");
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
    }

    #[test]
    fn disallowed_origin_method_or_header_is_refused_with_a_reason() {
        let c = cfg(wc()
            .allow_methods([Method::PUT])
            .allow_headers([header::CONTENT_TYPE]));
        let e = c
            .preflight(&parts(&[
                ("origin", "https://evil-webcontainer-api.io"),
                ("access-control-request-method", "PUT"),
            ]))
            .unwrap_err();
        assert!(
            e.contains("origin \"https://evil-webcontainer-api.io\" is not allowed"),
            "{e}"
        );
        let e = c
            .preflight(&parts(&[
                ("origin", APP),
                ("access-control-request-method", "DELETE"),
            ]))
            .unwrap_err();
        assert!(e.contains("method DELETE"), "{e}");
        let e = c
            .preflight(&parts(&[
                ("origin", APP),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "content-type, x-secret"),
            ]))
            .unwrap_err();
        assert!(e.contains("request header x-secret"), "{e}");
        // Methods are case-sensitive, as in the browser's own check.
        assert!(c
            .preflight(&parts(&[
                ("origin", APP),
                ("access-control-request-method", "put")
            ]))
            .is_err());
    }

    #[test]
    fn safelisted_methods_always_pass() {
        let c = cfg(wc());
        for m in ["GET", "HEAD", "POST"] {
            let h = c
                .preflight(&parts(&[
                    ("origin", APP),
                    ("access-control-request-method", m),
                ]))
                .unwrap();
            assert!(h.get(header::ACCESS_CONTROL_ALLOW_METHODS).is_none());
        }
    }

    #[test]
    fn star_never_covers_authorization() {
        let c = cfg(wc().allow_headers(AllowHeaders::any()));
        let e = c
            .preflight(&parts(&[
                ("origin", APP),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "x-a, Authorization"),
            ]))
            .unwrap_err();
        assert!(e.contains("never covers Authorization"), "{e}");
        let c = cfg(wc().allow_headers(AllowHeaders::any_and([header::AUTHORIZATION])));
        let h = c
            .preflight(&parts(&[
                ("origin", APP),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "x-a, Authorization"),
            ]))
            .unwrap();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_HEADERS], "*, authorization");
    }

    #[test]
    fn mirror_echoes_the_request() {
        let c = cfg(wc()
            .allow_credentials(true)
            .allow_methods(AllowMethods::mirror_request())
            .allow_headers(AllowHeaders::mirror_request()));
        let h = c
            .preflight(&parts(&[
                ("origin", APP),
                ("access-control-request-method", "PATCH"),
                ("access-control-request-headers", "X-One,  x-two"),
            ]))
            .unwrap();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "PATCH");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_HEADERS], "x-one, x-two");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    }

    #[test]
    fn null_origin_only_when_asked() {
        let p = parts(&[("origin", "null"), ("access-control-request-method", "GET")]);
        for o in [
            AllowOrigin::any(),
            AllowOrigin::mirror_request(),
            AllowOrigin::predicate(|_, _| true),
        ] {
            let c = cfg(CorsBuilder::default().allow_origin(o.clone()));
            assert!(c.preflight(&p).is_err(), "{o:?}");
        }
        let c = cfg(CorsBuilder::default()
            .allow_origin(AllowOrigin::list(["https://a.example"]))
            .allow_null_origin(true));
        assert_eq!(
            c.preflight(&p).unwrap()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "null"
        );
        let c = cfg(CorsBuilder::default()
            .allow_origin(AllowOrigin::any())
            .allow_null_origin(true));
        assert_eq!(
            c.preflight(&p).unwrap()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "*"
        );
    }

    #[test]
    fn several_origin_headers_are_refused() {
        let c = cfg(wc());
        let p = parts(&[
            ("origin", APP),
            ("origin", APP),
            ("access-control-request-method", "GET"),
        ]);
        assert!(c.preflight(&p).unwrap_err().contains("several Origin"));
    }

    #[test]
    fn private_network_access() {
        let p = parts(&[
            ("origin", APP),
            ("access-control-request-method", "GET"),
            ("access-control-request-private-network", "true"),
        ]);
        assert!(cfg(wc())
            .preflight(&p)
            .unwrap_err()
            .contains("private network"));
        let c = cfg(wc().allow_private_network(true));
        assert_eq!(c.preflight(&p).unwrap()[ALLOW_PRIVATE_NETWORK], "true");
        assert!(c
            .preflight_vary
            .to_str()
            .unwrap()
            .ends_with("request-private-network"));
        let p = parts(&[("origin", APP), ("access-control-request-method", "GET")]);
        assert!(c
            .preflight(&p)
            .unwrap()
            .get(ALLOW_PRIVATE_NETWORK)
            .is_none());
    }

    #[test]
    fn credentials_refuse_wildcards_at_build_time() {
        let creds = || CorsBuilder::default().allow_credentials(true);
        for b in [
            creds().allow_origin(AllowOrigin::any()),
            creds().allow_origin(AllowOrigin::mirror_request()),
            wc().allow_credentials(true)
                .allow_methods(AllowMethods::any()),
            wc().allow_credentials(true)
                .allow_headers(AllowHeaders::any()),
            wc().allow_credentials(true)
                .allow_headers(AllowHeaders::any_and([header::AUTHORIZATION])),
            wc().allow_credentials(true)
                .expose_headers(ExposeHeaders::any()),
        ] {
            assert!(matches!(
                b.build(),
                Err(CorsError::CredentialsWithWildcard { .. })
            ));
        }
        assert!(wc().allow_credentials(true).build().is_ok());
    }

    #[test]
    fn bad_origin_entry_fails_the_build() {
        let e = CorsBuilder::default()
            .allow_origin(AllowOrigin::list(["https://ok.example", "https://*.com"]))
            .build()
            .unwrap_err();
        assert!(
            matches!(e, CorsError::InvalidOrigin { ref origin, .. } if origin == "https://*.com")
        );
    }

    #[test]
    fn predicate_sees_origin_and_request() {
        let c = cfg(
            CorsBuilder::default().allow_origin(AllowOrigin::predicate(|o, p| {
                o.as_bytes().ends_with(b".example") && p.uri.path().starts_with("/api")
            })),
        );
        let p = parts(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "GET"),
        ]);
        assert!(c.preflight(&p).is_ok());
        let p = parts(&[
            ("origin", "https://a.other"),
            ("access-control-request-method", "GET"),
        ]);
        assert!(c.preflight(&p).is_err());
    }
}
