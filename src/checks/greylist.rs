//! Greylisting at RCPT (the idea of Harris, 2003; postgrey's behaviour): the first time a
//! (client, sender, recipient) triplet is seen, the recipient is deferred with 451 4.7.1; a
//! real MTA retries after the delay and passes, most spamware never does.
//!
//! Only suspicious mail is greylisted (score so far at least `min_score`), and allow-listed
//! clients never reach the RCPT checks. The client side of the triplet is the sender's
//! SPF-authorized domain when SPF passed, else the client's /24 or /64 network: large senders
//! retry from another address of their pool, which would restart a per-address greylist
//! (postgrey's well-known problem).

use crate::auth::Outcome;
use crate::config::{GreylistConfig, StoreFailure};
use crate::pipeline::{Action, Context, Stage, StageCheck, Symbol};
use crate::rules::SymbolTable;
use crate::smtp::reply::{Enhanced, Reply};
use crate::store::{Store, StoreError};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Symbols this check emits.
pub const SYMBOLS: &[&str] = &["GREYLIST", "GREYLIST_PASS", "STORE_FAIL"];

/// Value of a triplet that passed (later mail passes at once until it expires).
const PASSED: &[u8] = b"ok";

/// The greylisting check.
pub struct Greylist {
    table: Arc<SymbolTable>,
    store: Store,
    config: GreylistConfig,
    on_failure: StoreFailure,
}

impl Greylist {
    /// Built from `[greylist]` and the shared store.
    pub fn new(
        table: Arc<SymbolTable>,
        store: Store,
        config: &GreylistConfig,
        on_failure: StoreFailure,
    ) -> Self {
        Greylist {
            table,
            store,
            config: config.clone(),
            on_failure,
        }
    }

    /// The client side of the triplet: the SPF-authorized domain, else the network.
    fn client_key(&self, ctx: &Context<'_>) -> String {
        if let Some(spf) = &ctx.auth.spf {
            if spf.mail_from.outcome == Outcome::Pass && !spf.mail_from.domain.is_empty() {
                return format!("spf:{}", spf.mail_from.domain.to_ascii_lowercase());
            }
        }
        format!("net:{}", network(ctx.envelope.client.ip(), &self.config))
    }

    fn symbol(&self, name: &str, detail: String) -> Symbol {
        Symbol::new(&self.table, name, Stage::Rcpt, Some(detail))
    }

    fn deferred(&self, wait: Duration) -> Symbol {
        let secs = (wait.as_millis() as u64).div_ceil(1000).max(1);
        self.symbol("GREYLIST", format!("retry in {secs}s"))
            .forcing(
                Action::Tempfail,
                Some(Reply::new(
                    451,
                    Enhanced(4, 7, 1),
                    format!("Greylisted, please try again in {secs}s"),
                )),
            )
    }

    async fn decide(&self, ctx: &Context<'_>, rcpt: &str) -> Result<Symbol, StoreError> {
        let sender = ctx.envelope.sender.as_deref().unwrap_or("");
        let client = self.client_key(ctx);
        let key = format!(
            "gl:t:{client}:{}:{}",
            sender.to_ascii_lowercase(),
            rcpt.to_ascii_lowercase()
        );
        let history = format!("gl:good:{client}");
        let trusted = self.config.trust_spf_history && client.starts_with("spf:");
        if trusted && self.store.get(&history).await?.is_some() {
            crate::metrics::METRICS
                .greylist
                .with_label_values(&["known"])
                .inc();
            return Ok(self.symbol("GREYLIST_PASS", format!("{client} has passed before")));
        }
        // Milliseconds: whole seconds would let a retry 1 ms after a second boundary count
        // as a second later.
        let now = crate::store::unix_millis();
        let delay = self.config.delay.0;
        let seen = self.store.get(&key).await?;
        let count = |result: &str| {
            crate::metrics::METRICS
                .greylist
                .with_label_values(&[result])
                .inc()
        };
        match seen {
            Some(v) if v == PASSED => {
                count("known");
                Ok(self.symbol("GREYLIST_PASS", "known triplet".into()))
            }
            Some(v) => {
                let first: u64 = std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(now);
                let waited = Duration::from_millis(now.saturating_sub(first));
                if waited >= delay {
                    self.store.set(&key, PASSED, self.config.lifetime.0).await?;
                    if trusted {
                        self.store
                            .set(&history, PASSED, self.config.lifetime.0)
                            .await?;
                    }
                    count("passed");
                    Ok(self.symbol(
                        "GREYLIST_PASS",
                        format!("retried after {}s", waited.as_secs()),
                    ))
                } else {
                    count("deferred");
                    Ok(self.deferred(delay - waited))
                }
            }
            None => {
                let keep = delay + self.config.retry_window.0;
                self.store
                    .set(&key, now.to_string().as_bytes(), keep)
                    .await?;
                count("deferred");
                Ok(self.deferred(delay))
            }
        }
    }
}

/// The client's network under the configured prefix, e.g. `192.0.2.0/24`.
fn network(ip: IpAddr, config: &GreylistConfig) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(config.ipv4_prefix.min(32));
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            format!("{}/{bits}", std::net::Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let bits = u32::from(config.ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            format!("{}/{bits}", std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

impl StageCheck for Greylist {
    const NAME: &'static str = "greylist";
    const STAGE: Stage = Stage::Rcpt;

    async fn check(&self, ctx: &Context<'_>) -> Vec<Symbol> {
        let Some(rcpt) = ctx.recipient else {
            return Vec::new();
        };
        if ctx.score < self.config.min_score {
            return Vec::new();
        }
        match self.decide(ctx, rcpt).await {
            Ok(s) => vec![s],
            Err(e) => vec![super::store_failed(
                &self.table,
                &self.store,
                self.on_failure,
                "greylist",
                &e,
            )],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_by_prefix() {
        let c = GreylistConfig::default();
        assert_eq!(network("192.0.2.77".parse().unwrap(), &c), "192.0.2.0/24");
        assert_eq!(
            network("2001:db8:1:2:3:4:5:6".parse().unwrap(), &c),
            "2001:db8:1:2::/64"
        );
        let all = GreylistConfig {
            ipv4_prefix: 32,
            ipv6_prefix: 0,
            ..c
        };
        assert_eq!(
            network("192.0.2.77".parse().unwrap(), &all),
            "192.0.2.77/32"
        );
        assert_eq!(network("2001:db8::1".parse().unwrap(), &all), "::/0");
    }
}
