//! The embedded backend: one redb file. Values carry their expiry time in front; expired ones
//! read as absent and a sweep removes them every minute.
//!
//! Writes commit without fsync and a background task makes them durable once a second: a
//! greylisting or rate-limit entry lost in a power cut costs a retry, while an fsync per RCPT
//! would cost milliseconds on every message.

use super::{parse_counter, unix_millis, StoreError};
use redb::{
    Database, Durability, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition,
};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// key -> 8 bytes expiry (Unix ms, big-endian) + value.
const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// How often unsynced writes are made durable.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How often expired entries are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// An open redb database.
#[derive(Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
    timeout: Duration,
}

struct Inner {
    db: Database,
    path: String,
    /// Set by a write committed without fsync, cleared by the sync task.
    dirty: AtomicBool,
}

impl Embedded {
    /// Opens or creates the database (and its directory); starts the sync and sweep task
    /// when called inside a Tokio runtime.
    pub fn open(path: &Path) -> Result<Embedded, StoreError> {
        let label = path.display().to_string();
        let err = |message: String| StoreError::Embedded {
            path: label.clone(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        }
        // A handle dropped a moment ago may still be finishing its background sync, which holds
        // the file lock; wait for that briefly rather than fail a reopen.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let db = loop {
            match Database::create(path) {
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other.map_err(|e| err(e.to_string()))?,
            }
        };
        // Create the table so that reads of a fresh database find it.
        let tx = db.begin_write().map_err(|e| err(e.to_string()))?;
        tx.open_table(TABLE).map_err(|e| err(e.to_string()))?;
        tx.commit().map_err(|e| err(e.to_string()))?;
        let inner = Arc::new(Inner {
            db,
            path: label,
            dirty: AtomicBool::new(false),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(maintain(Arc::downgrade(&inner)));
        }
        Ok(Embedded {
            inner,
            timeout: Duration::from_secs(1),
        })
    }

    /// Sets how long one operation may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Embedded {
        self.timeout = timeout;
        self
    }

    /// Runs `f` on the blocking pool under the timeout.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, String> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        let path = inner.path.clone();
        let job = tokio::task::spawn_blocking(move || f(&inner));
        match tokio::time::timeout(self.timeout, job).await {
            Err(_) => Err(StoreError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(StoreError::Embedded {
                path,
                message: e.to_string(),
            }),
            Ok(Ok(r)) => r.map_err(|message| StoreError::Embedded { path, message }),
        }
    }

    /// See [`super::Store::get`].
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_string();
        self.run(move |inner| {
            let tx = inner.db.begin_read().map_err(|e| e.to_string())?;
            let table = tx.open_table(TABLE).map_err(|e| e.to_string())?;
            let value = table.get(key.as_str()).map_err(|e| e.to_string())?;
            Ok(value.and_then(|v| live(v.value(), unix_millis()).map(<[u8]>::to_vec)))
        })
        .await
    }

    /// See [`super::Store::set`].
    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let (key, value) = (key.to_string(), value.to_vec());
        self.run(move |inner| {
            inner.write(|table| {
                let stored = encode(unix_millis().saturating_add(ttl_ms(ttl)), &value);
                table
                    .insert(key.as_str(), stored.as_slice())
                    .map_err(|e| e.to_string())?;
                Ok(())
            })
        })
        .await
    }

    /// See [`super::Store::incr`]. redb has one writer at a time, so read-modify-write inside
    /// a write transaction is atomic.
    pub async fn incr(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, StoreError> {
        let key = key.to_string();
        let counted = self
            .run(move |inner| {
                inner.write(|table| {
                    let now = unix_millis();
                    let old = table
                        .get(key.as_str())
                        .map_err(|e| e.to_string())?
                        .and_then(|v| {
                            let v = v.value();
                            live(v, now).map(|value| (expiry(v), value.to_vec()))
                        });
                    let (expires, count) = match old {
                        Some((expires, value)) => match parse_counter(&key, &value) {
                            Ok(n) => (expires, n.saturating_add(by)),
                            Err(_) => return Ok(Err(key.clone())),
                        },
                        None => (now.saturating_add(ttl_ms(ttl)), by),
                    };
                    let stored = encode(expires, count.to_string().as_bytes());
                    table
                        .insert(key.as_str(), stored.as_slice())
                        .map_err(|e| e.to_string())?;
                    Ok(Ok(count))
                })
            })
            .await?;
        counted.map_err(StoreError::NotACounter)
    }
}

impl Embedded {
    /// See [`super::Store::get_many`].
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let keys = keys.to_vec();
        self.run(move |inner| {
            let tx = inner.db.begin_read().map_err(|e| e.to_string())?;
            let table = tx.open_table(TABLE).map_err(|e| e.to_string())?;
            let now = unix_millis();
            keys.iter()
                .map(|k| {
                    let v = table.get(k.as_str()).map_err(|e| e.to_string())?;
                    Ok(v.and_then(|v| live(v.value(), now).map(<[u8]>::to_vec)))
                })
                .collect()
        })
        .await
    }

    /// See [`super::Store::add_many`].
    pub async fn add_many(
        &self,
        deltas: &[(String, i64)],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let deltas = deltas.to_vec();
        self.run(move |inner| {
            inner.write(|table| {
                let now = unix_millis();
                let expires = now.saturating_add(ttl_ms(ttl));
                for (key, by) in &deltas {
                    let old = table
                        .get(key.as_str())
                        .map_err(|e| e.to_string())?
                        .and_then(|v| live(v.value(), now).and_then(|v| parse_counter(key, v).ok()))
                        .unwrap_or(0);
                    let n = old.saturating_add(*by);
                    if n <= 0 {
                        table.remove(key.as_str()).map_err(|e| e.to_string())?;
                    } else {
                        let stored = encode(expires, n.to_string().as_bytes());
                        table
                            .insert(key.as_str(), stored.as_slice())
                            .map_err(|e| e.to_string())?;
                    }
                }
                Ok(())
            })
        })
        .await
    }

    /// See [`super::Store::scan`].
    pub async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = prefix.to_string();
        self.run(move |inner| {
            let tx = inner.db.begin_read().map_err(|e| e.to_string())?;
            let table = tx.open_table(TABLE).map_err(|e| e.to_string())?;
            let now = unix_millis();
            let mut out = Vec::new();
            for entry in table.range(prefix.as_str()..).map_err(|e| e.to_string())? {
                let (k, v) = entry.map_err(|e| e.to_string())?;
                if !k.value().starts_with(prefix.as_str()) {
                    break;
                }
                if let Some(v) = live(v.value(), now) {
                    out.push((k.value().to_string(), v.to_vec()));
                }
            }
            Ok(out)
        })
        .await
    }
}

