//! A [`RevocationStore`] shared by every gateway replica, in Redis.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use tokio::sync::watch;

use super::redis_store::RedisConn;
use super::revoke::{unix_ms, Revocation, RevocationError, RevocationStore, RevokeFuture, Revoked};
use super::token::Claims;

/// A [`RevocationStore`] in Redis: a revocation made on one replica holds on every replica
/// within the **refresh interval** (1 second by default) plus one Redis round trip.
///
/// Revocations live in one sorted set (key `sandbox-gateway:revoked` by default), scored by the
/// time they were made: [`revoke`](RevocationStore::revoke) adds to it (`ZADD`) and takes effect
/// on this replica at once; every replica reads the set back each refresh interval, applies what
/// is new, and ends the open tunnels it finds revoked. Entries older than `retain` (give the
/// longest session lifetime, the cookie's `Max-Age`) are dropped from the set, and the set
/// expires as a whole `retain` after the last revocation.
///
/// [`is_revoked`](RevocationStore::is_revoked) reads this replica's copy and never waits on
/// Redis. While Redis is unreachable the copy keeps what it last read (logged at `warn`), and
/// `revoke` fails with [`RevocationError::Unavailable`]. Replicas must share a clock within the
/// bound (the times are wall-clock milliseconds, as token expiries are). Needs Redis 6.2 or later
/// (`ZADD … GT`, `ZRANGE … BYSCORE`).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use sandbox_gateway::auth::RedisRevocationStore;
///
/// let store = RedisRevocationStore::connect("redis://127.0.0.1:6379/", Duration::from_secs(12 * 3600))
///     .await?
///     .refresh_every(Duration::from_millis(500));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisRevocationStore {
    shared: Arc<Shared>,
}

struct Shared {
    conn: RedisConn,
    key: Mutex<String>,
    retain: Duration,
    refresh: Mutex<Duration>,
    /// Wakes the refresh loop when the interval changes.
    retuned: tokio::sync::Notify,
    view: Mutex<Revoked>,
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for RedisRevocationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection info may hold a password: show only the key and timings.
        f.debug_struct("RedisRevocationStore")
            .field("key", &*lock(&self.shared.key))
            .field("retain", &self.shared.retain)
            .field("refresh", &*lock(&self.shared.refresh))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unavailable(e: redis::RedisError) -> RevocationError {
    RevocationError::Unavailable(Box::new(e))
}

fn member(what: &Revocation) -> String {
    match what {
        Revocation::Session(n) => format!("s:{}", URL_SAFE_NO_PAD.encode(n)),
        Revocation::Subject(s) => format!("u:{s}"),
        Revocation::Sandbox(s) => format!("b:{s}"),
    }
}

fn parse_member(m: &str) -> Option<Revocation> {
    let (kind, rest) = m.split_once(':')?;
    Some(match kind {
        "s" => Revocation::Session(URL_SAFE_NO_PAD.decode(rest).ok()?),
        "u" => Revocation::Subject(rest.to_owned()),
        "b" => Revocation::Sandbox(rest.to_owned()),
        _ => return None,
    })
}

impl RedisRevocationStore {
    /// The refresh interval of a new store.
    pub const DEFAULT_REFRESH: Duration = Duration::from_secs(1);

    /// Connects to the Redis server at `url`, keeping revocations for `retain`, reads the
    /// revocations already there, and starts refreshing in the background (on the current Tokio
    /// runtime) until the last clone of the store is dropped.
    pub async fn connect(url: &str, retain: Duration) -> Result<Self, RevocationError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        Self::from_client(client, retain).await
    }

    /// As [`connect`](Self::connect), with an existing client.
    pub async fn from_client(
        client: redis::Client,
        retain: Duration,
    ) -> Result<Self, RevocationError> {
        let store = Self {
            shared: Arc::new(Shared {
                conn: RedisConn::open(client).await.map_err(unavailable)?,
                key: Mutex::new("sandbox-gateway:revoked".to_owned()),
                retain,
                refresh: Mutex::new(Self::DEFAULT_REFRESH),
                retuned: tokio::sync::Notify::new(),
                view: Mutex::new(Revoked::default()),
                changes: watch::channel(0).0,
            }),
        };
        store.shared.refresh_view().await.map_err(unavailable)?;
        tokio::spawn(refresh_loop(Arc::downgrade(&store.shared)));
        Ok(store)
    }

