//! Sending the sandboxes' own hosts to one service and every other host to another.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Request;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::sandbox_hosts::SandboxHosts;

/// Routes a request by its Host: to `sandbox` when the Host is one of the [`SandboxHosts`], to
/// `host` otherwise. Made by [`SandboxHosts::split`].
///
/// Give `sandbox` only what a sandbox's origin may serve (the bootstrap and the tunnel), so the
/// host's own routes — above all the token route — are never served on a sandbox's origin.
///
/// Both services are cloned for each request and driven to readiness inside the response future,
/// so the split is always ready itself.
#[derive(Clone)]
pub struct SplitByHost<S, H> {
    hosts: SandboxHosts,
    sandbox: S,
    host: H,
}

impl<S, H> fmt::Debug for SplitByHost<S, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SplitByHost")
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl SandboxHosts {
    /// A service sending requests for these hosts to `sandbox` and all others to `host`.
    ///
    /// ```
    /// use axum::{body::Body, routing::get, Router};
    /// use sandbox_gateway::auth::SandboxHosts;
    ///
    /// let hosts = SandboxHosts::new("{id}.ide.localhost:8080")?;
    /// let sandbox_side: Router = Router::new().fallback(|| async { "the tunnel" });
    /// let host_side: Router = Router::new().route("/", get(|| async { "the dashboard" }));
    /// let app: Router = Router::new().fallback_service(hosts.split(sandbox_side, host_side));
    /// # let _ = app;
    /// # Ok::<(), sandbox_gateway::auth::ConfigError>(())
    /// ```
    pub fn split<S, H>(&self, sandbox: S, host: H) -> SplitByHost<S, H> {
        SplitByHost {
            hosts: self.clone(),
            sandbox,
            host,
        }
    }
}

impl<S, H, B, Res, E> Service<Request<B>> for SplitByHost<S, H>
where
    S: Service<Request<B>, Response = Res, Error = E> + Clone,
    H: Service<Request<B>, Response = Res, Error = E> + Clone,
{
    type Response = Res;
    type Error = E;
    type Future = SplitFuture<S, H, B>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let state = if self.hosts.sandbox_id(&req).is_some() {
            State::Sandbox {
                svc: self.sandbox.clone(),
                req: Some(req),
                fut: None,
            }
        } else {
            State::Host {
                svc: self.host.clone(),
                req: Some(req),
                fut: None,
            }
        };
        SplitFuture { state }
    }
}

pin_project! {
    /// Response future of [`SplitByHost`].
    pub struct SplitFuture<S, H, B>
    where
        S: Service<Request<B>>,
        H: Service<Request<B>>,
    {
        #[pin]
        state: State<S, H, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, H, B>
    where
        S: Service<Request<B>>,
        H: Service<Request<B>>,
    {
        Sandbox { svc: S, req: Option<Request<B>>, #[pin] fut: Option<S::Future> },
        Host { svc: H, req: Option<Request<B>>, #[pin] fut: Option<H::Future> },
    }
}

impl<S, H, B> fmt::Debug for SplitFuture<S, H, B>
where
    S: Service<Request<B>>,
    H: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SplitFuture").finish_non_exhaustive()
    }
}

/// Drives one side: readiness, then the call, then its future.
fn drive<Svc, B>(
    cx: &mut Context<'_>,
    svc: &mut Svc,
    req: &mut Option<Request<B>>,
    mut fut: Pin<&mut Option<Svc::Future>>,
) -> Poll<Result<Svc::Response, Svc::Error>>
where
    Svc: Service<Request<B>>,
{
    if fut.is_none() {
        ready!(svc.poll_ready(cx))?;
        let req = req.take().expect("polled after completion");
        fut.set(Some(svc.call(req)));
    }
    fut.as_pin_mut().expect("the call was made above").poll(cx)
}

impl<S, H, B, Res, E> Future for SplitFuture<S, H, B>
where
    S: Service<Request<B>, Response = Res, Error = E>,
    H: Service<Request<B>, Response = Res, Error = E>,
{
    type Output = Result<Res, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Sandbox { svc, req, fut } => drive(cx, svc, req, fut),
            StateProj::Host { svc, req, fut } => drive(cx, svc, req, fut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    #[derive(Clone)]
    struct Named(&'static str);

    impl Service<Request<()>> for Named {
        type Response = &'static str;
        type Error = Infallible;
        type Future = std::future::Ready<Result<&'static str, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            std::future::ready(Ok(self.0))
        }
    }

    #[tokio::test]
    async fn sandbox_hosts_go_one_way_everything_else_the_other() {
        let hosts = SandboxHosts::new("{id}.ide.localhost:8080").unwrap();
        let mut split = hosts.split(Named("sandbox"), Named("host"));
        let req = |host: &str| Request::get("/").header("host", host).body(()).unwrap();
        for (host, want) in [
            ("demo.ide.localhost:8080", "sandbox"),
            ("DEMO.ide.localhost:8080", "sandbox"),
            ("localhost:8080", "host"),
            ("demo.ide.localhost:9090", "host"),
            ("demo.ide.localhost.evil.com:8080", "host"),
        ] {
            assert_eq!(split.call(req(host)).await.unwrap(), want, "{host}");
        }
        // A request without a readable Host is the host's to answer (with its own 400s).
        let bare = Request::get("/").body(()).unwrap();
        assert_eq!(split.call(bare).await.unwrap(), "host");
    }
}
