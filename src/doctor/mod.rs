//! Checking a live gateway against the ways browsers fail in front of one.
//!
//! A [`Probe`] connects to a running deployment the way a browser would and reports one [`Check`]
//! per finding, each [`Outcome::Ok`], [`Outcome::Warn`] or [`Outcome::Fail`], with its cause and
//! the fix:
//!
//! | check | what it asks | fails when |
//! |---|---|---|
//! | `reach` | can the gateway be connected to at all | nothing answers (this is then the only network finding) |
//! | `secure-context` | is the page a secure context | plain `http` to a non-loopback host: no isolation, no `Secure` cookies |
//! | `port` | the URL's port against the Fetch bad-port list ([`route::is_bad_port`]) | browsers refuse the port (`ERR_UNSAFE_PORT`) |
//! | `isolation` | `Cross-Origin-Opener-Policy: same-origin` and `Cross-Origin-Embedder-Policy: credentialless` / `require-corp` on the page; CORP noted | either is missing: no `SharedArrayBuffer` |
//! | `cors` | a preflight from the origin for `POST` with `authorization, content-type` to the API path | not 2xx, no or several `Access-Control-Allow-Origin`, another origin, `Authorization` not allowed (`*` does not cover it); no `Max-Age` warns |
//! | `sse` | the event stream path with `Accept-Encoding: gzip` | no first event before the stream ends or the timeout, `Content-Length`, `Content-Encoding`; no `no-transform` warns |
//! | `websocket` | an HTTP/1.1 upgrade with the RFC 6455 sample key and the gateway's own `Origin` | not `101`, a wrong `Sec-WebSocket-Accept`, a requested subprotocol not echoed |
//! | `http2` | the protocol ALPN settled on (`https` URLs only) | warns when only HTTP/1.1 is offered |
//! | `host` | the page with `Host: evil.example` | warns when a foreign Host is answered (DNS rebinding) |
//!
//! The `cors`, `sse` and `websocket` checks run when their path is given. Every network step is
//! bounded by the probe's timeout ([`ProbeBuilder::timeout`], 5 s by default); a probe never
//! panics, whatever the gateway answers.
//!
//! ```no_run
//! use sandbox_gateway::doctor::Probe;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let report = Probe::builder("https://gateway.example/")
//!     .origin("https://app.example")
//!     .api_path("/api/proxy/llm/chat/completions")
//!     .sse_path("/proxy/5173/events")
//!     .ws_path("/proxy/5173/ws")
//!     .build()?
//!     .run()
//!     .await;
//! print!("{report}");
//! if report.failed() {
//!     std::process::exit(1);
//! }
//! # Ok(()) }
//! ```
//!
//! The `doctor` example is this as a command line tool:
//! `cargo run --example doctor --features doctor -- URL [--origin ORIGIN] [--api PATH] [--ws PATH] [--sse PATH] [--json]`.
//!
//! [`route::is_bad_port`]: crate::route::is_bad_port

mod probe;
mod report;

pub use probe::{Probe, ProbeBuilder, ProbeError, DEFAULT_TIMEOUT};
pub use report::{Check, Outcome, Report};
