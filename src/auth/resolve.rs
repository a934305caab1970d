//! The tunnel's route: from the admitted sandbox id to the sandbox's address.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::request::Parts;
use http::uri::PathAndQuery;
use pin_project_lite::pin_project;

use super::token::Claims;
use super::tunnel::Admitted;
use crate::route::{Resolve, RouteError, Target, Upstream};

/// Routes a request admitted by [`TunnelAuth`](super::TunnelAuth) to its sandbox: the platform
/// supplies only "sandbox id → upstream" (an async lookup, typically its orchestrator), and the
/// resolver builds the [`Target`] in the one mount style every IDE example uses.
///
/// The mount style is **strip**, the one code-server needs (it serves from `/` with relative
/// URLs, and answers `404` under a kept prefix):
///
/// - under the shared-origin mount, `/__ide/{id}/a?b` reaches the sandbox as `/a?b`, with the
///   mount `/__ide/{id}` recorded on the target so that [`RewriteLayer`](crate::rewrite::RewriteLayer)
///   maps redirects and cookies back under it;
/// - on the sandbox's own host ([`SandboxHosts`](super::SandboxHosts)), the path goes unchanged,
///   with no mount.
///
/// The sandbox id comes from the [`Claims`] the guard verified, never from the request itself; a
/// request that did not pass [`TunnelAuth`](super::TunnelAuth) is answered `404`. The lookup's own
/// errors are answered as they say (for an unknown or stopped sandbox, return
/// [`RouteError::Unavailable`], a `502` with your message).
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Arc;
/// use sandbox_gateway::auth::{TokenSigner, TunnelAuthLayer, TunnelResolver};
/// use sandbox_gateway::proxy::ReverseProxy;
/// use sandbox_gateway::route::{RouteError, RouteLayer, Upstream};
/// use tower::ServiceBuilder;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sandboxes: Arc<HashMap<String, Upstream>> =
///     Arc::new([("demo".to_owned(), "http://localhost:8081".parse()?)].into());
/// let tunnel = ServiceBuilder::new()
///     .layer(TunnelAuthLayer::new(TokenSigner::new([7u8; 32])?))
///     .layer(RouteLayer::new(TunnelResolver::new(move |id: String| {
///         let sandboxes = sandboxes.clone();
///         async move {
///             sandboxes
///                 .get(&id)
///                 .cloned()
///                 .ok_or_else(|| RouteError::Unavailable(format!("sandbox {id} is not running")))
///         }
///     })))
///     .service(ReverseProxy::new());
/// # let _ = tunnel;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TunnelResolver<F> {
    lookup: F,
}

impl<F> TunnelResolver<F> {
    /// A resolver asking `lookup` for the upstream of a sandbox id.
    pub fn new(lookup: F) -> Self {
        TunnelResolver { lookup }
    }
}

impl<F> fmt::Debug for TunnelResolver<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelResolver").finish_non_exhaustive()
    }
}

/// The path sent to the sandbox and the mount the browser saw, for an admitted request.
fn upstream_path(parts: &Parts) -> Result<(String, PathAndQuery, Option<String>), RouteError> {
    let id = parts
        .extensions
        .get::<Claims>()
        .map(|c| c.sandbox_id().to_owned())
        .ok_or(RouteError::NotFound)?;
    let pq = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    match parts.extensions.get::<Admitted>() {
        Some(Admitted::OwnHost) => Ok((id, pq, None)),
        Some(Admitted::Mount(mount)) => {
            let rest = pq
                .as_str()
                .strip_prefix(mount.as_str())
                .filter(|r| r.starts_with('/'))
                .ok_or(RouteError::NotFound)?;
            let rest: PathAndQuery = rest
                .parse()
                .map_err(|_| RouteError::BadPath("invalid path"))?;
            Ok((id, rest, Some(mount.clone())))
        }
        None => Err(RouteError::NotFound),
    }
}

impl<F, Fut> Resolve for TunnelResolver<F>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Upstream, RouteError>>,
{
    type Future = TunnelResolveFuture<Fut>;

    fn resolve(&self, parts: &Parts) -> Self::Future {
        match upstream_path(parts) {
            Ok((id, path, mount)) => TunnelResolveFuture {
                state: State::Lookup {
                    fut: (self.lookup)(id),
                    path: Some(path),
                    mount,
                },
            },
            Err(e) => TunnelResolveFuture {
                state: State::Failed { err: Some(e) },
            },
        }
    }
}

