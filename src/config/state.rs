//! `[store]`, `[quarantine]` and `[records]`: what moat keeps on disk or in Redis.

use super::ConfigDuration;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Which store backend holds the shared state.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// A redb file on local disk: nothing to install, one instance.
    #[default]
    Embedded,
    /// A Redis server shared by several instances.
    Redis,
}

/// What a stateful check does when the store fails.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreFailure {
    /// Skip the check (with a symbol and a metric) and go on.
    #[default]
    Skip,
    /// Answer 451 4.3.0 so the client retries later.
    Tempfail,
}

/// `[store]`: the key-value store behind greylisting and rate limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `embedded` (default) or `redis`.
    pub backend: StoreBackend,
    /// The embedded database file; its directory is created if missing.
    pub path: PathBuf,
    /// Redis URL (`redis://[user:password@]host:port/db`).
    pub url: String,
    /// Prefix of every Redis key.
    pub prefix: String,
    /// How long one store operation may take.
    pub timeout: ConfigDuration,
    /// What a check does when the store fails: `skip` or `tempfail`.
    pub on_failure: StoreFailure,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Embedded,
            path: PathBuf::from("/var/lib/moat/state.redb"),
            url: "redis://127.0.0.1:6379/0".into(),
            prefix: "moat:".into(),
            timeout: ConfigDuration(Duration::from_millis(500)),
            on_failure: StoreFailure::Skip,
        }
    }
}

/// `[quarantine]`: keep messages refused at end of data, to inspect or release them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineConfig {
    /// Off by default.
    pub enabled: bool,
    /// Where the messages (`ID.eml`) and their records (`ID.json`) go; created if missing.
    pub dir: PathBuf,
    /// Most megabytes kept; the oldest entries go first.
    pub max_size_mb: u64,
    /// Entries older than this are removed.
    pub max_age: ConfigDuration,
    /// Also keep tempfailed messages (the sender retries them anyway).
    pub tempfail: bool,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        QuarantineConfig {
            enabled: false,
            dir: PathBuf::from("/var/lib/moat/quarantine"),
            max_size_mb: 1024,
            max_age: ConfigDuration::secs(30 * 86400),
            tempfail: false,
        }
    }
}

/// `[records]`: a record of each transaction (what came in, the DNS answers used, what was
/// decided), for `moat check --replay`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsConfig {
    /// Off by default.
    pub enabled: bool,
    /// Where the records (`ID.json`) and messages (`ID.eml`) go; created if missing.
    pub dir: PathBuf,
    /// Most megabytes kept; the oldest records go first.
    pub max_size_mb: u64,
    /// Records older than this are removed.
    pub max_age: ConfigDuration,
    /// Keep a record for every rejected message.
    pub rejected: bool,
    /// Keep a record for every tempfailed message.
    pub tempfailed: bool,
    /// The fraction of accepted messages (flagged or not) to keep a record for, 0.0 to 1.0.
    pub accepted_sample: f64,
    /// Keep the message with its record (needed to replay it).
    pub message: bool,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        RecordsConfig {
            enabled: false,
            dir: PathBuf::from("/var/lib/moat/records"),
            max_size_mb: 1024,
            max_age: ConfigDuration::secs(7 * 86400),
            rejected: true,
            tempfailed: true,
            accepted_sample: 0.0,
            message: true,
        }
    }
}
