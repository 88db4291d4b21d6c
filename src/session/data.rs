//! DATA and BDAT: the message is read in full under the limits, checked, and only then sent
//! upstream; the client hears 2xx only after the upstream said 2xx.

use super::report::End;
use super::{BdatTransfer, Flow, Session};
use crate::pipeline::{MessageInput, Stage};
use crate::smtp::data::{DataFault, DataReader};
use crate::smtp::reply::{self, Enhanced, Reply};
use crate::verdict::headers;

impl Session {
    pub(super) async fn data(&mut self) -> Flow {
        if self.upstream_lost {
            self.conn.queue(&reply::UPSTREAM_UNAVAILABLE.reply());
            return Flow::Continue;
        }
        self.conn.queue(&reply::START_DATA.reply());
        let mut reader = DataReader::dot(self.data_limits());
        if let Err(e) = self
            .conn
            .read_data(&mut reader, self.shared.limits.data_timeout.0, self.pace())
            .await
        {
            return self.lost_client(e);
        }
        let size = reader.size();
        self.finish_message(reader.finish(), size).await
    }

    pub(super) async fn bdat(&mut self, size: usize, last: bool) -> Flow {
        let limits = self.data_limits();
        let mut transfer = self.bdat.take().unwrap_or_else(|| BdatTransfer {
            reader: DataReader::chunked(limits),
        });
        if let Err(e) = self
            .conn
            .read_chunk(
                &mut transfer.reader,
                size,
                self.shared.limits.data_timeout.0,
                self.pace(),
            )
            .await
        {
            return self.lost_client(e);
        }
        if self.upstream_lost {
            self.conn.queue(&reply::UPSTREAM_UNAVAILABLE.reply());
            self.end_transaction(false).await;
            return Flow::Continue;
        }
        if !last {
            // RFC 3030 2: a failed chunk fails the transaction; an oversized message is refused
            // at once rather than after the client sent the rest.
            if transfer.reader.fault() == Some(DataFault::TooBig) {
                let total = transfer.reader.size();
                return self.finish_message(Err(DataFault::TooBig), total).await;
            }
            self.conn.queue(&Reply::new(
                250,
                Enhanced(2, 0, 0),
                format!("{size} octets received"),
            ));
            self.bdat = Some(transfer);
            self.state.on_bdat_chunk();
            return Flow::Continue;
        }
        let total = transfer.reader.size();
        self.finish_message(transfer.reader.finish(), total).await
    }

    /// The message has been read: refuse it for a fault, or check it and send it upstream.
    async fn finish_message(&mut self, body: Result<Vec<u8>, DataFault>, size: usize) -> Flow {
        let body = match body {
            Ok(body) => body,
            Err(fault) => {
                let r = match fault {
                    DataFault::TooBig => reply::MESSAGE_TOO_BIG,
                    DataFault::BareNewline => reply::BARE_NEWLINE_DATA,
                    DataFault::LineTooLong => reply::DATA_LINE_TOO_LONG,
                }
                .reply();
                tracing::info!(session = self.id, client = %self.tx.envelope.client, ?fault, size, "message refused");
                self.finish(End::new(Stage::Data, &r, self.tx.card()).message(size, None));
                self.conn.queue(&r);
                self.end_transaction(true).await;
                return Flow::Continue;
            }
        };
        let parsed = mail_parser::MessageParser::default().parse(&body);
        let message = parsed.as_ref().map(|p| MessageInput {
            raw: &body,
            parsed: p,
        });
        let decision = self.tx.data(message).await;
        drop(parsed);
        let verdict = decision.verdict;
        self.count_message(&body, &verdict);
        if let Some(r) = decision.refusal {
            self.finish(
                End::new(Stage::Data, &r, self.tx.card())
                    .decided(&verdict, true)
                    .message(size, Some(&body)),
            );
            self.conn.queue(&r);
            self.end_transaction(true).await;
            return Flow::Continue;
        }
        let prefix = self.added_fields(&verdict);
        let stripped = headers::strip_forged(&body, &self.shared.authserv_id);
        let final_reply = self
            .forward_message(&prefix, stripped.as_deref().unwrap_or(&body))
            .await;
        self.finish(
            End::new(Stage::Data, &final_reply, self.tx.card())
                .decided(&verdict, false)
                .message(size, Some(&body)),
        );
        self.conn.queue(&final_reply);
        self.end_transaction(false).await;
        Flow::Continue
    }

    fn count_message(&self, body: &[u8], verdict: &crate::verdict::Verdict) {
        let m = &crate::metrics::METRICS;
        m.messages_received.inc();
        m.bytes_received.inc_by(body.len() as u64);
        m.score.observe(verdict.score);
        for s in &self.tx.card().symbols {
            m.rule_hits.with_label_values(&[&s.name]).inc();
        }
    }

    /// The header fields moat prepends: Received (if configured), Authentication-Results and
    /// the X-Spam-* fields.
    fn added_fields(&mut self, verdict: &crate::verdict::Verdict) -> Vec<u8> {
        self.transactions += 1;
        let id = format!("{}.{}", self.id, self.transactions);
        let envelope = &self.tx.envelope;
        let tls = self
            .conn
            .stream()
            .tls_version()
            .zip(self.conn.stream().tls_cipher());
        let protocol = match (envelope.esmtp, tls.is_some()) {
            (true, true) => "ESMTPS",
            (true, false) => "ESMTP",
            (false, true) => "SMTPS",
            (false, false) => "SMTP",
        };
        let hop = headers::Hop {
            helo: envelope.helo.as_deref().unwrap_or("unknown"),
            client: envelope.client.ip(),
            by: &self.shared.hostname,
            protocol,
            id: &id,
            tls,
            time: std::time::SystemTime::now(),
        };
        let names = self.tx.card().names();
        let spam = headers::SpamInfo {
            score: verdict.score,
            required: self.shared.verdict.add_header,
            flagged: verdict.is_spam(&self.shared.verdict),
            tests: &names,
        };
        let auth_results = self.tx.facts().message.as_ref().map(|m| m.header.as_str());
        headers::prepend(self.shared.received.then_some(&hop), auth_results, &spam)
    }
}
