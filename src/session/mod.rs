//! One client session: reads commands, runs them through the state machine, the pipeline and
//! the upstream, and writes the replies. The only orchestrator in moat.
//!
//! Lock-step (DESIGN.md): MAIL and RCPT are answered with the upstream's reply; the message is
//! read in full, checked, then sent upstream, and the client hears 2xx for it only after the
//! upstream said 2xx to its end of data. Any upstream failure gives the client a 4xx and drops
//! the upstream session, so a half-sent message is never completed by a later command.
//!
//! Shutdown: a session that waits for a command outside a transaction answers 421 and ends; a
//! session inside a transaction runs on until the transaction ends (or the listener's grace
//! period runs out and the task is dropped, which closes both sockets with nothing forwarded).

pub mod conn;
pub mod state;

use crate::auth::AuthFacts;
use crate::config::VerdictConfig;
use crate::config::{Config, ConnectAt, EarlyTalkerAction};
use crate::pipeline::envelope::Envelope;
use crate::verdict::headers;
use crate::pipeline::{MessageInput, Pipeline, ScoreCard, Stage, StageInput, Symbol};
use crate::smtp::command::{Command, PathCommand};
use crate::smtp::data::{DataFault, DataLimits, DataReader};
use crate::smtp::extensions::Offer;
use crate::smtp::reply::{self, Enhanced, Reply};
use crate::net::stream::Stream;
use crate::upstream::{ClientFacts, Upstream, UpstreamError, UpstreamSettings};
use crate::verdict::{self, Verdict};
use conn::{Conn, ConnError, Input, Pace};
use state::{Admit, SessionState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use crate::pipeline::timings::Timings;
use tokio::sync::watch;

/// What every session shares, built once at start-up.
pub struct SessionShared {
    /// Name in the greeting and EHLO reply.
    pub hostname: String,
    /// Limits and timeouts.
    pub limits: crate::config::LimitsConfig,
    /// STARTTLS acceptor, when a certificate is configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The upstream MTA.
    pub upstream: Arc<UpstreamSettings>,
    /// When to open the upstream session.
    pub connect_at: ConnectAt,
    /// The checks, swapped on reload; each session keeps the one it started with.
    pub pipeline: Arc<crate::pipeline::live::LivePipeline>,
    /// Thresholds, reply texts, shadow mode.
    pub verdict: VerdictConfig,
    /// The authserv-id of Authentication-Results (and of forged ones to remove).
    pub authserv_id: String,
    /// Add a Received field for the hop.
    pub received: bool,
    /// Clients whose XFORWARD is believed.
    pub xforward_hosts: crate::config::lists::NameList,
    /// Where refused messages are kept, when `[quarantine]` is on.
    pub quarantine: Option<crate::records::RecordDir>,
    /// Keep tempfailed messages too.
    pub quarantine_tempfail: bool,
    /// Transaction records, when `[records]` is on.
    pub records: Option<crate::records::Recorder>,
}

impl SessionShared {
    /// Builds the shared parts from a validated config.
    pub fn new(
        config: &Config,
        tls: Option<tokio_rustls::TlsAcceptor>,
        upstream: Arc<UpstreamSettings>,
        pipeline: Arc<crate::pipeline::live::LivePipeline>,
    ) -> Self {
        SessionShared {
            hostname: config.hostname(),
            limits: config.limits.clone(),
            tls,
            upstream,
            connect_at: config.upstream.connect_at,
            pipeline,
            verdict: config.verdict.clone(),
            authserv_id: config.authserv_id(),
            received: config.headers.received,
            // validate() already parsed these; an error here would mean no trusted host.
            xforward_hosts: crate::config::lists::parse(
                &config.server.xforward_hosts.join("\n"),
                "server.xforward_hosts",
                true,
            )
            .unwrap_or_default(),
            quarantine: config
                .quarantine
                .enabled
                .then(|| crate::records::RecordDir::quarantine(&config.quarantine)),
            quarantine_tempfail: config.quarantine.tempfail,
            records: crate::records::Recorder::new(&config.records),
        }
    }
}

impl std::fmt::Debug for SessionShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionShared")
            .field("hostname", &self.hostname)
            .field("starttls", &self.tls.is_some())
            .field("upstream", &self.upstream.address)
            .finish_non_exhaustive()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How a command's handling ends for the session loop.
enum Flow {
    Continue,
    /// End the session, for the reason given (logged).
    Close(&'static str),
}

/// The message being received with BDAT.
struct BdatTransfer {
    reader: DataReader,
}

/// One client session.
pub struct Session {
    id: u64,
    /// The ruleset this session started with (a reload does not change it mid-session).
    pipeline: Arc<Pipeline>,
    conn: Conn,
    shared: Arc<SessionShared>,
    state: SessionState,
    envelope: Envelope,
    upstream: Option<Upstream>,
    /// Set when the upstream failed inside the open transaction: every further transaction
    /// command gets a 4xx until the transaction ends.
    upstream_lost: bool,
    offer: Offer,
    /// Symbols of the connect and HELO stages; every transaction's card starts from these.
    session_symbols: Vec<Symbol>,
    /// The open transaction's symbols (session symbols included).
    card: ScoreCard,
    /// The open transaction's authentication facts.
    facts: AuthFacts,
    /// Transactions started in this session (for the Received id).
    transactions: u64,
    /// With `verdict.delay_reject`: the refusal every RCPT of this transaction gets.
    refused_transaction: Option<Reply>,
    bdat: Option<BdatTransfer>,
    errors: usize,
    /// This listener refuses MAIL before STARTTLS (`tls.required_on`).
    require_tls: bool,
    transaction_started: Option<Instant>,
    /// A trusted forwarder named a new client with XFORWARD: the connect and HELO checks run
    /// again for it at the next MAIL.
    identity_changed: bool,
    /// The TCP peer (the envelope's client may be a forwarded identity).
    peer: SocketAddr,
    /// Where the open transaction's time went (session stages included).
    timings: Timings,
    shutdown: watch::Receiver<bool>,
}

impl Session {
    /// A session for an accepted TCP connection.
    pub fn new(
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        shared: Arc<SessionShared>,
        shutdown: watch::Receiver<bool>,
        require_tls: bool,
    ) -> Self {
        let _ = tcp.set_nodelay(true);
        let mut offer = Offer::new(
            shared.limits.max_message_size,
            shared.upstream.capabilities().as_ref(),
            shared.tls.is_some(),
        );
        offer.xforward = shared.xforward_hosts.match_ip(peer.ip()).is_some();
        Session {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            pipeline: shared.pipeline.current(),
            conn: Conn::new(Stream::Plain(tcp), shared.limits.max_command_line),
            state: SessionState::default(),
            envelope: Envelope::new(peer, local),
            peer,
            upstream: None,
            upstream_lost: false,
            offer,
            session_symbols: Vec::new(),
            card: ScoreCard::default(),
            facts: AuthFacts::default(),
            transactions: 0,
            refused_transaction: None,
            bdat: None,
            errors: 0,
            require_tls,
            transaction_started: None,
            timings: Timings::default(),
            identity_changed: false,
            shared,
            shutdown,
        }
    }

    /// Runs the session to its end.
    pub async fn run(mut self) {
        let client = self.envelope.client;
        tracing::info!(session = self.id, %client, "connect");
        self.session_symbols = self.run_stage(Stage::Connect, None, None).await;
        let card = ScoreCard {
            symbols: self.session_symbols.clone(),
        };
        let refused = self.refusal(&card, Stage::Connect);
        if let (Some(r), false) = (refused, self.shared.verdict.delay_reject) {
            self.keep_early_record(&card, Stage::Connect, None, &r);
            // RFC 5321 3.1: a server may answer the connection with 554 instead of 220.
            self.conn.queue(&r);
            self.conn.close().await;
            tracing::info!(session = self.id, %client, reason = "refused at connect", "disconnect");
            return;
        }
        let wait = self.shared.limits.pregreet_wait.0;
        if !wait.is_zero() && self.conn.talks_within(wait).await {
            let action = self.shared.limits.pregreet_action;
            crate::metrics::METRICS
                .sessions
                .with_label_values(&["pregreet"])
                .inc();
            tracing::info!(session = self.id, %client, ?action, "early talker: sent data before the greeting");
            match action {
                EarlyTalkerAction::Reject => {
                    self.conn.queue(&reply::PREGREET.reply());
                    self.conn.close().await;
                    return;
                }
                EarlyTalkerAction::Drop => {
                    self.conn.close().await;
                    return;
                }
                EarlyTalkerAction::Ignore => {}
            }
        }
        let greeting = Reply {
            code: 220,
            enhanced: None,
            lines: vec![format!("{} ESMTP moat", self.shared.hostname).into()],
        };
        self.conn.queue(&greeting);
        if self.shared.connect_at == ConnectAt::Connect {
            self.open_upstream().await.ok();
        }
        let end = self.command_loop().await;
        // Close the client first: it has its answer, and pooling the upstream session (or
        // QUIT) is no reason to keep it waiting.
        self.conn.close().await;
        if let Some(up) = self.upstream.take() {
            if self.state.in_transaction() {
                // The client left mid-transaction: that upstream transaction must never be
                // completed, so the session is not reused.
                up.quit().await;
            } else {
                up.release().await;
            }
        }
        tracing::info!(session = self.id, %client, reason = end, "disconnect");
    }

    async fn command_loop(&mut self) -> &'static str {
        loop {
            let input = match self.next_input().await {
                Ok(Some(input)) => input,
                Ok(None) => {
                    self.conn.queue(&reply::SHUTTING_DOWN.reply());
                    return "shutdown";
                }
                Err(ConnError::Timeout) => {
                    self.conn.queue(&reply::TIMEOUT.reply());
                    return "timeout";
                }
                Err(ConnError::Closed) => return "client closed",
                // Only message transfers are paced; a command read cannot be too slow.
                Err(ConnError::Io(_)) | Err(ConnError::TooSlow) => return "client i/o error",
            };
            if matches!(input, Input::Line(_))
                && !self.envelope.esmtp
                && self.conn.has_buffered_input()
            {
                // RFC 2920 3.1: without the PIPELINING offer a client waits for each reply.
                let action = self.shared.limits.pipelining_action;
                crate::metrics::METRICS
                    .sessions
                    .with_label_values(&["pipelining"])
                    .inc();
                tracing::info!(session = self.id, client = %self.envelope.client, ?action,
                    "early talker: commands pipelined before PIPELINING was offered");
                match action {
                    EarlyTalkerAction::Reject => {
                        self.conn.queue(&reply::UNOFFERED_PIPELINING.reply());
                        return "pipelining without the offer";
                    }
                    EarlyTalkerAction::Drop => return "pipelining without the offer",
                    EarlyTalkerAction::Ignore => {}
                }
            }
            let flow = match input {
                Input::Line(line) => match Command::parse(&line) {
                    Ok(cmd) => self.handle(cmd).await,
                    Err(r) => self.client_error(r),
                },
                Input::TooLong => self.client_error(reply::LINE_TOO_LONG.reply()),
                Input::BareNewline => self.client_error(reply::BARE_NEWLINE_COMMAND.reply()),
            };
            if let Flow::Close(reason) = flow {
                return reason;
            }
            self.tarpit().await;
        }
    }

    /// Past `limits.tarpit_after_errors` errors each reply waits `tarpit_delay` before it is
    /// sent: a client probing addresses or abusing the protocol slows to a crawl, a real one
    /// that made a few mistakes does not notice.
    async fn tarpit(&mut self) {
        let after = self.shared.limits.tarpit_after_errors;
        if after > 0 && self.errors >= after {
            let delay = self.shared.limits.tarpit_delay.0;
            tracing::debug!(session = self.id, errors = self.errors, ?delay, "tarpit");
            tokio::time::sleep(delay).await;
        }
    }

    /// The next command input; `None` when shutdown asks an idle session to end.
    async fn next_input(&mut self) -> Result<Option<Input>, ConnError> {
        let limit = self.shared.limits.command_timeout.0;
        if self.conn.has_buffered_input() || self.state.in_transaction() {
            return self.conn.read_line(limit).await.map(Some);
        }
        if *self.shutdown.borrow() {
            return Ok(None);
        }
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            r = self.conn.read_line(limit) => r.map(Some),
            _ = shutdown.changed() => Ok(None),
        }
    }

    /// Counts a client error; too many end the session (Postfix smtpd_hard_error_limit).
    fn client_error(&mut self, r: Reply) -> Flow {
        self.conn.queue(&r);
        self.errors += 1;
        if self.errors >= self.shared.limits.max_errors {
            tracing::info!(session = self.id, client = %self.envelope.client, "too many errors");
            self.conn.queue(&reply::TOO_MANY_ERRORS.reply());
            return Flow::Close("too many errors");
        }
        Flow::Continue
    }

    async fn handle(&mut self, cmd: Command) -> Flow {
        if let Admit::Refuse(r) = self.state.check(&cmd) {
            if let Command::Bdat { size, .. } = cmd {
                // RFC 3030 2: the chunk follows the command regardless; read and drop it.
                let mut sink = DataReader::chunked(self.data_limits());
                if let Err(e) = self
                    .conn
                    .read_chunk(
                        &mut sink,
                        size,
                        self.shared.limits.data_timeout.0,
                        self.pace(),
                    )
                    .await
                {
                    return self.lost_client(e);
                }
            }
            let r = if self.upstream_lost && r.code() == 554 {
                reply::UPSTREAM_UNAVAILABLE.reply()
            } else {
                r.reply()
            };
            return self.client_error(r);
        }
        match cmd {
            Command::Ehlo(name) => self.helo(name, true).await,
            Command::Helo(name) => self.helo(name, false).await,
            Command::Mail(m) => self.mail(m).await,
            Command::Rcpt(r) => self.rcpt(r).await,
            Command::Data => self.data().await,
            Command::Bdat { size, last } => self.bdat(size, last).await,
            Command::Rset => {
                self.end_transaction(true).await;
                self.conn.queue(&reply::OK.reply());
                Flow::Continue
            }
            Command::Noop => {
                self.conn.queue(&reply::OK.reply());
                Flow::Continue
            }
            Command::Vrfy => {
                self.conn.queue(&reply::VRFY_CANNOT.reply());
                Flow::Continue
            }
            Command::Help => {
                self.conn.queue(&reply::HELP.reply());
                Flow::Continue
            }
            Command::Quit => {
                self.end_transaction(true).await;
                self.conn.queue(&reply::BYE.reply());
                Flow::Close("quit")
            }
            Command::StartTls => self.starttls().await,
            Command::Xforward(attrs) => self.xforward(attrs),
            Command::NotImplemented(_) => self.client_error(reply::NOT_IMPLEMENTED.reply()),
        }
    }

    fn data_limits(&self) -> DataLimits {
        DataLimits {
            max_size: self.offer.max_size,
            max_line: self.shared.limits.max_line_length,
        }
    }

    async fn helo(&mut self, name: String, esmtp: bool) -> Flow {
        // RFC 5321 4.1.4: a new EHLO ends the transaction, on both sides. The upstream session
        // stays; the next MAIL announces the new HELO name with XCLIENT first.
        self.end_transaction(true).await;
        self.envelope.helo = Some(name.clone());
        self.envelope.esmtp = esmtp;
        self.state.on_helo();
        self.offer = Offer::new(
            self.shared.limits.max_message_size,
            self.shared.upstream.capabilities().as_ref(),
            self.shared.tls.is_some() && !self.state.is_tls(),
        );
        self.offer.xforward = self.trusted_forwarder();
        let helo_symbols = self.run_stage(Stage::Helo, None, None).await;
        self.session_symbols.retain(|s| s.stage != Stage::Helo);
        self.session_symbols.extend(helo_symbols);
        let r = if esmtp {
            self.offer.ehlo_reply(&self.shared.hostname, &name)
        } else {
            Reply {
                code: 250,
                enhanced: None,
                lines: vec![self.shared.hostname.clone().into()],
            }
        };
        self.conn.queue(&r);
        Flow::Continue
    }

    /// True when the TCP peer (not a forwarded identity) is a trusted forwarder.
    fn trusted_forwarder(&self) -> bool {
        self.shared
            .xforward_hosts
            .match_ip(self.peer.ip())
            .is_some()
    }

    /// XFORWARD from a trusted forwarder (Postfix's before-queue proxy sends it after EHLO):
    /// the client it names becomes the client of every check, of the Received field and of
    /// what moat announces upstream. NAME is not taken: moat checks reverse DNS itself.
    fn xforward(&mut self, attrs: Vec<(String, String)>) -> Flow {
        if !self.trusted_forwarder() {
            tracing::info!(session = self.id, client = %self.envelope.client, "XFORWARD from a host not in server.xforward_hosts; refused");
            return self.client_error(reply::FORWARDING_COMMAND_REFUSED.reply());
        }
        let unavailable = |v: &str| {
            v.eq_ignore_ascii_case("[UNAVAILABLE]") || v.eq_ignore_ascii_case("[TEMPUNAVAIL]")
        };
        let (mut addr, mut port) = (None, None);
        for (name, value) in &attrs {
            if unavailable(value) {
                continue;
            }
            match name.as_str() {
                "ADDR" => {
                    let v = value
                        .strip_prefix("IPV6:")
                        .or_else(|| value.strip_prefix("ipv6:"))
                        .unwrap_or(value);
                    match v.parse::<std::net::IpAddr>() {
                        Ok(ip) => addr = Some(ip),
                        Err(_) => return self.client_error(reply::XFORWARD_BAD.reply()),
                    }
                }
                "PORT" => match value.parse::<u16>() {
                    Ok(p) => port = Some(p),
                    Err(_) => return self.client_error(reply::XFORWARD_BAD.reply()),
                },
                "HELO" => self.envelope.helo = Some(value.clone()),
                "PROTO" => self.envelope.esmtp = value.eq_ignore_ascii_case("ESMTP"),
                // NAME: verified again by moat's own reverse DNS check; IDENT, SOURCE and
                // DOMAIN only matter to the forwarder's logs.
                _ => {}
            }
        }
        if addr.is_some() || port.is_some() {
            let ip = addr.unwrap_or(self.envelope.client.ip());
            let port = port.unwrap_or(if addr.is_some() {
                0
            } else {
                self.envelope.client.port()
            });
            self.envelope.client = SocketAddr::new(ip, port);
        }
        tracing::debug!(session = self.id, client = %self.envelope.client, helo = self.envelope.helo.as_deref().unwrap_or(""), "XFORWARD");
        self.identity_changed = true;
        self.conn.queue(&reply::XFORWARD_OK.reply());
        Flow::Continue
    }

    /// Runs the connect and HELO checks again for the client XFORWARD named, and drops an
    /// upstream session that was announced with the forwarder's identity.
    async fn refresh_identity(&mut self) {
        self.identity_changed = false;
        self.facts = AuthFacts::default();
        self.card = ScoreCard::default();
        self.session_symbols.clear();
        self.drop_upstream().await;
        self.timings = Timings::default();
        let mut symbols = self.run_stage(Stage::Connect, None, None).await;
        self.session_symbols = std::mem::take(&mut symbols);
        let helo = self.run_stage(Stage::Helo, None, None).await;
        self.session_symbols.extend(helo);
    }

    async fn starttls(&mut self) -> Flow {
        let Some(acceptor) = self.shared.tls.clone() else {
            return self.client_error(reply::TLS_NOT_AVAILABLE.reply());
        };
        self.conn.queue(&reply::READY_TLS.reply());
        let discarded = self.conn.discard_input();
        if discarded > 0 {
            tracing::warn!(session = self.id, client = %self.envelope.client, bytes = discarded,
                "discarded plaintext pipelined after STARTTLS (command injection attempt)");
        }
        if self.conn.flush().await.is_err() {
            return Flow::Close("client i/o error");
        }
        let Some(tcp) = self.conn.take_stream().take_plain() else {
            return Flow::Close("TLS state error");
        };
        let handshake = tokio::time::timeout(
            self.shared.limits.tls_handshake_timeout.0,
            acceptor.accept(tcp),
        )
        .await;
        match handshake {
            Ok(Ok(tls)) => {
                self.conn.set_stream(Stream::ServerTls(Box::new(tls)));
                self.envelope.tls = self.conn.stream().tls_version();
                crate::metrics::METRICS
                    .tls_handshakes
                    .with_label_values(&[self.envelope.tls.unwrap_or("unknown")])
                    .inc();
                // RFC 3207 4.2: discard all knowledge from before the handshake.
                self.end_transaction(false).await;
                self.drop_upstream().await;
                self.envelope.helo = None;
                self.state.on_tls();
                tracing::info!(session = self.id, client = %self.envelope.client,
                    version = self.envelope.tls.unwrap_or("?"), cipher = self.conn.stream().tls_cipher().unwrap_or("?"), "TLS established");
                Flow::Continue
            }
            Ok(Err(e)) => {
                let m = &crate::metrics::METRICS;
                m.tls_handshakes.with_label_values(&["failed"]).inc();
                let reason = crate::net::tls::failure_reason(&e);
                m.tls_failures.with_label_values(&[reason]).inc();
                tracing::info!(session = self.id, client = %self.envelope.client, error = %e, reason, "TLS handshake failed");
                Flow::Close("TLS handshake failed")
            }
            Err(_) => {
                let m = &crate::metrics::METRICS;
                m.tls_handshakes.with_label_values(&["failed"]).inc();
                m.tls_failures.with_label_values(&["timeout"]).inc();
                tracing::info!(session = self.id, client = %self.envelope.client, "TLS handshake timed out");
                Flow::Close("TLS handshake timeout")
            }
        }
    }

    async fn mail(&mut self, m: PathCommand) -> Flow {
        if let Err(r) = self.offer.check_mail_params(&m.params) {
            return self.client_error(r);
        }
        if self.identity_changed {
            self.refresh_identity().await;
        }
        if self.require_tls && self.envelope.tls.is_none() {
            return self.client_error(reply::STARTTLS_REQUIRED.reply());
        }
        // RFC 1870 6.2: refuse a declared size over the limit before reading anything.
        if m.size.is_some_and(|s| s > self.offer.max_size) {
            self.conn.queue(&reply::MESSAGE_TOO_BIG.reply());
            return Flow::Continue;
        }
        self.card = ScoreCard {
            symbols: self.session_symbols.clone(),
        };
        // Reverse DNS belongs to the session; the rest starts over with each transaction.
        self.facts = AuthFacts {
            iprev: self.facts.iprev.take(),
            ..AuthFacts::default()
        };
        self.upstream_lost = false;
        self.transaction_started = Some(Instant::now());
        self.timings.reset_transaction();
        self.envelope.reset_transaction();
        self.envelope.sender = Some(m.address.clone());
        let symbols = self.run_stage(Stage::Mail, None, None).await;
        self.card.extend(symbols);
        if let Some(r) = self.refusal(&self.card.clone(), Stage::Mail) {
            self.keep_early_record(&self.card, Stage::Mail, None, &r);
            if self.shared.verdict.delay_reject {
                // Postfix's smtpd_delay_reject: take MAIL (moat's own 250, the upstream never
                // hears of it) and refuse every RCPT, so the log shows sender and recipients.
                self.refused_transaction = Some(r);
                self.state.on_mail();
                self.conn.queue(&reply::MAIL_OK_LOCAL.reply());
                return Flow::Continue;
            }
            // Refused before the upstream ever hears of the transaction.
            self.log_transaction(0, &r, Stage::Mail, None);
            self.conn.queue(&r);
            self.envelope.sender = None;
            self.transaction_started = None;
            return Flow::Continue;
        }
        let line = path_command("MAIL FROM:", &m);
        // A kept-open upstream may have timed out while the client was idle: one fresh retry.
        let reused = self.upstream.is_some();
        let mut result = self.begin_upstream_transaction(&line).await;
        if reused && matches!(result, Err(ref e) if e.may_retry_on_new_connection()) {
            self.drop_upstream().await;
            result = self.begin_upstream_transaction(&line).await;
        }
        match result {
            Ok(r) => {
                if r.is_positive() {
                    self.state.on_mail();
                } else {
                    self.envelope.sender = None;
                    self.transaction_started = None;
                }
                self.relay(r);
            }
            Err(e) => {
                self.envelope.sender = None;
                self.transaction_started = None;
                self.upstream_failed(&e, "MAIL");
            }
        }
        Flow::Continue
    }

    async fn rcpt(&mut self, r: PathCommand) -> Flow {
        if let Err(reply) = self.offer.check_rcpt_params(&r.params) {
            return self.client_error(reply);
        }
        if self.upstream_lost {
            self.conn.queue(&reply::UPSTREAM_UNAVAILABLE.reply());
            return Flow::Continue;
        }
        if self.envelope.recipients.len() >= self.shared.limits.max_recipients {
            self.conn.queue(&reply::TOO_MANY_RECIPIENTS.reply());
            return Flow::Continue;
        }
        // A recipient's symbols count only if it is accepted: one bad address must not taint
        // the others.
        let symbols = self.run_stage(Stage::Rcpt, Some(&r.address), None).await;
        let mut tentative = self.card.clone();
        tentative.extend(symbols.iter().cloned());
        if let Some(refused) = self.refused_transaction.clone() {
            tracing::info!(session = self.id, client = %self.envelope.client, rcpt = %r.address, reply = %refused, "recipient refused (delayed reject)");
            count_recipient(&refused, "mail");
            self.conn.queue(&refused);
            return Flow::Continue;
        }
        if let Some(refused) = self.refusal(&tentative, Stage::Rcpt) {
            self.keep_early_record(&tentative, Stage::Rcpt, Some(&r.address), &refused);
            tracing::info!(session = self.id, client = %self.envelope.client, rcpt = %r.address,
                score = tentative.total(), symbols = %tentative.names().join(","), reply = %refused, "recipient refused");
            count_recipient(&refused, "rcpt");
            self.conn.queue(&refused);
            return Flow::Continue;
        }
        let line = path_command("RCPT TO:", &r);
        match self.upstream_command(&line, "RCPT").await {
            Ok(reply) => {
                if reply.is_positive() {
                    self.envelope.recipients.push(r.address);
                    self.state.on_rcpt();
                    self.card.extend(symbols);
                } else {
                    // The MTA's own refusal (unknown user, policy): relayed as it is.
                    count_recipient(&reply, "rcpt");
                }
                self.relay(reply);
            }
            Err(e) => self.upstream_failed(&e, "RCPT"),
        }
        Flow::Continue
    }

    async fn data(&mut self) -> Flow {
        if self.upstream_lost {
            self.conn.queue(&reply::UPSTREAM_UNAVAILABLE.reply());
            return Flow::Continue;
        }
        self.conn.queue(&reply::START_DATA.reply());
        let mut reader = DataReader::dot(self.data_limits());
        if let Err(e) = self
            .conn
            .read_data(&mut reader, self.shared.limits.data_timeout.0, self.pace())
            .await
        {
            return self.lost_client(e);
        }
        let size = reader.size();
        self.finish_message(reader.finish(), size).await
    }

    async fn bdat(&mut self, size: usize, last: bool) -> Flow {
        let limits = self.data_limits();
        let mut transfer = self.bdat.take().unwrap_or_else(|| BdatTransfer {
            reader: DataReader::chunked(limits),
        });
        if let Err(e) = self
            .conn
            .read_chunk(
                &mut transfer.reader,
                size,
                self.shared.limits.data_timeout.0,
                self.pace(),
            )
            .await
        {
            return self.lost_client(e);
        }
        if self.upstream_lost {
            self.conn.queue(&reply::UPSTREAM_UNAVAILABLE.reply());
            self.end_transaction(false).await;
            return Flow::Continue;
        }
        if !last {
            // RFC 3030 2: a failed chunk fails the transaction; an oversized message is refused
            // at once rather than after the client sent the rest.
            if transfer.reader.fault() == Some(DataFault::TooBig) {
                let total = transfer.reader.size();
                return self.finish_message(Err(DataFault::TooBig), total).await;
            }
            self.conn.queue(&Reply::new(
                250,
                Enhanced(2, 0, 0),
                format!("{size} octets received"),
            ));
            self.bdat = Some(transfer);
            self.state.on_bdat_chunk();
            return Flow::Continue;
        }
        let total = transfer.reader.size();
        self.finish_message(transfer.reader.finish(), total).await
    }

    /// The message has been read: refuse it for a fault, or check it and send it upstream.
    async fn finish_message(&mut self, body: Result<Vec<u8>, DataFault>, size: usize) -> Flow {
        let body = match body {
            Ok(body) => body,
            Err(fault) => {
                let r = match fault {
                    DataFault::TooBig => reply::MESSAGE_TOO_BIG,
                    DataFault::BareNewline => reply::BARE_NEWLINE_DATA,
                    DataFault::LineTooLong => reply::DATA_LINE_TOO_LONG,
                };
                tracing::info!(session = self.id, client = %self.envelope.client, ?fault, size, "message refused");
                self.log_transaction(size, &r.reply(), Stage::Data, None);
                self.conn.queue(&r.reply());
                self.end_transaction(true).await;
                return Flow::Continue;
            }
        };
        let (verdict, prefix, stripped) = self.check_message(&body).await;
        if verdict.refuses() && !self.shared.verdict.shadow {
            let r = verdict
                .reply
                .clone()
                .unwrap_or_else(|| reply::LOCAL_ERROR.reply());
            self.log_transaction(size, &r, Stage::Data, Some(&verdict));
            self.keep_records(&verdict, &r, &body, true);
            self.conn.queue(&r);
            self.end_transaction(true).await;
            return Flow::Continue;
        }
        let outgoing = stripped.as_deref().unwrap_or(&body);
        let sent = Instant::now();
        let result = match self.upstream.as_mut() {
            Some(up) => up.data(&prefix, outgoing).await,
            None => Err(UpstreamError::Protocol {
                stage: "DATA",
                why: "no upstream session".into(),
            }),
        };
        self.timings.add_upstream(sent.elapsed());
        let final_reply = match result {
            Ok(r) => {
                count_upstream_reply(&r);
                if r.code == 421 || !self.upstream.as_ref().is_some_and(Upstream::is_healthy) {
                    self.drop_upstream().await;
                }
                normalise(r)
            }
            Err(e) => {
                crate::metrics::METRICS
                    .upstream_errors
                    .with_label_values(&[e.kind()])
                    .inc();
                tracing::warn!(session = self.id, client = %self.envelope.client, error = %e, kind = e.kind(),
                    "upstream failed during DATA; message not accepted");
                self.drop_upstream().await;
                reply::UPSTREAM_UNAVAILABLE.reply()
            }
        };
        self.log_transaction(size, &final_reply, Stage::Data, Some(&verdict));
        self.keep_records(&verdict, &final_reply, &body, false);
        self.conn.queue(&final_reply);
        self.end_transaction(false).await;
        Flow::Continue
    }

    /// Keeps a copy of a message refused at end of data, with the record of why (written off
    /// this task; the client's reply does not wait for the disk).
    fn keep_records(&self, verdict: &Verdict, reply: &Reply, message: &[u8], refused: bool) {
        use crate::pipeline::Action;
        let quarantine = self.shared.quarantine.as_ref().filter(|_| {
            refused
                && match verdict.action {
                    Action::Reject => true,
                    Action::Tempfail => self.shared.quarantine_tempfail,
                    _ => false,
                }
        });
        let records = self
            .shared
            .records
            .as_ref()
            .filter(|r| r.wants(verdict.action));
        if quarantine.is_none() && records.is_none() {
            return;
        }
        let record = self.record(verdict, reply, message.len());
        let dns = self.pipeline.dns().cloned();
        if let Some(q) = quarantine {
            q.keep(record.clone(), Some(message.to_vec()), dns.clone());
        }
        if let Some(r) = records {
            let message = r.message.then(|| message.to_vec());
            let record = crate::records::Record {
                id: crate::records::RecordDir::new_id(record.time),
                ..record
            };
            r.dir.keep(record, message, dns);
        }
    }

    /// What this transaction's record says.
    fn record(&self, verdict: &Verdict, reply: &Reply, size: usize) -> crate::records::Record {
        self.record_at(&self.card, Stage::Data, None, verdict, reply, size)
    }

    /// Records a refusal by the checks before end of data (connect, MAIL or RCPT), when
    /// `[records]` wants it. `card` holds the symbols the refusal was decided on; `recipient`
    /// is the refused RCPT.
    fn keep_early_record(
        &self,
        card: &ScoreCard,
        stage: Stage,
        recipient: Option<&str>,
        reply: &Reply,
    ) {
        let Some(records) = &self.shared.records else {
            return;
        };
        let verdict = verdict::decide(card, &self.shared.verdict, stage);
        if !records.wants(verdict.action) {
            return;
        }
        let record = self.record_at(card, stage, recipient, &verdict, reply, 0);
        records.dir.keep(record, None, self.pipeline.dns().cloned());
    }

    fn record_at(
        &self,
        card: &ScoreCard,
        stage: Stage,
        refused_rcpt: Option<&str>,
        verdict: &Verdict,
        reply: &Reply,
        size: usize,
    ) -> crate::records::Record {
        let time = crate::store::unix_millis() / 1000;
        crate::records::Record {
            stage: stage.as_str().to_string(),
            refused_rcpt: refused_rcpt.map(str::to_string),
            id: crate::records::RecordDir::new_id(time),
            time,
            client: self.envelope.client.to_string(),
            client_name: self.client_facts().name,
            helo: self.envelope.helo.clone(),
            tls: self.envelope.tls.map(str::to_string),
            mail_from: self.envelope.sender.clone().unwrap_or_default(),
            rcpts: self.envelope.recipients.clone(),
            size,
            score: verdict.score,
            action: verdict.action.as_str().to_string(),
            reply: reply.to_string(),
            symbols: card
                .symbols
                .iter()
                .map(|s| crate::records::RecordSymbol {
                    name: s.name.clone(),
                    score: s.score,
                })
                .collect(),
            ruleset: self.pipeline.ruleset().to_string(),
            dns: crate::dns::journal::Journal::current()
                .map(|j| j.snapshot())
                .unwrap_or_default(),
        }
    }

    /// The transaction's one summary line (and its metrics): everything an admin needs to
    /// find it again, including the upstream's queue id to join with the MTA's log.
    fn log_transaction(&self, size: usize, r: &Reply, stage: Stage, verdict: Option<&Verdict>) {
        let action = match r.class() {
            // Flagged messages are accepted too; the action says which.
            2 if verdict.is_some_and(|v| v.is_spam(&self.shared.verdict)) => "add_header",
            2 => "accept",
            4 => "tempfail",
            _ => "reject",
        };
        let m = &crate::metrics::METRICS;
        m.transactions
            .with_label_values(&[action, stage.as_str()])
            .inc();
        m.recipients
            .with_label_values(&[action, stage.as_str()])
            .inc_by(self.envelope.recipients.len() as u64);
        let duration = self
            .transaction_started
            .map(|t| t.elapsed())
            .unwrap_or(Duration::ZERO);
        let name = self.client_facts().name;
        tracing::info!(
            session = self.id,
            client = %self.envelope.client,
            client_name = name.as_deref().unwrap_or("unknown"),
            helo = self.envelope.helo.as_deref().unwrap_or(""),
            tls = self.envelope.tls.unwrap_or("none"),
            from = self.envelope.sender.as_deref().unwrap_or(""),
            rcpts = %self.envelope.recipients.join(","),
            size,
            score = (self.card.total() * 100.0).round() / 100.0,
            action,
            stage = stage.as_str(),
            symbols = %self.card.names().join(","),
            reply = %r,
            queue_id = r.queue_id().unwrap_or(""),
            timings = %self.timings,
            duration_ms = duration.as_millis() as u64,
            "transaction"
        );
    }

    /// Ends the open transaction on both sides; `rset_upstream` sends RSET to a healthy
    /// upstream (after end of data the upstream is already outside a transaction).
    async fn end_transaction(&mut self, rset_upstream: bool) {
        let was_open = self.state.in_transaction();
        self.state.end_transaction();
        self.envelope.reset_transaction();
        self.refused_transaction = None;
        self.bdat = None;
        self.upstream_lost = false;
        self.transaction_started = None;
        if was_open && rset_upstream {
            if let Some(up) = self.upstream.as_mut() {
                up.rset().await;
                if !up.is_healthy() {
                    self.drop_upstream().await;
                }
            }
        }
    }

    async fn drop_upstream(&mut self) {
        if let Some(up) = self.upstream.take() {
            up.quit().await;
        }
    }

    fn client_facts(&self) -> ClientFacts {
        ClientFacts {
            addr: self.envelope.client,
            // Postfix XCLIENT_README: the verified name, or why there is none.
            name: match self.facts.iprev.as_ref() {
                Some(i) if i.name.is_some() => i.name.clone(),
                Some(i) if i.outcome == crate::auth::Outcome::TempError => {
                    Some("[TEMPUNAVAIL]".into())
                }
                _ => None,
            },
            helo: self.envelope.helo.clone(),
            proto: if self.envelope.esmtp { "ESMTP" } else { "SMTP" },
        }
    }

    async fn open_upstream(&mut self) -> Result<(), UpstreamError> {
        let facts = self.client_facts();
        match Upstream::connect(&self.shared.upstream, &facts).await {
            Ok(up) => {
                self.upstream = Some(up);
                crate::metrics::READINESS
                    .upstream_ok
                    .store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                if matches!(e, UpstreamError::NoXclient) {
                    tracing::error!(session = self.id, upstream = %self.shared.upstream.address, "{e}");
                } else if matches!(
                    e,
                    UpstreamError::Refused {
                        stage: "XCLIENT",
                        ..
                    }
                ) {
                    tracing::error!(session = self.id, upstream = %self.shared.upstream.address,
                        "{e}; Postfix needs moat's address in smtpd_authorized_xclient_hosts");
                } else {
                    tracing::warn!(session = self.id, upstream = %self.shared.upstream.address, error = %e, kind = e.kind(), "cannot open upstream session");
                }
                Err(e)
            }
        }
    }

    /// Opens the upstream session if needed, announces the client (XCLIENT/XFORWARD) and sends
    /// MAIL.
    async fn begin_upstream_transaction(&mut self, mail: &str) -> Result<Reply, UpstreamError> {
        loop {
            if !self.upstream.as_ref().is_some_and(Upstream::is_healthy) {
                self.drop_upstream().await;
                self.open_upstream().await?;
            }
            let untried = self
                .upstream
                .as_ref()
                .is_some_and(Upstream::is_untried_from_pool);
            let facts = self.client_facts();
            let result = match self.upstream.as_mut() {
                Some(up) => match up.prepare(&facts).await {
                    Ok(()) => self.upstream_command(mail, "MAIL").await,
                    Err(e) => Err(e),
                },
                None => self.upstream_command(mail, "MAIL").await,
            };
            match result {
                // A pooled session the MTA closed while it was idle: the next pooled one, or
                // a new connection once the pool is empty (which ends the loop).
                Err(e) if untried && e.may_retry_on_new_connection() => {
                    tracing::debug!(session = self.id, error = %e, "pooled upstream session was closed; trying another");
                    self.drop_upstream().await;
                }
                other => return other,
            }
        }
    }

    /// Sends a MAIL/RCPT line on the open upstream session.
    async fn upstream_command(
        &mut self,
        line: &str,
        stage: &'static str,
    ) -> Result<Reply, UpstreamError> {
        let Some(up) = self.upstream.as_mut() else {
            return Err(UpstreamError::Protocol {
                stage,
                why: "no upstream session".into(),
            });
        };
        let r = up.command(line, stage).await?;
        if !up.is_healthy() {
            // The upstream said 421: it is closing, so this transaction cannot go on.
            self.drop_upstream().await;
            if self.state.in_transaction() {
                self.upstream_lost = true;
            }
        }
        Ok(r)
    }

    fn upstream_failed(&mut self, e: &UpstreamError, stage: &'static str) {
        crate::metrics::METRICS
            .upstream_errors
            .with_label_values(&[e.kind()])
            .inc();
        crate::metrics::READINESS.upstream_ok.store(
            !matches!(
                e,
                UpstreamError::Connect { .. } | UpstreamError::Timeout { .. }
            ),
            std::sync::atomic::Ordering::Relaxed,
        );
        if !matches!(e, UpstreamError::NoXclient | UpstreamError::Connect { .. }) {
            tracing::warn!(session = self.id, client = %self.envelope.client, error = %e, kind = e.kind(), stage, "upstream failed");
        }
        self.upstream = None;
        if self.state.in_transaction() {
            self.upstream_lost = true;
        }
        let r = match e {
            UpstreamError::NoXclient
            | UpstreamError::Refused {
                stage: "XCLIENT", ..
            } => reply::UPSTREAM_NO_XCLIENT.reply(),
            // The MTA's own verdict on this client: relayed like any MAIL reply.
            UpstreamError::ClientRefused { reply } => normalise(reply.clone()),
            _ => reply::UPSTREAM_UNAVAILABLE.reply(),
        };
        self.conn.queue(&r);
    }

    /// Relays an upstream reply to the client.
    fn relay(&mut self, r: Reply) {
        count_upstream_reply(&r);
        self.conn.queue(&normalise(r));
    }

    fn lost_client(&mut self, e: ConnError) -> Flow {
        tracing::info!(session = self.id, client = %self.envelope.client, error = %e, "client lost during message transfer; nothing forwarded");
        match e {
            ConnError::Timeout => {
                self.conn.queue(&reply::TIMEOUT.reply());
                return Flow::Close("timeout during message transfer");
            }
            ConnError::TooSlow => {
                self.conn.queue(&reply::DATA_TOO_SLOW.reply());
                return Flow::Close("message data too slow");
            }
            _ => {}
        }
        Flow::Close("client lost during message transfer")
    }

    /// The slowest message transfer allowed (`limits.min_data_rate`).
    fn pace(&self) -> Pace {
        Pace {
            min_rate: self.shared.limits.min_data_rate,
            grace: self.shared.limits.min_data_rate_grace.0,
        }
    }

    /// Runs a stage (its authentication step and checks) and returns its symbols.
    async fn run_stage(
        &mut self,
        stage: Stage,
        recipient: Option<&str>,
        message: Option<MessageInput<'_>>,
    ) -> Vec<Symbol> {
        if self.pipeline.is_empty_at(stage) {
            return Vec::new();
        }
        // An allow-list entry short-circuits the remaining checks of the session (IP, HELO) or
        // the transaction (sender, recipient); the verdict accepts whatever they would say.
        let allowed =
            self.card.allowed() || crate::verdict::card::allowed(&self.session_symbols);
        if allowed && stage != Stage::Connect {
            tracing::debug!(
                session = self.id,
                stage = stage.as_str(),
                "allow-listed; checks skipped"
            );
            return Vec::new();
        }
        let input = StageInput {
            stage,
            envelope: &self.envelope,
            recipient,
            message,
            score: self.card.total(),
        };
        let started = Instant::now();
        let symbols = self.pipeline.run(input, &mut self.facts).await.symbols;
        self.timings.add(stage, started.elapsed());
        symbols
    }

    /// The reply refusing the command at `stage`, if the verdict refuses and shadow mode is
    /// off. In shadow mode the would-be refusal is only logged.
    fn refusal(&self, card: &ScoreCard, stage: Stage) -> Option<Reply> {
        let v = verdict::decide(card, &self.shared.verdict, stage);
        if !v.refuses() {
            return None;
        }
        if self.shared.verdict.shadow {
            crate::metrics::METRICS
                .shadow_would_refuse
                .with_label_values(&[v.action.as_str()])
                .inc();
            tracing::info!(session = self.id, client = %self.envelope.client, stage = stage.as_str(),
                action = v.action.as_str(), score = v.score, forced_by = v.forced_by.as_deref().unwrap_or(""),
                "shadow mode: would refuse");
            return None;
        }
        v.reply
    }

    /// Parses and checks the message at the data stage: the verdict, the header fields to
    /// prepend, and the message with forged fields removed (if any were present).
    async fn check_message(&mut self, body: &[u8]) -> (Verdict, Vec<u8>, Option<Vec<u8>>) {
        let parsed = mail_parser::MessageParser::default().parse(body);
        let message = parsed.as_ref().map(|p| MessageInput {
            raw: body,
            parsed: p,
        });
        let symbols = self.run_stage(Stage::Data, None, message).await;
        self.card.extend(symbols);
        let v = verdict::decide(&self.card, &self.shared.verdict, Stage::Data);
        let m = &crate::metrics::METRICS;
        m.messages_received.inc();
        m.bytes_received.inc_by(body.len() as u64);
        m.score.observe(v.score);
        for s in &self.card.symbols {
            m.rule_hits.with_label_values(&[&s.name]).inc();
        }
        if v.refuses() && self.shared.verdict.shadow {
            m.shadow_would_refuse
                .with_label_values(&[v.action.as_str()])
                .inc();
            tracing::info!(session = self.id, client = %self.envelope.client, stage = "data",
                action = v.action.as_str(), score = v.score, forced_by = v.forced_by.as_deref().unwrap_or(""),
                "shadow mode: would refuse");
        }
        self.transactions += 1;
        let id = format!("{}.{}", self.id, self.transactions);
        let tls = self
            .conn
            .stream()
            .tls_version()
            .zip(self.conn.stream().tls_cipher());
        let protocol = match (self.envelope.esmtp, tls.is_some()) {
            (true, true) => "ESMTPS",
            (true, false) => "ESMTP",
            (false, true) => "SMTPS",
            (false, false) => "SMTP",
        };
        let hop = headers::Hop {
            helo: self.envelope.helo.as_deref().unwrap_or("unknown"),
            client: self.envelope.client.ip(),
            by: &self.shared.hostname,
            protocol,
            id: &id,
            tls,
            time: std::time::SystemTime::now(),
        };
        let names = self.card.names();
        let spam = headers::SpamInfo {
            score: v.score,
            required: self.shared.verdict.add_header,
            flagged: v.is_spam(&self.shared.verdict),
            tests: &names,
        };
        let auth_results = self.facts.message.as_ref().map(|m| m.header.as_str());
        let prefix = headers::prepend(self.shared.received.then_some(&hop), auth_results, &spam);
        let stripped = headers::strip_forged(body, &self.shared.authserv_id);
        (v, prefix, stripped)
    }
}

