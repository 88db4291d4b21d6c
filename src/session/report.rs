//! The end-of-transaction hook: however a transaction (or one recipient) ends, [`Session::finish`]
//! writes its log line, counts it in the metrics, keeps its record and its quarantine copy. The
//! command handlers only say how it ended.

use super::Session;
use crate::pipeline::{Action, ScoreCard, Stage};
use crate::records::{Record, RecordDir, RecordSymbol};
use crate::smtp::reply::Reply;
use crate::upstream::ClientFacts;
use crate::verdict::Verdict;
use std::time::Duration;

/// What ended: the transaction, or one recipient of it.
#[derive(Debug, Clone, Copy)]
enum Ended<'a> {
    Transaction,
    Recipient(&'a str),
}

/// How a transaction or a recipient ended.
#[derive(Debug)]
pub(super) struct End<'a> {
    ended: Ended<'a>,
    stage: Stage,
    reply: &'a Reply,
    /// The checks' verdict, when they had a say (a protocol fault or an MTA's refusal has none).
    verdict: Option<&'a Verdict>,
    /// The symbols the verdict was decided on (a refused recipient's counted in).
    card: &'a ScoreCard,
    size: usize,
    /// The message, at end of data.
    message: Option<&'a [u8]>,
    /// The checks refused it (what the quarantine keeps).
    refused_by_checks: bool,
    /// Write the log line (off where a later line tells the story).
    log: bool,
}

impl<'a> End<'a> {
    /// The transaction ended at `stage` with `reply`; `card` holds its symbols.
    pub(super) fn new(stage: Stage, reply: &'a Reply, card: &'a ScoreCard) -> Self {
        End {
            ended: Ended::Transaction,
            stage,
            reply,
            verdict: None,
            card,
            size: 0,
            message: None,
            refused_by_checks: false,
            log: true,
        }
    }

    /// The checks refused it before end of data.
    pub(super) fn refused(
        stage: Stage,
        reply: &'a Reply,
        verdict: &'a Verdict,
        card: &'a ScoreCard,
    ) -> Self {
        End::new(stage, reply, card).decided(verdict, true)
    }

    /// The checks' verdict; `refused` when it is what refused.
    pub(super) fn decided(self, verdict: &'a Verdict, refused: bool) -> Self {
        End {
            verdict: Some(verdict),
            refused_by_checks: refused,
            ..self
        }
    }

    /// Only `recipient` ended (refused), not the transaction.
    pub(super) fn recipient(self, recipient: &'a str) -> Self {
        End {
            ended: Ended::Recipient(recipient),
            ..self
        }
    }

    /// The message, at end of data.
    pub(super) fn message(self, size: usize, message: Option<&'a [u8]>) -> Self {
        End {
            size,
            message,
            ..self
        }
    }

    /// Counted and recorded, without a log line of its own.
    pub(super) fn unlogged(self) -> Self {
        End { log: false, ..self }
    }
}

impl Session {
    /// The end-of-transaction hook: log line, metrics, record and quarantine copy. Records and
    /// quarantine copies are written off this task; the client's reply does not wait for disk.
    pub(super) fn finish(&self, end: End<'_>) {
        match end.ended {
            Ended::Transaction if end.log => self.log_transaction(&end),
            Ended::Transaction => {}
            Ended::Recipient(rcpt) => self.log_recipient(&end, rcpt),
        }
        let Some(verdict) = end.verdict else {
            return;
        };
        let quarantine = self.shared.quarantine.as_ref().filter(|_| {
            end.refused_by_checks
                && end.message.is_some()
                && match verdict.action {
                    Action::Reject => true,
                    Action::Tempfail => self.shared.quarantine_tempfail,
                    _ => false,
                }
        });
        let records = self
            .shared
            .records
            .as_ref()
            .filter(|r| r.wants(verdict.action));
        if quarantine.is_none() && records.is_none() {
            return;
        }
        let record = self.record(&end, verdict);
        let dns = self.tx.pipeline().dns().cloned();
        if let Some(q) = quarantine {
            q.keep(record.clone(), end.message.map(<[u8]>::to_vec), dns.clone());
        }
        if let Some(r) = records {
            let message = end.message.filter(|_| r.message).map(<[u8]>::to_vec);
            let record = Record {
                id: RecordDir::new_id(record.time),
                ..record
            };
            r.dir.keep(record, message, dns);
        }
    }

