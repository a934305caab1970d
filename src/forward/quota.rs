//! Quotas per caller: requests and request bytes per window (GCRA), and concurrent streams; in
//! memory for one replica, in Redis for many.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::DefaultKeyedRateLimiter;

use super::BuildError;

/// What each caller may use of the forwarder: requests per window, request bytes per window, and
/// streams open at once. A caller over any of them is answered `429 Too Many Requests` with
/// `Retry-After` (whole seconds, at least 1) and the upstream is not contacted.
///
/// Callers are told apart by their id: an API token's subject, or the id a check of the host's
/// own returns ([`Caller`](super::Caller)). Requests to
/// [`bring_your_own_key`](super::Upstream::bring_your_own_key) upstreams spend no server key and
/// are not counted.
///
/// The windows are GCRA (generic cell rate algorithm) limits: `requests(60, 1 min)` lets 60
/// requests through at once, then one more each second. A request's bytes are its
/// `Content-Length`; a body sent without one is charged the upstream's body limit (every SDK
/// sends a length). A stream counts from the request until its response body ends or is dropped.
///
/// A refused request spends nothing in Redis (the script charges all limits or none). In memory,
/// streams are checked first and given back; a request refused for its bytes has still spent its
/// request (`governor` takes no cell back).
///
/// ```
/// use std::time::Duration;
/// use sandbox_gateway::forward::Quota;
///
/// let quota = Quota::new()
///     .requests(60, Duration::from_secs(60))
///     .request_bytes(100 * 1024 * 1024, Duration::from_secs(60))
///     .concurrent_streams(4);
/// # let _ = quota;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Quota {
    pub(crate) requests: Option<(u32, Duration)>,
    pub(crate) bytes: Option<(u64, Duration)>,
    pub(crate) streams: Option<u32>,
}

impl Quota {
    /// No limit yet; add them with the other methods.
    pub fn new() -> Self {
        Quota::default()
    }

    /// At most `n` requests per `window` per caller.
    pub fn requests(mut self, n: u32, window: Duration) -> Self {
        self.requests = Some((n, window));
        self
    }

    /// At most `bytes` of request bodies per `window` per caller. Must hold at least one body of
    /// the largest body limit (checked when the forwarder is built).
    pub fn request_bytes(mut self, bytes: u64, window: Duration) -> Self {
        self.bytes = Some((bytes, window));
        self
    }

    /// At most `n` requests (streams included, until their response ends) open at once per
    /// caller.
    pub fn concurrent_streams(mut self, n: u32) -> Self {
        self.streams = Some(n);
        self
    }

    /// Checks the numbers against the largest body limit of the forwarder.
    pub(crate) fn check(&self, largest_body: u64) -> Result<(), BuildError> {
        if let Some((n, window)) = self.requests {
            if n == 0 || window.is_zero() {
                return Err(BuildError(
                    "a request quota needs at least one request in a window above zero".into(),
                ));
            }
        }
        if let Some((bytes, window)) = self.bytes {
            if window.is_zero() {
                return Err(BuildError("a byte quota needs a window above zero".into()));
            }
            if bytes < largest_body {
                return Err(BuildError(format!(
                    "a byte quota of {bytes} bytes per window cannot hold one body of the body limit ({largest_body} bytes)"
                )));
            }
            if bytes > u64::from(u32::MAX) {
                return Err(BuildError(format!(
                    "a byte quota may be at most {} bytes per window",
                    u32::MAX
                )));
            }
        }
        if self.streams == Some(0) {
            return Err(BuildError(
                "a stream quota needs at least one stream".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.requests.is_none() && self.bytes.is_none() && self.streams.is_none()
    }
}

/// Where quota counts live: [`QuotaStore::memory`] (the default) for one gateway process, or
/// Redis (feature `redis`) so every replica draws on the same budget.
#[derive(Clone)]
pub struct QuotaStore(pub(crate) StoreKind);

#[derive(Clone)]
pub(crate) enum StoreKind {
    Memory,
    #[cfg(feature = "redis")]
    Redis(Arc<super::quota_redis::RedisQuotaStore>),
}

impl fmt::Debug for QuotaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            StoreKind::Memory => f.write_str("QuotaStore::memory"),
            #[cfg(feature = "redis")]
            StoreKind::Redis(r) => f.debug_tuple("QuotaStore::redis").field(r).finish(),
        }
    }
}

impl QuotaStore {
    /// Counts in this process's memory (GCRA through the `governor` crate): right for one
    /// replica; with several, each would grant the whole budget.
    pub fn memory() -> Self {
        QuotaStore(StoreKind::Memory)
    }

