//! Sandbox ids: the one piece of a token that ends up in paths and cookie names.

/// The longest sandbox id accepted, in bytes.
pub const MAX_SANDBOX_ID_LEN: usize = 64;

/// Whether `id` is a sandbox id this module accepts.
///
/// Sandbox ids go into URL paths (`/__ide/{id}/`) and cookie names, so they are limited to
/// 1 to [`MAX_SANDBOX_ID_LEN`] characters of `A-Z a-z 0-9 _ -`: nothing that needs escaping in a
/// path segment or a cookie name, and no `.` (so never a `..` segment).
///
/// ```
/// use sandbox_gateway::auth::is_valid_sandbox_id;
///
/// assert!(is_valid_sandbox_id("demo"));
/// assert!(is_valid_sandbox_id("ws_42-a"));
/// assert!(!is_valid_sandbox_id(""));
/// assert!(!is_valid_sandbox_id("../etc"));
/// assert!(!is_valid_sandbox_id("a;b"));
/// ```
pub fn is_valid_sandbox_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_SANDBOX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_safe_ids_only() {
        assert!(is_valid_sandbox_id("a"));
        assert!(is_valid_sandbox_id(&"x".repeat(MAX_SANDBOX_ID_LEN)));
        assert!(!is_valid_sandbox_id(&"x".repeat(MAX_SANDBOX_ID_LEN + 1)));
        for bad in [
            "", ".", "..", "a/b", "a b", "a%2f", "a=b", "é", "a\0", "a,b", "a\"b",
        ] {
            assert!(!is_valid_sandbox_id(bad), "{bad:?} accepted");
        }
    }
}
