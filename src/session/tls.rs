//! STARTTLS (RFC 3207): the handshake, and forgetting everything said before it.

use super::{Flow, Session};
use crate::net::stream::Stream;
use crate::smtp::reply;

impl Session {
    pub(super) async fn starttls(&mut self) -> Flow {
        let Some(acceptor) = self.shared.tls.clone() else {
            return self.client_error(reply::TLS_NOT_AVAILABLE.reply());
        };
        self.conn.queue(&reply::READY_TLS.reply());
        let discarded = self.conn.discard_input();
        if discarded > 0 {
            tracing::warn!(session = self.id, client = %self.tx.envelope.client, bytes = discarded,
                "discarded plaintext pipelined after STARTTLS (command injection attempt)");
        }
        if self.conn.flush().await.is_err() {
            return Flow::Close("client i/o error");
        }
        let Some(tcp) = self.conn.take_stream().take_plain() else {
            return Flow::Close("TLS state error");
        };
        let handshake = tokio::time::timeout(
            self.shared.limits.tls_handshake_timeout.0,
            acceptor.accept(tcp),
        )
        .await;
        match handshake {
            Ok(Ok(tls)) => {
                self.conn.set_stream(Stream::ServerTls(Box::new(tls)));
                self.tx.envelope.tls = self.conn.stream().tls_version();
                crate::metrics::METRICS
                    .tls_handshakes
                    .with_label_values(&[self.tx.envelope.tls.unwrap_or("unknown")])
                    .inc();
                // RFC 3207 4.2: discard all knowledge from before the handshake.
                self.end_transaction(false).await;
                self.drop_upstream().await;
                self.tx.envelope.helo = None;
                self.state.on_tls();
                tracing::info!(session = self.id, client = %self.tx.envelope.client,
                    version = self.tx.envelope.tls.unwrap_or("?"), cipher = self.conn.stream().tls_cipher().unwrap_or("?"), "TLS established");
                Flow::Continue
            }
            Ok(Err(e)) => {
                let m = &crate::metrics::METRICS;
                m.tls_handshakes.with_label_values(&["failed"]).inc();
                let reason = crate::net::tls::failure_reason(&e);
                m.tls_failures.with_label_values(&[reason]).inc();
                tracing::info!(session = self.id, client = %self.tx.envelope.client, error = %e, reason, "TLS handshake failed");
                Flow::Close("TLS handshake failed")
            }
            Err(_) => {
                let m = &crate::metrics::METRICS;
                m.tls_handshakes.with_label_values(&["failed"]).inc();
                m.tls_failures.with_label_values(&["timeout"]).inc();
                tracing::info!(session = self.id, client = %self.tx.envelope.client, "TLS handshake timed out");
                Flow::Close("TLS handshake timeout")
            }
        }
    }
}
