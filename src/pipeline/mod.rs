//! The check pipeline: the `Check` trait, the SMTP stages, and `Pipeline::run`, which runs the
//! checks of one stage concurrently under a deadline and collects their symbols.
//!
//! The pipeline never imports `checks/`: the checks are built once (`checks::build`) and handed
//! in, so adding a check never touches this file or the session.

pub mod context;
pub mod symbol;

pub use context::Context;
pub use symbol::{ScoreCard, Symbol};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The SMTP stages at which checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The client connected (before the greeting).
    Connect,
    /// HELO/EHLO was given.
    Helo,
    /// MAIL FROM was given.
    Mail,
    /// One RCPT TO was given.
    Rcpt,
    /// The whole message was read.
    Data,
}

impl Stage {
    /// The lower-case name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
        }
    }
}

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

/// The result of running one stage.
#[derive(Debug, Default)]
pub struct StageOutcome {
    /// Symbols from all checks of the stage.
    pub symbols: Vec<Symbol>,
    /// Names of checks that missed the stage deadline (they add nothing).
    pub timed_out: Vec<&'static str>,
}

/// All checks, grouped by the stage they run at.
pub struct Pipeline {
    checks: Vec<Arc<dyn Check>>,
    deadline: Duration,
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
    /// A pipeline of the given checks; each stage must finish within `deadline`.
    pub fn new(checks: Vec<Arc<dyn Check>>, deadline: Duration) -> Self {
        Pipeline { checks, deadline }
    }

    /// True when no check runs at `stage` (the session can skip building a context).
    pub fn is_empty_at(&self, stage: Stage) -> bool {
        !self.checks.iter().any(|c| c.stage() == stage)
    }

    /// Runs the checks of `ctx.stage` concurrently. A check that misses the deadline adds
    /// nothing: one dead DNS server must not hold a session for timeout x attempts.
    pub async fn run(&self, ctx: &Context<'_>) -> StageOutcome {
        let stage_checks: Vec<_> = self
            .checks
            .iter()
            .filter(|c| c.stage() == ctx.stage)
            .collect();
        if stage_checks.is_empty() {
            return StageOutcome::default();
        }
        let runs = stage_checks.iter().map(|check| async move {
            let result = tokio::time::timeout(self.deadline, check.run(ctx)).await;
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
                    detail: None,
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
        );
        let env = Envelope::new(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let ctx = Context {
            stage: Stage::Mail,
            envelope: &env,
            recipient: None,
            message: None,
        };
        let out = p.run(&ctx).await;
        assert_eq!(out.symbols.len(), 1);
        assert_eq!(out.symbols[0].score, 1.0);
        assert_eq!(out.timed_out, vec!["fixed"]);
        assert!(p.is_empty_at(Stage::Data));
    }

    use crate::envelope::Envelope;
}
