//! What can go wrong with the MTA, and what each failure allows next.

use crate::smtp::reply::Reply;

/// Why an upstream operation failed; the session turns all of these into a 4xx.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The upstream address.
        address: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No reply within the configured time.
    #[error("timeout waiting for the reply to {stage}")]
    Timeout {
        /// What moat was waiting for.
        stage: &'static str,
    },
    /// The connection closed or failed.
    #[error("connection lost during {stage}: {source}")]
    Io {
        /// What moat was doing.
        stage: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The upstream sent something that is not an SMTP reply.
    #[error("malformed reply during {stage}: {why}")]
    Protocol {
        /// What moat was waiting for.
        stage: &'static str,
        /// What was wrong.
        why: String,
    },
    /// The upstream refused the session set-up (greeting, EHLO, XCLIENT, STARTTLS).
    #[error("upstream refused {stage}: {reply}")]
    Refused {
        /// The step that was refused.
        stage: &'static str,
        /// The upstream's reply.
        reply: Reply,
    },
    /// After XCLIENT the MTA refused the real client (its own policy, e.g. with
    /// smtpd_delay_reject = no); the client hears this reply.
    #[error("upstream refused the client after XCLIENT: {reply}")]
    ClientRefused {
        /// The MTA's reply to the EHLO that followed XCLIENT.
        reply: Reply,
    },
    /// XCLIENT is required but the upstream does not offer it to moat.
    #[error(
        "upstream does not offer XCLIENT to moat; add moat's address to Postfix's \
         smtpd_authorized_xclient_hosts, or set upstream.forwarding = \"xforward\" or \"none\""
    )]
    NoXclient,
    /// STARTTLS is required but the upstream does not offer it.
    #[error("upstream does not offer STARTTLS but upstream.starttls is on")]
    NoStartTls,
    /// The TLS handshake failed.
    #[error("TLS handshake with the upstream failed: {0}")]
    Tls(std::io::Error),
}

impl UpstreamError {
    /// True when a fresh connection might succeed where a kept-open one failed (the MTA closed
    /// an idle session), as opposed to a refusal or a configuration problem.
    pub fn may_retry_on_new_connection(&self) -> bool {
        matches!(
            self,
            UpstreamError::Io { .. } | UpstreamError::Protocol { .. }
        )
    }

    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::Io { .. } => "io",
            UpstreamError::Protocol { .. } => "protocol",
            UpstreamError::Refused { .. } => "refused",
            UpstreamError::ClientRefused { .. } => "client_refused",
            UpstreamError::NoXclient => "no_xclient",
            UpstreamError::NoStartTls => "no_starttls",
            UpstreamError::Tls(_) => "tls",
        }
    }
}
