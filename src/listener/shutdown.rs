//! The shutdown signal and the drain: listeners stop accepting, idle sessions end with 421,
//! sessions in a transaction finish it, and after the grace period whatever is left is dropped.
//!
//! Every session holds a clone of `DrainGuard`'s sender; when the last one is dropped the
//! drain receiver sees the channel close (the mini-redis pattern), so no session registry is
//! needed.

use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Broadcasts "shut down" and waits for sessions to finish.
#[derive(Debug)]
pub struct Shutdown {
    signal: watch::Sender<bool>,
    drain_tx: Option<mpsc::Sender<()>>,
    drain_rx: mpsc::Receiver<()>,
}

/// Held by every session task; dropping it tells the drain that the session is over.
#[derive(Debug, Clone)]
pub struct DrainGuard(#[allow(dead_code)] mpsc::Sender<()>);

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A fresh, untriggered shutdown.
    pub fn new() -> Self {
        let (signal, _) = watch::channel(false);
        let (tx, rx) = mpsc::channel(1);
        Shutdown {
            signal,
            drain_tx: Some(tx),
            drain_rx: rx,
        }
    }

    /// A receiver that turns `true` when shutdown starts.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.signal.subscribe()
    }

    /// A guard for one session or listener task.
    pub fn guard(&self) -> Option<DrainGuard> {
        self.drain_tx.clone().map(DrainGuard)
    }

    /// Starts the shutdown.
    pub fn trigger(&self) {
        let _ = self.signal.send(true);
    }

    /// Waits until every guard is dropped or `grace` has passed; true if all finished.
    pub async fn drain(mut self, grace: Duration) -> bool {
        self.drain_tx.take();
        tokio::time::timeout(grace, self.drain_rx.recv())
            .await
            .is_ok()
    }
}