    /// Counts in Redis, applied atomically by one Lua script per request, so any number of
    /// gateway processes share one budget per caller.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(store: super::quota_redis::RedisQuotaStore) -> Self {
        QuotaStore(StoreKind::Redis(Arc::new(store)))
    }
}

/// Which limit a caller went over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exceeded {
    Requests,
    Bytes,
    Streams,
}

/// A caller is over its quota: what, and when to try again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaExceeded {
    pub(crate) what: Exceeded,
    pub(crate) retry_after: Duration,
}

impl QuotaExceeded {
    /// How long the caller should wait (what `Retry-After` says, rounded up to whole seconds).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// `Retry-After` in whole seconds, at least 1.
    pub(crate) fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

impl fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.what {
            Exceeded::Requests => "too many requests",
            Exceeded::Bytes => "too many request bytes",
            Exceeded::Streams => "too many streams open at once",
        };
        write!(
            f,
            "quota exceeded: {what}; retry after {} s",
            self.retry_after_secs()
        )
    }
}

impl std::error::Error for QuotaExceeded {}

/// The quota of a forwarder, with its store.
pub(crate) struct Limiter {
    inner: LimiterKind,
}

enum LimiterKind {
    Memory(Memory),
    #[cfg(feature = "redis")]
    Redis(super::quota_redis::RedisLimiter),
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.inner {
            LimiterKind::Memory(_) => "Limiter(memory)",
            #[cfg(feature = "redis")]
            LimiterKind::Redis(_) => "Limiter(redis)",
        })
    }
}

impl Limiter {
    pub(crate) fn new(quota: Quota, store: QuotaStore) -> Self {
        let inner = match store.0 {
            StoreKind::Memory => LimiterKind::Memory(Memory::new(&quota)),
            #[cfg(feature = "redis")]
            StoreKind::Redis(r) => {
                LimiterKind::Redis(super::quota_redis::RedisLimiter::new(r, quota))
            }
        };
        Limiter { inner }
    }

    /// Charges one request of `bytes` to `caller` and opens a stream; the permit closes it.
    pub(crate) async fn acquire(&self, caller: &str, bytes: u64) -> Result<Permit, LimitError> {
        match &self.inner {
            LimiterKind::Memory(m) => m.acquire(caller, bytes).map_err(LimitError::Exceeded),
            #[cfg(feature = "redis")]
            LimiterKind::Redis(r) => r.acquire(caller, bytes).await,
        }
    }
}

/// Why a request was not admitted by the quota.
#[derive(Debug)]
pub(crate) enum LimitError {
    Exceeded(QuotaExceeded),
    /// The shared store could not be asked (Redis down): answered 503.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Unavailable(String),
}

/// An open stream of a caller; dropping it closes the stream.
pub(crate) struct Permit(PermitKind);

enum PermitKind {
    None,
    Memory {
        open: Arc<Mutex<HashMap<String, u32>>>,
        caller: String,
    },
    /// Held for its `Drop`, which frees the slot in Redis.
    #[cfg(feature = "redis")]
    Redis {
        _lease: super::quota_redis::Lease,
    },
}

impl Permit {
    pub(crate) fn none() -> Self {
        Permit(PermitKind::None)
    }

    #[cfg(feature = "redis")]
    pub(crate) fn redis(lease: super::quota_redis::Lease) -> Self {
        Permit(PermitKind::Redis { _lease: lease })
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let PermitKind::Memory { open, caller } = &self.0 {
            let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = open.get_mut(caller) {
                *n -= 1;
                if *n == 0 {
                    open.remove(caller);
                }
            }
        }
    }
}

/// How often the keyed GCRA maps are swept of callers whose budget is whole again.
const SWEEP_EVERY: u64 = 4096;

struct Memory {
    requests: Option<DefaultKeyedRateLimiter<String>>,
    bytes: Option<DefaultKeyedRateLimiter<String>>,
    streams: Option<u32>,
    open: Arc<Mutex<HashMap<String, u32>>>,
    calls: AtomicU64,
}

/// A GCRA limiter letting `n` cells through at once and one more every `window / n`.
fn gcra(n: u32, window: Duration) -> Option<DefaultKeyedRateLimiter<String>> {
    let burst = NonZeroU32::new(n)?;
    let period = (window / n).max(Duration::from_nanos(1));
    let quota = governor::Quota::with_period(period)?.allow_burst(burst);
    Some(governor::RateLimiter::keyed(quota))
}

