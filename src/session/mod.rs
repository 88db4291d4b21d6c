//! One client session: reads commands, runs them through the state machine, the pipeline and
//! the upstream, and writes the replies. The only orchestrator in moat.
//!
//! Lock-step (DESIGN.md): MAIL and RCPT are answered with the upstream's reply; the message is
//! read in full, checked, then sent upstream, and the client hears 2xx for it only after the
//! upstream said 2xx to its end of data. Any upstream failure gives the client a 4xx and drops
//! the upstream session, so a half-sent message is never completed by a later command.
//!
//! One file per command group, each its own `impl Session` block: `helo` (HELO, EHLO,
//! XFORWARD), `tls` (STARTTLS), `mail` (MAIL, RCPT), `data` (DATA, BDAT and the message),
//! `upstream` (the MTA side), `report` (the end-of-transaction hook: log line, metrics, record,
//! quarantine). The checks and the score card are the pipeline's [`Driver`]'s.
//!
//! Shutdown: a session that waits for a command outside a transaction answers 421 and ends; a
//! session inside a transaction runs on until the transaction ends (or the listener's grace
//! period runs out and the task is dropped, which closes both sockets with nothing forwarded).

pub mod conn;
mod data;
mod helo;
mod mail;
mod report;
pub mod state;
mod tls;
mod upstream;

use crate::config::VerdictConfig;
use crate::config::{Config, ConnectAt, EarlyTalkerAction};
use crate::net::stream::Stream;
use crate::pipeline::driver::Driver;
use crate::pipeline::envelope::Envelope;
use crate::pipeline::Stage;
use crate::smtp::command::Command;
use crate::smtp::data::{DataLimits, DataReader};
use crate::smtp::extensions::Offer;
use crate::smtp::reply::{self, Reply};
use crate::upstream::{Upstream, UpstreamSettings};
use conn::{Conn, ConnError, Input, Pace};
use report::End;
use state::{Admit, SessionState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
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
    pub verdict: Arc<VerdictConfig>,
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
            verdict: Arc::new(config.verdict.clone()),
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
    conn: Conn,
    shared: Arc<SessionShared>,
    state: SessionState,
    /// The envelope, the checks and the score card (with the pipeline this session started
    /// with: a reload does not change it mid-session).
    tx: Driver,
    upstream: Option<Upstream>,
    /// Set when the upstream failed inside the open transaction: every further transaction
    /// command gets a 4xx until the transaction ends.
    upstream_lost: bool,
    offer: Offer,
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
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Session {
            id,
            conn: Conn::new(Stream::Plain(tcp), shared.limits.max_command_line),
            state: SessionState::default(),
            tx: Driver::new(
                shared.pipeline.current(),
                shared.verdict.clone(),
                Envelope::new(peer, local),
                id,
            ),
            peer,
            upstream: None,
            upstream_lost: false,
            offer,
            transactions: 0,
            refused_transaction: None,
            bdat: None,
            errors: 0,
            require_tls,
            transaction_started: None,
            identity_changed: false,
            shared,
            shutdown,
        }
    }

    /// Runs the session to its end.
    pub async fn run(mut self) {
        let client = self.tx.envelope.client;
        tracing::info!(session = self.id, %client, "connect");
        let decision = self.tx.connect().await;
        if let (Some(r), false) = (&decision.refusal, self.shared.verdict.delay_reject) {
            self.finish(End::refused(
                Stage::Connect,
                r,
                &decision.verdict,
                self.tx.card(),
            ));
            // RFC 5321 3.1: a server may answer the connection with 554 instead of 220.
            self.conn.queue(r);
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
                && !self.tx.envelope.esmtp
                && self.conn.has_buffered_input()
            {
                // RFC 2920 3.1: without the PIPELINING offer a client waits for each reply.
                let action = self.shared.limits.pipelining_action;
                crate::metrics::METRICS
                    .sessions
                    .with_label_values(&["pipelining"])
                    .inc();
                tracing::info!(session = self.id, client = %self.tx.envelope.client, ?action,
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
            tracing::info!(session = self.id, client = %self.tx.envelope.client, "too many errors");
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

    fn lost_client(&mut self, e: ConnError) -> Flow {
        tracing::info!(session = self.id, client = %self.tx.envelope.client, error = %e, "client lost during message transfer; nothing forwarded");
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
}
