//! Quotas in Redis: one Lua script per request checks and charges every limit atomically, so any
//! number of gateway processes share one budget per caller.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use super::quota::{Exceeded, LimitError, Permit, Quota, QuotaExceeded};

/// How long a stream's slot is held in Redis without a refresh (a process that dies frees its
/// slots within this time).
const LEASE: Duration = Duration::from_secs(60);
/// How often an open stream refreshes its slot.
const REFRESH: Duration = Duration::from_secs(20);

/// GCRA for requests and bytes, a sorted set of leases for streams; nothing is written unless
/// every limit admits the request. Times are Redis's own clock (`TIME`, microseconds), so the
/// replicas' clocks do not matter.
///
/// KEYS: requests TAT, bytes TAT, streams set. ARGV: request interval and window (µs, 0 = off),
/// bytes interval and window (µs, 0 = off), bytes charged, max streams (0 = off), lease (µs),
/// stream member. Returns `{0, 0}` when admitted, or `{1|2|3, wait µs}`.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function tat_after(key, interval, window, n)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new = tat + interval * n
  local wait = new - window - now
  if wait > 0 then return nil, wait end
  return new, 0
end
local req_i, req_w = tonumber(ARGV[1]), tonumber(ARGV[2])
local bytes_i, bytes_w, bytes_n = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local max_streams, lease = tonumber(ARGV[6]), tonumber(ARGV[7])
local req_new, bytes_new
if req_i > 0 then
  local new, wait = tat_after(KEYS[1], req_i, req_w, 1)
  if not new then return {1, math.ceil(wait)} end
  req_new = new
end
if bytes_i > 0 then
  local new, wait = tat_after(KEYS[2], bytes_i, bytes_w, bytes_n)
  if not new then return {2, math.ceil(wait)} end
  bytes_new = new
end
if max_streams > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= max_streams then return {3, 1000000} end
end
if req_new then
  redis.call('SET', KEYS[1], string.format('%.0f', req_new), 'PX', math.ceil(req_w / 1000) + 1000)
end
if bytes_new then
  redis.call('SET', KEYS[2], string.format('%.0f', bytes_new), 'PX', math.ceil(bytes_w / 1000) + 1000)
end
if max_streams > 0 then
  redis.call('ZADD', KEYS[3], string.format('%.0f', now + lease), ARGV[8])
  redis.call('PEXPIRE', KEYS[3], math.ceil(lease / 1000))
end
return {0, 0}
";

/// Extends an open stream's lease: `ZADD XX` with the new expiry, from Redis's clock.
const REFRESH_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[1], 'XX', string.format('%.0f', now + tonumber(ARGV[1])), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) / 1000))
return 0
";

/// The Redis side of a [`QuotaStore::redis`](super::QuotaStore::redis): one multiplexed
/// connection, reconnected on the next request after it is lost, and a key prefix (default
/// `sandbox-gateway:quota:`). While Redis cannot be reached, requests that a quota applies to are
/// answered `503`: the budget cannot be checked.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use sandbox_gateway::forward::{ApiForward, Callers, Quota, QuotaStore, RedisQuotaStore};
///
/// let store = RedisQuotaStore::connect("redis://127.0.0.1:6379/").await?;
/// let builder = ApiForward::builder()
///     .callers(Callers::anyone())
///     .quota(Quota::new().requests(100, Duration::from_secs(60)))
///     .quota_store(QuotaStore::redis(store));
/// # let _ = builder;
/// # Ok(()) }
/// ```
pub struct RedisQuotaStore {
    client: redis::Client,
    prefix: String,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl fmt::Debug for RedisQuotaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection info may hold a password: show only the key prefix.
        f.debug_struct("RedisQuotaStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisQuotaStore {
    /// Connects to the Redis server at `url` (`redis://[:password@]host:port/db`), once now so a
    /// bad address is reported at start-up.
    pub async fn connect(url: &str) -> Result<Self, redis::RedisError> {
        Self::from_client(redis::Client::open(url)?).await
    }

    /// Uses an existing client, connecting once now so a bad address is reported at start-up.
    pub async fn from_client(client: redis::Client) -> Result<Self, redis::RedisError> {
        let conn = client.get_multiplexed_async_connection().await?;
        Ok(RedisQuotaStore {
            client,
            prefix: "sandbox-gateway:quota:".to_owned(),
            conn: Mutex::new(Some(conn)),
        })
    }

    /// Sets the key prefix (to share one Redis database between deployments).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    async fn connection(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        let mut guard = self.conn.lock().await;
        if let Some(conn) = guard.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self.client.get_multiplexed_async_connection().await?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn forget_connection(&self) {
        *self.conn.lock().await = None;
    }
}

/// Microseconds, as the script counts.
fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub(crate) struct RedisLimiter {
    store: Arc<RedisQuotaStore>,
    quota: Quota,
}

impl RedisLimiter {
    pub(crate) fn new(store: Arc<RedisQuotaStore>, quota: Quota) -> Self {
        RedisLimiter { store, quota }
    }

