//! The connector of the forwarder: IP-literal hosts checked, names resolved through the guard.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use tower_service::Service;

use super::SsrfGuard;
use crate::connect::{ConnStream, ConnectError, Connector};

type BoxError = Box<dyn StdError + Send + Sync>;

/// The connector of an [`ApiForward`](super::ApiForward): the crate's [`Connector`] over an
/// [`SsrfGuard`] resolver, which first checks hosts that are IP literals (or other IPv4 spellings),
/// as hyper-util's `HttpConnector` dials those without asking the resolver.
#[derive(Clone)]
pub struct SsrfConnector<R> {
    inner: Connector<SsrfGuard<R>>,
    guard: SsrfGuard<R>,
}

impl<R> SsrfConnector<R> {
    pub(crate) fn new(inner: Connector<SsrfGuard<R>>, guard: SsrfGuard<R>) -> Self {
        SsrfConnector { inner, guard }
    }
}

impl<R> fmt::Debug for SsrfConnector<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SsrfConnector")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<ConnStream, BoxError>> + Send>>;

impl<R> Service<Uri> for SsrfConnector<R>
where
    Connector<SsrfGuard<R>>: Service<Uri, Response = ConnStream, Error = ConnectError>,
    <Connector<SsrfGuard<R>> as Service<Uri>>::Future: Send + 'static,
{
    type Response = ConnStream;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if let Some(Err(refusal)) = uri.host().and_then(|h| self.guard.check_literal(h)) {
            tracing::warn!(host = %refusal.host(), ip = %refusal.ip(), "SSRF guard refused an upstream address");
            crate::metrics::refused("ssrf");
            return Box::pin(std::future::ready(Err(Box::new(refusal) as BoxError)));
        }
        let connecting = self.inner.call(uri);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}
