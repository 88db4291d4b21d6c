//! moat's configuration: the TOML schema with its defaults, and validation that reports every
//! problem at once as `file: key: why`.
//!
//! Unknown keys are errors (`deny_unknown_fields`): a typo in a mail filter's config must not
//! silently fall back to a default.

pub mod lists;

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors that stop start-up; each names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// toml's message, with line and column.
        message: String,
    },
    /// One or more values are invalid.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The inbound SMTP service.
    pub server: ServerConfig,
    /// Protocol limits and timeouts.
    pub limits: LimitsConfig,
    /// STARTTLS towards clients.
    pub tls: TlsConfig,
    /// The MTA behind moat.
    pub upstream: UpstreamConfig,
    /// Logging.
    pub log: LogConfig,
    /// The shared DNS resolver.
    pub dns: DnsConfig,
    /// Where the rule files live.
    pub rules: RulesConfig,
    /// Score thresholds and actions.
    pub verdict: VerdictConfig,
    /// Sender authentication policy (SPF, DKIM, DMARC, ARC).
    pub auth: AuthConfig,
    /// Headers moat adds to accepted messages.
    pub headers: HeadersConfig,
    /// The Prometheus and health endpoint.
    pub metrics: MetricsConfig,
    /// Shared state for greylisting and rate limits.
    pub store: StoreConfig,
    /// Greylisting at RCPT.
    pub greylist: GreylistConfig,
    /// Rate limits at RCPT (`[[ratelimit]]`, any number).
    pub ratelimit: Vec<RateLimitConfig>,
    /// Copies of messages refused at DATA.
    pub quarantine: QuarantineConfig,
    /// Transaction records for replay.
    pub records: RecordsConfig,
    /// The statistical classifier.
    pub bayes: BayesConfig,
    /// Where this config was read from (for error messages); not a key.
    #[serde(skip)]
    pub source: PathBuf,
}

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

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// tracing filter directive, e.g. `info` or `moat=debug`; `RUST_LOG` overrides it.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `[dns]`: the one resolver every check uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Nameservers as `IP` or `IP:port` (UDP and TCP); empty means /etc/resolv.conf.
    pub nameservers: Vec<String>,
    /// Timeout of one DNS query.
    pub timeout: ConfigDuration,
    /// Tries per query.
    pub attempts: usize,
    /// Answers kept in the resolver's cache.
    pub cache_size: u64,
    /// Longest wait for one blocklist answer; a list that is slower scores nothing. Kept short
    /// because the connect stage (and so the greeting) waits for the IP lists.
    pub list_timeout: ConfigDuration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            nameservers: Vec::new(),
            timeout: ConfigDuration::secs(5),
            attempts: 2,
            cache_size: 65536,
            list_timeout: ConfigDuration::secs(2),
        }
    }
}

/// `[rules]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Directory with `symbols.toml` and the rule files; unset means the built-in defaults.
    pub dir: Option<PathBuf>,
    /// How often the directory is checked for changes (a change reloads the rules).
    pub watch_interval: ConfigDuration,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            dir: None,
            watch_interval: ConfigDuration::secs(2),
        }
    }
}

/// `[verdict]`: score thresholds, reply texts, shadow mode.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerdictConfig {
    /// Score at which `X-Spam-Flag: YES` is added.
    pub add_header: f64,
    /// Score at which the message is deferred with 451 4.7.1 (unset: never by score).
    pub tempfail: Option<f64>,
    /// Score at which the message (or, earlier, the command) is refused with 5xx.
    pub reject: f64,
    /// Score and log everything, add headers, but refuse nothing.
    pub shadow: bool,
    /// Refuse at RCPT what was decided at connect, HELO or MAIL (Postfix's smtpd_delay_reject),
    /// so the log shows sender and recipients; the upstream is still never contacted.
    pub delay_reject: bool,
    /// Text of the 550 5.7.1 reply; `{score}` is replaced by the score.
    pub reject_text: String,
    /// Text of the 451 4.7.1 reply; `{score}` is replaced by the score.
    pub tempfail_text: String,
    /// Longest time the checks of one stage may take; late checks add nothing.
    pub stage_timeout: ConfigDuration,
}

impl Default for VerdictConfig {
    fn default() -> Self {
        VerdictConfig {
            add_header: 6.0,
            tempfail: None,
            reject: 15.0,
            shadow: false,
            delay_reject: false,
            reject_text: "Message rejected as spam (score {score})".into(),
            tempfail_text: "Message deferred, try again later (score {score})".into(),
            stage_timeout: ConfigDuration::secs(8),
        }
    }
}