    pub(crate) async fn acquire(&self, caller: &str, bytes: u64) -> Result<Permit, LimitError> {
        let (req_i, req_w) = match self.quota.requests {
            Some((n, w)) => (micros(w) / f64::from(n), micros(w)),
            None => (0.0, 0.0),
        };
        let (bytes_i, bytes_w) = match self.quota.bytes {
            Some((n, w)) => (micros(w) / n as f64, micros(w)),
            None => (0.0, 0.0),
        };
        let max_streams = self.quota.streams.unwrap_or(0);
        let mut member = [0u8; 16];
        getrandom::fill(&mut member).map_err(|e| LimitError::Unavailable(e.to_string()))?;
        let member: String = member.iter().map(|b| format!("{b:02x}")).collect();
        let base = format!("{}{caller}", self.store.prefix);
        let streams_key = format!("{base}:streams");
        let mut conn = self.store.connection().await.map_err(unavailable)?;
        let answer: Result<(u8, u64), _> = redis::cmd("EVAL")
            .arg(SCRIPT)
            .arg(3)
            .arg(format!("{base}:requests"))
            .arg(format!("{base}:bytes"))
            .arg(&streams_key)
            .arg(req_i)
            .arg(req_w)
            .arg(bytes_i)
            .arg(bytes_w)
            .arg(bytes.max(1))
            .arg(max_streams)
            .arg(micros(LEASE))
            .arg(&member)
            .query_async(&mut conn)
            .await;
        let (code, wait_us) = match answer {
            Ok(a) => a,
            Err(e) => {
                self.store.forget_connection().await;
                return Err(unavailable(e));
            }
        };
        let what = match code {
            0 if max_streams == 0 => return Ok(Permit::none()),
            0 => {
                return Ok(Permit::redis(Lease::start(
                    self.store.clone(),
                    streams_key,
                    member,
                )))
            }
            1 => Exceeded::Requests,
            2 => Exceeded::Bytes,
            _ => Exceeded::Streams,
        };
        Err(LimitError::Exceeded(QuotaExceeded {
            what,
            retry_after: Duration::from_micros(wait_us),
        }))
    }
}

fn unavailable(e: redis::RedisError) -> LimitError {
    tracing::warn!(error = %e, "quota store unreachable");
    LimitError::Unavailable("the quota store cannot be reached".to_owned())
}

/// An open stream's slot in Redis: refreshed while it lives, removed when dropped.
pub(crate) struct Lease {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Lease {
    fn start(store: Arc<RedisQuotaStore>, key: String, member: String) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(REFRESH) => {
                        if let Ok(mut conn) = store.connection().await {
                            let _: Result<i64, _> = redis::cmd("EVAL")
                                .arg(REFRESH_SCRIPT)
                                .arg(1)
                                .arg(&key)
                                .arg(micros(LEASE))
                                .arg(&member)
                                .query_async(&mut conn)
                                .await;
                        }
                    }
                }
            }
            if let Ok(mut conn) = store.connection().await {
                let _: Result<i64, _> = redis::cmd("ZREM")
                    .arg(&key)
                    .arg(&member)
                    .query_async(&mut conn)
                    .await;
            }
        });
        Lease { stop: Some(stop) }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
