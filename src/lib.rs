//! Tower middleware for putting a browser in front of sandboxed code.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod util;

/// Signed tokens, the link-to-cookie bootstrap and the IDE tunnel guard.
#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
pub mod auth;
