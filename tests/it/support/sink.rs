//! A scriptable SMTP sink that plays the upstream MTA: it records what it receives and can be
//! told to refuse, drop the connection mid-DATA, or stall.

use moat::net::stream::Stream;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the sink behaves.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Offer XCLIENT.
    pub xclient: bool,
    /// Close the connection right after answering a message (an MTA that drops idle
    /// sessions; the client only finds out at its next command).
    pub close_after_message: bool,
    /// Like Postfix: after XCLIENT the session belongs to the named client, which is not an
    /// authorized XCLIENT host, so XCLIENT is neither offered nor accepted again.
    pub xclient_once: bool,
    /// Offer XFORWARD.
    pub xforward: bool,
    /// Offer DSN.
    pub dsn: bool,
    /// Offer 8BITMIME.
    pub eight_bit: bool,
    /// Offer SMTPUTF8.
    pub smtputf8: bool,
    /// Offer SIZE with this limit.
    pub size: Option<usize>,
    /// The final reply to a message (`{n}` becomes a queue id).
    pub data_reply: String,
    /// Close the connection after this many octets of message data.
    pub die_mid_data: Option<usize>,
    /// Wait this long before the final reply to a message.
    pub stall_after_data: Option<Duration>,
    /// Wait this long before the greeting.
    pub stall_greeting: Option<Duration>,
    /// Offer STARTTLS with this identity.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Refuse the EHLO that follows XCLIENT with this reply (the MTA's policy on the client).
    pub refuse_client_ehlo: Option<String>,
    /// Random faults (fault-injection tests).
    pub chaos: Option<Chaos>,
}

/// Random faults, each a chance in percent, drawn from a generator seeded per connection.
#[derive(Debug, Clone, Default)]
pub struct Chaos {
    /// Seed of the per-connection generators.
    pub seed: u64,
    /// MAIL answered 451 or 550.
    pub mail_fail: u32,
    /// RCPT answered 450 or 550.
    pub rcpt_fail: u32,
    /// End of data answered 451 or 554.
    pub data_fail: u32,
    /// The connection dropped in the middle of a message.
    pub die_mid_data: u32,
    /// The final reply delayed by `stall_for` (beyond moat's timeout, if so configured).
    pub stall: u32,
    /// How long a stall lasts.
    pub stall_for: Duration,
}

/// xorshift64*: reproducible, good enough for choosing faults.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with `pct` percent chance.
    fn roll(&mut self, pct: u32) -> bool {
        pct > 0 && self.next() % 100 < u64::from(pct)
    }
}

static CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            xclient: true,
            xclient_once: false,
            close_after_message: false,
            xforward: false,
            dsn: true,
            eight_bit: true,
            smtputf8: true,
            size: Some(50_000_000),
            data_reply: "250 2.0.0 Ok: queued as SINK{n}".into(),
            die_mid_data: None,
            stall_after_data: None,
            stall_greeting: None,
            tls: None,
            refuse_client_ehlo: None,
            chaos: None,
        }
    }
}

/// One message the sink accepted.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// The XCLIENT line that preceded it, if any.
    pub xclient: Option<String>,
    /// The XFORWARD line that preceded it, if any.
    pub xforward: Option<String>,
    /// The TLS version of the upstream hop, if encrypted.
    pub tls: Option<&'static str>,
    /// The MAIL line as received.
    pub mail: String,
    /// The RCPT lines the sink accepted.
    pub rcpts: Vec<String>,
    /// The message, dot-stuffing undone.
    pub body: Vec<u8>,
}

#[derive(Debug, Default)]
struct Log {
    messages: Vec<Received>,
    commands: Vec<String>,
    connections: usize,
}

