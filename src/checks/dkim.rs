//! DKIM (RFC 6376) at DATA: one symbol per kind of result over all signatures. A DNS failure
//! defers the message only when nothing else authenticated it.

use crate::auth::Outcome;
use crate::config::{AuthConfig, DnsFailure};
use crate::pipeline::{Action, Context, Stage, StageCheck, Symbol};
use crate::rules::SymbolTable;
use crate::smtp::reply;
use std::sync::Arc;

/// Symbols this check emits.
pub const SYMBOLS: &[&str] = &[
    "DKIM_ALLOW",
    "DKIM_REJECT",
    "DKIM_TEMPERROR",
    "DKIM_PERMERROR",
    "DKIM_NONE",
];

/// The DKIM check.
pub struct Dkim {
    table: Arc<SymbolTable>,
    dns_failure: DnsFailure,
    reject_on_fail: bool,
}

impl Dkim {
    /// Built from `[auth]`.
    pub fn new(table: Arc<SymbolTable>, config: &AuthConfig) -> Self {
        Dkim {
            table,
            dns_failure: config.dns_failure,
            reject_on_fail: config.dkim_reject_on_fail,
        }
    }
}

impl StageCheck for Dkim {
    const NAME: &'static str = "dkim";
    const STAGE: Stage = Stage::Data;

    async fn check(&self, ctx: &Context<'_>) -> Vec<Symbol> {
        let Some(m) = &ctx.auth.message else {
            return Vec::new();
        };
        if m.dkim.is_empty() {
            return vec![Symbol::new(&self.table, "DKIM_NONE", Stage::Data, None)];
        }
        let mut out: Vec<Symbol> = Vec::new();
        for (name, kinds) in [
            ("DKIM_ALLOW", &[Outcome::Pass][..]),
            // RFC 6376 6.3: a body hash mismatch or bad signature; mail-auth calls the
            // former neutral, admins see both as a signature that did not verify.
            ("DKIM_REJECT", &[Outcome::Fail, Outcome::Neutral][..]),
            ("DKIM_TEMPERROR", &[Outcome::TempError][..]),
            ("DKIM_PERMERROR", &[Outcome::PermError][..]),
        ] {
            let hits: Vec<String> = m
                .dkim
                .iter()
                .filter(|d| kinds.contains(&d.outcome))
                .map(|d| match &d.detail {
                    Some(why) => format!("{} ({why})", d.domain),
                    None => d.domain.clone(),
                })
                .collect();
            if !hits.is_empty() {
                out.push(Symbol::new(
                    &self.table,
                    name,
                    Stage::Data,
                    Some(hits.join(", ")),
                ));
            }
        }
        let any_pass = m.dkim.iter().any(|d| d.outcome == Outcome::Pass);
        let authenticated = any_pass || m.dmarc.outcome == Outcome::Pass;
        let force =
            |out: &mut Vec<Symbol>, name: &str, action: Action, r: crate::smtp::reply::Reply| {
                if let Some(sym) = out.iter_mut().find(|s| s.name == name) {
                    *sym = sym.clone().forcing(action, Some(r));
                }
            };
        if !authenticated && self.dns_failure == DnsFailure::Tempfail {
            force(
                &mut out,
                "DKIM_TEMPERROR",
                Action::Tempfail,
                reply::AUTH_DNS_TEMPFAIL.reply(),
            );
        }
        // RFC 7372 3.1: 5.7.20, no passing DKIM signature was found.
        if !any_pass && self.reject_on_fail {
            force(
                &mut out,
                "DKIM_REJECT",
                Action::Reject,
                reply::DKIM_REJECT.reply(),
            );
        }
        out
    }
}
