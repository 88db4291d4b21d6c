//! `[log]`, `[metrics]` and `[headers]`: what moat tells the admin and adds to messages.

use serde::Deserialize;

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
