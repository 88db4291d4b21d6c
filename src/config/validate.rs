//! Validation of what serde cannot check: addresses, ranges, files, lists. Every problem is
//! reported at once, one per line as `file: key: why`.

use super::*;
use std::net::SocketAddr;

impl Config {
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
