//! The SMTP client towards the MTA: connect, EHLO, STARTTLS, XCLIENT/XFORWARD, MAIL, RCPT, DATA,
//! RSET, QUIT. It returns the MTA's replies as values and never decides what the client hears.
//!
//! Every await has a timeout from the config (RFC 5321 4.5.3.2). Any I/O error, timeout or
//! garbled reply makes the connection unusable: the caller drops it and opens a new one for the
//! next transaction, so a half-finished upstream transaction can never be reused.

mod reply_reader;

use crate::config::{split_host_port, Forwarding, UpstreamConfig};
use crate::net::stream::Stream;
use crate::smtp::extensions::UpstreamCapabilities;
use crate::smtp::reply::Reply;
use reply_reader::ReplyReader;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

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

/// Everything needed to open upstream sessions, built once from the config.
#[derive(Debug)]
pub struct UpstreamSettings {
    /// host:port of the MTA.
    pub address: String,
    /// The name in moat's EHLO.
    pub helo_name: String,
    /// XCLIENT, XFORWARD or none.
    pub forwarding: Forwarding,
    /// TLS client config and the name to verify, when STARTTLS is on.
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for replies to commands.
    pub command_timeout: Duration,
    /// Timeout for the final reply after the end of data.
    pub data_timeout: Duration,
    /// What the upstream offered most recently (shared by all sessions).
    pub learned: RwLock<Option<UpstreamCapabilities>>,
    /// Idle sessions between transactions of different clients, newest last.
    pool: Mutex<Vec<(Upstream, Instant)>>,
    /// Most idle sessions kept.
    pool_size: usize,
    /// Longest idle time of a pooled session.
    pool_idle: Duration,
}

impl UpstreamSettings {
    /// Builds the settings from `[upstream]`.
    pub fn new(
        config: &UpstreamConfig,
        helo_name: String,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, String> {
        let tls = match tls {
            Some(cfg) => {
                let host = config
                    .tls_server_name
                    .clone()
                    .or_else(|| split_host_port(&config.address).map(|(h, _)| h))
                    .unwrap_or_default();
                let name = ServerName::try_from(host.clone()).map_err(|_| {
                    format!("upstream.tls_server_name: {host:?} is not a valid TLS server name")
                })?;
                Some((cfg, name))
            }
            None => None,
        };
        Ok(UpstreamSettings {
            address: config.address.clone(),
            helo_name,
            forwarding: config.forwarding,
            tls,
            connect_timeout: config.connect_timeout.0,
            command_timeout: config.command_timeout.0,
            data_timeout: config.data_timeout.0,
            learned: RwLock::new(None),
            pool: Mutex::new(Vec::new()),
            pool_size: config.pool_size,
            pool_idle: config.pool_idle.0,
        })
    }

    /// The newest idle session young enough to reuse; older ones are closed.
    fn take_pooled(&self) -> Option<Upstream> {
        let mut pool = self.pool.lock().ok()?;
        while let Some((up, since)) = pool.pop() {
            if since.elapsed() < self.pool_idle {
                return Some(up);
            }
            tokio::spawn(up.quit());
        }
        None
    }

    /// Closes every idle session (at shutdown), politely.
    pub async fn close_pool(&self) {
        let idle: Vec<_> = match self.pool.lock() {
            Ok(mut p) => p.drain(..).collect(),
            Err(_) => return,
        };
        futures_util::future::join_all(idle.into_iter().map(|(up, _)| up.quit())).await;
    }

    /// The capabilities learned most recently, if the upstream ever answered.
    pub fn capabilities(&self) -> Option<UpstreamCapabilities> {
        self.learned.read().ok().and_then(|g| g.clone())
    }

    fn learn(&self, caps: &UpstreamCapabilities) {
        if let Ok(mut g) = self.learned.write() {
            if g.as_ref() != Some(caps) {
                *g = Some(caps.clone());
            }
        }
    }
}

/// Facts about the real client, for XCLIENT/XFORWARD.
#[derive(Debug, Clone)]
pub struct ClientFacts {
    /// The client's address and port.
    pub addr: SocketAddr,
    /// The client's verified host name, if known.
    pub name: Option<String>,
    /// The HELO/EHLO name the client gave.
    pub helo: Option<String>,
    /// `ESMTP` after EHLO, `SMTP` after HELO.
    pub proto: &'static str,
}

/// One open session with the MTA, ready for a transaction.
#[derive(Debug)]
pub struct Upstream {
    stream: Stream,
    reader: ReplyReader,
    settings: Arc<UpstreamSettings>,
    caps: UpstreamCapabilities,
    /// Replies that show the session is unusable; the caller must drop it.
    broken: bool,
    /// The HELO name and protocol last announced with XCLIENT.
    announced: Option<(Option<String>, &'static str)>,
    /// Taken from the pool and not yet used for a command: the MTA may have closed it.
    pooled: bool,
}

impl Upstream {
    /// Connects only to learn the upstream's EHLO capabilities (at start-up), then QUITs.
    pub async fn probe(
        settings: &Arc<UpstreamSettings>,
    ) -> Result<UpstreamCapabilities, UpstreamError> {
        let up = Self::open(settings).await?;
        let caps = up.caps.clone();
        settings.learn(&caps);
        up.quit().await;
        Ok(caps)
    }

