//! Reverse DNS of the client at connect (FCrDNS: a PTR name that resolves back to the address,
//! RFC 8601 3 "iprev"). Optionally refuses clients without one (554 5.7.25, RFC 7372 3.3).

use crate::auth::Outcome;
use crate::config::AuthConfig;
use crate::pipeline::{Action, Context, Stage, StageCheck, Symbol};
use crate::rules::SymbolTable;
use crate::smtp::reply;
use std::sync::Arc;

/// Symbols this check emits.
pub const SYMBOLS: &[&str] = &["RDNS_PASS", "RDNS_NONE", "RDNS_MISMATCH", "RDNS_TEMPERROR"];

/// The reverse DNS check.
pub struct Rdns {
    table: Arc<SymbolTable>,
    reject: bool,
}

impl Rdns {
    /// Built from `[auth]`.
    pub fn new(table: Arc<SymbolTable>, config: &AuthConfig) -> Self {
        Rdns {
            table,
            reject: config.rdns_reject,
        }
    }
}

impl StageCheck for Rdns {
    const NAME: &'static str = "rdns";
    const STAGE: Stage = Stage::Connect;

    async fn check(&self, ctx: &Context<'_>) -> Vec<Symbol> {
        let Some(i) = &ctx.auth.iprev else {
            return Vec::new();
        };
        let detail = match (&i.name, i.ptr.is_empty(), &i.detail) {
            (Some(n), _, _) => Some(n.clone()),
            (None, false, _) => Some(format!("PTR {} does not resolve back", i.ptr.join(", "))),
            (None, true, d) => d.clone(),
        };
        let (name, refusable) = match i.outcome {
            Outcome::Pass => ("RDNS_PASS", false),
            Outcome::Fail => ("RDNS_MISMATCH", true),
            Outcome::TempError => ("RDNS_TEMPERROR", false),
            _ => ("RDNS_NONE", true),
        };
        let sym = Symbol::new(&self.table, name, Stage::Connect, detail);
        if refusable && self.reject {
            vec![sym.forcing(Action::Reject, Some(reply::RDNS_REJECT.reply()))]
        } else {
            vec![sym]
        }
    }
}
