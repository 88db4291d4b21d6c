//! The live, swappable pipeline: what new sessions start with. A reload builds a new pipeline
//! and swaps it in atomically; sessions in flight keep the one they started with.

use super::Pipeline;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::Notify;

/// The current pipeline and the reload bookkeeping, shared by the listener and the reloader.
#[derive(Debug)]
pub struct LivePipeline {
    current: RwLock<Arc<Pipeline>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    last_error: Mutex<Option<String>>,
    trigger: Notify,
}

impl LivePipeline {
    /// Starts with `pipeline`.
    pub fn new(pipeline: Pipeline) -> Arc<Self> {
        publish_ruleset(pipeline.ruleset());
        Arc::new(LivePipeline {
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

    /// Waits until a reload is asked for.
    pub async fn reload_requested(&self) {
        self.trigger.notified().await
    }

    /// Puts a rebuilt pipeline in force for new sessions.
    pub fn swap(&self, pipeline: Pipeline) {
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut g) = self.last_error.lock() {
            *g = None;
        }
        publish_ruleset(pipeline.ruleset());
        let new = Arc::new(pipeline);
        match self.current.write() {
            Ok(mut g) => *g = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// Notes a failed reload; the pipeline in force stays.
    pub fn failed(&self, error: String) {
        self.reloads_failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(error);
        }
    }
}

/// Points `moat_ruleset_info` at the loaded ruleset (one series, value 1).
fn publish_ruleset(digest: &str) {
    let info = &crate::metrics::METRICS.ruleset_info;
    info.reset();
    info.with_label_values(&[digest]).set(1);
}