/// A database file opened read-only: any number of processes may read it at once (the
/// classifier's model, read by `moat check` and `moat serve`), and opening it takes no write
/// lock. A file a writer holds open cannot be opened this way; `moat learn` therefore writes a
/// copy and renames it into place.
pub struct ReadOnly {
    db: ReadOnlyDatabase,
    path: String,
}

impl std::fmt::Debug for ReadOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReadOnly({})", self.path)
    }
}

impl ReadOnly {
    /// Opens `path` for reading.
    pub fn open(path: &Path) -> Result<ReadOnly, StoreError> {
        let label = path.display().to_string();
        let db = ReadOnlyDatabase::open(path).map_err(|e| StoreError::Embedded {
            path: label.clone(),
            message: e.to_string(),
        })?;
        Ok(ReadOnly { db, path: label })
    }

    fn err(&self, message: String) -> StoreError {
        StoreError::Embedded {
            path: self.path.clone(),
            message,
        }
    }

    /// The live values of `keys` (absent, expired or in a file without the table: `None`).
    pub fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e.to_string()))?;
        let table = match tx.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
            Err(e) => return Err(self.err(e.to_string())),
        };
        let now = unix_millis();
        keys.iter()
            .map(|k| {
                let v = table.get(k.as_str()).map_err(|e| self.err(e.to_string()))?;
                Ok(v.and_then(|v| live(v.value(), now).map(<[u8]>::to_vec)))
            })
            .collect()
    }

    /// Every live entry whose key starts with `prefix`.
    pub fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e.to_string()))?;
        let table = match tx.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e.to_string())),
        };
        let now = unix_millis();
        let mut out = Vec::new();
        for entry in table.range(prefix..).map_err(|e| self.err(e.to_string()))? {
            let (k, v) = entry.map_err(|e| self.err(e.to_string()))?;
            if !k.value().starts_with(prefix) {
                break;
            }
            if let Some(v) = live(v.value(), now) {
                out.push((k.value().to_string(), v.to_vec()));
            }
        }
        Ok(out)
    }
}

impl Embedded {
    /// Makes every write durable now and closes the file, waiting (up to 5 s) until no
    /// background sync holds it any more, so that it can be renamed and opened read-only.
    pub async fn close(self, path: &Path) -> Result<(), StoreError> {
        let inner = self.inner;
        let synced = tokio::task::spawn_blocking({
            let inner = inner.clone();
            move || inner.sync(false)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        drop(inner);
        if let Err(message) = synced {
            return Err(StoreError::Embedded {
                path: path.display().to_string(),
                message,
            });
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match ReadOnlyDatabase::open(path) {
                Ok(_) => return Ok(()),
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    return Err(StoreError::Embedded {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })
                }
            }
        }
    }
}

impl Inner {
    /// One write transaction, committed without fsync (the sync task follows up).
    fn write<T>(
        &self,
        f: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut tx = self.db.begin_write().map_err(|e| e.to_string())?;
        tx.set_durability(Durability::None)
            .map_err(|e| e.to_string())?;
        let out = {
            let mut table = tx.open_table(TABLE).map_err(|e| e.to_string())?;
            f(&mut table)?
        };
        tx.commit().map_err(|e| e.to_string())?;
        self.dirty.store(true, Ordering::Release);
        Ok(out)
    }

    /// An fsynced commit, which also makes the earlier unsynced ones durable.
    fn sync(&self, sweep: bool) -> Result<(), String> {
        let tx = self.db.begin_write().map_err(|e| e.to_string())?;
        if sweep {
            let now = unix_millis();
            let mut table = tx.open_table(TABLE).map_err(|e| e.to_string())?;
            table
                .retain(|_, v| live(v, now).is_some())
                .map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

/// Makes writes durable every `SYNC_EVERY` and sweeps every `SWEEP_EVERY`, until the
/// database is dropped.
async fn maintain(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + SYNC_EVERY, SYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sweeps = (SWEEP_EVERY.as_secs() / SYNC_EVERY.as_secs()).max(1);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let sweep = n.is_multiple_of(sweeps);
        if !sweep && !strong.dirty.swap(false, Ordering::AcqRel) {
            continue;
        }
        let path = strong.path.clone();
        let done = tokio::task::spawn_blocking(move || strong.sync(sweep)).await;
        if let Ok(Err(e)) | Err(e) = done.map_err(|e| e.to_string()) {
            tracing::warn!(store = %path, error = %e, "embedded store: sync failed");
        }
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

fn encode(expires: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&expires.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn expiry(stored: &[u8]) -> u64 {
    stored
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// The value of a stored entry that has not expired at `now`.
fn live(stored: &[u8], now: u64) -> Option<&[u8]> {
    (stored.len() >= 8 && expiry(stored) > now).then(|| &stored[8..])
}
