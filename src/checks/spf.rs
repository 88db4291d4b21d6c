//! SPF (RFC 7208) at MAIL FROM: symbols for the envelope sender and the HELO identity, and the
//! optional refusal on fail. The lookups themselves ran in the pipeline's auth step.

use crate::auth::Outcome;
use crate::config::{AuthConfig, DnsFailure};
use crate::pipeline::{Action, Context, Stage, StageCheck, Symbol};
use crate::rules::SymbolTable;
use crate::smtp::reply;
use std::sync::Arc;

/// Symbols this check emits.
pub const SYMBOLS: &[&str] = &[
    "SPF_PASS",
    "SPF_FAIL",
    "SPF_SOFTFAIL",
    "SPF_NEUTRAL",
    "SPF_NONE",
    "SPF_TEMPERROR",
    "SPF_PERMERROR",
    "SPF_HELO_PASS",
    "SPF_HELO_FAIL",
    "SPF_HELO_SOFTFAIL",
    "SPF_HELO_NEUTRAL",
    "SPF_HELO_NONE",
    "SPF_HELO_TEMPERROR",
    "SPF_HELO_PERMERROR",
];

/// The SPF check.
pub struct Spf {
    table: Arc<SymbolTable>,
    reject_on_fail: bool,
    dns_failure: DnsFailure,
}

impl Spf {
    /// Built from `[auth]`.
    pub fn new(table: Arc<SymbolTable>, config: &AuthConfig) -> Self {
        Spf {
            table,
            reject_on_fail: config.spf_reject_on_fail,
            dns_failure: config.dns_failure,
        }
    }
}

fn suffix(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "PASS",
        Outcome::Fail => "FAIL",
        Outcome::SoftFail => "SOFTFAIL",
        Outcome::Neutral => "NEUTRAL",
        Outcome::None => "NONE",
        Outcome::TempError => "TEMPERROR",
        Outcome::PermError => "PERMERROR",
    }
}

impl StageCheck for Spf {
    const NAME: &'static str = "spf";
    const STAGE: Stage = Stage::Mail;

    async fn check(&self, ctx: &Context<'_>) -> Vec<Symbol> {
        let Some(spf) = &ctx.auth.spf else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(2);
        let m = &spf.mail_from;
        let detail = match &m.explanation {
            Some(e) => format!("{}: {e}", m.domain),
            None => m.domain.clone(),
        };
        let mut sym = Symbol::new(
            &self.table,
            &format!("SPF_{}", suffix(m.outcome)),
            Stage::Mail,
            Some(detail),
        );
        if m.outcome == Outcome::Fail && self.reject_on_fail {
            sym = sym.forcing(
                Action::Reject,
                Some(reply::SPF_REJECT.with_detail(&m.domain)),
            );
        }
        if m.outcome == Outcome::TempError && self.dns_failure == DnsFailure::Tempfail {
            sym = sym.forcing(Action::Tempfail, Some(reply::AUTH_DNS_TEMPFAIL.reply()));
        }
        out.push(sym);
        let h = &spf.helo;
        out.push(Symbol::new(
            &self.table,
            &format!("SPF_HELO_{}", suffix(h.outcome)),
            Stage::Mail,
            Some(h.domain.clone()),
        ));
        out
    }
}
