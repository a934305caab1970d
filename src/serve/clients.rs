//! Open connections counted per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The open connections of each client (an address, or an IPv6 /64: `util::client_network`),
/// with a cap.
#[derive(Debug)]
pub(crate) struct Clients {
    max_per_client: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`Clients`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    clients: Arc<Clients>,
    key: IpAddr,
}

impl Clients {
    pub(crate) fn new(max_per_client: usize) -> Arc<Self> {
        Arc::new(Clients {
            max_per_client,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `ip`, or `None` when it has its cap already.
    pub(crate) fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let key = crate::util::client_network(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= self.max_per_client {
            return None;
        }
        *n += 1;
        Some(Slot {
            clients: self.clone(),
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.clients.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_per_address_and_per_ipv6_network() {
        let clients = Clients::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let s1 = clients.enter(a).unwrap();
        let _s2 = clients.enter(a).unwrap();
        assert!(clients.enter(a).is_none(), "third connection over the cap");
        assert!(clients.enter("192.0.2.2".parse().unwrap()).is_some());
        drop(s1);
        let _s3 = clients
            .enter(a)
            .expect("a closed connection frees its slot");

        let _v1 = clients.enter("2001:db8::1".parse().unwrap()).unwrap();
        let _v2 = clients.enter("2001:db8::ffff:2".parse().unwrap()).unwrap();
        assert!(
            clients.enter("2001:db8::3".parse().unwrap()).is_none(),
            "one /64 is one client"
        );
        assert!(clients.enter("2001:db8:0:1::1".parse().unwrap()).is_some());
        assert!(
            clients.enter("::ffff:192.0.2.1".parse().unwrap()).is_none(),
            "an IPv4-mapped address is its IPv4 client"
        );
    }
}
