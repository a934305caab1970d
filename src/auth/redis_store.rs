//! A [`NonceStore`] shared by every gateway replica, in Redis.

use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use super::nonce::{NonceStore, NonceStoreError, RecordFuture};

/// A [`NonceStore`] in Redis, so a token spent on one gateway replica is spent on all.
///
/// Each nonce is recorded with one atomic `SET key 1 NX PX <ms until expiry>`: Redis answers `OK`
/// to exactly one of any number of concurrent callers, and drops the key by itself when the
/// token expires. Keys are `<prefix><nonce in base64url>`, the prefix defaulting to
/// `sandbox-gateway:nonce:`.
///
/// The store keeps one multiplexed connection and reconnects on the next call after the
/// connection is lost. While Redis is unreachable, bootstrap tokens are refused
/// (`503 Service Unavailable`): single use cannot be checked.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use sandbox_gateway::auth::RedisNonceStore;
///
/// let store = RedisNonceStore::connect("redis://127.0.0.1:6379/").await?;
/// # Ok(()) }
/// ```
pub struct RedisNonceStore {
    conn: RedisConn,
    prefix: String,
}

/// One multiplexed connection to Redis, opened again on the next call after it was lost.
pub(crate) struct RedisConn {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl RedisConn {
    /// Connects once now, so a bad address is reported at start-up.
    pub(crate) async fn open(client: redis::Client) -> Result<Self, redis::RedisError> {
        let conn = client.get_multiplexed_async_connection().await?;
        Ok(Self {
            client,
            conn: Mutex::new(Some(conn)),
        })
    }

    pub(crate) async fn get(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        let mut guard = self.conn.lock().await;
        if let Some(conn) = guard.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self.client.get_multiplexed_async_connection().await?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the connection after an error that lost it.
    pub(crate) async fn failed(&self, e: &redis::RedisError) {
        if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
            *self.conn.lock().await = None;
        }
    }
}

impl std::fmt::Debug for RedisNonceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection info may hold a password: show only the key prefix.
        f.debug_struct("RedisNonceStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> NonceStoreError {
    NonceStoreError::Unavailable(Box::new(e))
}

impl RedisNonceStore {
    /// Connects to the Redis server at `url` (`redis://[:password@]host:port/db`).
    pub async fn connect(url: &str) -> Result<Self, NonceStoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        Self::from_client(client).await
    }

    /// Uses an existing client, connecting once now so a bad address is reported at start-up.
    pub async fn from_client(client: redis::Client) -> Result<Self, NonceStoreError> {
        Ok(Self {
            conn: RedisConn::open(client).await.map_err(unavailable)?,
            prefix: "sandbox-gateway:nonce:".to_owned(),
        })
    }

    /// Sets the key prefix (to share one Redis database between deployments).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    async fn record_inner(
        &self,
        nonce: &[u8],
        expires_at: SystemTime,
    ) -> Result<bool, NonceStoreError> {
        let ttl_ms = match expires_at.duration_since(SystemTime::now()) {
            Ok(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1),
            // Already expired: nothing to remember (the token fails its own expiry check).
            Err(_) => return Ok(true),
        };
        let key = format!("{}{}", self.prefix, URL_SAFE_NO_PAD.encode(nonce));
        let mut conn = self.conn.get().await.map_err(unavailable)?;
        let answer: Result<Option<String>, _> = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut conn)
            .await;
        match answer {
            Ok(ok) => Ok(ok.is_some()),
            Err(e) => {
                self.conn.failed(&e).await;
                Err(unavailable(e))
            }
        }
    }
}

impl NonceStore for RedisNonceStore {
    fn record<'a>(&'a self, nonce: &'a [u8], expires_at: SystemTime) -> RecordFuture<'a> {
        Box::pin(self.record_inner(nonce, expires_at))
    }
}
