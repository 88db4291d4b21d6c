//! Transaction records: what moat saw and decided for one transaction (client, HELO, TLS,
//! envelope, the DNS answers its checks used, ruleset, symbols, action, reply), kept in a
//! directory bounded in size and age. Two directories use them: `[records]`, for replaying a
//! verdict (`moat check --replay`), and `[quarantine]`, the refused messages an admin can
//! release (`moat quarantine list|show|release`).
//!
//! Each entry is `ID.json` (the record) and, when the message is kept, `ID.eml`. The record is
//! written last, through a temporary name, so a listed entry is always complete.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why reading or writing records failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Reading or writing the directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No entry has this id.
    #[error("no {0} {1:?}")]
    NotFound(&'static str, String),
    /// A record is not valid JSON.
    #[error("record {path}: {message}")]
    BadRecord {
        /// The record file.
        path: String,
        /// serde's message.
        message: String,
    },
}

/// A symbol as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordSymbol {
    /// Its name.
    pub name: String,
    /// Its score.
    pub score: f64,
}

/// Why and from whom a message was refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// The entry's id (also its file names).
    pub id: String,
    /// The stage the verdict was reached at: `data`, or `connect`, `mail`, `rcpt` for a
    /// refusal before the message.
    #[serde(default = "data_stage")]
    pub stage: String,
    /// The recipient refused, for a refusal at `rcpt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_rcpt: Option<String>,
    /// When it was refused, Unix seconds.
    pub time: u64,
    /// The client's address and port.
    pub client: String,
    /// The client's verified host name, if any.
    pub client_name: Option<String>,
    /// HELO/EHLO name.
    pub helo: Option<String>,
    /// TLS version, if the session was encrypted.
    pub tls: Option<String>,
    /// Envelope sender (`""` for `<>`).
    pub mail_from: String,
    /// Envelope recipients.
    pub rcpts: Vec<String>,
    /// Message size in octets.
    pub size: usize,
    /// Total score.
    pub score: f64,
    /// `reject` or `tempfail`.
    pub action: String,
    /// The reply the client got.
    pub reply: String,
    /// Every symbol with its score.
    pub symbols: Vec<RecordSymbol>,
    /// The ruleset's version hash.
    pub ruleset: String,
    /// Every DNS answer the checks used, for an exact replay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<crate::dns::journal::DnsAnswer>,
}

fn data_stage() -> String {
    "data".into()
}

/// A directory of records with its bounds.
#[derive(Debug, Clone)]
pub struct RecordDir {
    /// `quarantine` or `records`, for log lines.
    label: &'static str,
    dir: PathBuf,
    max_bytes: u64,
    max_age: Duration,
    /// Unix seconds of the last prune: pruning reads every record, so it runs at most once a
    /// minute, not for every kept message.
    last_prune: Arc<AtomicU64>,
}

/// Which transactions get a record, from `[records]`.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Where they go.
    pub dir: RecordDir,
    rejected: bool,
    tempfailed: bool,
    accepted_sample: f64,
    /// Keep the message too.
    pub message: bool,
}

impl Recorder {
    /// The recorder of `[records]`, or `None` when it is off.
    pub fn new(config: &crate::config::RecordsConfig) -> Option<Recorder> {
        config.enabled.then(|| Recorder {
            dir: RecordDir::records(config),
            rejected: config.rejected,
            tempfailed: config.tempfailed,
            accepted_sample: config.accepted_sample,
            message: config.message,
        })
    }

    /// Whether a transaction that ended with `action` gets a record (accepted ones by sample).
    pub fn wants(&self, action: crate::verdict::card::Action) -> bool {
        use crate::verdict::card::Action;
        match action {
            Action::Reject => self.rejected,
            Action::Tempfail => self.tempfailed,
            Action::Accept | Action::AddHeader => {
                if self.accepted_sample >= 1.0 {
                    return true;
                }
                let mut r = [0u8; 4];
                let _ = aws_lc_rs::rand::fill(&mut r);
                f64::from(u32::from_le_bytes(r)) / f64::from(u32::MAX) < self.accepted_sample
            }
        }
    }
}

/// How often `keep` may prune.
const PRUNE_EVERY: u64 = 60;