    /// How often the revocations of other replicas are read (default 1 second, at least 10 ms):
    /// the bound within which a revocation holds everywhere.
    pub fn refresh_every(self, every: Duration) -> Self {
        *lock(&self.shared.refresh) = every.max(Duration::from_millis(10));
        self.shared.retuned.notify_one();
        self
    }

    /// Sets the key of the sorted set (to share one Redis database between deployments).
    pub fn key(self, key: impl Into<String>) -> Self {
        *lock(&self.shared.key) = key.into();
        self
    }

    async fn revoke_inner(&self, what: Revocation) -> Result<(), RevocationError> {
        let s = &self.shared;
        let now = unix_ms(SystemTime::now());
        let key = lock(&s.key).clone();
        let retain_ms = u64::try_from(s.retain.as_millis()).unwrap_or(u64::MAX);
        let mut conn = s.conn.get().await.map_err(unavailable)?;
        let answer: Result<(), _> = redis::pipe()
            .atomic()
            .cmd("ZADD")
            .arg(&key)
            .arg("GT")
            .arg(now)
            .arg(member(&what))
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(retain_ms.max(1))
            .ignore()
            .query_async(&mut conn)
            .await;
        if let Err(e) = answer {
            s.conn.failed(&e).await;
            return Err(unavailable(e));
        }
        lock(&s.view).insert(what, now);
        s.changes.send_modify(|n| *n += 1);
        Ok(())
    }
}

impl Shared {
    /// Reads the set back and replaces this replica's view when it changed.
    async fn refresh_view(&self) -> Result<(), redis::RedisError> {
        let now = unix_ms(SystemTime::now());
        let retain_ms = u64::try_from(self.retain.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now.saturating_sub(retain_ms);
        let key = lock(&self.key).clone();
        let mut conn = self.conn.get().await?;
        let answer: Result<((), Vec<(String, u64)>), _> = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(format!("({cutoff}"))
            .cmd("ZRANGE")
            .arg(&key)
            .arg(cutoff)
            .arg("+inf")
            .arg("BYSCORE")
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await;
        let (_, entries) = match answer {
            Ok(a) => a,
            Err(e) => {
                self.conn.failed(&e).await;
                return Err(e);
            }
        };
        let mut fresh = Revoked::default();
        for (m, at) in entries {
            if let Some(what) = parse_member(&m) {
                fresh.insert(what, at);
            }
        }
        let changed = {
            let mut view = lock(&self.view);
            // Keep what this replica revoked itself but Redis has not answered with yet.
            let mut merged = fresh;
            merged.merge_from(&view, cutoff);
            let changed = *view != merged;
            *view = merged;
            changed
        };
        if changed {
            self.changes.send_modify(|n| *n += 1);
        }
        Ok(())
    }
}

async fn refresh_loop(shared: Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let every = *lock(&s.refresh);
        // Holding `s` for one interval only delays noticing the store was dropped by that much.
        let retuned = s.retuned.notified();
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            // A new interval: refresh now, then keep the new pace.
            _ = retuned => {}
        }
        drop(s);
        let Some(s) = shared.upgrade() else { return };
        if let Err(e) = s.refresh_view().await {
            tracing::warn!(error = %e, "revocations not refreshed from Redis; keeping the last view");
        }
    }
}

impl RevocationStore for RedisRevocationStore {
    fn revoke<'a>(&'a self, what: Revocation) -> RevokeFuture<'a> {
        Box::pin(self.revoke_inner(what))
    }

    fn is_revoked(&self, claims: &Claims, issued_at: SystemTime) -> bool {
        lock(&self.shared.view).matches(claims, issued_at)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip() {
        for what in [
            Revocation::Session(vec![0, 1, 2, 255]),
            Revocation::Subject("user:42".into()),
            Revocation::Sandbox("demo".into()),
        ] {
            assert_eq!(parse_member(&member(&what)), Some(what));
        }
        assert_eq!(parse_member("x:1"), None);
        assert_eq!(parse_member("s:!!"), None);
    }
}
