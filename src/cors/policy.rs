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

    /// The request headers the browser builds of OpenAI- and Anthropic-style API SDKs send (the
    /// Stainless-generated ones, and others that copy them), so that an app pointing such an SDK
    /// at the gateway is not refused at the preflight ("Failed to fetch"):
    ///
    /// - `Authorization`, `Content-Type`, `Accept` (the OpenAI SDK sends its key as
    ///   `Authorization: Bearer …`);
    /// - `x-api-key`, `anthropic-version`, `anthropic-beta`,
    ///   `anthropic-dangerous-direct-browser-access` (the Anthropic SDK);
    /// - `OpenAI-Organization`, `OpenAI-Project`, `OpenAI-Beta`;
    /// - `X-Stainless-Lang`, `-Package-Version`, `-OS`, `-Arch`, `-Runtime`, `-Runtime-Version`,
    ///   `-Retry-Count`, `-Timeout`, `-Helper-Method`, `-Async` (both SDKs' telemetry).
    ///
    /// Extend it with [`and`](Self::and). This only lets the browser *send* them: CORS decides
    /// what a page may read, it is no access control — the
    /// [`ApiForward`](crate::forward::ApiForward)'s caller check is.
    pub fn api_sdks() -> Self {
        AllowHeaders::list(API_SDK_HEADERS.iter().copied().map(HeaderName::from_static))
    }

    /// These headers too (for a list; `*` plus these for [`any`](Self::any); mirroring already
    /// echoes everything).
    pub fn and<I>(mut self, more: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        match &mut self.0 {
            HeadersKind::List(list) | HeadersKind::Any(list) => {
                for h in more {
                    if !list.contains(&h) {
                        list.push(h);
                    }
                }
            }
            HeadersKind::None => self.0 = HeadersKind::List(more.into_iter().collect()),
            HeadersKind::Mirror => {}
        }
        self
    }

    pub(crate) fn is_wildcard(&self) -> bool {
        matches!(self.0, HeadersKind::Any(_))
    }
}

/// The request headers of [`AllowHeaders::api_sdks`], lower-case.
const API_SDK_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "accept",
    "x-api-key",
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "openai-organization",
    "openai-project",
    "openai-beta",
    "x-stainless-lang",
    "x-stainless-package-version",
    "x-stainless-os",
    "x-stainless-arch",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-retry-count",
    "x-stainless-timeout",
    "x-stainless-helper-method",
    "x-stainless-async",
];

/// The response headers of [`ExposeHeaders::api_sdks`], lower-case.
const API_SDK_EXPOSED: &[&str] = &[
    "retry-after",
    "retry-after-ms",
    "x-request-id",
    "request-id",
    "x-should-retry",
    "openai-processing-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];

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

    /// The response headers API SDKs read to retry and report: `Retry-After`, `retry-after-ms`,
    /// `x-should-retry`, the request ids (`x-request-id`, `request-id`), `openai-processing-ms`
    /// and OpenAI's `x-ratelimit-*`. Without them an SDK in the browser cannot see when to retry
    /// a `429`.
    pub fn api_sdks() -> Self {
        ExposeHeaders::list(API_SDK_EXPOSED.iter().copied().map(HeaderName::from_static))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_presets_are_lists_that_extend() {
        let HeadersKind::List(list) = AllowHeaders::api_sdks().0 else {
            panic!("a list");
        };
        assert!(list.contains(&http::header::AUTHORIZATION));
        assert!(list.iter().any(|h| h == "x-stainless-retry-count"));
        let more = AllowHeaders::api_sdks().and([
            HeaderName::from_static("x-app"),
            http::header::AUTHORIZATION,
        ]);
        let HeadersKind::List(more) = more.0 else {
            panic!("a list");
        };
        assert_eq!(more.len(), list.len() + 1);
        assert!(!AllowHeaders::api_sdks().is_wildcard());
        assert!(!ExposeHeaders::api_sdks().is_wildcard());
    }
}
