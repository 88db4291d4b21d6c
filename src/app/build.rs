//! Building what a running moat is made of from a validated config: the pipeline (rules,
//! resolver, checks), the stores the checks remember in, and the upstream settings. Shared by
//! `serve`, its reloads and the offline commands, so all of them score alike.

use crate::config::Config;
use crate::dns::Dns;
use crate::pipeline::{AuthStep, Pipeline};
use crate::rules::RuleSet;
use crate::store::Store;
use crate::upstream::UpstreamSettings;
use std::sync::Arc;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A certificate or key could not be loaded.
    #[error("{0}")]
    Tls(#[from] crate::net::tls::TlsError),
    /// A listening socket could not be bound.
    #[error("{0}")]
    Bind(std::io::Error),
    /// A rule file is broken.
    #[error("{0}")]
    Rules(#[from] crate::rules::RulesError),
    /// The resolver could not be built.
    #[error("{0}")]
    Dns(#[from] crate::dns::DnsError),
    /// The state store could not be opened.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// Some other config value is unusable.
    #[error("{0}")]
    Config(String),
}

/// Builds the symbol table, the resolver, the checks and the pipeline from a validated config
/// (shared by `serve` and `check`, so both score alike).
pub fn build_pipeline(
    config: &Config,
    hostname: &str,
    state: &State,
) -> Result<Pipeline, StartError> {
    let rules = RuleSet::load(config.rules.dir.as_deref())?;
    assemble(
        config,
        hostname,
        state.store.as_ref(),
        state.model.as_ref(),
        rules,
    )
}

/// What the checks remember between messages, opened once per process: reloads rebuild the
/// checks around the same store and model.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Greylisting and rate limits.
    pub store: Option<Store>,
    /// The classifier's model.
    pub model: Option<crate::bayes::Model>,
}

impl State {
    /// Opens what `config` needs: the store when greylisting or a rate limit is on, the model
    /// when the classifier is on.
    pub async fn open(config: &Config) -> Result<State, StartError> {
        let store = if config.greylist.enabled || !config.ratelimit.is_empty() {
            let store = Store::open(&config.store).await?;
            tracing::info!(backend = store.backend(), "state store opened");
            Some(store)
        } else {
            None
        };
        let model = crate::bayes::Model::open(config)
            .await
            .map_err(|e| StartError::Config(e.to_string()))?;
        Ok(State { store, model })
    }
}

/// The pipeline for offline corpus work (`moat eval`): content rules, lists, MIME checks and
/// the classifier (`model`, when given). No DNS is asked (no blocklists, no sender
/// authentication, no greylisting or rate limits), so a run needs no network and scores the
/// same messages the same way every time.
pub fn build_offline_pipeline(
    config: &Config,
    model: Option<&crate::bayes::Model>,
) -> Result<Pipeline, StartError> {
    let mut rules = RuleSet::load(config.rules.dir.as_deref())?;
    rules.dnsbl.clear();
    let mut config = config.clone();
    config.auth.enabled = false;
    config.greylist.enabled = false;
    config.ratelimit.clear();
    assemble(&config, "offline.moat", None, model, rules)
}

fn assemble(
    config: &Config,
    hostname: &str,
    store: Option<&Store>,
    model: Option<&crate::bayes::Model>,
    rules: RuleSet,
) -> Result<Pipeline, StartError> {
    rules.symbols.require(&crate::checks::emitted_symbols())?;
    let dns = Dns::new(&config.dns, None)?;
    let auth = config.auth.enabled.then(|| AuthStep {
        dns: dns.clone(),
        host: hostname.to_string(),
        authserv_id: config.authserv_id(),
    });
    let checks = crate::checks::build(config, &rules, &dns, store, model);
    Ok(Pipeline::new(checks, config.verdict.stage_timeout.0, auth)
        .with_ruleset(rules.digest)
        .with_dns(dns))
}

/// How moat reaches the MTA, from `[upstream]` (shared by `serve` and quarantine release).
pub fn upstream_settings(config: &Config) -> Result<Arc<UpstreamSettings>, StartError> {
    let client_tls = if config.upstream.starttls {
        Some(crate::net::tls::client_config(
            config.upstream.tls_ca.as_deref(),
            config.upstream.tls_verify,
        )?)
    } else {
        None
    };
    let helo = config
        .upstream
        .helo_name
        .clone()
        .unwrap_or_else(|| config.hostname());
    Ok(Arc::new(
        UpstreamSettings::new(&config.upstream, helo, client_tls).map_err(StartError::Config)?,
    ))
}
