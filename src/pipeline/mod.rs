//! The check pipeline: the `Check` trait, the SMTP stages, and `Pipeline::run`, which runs the
//! checks of one stage concurrently under a deadline and collects their symbols.
//!
//! The pipeline never imports `checks/`: the checks are built once (`checks::build`) and handed
//! in, so adding a check never touches this file or the session.

pub mod context;
pub(crate) mod driver;
pub mod envelope;
pub(crate) mod live;
pub(crate) mod timings;

pub use crate::verdict::card::{Action, Forced, ScoreCard, Stage, Symbol};
pub use context::{Context, MessageInput};

use crate::auth::{self, AuthFacts, SpfInput};
use crate::dns::Dns;
use crate::pipeline::envelope::Envelope;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The boxed future a check returns (object-safe without an async-trait macro).
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Vec<Symbol>> + Send + 'a>>;

/// One check: a named plug-in that adds symbols at one stage.
pub trait Check: Send + Sync {
    /// The check's name, for logs and metrics.
    fn name(&self) -> &'static str;
    /// The stage the check runs at.
    fn stage(&self) -> Stage;
    /// Runs the check; expected conditions (a DNS timeout, a fail) are symbols, not errors.
    fn run<'a>(&'a self, ctx: &'a Context<'a>) -> CheckFuture<'a>;
}

/// A check with a fixed name and stage, written as an `async fn`; every one is a [`Check`].
/// (A check whose stage depends on its configuration implements [`Check`] itself.)
pub trait StageCheck: Send + Sync {
    /// The check's name, for logs and metrics.
    const NAME: &'static str;
    /// The stage the check runs at.
    const STAGE: Stage;
    /// The symbols for `ctx`; expected conditions (a DNS timeout, a fail) are symbols.
    fn check<'a>(&'a self, ctx: &'a Context<'a>) -> impl Future<Output = Vec<Symbol>> + Send + 'a;
}

impl<T: StageCheck> Check for T {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn stage(&self) -> Stage {
        T::STAGE
    }

    fn run<'a>(&'a self, ctx: &'a Context<'a>) -> CheckFuture<'a> {
        Box::pin(self.check(ctx))
    }
}

/// The result of running one stage.
#[derive(Debug, Default)]
pub struct StageOutcome {
    /// Symbols from all checks of the stage.
    pub symbols: Vec<Symbol>,
    /// Names of checks that missed the stage deadline (they add nothing).
    pub timed_out: Vec<&'static str>,
}

/// What the session hands the pipeline for one stage.
#[derive(Debug, Clone, Copy)]
pub struct StageInput<'a> {
    /// The stage to run.
    pub stage: Stage,
    /// The envelope so far.
    pub envelope: &'a Envelope,
    /// The RCPT being checked, at the rcpt stage.
    pub recipient: Option<&'a str>,
    /// The message, at the data stage.
    pub message: Option<MessageInput<'a>>,
    /// The score of the symbols of the earlier stages (and the accepted recipients).
    pub score: f64,
}

/// The sender-authentication step the pipeline runs before the checks of a stage.
#[derive(Debug, Clone)]
pub struct AuthStep {
    /// The shared resolver.
    pub dns: Dns,
    /// moat's host name (SPF's `%{r}` macro).
    pub host: String,
    /// The authserv-id of Authentication-Results.
    pub authserv_id: String,
}