    /// A session for `client`: an idle pooled one (announced again with XCLIENT), or a new
    /// one (greeting, EHLO, STARTTLS if configured, XCLIENT).
    pub async fn connect(
        settings: &Arc<UpstreamSettings>,
        client: &ClientFacts,
    ) -> Result<Upstream, UpstreamError> {
        while let Some(mut up) = settings.take_pooled() {
            up.pooled = true;
            if settings.forwarding != Forwarding::Xclient {
                return Ok(up);
            }
            match up.prepare(client).await {
                Ok(()) => return Ok(up),
                // The MTA closed it while idle, or will not take another XCLIENT on it: try the
                // next one, then a new connection.
                Err(e)
                    if e.may_retry_on_new_connection()
                        || matches!(
                            e,
                            UpstreamError::Timeout { .. }
                                | UpstreamError::NoXclient
                                | UpstreamError::Refused {
                                    stage: "XCLIENT",
                                    ..
                                }
                        ) =>
                {
                    tracing::debug!(upstream = %settings.address, error = %e, "pooled upstream session unusable; dropped");
                }
                Err(e) => return Err(e),
            }
        }
        let mut up = Self::open(settings).await?;
        if settings.forwarding == Forwarding::Xclient {
            up.prepare(client).await?;
        }
        settings.learn(&up.caps);
        Ok(up)
    }

    /// Tells the upstream who the client is before a transaction: XCLIENT again when the
    /// client's HELO changed since it was last announced (a session opened at connect, or a
    /// second EHLO), XFORWARD every time, since Postfix forgets XFORWARD attributes at the end
    /// of each transaction.
    pub async fn prepare(&mut self, client: &ClientFacts) -> Result<(), UpstreamError> {
        match self.settings.forwarding {
            Forwarding::Xclient => {
                let key = (client.helo.clone(), client.proto);
                if self.announced.as_ref() != Some(&key) {
                    self.xclient(client).await?;
                    self.announced = Some(key);
                }
                Ok(())
            }
            Forwarding::Xforward => self.xforward(client).await,
            Forwarding::None => Ok(()),
        }
    }

    async fn open(settings: &Arc<UpstreamSettings>) -> Result<Upstream, UpstreamError> {
        let address = settings.address.clone();
        let tcp = timeout(settings.connect_timeout, TcpStream::connect(&address))
            .await
            .map_err(|_| UpstreamError::Timeout { stage: "connect" })?
            .map_err(|source| UpstreamError::Connect { address, source })?;
        let _ = tcp.set_nodelay(true);
        let mut up = Upstream {
            stream: Stream::Plain(tcp),
            reader: ReplyReader::default(),
            settings: settings.clone(),
            caps: UpstreamCapabilities::default(),
            broken: false,
            announced: None,
            pooled: false,
        };
        let greeting = up.read_reply("greeting", settings.command_timeout).await?;
        if greeting.code != 220 {
            return Err(UpstreamError::Refused {
                stage: "greeting",
                reply: greeting,
            });
        }
        up.ehlo(None).await?;
        if let Some((tls, name)) = settings.tls.clone() {
            if !up.caps.starttls {
                return Err(UpstreamError::NoStartTls);
            }
            let reply = up.command("STARTTLS", "STARTTLS").await?;
            if reply.code != 220 {
                return Err(UpstreamError::Refused {
                    stage: "STARTTLS",
                    reply,
                });
            }
            let tcp = up.stream.take_plain().ok_or(UpstreamError::NoStartTls)?;
            let connector = tokio_rustls::TlsConnector::from(tls);
            let tls_stream = timeout(settings.command_timeout, connector.connect(name, tcp))
                .await
                .map_err(|_| UpstreamError::Timeout {
                    stage: "TLS handshake",
                })?
                .map_err(UpstreamError::Tls)?;
            up.stream = Stream::ClientTls(Box::new(tls_stream));
            // RFC 3207 4.2: forget everything learned before the handshake.
            up.reader = ReplyReader::default();
            up.ehlo(None).await?;
        }
        Ok(up)
    }