pin_project! {
    /// Future of [`TunnelResolver`]'s [`Resolve`] implementation.
    pub struct TunnelResolveFuture<Fut> {
        #[pin]
        state: State<Fut>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<Fut> {
        Lookup { #[pin] fut: Fut, path: Option<PathAndQuery>, mount: Option<String> },
        Failed { err: Option<RouteError> },
    }
}

impl<Fut> fmt::Debug for TunnelResolveFuture<Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelResolveFuture")
            .finish_non_exhaustive()
    }
}

impl<Fut> Future for TunnelResolveFuture<Fut>
where
    Fut: Future<Output = Result<Upstream, RouteError>>,
{
    type Output = Result<Target, RouteError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Lookup { fut, path, mount } => {
                let upstream = ready!(fut.poll(cx))?;
                let path = path.take().expect("polled after completion");
                let target = upstream.target(path);
                Poll::Ready(Ok(match mount.take() {
                    Some(m) => target.with_mount(m),
                    None => target,
                }))
            }
            StateProj::Failed { err } => {
                Poll::Ready(Err(err.take().expect("polled after completion")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Audience, TokenSigner};
    use std::time::Duration;

    fn admitted(uri: &str, how: Option<Admitted>) -> Parts {
        let signer = TokenSigner::new([3u8; 32]).unwrap();
        let token = signer
            .sign("demo", Audience::Cookie, Duration::from_secs(60))
            .unwrap();
        let claims = signer.verify(&token, "demo", Audience::Cookie).unwrap();
        let mut req = http::Request::get(uri).body(()).unwrap();
        req.extensions_mut().insert(claims);
        if let Some(how) = how {
            req.extensions_mut().insert(how);
        }
        req.into_parts().0
    }

    fn resolver(
    ) -> TunnelResolver<impl Fn(String) -> std::future::Ready<Result<Upstream, RouteError>>> {
        TunnelResolver::new(|id: String| {
            std::future::ready(if id == "demo" {
                "http://localhost:8081".parse()
            } else {
                Err(RouteError::Unavailable(format!(
                    "sandbox {id} is not running"
                )))
            })
        })
    }

    #[tokio::test]
    async fn strips_the_mount_on_the_shared_origin() {
        let parts = admitted(
            "/__ide/demo/static/x.js?v=1",
            Some(Admitted::Mount("/__ide/demo".into())),
        );
        let t = resolver().resolve(&parts).await.unwrap();
        assert_eq!(t.uri().to_string(), "http://localhost:8081/static/x.js?v=1");
        assert_eq!(t.mount(), Some("/__ide/demo"));
        let root = admitted("/__ide/demo/", Some(Admitted::Mount("/__ide/demo".into())));
        let t = resolver().resolve(&root).await.unwrap();
        assert_eq!(t.uri().to_string(), "http://localhost:8081/");
    }

    #[tokio::test]
    async fn keeps_the_path_on_the_own_host() {
        let parts = admitted("/__ide/demo/x?y", Some(Admitted::OwnHost));
        let t = resolver().resolve(&parts).await.unwrap();
        assert_eq!(t.uri().to_string(), "http://localhost:8081/__ide/demo/x?y");
        assert_eq!(t.mount(), None);
    }

    #[tokio::test]
    async fn refuses_what_the_guard_did_not_admit() {
        let no_guard = http::Request::get("/__ide/demo/")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(
            resolver().resolve(&no_guard).await,
            Err(RouteError::NotFound)
        );
        assert_eq!(
            resolver().resolve(&admitted("/__ide/demo/", None)).await,
            Err(RouteError::NotFound)
        );
        let elsewhere = admitted("/other/", Some(Admitted::Mount("/__ide/demo".into())));
        assert_eq!(
            resolver().resolve(&elsewhere).await,
            Err(RouteError::NotFound)
        );
    }

    #[tokio::test]
    async fn lookup_errors_pass_through() {
        let r = TunnelResolver::new(|id: String| async move {
            Err::<Upstream, _>(RouteError::Unavailable(format!(
                "sandbox {id} is not running"
            )))
        });
        let parts = admitted("/__ide/demo/", Some(Admitted::Mount("/__ide/demo".into())));
        assert_eq!(
            r.resolve(&parts).await,
            Err(RouteError::Unavailable(
                "sandbox demo is not running".into()
            ))
        );
    }
}
