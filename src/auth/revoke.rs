//! Ending sessions before they expire: revocation by session, by subject and by sandbox.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::token::Claims;

/// A boxed future returned by [`RevocationStore::revoke`].
pub type RevokeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), RevocationError>> + Send + 'a>>;

/// What to revoke.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Revocation {
    /// One session: the nonce of its cookie token ([`Claims::nonce`]). What logout revokes.
    Session(Vec<u8>),
    /// Every session of this subject (the host's user id, [`Claims::subject`]) issued up to now:
    /// the user logged out everywhere or was removed from the workspace.
    Subject(String),
    /// Every session of this sandbox issued up to now: the sandbox was deleted or handed over.
    Sandbox(String),
}

impl Revocation {
    /// The session of these claims.
    pub fn session(claims: &Claims) -> Self {
        Revocation::Session(claims.nonce().to_vec())
    }
}

/// The revocation store could not record a revocation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// The store holds its maximum of live revocations.
    #[error("revocation store is full")]
    Full,
    /// The backing store failed (connection lost, command refused...).
    #[error("revocation store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Remembers revoked sessions, subjects and sandboxes for as long as a session can live.
///
/// [`TunnelAuth`](super::TunnelAuth) (with [`TunnelAuthLayer::revocations`](super::TunnelAuthLayer::revocations))
/// asks [`is_revoked`](Self::is_revoked) on every request and upgrade, and ends open tunnels
/// whose session a [`changes`](Self::changes) notification finds revoked. The check is
/// synchronous on purpose: it reads this replica's view, which a shared store keeps within a
/// stated bound of the others.
///
/// A subject or sandbox revocation ends the sessions **issued up to** its time; sessions issued
/// afterwards are valid (stop issuing links for a removed user on the host's side). A session
/// revocation ends that one session.
pub trait RevocationStore: Send + Sync + 'static {
    /// Records `what`, revoked now.
    fn revoke<'a>(&'a self, what: Revocation) -> RevokeFuture<'a>;

    /// Whether a session with these claims, issued at `issued_at`, is revoked in this replica's
    /// current view.
    fn is_revoked(&self, claims: &Claims, issued_at: SystemTime) -> bool;

    /// A counter bumped whenever this replica learns of new revocations.
    fn changes(&self) -> watch::Receiver<u64>;
}

impl<T: RevocationStore + ?Sized> RevocationStore for Arc<T> {
    fn revoke<'a>(&'a self, what: Revocation) -> RevokeFuture<'a> {
        (**self).revoke(what)
    }
    fn is_revoked(&self, claims: &Claims, issued_at: SystemTime) -> bool {
        (**self).is_revoked(claims, issued_at)
    }
    fn changes(&self) -> watch::Receiver<u64> {
        (**self).changes()
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The revocations known to one replica, each with the time it was made (ms since the epoch).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Revoked {
    sessions: HashMap<Vec<u8>, u64>,
    subjects: HashMap<String, u64>,
    sandboxes: HashMap<String, u64>,
}

impl Revoked {
    pub(crate) fn len(&self) -> usize {
        self.sessions.len() + self.subjects.len() + self.sandboxes.len()
    }

    /// Records `what` at `at_ms`, keeping the later time of a repeated revocation.
    pub(crate) fn insert(&mut self, what: Revocation, at_ms: u64) {
        let slot = match what {
            Revocation::Session(n) => self.sessions.entry(n).or_insert(0),
            Revocation::Subject(s) => self.subjects.entry(s).or_insert(0),
            Revocation::Sandbox(s) => self.sandboxes.entry(s).or_insert(0),
        };
        *slot = (*slot).max(at_ms);
    }

    /// Adds `other`'s revocations made at or after `cutoff_ms` (later times win).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn merge_from(&mut self, other: &Revoked, cutoff_ms: u64) {
        for (n, &t) in &other.sessions {
            if t >= cutoff_ms {
                self.insert(Revocation::Session(n.clone()), t);
            }
        }
        for (s, &t) in &other.subjects {
            if t >= cutoff_ms {
                self.insert(Revocation::Subject(s.clone()), t);
            }
        }
        for (s, &t) in &other.sandboxes {
            if t >= cutoff_ms {
                self.insert(Revocation::Sandbox(s.clone()), t);
            }
        }
    }

    /// Drops revocations made before `cutoff_ms`: every session they could end has expired.
    pub(crate) fn expire(&mut self, cutoff_ms: u64) {
        self.sessions.retain(|_, t| *t >= cutoff_ms);
        self.subjects.retain(|_, t| *t >= cutoff_ms);
        self.sandboxes.retain(|_, t| *t >= cutoff_ms);
    }

    pub(crate) fn matches(&self, claims: &Claims, issued_at: SystemTime) -> bool {
        let issued = unix_ms(issued_at);
        let after = |t: Option<&u64>| t.is_some_and(|&t| issued <= t);
        self.sessions.contains_key(claims.nonce())
            || after(claims.subject().and_then(|s| self.subjects.get(s)))
            || after(self.sandboxes.get(claims.sandbox_id()))
    }
}

