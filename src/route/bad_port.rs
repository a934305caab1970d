//! The Fetch standard's bad ports: ports browsers refuse to load from (`ERR_UNSAFE_PORT`).

use super::RouteError;

/// The Fetch standard's bad-port list (<https://fetch.spec.whatwg.org/#bad-port>), sorted.
///
/// 4190 and 6679 were added in 2024, 0 in 2025. Node's `fetch` (undici) applies the same list.
const BAD_PORTS: &[u16] = &[
    0, 1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101,
    102, 103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427,
    465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990,
    993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667,
    6668, 6669, 6679, 6697, 10080,
];

/// Whether browsers refuse URLs with this port: the Fetch standard's
/// [bad-port list](https://fetch.spec.whatwg.org/#bad-port) (Chromium's `ERR_UNSAFE_PORT`).
///
/// Only the port of the URL the browser sees matters. A dev server on a bad port behind
/// `/proxy/6000/` or `6000.localhost:8080` is reachable: the browser only sees the gateway's port.
/// A gateway listening on a bad port, or a host pattern publishing one, is unreachable from every
/// browser — [`check_public_port`] refuses those when the gateway is configured.
///
/// ```
/// use sandbox_gateway::route::is_bad_port;
///
/// assert!(is_bad_port(6000));
/// assert!(is_bad_port(10080));
/// assert!(!is_bad_port(5173));
/// ```
pub fn is_bad_port(port: u16) -> bool {
    BAD_PORTS.binary_search(&port).is_ok()
}

/// Checks a port browsers will see in URLs (the port the gateway listens on, or one a host pattern
/// publishes): a bad port is refused with [`RouteError::UnsafePort`], whose message explains that
/// browsers block it.
///
/// ```
/// use sandbox_gateway::route::check_public_port;
///
/// assert!(check_public_port(8080).is_ok());
/// let err = check_public_port(6666).unwrap_err();
/// assert!(err.to_string().contains("ERR_UNSAFE_PORT"));
/// ```
pub fn check_public_port(port: u16) -> Result<(), RouteError> {
    if is_bad_port(port) {
        Err(RouteError::UnsafePort(port))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_and_complete() {
        assert!(BAD_PORTS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(BAD_PORTS.len(), 83);
        for p in [0, 1, 22, 25, 4190, 6000, 6665, 6669, 6679, 6697, 10080] {
            assert!(is_bad_port(p), "{p}");
        }
        for p in [80, 443, 3000, 5173, 6664, 6670, 8080, 10081, 65535] {
            assert!(!is_bad_port(p), "{p}");
        }
    }

    #[test]
    fn public_port_check_explains() {
        let e = check_public_port(6000).unwrap_err();
        assert_eq!(e, RouteError::UnsafePort(6000));
        assert!(e.to_string().contains("6000"));
        assert!(e.to_string().contains("ERR_UNSAFE_PORT"));
    }
}
