//! Shared state for the stateful checks (greylisting, rate limits): a small key-value interface
//! with expiry, backed by an embedded database by default (`embedded`, redb: nothing to install,
//! survives restarts) or by Redis when several moat instances must share what they know.
//!
//! Every operation can fail (disk full, Redis down, a timeout); callers treat a failure as "no
//! information" and never refuse mail permanently because of it.

mod embedded;
mod redis;

pub use embedded::ReadOnly;

use crate::config::{StoreBackend, StoreConfig};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded database could not be opened or used.
    #[error("embedded store {path}: {message}")]
    Embedded {
        /// The database file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Redis answered with an error or could not be reached.
    #[error("redis: {0}")]
    Redis(String),
    /// The operation took longer than `store.timeout`.
    #[error("store operation timed out after {0:?}")]
    Timeout(Duration),
    /// A stored value is not what the operation expects (e.g. not a number for `incr`).
    #[error("stored value for {0:?} is not a counter")]
    NotACounter(String),
}

/// The configured backend.
#[derive(Clone)]
pub enum Store {
    /// redb file on local disk.
    Embedded(embedded::Embedded),
    /// A Redis server shared by several instances.
    Redis(redis::RedisStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.backend())
    }
}

impl Store {
    /// Closes the store; an embedded file is made durable and released (see
    /// `embedded::Embedded::close`), so that it can be renamed and read by others.
    pub async fn close(self, path: &std::path::Path) -> Result<(), StoreError> {
        match self {
            Store::Embedded(e) => e.close(path).await,
            Store::Redis(_) => Ok(()),
        }
    }

    /// Opens the configured backend (Redis connects lazily, so a Redis that is down at start
    /// makes operations fail, not start-up).
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        match config.backend {
            StoreBackend::Embedded => {
                let path = config.path.clone();
                let timeout = config.timeout.0;
                let db = tokio::task::spawn_blocking(move || embedded::Embedded::open(&path))
                    .await
                    .map_err(|e| StoreError::Embedded {
                        path: config.path.display().to_string(),
                        message: e.to_string(),
                    })??;
                Ok(Store::Embedded(db.with_timeout(timeout)))
            }
            StoreBackend::Redis => Ok(Store::Redis(redis::RedisStore::new(
                &config.url,
                &config.prefix,
                config.timeout.0,
            )?)),
        }
    }

    /// "embedded" or "redis", for logs and metrics.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Embedded(_) => "embedded",
            Store::Redis(_) => "redis",
        }
    }

    /// The value under `key`, if set and not expired.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Embedded(s) => s.get(key).await,
            Store::Redis(s) => s.get(key).await,
        }
    }

    /// Sets `key` to `value` for `ttl`.
    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.set(key, value, ttl).await,
            Store::Redis(s) => s.set(key, value, ttl).await,
        }
    }

    /// Adds `by` to the counter under `key` atomically and returns the new value; a counter
    /// that does not exist starts at 0 and expires `ttl` after its creation.
    pub async fn incr(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, StoreError> {
        match self {
            Store::Embedded(s) => s.incr(key, by, ttl).await,
            Store::Redis(s) => s.incr(key, by, ttl).await,
        }
    }

    /// The values of `keys` (`None` for absent or expired ones), in one read.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        match self {
            Store::Embedded(s) => s.get_many(keys).await,
            Store::Redis(s) => s.get_many(keys).await,
        }
    }

    /// Adds each delta to its counter and sets the counter to expire `ttl` from now; a
    /// counter that falls to zero or below is removed. One write transaction (embedded) or
    /// pipelined commands (Redis).
    pub async fn add_many(
        &self,
        deltas: &[(String, i64)],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.add_many(deltas, ttl).await,
            Store::Redis(s) => s.add_many(deltas, ttl).await,
        }
    }

    /// Every live key that starts with `prefix`, with its value (loading a model into
    /// memory, statistics). Reads everything: not for the hot path.
    pub async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        match self {
            Store::Embedded(s) => s.scan(prefix).await,
            Store::Redis(s) => s.scan(prefix).await,
        }
    }

    /// Records one event under `key` and returns how many happened in the last `window`,
    /// this one included: a sliding-window counter made of two fixed windows, the previous
    /// one weighted by how much of it still overlaps (the estimate Redis rate limiters use;
    /// exact when events are spread evenly).
    pub async fn hit(&self, key: &str, window: Duration) -> Result<f64, StoreError> {
        let w = window.as_millis().max(1) as u64;
        let now = unix_millis();
        let (bucket, into) = (now / w, now % w);
        let current = self.incr(&format!("{key}:{bucket}"), 1, window * 2).await?;
        let previous = match self
            .get(&format!("{key}:{}", bucket.wrapping_sub(1)))
            .await?
        {
            Some(v) => parse_counter(key, &v)?,
            None => 0,
        };
        let overlap = 1.0 - into as f64 / w as f64;
        Ok(current as f64 + previous as f64 * overlap)
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A counter as stored: its decimal text (what Redis INCRBY keeps).
pub(crate) fn parse_counter(key: &str, v: &[u8]) -> Result<i64, StoreError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| StoreError::NotACounter(key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigDuration;

    fn embedded_config(dir: &std::path::Path) -> StoreConfig {
        StoreConfig {
            backend: StoreBackend::Embedded,
            path: dir.join("state.redb"),
            timeout: ConfigDuration::secs(2),
            ..StoreConfig::default()
        }
    }

    #[tokio::test]
    async fn embedded_state_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&embedded_config(dir.path()))
            .await
            .expect("open");
        store
            .set("a", b"one", Duration::from_secs(60))
            .await
            .expect("set");
        assert_eq!(
            store
                .incr("n", 5, Duration::from_secs(60))
                .await
                .expect("incr"),
            5
        );
        drop(store);
        let store = Store::open(&embedded_config(dir.path()))
            .await
            .expect("reopen");
        assert_eq!(
            store.get("a").await.expect("get").as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(
            store
                .incr("n", 1, Duration::from_secs(60))
                .await
                .expect("incr"),
            6
        );
    }

    #[tokio::test]
    async fn sliding_window_counts_recent_hits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&embedded_config(dir.path()))
            .await
            .expect("open");
        let window = Duration::from_secs(3600);
        let mut last = 0.0;
        for _ in 0..5 {
            last = store.hit("rl:ip", window).await.expect("hit");
        }
        // Within one hour-long bucket there is no previous bucket: exactly 5.
        assert!((4.0..=5.0).contains(&last), "{last}");
        assert!(store.hit("rl:other", window).await.expect("hit") <= 1.0);
    }

    #[tokio::test]
    async fn unopenable_path_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("file"), b"not a dir").expect("write");
        let mut config = embedded_config(dir.path());
        config.path = dir.path().join("file").join("state.redb");
        let err = Store::open(&config).await.expect_err("must fail");
        let text = err.to_string();
        assert!(text.contains("state.redb"), "{text}");
    }
}
