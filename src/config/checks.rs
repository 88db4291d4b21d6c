//! `[dns]`, `[rules]`, `[verdict]`, `[auth]`, `[greylist]`, `[ratelimit]` and `[bayes]`: the
//! checks and how their scores decide.

use super::ConfigDuration;
use serde::Deserialize;
use std::path::PathBuf;

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
