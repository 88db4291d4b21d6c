//! The transaction driver: one client's way through the stages, the same for `moat serve`,
//! `moat check` and `moat check --replay`. It holds the envelope, the score card and the
//! authentication facts, and applies the scoring policy between the stages:
//!
//! - an allow-list entry skips the remaining checks of the session (IP, HELO) or of the
//!   transaction (sender, recipient); the verdict accepts whatever they would have said;
//! - a recipient's symbols count only once the recipient is accepted, so one bad address does
//!   not taint the others;
//! - in shadow mode a refusal is logged and counted as "would refuse", and nothing is refused.
//!
//! What it does not know: sockets, the upstream, reply relaying. The front end that owns the
//! client decides what to answer with the [`Decision`]s it gets.

use super::envelope::Envelope;
use super::timings::Timings;
use super::{MessageInput, Pipeline, ScoreCard, Stage, StageInput, Symbol};
use crate::auth::AuthFacts;
use crate::config::VerdictConfig;
use crate::smtp::reply::{self, Reply};
use crate::verdict::card::allowed;
use crate::verdict::{self, Verdict};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the verdict says about a command or the message.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The verdict on the symbols so far.
    pub verdict: Verdict,
    /// The reply refusing it; `None` when the verdict accepts, and always in shadow mode.
    pub refusal: Option<Reply>,
}

/// A recipient that has been checked but not yet accepted.
#[derive(Debug)]
pub struct RcptCheck {
    symbols: Vec<Symbol>,
    /// The card as it would be with this recipient (what the decision was made on).
    pub card: ScoreCard,
    /// The verdict with this recipient's symbols counted.
    pub decision: Decision,
}

/// One client session's checks and score card, stage by stage.
#[derive(Debug)]
pub struct Driver {
    pipeline: Arc<Pipeline>,
    verdict: Arc<VerdictConfig>,
    /// The session id the log lines name.
    session: u64,
    /// Client, HELO, sender and the accepted recipients.
    pub envelope: Envelope,
    /// Symbols of the connect and HELO stages; every transaction's card starts from these.
    session_symbols: Vec<Symbol>,
    /// The open transaction's symbols (the session's included); outside a transaction, the
    /// session's.
    card: ScoreCard,
    facts: AuthFacts,
    timings: Timings,
}

impl Driver {
    /// A driver for a new client; `session` names it in log lines.
    pub fn new(
        pipeline: Arc<Pipeline>,
        verdict: Arc<VerdictConfig>,
        envelope: Envelope,
        session: u64,
    ) -> Self {
        Driver {
            pipeline,
            verdict,
            session,
            envelope,
            session_symbols: Vec::new(),
            card: ScoreCard::default(),
            facts: AuthFacts::default(),
            timings: Timings::default(),
        }
    }

    /// The pipeline this client is checked with (a reload does not change it mid-session).
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// The symbols so far.
    pub fn card(&self) -> &ScoreCard {
        &self.card
    }

    /// What authentication found so far.
    pub fn facts(&self) -> &AuthFacts {
        &self.facts
    }

    /// Where the time went (session stages included).
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Adds the time the upstream took to answer the message.
    pub fn add_upstream_time(&mut self, d: Duration) {
        self.timings.add_upstream(d);
    }

    /// The client connected: the connect checks (reverse DNS first).
    pub async fn connect(&mut self) -> Decision {
        self.session_symbols = self.run(Stage::Connect, None, None).await;
        self.card = self.session_card();
        self.decide(Stage::Connect)
    }

    /// HELO or EHLO: the HELO checks, replacing those of an earlier HELO.
    pub async fn helo(&mut self) {
        let symbols = self.run(Stage::Helo, None, None).await;
        self.session_symbols.retain(|s| s.stage != Stage::Helo);
        self.session_symbols.extend(symbols);
        self.card = self.session_card();
    }

    /// A trusted forwarder named another client: everything learned about the previous one is
    /// forgotten, and the connect and HELO checks run again for the new one.
    pub async fn restart(&mut self) {
        self.facts = AuthFacts::default();
        self.session_symbols.clear();
        self.timings = Timings::default();
        // Its connect verdict is not acted on: the client is already talking, and what it
        // forces still applies from the MAIL stage on.
        self.connect().await;
        self.helo().await;
    }