/// What a DNS failure (temperror) during authentication does.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DnsFailure {
    /// Defer with 451 4.4.3 so the sender retries (RFC 7208 8.6).
    #[default]
    Tempfail,
    /// Only score the temperror symbols.
    Score,
}

/// `[auth]`: sender authentication policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Run SPF, DKIM, ARC and DMARC at all.
    pub enabled: bool,
    /// Refuse at MAIL FROM (550 5.7.23) when SPF for the envelope sender fails.
    pub spf_reject_on_fail: bool,
    /// Refuse at connect (554 5.7.25) clients without a PTR name that resolves back.
    pub rdns_reject: bool,
    /// Refuse at end of data (550 5.7.20) a message whose DKIM signatures all fail.
    pub dkim_reject_on_fail: bool,
    /// Apply the sender domain's DMARC policy: p=reject refuses, p=quarantine adds the spam flag.
    pub dmarc_enforce: bool,
    /// ARC sealers (d= domains) whose passing chain overrides a DMARC fail (e.g. mailing lists).
    pub arc_trusted_sealers: Vec<String>,
    /// What a DNS temperror in SPF, DKIM or DMARC does: "tempfail" (451 4.4.3) or "score".
    pub dns_failure: DnsFailure,
    /// The From problems refused at end of data (550 5.7.1); the others only score.
    pub from_reject: Vec<FromProblem>,
}

/// A From field that is not one clear mailbox (`auth.from_reject`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FromProblem {
    /// No From field.
    Missing,
    /// More than one From field.
    Multiple,
    /// One From field with several mailboxes or a group.
    Mailboxes,
    /// A From field that does not parse to exactly one address.
    Malformed,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            spf_reject_on_fail: false,
            rdns_reject: false,
            dkim_reject_on_fail: false,
            dmarc_enforce: true,
            arc_trusted_sealers: Vec::new(),
            dns_failure: DnsFailure::Tempfail,
            from_reject: vec![
                FromProblem::Missing,
                FromProblem::Multiple,
                FromProblem::Mailboxes,
                FromProblem::Malformed,
            ],
        }
    }
}

/// Which store backend holds the shared state.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// A redb file on local disk: nothing to install, one instance.
    #[default]
    Embedded,
    /// A Redis server shared by several instances.
    Redis,
}

/// What a stateful check does when the store fails.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreFailure {
    /// Skip the check (with a symbol and a metric) and go on.
    #[default]
    Skip,
    /// Answer 451 4.3.0 so the client retries later.
    Tempfail,
}

/// `[store]`: the key-value store behind greylisting and rate limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `embedded` (default) or `redis`.
    pub backend: StoreBackend,
    /// The embedded database file; its directory is created if missing.
    pub path: PathBuf,
    /// Redis URL (`redis://[user:password@]host:port/db`).
    pub url: String,
    /// Prefix of every Redis key.
    pub prefix: String,
    /// How long one store operation may take.
    pub timeout: ConfigDuration,
    /// What a check does when the store fails: `skip` or `tempfail`.
    pub on_failure: StoreFailure,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Embedded,
            path: PathBuf::from("/var/lib/moat/state.redb"),
            url: "redis://127.0.0.1:6379/0".into(),
            prefix: "moat:".into(),
            timeout: ConfigDuration(Duration::from_millis(500)),
            on_failure: StoreFailure::Skip,
        }
    }
}

/// `[greylist]`: defer first-time (client, sender, recipient) triplets of suspicious mail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GreylistConfig {
    /// Off by default: greylisting delays mail, so an admin turns it on knowingly.
    pub enabled: bool,
    /// How long a new triplet is deferred.
    pub delay: ConfigDuration,
    /// How long after the delay a retry is still accepted as the same triplet.
    pub retry_window: ConfigDuration,
    /// How long a triplet (and its sender domain from that network) passes without delay
    /// after one successful retry.
    pub lifetime: ConfigDuration,
    /// Greylist only when the score so far (connect, HELO, MAIL checks) reaches this.
    pub min_score: f64,
    /// Client networks are compared by this IPv4 prefix (a provider retries from another
    /// address of the same pool).
    pub ipv4_prefix: u8,
    /// The same for IPv6.
    pub ipv6_prefix: u8,
    /// An SPF-authenticated sender domain that once passed greylisting skips it for
    /// `lifetime`, for every recipient (a good history).
    pub trust_spf_history: bool,
}

