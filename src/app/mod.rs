//! Wires a validated config into a running server: TLS, upstream settings, the pipeline, the
//! listeners; and stops it with a drain.

mod build;
pub(crate) mod reload;

pub use build::{build_offline_pipeline, build_pipeline, upstream_settings, StartError, State};

use crate::config::{Config, Forwarding};
use crate::listener::shutdown::Shutdown;
use crate::listener::{self, Limits};
use crate::session::SessionShared;
use crate::upstream::{Upstream, UpstreamSettings};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A running moat.
#[derive(Debug)]
pub struct Server {
    addrs: Vec<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    rules: Arc<crate::pipeline::live::LivePipeline>,
    shutdown: Shutdown,
    grace: Duration,
    upstream: Arc<UpstreamSettings>,
    server_cert: Option<Arc<crate::net::tls::ServerCert>>,
}

impl Server {
    /// Binds the listeners and starts accepting; returns once moat is ready.
    pub async fn start(config: &Config) -> Result<Server, StartError> {
        let hostname = config.hostname();
        let (server_tls, server_cert) = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => {
                let (tls, handle) = crate::net::tls::server_config(cert, key, &config.tls.sni)?;
                (Some(tokio_rustls::TlsAcceptor::from(tls)), Some(handle))
            }
            _ => (None, None),
        };
        let upstream = upstream_settings(config)?;
        match config.upstream.forwarding {
            Forwarding::Xclient => {}
            Forwarding::Xforward => tracing::warn!(
                "upstream.forwarding = \"xforward\": the MTA logs the real client, but applies its relay policy to moat's own address"
            ),
            Forwarding::None => tracing::warn!(
                "upstream.forwarding = \"none\": the MTA sees every client as moat's own address; make sure it does not trust that address for relaying"
            ),
        }
        // Learn what the upstream offers before the first client asks for EHLO; if it is down,
        // sessions start with the conservative offer and learn on their first connection.
        let probed = Upstream::probe(&upstream).await;
        crate::metrics::READINESS
            .upstream_ok
            .store(probed.is_ok(), std::sync::atomic::Ordering::Relaxed);
        match probed {
            Ok(caps) => {
                tracing::info!(upstream = %upstream.address, ?caps, "upstream capabilities learned")
            }
            Err(e) => {
                tracing::warn!(upstream = %upstream.address, error = %e, "upstream not reachable at start-up; will retry per transaction")
            }
        }
        let state = State::open(config).await?;
        let rules =
            crate::pipeline::live::LivePipeline::new(build_pipeline(config, &hostname, &state)?);
        tracing::info!(ruleset = %rules.current().ruleset(), dir = ?config.rules.dir, "rules loaded");
        let shared = Arc::new(SessionShared::new(
            config,
            server_tls,
            upstream.clone(),
            rules.clone(),
        ));
        let addrs: Vec<SocketAddr> = config
            .server
            .listen
            .iter()
            .map(|a| {
                a.parse()
                    .map_err(|_| StartError::Config(format!("server.listen: {a:?} is not IP:port")))
            })
            .collect::<Result<_, _>>()?;
        let listeners = listener::bind(&addrs).map_err(StartError::Bind)?;
        let shutdown = Shutdown::new();
        let limits = Limits::with_rate(
            config.server.max_sessions,
            config.server.max_sessions_per_ip,
            config.server.max_new_sessions_per_ip_per_minute,
        );
        let trusted = Arc::new(
            crate::config::lists::parse(
                &config.server.proxy_trusted.join("\n"),
                "server.proxy_trusted",
                true,
            )
            .map_err(|e| StartError::Config(e.to_string()))?,
        );
        let mut bound = Vec::new();
        for (l, configured) in listeners.into_iter().zip(&config.server.listen) {
            let proxy = config
                .server
                .proxy_protocol
                .contains(configured)
                .then(|| trusted.clone());
            let addr = l.local_addr().map_err(StartError::Bind)?;
            tracing::info!(listen = %addr, hostname = %shared.hostname, upstream = %upstream.address, "listening");
            bound.push(addr);
            let Some(guard) = shutdown.guard() else {
                continue;
            };
            tokio::spawn(listener::accept_loop(
                l,
                shared.clone(),
                limits.clone(),
                shutdown.subscribe(),
                guard,
                proxy,
                config.tls.required_on.contains(configured),
            ));
        }
        crate::metrics::READINESS
            .listening
            .store(true, std::sync::atomic::Ordering::Relaxed);
        crate::metrics::READINESS
            .rules_loaded
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let metrics_addr = if config.metrics.listen.is_empty() {
            None
        } else {
            let addr: SocketAddr = config.metrics.listen.parse().map_err(|_| {
                StartError::Config(format!(
                    "metrics.listen: {:?} is not IP:port",
                    config.metrics.listen
                ))
            })?;
            let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                StartError::Bind(std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on {addr} for metrics: {e}"),
                ))
            })?;
            let bound = l.local_addr().map_err(StartError::Bind)?;
            tracing::info!(listen = %bound, "metrics and health endpoint");
            tokio::spawn(crate::metrics::serve(l, shutdown.subscribe()));
            Some(bound)
        };
        tokio::spawn(reprobe_upstream(upstream.clone(), shutdown.subscribe()));
        if let Some(model) = &state.model {
            model.watch(
                config.bayes.path.clone(),
                config.bayes.reload_interval.0,
                shutdown.subscribe(),
            );
        }
        tokio::spawn(reload::run(
            rules.clone(),
            config.clone(),
            hostname.clone(),
            state,
            config.rules.watch_interval.0,
            shutdown.subscribe(),
        ));
        Ok(Server {
            addrs: bound,
            metrics_addr,
            rules,
            shutdown,
            grace: config.server.shutdown_grace.0,
            upstream,
            server_cert,
        })
    }

    /// The certificate moat presents, when STARTTLS is configured; `reload()` on it reads
    /// the files again (SIGHUP).
    pub fn server_cert(&self) -> Option<&Arc<crate::net::tls::ServerCert>> {
        self.server_cert.as_ref()
    }

    /// The running ruleset and its reload counters; `reload()` asks for a reload (SIGHUP).
    pub fn rules(&self) -> &Arc<crate::pipeline::live::LivePipeline> {
        &self.rules
    }

    /// The metrics endpoint's address, when on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The upstream settings, with the capabilities learned so far.
    pub fn upstream(&self) -> &Arc<UpstreamSettings> {
        &self.upstream
    }

    /// Stops accepting, lets sessions in flight finish within the grace period; true when all
    /// finished in time.
    pub async fn shutdown(self) -> bool {
        self.shutdown.trigger();
        let clean = self.shutdown.drain(self.grace).await;
        self.upstream.close_pool().await;
        if clean {
            tracing::info!("all sessions finished; stopped");
        } else {
            tracing::warn!(grace = ?self.grace, "grace period over; remaining sessions dropped");
        }
        clean
    }
}

/// While the upstream is marked unreachable (start-up probe or a session failed to connect),
/// probes it every 10 s so /readyz recovers without waiting for mail. A reachable upstream is
/// not probed: sessions keep the flag current, and the MTA's log stays free of probe noise.
async fn reprobe_upstream(
    upstream: Arc<UpstreamSettings>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering;
    let ready = &crate::metrics::READINESS.upstream_ok;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
            _ = shutdown.changed() => return,
        }
        if !ready.load(Ordering::Relaxed) && Upstream::probe(&upstream).await.is_ok() {
            tracing::info!(upstream = %upstream.address, "upstream reachable again");
            ready.store(true, Ordering::Relaxed);
        }
    }
}