/// A running sink on 127.0.0.1.
#[derive(Clone)]
pub struct Sink {
    /// Where it listens.
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl Sink {
    /// Starts a sink with default options.
    pub async fn start() -> Sink {
        Self::with(SinkOptions::default()).await
    }

    /// Starts a sink with these options.
    pub async fn with(opts: SinkOptions) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let addr = listener.local_addr().expect("sink addr");
        let log = Arc::new(Mutex::new(Log::default()));
        let l2 = log.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                l2.lock().unwrap().connections += 1;
                tokio::spawn(serve(tcp, opts.clone(), l2.clone()));
            }
        });
        Sink { addr, log }
    }

    /// The messages accepted so far.
    pub fn messages(&self) -> Vec<Received> {
        self.log.lock().unwrap().messages.clone()
    }

    /// Every command line received so far, in order.
    pub fn commands(&self) -> Vec<String> {
        self.log.lock().unwrap().commands.clone()
    }

    /// How many command lines received so far start with `verb` (`"XCLIENT"`, `"RSET"`).
    pub fn count(&self, verb: &str) -> usize {
        self.commands()
            .iter()
            .filter(|c| {
                c.get(..verb.len())
                    .is_some_and(|v| v.eq_ignore_ascii_case(verb))
            })
            .count()
    }

    /// Connections accepted so far (the start-up probe included).
    pub fn connections(&self) -> usize {
        self.log.lock().unwrap().connections
    }
}

async fn serve(tcp: TcpStream, opts: SinkOptions, log: Arc<Mutex<Log>>) {
    let mut tcp = Stream::Plain(tcp);
    if let Some(d) = opts.stall_greeting {
        tokio::time::sleep(d).await;
    }
    let mut buf = Vec::new();
    let mut current = Received::default();
    let mut xclient = None;
    let mut xforward = None;
    let mut close_now = false;
    let chaos = opts.chaos.clone().unwrap_or_default();
    let mut dice = Dice(
        chaos.seed
            ^ CONNECTIONS
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            | 1,
    );
    if tcp.write_all(b"220 sink.test ESMTP\r\n").await.is_err() {
        return;
    }
    loop {
        let Some(line) = read_line(&mut tcp, &mut buf).await else {
            return;
        };
        log.lock().unwrap().commands.push(line.clone());
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO")
            && xclient.is_some()
            && opts.refuse_client_ehlo.is_some()
        {
            opts.refuse_client_ehlo.clone().unwrap_or_default()
        } else if upper.starts_with("EHLO") {
            let mut caps = vec!["250-sink.test".to_string(), "250-PIPELINING".into()];
            if let Some(n) = opts.size {
                caps.push(format!("250-SIZE {n}"));
            }
            if opts.eight_bit {
                caps.push("250-8BITMIME".into());
            }
            if opts.dsn {
                caps.push("250-DSN".into());
            }
            if opts.smtputf8 {
                caps.push("250-SMTPUTF8".into());
            }
            if opts.xclient && !(opts.xclient_once && xclient.is_some()) {
                caps.push("250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN".into());
            }
            if opts.xforward {
                caps.push("250-XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT".into());
            }
            if opts.tls.is_some() && tcp.tls_version().is_none() {
                caps.push("250-STARTTLS".into());
            }
            caps.push("250 ENHANCEDSTATUSCODES".into());
            caps.join("\r\n")
        } else if upper == "STARTTLS" && opts.tls.is_some() {
            let Some(cfg) = opts.tls.clone() else { return };
            if tcp
                .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                .await
                .is_err()
            {
                return;
            }
            let Some(plain) = tcp.take_plain() else {
                return;
            };
            match tokio_rustls::TlsAcceptor::from(cfg).accept(plain).await {
                Ok(tls) => tcp = Stream::ServerTls(Box::new(tls)),
                Err(_) => return,
            }
            buf.clear();
            continue;
        } else if upper.starts_with("XCLIENT") {
            if opts.xclient_once && xclient.is_some() {
                "550 5.7.0 Error: insufficient authorization".into()
            } else {
                xclient = Some(line.clone());
                "220 sink.test ESMTP".into()
            }
        } else if upper.starts_with("XFORWARD") {
            xforward = Some(line.clone());
            "250 2.0.0 Ok".into()
        } else if upper.starts_with("MAIL") {
            current = Received {
                xclient: xclient.clone(),
                xforward: xforward.clone(),
                tls: tcp.tls_version(),
                mail: line.clone(),
                ..Default::default()
            };
            if line.contains("mailfail") {
                "451 4.3.0 <sender>: temporary sender trouble".into()
            } else if dice.roll(chaos.mail_fail) {
                if dice.roll(50) {
                    "451 4.3.0 chaos: sender deferred".into()
                } else {
                    "550 5.7.1 chaos: sender refused".into()
                }
            } else {
                "250 2.1.0 Ok".into()
            }
        } else if upper.starts_with("RCPT") {
            if line.contains("<reject") {
                "550 5.1.1 <reject@example.test>: Recipient address rejected: User unknown".into()
            } else if line.contains("<defer") {
                "450 4.2.0 <defer@example.test>: Recipient address rejected: try later".into()
            } else if line.contains("<noenhanced") {
                "550 no such user here".into()
            } else if dice.roll(chaos.rcpt_fail) {
                if dice.roll(50) {
                    "450 4.2.0 chaos: recipient deferred".into()
                } else {
                    "550 5.1.1 chaos: recipient refused".into()
                }
            } else {
                current.rcpts.push(line.clone());
                "250 2.1.5 Ok".into()
            }
        } else if upper == "DATA" {
            if tcp
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await
                .is_err()
            {
                return;
            }
            let die = if dice.roll(chaos.die_mid_data) {
                Some(10 + (dice.next() % 400) as usize)
            } else {
                opts.die_mid_data
            };
            let Some(body) = read_data(&mut tcp, &mut buf, die).await else {
                return;
            };
            if let Some(d) = opts.stall_after_data {
                tokio::time::sleep(d).await;
            }
            if dice.roll(chaos.stall) {
                tokio::time::sleep(chaos.stall_for).await;
            }
            let fail = dice.roll(chaos.data_fail);
            let coin = dice.roll(50);
            current.body = body;
            let mut l = log.lock().unwrap();
            let n = l.messages.len() + 1;
            let reply = match (fail, coin) {
                (true, true) => "451 4.3.0 chaos: message deferred".to_string(),
                (true, false) => "554 5.7.1 chaos: message refused".to_string(),
                _ => opts.data_reply.replace("{n}", &n.to_string()),
            };
            if reply.starts_with('2') {
                l.messages.push(std::mem::take(&mut current));
            }
            close_now = opts.close_after_message;
            reply
        } else if upper == "RSET" {
            current = Received::default();
            "250 2.0.0 Ok".into()
        } else if upper == "QUIT" {
            let _ = tcp.write_all(b"221 2.0.0 Bye\r\n").await;
            return;
        } else if upper == "NOOP" {
            "250 2.0.0 Ok".into()
        } else {
            "502 5.5.2 Error: command not recognized".into()
        };
        if tcp
            .write_all(format!("{reply}\r\n").as_bytes())
            .await
            .is_err()
            || close_now
        {
            return;
        }
    }
}

