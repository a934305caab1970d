//! Which methods and request headers a preflight may ask for, and which response headers the page
//! may read.

use http::{HeaderName, Method};

/// Request headers a preflight may ask for (`Access-Control-Allow-Headers`).
///
/// `Authorization` is never covered by `*` (Fetch standard): with [`AllowHeaders::any`] a
/// preflight that asks for it is refused with a message saying so, unless it was named with
/// [`AllowHeaders::any_and`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct AllowHeaders(pub(crate) HeadersKind);

#[derive(Debug, Clone, Default)]
pub(crate) enum HeadersKind {
    /// Only CORS-safelisted request headers (which never appear in a preflight).
    #[default]
    None,
    /// These names (lower-case).
    List(Vec<HeaderName>),
    /// `*` plus these names (`Authorization` is the one that matters).
    Any(Vec<HeaderName>),
    /// Echo `Access-Control-Request-Headers`.
    Mirror,
}

impl AllowHeaders {
    /// These request headers.
    pub fn list<I>(headers: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        AllowHeaders(HeadersKind::List(headers.into_iter().collect()))
    }

    /// `*`: any request header but `Authorization`. Refused with credentials, where browsers take
    /// `*` literally.
    pub fn any() -> Self {
        AllowHeaders(HeadersKind::Any(Vec::new()))
    }

    /// `*` plus named headers, e.g. `AllowHeaders::any_and([AUTHORIZATION])` for a bearer-token
    /// API. Refused with credentials.
    pub fn any_and<I>(headers: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        AllowHeaders(HeadersKind::Any(headers.into_iter().collect()))
    }

    /// Whatever the preflight asks for, echoed back (`Authorization` included).
    pub fn mirror_request() -> Self {
        AllowHeaders(HeadersKind::Mirror)
    }

    pub(crate) fn is_wildcard(&self) -> bool {
        matches!(self.0, HeadersKind::Any(_))
    }
}

/// Methods a preflight may ask for (`Access-Control-Allow-Methods`). `GET`, `HEAD` and `POST` are
/// CORS-safelisted and always pass.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct AllowMethods(pub(crate) MethodsKind);

#[derive(Debug, Clone, Default)]
pub(crate) enum MethodsKind {
    /// Safelisted methods only.
    #[default]
    None,
    /// These methods.
    List(Vec<Method>),
    /// `*`.
    Any,
    /// Echo `Access-Control-Request-Method`.
    Mirror,
}

impl AllowMethods {
    /// These methods.
    pub fn list<I>(methods: I) -> Self
    where
        I: IntoIterator<Item = Method>,
    {
        AllowMethods(MethodsKind::List(methods.into_iter().collect()))
    }

    /// `*`: any method. Refused with credentials, where browsers take `*` literally.
    pub fn any() -> Self {
        AllowMethods(MethodsKind::Any)
    }

    /// Whatever method the preflight asks for, echoed back.
    pub fn mirror_request() -> Self {
        AllowMethods(MethodsKind::Mirror)
    }

    pub(crate) fn is_wildcard(&self) -> bool {
        matches!(self.0, MethodsKind::Any)
    }
}

/// Response headers beyond the CORS safelist the page may read (`Access-Control-Expose-Headers`).
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ExposeHeaders(pub(crate) ExposeKind);

#[derive(Debug, Clone, Default)]
pub(crate) enum ExposeKind {
    /// Safelisted response headers only.
    #[default]
    None,
    /// These names.
    List(Vec<HeaderName>),
    /// `*`.
    Any,
}

impl ExposeHeaders {
    /// These response headers.
    pub fn list<I>(headers: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        ExposeHeaders(ExposeKind::List(headers.into_iter().collect()))
    }

    /// `*`: every response header (`Set-Cookie` excepted by browsers). Refused with credentials.
    pub fn any() -> Self {
        ExposeHeaders(ExposeKind::Any)
    }

    pub(crate) fn is_wildcard(&self) -> bool {
        matches!(self.0, ExposeKind::Any)
    }
}

impl<const N: usize> From<[HeaderName; N]> for AllowHeaders {
    fn from(a: [HeaderName; N]) -> Self {
        Self::list(a)
    }
}

impl<const N: usize> From<[Method; N]> for AllowMethods {
    fn from(a: [Method; N]) -> Self {
        Self::list(a)
    }
}

impl<const N: usize> From<[HeaderName; N]> for ExposeHeaders {
    fn from(a: [HeaderName; N]) -> Self {
        Self::list(a)
    }
}