/// All checks, grouped by the stage they run at, and the authentication step they read.
pub struct Pipeline {
    checks: Vec<Arc<dyn Check>>,
    deadline: Duration,
    auth: Option<AuthStep>,
    ruleset: String,
    dns: Option<crate::dns::Dns>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.checks.iter().map(|c| c.name()).collect();
        f.debug_struct("Pipeline")
            .field("checks", &names)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Pipeline {
    /// A pipeline of the given checks; each stage must finish within `deadline`. With `auth`,
    /// SPF runs at the mail stage and DKIM/ARC/DMARC at the data stage, before the checks.
    pub fn new(checks: Vec<Arc<dyn Check>>, deadline: Duration, auth: Option<AuthStep>) -> Self {
        Pipeline {
            checks,
            deadline,
            auth,
            ruleset: String::new(),
            dns: None,
        }
    }

    /// Notes the resolver the checks use (records read TXT texts back from its cache).
    pub fn with_dns(mut self, dns: crate::dns::Dns) -> Self {
        self.dns = Some(dns);
        self
    }

    /// The resolver the checks use, if any.
    pub fn dns(&self) -> Option<&crate::dns::Dns> {
        self.dns.as_ref()
    }

    /// Labels the pipeline with the digest of the ruleset it was built from.
    pub fn with_ruleset(mut self, digest: String) -> Self {
        self.ruleset = digest;
        self
    }

    /// The digest of the ruleset this pipeline was built from (empty if unknown).
    pub fn ruleset(&self) -> &str {
        &self.ruleset
    }

    /// True when nothing runs at `stage` (the session can skip building a context).
    pub fn is_empty_at(&self, stage: Stage) -> bool {
        let auth_stage =
            self.auth.is_some() && matches!(stage, Stage::Connect | Stage::Mail | Stage::Data);
        !auth_stage && !self.checks.iter().any(|c| c.stage() == stage)
    }

    /// Runs a stage: first the authentication step that belongs to it (its facts go into
    /// `facts`), then the stage's checks.
    pub async fn run(&self, input: StageInput<'_>, facts: &mut AuthFacts) -> StageOutcome {
        // One budget for the whole stage, authentication step and checks together: a dead
        // resolver costs the stage its budget once, not a timeout per query or per step.
        let until = tokio::time::Instant::now() + self.deadline;
        let mut exhausted = false;
        if let Some(step) = &self.auth {
            exhausted = !self.authenticate(step, &input, facts, until).await;
        }
        let ctx = Context {
            stage: input.stage,
            envelope: input.envelope,
            recipient: input.recipient,
            message: input.message,
            auth: facts,
            score: input.score,
        };
        let outcome = self.run_checks_until(&ctx, until).await;
        if exhausted || !outcome.timed_out.is_empty() {
            crate::metrics::METRICS
                .stage_budget_exhausted
                .with_label_values(&[input.stage.as_str()])
                .inc();
        }
        outcome
    }

    /// SPF at MAIL, DKIM/ARC/DMARC at DATA, within the stage's budget; running out is a
    /// temperror, never a silent pass. False when the budget ran out.
    async fn authenticate(
        &self,
        step: &AuthStep,
        input: &StageInput<'_>,
        facts: &mut AuthFacts,
        until: tokio::time::Instant,
    ) -> bool {
        let env = input.envelope;
        match (input.stage, &input.message) {
            (Stage::Connect, _) if !env.client.ip().is_unspecified() => {
                let checked =
                    tokio::time::timeout_at(until, auth::check_iprev(&step.dns, env.client.ip()))
                        .await;
                let done = checked.is_ok();
                facts.iprev = checked.ok();
                done
            }
            (Stage::Mail, _) => {
                let (Some(helo), Some(sender)) = (env.helo.as_deref(), env.sender.as_deref())
                else {
                    return true;
                };
                let spf_input = SpfInput {
                    ip: env.client.ip(),
                    helo,
                    sender,
                    host: &step.host,
                };
                let (checked, late) =
                    auth::spf::check_spf_until(&step.dns, &spf_input, until).await;
                if late {
                    tracing::warn!(
                        stage = "mail",
                        "SPF missed the stage deadline; the unfinished identity counts as temperror"
                    );
                }
                facts.spf = Some(checked);
                !late
            }
            (Stage::Data, Some(m)) => {
                // `moat check` without --client-ip has no client to name.
                let client = Some(env.client.ip()).filter(|ip| !ip.is_unspecified());
                let checked = tokio::time::timeout_at(
                    until,
                    auth::check_message(&step.dns, m.raw, facts, client, &step.authserv_id),
                )
                .await;
                let done = checked.is_ok();
                facts.message = Some(checked.unwrap_or_else(|_| {
                    tracing::warn!(
                        stage = "data",
                        "DKIM/ARC/DMARC missed the stage deadline; counted as temperror"
                    );
                    auth::MessageAuth::temperror(
                        &step.authserv_id,
                        auth::author_of(m.raw),
                        "stage deadline exceeded",
                    )
                }));
                done
            }
            _ => true,
        }
    }

    /// Runs the checks of `ctx.stage` concurrently until `until`. A check still running then
    /// adds nothing: one dead DNS server must not hold a session for timeout x attempts.
    async fn run_checks_until(
        &self,
        ctx: &Context<'_>,
        until: tokio::time::Instant,
    ) -> StageOutcome {
        let stage_checks: Vec<_> = self
            .checks
            .iter()
            .filter(|c| c.stage() == ctx.stage)
            .collect();
        if stage_checks.is_empty() {
            return StageOutcome::default();
        }
        let runs = stage_checks.iter().map(|check| async move {
            let started = std::time::Instant::now();
            let result = tokio::time::timeout_at(until, check.run(ctx)).await;
            crate::metrics::METRICS
                .check_duration
                .with_label_values(&[check.name()])
                .observe(started.elapsed().as_secs_f64());
            (check.name(), result)
        });
        let mut outcome = StageOutcome::default();
        for (name, result) in futures_util::future::join_all(runs).await {
            match result {
                Ok(symbols) => outcome.symbols.extend(symbols),
                Err(_) => {
                    tracing::warn!(
                        check = name,
                        stage = ctx.stage.as_str(),
                        "check missed the stage deadline"
                    );
                    outcome.timed_out.push(name);
                }
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Stage, f64, Duration);
    impl Check for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn stage(&self) -> Stage {
            self.0
        }
        fn run<'a>(&'a self, _ctx: &'a Context<'a>) -> CheckFuture<'a> {
            Box::pin(async move {
                tokio::time::sleep(self.2).await;
                vec![Symbol {
                    name: "TEST_SYM".into(),
                    score: self.1,
                    description: "test".into(),
                    stage: self.0,
                    detail: None,
                    forced: None,
                }]
            })
        }
    }

    #[tokio::test]
    async fn runs_only_the_stage_and_honours_the_deadline() {
        let p = Pipeline::new(
            vec![
                Arc::new(Fixed(Stage::Mail, 1.0, Duration::ZERO)),
                Arc::new(Fixed(Stage::Mail, 2.0, Duration::from_secs(60))),
                Arc::new(Fixed(Stage::Rcpt, 4.0, Duration::ZERO)),
            ],
            Duration::from_millis(50),
            None,
        );
        let env = Envelope::new(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let input = StageInput {
            stage: Stage::Mail,
            envelope: &env,
            recipient: None,
            message: None,
            score: 0.0,
        };
        let out = p.run(input, &mut AuthFacts::default()).await;
        assert_eq!(out.symbols.len(), 1);
        assert_eq!(out.symbols[0].score, 1.0);
        assert_eq!(out.timed_out, vec!["fixed"]);
        assert!(p.is_empty_at(Stage::Data));
    }
}
