//! The content rules of `rules/*.toml` at DATA: one scan per kind through the compiled
//! ruleset; every scoring rule that hits becomes a symbol whose detail is what matched.

use crate::pipeline::{Context, Stage, StageCheck, Symbol};
use crate::rules::engine::{CompiledRules, View};
use std::sync::Arc;

/// Messages above this size are scanned on the blocking pool, so a large message does not
/// hold up the async workers (DESIGN.md convention 6).
const BLOCKING_THRESHOLD: usize = 256 * 1024;

/// The rules check.
pub struct Rules {
    rules: Arc<CompiledRules>,
}

impl Rules {
    /// A check over a compiled ruleset (none when the ruleset is empty).
    pub fn new(rules: Arc<CompiledRules>) -> Option<Self> {
        (!rules.is_empty()).then_some(Rules { rules })
    }
}

impl StageCheck for Rules {
    const NAME: &'static str = "rules";
    const STAGE: Stage = Stage::Data;

    async fn check(&self, ctx: &Context<'_>) -> Vec<Symbol> {
        let Some(m) = ctx.message else {
            return Vec::new();
        };
        let env = ctx.envelope;
        let client_name = ctx
            .auth
            .iprev
            .as_ref()
            .and_then(|i| i.name.clone())
            .unwrap_or_default();
        let view = View {
            parsed: m.parsed,
            raw: m.raw,
            helo: env.helo.as_deref().unwrap_or(""),
            sender: env.sender.as_deref().unwrap_or(""),
            recipients: &env.recipients,
            client_name: &client_name,
        };
        let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread;
        let hits = if m.raw.len() > BLOCKING_THRESHOLD && multi_thread {
            // The parse borrows the message, so the scan runs in place but tells the
            // runtime it may block, letting other tasks move to other workers.
            tokio::task::block_in_place(|| self.rules.evaluate(&view))
        } else {
            self.rules.evaluate(&view)
        };
        hits.into_iter()
            .map(|h| Symbol {
                name: h.name,
                score: h.score,
                description: h.description.into(),
                stage: Stage::Data,
                detail: h.matched,
                forced: None,
            })
            .collect()
    }
}