    /// EHLO with moat's own name, or after XCLIENT with the client's.
    async fn ehlo(&mut self, name: Option<&str>) -> Result<(), UpstreamError> {
        let line = format!("EHLO {}", name.unwrap_or(&self.settings.helo_name));
        let reply = self.command(&line, "EHLO").await?;
        if reply.code != 250 {
            return Err(UpstreamError::Refused {
                stage: "EHLO",
                reply,
            });
        }
        self.caps = UpstreamCapabilities::from_ehlo_lines(&reply.lines);
        Ok(())
    }

    /// Postfix XCLIENT_README: send the attributes the server lists, in commands of at most
    /// 512 octets; each is answered with a new greeting (220), after which the session starts
    /// over with EHLO. That EHLO carries the client's own HELO name, because Postfix takes the
    /// HELO name from the EHLO that follows XCLIENT.
    async fn xclient(&mut self, client: &ClientFacts) -> Result<(), UpstreamError> {
        let Some(allowed) = self.caps.xclient.clone() else {
            return Err(UpstreamError::NoXclient);
        };
        let attrs = forwarding_attributes(client, true);
        for line in attribute_lines("XCLIENT", &attrs, &allowed) {
            let reply = self.command(&line, "XCLIENT").await?;
            if !(200..300).contains(&reply.code) {
                // Postfix refuses XCLIENT only for authorization: a configuration problem.
                return Err(UpstreamError::Refused {
                    stage: "XCLIENT",
                    reply,
                });
            }
        }
        let helo = client.helo.clone();
        match self.ehlo(helo.as_deref()).await {
            Err(UpstreamError::Refused { reply, .. }) if !self.broken => {
                Err(UpstreamError::ClientRefused { reply })
            }
            other => other,
        }
    }

    async fn xforward(&mut self, client: &ClientFacts) -> Result<(), UpstreamError> {
        let Some(allowed) = self.caps.xforward.clone() else {
            // XFORWARD mode accepts an MTA without it: the admin chose plain mode as fallback.
            tracing::warn!(upstream = %self.settings.address, "upstream does not offer XFORWARD; the MTA sees moat's address as the client");
            return Ok(());
        };
        let attrs = forwarding_attributes(client, false);
        for line in attribute_lines("XFORWARD", &attrs, &allowed) {
            let reply = self.command(&line, "XFORWARD").await?;
            if reply.code != 250 {
                return Err(UpstreamError::Refused {
                    stage: "XFORWARD",
                    reply,
                });
            }
        }
        Ok(())
    }

    /// True when this session came from the pool and has not answered a command since: a
    /// failure on it may only mean the MTA closed it while idle.
    pub fn is_untried_from_pool(&self) -> bool {
        self.pooled
    }

    /// False once a failure made this session unusable.
    pub fn is_healthy(&self) -> bool {
        !self.broken
    }

    /// Sends one command line and reads its reply.
    pub async fn command(
        &mut self,
        line: &str,
        stage: &'static str,
    ) -> Result<Reply, UpstreamError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes, stage).await?;
        let reply = self
            .read_reply(stage, self.settings.command_timeout)
            .await?;
        self.pooled = false;
        if reply.code == 421 {
            // RFC 5321 3.8: the server is closing; the session cannot be used further.
            self.broken = true;
        }
        Ok(reply)
    }

    /// Sends the message with DATA: the 354, the dot-stuffed body, and the final reply.
    /// `prefix` (moat's own header lines) goes before the body.
    pub async fn data(&mut self, prefix: &[u8], body: &[u8]) -> Result<Reply, UpstreamError> {
        let reply = self.command("DATA", "DATA").await?;
        if reply.code != 354 {
            return Ok(reply);
        }
        let mut out = Vec::with_capacity(prefix.len() + body.len() + body.len() / 64 + 5);
        crate::smtp::dot_stuff::dot_stuff(prefix, &mut out);
        crate::smtp::dot_stuff::dot_stuff(body, &mut out);
        if !out.is_empty() && !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.write(&out, "message data").await?;
        let reply = self
            .read_reply("end of data", self.settings.data_timeout)
            .await?;
        Ok(reply)
    }

    /// Ends the current transaction (RSET); on any failure the session is marked broken.
    pub async fn rset(&mut self) {
        match self.command("RSET", "RSET").await {
            Ok(r) if r.code == 250 => {}
            _ => self.broken = true,
        }
    }

