//! Tower middleware for putting a browser in front of sandboxed code.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod util;

/// CORS headers and preflights, safe behind a proxy.
pub mod cors;

/// Host allowlist against DNS rebinding.
pub mod host;

/// Cross-origin isolation headers (COOP, COEP, CORP).
pub mod isolation;
