use std::future::{ready, Future, Ready};

use http::request::Parts;
use http::uri::PathAndQuery;

use super::{RouteError, Target, Upstream};

/// Decides where one request goes.
///
/// Called once per request, with the request head; the returned [`Target`] travels with the request
/// (in its extensions) to the rewrite layers and the proxy, WebSocket upgrades included.
///
/// Implemented by [`PathMount`](super::PathMount), [`Upstream`] (one fixed upstream, the request path
/// unchanged), and by any closure `Fn(&Parts) -> impl Future<Output = Result<Target, RouteError>>`,
/// which is how a platform plugs in its own orchestrator (sandbox id → container address):
///
/// ```
/// use http::request::Parts;
/// use sandbox_gateway::route::{RouteError, RouteLayer, Target, Upstream};
///
/// let layer = RouteLayer::new(|parts: &Parts| {
///     // Look the sandbox up; here every request goes to one dev server.
///     let path = parts.uri.path_and_query().cloned();
///     async move {
///         let up: Upstream = "http://localhost:5173".parse()?;
///         Ok::<Target, RouteError>(up.target(path.ok_or(RouteError::NotFound)?))
///     }
/// });
/// # let _ = layer;
/// ```
pub trait Resolve {
    /// The future resolving the target.
    type Future: Future<Output = Result<Target, RouteError>>;

    /// Resolves the target of a request from its head.
    fn resolve(&self, parts: &Parts) -> Self::Future;
}

impl<F, Fut> Resolve for F
where
    F: Fn(&Parts) -> Fut,
    Fut: Future<Output = Result<Target, RouteError>>,
{
    type Future = Fut;

    fn resolve(&self, parts: &Parts) -> Fut {
        self(parts)
    }
}

impl Resolve for Upstream {
    type Future = Ready<Result<Target, RouteError>>;

    fn resolve(&self, parts: &Parts) -> Self::Future {
        let pq = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        ready(Ok(self.target(pq)))
    }
}
