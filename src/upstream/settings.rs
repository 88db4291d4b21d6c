//! How moat reaches the MTA, built once from `[upstream]`, and the pool of idle sessions
//! kept between the transactions of different clients.

use super::Upstream;
use crate::config::{split_host_port, Forwarding, UpstreamConfig};
use crate::smtp::extensions::UpstreamCapabilities;
use rustls::pki_types::ServerName;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Everything needed to open upstream sessions, built once from the config.
#[derive(Debug)]
pub struct UpstreamSettings {
    /// host:port of the MTA.
    pub address: String,
    /// The name in moat's EHLO.
    pub helo_name: String,
    /// XCLIENT, XFORWARD or none.
    pub forwarding: Forwarding,
    /// TLS client config and the name to verify, when STARTTLS is on.
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for replies to commands.
    pub command_timeout: Duration,
    /// Timeout for the final reply after the end of data.
    pub data_timeout: Duration,
    /// What the upstream offered most recently (shared by all sessions).
    pub learned: RwLock<Option<UpstreamCapabilities>>,
    /// Idle sessions between transactions of different clients, newest last.
    pub(super) pool: Mutex<Vec<(Upstream, Instant)>>,
    /// Most idle sessions kept.
    pub(super) pool_size: usize,
    /// Longest idle time of a pooled session.
    pub(super) pool_idle: Duration,
}

impl UpstreamSettings {
    /// Builds the settings from `[upstream]`.
    pub fn new(
        config: &UpstreamConfig,
        helo_name: String,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, String> {
        let tls = match tls {
            Some(cfg) => {
                let host = config
                    .tls_server_name
                    .clone()
                    .or_else(|| split_host_port(&config.address).map(|(h, _)| h))
                    .unwrap_or_default();
                let name = ServerName::try_from(host.clone()).map_err(|_| {
                    format!("upstream.tls_server_name: {host:?} is not a valid TLS server name")
                })?;
                Some((cfg, name))
            }
            None => None,
        };
        Ok(UpstreamSettings {
            address: config.address.clone(),
            helo_name,
            forwarding: config.forwarding,
            tls,
            connect_timeout: config.connect_timeout.0,
            command_timeout: config.command_timeout.0,
            data_timeout: config.data_timeout.0,
            learned: RwLock::new(None),
            pool: Mutex::new(Vec::new()),
            pool_size: config.pool_size,
            pool_idle: config.pool_idle.0,
        })
    }

    /// The newest idle session young enough to reuse; older ones are closed.
    pub(super) fn take_pooled(&self) -> Option<Upstream> {
        let mut pool = self.pool.lock().ok()?;
        while let Some((up, since)) = pool.pop() {
            if since.elapsed() < self.pool_idle {
                return Some(up);
            }
            tokio::spawn(up.quit());
        }
        None
    }

    /// Closes every idle session (at shutdown), politely.
    pub async fn close_pool(&self) {
        let idle: Vec<_> = match self.pool.lock() {
            Ok(mut p) => p.drain(..).collect(),
            Err(_) => return,
        };
        futures_util::future::join_all(idle.into_iter().map(|(up, _)| up.quit())).await;
    }

    /// The capabilities learned most recently, if the upstream ever answered.
    pub fn capabilities(&self) -> Option<UpstreamCapabilities> {
        self.learned.read().ok().and_then(|g| g.clone())
    }

    pub(super) fn learn(&self, caps: &UpstreamCapabilities) {
        if let Ok(mut g) = self.learned.write() {
            if g.as_ref() != Some(caps) {
                *g = Some(caps.clone());
            }
        }
    }
}
