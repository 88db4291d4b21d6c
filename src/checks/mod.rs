//! The checks, one file each, all `impl Check`. `build` is the one place that knows them all.
//!
//! Checks see only `pipeline::Context`: no sockets, no session types.

pub mod arc;
pub mod content;
pub mod dkim;
pub mod dmarc;
pub mod dnsbl;
pub mod greylist;
pub mod lists;
pub mod rdns;
pub mod rules;
pub mod spf;

use crate::config::Config;
use crate::dns::Dns;
use crate::pipeline::Check;
use crate::rules::dnsbl::ListKind;
use crate::rules::lists::ListTarget;
use crate::rules::RuleSet;
use crate::store::Store;
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
        greylist::SYMBOLS,
    ]
    .concat()
}

/// Builds every enabled check from the config, the rule set and the shared resolver.
pub fn build(
    config: &Config,
    rules: &RuleSet,
    dns: &Dns,
    store: Option<&Store>,
) -> Vec<Arc<dyn Check>> {
    let table = &rules.symbols;
    let mut checks: Vec<Arc<dyn Check>> = Vec::new();
    for target in [
        ListTarget::Ip,
        ListTarget::Helo,
        ListTarget::Sender,
        ListTarget::Rcpt,
    ] {
        if let Some(c) = lists::ListCheck::new(target, &rules.lists, table) {
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
    checks
}