impl Default for GreylistConfig {
    fn default() -> Self {
        GreylistConfig {
            enabled: false,
            delay: ConfigDuration::secs(300),
            retry_window: ConfigDuration::secs(4 * 3600),
            lifetime: ConfigDuration::secs(36 * 86400),
            min_score: 1.0,
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            trust_spf_history: true,
        }
    }
}

/// What a rate limit counts by.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RateKey {
    /// The client's IP address.
    Ip,
    /// The envelope sender address (`<>` counts as one sender).
    Sender,
    /// The envelope sender's domain.
    SenderDomain,
    /// The recipient address.
    Recipient,
}

/// The reply when a rate limit is exceeded.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum RateReply {
    /// 452 4.7.28: too many recipients for now (the client may try the rest later).
    #[default]
    #[serde(rename = "452")]
    TooMany,
    /// 451 4.7.1: try again later.
    #[serde(rename = "451")]
    Later,
}

/// One `[[ratelimit]]`: at most `limit` recipients per `window` for each value of `key`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// A name for logs and the symbol's detail, e.g. "per-ip".
    pub name: String,
    /// What is counted by.
    pub key: RateKey,
    /// Recipients allowed per window.
    pub limit: u64,
    /// The sliding window.
    pub window: ConfigDuration,
    /// `"452"` (default) or `"451"`.
    #[serde(default)]
    pub reply: RateReply,
}

/// `[quarantine]`: keep messages refused at end of data, to inspect or release them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineConfig {
    /// Off by default.
    pub enabled: bool,
    /// Where the messages (`ID.eml`) and their records (`ID.json`) go; created if missing.
    pub dir: PathBuf,
    /// Most megabytes kept; the oldest entries go first.
    pub max_size_mb: u64,
    /// Entries older than this are removed.
    pub max_age: ConfigDuration,
    /// Also keep tempfailed messages (the sender retries them anyway).
    pub tempfail: bool,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        QuarantineConfig {
            enabled: false,
            dir: PathBuf::from("/var/lib/moat/quarantine"),
            max_size_mb: 1024,
            max_age: ConfigDuration::secs(30 * 86400),
            tempfail: false,
        }
    }
}

/// `[bayes]`: the statistical classifier at the data stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BayesConfig {
    /// On by default; it stays silent until it has learned enough.
    pub enabled: bool,
    /// The model file when `[store]` is embedded (with Redis the model lives in Redis).
    pub path: PathBuf,
    /// Spam messages to learn before the classifier says anything.
    pub min_spam: u32,
    /// Ham messages to learn before the classifier says anything.
    pub min_ham: u32,
    /// A token not learned again for this long is forgotten.
    pub token_ttl: ConfigDuration,
    /// How often `serve` checks the model file for a change (embedded store).
    pub reload_interval: ConfigDuration,
}

impl Default for BayesConfig {
    fn default() -> Self {
        BayesConfig {
            enabled: true,
            path: PathBuf::from("/var/lib/moat/bayes.redb"),
            min_spam: 200,
            min_ham: 200,
            token_ttl: ConfigDuration::secs(180 * 86400),
            reload_interval: ConfigDuration::secs(60),
        }
    }
}

/// `[records]`: a record of each transaction (what came in, the DNS answers used, what was
/// decided), for `moat check --replay`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsConfig {
    /// Off by default.
    pub enabled: bool,
    /// Where the records (`ID.json`) and messages (`ID.eml`) go; created if missing.
    pub dir: PathBuf,
    /// Most megabytes kept; the oldest records go first.
    pub max_size_mb: u64,
    /// Records older than this are removed.
    pub max_age: ConfigDuration,
    /// Keep a record for every rejected message.
    pub rejected: bool,
    /// Keep a record for every tempfailed message.
    pub tempfailed: bool,
    /// The fraction of accepted messages (flagged or not) to keep a record for, 0.0 to 1.0.
    pub accepted_sample: f64,
    /// Keep the message with its record (needed to replay it).
    pub message: bool,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        RecordsConfig {
            enabled: false,
            dir: PathBuf::from("/var/lib/moat/records"),
            max_size_mb: 1024,
            max_age: ConfigDuration::secs(7 * 86400),
            rejected: true,
            tempfailed: true,
            accepted_sample: 0.0,
            message: true,
        }
    }
}

