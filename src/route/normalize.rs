//! Path checks applied before routing: nothing may escape a mount.

use percent_encoding::percent_decode_str;

use super::RouteError;

/// Checks that a request path cannot escape the mount it is routed under.
///
/// Refused (each with [`RouteError::BadPath`], answered 400):
/// - a path that does not start with `/`;
/// - backslashes, raw or encoded (`\`, `%5c`), which some servers treat as `/`;
/// - dot segments, raw or encoded (`.`, `..`, `%2e%2e`, `.%2E`);
/// - encoded slashes (`%2f`), which would split into segments after the route was chosen;
/// - empty segments (`//`) anywhere but a trailing slash;
/// - NUL or other control bytes, raw or encoded;
/// - a segment that still holds an encoded `%`, `.`, `/` or `\` after one decoding (double encoding).
///
/// Refusing beats normalising: the browser never sends these for a page it rendered itself, so they
/// come from hand-made requests, and the answer says what was wrong.
///
/// ```
/// use sandbox_gateway::route::check_path;
///
/// assert!(check_path("/proxy/5173/src/main.ts").is_ok());
/// assert!(check_path("/proxy/5173/%2e%2e/6000/").is_err());
/// ```
pub fn check_path(path: &str) -> Result<(), RouteError> {
    if !path.starts_with('/') {
        return Err(RouteError::BadPath("path must start with /"));
    }
    if path.contains('\\') {
        return Err(RouteError::BadPath("backslash in path"));
    }
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment.is_empty() {
            if last {
                break;
            }
            return Err(RouteError::BadPath("empty path segment"));
        }
        check_segment(segment)?;
    }
    Ok(())
}

fn check_segment(segment: &str) -> Result<(), RouteError> {
    if segment.bytes().any(|b| b.is_ascii_control()) {
        return Err(RouteError::BadPath("control character in path"));
    }
    if !segment.contains('%') {
        return match segment {
            "." | ".." => Err(RouteError::BadPath("dot segment in path")),
            _ => Ok(()),
        };
    }
    let decoded: Vec<u8> = percent_decode_str(segment).collect();
    if decoded.contains(&b'/') {
        return Err(RouteError::BadPath("encoded slash in path"));
    }
    if decoded.contains(&b'\\') {
        return Err(RouteError::BadPath("backslash in path"));
    }
    if decoded.iter().any(|b| b.is_ascii_control()) {
        return Err(RouteError::BadPath("control character in path"));
    }
    if decoded == b"." || decoded == b".." {
        return Err(RouteError::BadPath("dot segment in path"));
    }
    let lower = String::from_utf8_lossy(&decoded).to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "%25", "%00"]
        .iter()
        .any(|e| lower.contains(e))
    {
        return Err(RouteError::BadPath("double-encoded character in path"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for ok in [
            "/",
            "/a",
            "/a/",
            "/proxy/5173/src/main.ts",
            "/@vite/client",
            "/node_modules/.vite/deps/react.js",
            "/a%20b/c",
            "/file..txt",
            "/...",
            "/%E2%9C%93",
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_escapes() {
        for bad in [
            "",
            "a/b",
            "/..",
            "/a/../b",
            "/a/./b",
            "/a/%2e%2e/b",
            "/a/%2E%2E/b",
            "/a/.%2e/b",
            "/a/%2e./b",
            "/a/%2e",
            "/a%2fb",
            "/a%2F..%2Fb",
            "/a\\..\\b",
            "/a/%5c../b",
            "/a//b",
            "//evil.example/",
            "/a/%252e%252e/b",
            "/a/%00/b",
            "/a/\u{1}/b",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
