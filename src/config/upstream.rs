//! `[upstream]`: the MTA moat forwards to.

use super::ConfigDuration;
use serde::Deserialize;
use std::path::PathBuf;

/// When the upstream session is opened.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConnectAt {
    /// At the first MAIL FROM of a client session (the default: no idle upstream sessions).
    #[default]
    Mail,
    /// As soon as the client connects.
    Connect,
}

/// How moat tells the upstream who the real client is.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// XCLIENT, required: without it the MTA would apply its own policy to moat's address.
    #[default]
    Xclient,
    /// XFORWARD only: the MTA logs the real client but applies policy to moat's address.
    Xforward,
    /// Nothing: the MTA sees every client as moat.
    None,
}

/// `[upstream]`: the MTA moat relays to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// host:port of the MTA's SMTP service for moat.
    pub address: String,
    /// When to open the upstream session.
    pub connect_at: ConnectAt,
    /// XCLIENT, XFORWARD or none.
    pub forwarding: Forwarding,
    /// Name moat gives in its EHLO; defaults to `server.hostname`.
    pub helo_name: Option<String>,
    /// Use STARTTLS to the upstream (fails the transaction if the upstream does not offer it).
    pub starttls: bool,
    /// Verify the upstream's certificate against `tls_ca`.
    pub tls_verify: bool,
    /// PEM file of CAs that may sign the upstream's certificate.
    pub tls_ca: Option<PathBuf>,
    /// Server name to verify in the upstream's certificate; defaults to the host of `address`.
    pub tls_server_name: Option<String>,
    /// TCP connect timeout.
    pub connect_timeout: ConfigDuration,
    /// Wait for the greeting and replies to EHLO, XCLIENT, MAIL, RCPT, RSET (RFC 5321 4.5.3.2: 5 minutes).
    pub command_timeout: ConfigDuration,
    /// Wait for the final reply after the end of data (RFC 5321 4.5.3.2.6: 10 minutes).
    pub data_timeout: ConfigDuration,
    /// Idle upstream sessions kept open for the next client (0: one per client session).
    pub pool_size: usize,
    /// How long an idle upstream session is kept before it is closed.
    pub pool_idle: ConfigDuration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            address: "127.0.0.1:10025".into(),
            connect_at: ConnectAt::Mail,
            forwarding: Forwarding::Xclient,
            helo_name: None,
            starttls: false,
            tls_verify: true,
            tls_ca: None,
            tls_server_name: None,
            connect_timeout: ConfigDuration::secs(30),
            command_timeout: ConfigDuration::secs(300),
            data_timeout: ConfigDuration::secs(600),
            pool_size: 16,
            pool_idle: ConfigDuration::secs(30),
        }
    }
}
