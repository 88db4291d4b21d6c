//! moat's configuration: the TOML schema with its defaults, and validation that reports every
//! problem at once as `file: key: why`.
//!
//! Unknown keys are errors (`deny_unknown_fields`): a typo in a mail filter's config must not
//! silently fall back to a default.

mod checks;
mod duration;
pub mod lists;
mod ops;
mod smtp;
mod state;
mod upstream;
mod validate;

pub use checks::*;
pub use duration::ConfigDuration;
pub use ops::*;
pub use smtp::*;
pub use state::*;
pub use upstream::*;
pub use validate::{parse_nameserver, split_host_port};

use serde::Deserialize;
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
