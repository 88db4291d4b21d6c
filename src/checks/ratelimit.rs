//! Rate limits at RCPT: each `[[ratelimit]]` counts recipients per client IP, sender, sender
//! domain or recipient over a sliding window in the store (shared by every instance when the
//! store is Redis). Past the limit the recipient gets 452 4.7.28 (or 451 4.7.1) and the symbol
//! RATELIMIT; the client may send the rest later. Like Postfix's
//! smtpd_client_recipient_rate_limit, but by more than the client and across instances.

use crate::config::{RateKey, RateLimitConfig, RateReply, StoreFailure};
use crate::pipeline::{Action, Context, Stage, StageCheck, Symbol};
use crate::rules::SymbolTable;
use crate::smtp::reply::{Enhanced, Reply};
use crate::store::Store;
use std::sync::Arc;

/// Symbols this check emits.
pub const SYMBOLS: &[&str] = &["RATELIMIT", "STORE_FAIL"];

/// Every configured rate limit.
pub struct RateLimits {
    table: Arc<SymbolTable>,
    store: Store,
    limits: Vec<RateLimitConfig>,
    on_failure: StoreFailure,
}

impl RateLimits {
    /// Built from the `[[ratelimit]]` tables and the shared store.
    pub fn new(
        table: Arc<SymbolTable>,
        store: Store,
        limits: &[RateLimitConfig],
        on_failure: StoreFailure,
    ) -> Self {
        RateLimits {
            table,
            store,
            limits: limits.to_vec(),
            on_failure,
        }
    }
}

/// The value a limit counts by, lowercased (`<>` and a sender without domain count as "").
fn subject(key: RateKey, ctx: &Context<'_>, rcpt: &str) -> String {
    let sender = ctx.envelope.sender.as_deref().unwrap_or("");
    match key {
        RateKey::Ip => ctx.envelope.client.ip().to_string(),
        RateKey::Sender => sender.to_ascii_lowercase(),
        RateKey::SenderDomain => sender
            .rsplit_once('@')
            .map_or("", |(_, d)| d)
            .to_ascii_lowercase(),
        RateKey::Recipient => rcpt.to_ascii_lowercase(),
    }
}

fn exceeded(table: &SymbolTable, limit: &RateLimitConfig, count: f64) -> Symbol {
    let detail = format!(
        "{}: {:.0} recipients in {}s, limit {}",
        limit.name,
        count,
        limit.window.0.as_secs(),
        limit.limit
    );
    let reply = match limit.reply {
        RateReply::TooMany => Reply::new(
            452,
            Enhanced(4, 7, 28),
            "Too many recipients for now, please try the rest later",
        ),
        RateReply::Later => Reply::new(
            451,
            Enhanced(4, 7, 1),
            "Rate limit exceeded, please try again later",
        ),
    };
    Symbol::new(table, "RATELIMIT", Stage::Rcpt, Some(detail))
        .forcing(Action::Tempfail, Some(reply))
}

impl StageCheck for RateLimits {
    const NAME: &'static str = "ratelimit";
    const STAGE: Stage = Stage::Rcpt;

    async fn check(&self, ctx: &Context<'_>) -> Vec<Symbol> {
        let Some(rcpt) = ctx.recipient else {
            return Vec::new();
        };
        // Every limit counts the recipient, also after one is exceeded, so each keeps an
        // honest count; the first exceeded one answers.
        let mut over = None;
        for limit in &self.limits {
            let key = format!("rl:{}:{}", limit.name, subject(limit.key, ctx, rcpt));
            match self.store.hit(&key, limit.window.0).await {
                Ok(n) if n > limit.limit as f64 && over.is_none() => {
                    crate::metrics::METRICS
                        .ratelimited
                        .with_label_values(&[&limit.name])
                        .inc();
                    over = Some(exceeded(&self.table, limit, n));
                }
                Ok(_) => {}
                Err(e) => {
                    return vec![super::store_failed(
                        &self.table,
                        &self.store,
                        self.on_failure,
                        "ratelimit",
                        &e,
                    )]
                }
            }
        }
        over.into_iter().collect()
    }
}