impl Memory {
    fn new(quota: &Quota) -> Self {
        Memory {
            requests: quota.requests.and_then(|(n, w)| gcra(n, w)),
            // `Quota::check` bounds the bytes to u32.
            bytes: quota
                .bytes
                .and_then(|(n, w)| gcra(u32::try_from(n).unwrap_or(u32::MAX), w)),
            streams: quota.streams,
            open: Arc::default(),
            calls: AtomicU64::new(0),
        }
    }

    /// Streams first (they can be given back), then requests, then bytes. A request refused for
    /// its bytes has spent its request cell: `governor` takes none back.
    fn acquire(&self, caller: &str, bytes: u64) -> Result<Permit, QuotaExceeded> {
        if self.calls.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            for limiter in self.requests.iter().chain(&self.bytes) {
                limiter.retain_recent();
            }
        }
        let permit = match self.streams {
            Some(max) => {
                let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
                let n = open.entry(caller.to_owned()).or_insert(0);
                if *n >= max {
                    return Err(QuotaExceeded {
                        what: Exceeded::Streams,
                        retry_after: Duration::from_secs(1),
                    });
                }
                *n += 1;
                Permit(PermitKind::Memory {
                    open: self.open.clone(),
                    caller: caller.to_owned(),
                })
            }
            None => Permit::none(),
        };
        let key = caller.to_owned();
        if let Some(limiter) = &self.requests {
            if let Err(not_until) = limiter.check_key(&key) {
                return Err(QuotaExceeded {
                    what: Exceeded::Requests,
                    retry_after: not_until.wait_time_from(limiter.clock().now()),
                });
            }
        }
        if let Some(limiter) = &self.bytes {
            let cells = NonZeroU32::new(u32::try_from(bytes.max(1)).unwrap_or(u32::MAX))
                .unwrap_or(NonZeroU32::MIN);
            match limiter.check_key_n(&key, cells) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => {
                    return Err(QuotaExceeded {
                        what: Exceeded::Bytes,
                        retry_after: not_until.wait_time_from(limiter.clock().now()),
                    })
                }
                // More than the whole budget: `Quota::check` keeps the budget above every body
                // limit, so only a body over its limit gets here, and that is refused later.
                Err(_) => {
                    return Err(QuotaExceeded {
                        what: Exceeded::Bytes,
                        retry_after: Duration::from_secs(1),
                    })
                }
            }
        }
        Ok(permit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_requests_window_and_streams() {
        let m = Memory::new(
            &Quota::new()
                .requests(3, Duration::from_secs(60))
                .concurrent_streams(2),
        );
        let a = m.acquire("a", 10).unwrap();
        let b = m.acquire("a", 10).unwrap();
        let e = m.acquire("a", 10).unwrap_err();
        assert_eq!(e.what, Exceeded::Streams);
        // Another caller has its own budget.
        drop(m.acquire("b", 10).unwrap());
        drop(a);
        drop(b);
        let c = m.acquire("a", 10).unwrap();
        drop(c);
        let e = m.acquire("a", 10).unwrap_err();
        assert_eq!(e.what, Exceeded::Requests);
        // One more request every 20 s.
        assert!(
            e.retry_after() > Duration::from_secs(19) && e.retry_after() <= Duration::from_secs(20)
        );
        assert_eq!(e.retry_after_secs(), 20);
        assert!(
            m.open.lock().unwrap().is_empty(),
            "closed streams are forgotten"
        );
    }

    #[test]
    fn memory_bytes_window() {
        let m = Memory::new(&Quota::new().request_bytes(1000, Duration::from_secs(10)));
        drop(m.acquire("a", 600).unwrap());
        let e = m.acquire("a", 600).unwrap_err();
        assert_eq!(e.what, Exceeded::Bytes);
        assert_eq!(e.retry_after_secs(), 2);
        drop(m.acquire("a", 400).unwrap());
    }

    #[test]
    fn bad_quotas_are_refused() {
        assert!(Quota::new()
            .requests(0, Duration::from_secs(1))
            .check(1)
            .is_err());
        assert!(Quota::new().requests(1, Duration::ZERO).check(1).is_err());
        assert!(Quota::new().concurrent_streams(0).check(1).is_err());
        assert!(Quota::new()
            .request_bytes(10, Duration::from_secs(1))
            .check(11)
            .is_err());
        assert!(Quota::new()
            .request_bytes(u64::from(u32::MAX) + 1, Duration::from_secs(1))
            .check(1)
            .is_err());
        assert!(Quota::new()
            .requests(1, Duration::from_secs(1))
            .request_bytes(10, Duration::from_secs(1))
            .concurrent_streams(1)
            .check(10)
            .is_ok());
    }
}