/// `[metrics]`: the HTTP endpoint for /metrics, /healthz and /readyz.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// IP:port to serve on; an empty string turns the endpoint off.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9925".into(),
        }
    }
}

/// `[headers]`: what moat adds to messages it passes on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadersConfig {
    /// The authserv-id of Authentication-Results (RFC 8601); default `server.hostname`.
    pub authserv_id: Option<String>,
    /// Add a Received line for the hop through moat.
    pub received: bool,
}

impl Default for HeadersConfig {
    fn default() -> Self {
        HeadersConfig {
            authserv_id: None,
            received: true,
        }
    }
}

/// A duration written as `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"36d"` or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    /// Whole seconds.
    pub const fn secs(n: u64) -> Self {
        ConfigDuration(Duration::from_secs(n))
    }

    /// Parses the textual form.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (num, unit) = text.split_at(split);
        let n: u64 = num.parse().ok()?;
        let d = match unit.trim() {
            "ms" => Duration::from_millis(n),
            "" | "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            "d" => Duration::from_secs(n.checked_mul(86400)?),
            _ => return None,
        };
        Some(ConfigDuration(d))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration such as \"30s\", \"5m\", \"1h\", \"250ms\" or a number of seconds",
                )
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(ConfigDuration::secs)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                ConfigDuration::parse(v)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        config.source = path.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text; `path` only labels errors. Does not validate.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: describe_toml_error(&e, text),
        })?;
        config.source = path.to_path_buf();
        Ok(config)
    }

    /// Checks every value that serde cannot; returns all problems, one per line.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let file = self.source.display().to_string();
        let mut errors = Vec::new();
        let mut bad = |key: &str, why: String| errors.push(format!("{file}: {key}: {why}"));
        if self.server.listen.is_empty() {
            bad("server.listen", "at least one address is needed".into());
        }
        for (i, addr) in self.server.listen.iter().enumerate() {
            if addr.parse::<SocketAddr>().is_err() {
                bad(
                    &format!("server.listen[{i}]"),
                    format!(
                        "{addr:?} is not an IP:port address (e.g. \"0.0.0.0:25\" or \"[::]:25\")"
                    ),
                );
            }
        }
        if !(0.0..=1.0).contains(&self.records.accepted_sample) {
            bad(
                "records.accepted_sample",
                format!(
                    "{} is not a fraction between 0.0 and 1.0",
                    self.records.accepted_sample
                ),
            );
        }
        if let Some(h) = &self.server.hostname {
            if h.is_empty() || h.contains(|c: char| c.is_whitespace() || c.is_control()) {
                bad("server.hostname", format!("{h:?} is not a host name"));
            }
        }
        if let Err(e) = crate::config::lists::parse(
            &self.server.xforward_hosts.join("\n"),
            "server.xforward_hosts",
            true,
        ) {
            bad("server.xforward_hosts", e.to_string());
        }
        if self.greylist.ipv4_prefix > 32 {
            bad("greylist.ipv4_prefix", "must be 0-32".into());
        }
        if self.greylist.ipv6_prefix > 128 {
            bad("greylist.ipv6_prefix", "must be 0-128".into());
        }
        if self.greylist.retry_window.0.is_zero() {
            bad("greylist.retry_window", "must be more than 0".into());
        }
        for (i, r) in self.ratelimit.iter().enumerate() {
            if r.name.is_empty() || r.name.contains(char::is_whitespace) {
                bad(&format!("ratelimit[{i}].name"), "must be one word".into());
            }
            if self.ratelimit[..i].iter().any(|o| o.name == r.name) {
                bad(
                    &format!("ratelimit[{i}].name"),
                    format!(
                        "{:?} is used twice (limits with one name share a count)",
                        r.name
                    ),
                );
            }
            if r.limit == 0 {
                bad(
                    &format!("ratelimit[{i}].limit"),
                    "must be at least 1".into(),
                );
            }
            if r.window.0 < Duration::from_secs(1) {
                bad(
                    &format!("ratelimit[{i}].window"),
                    "must be at least 1s".into(),
                );
            }
        }
        if self.store.timeout.0.is_zero() {
            bad("store.timeout", "must be more than 0".into());
        }
        match self.store.backend {
            StoreBackend::Embedded if self.store.path.as_os_str().is_empty() => {
                bad("store.path", "must name the database file".into())
            }
            StoreBackend::Redis => {
                if let Err(e) = redis::Client::open(self.store.url.as_str()) {
                    bad(
                        "store.url",
                        format!("{:?} is not a Redis URL: {e}", self.store.url),
                    );
                }
            }
            StoreBackend::Embedded => {}
        }
        for (i, p) in self.server.proxy_protocol.iter().enumerate() {
            if !self.server.listen.contains(p) {
                bad(
                    &format!("server.proxy_protocol[{i}]"),
                    format!("{p:?} is not one of server.listen"),
                );
            }
        }
        if !self.server.proxy_protocol.is_empty() && self.server.proxy_trusted.is_empty() {
            bad(
                "server.proxy_trusted",
                "needed with server.proxy_protocol: the load balancers' addresses (IP or CIDR)"
                    .into(),
            );
        }
        if let Err(e) = crate::config::lists::parse(
            &self.server.proxy_trusted.join("\n"),
            "server.proxy_trusted",
            true,
        ) {
            bad("server.proxy_trusted", e.to_string());
        }
        for (i, l) in self.tls.required_on.iter().enumerate() {
            if !self.server.listen.contains(l) {
                bad(
                    &format!("tls.required_on[{i}]"),
                    format!("{l:?} is not one of server.listen"),
                );
            }
        }
        if !self.tls.required_on.is_empty() && self.tls.cert.is_none() {
            bad(
                "tls.required_on",
                "needs tls.cert and tls.key: TLS cannot be required without a certificate".into(),
            );
        }
        if self.server.max_sessions == 0 {
            bad("server.max_sessions", "must be at least 1".into());
        }
        if self.server.max_sessions_per_ip == 0 {
            bad("server.max_sessions_per_ip", "must be at least 1".into());
        }
        if self.limits.max_recipients == 0 {
            bad(
                "limits.max_recipients",
                "must be at least 1 (RFC 5321 asks for 100)".into(),
            );
        }
        if self.limits.max_command_line < 512 {
            bad(
                "limits.max_command_line",
                "RFC 5321 4.5.3.1.4 requires at least 512".into(),
            );
        }
        if self.limits.max_line_length < 998 {
            bad(
                "limits.max_line_length",
                "RFC 5321 4.5.3.1.6 requires at least 998".into(),
            );
        }
        if self.limits.max_message_size < 1024 {
            bad(
                "limits.max_message_size",
                "must be at least 1024 octets".into(),
            );
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => bad(
                "tls.key",
                "missing: tls.cert is set, so tls.key is needed".into(),
            ),
            (None, Some(_)) => bad(
                "tls.cert",
                "missing: tls.key is set, so tls.cert is needed".into(),
            ),
            _ => {}
        }
        if !self.tls.sni.is_empty() && self.tls.cert.is_none() {
            bad(
                "tls.sni",
                "needs tls.cert and tls.key for the clients that ask for no listed name".into(),
            );
        }
        for (i, s) in self.tls.sni.iter().enumerate() {
            if s.names.is_empty() {
                bad(
                    &format!("tls.sni[{i}].names"),
                    "at least one name is needed".into(),
                );
            }
            for (what, p) in [("cert", &s.cert), ("key", &s.key)] {
                if !p.is_file() {
                    bad(
                        &format!("tls.sni[{i}].{what}"),
                        format!("{} does not exist or is not a file", p.display()),
                    );
                }
            }
        }
        for (key, path) in [
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
            ("upstream.tls_ca", &self.upstream.tls_ca),
        ] {
            if let Some(p) = path {
                if !p.is_file() {
                    bad(
                        key,
                        format!("{} does not exist or is not a file", p.display()),
                    );
                }
            }
        }
        if split_host_port(&self.upstream.address).is_none() {
            bad(
                "upstream.address",
                format!(
                    "{:?} is not host:port (e.g. \"127.0.0.1:10025\")",
                    self.upstream.address
                ),
            );
        }
        if self.upstream.starttls && self.upstream.tls_verify && self.upstream.tls_ca.is_none() {
            bad(
                "upstream.tls_ca",
                "needed when upstream.starttls and upstream.tls_verify are on (or set tls_verify = false for a trusted loopback hop)".into(),
            );
        }
        for (i, ns) in self.dns.nameservers.iter().enumerate() {
            if parse_nameserver(ns).is_none() {
                bad(
                    &format!("dns.nameservers[{i}]"),
                    format!("{ns:?} is not an IP address or IP:port (e.g. \"127.0.0.1\" or \"[::1]:53\")"),
                );
            }
        }
        if self.dns.attempts == 0 {
            bad("dns.attempts", "must be at least 1".into());
        }
        let v = &self.verdict;
        if !(v.add_header.is_finite() && v.reject.is_finite()) || v.add_header > v.reject {
            bad(
                "verdict.add_header",
                format!(
                    "{} must be a number no higher than verdict.reject ({})",
                    v.add_header, v.reject
                ),
            );
        }
        if let Some(t) = v.tempfail {
            if !t.is_finite() || t > v.reject || t < v.add_header {
                bad(
                    "verdict.tempfail",
                    format!("{t} must lie between verdict.add_header and verdict.reject"),
                );
            }
        }
        if let Some(dir) = &self.rules.dir {
            if !dir.is_dir() {
                bad("rules.dir", format!("{} is not a directory", dir.display()));
            }
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<SocketAddr>().is_err() {
            bad(
                "metrics.listen",
                format!(
                    "{:?} is not IP:port (or \"\" to turn the endpoint off)",
                    self.metrics.listen
                ),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            bad(
                "log.level",
                format!(
                    "{:?} is not a tracing filter (e.g. \"info\")",
                    self.log.level
                ),
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    /// The authserv-id for Authentication-Results.
    pub fn authserv_id(&self) -> String {
        self.headers
            .authserv_id
            .clone()
            .unwrap_or_else(|| self.hostname())
    }

    /// The host name moat uses in its greeting and EHLO reply.
    pub fn hostname(&self) -> String {
        self.server.hostname.clone().unwrap_or_else(system_hostname)
    }
}

/// Parses a nameserver as `IP` (port 53) or `IP:port` / `[IPv6]:port`.
pub fn parse_nameserver(text: &str) -> Option<SocketAddr> {
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    text.parse().ok()
}

/// Splits `host:port` (with `[v6]:port`) into its parts.
pub fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// toml's error with the line number, so the admin sees where it is.
pub(crate) fn describe_toml_error(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {msg}")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(ConfigDuration::parse("5m"), Some(ConfigDuration::secs(300)));
        assert_eq!(
            ConfigDuration::parse("250ms").unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(ConfigDuration::parse("7"), Some(ConfigDuration::secs(7)));
        assert_eq!(
            ConfigDuration::parse("36d"),
            Some(ConfigDuration::secs(36 * 86400))
        );
        assert!(ConfigDuration::parse("5 weeks").is_none());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_reported_with_file_and_key() {
        let p = Path::new("moat.toml");
        let err = Config::parse("[server]\nlisten_on = []\n", p)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("moat.toml: line 2"), "{err}");
        assert!(err.contains("listen_on"), "{err}");
        let c = Config::parse("[server]\nlisten = [\"nope\"]\n[tls]\ncert = \"/nonexistent.pem\"\nkey = \"/nonexistent.key\"\n", p).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("moat.toml: server.listen[0]: \"nope\""),
            "{err}"
        );
        assert!(
            err.contains("moat.toml: tls.cert: /nonexistent.pem does not exist"),
            "{err}"
        );
        assert!(err.contains("moat.toml: tls.key:"), "{err}");
    }

    #[test]
    fn store_settings_are_validated() {
        let p = Path::new("moat.toml");
        let c = Config::parse(
            "[store]\nbackend = \"redis\"\nurl = \"http://nope\"\ntimeout = \"0ms\"\n",
            p,
        )
        .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("moat.toml: store.url: \"http://nope\" is not a Redis URL"),
            "{err}"
        );
        assert!(
            err.contains("moat.toml: store.timeout: must be more than 0"),
            "{err}"
        );
        let err = Config::parse("[store]\nbackend = \"memcached\"\n", p).unwrap_err();
        assert!(err.to_string().contains("memcached"), "{err}");
        let c = Config::parse(
            "[store]\nbackend = \"redis\"\non_failure = \"tempfail\"\n",
            p,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.store.on_failure, StoreFailure::Tempfail);
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::parse("", Path::new("x.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.limits.max_message_size, 26214400);
        assert_eq!(split_host_port("[::1]:25"), Some(("::1".into(), 25)));
    }
}