/// An in-process [`RevocationStore`]: right for a single gateway process.
///
/// Each revocation is kept for `retain` (give the longest session lifetime, the cookie's
/// [`max_age`](super::CookieConfigBuilder::max_age)), then forgotten. At most `capacity` live
/// revocations are held; beyond that [`revoke`](RevocationStore::revoke) fails with
/// [`RevocationError::Full`] rather than forget one still in force.
///
/// ```
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use sandbox_gateway::auth::{MemoryRevocationStore, Revocation, RevocationStore};
///
/// let store = MemoryRevocationStore::new(Duration::from_secs(12 * 3600));
/// store.revoke(Revocation::Subject("user-42".into())).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MemoryRevocationStore {
    retain: Duration,
    capacity: usize,
    inner: Mutex<Revoked>,
    changes: watch::Sender<u64>,
}

impl MemoryRevocationStore {
    /// The capacity of a store made by [`new`](Self::new).
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// A store keeping each revocation for `retain`.
    pub fn new(retain: Duration) -> Self {
        Self {
            retain,
            capacity: Self::DEFAULT_CAPACITY,
            inner: Mutex::new(Revoked::default()),
            changes: watch::channel(0).0,
        }
    }

    /// Holds at most `capacity` live revocations (at least one).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Revoked> {
        // Every mutation is a single step: the maps stay consistent after a panic elsewhere.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn revoke_at(
        &self,
        what: Revocation,
        now: SystemTime,
    ) -> Result<(), RevocationError> {
        {
            let mut r = self.lock();
            let retain_ms = u64::try_from(self.retain.as_millis()).unwrap_or(u64::MAX);
            r.expire(unix_ms(now).saturating_sub(retain_ms));
            if r.len() >= self.capacity {
                return Err(RevocationError::Full);
            }
            r.insert(what, unix_ms(now));
        }
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }
}

impl RevocationStore for MemoryRevocationStore {
    fn revoke<'a>(&'a self, what: Revocation) -> RevokeFuture<'a> {
        let r = self.revoke_at(what, SystemTime::now());
        Box::pin(std::future::ready(r))
    }

    fn is_revoked(&self, claims: &Claims, issued_at: SystemTime) -> bool {
        self.lock().matches(claims, issued_at)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Audience, TokenSigner};

    fn claims(id: &str, subject: &str) -> Claims {
        let s = TokenSigner::new([3u8; 32]).unwrap();
        let t = s
            .sign_for(id, Some(subject), Audience::Cookie, Duration::from_secs(60))
            .unwrap();
        s.verify(&t, id, Audience::Cookie).unwrap()
    }

    #[tokio::test]
    async fn session_revocation_ends_that_session_only() {
        let store = MemoryRevocationStore::new(Duration::from_secs(60));
        let (a, b) = (claims("demo", "u1"), claims("demo", "u1"));
        let now = SystemTime::now();
        store.revoke(Revocation::session(&a)).await.unwrap();
        assert!(store.is_revoked(&a, now));
        assert!(!store.is_revoked(&b, now));
    }

    #[test]
    fn subject_and_sandbox_revocations_end_sessions_issued_up_to_then() {
        let store = MemoryRevocationStore::new(Duration::from_secs(60));
        let t0 = SystemTime::now();
        let at = t0 + Duration::from_secs(10);
        store
            .revoke_at(Revocation::Subject("u1".into()), at)
            .unwrap();
        store
            .revoke_at(Revocation::Sandbox("box".into()), at)
            .unwrap();
        let (u1, u2, boxed) = (
            claims("demo", "u1"),
            claims("demo", "u2"),
            claims("box", "u2"),
        );
        assert!(store.is_revoked(&u1, t0));
        assert!(store.is_revoked(&u1, at), "issued in the same millisecond");
        assert!(!store.is_revoked(&u1, at + Duration::from_millis(1)));
        assert!(!store.is_revoked(&u2, t0));
        assert!(store.is_revoked(&boxed, t0));
        assert!(!store.is_revoked(&boxed, at + Duration::from_secs(1)));
    }

    #[test]
    fn revocations_are_forgotten_after_retain_and_capacity_refuses() {
        let store = MemoryRevocationStore::new(Duration::from_secs(60)).capacity(1);
        let t0 = SystemTime::now();
        let u1 = claims("demo", "u1");
        store
            .revoke_at(Revocation::Subject("u1".into()), t0)
            .unwrap();
        assert!(matches!(
            store.revoke_at(Revocation::Subject("u2".into()), t0),
            Err(RevocationError::Full)
        ));
        // Past the retention, the old one is dropped and the new one fits.
        let later = t0 + Duration::from_secs(61);
        store
            .revoke_at(Revocation::Subject("u2".into()), later)
            .unwrap();
        assert!(!store.is_revoked(&u1, t0));
    }

    #[test]
    fn changes_are_announced() {
        let store = MemoryRevocationStore::new(Duration::from_secs(60));
        let mut rx = store.changes();
        assert!(!rx.has_changed().unwrap());
        store
            .revoke_at(Revocation::Sandbox("x".into()), SystemTime::now())
            .unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 1);
    }
}
