//! Rule reloads without a restart: SIGHUP, or a change to any file under the rules directory
//! (polled, debounced). The new pipeline is built and validated first, then swapped in
//! atomically; sessions in flight keep the pipeline they started with. A broken file keeps
//! the running ruleset, logs the error with file:line:column and counts a failure.
//!
//! Polling rather than inotify: it needs no extra dependency, works on every filesystem
//! (NFS, bind mounts, editors that replace files) and a rules directory is small.

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::server::State;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::{watch, Notify};

/// The current pipeline and the reload bookkeeping, shared by the listener and the reloader.
#[derive(Debug)]
pub struct Rules {
    current: RwLock<Arc<Pipeline>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    last_error: Mutex<Option<String>>,
    trigger: Notify,
}

impl Rules {
    /// Starts with `pipeline`.
    pub fn new(pipeline: Pipeline) -> Arc<Self> {
        publish_ruleset(pipeline.ruleset());
        Arc::new(Rules {
            current: RwLock::new(Arc::new(pipeline)),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_error: Mutex::new(None),
            trigger: Notify::new(),
        })
    }

    /// The pipeline new sessions use.
    pub fn current(&self) -> Arc<Pipeline> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Successful reloads so far.
    pub fn reloads_ok(&self) -> u64 {
        self.reloads_ok.load(Ordering::Relaxed)
    }

    /// Failed reloads so far.
    pub fn reloads_failed(&self) -> u64 {
        self.reloads_failed.load(Ordering::Relaxed)
    }

    /// The error of the last failed reload, if the last attempt failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|g| g.clone())
    }

    /// Asks the reloader to reload now (SIGHUP).
    pub fn request_reload(&self) {
        self.trigger.notify_one();
    }

    fn swap(&self, pipeline: Pipeline) {
        publish_ruleset(pipeline.ruleset());
        let new = Arc::new(pipeline);
        match self.current.write() {
            Ok(mut g) => *g = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}

/// Points `moat_ruleset_info` at the loaded ruleset (one series, value 1).
fn publish_ruleset(digest: &str) {
    let info = &crate::metrics::METRICS.ruleset_info;
    info.reset();
    info.with_label_values(&[digest]).set(1);
}

/// A cheap fingerprint of the rules directory: every file's name, size and mtime.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    crate::rules::files_under(dir)
        .into_iter()
        .filter_map(|path| {
            let meta = std::fs::metadata(&path).ok()?;
            Some((path, meta.len(), meta.modified().ok()))
        })
        .collect()
}

/// Builds a new pipeline from the config's rules; runs on the blocking pool (regex compiling).
async fn rebuild(config: &Config, hostname: &str, state: &State) -> Result<Pipeline, String> {
    let config = config.clone();
    let hostname = hostname.to_string();
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        crate::server::build_pipeline(&config, &hostname, &state).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("reload task failed: {e}"))?
}

/// Reloads until shutdown: on `request_reload` and when the rules directory changes and then
/// stays unchanged for one more `interval` (so a half-saved file is not loaded).
pub async fn run(
    rules: Arc<Rules>,
    config: Config,
    hostname: String,
    state: State,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let dir = config.rules.dir.clone();
    let mut seen = dir.as_deref().map(fingerprint);
    let mut pending = false;
    loop {
        let manual = tokio::select! {
            _ = rules.trigger.notified() => true,
            _ = tokio::time::sleep(interval) => false,
            _ = shutdown.changed() => return,
        };
        if !manual {
            let Some(dir) = dir.as_deref() else { continue };
            let now = Some(fingerprint(dir));
            if now != seen {
                seen = now;
                pending = true;
                continue;
            }
            if !pending {
                continue;
            }
        }
        pending = false;
        match rebuild(&config, &hostname, &state).await {
            Ok(p) => {
                rules.swap(p);
                rules.reloads_ok.fetch_add(1, Ordering::Relaxed);
                crate::metrics::METRICS
                    .reloads
                    .with_label_values(&["ok"])
                    .inc();
                if let Ok(mut g) = rules.last_error.lock() {
                    *g = None;
                }
                tracing::info!(
                    trigger = if manual { "signal" } else { "file change" },
                    ruleset = %rules.current().ruleset(),
                    "rules reloaded"
                );
            }
            Err(e) => {
                rules.reloads_failed.fetch_add(1, Ordering::Relaxed);
                crate::metrics::METRICS
                    .reloads
                    .with_label_values(&["failed"])
                    .inc();
                tracing::error!(error = %e, "rules reload failed; the previous rules stay in force");
                if let Ok(mut g) = rules.last_error.lock() {
                    *g = Some(e);
                }
            }
        }
        if let Some(d) = dir.as_deref() {
            seen = Some(fingerprint(d));
        }
    }
}