async fn read_more(tcp: &mut Stream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16384];
    let n = tcp.read(&mut chunk).await.ok()?;
    if n == 0 {
        return None;
    }
    buf.extend_from_slice(&chunk[..n]);
    Some(())
}

async fn read_line(tcp: &mut Stream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line: Vec<u8> = buf.drain(..i + 2).collect();
            return Some(String::from_utf8_lossy(&line[..i]).into_owned());
        }
        read_more(tcp, buf).await?;
    }
}

/// Reads a message to CRLF.CRLF exactly (strict, like a modern MTA), undoing dot-stuffing.
async fn read_data(
    tcp: &mut Stream,
    buf: &mut Vec<u8>,
    die_after: Option<usize>,
) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    let mut seen = 0usize;
    loop {
        while let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line: Vec<u8> = buf.drain(..i + 2).collect();
            seen += line.len();
            if line == b".\r\n" {
                return Some(body);
            }
            let content = if line.first() == Some(&b'.') {
                &line[1..]
            } else {
                &line[..]
            };
            body.extend_from_slice(content);
        }
        if let Some(limit) = die_after {
            if seen + buf.len() >= limit {
                return None;
            }
        }
        read_more(tcp, buf).await?;
        if let Some(limit) = die_after {
            if seen + buf.len() >= limit {
                // Drop the connection in the middle of the message.
                return None;
            }
        }
    }
}
