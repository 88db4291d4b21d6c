//! The statistical classifier at the data stage: the message's tokens against the learned
//! model, one symbol per probability band (scores in `rules/symbols.toml`). Silent until the
//! model has learned `bayes.min_spam` and `bayes.min_ham` messages, and in the middle band.

use crate::bayes::{self, Model};
use crate::config::{BayesConfig, StoreFailure};
use crate::pipeline::{Context, Stage, StageCheck, Symbol};
use crate::rules::SymbolTable;
use std::sync::Arc;

/// Symbols this check emits.
pub const SYMBOLS: &[&str] = &[
    "BAYES_HAM",
    "BAYES_HAM_LIKELY",
    "BAYES_SPAM_LIKELY",
    "BAYES_SPAM",
    "BAYES_SPAM_HIGH",
    "STORE_FAIL",
];

/// The band a probability falls in, if any: (symbol, lower bound).
pub fn band(p: f64) -> Option<&'static str> {
    Some(match p {
        p if p >= 0.99 => "BAYES_SPAM_HIGH",
        p if p >= 0.95 => "BAYES_SPAM",
        p if p >= 0.80 => "BAYES_SPAM_LIKELY",
        p if p <= 0.01 => "BAYES_HAM",
        p if p <= 0.20 => "BAYES_HAM_LIKELY",
        _ => return None,
    })
}

/// Clues named in a symbol's detail, per direction.
const CLUES_SHOWN: usize = 6;

/// The classifier check.
pub struct Bayes {
    table: Arc<SymbolTable>,
    model: Model,
    config: BayesConfig,
    on_failure: StoreFailure,
}

impl Bayes {
    /// A check scoring against `model`.
    pub fn new(
        table: Arc<SymbolTable>,
        model: Model,
        config: &BayesConfig,
        on_failure: StoreFailure,
    ) -> Self {
        Bayes {
            table,
            model,
            config: config.clone(),
            on_failure,
        }
    }
}

/// "p=0.998 from 87 tokens; spam: viagra 0.99, ...; ham: ..." for the detail and --explain.
pub fn describe(v: &bayes::Classification) -> String {
    let list = |spam: bool| -> String {
        v.clues
            .iter()
            .filter(|(_, p)| (*p > 0.5) == spam)
            .take(CLUES_SHOWN)
            .map(|(t, p)| format!("{t} {p:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "p={:.4} from {} tokens; spam: {}; ham: {}",
        v.probability,
        v.used,
        list(true),
        list(false)
    )
}

impl StageCheck for Bayes {
    const NAME: &'static str = "bayes";
    const STAGE: Stage = Stage::Data;

    async fn check(&self, ctx: &Context<'_>) -> Vec<Symbol> {
        let Some(message) = ctx.message else {
            return Vec::new();
        };
        let tokens = bayes::tokens::tokens(message.parsed);
        let counts = match self.model.counts(&tokens).await {
            Ok(c) => c,
            Err(e) => {
                if let Model::Store(store) = &self.model {
                    let mut s =
                        super::store_failed(&self.table, store, self.on_failure, "bayes", &e);
                    s.stage = Stage::Data;
                    return vec![s];
                }
                return Vec::new();
            }
        };
        if !bayes::trained(&counts, &self.config) {
            return Vec::new();
        }
        let verdict = bayes::classify(&counts, &tokens);
        crate::metrics::METRICS
            .bayes_probability
            .observe(verdict.probability);
        band(verdict.probability)
            .map(|name| Symbol::new(&self.table, name, Stage::Data, Some(describe(&verdict))))
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_cover_both_ends_and_leave_the_middle_silent() {
        assert_eq!(band(1.0), Some("BAYES_SPAM_HIGH"));
        assert_eq!(band(0.99), Some("BAYES_SPAM_HIGH"));
        assert_eq!(band(0.97), Some("BAYES_SPAM"));
        assert_eq!(band(0.85), Some("BAYES_SPAM_LIKELY"));
        assert_eq!(band(0.5), None);
        assert_eq!(band(0.15), Some("BAYES_HAM_LIKELY"));
        assert_eq!(band(0.0), Some("BAYES_HAM"));
    }
}
