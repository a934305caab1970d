//! Single use: remembering spent token nonces until the tokens expire.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::SystemTime;

/// A boxed future returned by [`NonceStore::record`].
pub type RecordFuture<'a> =
    Pin<Box<dyn Future<Output = Result<bool, NonceStoreError>> + Send + 'a>>;

/// Remembers spent token nonces, so each bootstrap token opens at most one session.
///
/// [`Bootstrap`](super::Bootstrap) calls [`record`](Self::record) once a token has passed every
/// other check. Implementations must be atomic: of two concurrent calls with the same nonce,
/// exactly one may return `Ok(true)`. With several gateway replicas, use one shared store
/// (see `RedisNonceStore` behind the `redis` feature), otherwise a token spent on one replica can
/// be spent again on another.
pub trait NonceStore: Send + Sync + 'static {
    /// Records `nonce` until `expires_at`; `Ok(true)` if it was not already recorded (the token is
    /// fresh), `Ok(false)` if it was (a replay). An error means the store could not decide; the
    /// token is then refused.
    fn record<'a>(&'a self, nonce: &'a [u8], expires_at: SystemTime) -> RecordFuture<'a>;
}

/// The nonce store could not record a nonce.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NonceStoreError {
    /// The store holds its maximum of unexpired nonces.
    #[error("nonce store is full of unexpired nonces")]
    Full,
    /// The backing store failed (connection lost, command refused...).
    #[error("nonce store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// An in-process [`NonceStore`] with a bounded size.
///
/// Suits a single gateway process. Expired nonces are dropped first, whenever a nonce is
/// recorded. When the store holds `capacity` nonces that have not expired yet, it **refuses** the
/// new token ([`NonceStoreError::Full`], which [`Bootstrap`](super::Bootstrap) answers with
/// `503 Service Unavailable`) rather than forget an unexpired nonce: forgetting would let that
/// token be used a second time, while refusing only asks the user to retry a moment later. Keep
/// token lifetimes short and the capacity above the number of links opened within one lifetime.
#[derive(Debug)]
pub struct MemoryNonceStore {
    capacity: usize,
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    by_nonce: HashMap<Box<[u8]>, SystemTime>,
    by_expiry: BTreeSet<(SystemTime, Box<[u8]>)>,
}

impl MemoryNonceStore {
    /// The capacity of [`MemoryNonceStore::default`].
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// A store holding at most `capacity` unexpired nonces (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Entries::default()),
        }
    }

    /// How many nonces are held (expired ones included until the next sweep).
    pub fn len(&self) -> usize {
        self.lock().by_nonce.len()
    }

    /// Whether no nonce is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // The map stays consistent even if a holder panicked: every mutation is a single step.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record_at(
        &self,
        nonce: &[u8],
        expires_at: SystemTime,
        now: SystemTime,
    ) -> Result<bool, NonceStoreError> {
        let mut e = self.lock();
        while let Some(first) = e.by_expiry.first() {
            if first.0 > now {
                break;
            }
            let (_, n) = e.by_expiry.pop_first().expect("first exists");
            e.by_nonce.remove(&n);
        }
        if e.by_nonce.contains_key(nonce) {
            return Ok(false);
        }
        if e.by_nonce.len() >= self.capacity {
            return Err(NonceStoreError::Full);
        }
        if expires_at <= now {
            // Already expired: nothing to remember, and the token is refused anyway by its expiry.
            return Ok(true);
        }
        let key: Box<[u8]> = nonce.into();
        e.by_expiry.insert((expires_at, key.clone()));
        e.by_nonce.insert(key, expires_at);
        Ok(true)
    }
}

impl Default for MemoryNonceStore {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl NonceStore for MemoryNonceStore {
    fn record<'a>(&'a self, nonce: &'a [u8], expires_at: SystemTime) -> RecordFuture<'a> {
        let result = self.record_at(nonce, expires_at, SystemTime::now());
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn second_record_is_a_replay() {
        let store = MemoryNonceStore::new(10);
        let now = SystemTime::now();
        assert!(store.record_at(b"n1", now + S, now).unwrap());
        assert!(!store.record_at(b"n1", now + S, now).unwrap());
        assert!(store.record_at(b"n2", now + S, now).unwrap());
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn expired_nonces_are_forgotten() {
        let store = MemoryNonceStore::new(10);
        let now = SystemTime::now();
        assert!(store.record_at(b"n", now + S, now).unwrap());
        assert!(!store.record_at(b"n", now + 2 * S, now + S / 2).unwrap());
        // Past its expiry the nonce is dropped (a token that old fails its own expiry check).
        assert!(store.record_at(b"n", now + 3 * S, now + S).unwrap());
    }

    #[test]
    fn full_store_evicts_expired_first_then_refuses() {
        let store = MemoryNonceStore::new(2);
        let now = SystemTime::now();
        assert!(store.record_at(b"a", now + S, now).unwrap());
        assert!(store.record_at(b"b", now + 10 * S, now).unwrap());
        assert!(matches!(
            store.record_at(b"c", now + 10 * S, now),
            Err(NonceStoreError::Full)
        ));
        // Replays are still recognised when full.
        assert!(!store.record_at(b"a", now + S, now).unwrap());
        // Once "a" expires, there is room again, and "b" is still remembered.
        assert!(store.record_at(b"c", now + 10 * S, now + 2 * S).unwrap());
        assert!(!store.record_at(b"b", now + 10 * S, now + 2 * S).unwrap());
        assert_eq!(store.len(), 2);
    }

    #[tokio::test]
    async fn concurrent_records_admit_exactly_one() {
        let store = Arc::new(MemoryNonceStore::default());
        let exp = SystemTime::now() + 60 * S;
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.record(b"same", exp).await.unwrap()
            }));
        }
        let mut fresh = 0;
        for t in tasks {
            fresh += usize::from(t.await.unwrap());
        }
        assert_eq!(fresh, 1);
    }
}
