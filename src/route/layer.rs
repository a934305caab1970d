use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{check_path, Resolve, RouteError, Target};

/// Resolves each request's [`Target`] with a [`Resolve`] and hands the request, target attached, to
/// the inner service.
///
/// Before resolving, the path is checked with [`check_path`](super::check_path): nothing can escape a
/// mount. A request that cannot be routed is answered by this layer with the
/// [`RouteError`]'s status and a short plain-text message; the inner service is not called.
///
/// ```
/// use sandbox_gateway::proxy::ReverseProxy;
/// use sandbox_gateway::route::{PathMount, RouteLayer};
/// use tower::ServiceBuilder;
///
/// let svc = ServiceBuilder::new()
///     .layer(RouteLayer::new(PathMount::strip("/proxy").allow_port(5173)))
///     .service(ReverseProxy::new());
/// # let _ = svc;
/// ```
#[derive(Clone, Debug)]
pub struct RouteLayer<R> {
    resolver: R,
}

impl<R> RouteLayer<R> {
    /// A layer resolving targets with `resolver`.
    pub fn new(resolver: R) -> Self {
        RouteLayer { resolver }
    }
}

impl<S, R: Clone> Layer<S> for RouteLayer<R> {
    type Service = Route<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Route {
            inner,
            resolver: self.resolver.clone(),
        }
    }
}

/// The service made by [`RouteLayer`].
#[derive(Clone, Debug)]
pub struct Route<S, R> {
    inner: S,
    resolver: R,
}

impl<S, R> Route<S, R> {
    /// Wraps `inner`, resolving targets with `resolver`.
    pub fn new(inner: S, resolver: R) -> Self {
        Route { inner, resolver }
    }
}

impl<S, R, B, ResBody> Service<Request<B>> for Route<S, R>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    R: Resolve,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, R::Future, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (parts, body) = req.into_parts();
        if let Err(e) = check_path(parts.uri.path()) {
            return ResponseFuture::answer(e);
        }
        let resolving = self.resolver.resolve(&parts);
        // The ready service goes into the future; a clone stays for the next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture {
            state: State::Resolving {
                fut: resolving,
                rest: Some((inner, parts, body)),
            },
        }
    }
}

pin_project! {
    /// The response future of [`Route`].
    pub struct ResponseFuture<S, RF, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, RF, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, RF, B>
    where
        S: Service<Request<B>>,
    {
        Resolving { #[pin] fut: RF, rest: Option<(S, Parts, B)> },
        Calling { #[pin] fut: S::Future },
        Answer { error: Option<RouteError> },
    }
}

impl<S, RF, B> ResponseFuture<S, RF, B>
where
    S: Service<Request<B>>,
{
    fn answer(error: RouteError) -> Self {
        ResponseFuture {
            state: State::Answer { error: Some(error) },
        }
    }
}

impl<S, RF, B, ResBody> Future for ResponseFuture<S, RF, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    RF: Future<Output = Result<Target, RouteError>>,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Resolving { fut, rest } => {
                    let resolved = ready!(fut.poll(cx));
                    let (mut inner, mut parts, body) =
                        rest.take().expect("polled after completion");
                    match resolved {
                        Ok(target) => {
                            tracing::trace!(target = %target, "resolved");
                            parts.extensions.insert(target);
                            let fut = inner.call(Request::from_parts(parts, body));
                            this.state.set(State::Calling { fut });
                        }
                        Err(e) => this.state.set(State::Answer { error: Some(e) }),
                    }
                }
                StateProj::Calling { fut } => return fut.poll(cx),
                StateProj::Answer { error } => {
                    let e = error.take().expect("polled after completion");
                    return Poll::Ready(Ok(e.into_response()));
                }
            }
        }
    }
}
