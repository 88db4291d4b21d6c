//! DMARC (RFC 7489) at DATA: the result, the From header's shape, and the domain's policy as a
//! forced action (p=reject refuses, p=quarantine flags) unless a trusted ARC sealer vouches.

use crate::auth::{FromShape, Outcome};
use crate::config::{AuthConfig, DnsFailure, FromProblem};
use crate::pipeline::{Action, Context, Stage, StageCheck, Symbol};
use crate::rules::SymbolTable;
use crate::smtp::reply;
use std::sync::Arc;

/// Symbols this check emits.
pub const SYMBOLS: &[&str] = &[
    "DMARC_PASS",
    "DMARC_FAIL",
    "DMARC_POLICY_QUARANTINE",
    "DMARC_POLICY_REJECT",
    "DMARC_NONE",
    "DMARC_TEMPERROR",
    "DMARC_PERMERROR",
    "DMARC_ARC_OVERRIDE",
    "HDR_FROM_MISSING",
    "HDR_FROM_MULTIPLE",
    "HDR_FROM_MAILBOXES",
    "HDR_FROM_MALFORMED",
    "HDR_FROM_DISPLAY_ADDRESS",
];

/// The DMARC check.
pub struct Dmarc {
    table: Arc<SymbolTable>,
    enforce: bool,
    trusted_sealers: Vec<String>,
    dns_failure: DnsFailure,
    from_reject: Vec<FromProblem>,
}

impl Dmarc {
    /// Built from `[auth]`.
    pub fn new(table: Arc<SymbolTable>, config: &AuthConfig) -> Self {
        Dmarc {
            table,
            enforce: config.dmarc_enforce,
            trusted_sealers: config
                .arc_trusted_sealers
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            dns_failure: config.dns_failure,
            from_reject: config.from_reject.clone(),
        }
    }
}

impl StageCheck for Dmarc {
    const NAME: &'static str = "dmarc";
    const STAGE: Stage = Stage::Data;

    async fn check(&self, ctx: &Context<'_>) -> Vec<Symbol> {
        let Some(m) = &ctx.auth.message else {
            return Vec::new();
        };
        let t = &self.table;
        // RFC 5322 3.6: one From with one mailbox; anything else lets a forger show a
        // domain that DMARC never checked, so DMARC is not evaluated and the shape decides.
        let problem = match m.author.shape {
            FromShape::Single => None,
            FromShape::Missing => Some(("HDR_FROM_MISSING", FromProblem::Missing)),
            FromShape::Multiple => Some(("HDR_FROM_MULTIPLE", FromProblem::Multiple)),
            FromShape::Mailboxes => Some(("HDR_FROM_MAILBOXES", FromProblem::Mailboxes)),
            FromShape::Malformed => Some(("HDR_FROM_MALFORMED", FromProblem::Malformed)),
        };
        if let Some((name, kind)) = problem {
            let why = m.author.detail.clone().unwrap_or_default();
            let s = Symbol::new(t, name, Stage::Data, Some(why.clone()));
            return if self.from_reject.contains(&kind) {
                vec![s.forcing(Action::Reject, Some(reply::FROM_REJECT.with_detail(&why)))]
            } else {
                vec![s]
            };
        }
        let mut extra = Vec::new();
        if let (Some(shown), Some(hidden)) = (&m.author.address, &m.author.hidden_address) {
            extra.push(Symbol::new(
                t,
                "HDR_FROM_DISPLAY_ADDRESS",
                Stage::Data,
                Some(format!("shows {shown}, sent as {hidden}")),
            ));
        }
        let d = &m.dmarc;
        let detail = Some(match &d.detail {
            Some(why) => format!("{} p={} ({why})", d.domain, d.policy),
            None => format!("{} p={}", d.domain, d.policy),
        });
        let sym = |name: &str| Symbol::new(t, name, Stage::Data, detail.clone());
        let mut out = match d.outcome {
            Outcome::Pass => vec![sym("DMARC_PASS")],
            Outcome::None => vec![sym("DMARC_NONE")],
            Outcome::PermError => vec![sym("DMARC_PERMERROR")],
            Outcome::TempError => {
                let s = sym("DMARC_TEMPERROR");
                if self.dns_failure == DnsFailure::Tempfail {
                    vec![s.forcing(Action::Tempfail, Some(reply::AUTH_DNS_TEMPFAIL.reply()))]
                } else {
                    vec![s]
                }
            }
            _ => {
                // RFC 7489 6.7 / RFC 8617 7.2: a receiver may trust an intermediary's ARC
                // chain to forgive a DMARC failure it caused (mailing lists).
                let vouched = m.arc.outcome == Outcome::Pass
                    && m.arc
                        .last_sealer
                        .as_ref()
                        .is_some_and(|s| self.trusted_sealers.contains(&s.to_ascii_lowercase()));
                if vouched {
                    let sealer = m.arc.last_sealer.clone();
                    vec![Symbol::new(t, "DMARC_ARC_OVERRIDE", Stage::Data, sealer)]
                } else {
                    match d.policy {
                        "reject" => {
                            let s = sym("DMARC_POLICY_REJECT");
                            if self.enforce {
                                vec![s.forcing(
                                    Action::Reject,
                                    Some(reply::DMARC_REJECT.with_detail(&d.domain)),
                                )]
                            } else {
                                vec![s]
                            }
                        }
                        "quarantine" => {
                            let s = sym("DMARC_POLICY_QUARANTINE");
                            if self.enforce {
                                vec![s.forcing(Action::AddHeader, None)]
                            } else {
                                vec![s]
                            }
                        }
                        _ => vec![sym("DMARC_FAIL")],
                    }
                }
            }
        };
        out.extend(extra);
        out
    }
}
