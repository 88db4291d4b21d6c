//! `[server]`, `[limits]` and `[tls]`: the SMTP side clients talk to.

use super::ConfigDuration;
use serde::Deserialize;
use std::path::PathBuf;

/// `[server]`: listeners and session limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The name in the greeting and EHLO reply; defaults to the system's host name.
    pub hostname: Option<String>,
    /// Addresses to listen on.
    pub listen: Vec<String>,
    /// Most concurrent sessions in all; beyond, 421 and close.
    pub max_sessions: usize,
    /// Most concurrent sessions from one client IP address.
    pub max_sessions_per_ip: usize,
    /// Most new sessions one client IP address may open per minute; 0: no limit (Postfix's
    /// smtpd_client_connection_rate_limit).
    pub max_new_sessions_per_ip_per_minute: usize,
    /// How long sessions in flight may take to finish after SIGTERM.
    pub shutdown_grace: ConfigDuration,
    /// Clients (IP or CIDR) whose XFORWARD moat believes: a Postfix that runs moat as its
    /// `smtpd_proxy_filter`. Empty: XFORWARD is refused like any unknown command.
    pub xforward_hosts: Vec<String>,
    /// Listen addresses (entries of `listen`) where every connection starts with a HAProxy
    /// PROXY protocol header (v1 or v2) naming the real client.
    pub proxy_protocol: Vec<String>,
    /// Sources (IP or CIDR) allowed to connect to those listeners: the load balancers.
    pub proxy_trusted: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: None,
            listen: vec!["127.0.0.1:2525".into()],
            max_sessions: 1000,
            max_sessions_per_ip: 50,
            max_new_sessions_per_ip_per_minute: 0,
            shutdown_grace: ConfigDuration::secs(30),
            xforward_hosts: Vec::new(),
            proxy_protocol: Vec::new(),
            proxy_trusted: Vec::new(),
        }
    }
}

/// `[limits]`: sizes and timeouts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest message in octets (advertised as SIZE, possibly lowered to the upstream's).
    pub max_message_size: usize,
    /// Most recipients per transaction (RFC 5321 4.5.3.1.8 requires at least 100).
    pub max_recipients: usize,
    /// Longest command line in octets including CRLF (RFC 5321 4.5.3.1.4: 512).
    pub max_command_line: usize,
    /// Longest text line in DATA in octets without CRLF (RFC 5321 4.5.3.1.6: 998).
    pub max_line_length: usize,
    /// Errors (bad commands) tolerated per session before 421 and close.
    pub max_errors: usize,
    /// Wait for the next command (RFC 5321 4.5.3.2.7: 5 minutes).
    pub command_timeout: ConfigDuration,
    /// Wait for more message data (RFC 5321 4.5.3.2.5: 3 minutes per block).
    pub data_timeout: ConfigDuration,
    /// Time allowed for a client TLS handshake.
    pub tls_handshake_timeout: ConfigDuration,
    /// Slowest average rate of message data, octets per second (Postfix's
    /// smtpd_min_data_rate); 0 turns it off. Judged after `min_data_rate_grace`.
    pub min_data_rate: u64,
    /// How long a transfer runs before its average rate counts.
    pub min_data_rate_grace: ConfigDuration,
    /// After this many errors in a session each further reply waits `tarpit_delay` (Postfix's
    /// smtpd_soft_error_limit); 0 turns the tarpit off.
    pub tarpit_after_errors: usize,
    /// How long a reply waits in the tarpit (Postfix's smtpd_error_sleep_time).
    pub tarpit_delay: ConfigDuration,
    /// Wait this long before the 220 greeting and catch clients that talk first (spamware
    /// that does not wait, postscreen's pre-greet test); 0 turns the test off.
    pub pregreet_wait: ConfigDuration,
    /// What happens to a client that talked before the greeting.
    pub pregreet_action: EarlyTalkerAction,
    /// What happens to a client that sends a command behind another before PIPELINING was
    /// offered (before its EHLO was answered, or after HELO).
    pub pipelining_action: EarlyTalkerAction,
}

/// The answer to an early talker: a client that sent data before the greeting, or pipelined
/// commands before PIPELINING was offered.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EarlyTalkerAction {
    /// 554 5.5.1 and close.
    #[default]
    Reject,
    /// Close without a word.
    Drop,
    /// Log and count only, then greet as usual.
    Ignore,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_command_line: 512,
            max_line_length: 998,
            max_errors: 20,
            command_timeout: ConfigDuration::secs(300),
            data_timeout: ConfigDuration::secs(180),
            tls_handshake_timeout: ConfigDuration::secs(30),
            min_data_rate: 500,
            min_data_rate_grace: ConfigDuration::secs(30),
            tarpit_after_errors: 10,
            tarpit_delay: ConfigDuration::secs(1),
            pregreet_wait: ConfigDuration::secs(0),
            pregreet_action: EarlyTalkerAction::Reject,
            pipelining_action: EarlyTalkerAction::Reject,
        }
    }
}

/// `[tls]`: the certificate moat presents for STARTTLS.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain; STARTTLS is offered only when this and `key` are set.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Entries of `server.listen` (e.g. a submission port) where MAIL is refused with 530
    /// 5.7.0 until the client has done STARTTLS (RFC 3207).
    pub required_on: Vec<String>,
    /// More certificates, chosen by the name the client asks for (SNI); `cert`/`key` above
    /// serve every other name.
    pub sni: Vec<SniCert>,
}

/// One `[[tls.sni]]`: a certificate for the names a client may ask for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCert {
    /// Host names (exact, case-insensitive) this certificate serves.
    pub names: Vec<String>,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}
