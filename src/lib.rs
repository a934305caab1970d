//! Tower middleware for putting a browser in front of sandboxed code.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// Server-Sent Events passthrough: no buffering, no compression, optional heartbeat.
pub mod sse;

mod util;