/// Counts a recipient refused at RCPT (by moat's checks at `stage`, or by the MTA).
fn count_recipient(r: &Reply, stage: &str) {
    let action = if r.class() == 4 { "tempfail" } else { "reject" };
    crate::metrics::METRICS
        .recipients
        .with_label_values(&[action, stage])
        .inc();
}

/// Counts an upstream reply by class for the metrics.
fn count_upstream_reply(r: &Reply) {
    let class = match r.class() {
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    };
    crate::metrics::METRICS
        .upstream_replies
        .with_label_values(&[class])
        .inc();
}

/// The command line for MAIL/RCPT as relayed upstream: the client's path and parameters.
fn path_command(verb: &str, c: &PathCommand) -> String {
    let mut line = String::with_capacity(verb.len() + c.path.len() + 32);
    line.push_str(verb);
    line.push_str(&c.path);
    for p in &c.params {
        line.push(' ');
        line.push_str(&p.raw);
    }
    line
}

/// Makes an upstream reply safe to relay: 421 means the upstream is closing, but the client
/// session goes on, so it becomes 451; every reply gets an enhanced code (RFC 2034).
fn normalise(mut r: Reply) -> Reply {
    if r.code == 421 {
        r.code = 451;
    }
    if r.enhanced.is_none_or(|e| u16::from(e.0) != r.class()) {
        r.enhanced = Some(Enhanced(r.class() as u8, 0, 0));
    }
    r
}