    /// Hands a session outside any transaction back for the next client, or QUITs it when the
    /// pool is full or off. Its announced identity is forgotten, so the next client is always
    /// announced with XCLIENT before its first transaction.
    pub async fn release(mut self) {
        // Postfix re-evaluates XCLIENT authorization for the client it names, so after XCLIENT
        // it no longer offers (or accepts) another one: such a session cannot serve the next
        // client. An MTA that still offers XCLIENT after its EHLO can be reused.
        let reusable =
            self.settings.forwarding != Forwarding::Xclient || self.caps.xclient.is_some();
        if !self.broken && reusable && self.settings.pool_size > 0 {
            let settings = self.settings.clone();
            self.announced = None;
            let rejected = match settings.pool.lock() {
                Ok(mut pool) if pool.len() < settings.pool_size => {
                    pool.push((self, Instant::now()));
                    None
                }
                _ => Some(self),
            };
            if let Some(up) = rejected {
                up.quit().await;
            }
            return;
        }
        self.quit().await;
    }

    /// Ends the session politely; errors do not matter any more.
    pub async fn quit(mut self) {
        if !self.broken {
            let _ = timeout(Duration::from_secs(5), async {
                if self.write(b"QUIT\r\n", "QUIT").await.is_ok() {
                    let _ = self.read_reply("QUIT", Duration::from_secs(5)).await;
                }
            })
            .await;
        }
        let _ = self.stream.shutdown().await;
    }

    async fn write(&mut self, bytes: &[u8], stage: &'static str) -> Result<(), UpstreamError> {
        let t = self.settings.command_timeout;
        let res = timeout(t, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => {
                self.broken = true;
                Err(UpstreamError::Io { stage, source })
            }
            Err(_) => {
                self.broken = true;
                Err(UpstreamError::Timeout { stage })
            }
        }
    }

    async fn read_reply(
        &mut self,
        stage: &'static str,
        limit: Duration,
    ) -> Result<Reply, UpstreamError> {
        let res = timeout(limit, self.reader.read(&mut self.stream, stage)).await;
        match res {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => {
                self.broken = true;
                Err(e)
            }
            Err(_) => {
                self.broken = true;
                Err(UpstreamError::Timeout { stage })
            }
        }
    }
}

fn forwarding_attributes(client: &ClientFacts, xclient: bool) -> Vec<(&'static str, String)> {
    let addr = match client.addr.ip() {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("IPV6:{ip}"),
    };
    let unavailable = "[UNAVAILABLE]".to_string();
    let mut attrs = vec![
        ("ADDR", addr),
        ("PORT", client.addr.port().to_string()),
        (
            "NAME",
            client.name.clone().unwrap_or_else(|| unavailable.clone()),
        ),
        (
            "HELO",
            client
                .helo
                .clone()
                .map(|h| xtext(&h))
                .unwrap_or(unavailable),
        ),
        ("PROTO", client.proto.to_string()),
    ];
    if !xclient {
        attrs.push(("SOURCE", "REMOTE".to_string()));
    }
    attrs
}

/// The attribute commands, split so that no line exceeds RFC 5321's 512 octets (with CRLF).
fn attribute_lines(
    verb: &str,
    attrs: &[(&'static str, String)],
    allowed: &[String],
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = verb.to_string();
    for (k, v) in attrs {
        if !allowed.iter().any(|a| a == k) {
            continue;
        }
        let attr = format!(" {k}={v}");
        if line.len() + attr.len() > 510 && line.len() > verb.len() {
            lines.push(std::mem::replace(&mut line, verb.to_string()));
        }
        line.push_str(&attr);
    }
    if line.len() > verb.len() {
        lines.push(line);
    }
    lines
}

/// RFC 3461 4: xtext, as XCLIENT and XFORWARD attribute values require.
fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_escapes() {
        assert_eq!(xtext("a b+c=d"), "a+20b+2Bc+3Dd");
    }

    #[test]
    fn only_listed_attributes_are_sent() {
        let facts = ClientFacts {
            addr: "[2001:db8::1]:4000".parse().unwrap(),
            name: None,
            helo: Some("h".into()),
            proto: "ESMTP",
        };
        let lines = attribute_lines(
            "XCLIENT",
            &forwarding_attributes(&facts, true),
            &["ADDR".into(), "HELO".into()],
        );
        assert_eq!(lines, vec!["XCLIENT ADDR=IPV6:2001:db8::1 HELO=h"]);
        let long = ClientFacts {
            helo: Some("h".repeat(255)),
            name: Some("n".repeat(255)),
            ..facts
        };
        let all: Vec<String> = ["ADDR", "PORT", "NAME", "HELO", "PROTO"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let lines = attribute_lines("XCLIENT", &forwarding_attributes(&long, true), &all);
        assert_eq!(lines.len(), 2);
        assert!(lines
            .iter()
            .all(|l| l.len() <= 510 && l.starts_with("XCLIENT ")));
    }
}
