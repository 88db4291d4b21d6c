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

    /// Runs a pipeline of commands on already prefixed keys under the timeout.
    async fn run<T: redis::FromRedisValue>(&self, pipe: redis::Pipeline) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, pipe.query_async::<T>(&mut conn)).await {
            Err(_) => Err(StoreError::Timeout(self.timeout)),
            Ok(r) => r.map_err(|e| StoreError::Redis(e.to_string())),
        }
    }

    /// See [`super::Store::get_many`]: MGET, a thousand keys per command.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(1000) {
            let mut p = redis::pipe();
            let prefixed: Vec<String> = chunk
                .iter()
                .map(|k| format!("{}{k}", self.prefix))
                .collect();
            p.cmd("MGET").arg(&prefixed);
            let (values,): (Vec<Option<Vec<u8>>>,) = self.run(p).await?;
            out.extend(values);
        }
        Ok(out)
    }

    /// See [`super::Store::add_many`]: INCRBY and PEXPIRE per counter, pipelined; counters
    /// that fell to zero or below are deleted afterwards.
    pub async fn add_many(
        &self,
        deltas: &[(String, i64)],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let ms = ttl.as_millis().max(1) as u64;
        for chunk in deltas.chunks(500) {
            let mut p = redis::pipe();
            for (key, by) in chunk {
                let k = format!("{}{key}", self.prefix);
                p.cmd("INCRBY").arg(&k).arg(*by);
                p.cmd("PEXPIRE").arg(&k).arg(ms).ignore();
            }
            let counts: Vec<i64> = self.run(p).await?;
            let mut gone = redis::pipe();
            let mut any = false;
            for ((key, _), n) in chunk.iter().zip(counts) {
                if n <= 0 {
                    gone.cmd("DEL")
                        .arg(format!("{}{key}", self.prefix))
                        .ignore();
                    any = true;
                }
            }
            if any {
                let () = self.run(gone).await?;
            }
        }
        Ok(())
    }

    /// See [`super::Store::scan`]: SCAN MATCH, then MGET of each batch.
    pub async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let pattern = format!("{}{prefix}*", self.prefix);
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let mut p = redis::pipe();
            p.cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let ((next, keys),): ((u64, Vec<String>),) = self.run(p).await?;
            let unprefixed: Vec<String> = keys
                .iter()
                .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_string))
                .collect();
            let values = self.get_many(&unprefixed).await?;
            out.extend(
                unprefixed
                    .into_iter()
                    .zip(values)
                    .filter_map(|(k, v)| v.map(|v| (k, v))),
            );
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
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
