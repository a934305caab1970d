//! Configuration errors of the SSE layer.

/// Why an [`SseLayerBuilder`](super::SseLayerBuilder) refused to build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseConfigError {
    /// A heartbeat interval of zero would send comments back to back.
    #[error("the SSE heartbeat interval must be greater than zero")]
    ZeroHeartbeat,
}
