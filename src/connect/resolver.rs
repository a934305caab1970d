use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiAddrs, GaiFuture, GaiResolver, Name};
use pin_project_lite::pin_project;
use tower_service::Service;

/// Resolves `localhost` and `*.localhost` (RFC 6761) to both loopbacks, `::1` first, without asking
/// DNS or `/etc/hosts`; every other name goes to the system resolver.
///
/// Dev servers on modern Node (Vite, Astro, SvelteKit) bind `localhost`, which may be `::1` only;
/// others bind `127.0.0.1` only. Given both addresses, hyper-util's `HttpConnector` races them
/// (Happy Eyeballs, RFC 8305): the second starts after the attempt delay, or at once when the first
/// is refused. So a target of `localhost:5173` reaches the dev server whichever loopback it chose,
/// with no `--host` flag.
///
/// ```
/// use sandbox_gateway::connect::LocalhostResolver;
///
/// assert!(LocalhostResolver::is_loopback_name("localhost"));
/// assert!(LocalhostResolver::is_loopback_name("5173.LOCALHOST."));
/// assert!(!LocalhostResolver::is_loopback_name("localhost.example.com"));
/// ```
#[derive(Clone, Debug)]
pub struct LocalhostResolver {
    system: GaiResolver,
}

impl Default for LocalhostResolver {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalhostResolver {
    /// A resolver that answers loopback names itself and asks the system for the rest.
    pub fn new() -> Self {
        LocalhostResolver {
            system: GaiResolver::new(),
        }
    }

    /// Whether `host` is `localhost` or a name under `.localhost`, in any case, with or without a
    /// trailing dot.
    pub fn is_loopback_name(host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        let tail = host.len().saturating_sub("localhost".len());
        host.get(tail..)
            .is_some_and(|t| t.eq_ignore_ascii_case("localhost"))
            && (tail == 0 || host.as_bytes()[tail - 1] == b'.')
    }

    /// The loopback addresses `localhost` stands for, `::1` first.
    pub fn loopback_addrs(port: u16) -> [SocketAddr; 2] {
        [
            SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        ]
    }
}

impl Service<Name> for LocalhostResolver {
    type Response = Addrs;
    type Error = io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        if Self::is_loopback_name(name.as_str()) {
            Resolving {
                state: State::Loopback { done: false },
            }
        } else {
            Resolving {
                state: State::System {
                    fut: self.system.call(name),
                },
            }
        }
    }
}

/// The addresses a [`LocalhostResolver`] found.
#[derive(Debug)]
pub struct Addrs {
    inner: AddrsInner,
}

#[derive(Debug)]
enum AddrsInner {
    Loopback(std::array::IntoIter<SocketAddr, 2>),
    System(GaiAddrs),
}

impl Iterator for Addrs {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        match &mut self.inner {
            AddrsInner::Loopback(it) => it.next(),
            AddrsInner::System(it) => it.next(),
        }
    }
}

pin_project! {
    /// The future of a [`LocalhostResolver`] lookup.
    pub struct Resolving {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Loopback { done: bool },
        System { #[pin] fut: GaiFuture },
    }
}

impl Future for Resolving {
    type Output = io::Result<Addrs>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Loopback { done } => {
                *done = true;
                Poll::Ready(Ok(Addrs {
                    inner: AddrsInner::Loopback(LocalhostResolver::loopback_addrs(0).into_iter()),
                }))
            }
            StateProj::System { fut } => fut.poll(cx).map_ok(|addrs| Addrs {
                inner: AddrsInner::System(addrs),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names() {
        for yes in [
            "localhost",
            "LocalHost",
            "localhost.",
            "a.localhost",
            "5173-x.b.localhost.",
        ] {
            assert!(LocalhostResolver::is_loopback_name(yes), "{yes}");
        }
        for no in [
            "",
            "xlocalhost",
            "localhost.com",
            "localhost..",
            "127.0.0.1",
            "evil-localhost",
        ] {
            assert!(!LocalhostResolver::is_loopback_name(no), "{no}");
        }
    }

    #[tokio::test]
    async fn localhost_resolves_to_both_loopbacks_v6_first() {
        let mut r = LocalhostResolver::new();
        let addrs: Vec<_> = r
            .call("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(addrs, LocalhostResolver::loopback_addrs(0).to_vec());
    }
}
