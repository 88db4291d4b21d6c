//! MAIL and RCPT: the checks decide first, then the upstream answers, and its reply is relayed.

use super::report::End;
use super::upstream::path_command;
use super::{Flow, Session};
use crate::pipeline::Stage;
use crate::smtp::command::PathCommand;
use crate::smtp::reply;
use std::time::Instant;

impl Session {
    pub(super) async fn mail(&mut self, m: PathCommand) -> Flow {
        if let Err(r) = self.offer.check_mail_params(&m.params) {
            return self.client_error(r);
        }
        if self.identity_changed {
            self.refresh_identity().await;
        }
        if self.require_tls && self.tx.envelope.tls.is_none() {
            return self.client_error(reply::STARTTLS_REQUIRED.reply());
        }
        // RFC 1870 6.2: refuse a declared size over the limit before reading anything.
        if m.size.is_some_and(|s| s > self.offer.max_size) {
            self.conn.queue(&reply::MESSAGE_TOO_BIG.reply());
            return Flow::Continue;
        }
        self.upstream_lost = false;
        self.transaction_started = Some(Instant::now());
        let decision = self.tx.mail(m.address.clone()).await;
        if let Some(r) = decision.refusal {
            if self.shared.verdict.delay_reject {
                // Postfix's smtpd_delay_reject: take MAIL (moat's own 250, the upstream never
                // hears of it) and refuse every RCPT, so the log shows sender and recipients.
                self.finish(
                    End::refused(Stage::Mail, &r, &decision.verdict, self.tx.card()).unlogged(),
                );
                self.refused_transaction = Some(r);
                self.state.on_mail();
                self.conn.queue(&reply::MAIL_OK_LOCAL.reply());
                return Flow::Continue;
            }
            // Refused before the upstream ever hears of the transaction.
            self.finish(End::refused(
                Stage::Mail,
                &r,
                &decision.verdict,
                self.tx.card(),
            ));
            self.conn.queue(&r);
            self.tx.envelope.sender = None;
            self.transaction_started = None;
            return Flow::Continue;
        }
        let line = path_command("MAIL FROM:", &m);
        // A kept-open upstream may have timed out while the client was idle: one fresh retry.
        let reused = self.upstream.is_some();
        let mut result = self.begin_upstream_transaction(&line).await;
        if reused && matches!(result, Err(ref e) if e.may_retry_on_new_connection()) {
            self.drop_upstream().await;
            result = self.begin_upstream_transaction(&line).await;
        }
        match result {
            Ok(r) => {
                if r.is_positive() {
                    self.state.on_mail();
                } else {
                    self.tx.envelope.sender = None;
                    self.transaction_started = None;
                }
                self.relay(r);
            }
            Err(e) => {
                self.tx.envelope.sender = None;
                self.transaction_started = None;
                self.upstream_failed(&e, "MAIL");
            }
        }
        Flow::Continue
    }

    pub(super) async fn rcpt(&mut self, r: PathCommand) -> Flow {
        if let Err(reply) = self.offer.check_rcpt_params(&r.params) {
            return self.client_error(reply);
        }
        if self.upstream_lost {
            self.conn.queue(&reply::UPSTREAM_UNAVAILABLE.reply());
            return Flow::Continue;
        }
        if self.tx.envelope.recipients.len() >= self.shared.limits.max_recipients {
            self.conn.queue(&reply::TOO_MANY_RECIPIENTS.reply());
            return Flow::Continue;
        }
        if let Some(refused) = self.refused_transaction.clone() {
            self.finish(End::new(Stage::Mail, &refused, self.tx.card()).recipient(&r.address));
            self.conn.queue(&refused);
            return Flow::Continue;
        }
        let check = self.tx.rcpt(&r.address).await;
        if let Some(refused) = &check.decision.refusal {
            self.finish(
                End::refused(Stage::Rcpt, refused, &check.decision.verdict, &check.card)
                    .recipient(&r.address),
            );
            self.conn.queue(refused);
            return Flow::Continue;
        }
        let line = path_command("RCPT TO:", &r);
        match self.upstream_command(&line, "RCPT").await {
            Ok(reply) => {
                if reply.is_positive() {
                    self.tx.accept_rcpt(r.address, check);
                    self.state.on_rcpt();
                } else {
                    // The MTA's own refusal (unknown user, policy): relayed as it is.
                    self.finish(
                        End::new(Stage::Rcpt, &reply, self.tx.card())
                            .recipient(&r.address)
                            .unlogged(),
                    );
                }
                self.relay(reply);
            }
            Err(e) => self.upstream_failed(&e, "RCPT"),
        }
        Flow::Continue
    }
}
