//! `rules/lists/allow_sender.txt` at end of data, for authenticated identities only (as
//! SpamAssassin's `whitelist_auth`): an entry matches the envelope sender when SPF passed for
//! its domain, or the author (From) or envelope sender when a passing DKIM signature's d= is
//! aligned with its domain. A forger who uses a listed address gets neither, so the entry does
//! nothing for them and every check, DMARC included, still applies.

use crate::auth::{dmarc::organizational, Outcome};
use crate::config::lists::NameList;
use crate::pipeline::{Action, Context, Stage, StageCheck, Symbol};
use crate::rules::lists::{ListTarget, Lists};
use crate::rules::SymbolTable;
use std::sync::Arc;

/// Symbols this check emits.
pub const SYMBOLS: &[&str] = &["ALLOWLIST_SENDER"];

/// The authenticated sender allow list.
pub struct AllowSender {
    lists: Arc<Lists>,
    table: Arc<SymbolTable>,
}

impl AllowSender {
    /// A check when `allow_sender.txt` has entries.
    pub fn new(lists: &Arc<Lists>, table: &Arc<SymbolTable>) -> Option<Self> {
        let (allow, _) = lists.get(ListTarget::Sender)?;
        (!allow.is_empty()).then(|| AllowSender {
            lists: lists.clone(),
            table: table.clone(),
        })
    }

    fn allow(&self) -> Option<&NameList> {
        self.lists.get(ListTarget::Sender).map(|(a, _)| a)
    }
}

fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or(address)
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

impl StageCheck for AllowSender {
    const NAME: &'static str = "allow_sender";
    const STAGE: Stage = Stage::Data;

    async fn check(&self, ctx: &Context<'_>) -> Vec<Symbol> {
        let Some(allow) = self.allow() else {
            return Vec::new();
        };
        let spf_domain = ctx
            .auth
            .spf
            .as_ref()
            .filter(|s| s.mail_from.outcome == Outcome::Pass)
            .map(|s| s.mail_from.domain.to_ascii_lowercase());
        let dkim_domains: Vec<String> = ctx
            .auth
            .message
            .iter()
            .flat_map(|m| m.dkim.iter())
            .filter(|d| d.outcome == Outcome::Pass)
            .map(|d| organizational(&d.domain))
            .collect();
        let sender = ctx.envelope.sender.as_deref().filter(|s| !s.is_empty());
        let author = ctx
            .auth
            .message
            .as_ref()
            .and_then(|m| m.author.address.as_deref());
        let dkim_for = |address: &str| dkim_domains.contains(&organizational(&domain_of(address)));
        let mut hits = Vec::new();
        if let Some(s) = sender {
            if spf_domain.as_deref() == Some(domain_of(s).as_str()) {
                hits.push((s, "SPF"));
            } else if dkim_for(s) {
                hits.push((s, "DKIM"));
            }
        }
        if let Some(a) = author {
            if dkim_for(a) {
                hits.push((a, "DKIM"));
            }
        }
        for (address, how) in hits {
            if let Some(entry) = allow.match_name(address) {
                return vec![Symbol::new(
                    &self.table,
                    "ALLOWLIST_SENDER",
                    Stage::Data,
                    Some(format!("{entry} ({address}, {how} pass)")),
                )
                .absolute(Action::Accept, None)];
            }
        }
        Vec::new()
    }
}
