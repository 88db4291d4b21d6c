//! Allow and deny lists (`rules/lists/`): a listed client IP (connect), HELO name (helo),
//! sender (mail) or recipient (rcpt). Deny refuses at that stage; allow makes the transaction
//! accepted whatever else scores, and the session skips the remaining checks.
//!
//! An allow entry never trusts an identity nobody checked: a HELO entry applies only when the
//! HELO is the client's verified reverse name (FCrDNS), and `allow_sender.txt` is applied at
//! end of data by `checks::allow_sender`, once SPF or DKIM authenticated the domain. Only
//! `allow_sender_unauthenticated.txt` allows a bare MAIL FROM, and says so in its name.

use crate::pipeline::{Action, Check, CheckFuture, Context, Stage, Symbol};
use crate::rules::lists::{ListTarget, Lists};
use crate::rules::SymbolTable;
use crate::smtp::reply;
use std::sync::Arc;

/// Symbols this check emits.
pub const SYMBOLS: &[&str] = &[
    "ALLOWLIST_IP",
    "ALLOWLIST_HELO",
    "ALLOWLIST_SENDER_UNAUTHENTICATED",
    "ALLOWLIST_RCPT",
    "DENYLIST_IP",
    "DENYLIST_HELO",
    "DENYLIST_SENDER",
    "DENYLIST_RCPT",
];

/// The lists check for one target.
pub struct ListCheck {
    target: ListTarget,
    lists: Arc<Lists>,
    table: Arc<SymbolTable>,
}

impl ListCheck {
    /// A check for `target` (none when both its lists are empty).
    pub fn new(target: ListTarget, lists: &Arc<Lists>, table: &Arc<SymbolTable>) -> Option<Self> {
        let (allow, deny) = lists.get(target)?;
        (!allow.is_empty() || !deny.is_empty()).then(|| ListCheck {
            target,
            lists: lists.clone(),
            table: table.clone(),
        })
    }
}

impl Check for ListCheck {
    fn name(&self) -> &'static str {
        match self.target {
            ListTarget::Ip => "lists_ip",
            ListTarget::Helo => "lists_helo",
            ListTarget::Sender => "lists_sender",
            ListTarget::SenderUnauthenticated => "lists_sender_unauthenticated",
            ListTarget::Rcpt => "lists_rcpt",
        }
    }

    fn stage(&self) -> Stage {
        match self.target {
            ListTarget::Ip => Stage::Connect,
            ListTarget::Helo => Stage::Helo,
            ListTarget::Sender | ListTarget::SenderUnauthenticated => Stage::Mail,
            ListTarget::Rcpt => Stage::Rcpt,
        }
    }

    fn run<'a>(&'a self, ctx: &'a Context<'a>) -> CheckFuture<'a> {
        Box::pin(async move {
            let Some((allow, deny)) = self.lists.get(self.target) else {
                return Vec::new();
            };
            let env = ctx.envelope;
            let (suffix, hit_deny, hit_allow) = match self.target {
                ListTarget::Ip => (
                    "IP",
                    deny.match_ip(env.client.ip()),
                    allow.match_ip(env.client.ip()),
                ),
                ListTarget::Helo => {
                    let h = env.helo.as_deref().unwrap_or("");
                    // A HELO name is a claim; it counts when reverse DNS confirms it.
                    let confirmed = ctx.auth.iprev.as_ref().is_some_and(|i| {
                        i.outcome == crate::auth::Outcome::Pass
                            && i.name.as_deref().is_some_and(|n| {
                                n.trim_end_matches('.')
                                    .eq_ignore_ascii_case(h.trim_end_matches('.'))
                            })
                    });
                    let allow = if confirmed { allow.match_name(h) } else { None };
                    ("HELO", deny.match_name(h), allow)
                }
                ListTarget::Sender => {
                    // Allow entries wait for authentication (checks::allow_sender).
                    let s = env.sender.as_deref().unwrap_or("");
                    ("SENDER", deny.match_name(s), None)
                }
                ListTarget::SenderUnauthenticated => {
                    let s = env.sender.as_deref().unwrap_or("");
                    ("SENDER_UNAUTHENTICATED", None, allow.match_name(s))
                }
                ListTarget::Rcpt => {
                    let r = ctx.recipient.unwrap_or("");
                    ("RCPT", deny.match_name(r), allow.match_name(r))
                }
            };
            let stage = self.stage();
            // Deny is checked first: an entry on both lists is refused.
            if let Some(entry) = hit_deny {
                let r = if stage == Stage::Connect {
                    reply::DENIED_CONNECT.reply()
                } else {
                    reply::DENIED.reply()
                };
                return vec![Symbol::new(
                    &self.table,
                    &format!("DENYLIST_{suffix}"),
                    stage,
                    Some(entry),
                )
                .absolute(Action::Reject, Some(r))];
            }
            if let Some(entry) = hit_allow {
                return vec![Symbol::new(
                    &self.table,
                    &format!("ALLOWLIST_{suffix}"),
                    stage,
                    Some(entry),
                )
                .absolute(Action::Accept, None)];
            }
            Vec::new()
        })
    }
}