/// An id is used as a file name: nothing but letters, digits and dashes.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RecordError + '_ {
    move |source| RecordError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl RecordDir {
    /// The directory of `[quarantine]` with its bounds.
    pub fn quarantine(config: &crate::config::QuarantineConfig) -> RecordDir {
        RecordDir::new(
            "quarantine",
            &config.dir,
            config.max_size_mb,
            config.max_age.0,
        )
    }

    /// The directory of `[records]` with its bounds.
    pub fn records(config: &crate::config::RecordsConfig) -> RecordDir {
        RecordDir::new("records", &config.dir, config.max_size_mb, config.max_age.0)
    }

    fn new(label: &'static str, dir: &Path, max_size_mb: u64, max_age: Duration) -> RecordDir {
        RecordDir {
            label,
            dir: dir.to_path_buf(),
            max_bytes: max_size_mb.saturating_mul(1 << 20),
            max_age,
            last_prune: Arc::new(AtomicU64::new(0)),
        }
    }

    /// What an entry is called in messages.
    fn noun(&self) -> &'static str {
        if self.label == "quarantine" {
            "quarantined message"
        } else {
            "record"
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new id: time, then random, so ids sort by time and never collide.
    pub fn new_id(time: u64) -> String {
        let mut random = [0u8; 6];
        let _ = aws_lc_rs::rand::fill(&mut random);
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        format!("{time}-{hex}")
    }

    /// Writes the entry off the calling task (the session does not wait for the disk), then
    /// enforces the bounds. Failures are logged, never reported to the client. `dns` is the
    /// resolver that answered the session, for the TXT texts the record still lacks.
    pub fn keep(&self, mut record: Record, message: Option<Vec<u8>>, dns: Option<crate::dns::Dns>) {
        let q = self.clone();
        tokio::spawn(async move {
            if let Some(dns) = dns {
                dns.complete_texts(&mut record.dns).await;
            }
            let _ =
                tokio::task::spawn_blocking(move || q.keep_now(&record, message.as_deref())).await;
        });
    }

    fn keep_now(&self, record: &Record, message: Option<&[u8]>) {
        let q = self;
        {
            if let Err(e) = q.write(record, message) {
                tracing::warn!(error = %e, id = %record.id, "{}: record not kept", q.label);
                return;
            }
            tracing::info!(id = %record.id, dir = %q.dir.display(), "{}: record kept", q.label);
            let now = crate::store::unix_millis() / 1000;
            let last = q.last_prune.load(Ordering::Relaxed);
            if now >= last + PRUNE_EVERY
                && q.last_prune
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                if let Err(e) = q.prune(now) {
                    tracing::warn!(error = %e, "{}: pruning failed", q.label);
                }
            }
        }
    }

    /// Writes `ID.eml` (when there is a message), then `ID.json` through a temporary name.
    pub fn write(&self, record: &Record, message: Option<&[u8]>) -> Result<(), RecordError> {
        std::fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        if let Some(message) = message {
            let eml = self.dir.join(format!("{}.eml", record.id));
            std::fs::write(&eml, message).map_err(io_err(&eml))?;
        }
        let json = serde_json::to_vec_pretty(record).map_err(|e| RecordError::BadRecord {
            path: record.id.clone(),
            message: e.to_string(),
        })?;
        let tmp = self.dir.join(format!(".{}.json.tmp", record.id));
        std::fs::write(&tmp, json).map_err(io_err(&tmp))?;
        let final_path = self.dir.join(format!("{}.json", record.id));
        std::fs::rename(&tmp, &final_path).map_err(io_err(&final_path))
    }

    /// The record in a file (an entry's `ID.json`, or a copy of one elsewhere) and its message,
    /// `ID.eml` next to it, if there is one.
    pub fn read_file(path: &Path) -> Result<(Record, Option<Vec<u8>>), RecordError> {
        let text = std::fs::read(path).map_err(io_err(path))?;
        let record: Record = serde_json::from_slice(&text).map_err(|e| RecordError::BadRecord {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let eml = path.with_extension("eml");
        let message = match std::fs::read(&eml) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&eml)(e)),
        };
        Ok((record, message))
    }

    /// Every complete entry, oldest first.
    pub fn list(&self) -> Result<Vec<Record>, RecordError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            if valid_id(id) {
                out.push(self.record(id)?);
            }
        }
        out.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        Ok(out)
    }

    fn record(&self, id: &str) -> Result<Record, RecordError> {
        let path = self.dir.join(format!("{id}.json"));
        let text = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RecordError::NotFound(self.noun(), id.to_string()),
            _ => io_err(&path)(e),
        })?;
        serde_json::from_slice(&text).map_err(|e| RecordError::BadRecord {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// One entry: its record and the message.
    pub fn get(&self, id: &str) -> Result<(Record, Vec<u8>), RecordError> {
        if !valid_id(id) {
            return Err(RecordError::NotFound(self.noun(), id.to_string()));
        }
        let record = self.record(id)?;
        let eml = self.dir.join(format!("{id}.eml"));
        let message = std::fs::read(&eml).map_err(io_err(&eml))?;
        Ok((record, message))
    }

    /// Removes an entry (the record first, so it is never listed half-removed).
    pub fn remove(&self, id: &str) -> Result<(), RecordError> {
        if !valid_id(id) {
            return Err(RecordError::NotFound(self.noun(), id.to_string()));
        }
        for ext in ["json", "eml"] {
            let path = self.dir.join(format!("{id}.{ext}"));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && ext == "eml" => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(RecordError::NotFound(self.noun(), id.to_string()))
                }
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Ok(())
    }

    /// Removes entries older than the age bound, then the oldest until the directory is
    /// within the size bound. Returns how many went.
    pub fn prune(&self, now: u64) -> Result<usize, RecordError> {
        let records = self.list()?;
        let size = |id: &str| -> u64 {
            ["json", "eml"]
                .iter()
                .filter_map(|ext| std::fs::metadata(self.dir.join(format!("{id}.{ext}"))).ok())
                .map(|m| m.len())
                .sum()
        };
        let mut sizes: Vec<(String, u64, u64)> = records
            .iter()
            .map(|r| (r.id.clone(), r.time, size(&r.id)))
            .collect();
        let mut total: u64 = sizes.iter().map(|s| s.2).sum();
        let mut removed = 0;
        let oldest_allowed = now.saturating_sub(self.max_age.as_secs());
        sizes.reverse(); // newest first; pop() takes the oldest
        while let Some((id, time, bytes)) = sizes.pop() {
            if time >= oldest_allowed && total <= self.max_bytes {
                break;
            }
            self.remove(&id)?;
            total = total.saturating_sub(bytes);
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigDuration, QuarantineConfig};

    fn record(id: &str, time: u64) -> Record {
        Record {
            id: id.into(),
            stage: "data".into(),
            refused_rcpt: None,
            time,
            client: "192.0.2.1:4711".into(),
            client_name: None,
            helo: Some("spam.example".into()),
            tls: None,
            mail_from: "a@example.test".into(),
            rcpts: vec!["b@example.test".into()],
            size: 10,
            score: 20.0,
            action: "reject".into(),
            reply: "550 5.7.1 no".into(),
            symbols: vec![RecordSymbol {
                name: "GTUBE".into(),
                score: 20.0,
            }],
            ruleset: "abc".into(),
            dns: Vec::new(),
        }
    }

    #[test]
    fn write_list_get_remove_and_prune() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = RecordDir::quarantine(&QuarantineConfig {
            enabled: true,
            dir: dir.path().join("q"),
            max_size_mb: 1,
            max_age: ConfigDuration::secs(100),
            tempfail: false,
        });
        assert!(
            q.list().expect("empty").is_empty(),
            "a missing dir is empty"
        );
        for (i, t) in [(1, 1000), (2, 1050), (3, 1100)] {
            q.write(
                &record(&format!("{t}-0{i}"), t),
                Some(b"Subject: x\r\n\r\nbody\r\n"),
            )
            .expect("write");
        }
        let ids: Vec<String> = q.list().expect("list").into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["1000-01", "1050-02", "1100-03"]);
        let (r, m) = q.get("1050-02").expect("get");
        assert_eq!(r, record("1050-02", 1050));
        assert_eq!(m, b"Subject: x\r\n\r\nbody\r\n");
        assert!(matches!(
            q.get("../etc/passwd"),
            Err(RecordError::NotFound(..))
        ));
        // Age bound: at 1120 the entry of 1000 is too old (max_age 100 s).
        assert_eq!(q.prune(1120).expect("prune"), 1);
        q.remove("1050-02").expect("remove");
        assert!(matches!(
            q.remove("1050-02"),
            Err(RecordError::NotFound(..))
        ));
        let ids: Vec<String> = q.list().expect("list").into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["1100-03"]);
        // Size bound: 1 MiB; two messages of 600 KiB leave only the newer.
        let big = vec![b'x'; 600 << 10];
        q.write(&record("1101-04", 1101), Some(&big))
            .expect("write");
        q.write(&record("1102-05", 1102), Some(&big))
            .expect("write");
        q.prune(1110).expect("prune");
        let ids: Vec<String> = q.list().expect("list").into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["1102-05"]);
    }

    #[test]
    fn ids_sort_by_time_and_are_file_safe() {
        let a = RecordDir::new_id(1700000000);
        let b = RecordDir::new_id(1700000000);
        assert_ne!(a, b);
        assert!(a.starts_with("1700000000-") && valid_id(&a), "{a}");
    }
}
