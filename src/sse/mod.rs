//! Server-Sent Events passthrough: no buffering, no compression, optional idle heartbeat.
//!
//! [`SseLayer`] wraps any service (a reverse proxy, an API forwarder, a
//! handler) and looks at each response's `Content-Type`. When its media type is
//! `text/event-stream` (compared case-insensitively, parameters allowed, see
//! [`is_event_stream`]), the response is made safe to relay through
//! buffering intermediaries:
//!
//! - `Content-Length` is removed; the body reports an unknown size, so it goes out chunked on
//!   HTTP/1.1 and as open-ended DATA frames on HTTP/2.
//! - `Cache-Control` becomes `no-cache, no-transform`. **Rule:** the upstream's `Cache-Control`
//!   is replaced, unless it already lists `no-transform`; then the upstream made a deliberate
//!   choice and it is kept as it is.
//! - `X-Accel-Buffering: no`, so an nginx in front of the gateway does not buffer either.
//! - `Content-Type` is rewritten to lowercase `text/event-stream` (parameters kept) if the
//!   upstream spelled it otherwise, so case-sensitive checks further out recognise it (see
//!   below).
//! - No `Content-Encoding` is ever added here. An upstream's own `Content-Encoding` is relayed
//!   untouched (and heartbeats are then off for that response: comments cannot be spliced into
//!   a compressed stream).
//! - Each upstream frame is handed on the moment it arrives: nothing is buffered, coalesced or
//!   split ([`SseBody`]).
//! - Optional heartbeat
//!   ([`SseLayerBuilder::heartbeat`](crate::sse::SseLayerBuilder::heartbeat), off by default):
//!   after that much silence a comment frame `:\n\n` is sent, which browsers ignore but which
//!   keeps idle-timeout intermediaries (often 60 s) from cutting the stream. It is only sent between events: if the
//!   last bytes received did not end with a blank line (`\n\n`, `\r\n\r\n`, `\r\r`...), a comment
//!   would land inside the event, so the heartbeat waits. The silence is counted from the
//!   response head and restarted by every upstream frame and every heartbeat.
//! - An upstream error mid-stream is passed on as a body error, so the client sees a broken
//!   stream (and an `EventSource` reconnects), never a clean end. The end of the upstream body
//!   ends the stream.
//! - Dropping the body (the client disconnected) drops the upstream body at once. For a
//!   proxied response that means the proxy's HTTP client closes the upstream HTTP/1.1
//!   connection (an unfinished response cannot go back to the pool) or resets the HTTP/2
//!   stream, so the upstream's writer sees the client leave.
//!
//! The request is not touched: `Last-Event-ID`, which a reconnecting `EventSource` sends, reaches
//! the upstream as the browser sent it. Responses of any other content type pass through
//! unchanged, through a passthrough variant of [`SseBody`] that only
//! forwards calls.
//!
//! # With tower-http's `CompressionLayer`
//!
//! A compressing encoder holds small writes until it has a block's worth of output, so a
//! compressed event stream reaches the browser late and in bursts (the classic
//! expressjs/compression bug). tower-http's `CompressionLayer` decides per response:
//!
//! - it never compresses a response that already has `Content-Encoding` or `Content-Range`;
//! - otherwise it asks its predicate. `DefaultPredicate` is
//!   `SizeAbove(32) & NotForContentType::GRPC & NotForContentType::IMAGES & NotForContentType::SSE`,
//!   and `NotForContentType::SSE` refuses responses whose `Content-Type` *starts with* the exact
//!   bytes `text/event-stream`: a case-sensitive prefix match;
//! - it does not look at `Cache-Control: no-transform`.
//!
//! So stack `CompressionLayer` **outside** `SseLayer`: the response passes `SseLayer` first,
//! which lowercases the media type, and the default predicate then always recognises the
//! stream (an upstream's `Text/Event-Stream` would otherwise be compressed).
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use sandbox_gateway::sse::SseLayer;
//! use tower::ServiceBuilder;
//! use tower_http::compression::CompressionLayer;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let service = ServiceBuilder::new()
//!     .layer(CompressionLayer::new()) // outer: sees the response after SseLayer
//!     .layer(SseLayer::builder().heartbeat(Duration::from_secs(15)).build()?)
//!     .service_fn(|_req: Request<Full<Bytes>>| async {
//!         // The reverse proxy goes here.
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"data: hi\n\n"))))
//!     });
//! # let _ = service;
//! # Ok(())
//! # }
//! ```
//!
//! A custom predicate must keep refusing event streams: keep `NotForContentType::SSE` in the
//! chain (with `CompressionLayer` outside `SseLayer`), or test with
//! [`is_event_stream`], which
//! also matches other spellings wherever the layers are:
//!
//! ```
//! use tower_http::compression::{predicate::{NotForContentType, Predicate, SizeAbove}, CompressionLayer};
//!
//! // Keep `NotForContentType::SSE` when replacing the default predicate…
//! let layer = CompressionLayer::new()
//!     .compress_when(SizeAbove::new(256).and(NotForContentType::GRPC).and(NotForContentType::SSE));
//!
//! // …or decide with `is_event_stream`.
//! let layer = CompressionLayer::new().compress_when(
//!     SizeAbove::new(256).and(|_: http::StatusCode, _: http::Version, headers: &http::HeaderMap, _: &http::Extensions| {
//!         !sandbox_gateway::sse::is_event_stream(headers)
//!     }),
//! );
//! # let _ = layer;
//! ```
//!
//! If a custom predicate lets an event stream through anyway, the stream is compressed and
//! delayed; `SseLayer` cannot undo that from inside. Stacked the other way round
//! (`CompressionLayer` inside `SseLayer`), such a stream reaches `SseLayer` with a
//! `Content-Encoding` and is relayed without heartbeats.

mod body;
mod boundary;
mod error;
mod future;
mod headers;
mod layer;

pub use body::SseBody;
pub use error::SseConfigError;
pub use future::ResponseFuture;
pub use headers::is_event_stream;
pub use layer::{SseLayer, SseLayerBuilder, SseService};
