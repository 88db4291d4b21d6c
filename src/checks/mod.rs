//! The checks, one file each, all `impl Check`. `build` is the one place that knows them all.
//!
//! Checks see only `pipeline::Context`: no sockets, no session types.

pub mod allow_sender;
pub mod arc;
pub mod bayes;
pub mod content;
pub mod dkim;
pub mod dmarc;
pub mod dnsbl;
pub mod greylist;
pub mod lists;
pub mod ratelimit;
pub mod rdns;
pub mod rules;
pub mod spf;

use crate::config::Config;
use crate::config::StoreFailure;
use crate::dns::Dns;
use crate::pipeline::Check;
use crate::pipeline::{Action, Stage, Symbol};
use crate::rules::dnsbl::ListKind;
use crate::rules::lists::ListTarget;
use crate::rules::RuleSet;
use crate::rules::SymbolTable;
use crate::smtp::reply::{Enhanced, Reply};
use crate::store::{Store, StoreError};
use std::sync::Arc;

/// Every symbol name moat's checks can emit; `rules/symbols.toml` must define them all.
pub fn emitted_symbols() -> Vec<&'static str> {
    [
        rdns::SYMBOLS,
        spf::SYMBOLS,
        dkim::SYMBOLS,
        arc::SYMBOLS,
        dmarc::SYMBOLS,
        content::SYMBOLS,
        lists::SYMBOLS,
        allow_sender::SYMBOLS,
        greylist::SYMBOLS,
        ratelimit::SYMBOLS,
        bayes::SYMBOLS,
    ]
    .concat()
}

/// The symbol for a store operation that failed: STORE_FAIL, which skips the check, or with
/// `store.on_failure = "tempfail"` defers with 451 4.3.0. A store failure never rejects.
pub(crate) fn store_failed(
    table: &SymbolTable,
    store: &Store,
    on_failure: StoreFailure,
    check: &'static str,
    error: &StoreError,
) -> Symbol {
    crate::metrics::METRICS
        .store_errors
        .with_label_values(&[store.backend()])
        .inc();
    tracing::warn!(check, backend = store.backend(), %error, "store failed; check skipped");
    let s = Symbol::new(
        table,
        "STORE_FAIL",
        Stage::Rcpt,
        Some(format!("{check}: {error}")),
    );
    match on_failure {
        StoreFailure::Skip => s,
        StoreFailure::Tempfail => s.forcing(
            Action::Tempfail,
            Some(Reply::new(
                451,
                Enhanced(4, 3, 0),
                "Temporary local problem, please try again later",
            )),
        ),
    }
}

/// Builds every enabled check from the config, the rule set and the shared resolver.
pub fn build(
    config: &Config,
    rules: &RuleSet,
    dns: &Dns,
    store: Option<&Store>,
    model: Option<&crate::bayes::Model>,
) -> Vec<Arc<dyn Check>> {
    let table = &rules.symbols;
    let mut checks: Vec<Arc<dyn Check>> = Vec::new();
    for target in [
        ListTarget::Ip,
        ListTarget::Helo,
        ListTarget::Sender,
        ListTarget::SenderUnauthenticated,
        ListTarget::Rcpt,
    ] {
        if let Some(c) = lists::ListCheck::new(target, &rules.lists, table) {
            checks.push(Arc::new(c));
        }
    }
    // It reads the authentication facts, so it only makes sense with them.
    if config.auth.enabled {
        if let Some(c) = allow_sender::AllowSender::new(&rules.lists, table) {
            checks.push(Arc::new(c));
        }
    }
    if let Some(c) = rules::Rules::new(rules.rules.clone()) {
        checks.push(Arc::new(c));
        checks.push(Arc::new(content::Content::new(table.clone())));
    }
    for kind in [
        ListKind::Ip,
        ListKind::Helo,
        ListKind::Sender,
        ListKind::From,
        ListKind::Uri,
    ] {
        if let Some(c) =
            dnsbl::Dnsbl::new(kind, &rules.dnsbl, dns.clone(), config.dns.list_timeout.0)
        {
            checks.push(Arc::new(c));
        }
    }
    if config.auth.enabled {
        checks.push(Arc::new(rdns::Rdns::new(table.clone(), &config.auth)));
        checks.push(Arc::new(spf::Spf::new(table.clone(), &config.auth)));
        checks.push(Arc::new(dkim::Dkim::new(table.clone(), &config.auth)));
        checks.push(Arc::new(arc::ArcCheck::new(table.clone())));
        checks.push(Arc::new(dmarc::Dmarc::new(table.clone(), &config.auth)));
    }
    // Without a store (`moat check`, or greylisting off) there is nothing to remember with.
    if let (true, Some(store)) = (config.greylist.enabled, store) {
        checks.push(Arc::new(greylist::Greylist::new(
            table.clone(),
            store.clone(),
            &config.greylist,
            config.store.on_failure,
        )));
    }
    if let (true, Some(model)) = (config.bayes.enabled, model) {
        checks.push(Arc::new(bayes::Bayes::new(
            table.clone(),
            model.clone(),
            &config.bayes,
            config.store.on_failure,
        )));
    }
    if let (false, Some(store)) = (config.ratelimit.is_empty(), store) {
        checks.push(Arc::new(ratelimit::RateLimits::new(
            table.clone(),
            store.clone(),
            &config.ratelimit,
            config.store.on_failure,
        )));
    }
    checks
}
