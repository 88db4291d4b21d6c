//! Rule reloads without a restart: SIGHUP, or a change to any file under the rules directory
//! (polled, debounced). The new pipeline is built and validated first, then swapped in
//! atomically; sessions in flight keep the pipeline they started with. A broken file keeps
//! the running ruleset, logs the error with file:line:column and counts a failure.
//!
//! Polling rather than inotify: it needs no extra dependency, works on every filesystem
//! (NFS, bind mounts, editors that replace files) and a rules directory is small.

use super::State;
use crate::config::Config;
use crate::pipeline::live::LivePipeline;
use crate::pipeline::Pipeline;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

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
        crate::app::build_pipeline(&config, &hostname, &state).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("reload task failed: {e}"))?
}

/// Reloads until shutdown: on `request_reload` and when the rules directory changes and then
/// stays unchanged for one more `interval` (so a half-saved file is not loaded).
pub async fn run(
    rules: Arc<LivePipeline>,
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
            _ = rules.reload_requested() => true,
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
                crate::metrics::METRICS
                    .reloads
                    .with_label_values(&["ok"])
                    .inc();
                tracing::info!(
                    trigger = if manual { "signal" } else { "file change" },
                    ruleset = %rules.current().ruleset(),
                    "rules reloaded"
                );
            }
            Err(e) => {
                crate::metrics::METRICS
                    .reloads
                    .with_label_values(&["failed"])
                    .inc();
                tracing::error!(error = %e, "rules reload failed; the previous rules stay in force");
                rules.failed(e);
            }
        }
        if let Some(d) = dir.as_deref() {
            seen = Some(fingerprint(d));
        }
    }
}
