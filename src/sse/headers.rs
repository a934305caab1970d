//! The header rules applied to an event stream response.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::util::header_has_token;

/// The media type of Server-Sent Events, lowercase.
const EVENT_STREAM: &[u8] = b"text/event-stream";

/// `X-Accel-Buffering`, which tells an nginx in front of us not to buffer the response.
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// The `Cache-Control` an event stream gets unless the upstream already forbade transformations.
const NO_CACHE_NO_TRANSFORM: HeaderValue = HeaderValue::from_static("no-cache, no-transform");

/// Whether a response's headers announce Server-Sent Events: `Content-Type` whose media type is
/// `text/event-stream`, compared case-insensitively, parameters (`; charset=utf-8`) allowed.
///
/// Useful in a custom compression predicate, see the [module docs](crate::sse).
///
/// ```
/// use http::{header, HeaderMap, HeaderValue};
/// use sandbox_gateway::sse::is_event_stream;
///
/// let mut headers = HeaderMap::new();
/// headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("Text/Event-Stream; charset=utf-8"));
/// assert!(is_event_stream(&headers));
///
/// headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-streamx"));
/// assert!(!is_event_stream(&headers));
/// ```
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| media_type(v.as_bytes()).eq_ignore_ascii_case(EVENT_STREAM))
}

/// The media type of a `Content-Type` value: what comes before any `;`, without surrounding
/// whitespace.
fn media_type(value: &[u8]) -> &[u8] {
    let end = value.iter().position(|&b| b == b';').unwrap_or(value.len());
    value[..end].trim_ascii()
}

/// Applies the event-stream header rules to a response that [`is_event_stream`] accepted.
///
/// - `Content-Length` is removed: the stream is open-ended and must go out chunked (HTTP/1.1) or
///   as DATA frames without a declared length (HTTP/2).
/// - `Cache-Control` becomes `no-cache, no-transform`, unless the upstream's `Cache-Control`
///   already lists `no-transform`, in which case the upstream's choice is kept as it is.
/// - `X-Accel-Buffering: no` is set.
/// - `Content-Type` is rewritten to the lowercase `text/event-stream` (parameters kept) when the
///   upstream spelled it otherwise, so that case-sensitive prefix matches further out
///   (tower-http's `NotForContentType::SSE`) recognise the stream.
/// - `Content-Encoding` is left as the upstream sent it; nothing is added.
///
/// Returns whether the body is sent without a content coding, that is whether bytes may be
/// added to it (heartbeats). A compressed upstream stream cannot take plain-text comments.
pub(crate) fn apply(headers: &mut HeaderMap) -> bool {
    headers.remove(header::CONTENT_LENGTH);

    if !header_has_token(headers, header::CACHE_CONTROL, "no-transform") {
        headers.insert(header::CACHE_CONTROL, NO_CACHE_NO_TRANSFORM);
    }

    headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));

    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        if !ct.as_bytes().starts_with(EVENT_STREAM) {
            let params = ct
                .as_bytes()
                .iter()
                .position(|&b| b == b';')
                .map_or(&[][..], |i| &ct.as_bytes()[i..]);
            let mut value = Vec::with_capacity(EVENT_STREAM.len() + params.len());
            value.extend_from_slice(EVENT_STREAM);
            value.extend_from_slice(params);
            // The parameters come from a valid header value, so the result is valid too.
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                headers.insert(header::CONTENT_TYPE, value);
            }
        }
    }

    identity_coded(headers)
}

/// Whether no content coding other than `identity` applies to the body.
fn identity_coded(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONTENT_ENCODING).iter().all(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .all(|c| c.is_empty() || c.eq_ignore_ascii_case(b"identity"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(HeaderName, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(name.clone(), HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn detects_event_stream_case_insensitively_with_parameters() {
        for ct in [
            "text/event-stream",
            "TEXT/EVENT-STREAM",
            "Text/Event-Stream; charset=utf-8",
            "text/event-stream;charset=UTF-8",
            " text/event-stream ; x=y",
        ] {
            assert!(
                is_event_stream(&headers(&[(header::CONTENT_TYPE, ct)])),
                "{ct}"
            );
        }
        for ct in [
            "text/plain",
            "text/event-streams",
            "text/event",
            "application/json; x=text/event-stream",
            "",
        ] {
            assert!(
                !is_event_stream(&headers(&[(header::CONTENT_TYPE, ct)])),
                "{ct}"
            );
        }
        assert!(!is_event_stream(&HeaderMap::new()));
    }

    #[test]
    fn removes_length_sets_no_buffering_and_no_transform() {
        let mut h = headers(&[
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CONTENT_LENGTH, "120"),
            (header::CACHE_CONTROL, "max-age=60"),
            (header::CACHE_CONTROL, "public"),
        ]);
        assert!(apply(&mut h));
        assert!(!h.contains_key(header::CONTENT_LENGTH));
        let cc: Vec<_> = h.get_all(header::CACHE_CONTROL).iter().collect();
        assert_eq!(cc, ["no-cache, no-transform"]);
        assert_eq!(h["x-accel-buffering"], "no");
        assert_eq!(h[header::CONTENT_TYPE], "text/event-stream");
        assert!(!h.contains_key(header::CONTENT_ENCODING));
    }

    #[test]
    fn missing_cache_control_is_added() {
        let mut h = headers(&[(header::CONTENT_TYPE, "text/event-stream")]);
        apply(&mut h);
        assert_eq!(h[header::CACHE_CONTROL], "no-cache, no-transform");
    }

    #[test]
    fn upstream_cache_control_with_no_transform_is_kept() {
        let mut h = headers(&[
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "private, No-Transform, max-age=0"),
        ]);
        apply(&mut h);
        assert_eq!(h[header::CACHE_CONTROL], "private, No-Transform, max-age=0");
    }

    #[test]
    fn upstream_x_accel_buffering_is_overridden() {
        let mut h = headers(&[
            (header::CONTENT_TYPE, "text/event-stream"),
            (X_ACCEL_BUFFERING, "yes"),
        ]);
        apply(&mut h);
        let v: Vec<_> = h.get_all(X_ACCEL_BUFFERING).iter().collect();
        assert_eq!(v, ["no"]);
    }

    #[test]
    fn content_type_is_lowercased_keeping_parameters() {
        let mut h = headers(&[(header::CONTENT_TYPE, "Text/Event-Stream; charset=UTF-8")]);
        apply(&mut h);
        assert_eq!(h[header::CONTENT_TYPE], "text/event-stream; charset=UTF-8");

        let mut h = headers(&[(header::CONTENT_TYPE, "TEXT/EVENT-STREAM")]);
        apply(&mut h);
        assert_eq!(h[header::CONTENT_TYPE], "text/event-stream");

        let mut h = headers(&[(header::CONTENT_TYPE, "text/event-stream;charset=utf-8")]);
        apply(&mut h);
        assert_eq!(h[header::CONTENT_TYPE], "text/event-stream;charset=utf-8");
    }

    #[test]
    fn upstream_content_encoding_is_kept_and_reported() {
        let mut h = headers(&[
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CONTENT_ENCODING, "gzip"),
        ]);
        assert!(!apply(&mut h));
        assert_eq!(h[header::CONTENT_ENCODING], "gzip");

        let mut h = headers(&[
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CONTENT_ENCODING, "Identity"),
        ]);
        assert!(apply(&mut h));
    }
}