    /// MAIL FROM: a new transaction starts from the session's symbols, then the mail checks
    /// (SPF first).
    pub async fn mail(&mut self, sender: String) -> Decision {
        self.card = self.session_card();
        // Reverse DNS belongs to the session; the rest starts over with each transaction.
        self.facts = AuthFacts {
            iprev: self.facts.iprev.take(),
            ..AuthFacts::default()
        };
        self.timings.reset_transaction();
        self.envelope.reset_transaction();
        self.envelope.sender = Some(sender);
        let symbols = self.run(Stage::Mail, None, None).await;
        self.card.extend(symbols);
        self.decide(Stage::Mail)
    }

    /// RCPT TO: the recipient checks, decided as if the recipient were accepted. Nothing is
    /// counted until [`Driver::accept_rcpt`].
    pub async fn rcpt(&mut self, recipient: &str) -> RcptCheck {
        let symbols = self.run(Stage::Rcpt, Some(recipient), None).await;
        let mut card = self.card.clone();
        card.extend(symbols.iter().cloned());
        let decision = self.decide_on(&card, Stage::Rcpt);
        RcptCheck {
            symbols,
            card,
            decision,
        }
    }

    /// The recipient was accepted (by the MTA, or offline by the caller): its symbols count.
    pub fn accept_rcpt(&mut self, recipient: String, check: RcptCheck) {
        self.envelope.recipients.push(recipient);
        self.card.extend(check.symbols);
    }

    /// End of data: DKIM, ARC and DMARC, then the message checks. `None` when the input is not
    /// a message mail-parser can read (the checks that need one add nothing).
    pub async fn data(&mut self, message: Option<MessageInput<'_>>) -> Decision {
        let symbols = self.run(Stage::Data, None, message).await;
        self.card.extend(symbols);
        self.decide(Stage::Data)
    }

    /// The verdict on the card as it stands, at `stage`.
    pub fn decide(&self, stage: Stage) -> Decision {
        self.decide_on(&self.card, stage)
    }

    fn decide_on(&self, card: &ScoreCard, stage: Stage) -> Decision {
        let verdict = verdict::decide(card, &self.verdict, stage);
        let refusal = if !verdict.refuses() {
            None
        } else if self.verdict.shadow {
            crate::metrics::METRICS
                .shadow_would_refuse
                .with_label_values(&[verdict.action.as_str()])
                .inc();
            tracing::info!(session = self.session, client = %self.envelope.client,
                stage = stage.as_str(), action = verdict.action.as_str(), score = verdict.score,
                forced_by = verdict.forced_by.as_deref().unwrap_or(""), "shadow mode: would refuse");
            None
        } else {
            Some(
                verdict
                    .reply
                    .clone()
                    .unwrap_or_else(|| reply::LOCAL_ERROR.reply()),
            )
        };
        Decision { verdict, refusal }
    }

    fn session_card(&self) -> ScoreCard {
        ScoreCard {
            symbols: self.session_symbols.clone(),
        }
    }

    /// Runs a stage (its authentication step and checks) and returns its symbols.
    async fn run(
        &mut self,
        stage: Stage,
        recipient: Option<&str>,
        message: Option<MessageInput<'_>>,
    ) -> Vec<Symbol> {
        if self.pipeline.is_empty_at(stage) {
            return Vec::new();
        }
        let allow_listed = self.card.allowed() || allowed(&self.session_symbols);
        if allow_listed && stage != Stage::Connect {
            tracing::debug!(
                session = self.session,
                stage = stage.as_str(),
                "allow-listed; checks skipped"
            );
            return Vec::new();
        }
        let input = StageInput {
            stage,
            envelope: &self.envelope,
            recipient,
            message,
            score: self.card.total(),
        };
        let started = Instant::now();
        let symbols = self.pipeline.run(input, &mut self.facts).await.symbols;
        self.timings.add(stage, started.elapsed());
        symbols
    }
}
