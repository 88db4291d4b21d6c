//! The upstream side of a session: opening and announcing the client (XCLIENT/XFORWARD),
//! MAIL and RCPT relayed, the message forwarded, and what a failure there means for the client.

use super::Session;
use crate::smtp::command::PathCommand;
use crate::smtp::reply::{self, Enhanced, Reply};
use crate::upstream::{ClientFacts, Upstream, UpstreamError};
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Session {
    /// Sends the checked message (with moat's fields prepended) upstream; the reply for the
    /// client. Any failure is a 4xx and drops the upstream session: never a half-sent message.
    pub(super) async fn forward_message(&mut self, prefix: &[u8], message: &[u8]) -> Reply {
        let sent = Instant::now();
        let result = match self.upstream.as_mut() {
            Some(up) => up.data(prefix, message).await,
            None => Err(UpstreamError::Protocol {
                stage: "DATA",
                why: "no upstream session".into(),
            }),
        };
        self.tx.add_upstream_time(sent.elapsed());
        match result {
            Ok(r) => {
                count_upstream_reply(&r);
                if r.code == 421 || !self.upstream.as_ref().is_some_and(Upstream::is_healthy) {
                    self.drop_upstream().await;
                }
                normalise(r)
            }
            Err(e) => {
                crate::metrics::METRICS
                    .upstream_errors
                    .with_label_values(&[e.kind()])
                    .inc();
                tracing::warn!(session = self.id, client = %self.tx.envelope.client, error = %e, kind = e.kind(),
                    "upstream failed during DATA; message not accepted");
                self.drop_upstream().await;
                reply::UPSTREAM_UNAVAILABLE.reply()
            }
        }
    }

    /// Ends the open transaction on both sides; `rset_upstream` sends RSET to a healthy
    /// upstream (after end of data the upstream is already outside a transaction).
    pub(super) async fn end_transaction(&mut self, rset_upstream: bool) {
        let was_open = self.state.in_transaction();
        self.state.end_transaction();
        self.tx.envelope.reset_transaction();
        self.refused_transaction = None;
        self.bdat = None;
        self.upstream_lost = false;
        self.transaction_started = None;
        if was_open && rset_upstream {
            if let Some(up) = self.upstream.as_mut() {
                up.rset().await;
                if !up.is_healthy() {
                    self.drop_upstream().await;
                }
            }
        }
    }

    pub(super) async fn drop_upstream(&mut self) {
        if let Some(up) = self.upstream.take() {
            up.quit().await;
        }
    }

    pub(super) fn client_facts(&self) -> ClientFacts {
        ClientFacts {
            addr: self.tx.envelope.client,
            // Postfix XCLIENT_README: the verified name, or why there is none.
            name: match self.tx.facts().iprev.as_ref() {
                Some(i) if i.name.is_some() => i.name.clone(),
                Some(i) if i.outcome == crate::auth::Outcome::TempError => {
                    Some("[TEMPUNAVAIL]".into())
                }
                _ => None,
            },
            helo: self.tx.envelope.helo.clone(),
            proto: if self.tx.envelope.esmtp {
                "ESMTP"
            } else {
                "SMTP"
            },
        }
    }

    pub(super) async fn open_upstream(&mut self) -> Result<(), UpstreamError> {
        let facts = self.client_facts();
        match Upstream::connect(&self.shared.upstream, &facts).await {
            Ok(up) => {
                self.upstream = Some(up);
                crate::metrics::READINESS
                    .upstream_ok
                    .store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                if matches!(e, UpstreamError::NoXclient) {
                    tracing::error!(session = self.id, upstream = %self.shared.upstream.address, "{e}");
                } else if matches!(
                    e,
                    UpstreamError::Refused {
                        stage: "XCLIENT",
                        ..
                    }
                ) {
                    tracing::error!(session = self.id, upstream = %self.shared.upstream.address,
                        "{e}; Postfix needs moat's address in smtpd_authorized_xclient_hosts");
                } else {
                    tracing::warn!(session = self.id, upstream = %self.shared.upstream.address, error = %e, kind = e.kind(), "cannot open upstream session");
                }
                Err(e)
            }
        }
    }

    /// Opens the upstream session if needed, announces the client (XCLIENT/XFORWARD) and sends
    /// MAIL.
    pub(super) async fn begin_upstream_transaction(
        &mut self,
        mail: &str,
    ) -> Result<Reply, UpstreamError> {
        loop {
            if !self.upstream.as_ref().is_some_and(Upstream::is_healthy) {
                self.drop_upstream().await;
                self.open_upstream().await?;
            }
            let untried = self
                .upstream
                .as_ref()
                .is_some_and(Upstream::is_untried_from_pool);
            let facts = self.client_facts();
            let result = match self.upstream.as_mut() {
                Some(up) => match up.prepare(&facts).await {
                    Ok(()) => self.upstream_command(mail, "MAIL").await,
                    Err(e) => Err(e),
                },
                None => self.upstream_command(mail, "MAIL").await,
            };
            match result {
                // A pooled session the MTA closed while it was idle: the next pooled one, or
                // a new connection once the pool is empty (which ends the loop).
                Err(e) if untried && e.may_retry_on_new_connection() => {
                    tracing::debug!(session = self.id, error = %e, "pooled upstream session was closed; trying another");
                    self.drop_upstream().await;
                }
                other => return other,
            }
        }
    }

    /// Sends a MAIL/RCPT line on the open upstream session.
    pub(super) async fn upstream_command(
        &mut self,
        line: &str,
        stage: &'static str,
    ) -> Result<Reply, UpstreamError> {
        let Some(up) = self.upstream.as_mut() else {
            return Err(UpstreamError::Protocol {
                stage,
                why: "no upstream session".into(),
            });
        };
        let r = up.command(line, stage).await?;
        if !up.is_healthy() {
            // The upstream said 421: it is closing, so this transaction cannot go on.
            self.drop_upstream().await;
            if self.state.in_transaction() {
                self.upstream_lost = true;
            }
        }
        Ok(r)
    }

    pub(super) fn upstream_failed(&mut self, e: &UpstreamError, stage: &'static str) {
        crate::metrics::METRICS
            .upstream_errors
            .with_label_values(&[e.kind()])
            .inc();
        crate::metrics::READINESS.upstream_ok.store(
            !matches!(
                e,
                UpstreamError::Connect { .. } | UpstreamError::Timeout { .. }
            ),
            std::sync::atomic::Ordering::Relaxed,
        );
        if !matches!(e, UpstreamError::NoXclient | UpstreamError::Connect { .. }) {
            tracing::warn!(session = self.id, client = %self.tx.envelope.client, error = %e, kind = e.kind(), stage, "upstream failed");
        }
        self.upstream = None;
        if self.state.in_transaction() {
            self.upstream_lost = true;
        }
        let r = match e {
            UpstreamError::NoXclient
            | UpstreamError::Refused {
                stage: "XCLIENT", ..
            } => reply::UPSTREAM_NO_XCLIENT.reply(),
            // The MTA's own verdict on this client: relayed like any MAIL reply.
            UpstreamError::ClientRefused { reply } => normalise(reply.clone()),
            _ => reply::UPSTREAM_UNAVAILABLE.reply(),
        };
        self.conn.queue(&r);
    }

    /// Relays an upstream reply to the client.
    pub(super) fn relay(&mut self, r: Reply) {
        count_upstream_reply(&r);
        self.conn.queue(&normalise(r));
    }
}

/// Counts an upstream reply by class for the metrics.
fn count_upstream_reply(r: &Reply) {
    let class = match r.class() {
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    };
    crate::metrics::METRICS
        .upstream_replies
        .with_label_values(&[class])
        .inc();
}

/// The command line for MAIL/RCPT as relayed upstream: the client's path and parameters.
pub(super) fn path_command(verb: &str, c: &PathCommand) -> String {
    let mut line = String::with_capacity(verb.len() + c.path.len() + 32);
    line.push_str(verb);
    line.push_str(&c.path);
    for p in &c.params {
        line.push(' ');
        line.push_str(&p.raw);
    }
    line
}

/// Makes an upstream reply safe to relay: 421 means the upstream is closing, but the client
/// session goes on, so it becomes 451; every reply gets an enhanced code (RFC 2034).
fn normalise(mut r: Reply) -> Reply {
    if r.code == 421 {
        r.code = 451;
    }
    if r.enhanced.is_none_or(|e| u16::from(e.0) != r.class()) {
        r.enhanced = Some(Enhanced(r.class() as u8, 0, 0));
    }
    r
}
