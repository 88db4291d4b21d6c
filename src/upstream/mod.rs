//! The SMTP client towards the MTA: connect, EHLO, STARTTLS, XCLIENT/XFORWARD, MAIL, RCPT, DATA,
//! RSET, QUIT. It returns the MTA's replies as values and never decides what the client hears.
//!
//! Every await has a timeout from the config (RFC 5321 4.5.3.2). Any I/O error, timeout or
//! garbled reply makes the connection unusable: the caller drops it and opens a new one for the
//! next transaction, so a half-finished upstream transaction can never be reused.

mod error;
mod forwarding;
mod reply_reader;
mod settings;

pub use error::UpstreamError;
pub use forwarding::ClientFacts;
pub use settings::UpstreamSettings;

use forwarding::{attribute_lines, forwarding_attributes};

use crate::config::Forwarding;
use crate::net::stream::Stream;
use crate::smtp::extensions::UpstreamCapabilities;
use crate::smtp::reply::Reply;
use reply_reader::ReplyReader;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

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
