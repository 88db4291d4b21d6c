//! ARC (RFC 8617) at DATA: the chain-of-custody result as a symbol. Trusted sealers are
//! applied by the DMARC check, which is the result they may override.

use crate::auth::Outcome;
use crate::pipeline::{Context, Stage, StageCheck, Symbol};
use crate::rules::SymbolTable;
use std::sync::Arc;

/// Symbols this check emits.
pub const SYMBOLS: &[&str] = &[
    "ARC_ALLOW",
    "ARC_REJECT",
    "ARC_NONE",
    "ARC_TEMPERROR",
    "ARC_PERMERROR",
];

/// The ARC check.
pub struct ArcCheck {
    table: Arc<SymbolTable>,
}

impl ArcCheck {
    /// A check scoring from `table`.
    pub fn new(table: Arc<SymbolTable>) -> Self {
        ArcCheck { table }
    }
}

impl StageCheck for ArcCheck {
    const NAME: &'static str = "arc";
    const STAGE: Stage = Stage::Data;

    async fn check(&self, ctx: &Context<'_>) -> Vec<Symbol> {
        let Some(m) = &ctx.auth.message else {
            return Vec::new();
        };
        let name = match m.arc.outcome {
            Outcome::Pass => "ARC_ALLOW",
            Outcome::None => "ARC_NONE",
            Outcome::TempError => "ARC_TEMPERROR",
            Outcome::PermError => "ARC_PERMERROR",
            Outcome::Fail | Outcome::Neutral | Outcome::SoftFail => "ARC_REJECT",
        };
        let detail = match (&m.arc.last_sealer, &m.arc.detail) {
            (Some(s), Some(d)) => Some(format!("{s}: {d}")),
            (Some(s), None) => Some(s.clone()),
            (None, d) => d.clone(),
        };
        vec![Symbol::new(&self.table, name, Stage::Data, detail)]
    }
}