    /// What the record of `end` says.
    fn record(&self, end: &End<'_>, verdict: &Verdict) -> Record {
        let time = crate::store::unix_millis() / 1000;
        let envelope = &self.tx.envelope;
        Record {
            stage: end.stage.as_str().to_string(),
            refused_rcpt: match end.ended {
                Ended::Recipient(r) => Some(r.to_string()),
                Ended::Transaction => None,
            },
            id: RecordDir::new_id(time),
            time,
            client: envelope.client.to_string(),
            client_name: self.client_facts().name,
            helo: envelope.helo.clone(),
            tls: envelope.tls.map(str::to_string),
            mail_from: envelope.sender.clone().unwrap_or_default(),
            rcpts: envelope.recipients.clone(),
            size: end.size,
            score: verdict.score,
            action: verdict.action.as_str().to_string(),
            reply: end.reply.to_string(),
            symbols: end
                .card
                .symbols
                .iter()
                .map(|s| RecordSymbol {
                    name: s.name.clone(),
                    score: s.score,
                })
                .collect(),
            ruleset: self.tx.pipeline().ruleset().to_string(),
            dns: crate::dns::journal::Journal::current()
                .map(|j| j.snapshot())
                .unwrap_or_default(),
        }
    }

    /// A refused recipient: counted, and logged with the score it was refused on.
    fn log_recipient(&self, end: &End<'_>, rcpt: &str) {
        let action = if end.reply.class() == 4 {
            "tempfail"
        } else {
            "reject"
        };
        crate::metrics::METRICS
            .recipients
            .with_label_values(&[action, end.stage.as_str()])
            .inc();
        if end.log {
            tracing::info!(session = self.id, client = %self.tx.envelope.client, rcpt,
                stage = end.stage.as_str(), score = end.card.total(),
                symbols = %end.card.names().join(","), reply = %end.reply, "recipient refused");
        }
    }

    /// The transaction's one summary line (and its metrics): everything an admin needs to
    /// find it again, including the upstream's queue id to join with the MTA's log.
    fn log_transaction(&self, end: &End<'_>) {
        let r = end.reply;
        let action = match r.class() {
            // Flagged messages are accepted too; the action says which.
            2 if end.verdict.is_some_and(|v| v.is_spam(&self.shared.verdict)) => "add_header",
            2 => "accept",
            4 => "tempfail",
            _ => "reject",
        };
        let stage = end.stage.as_str();
        let envelope = &self.tx.envelope;
        let m = &crate::metrics::METRICS;
        m.transactions.with_label_values(&[action, stage]).inc();
        m.recipients
            .with_label_values(&[action, stage])
            .inc_by(envelope.recipients.len() as u64);
        let duration = self
            .transaction_started
            .map(|t| t.elapsed())
            .unwrap_or(Duration::ZERO);
        let ClientFacts { name, .. } = self.client_facts();
        tracing::info!(
            session = self.id,
            client = %envelope.client,
            client_name = name.as_deref().unwrap_or("unknown"),
            helo = envelope.helo.as_deref().unwrap_or(""),
            tls = envelope.tls.unwrap_or("none"),
            from = envelope.sender.as_deref().unwrap_or(""),
            rcpts = %envelope.recipients.join(","),
            size = end.size,
            score = (end.card.total() * 100.0).round() / 100.0,
            action,
            stage,
            symbols = %end.card.names().join(","),
            reply = %r,
            queue_id = r.queue_id().unwrap_or(""),
            timings = %self.tx.timings(),
            duration_ms = duration.as_millis() as u64,
            "transaction"
        );
    }
}
