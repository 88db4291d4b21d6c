//! The Redis backend, for state shared by several moat instances. The connection is made on
//! first use and remade after a failure (redis' ConnectionManager); every operation is bounded
//! by `store.timeout`, and every key gets `store.prefix` so one Redis can serve other tools.

use super::StoreError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// A lazily connected Redis client.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
}

impl RedisStore {
    /// Parses the URL and prepares the connection (no network traffic yet).
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Redis(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Redis(e.to_string()))?;
        Ok(RedisStore {
            conn,
            prefix: prefix.to_string(),
            timeout,
        })
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: impl FnOnce(String) -> redis::Pipeline,
        key: &str,
    ) -> Result<T, StoreError> {
        let pipe = cmd(format!("{}{key}", self.prefix));
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, pipe.query_async::<T>(&mut conn)).await {
            Err(_) => Err(StoreError::Timeout(self.timeout)),
            // INCRBY on a value that is not a number: "value is not an integer".
            Ok(r) => r.map_err(|e| match e.to_string() {
                text if text.contains("not an integer") => StoreError::NotACounter(key.to_string()),
                text => StoreError::Redis(text),
            }),
        }
    }

    /// See [`super::Store::get`].
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (v,): (Option<Vec<u8>>,) = self
            .query(
                |k| {
                    let mut p = redis::pipe();
                    p.get(k);
                    p
                },
                key,
            )
            .await?;
        Ok(v)
    }

    /// See [`super::Store::set`].
    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let ms = ttl.as_millis().max(1) as u64;
        let () = self
            .query(
                |k| {
                    let mut p = redis::pipe();
                    p.cmd("SET").arg(k).arg(value).arg("PX").arg(ms).ignore();
                    p
                },
                key,
            )
            .await?;
        Ok(())
    }

    /// See [`super::Store::incr`]: INCRBY and PEXPIRE NX in one MULTI, so the expiry is set
    /// once, when the counter is created, by whichever instance creates it.
    pub async fn incr(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, StoreError> {
        let ms = ttl.as_millis().max(1) as u64;
        let (n,): (i64,) = self
            .query(
                |k| {
                    let mut p = redis::pipe();
                    p.atomic()
                        .cmd("INCRBY")
                        .arg(&k)
                        .arg(by)
                        .cmd("PEXPIRE")
                        .arg(&k)
                        .arg(ms)
                        .arg("NX")
                        .ignore();
                    p
                },
                key,
            )
            .await?;
        Ok(n)
    }
}
