//! Fault injection: 50 concurrent senders push 1,000 messages through moat per scenario while
//! the upstream, DNS, the clients or the operator break things. After each run:
//! - every message the client was told 2xx for is in the sink once, byte-identical below
//!   the fields moat prepends;
//! - every other message was told 4xx or 5xx (or its sender hung up on purpose);
//! - no message is in the sink twice.
//!
//! A message the sink accepted after moat had given up on it (a stall beyond moat's timeout)
//! may be in the sink although its client was told 4xx: that is SMTP's own duplicate window
//! (RFC 1047), and the sender's retry would deliver it again; it is counted, not failed.

use crate::support::dns::{ServfailDns, SilentDns, SlowDns, TestDns};
use crate::support::sink::Chaos;
use crate::support::{Moat, Sink, SinkOptions};
use moat::config::{Config, ConfigDuration};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const SENDERS: usize = 50;

/// Messages per sender: 20 in the test suite (1,000 per scenario); `bench/soak.sh` sets
/// MOAT_FAULT_PER_SENDER for a longer run.
fn per_sender() -> usize {
    std::env::var("MOAT_FAULT_PER_SENDER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// How one message ended for its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The reply code to end of data, or to the MAIL/RCPT/DATA that refused it.
    Code(u16),
    /// The sender hung up in the middle on purpose.
    Vanished,
    /// The connection closed without a reply (never acceptable, except while draining).
    NoReply,
    /// moat took no connection (it had shut down): the message was never offered.
    NotConnected,
}

struct Sent {
    id: usize,
    body: Vec<u8>,
    end: End,
}

/// The message with id `id`: a unique Message-ID and a body of varied length.
fn message(id: usize) -> Vec<u8> {
    let filler: String = (0..(id * 37 % 60))
        .map(|i| format!("line {i} of message {id}: the quick brown fox\r\n"))
        .collect();
    format!(
        "From: sender{id}@example.test\r\nTo: rcpt@example.test\r\nSubject: fault test {id}\r\nMessage-ID: <fault-{id}@example.test>\r\n\r\nBody of message {id}.\r\n{filler}.leading dot line\r\n"
    )
    .into_bytes()
}

fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out
}

struct Conn {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Option<Conn> {
        let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
        let (r, w) = tcp.into_split();
        let mut c = Conn {
            r: BufReader::new(r),
            w,
        };
        if c.reply().await? != 220 {
            return None;
        }
        (c.cmd("EHLO sender.example.test").await? == 250).then_some(c)
    }

    /// The code of the next (possibly multi-line) reply; `None` when the connection closed.
    async fn reply(&mut self) -> Option<u16> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = tokio::time::timeout(Duration::from_secs(30), self.r.read_line(&mut line))
                .await
                .ok()?
                .ok()?;
            if n == 0 || line.len() < 4 {
                return None;
            }
            if line.as_bytes()[3] != b'-' {
                return line[..3].parse().ok();
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> Option<u16> {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .ok()?;
        self.reply().await
    }
}

/// One sender: its messages in turn over one connection, a new connection whenever moat
/// closed it. With `vanish`, every fifth message is abandoned in the middle of DATA.
async fn sender(addr: SocketAddr, ids: std::ops::Range<usize>, vanish: bool) -> Vec<Sent> {
    let mut out = Vec::new();
    let mut conn: Option<Conn> = None;
    for id in ids {
        let body = message(id);
        if conn.is_none() {
            conn = Conn::open(addr).await;
        }
        let Some(c) = conn.as_mut() else {
            out.push(Sent {
                id,
                body,
                end: End::NotConnected,
            });
            continue;
        };
        let end = send_one(c, id, &body, vanish && id % 5 == 3).await;
        match end {
            End::Code(code) if (200..300).contains(&code) => {}
            End::Code(code) if code >= 500 => {
                // Refused at MAIL or RCPT leaves the transaction open: start clean.
                if c.cmd("RSET").await != Some(250) {
                    conn = None;
                }
            }
            // A deferral: come back on a new connection, as a queue would (moat may have
            // lost its MTA session for this one).
            End::Code(_) => {
                let _ = c.cmd("QUIT").await;
                conn = None;
            }
            End::NoReply | End::Vanished | End::NotConnected => conn = None,
        }
        out.push(Sent { id, body, end });
    }
    if let Some(mut c) = conn {
        let _ = c.cmd("QUIT").await;
    }
    out
}

async fn send_one(c: &mut Conn, id: usize, body: &[u8], vanish: bool) -> End {
    let step = |code: Option<u16>, want: u16| match code {
        None => Err(End::NoReply),
        Some(c) if c == want => Ok(()),
        Some(c) => Err(End::Code(c)),
    };
    let r = async {
        step(
            c.cmd(&format!("MAIL FROM:<sender{id}@example.test>")).await,
            250,
        )?;
        step(c.cmd("RCPT TO:<rcpt@example.test>").await, 250)?;
        step(c.cmd("DATA").await, 354)?;
        let data = dot_stuff(body);
        if vanish {
            let _ = c.w.write_all(&data[..data.len() / 2]).await;
            let _ = c.w.shutdown().await;
            return Err(End::Vanished);
        }
        if c.w.write_all(&data).await.is_err() || c.w.write_all(b".\r\n").await.is_err() {
            return Err(End::NoReply);
        }
        match c.reply().await {
            Some(code) => Ok(End::Code(code)),
            None => Err(End::NoReply),
        }
    }
    .await;
    match r {
        Ok(end) | Err(end) => end,
    }
}

/// Runs the senders against `addr`, with `during` running alongside (faults over time).
async fn load<F>(addr: SocketAddr, vanish: bool, during: F) -> Vec<Sent>
where
    F: std::future::Future<Output = ()>,
{
    let tasks: Vec<_> = (0..SENDERS)
        .map(|s| {
            tokio::spawn(sender(
                addr,
                s * per_sender()..(s + 1) * per_sender(),
                vanish,
            ))
        })
        .collect();
    let senders = async {
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("sender task"));
        }
        all
    };
    let (all, ()) = tokio::join!(senders, during);
    all
}

/// The invariant; returns (accepted, deferred, refused, vanished, unanswered, late copies,
/// not offered).
fn verify(sent: &[Sent], sink: &Sink, allow_no_reply: bool) -> [usize; 7] {
    assert_eq!(sent.len(), SENDERS * per_sender());
    let mut in_sink: HashMap<usize, Vec<Vec<u8>>> = HashMap::new();
    for m in sink.messages() {
        let text = String::from_utf8_lossy(&m.body);
        let id: usize = text
            .split("Message-ID: <fault-")
            .nth(1)
            .and_then(|r| r.split('@').next())
            .and_then(|n| n.parse().ok())
            .expect("a test message in the sink");
        in_sink.entry(id).or_default().push(m.body.clone());
    }
    let mut counts = [0usize; 7];
    for s in sent {
        let copies = in_sink.get(&s.id).map_or(0, Vec::len);
        assert!(
            copies <= 1,
            "message {} is in the sink {copies} times",
            s.id
        );
        match s.end {
            End::Code(c) if (200..300).contains(&c) => {
                counts[0] += 1;
                let got = in_sink
                    .get(&s.id)
                    .and_then(|v| v.first())
                    .unwrap_or_else(|| {
                        panic!("message {} was accepted but is not in the sink", s.id)
                    });
                assert!(
                    got.ends_with(&s.body),
                    "message {} changed on the way: {:?}",
                    s.id,
                    String::from_utf8_lossy(got)
                );
            }
            End::Code(c) if (400..500).contains(&c) => {
                counts[1] += 1;
                counts[5] += copies;
            }
            End::Code(c) if c >= 500 => {
                counts[2] += 1;
                assert_eq!(
                    copies, 0,
                    "message {} was refused ({c}) but delivered",
                    s.id
                );
            }
            End::Code(c) => panic!("message {}: unexpected reply {c}", s.id),
            End::Vanished => {
                counts[3] += 1;
                assert_eq!(copies, 0, "message {} was abandoned but delivered", s.id);
            }
            End::NotConnected => {
                counts[6] += 1;
                assert!(
                    allow_no_reply,
                    "message {}: moat refused the connection",
                    s.id
                );
                assert_eq!(copies, 0);
            }
            End::NoReply => {
                counts[4] += 1;
                assert!(
                    allow_no_reply,
                    "message {}: the connection closed without a reply",
                    s.id
                );
                counts[5] += copies;
            }
        }
    }
    counts
}

fn report(name: &str, c: [usize; 7], sink: &Sink) {
    println!(
        "fault scenario {name}: {} messages over {SENDERS} sessions: {} accepted, {} deferred, {} refused, {} abandoned by the client, {} unanswered, {} not offered (moat gone); sink holds {} ({} accepted by the MTA after moat gave up)",
        SENDERS * per_sender(),
        c[0],
        c[1],
        c[2],
        c[3],
        c[4],
        c[6],
        sink.messages().len(),
        c[5]
    );
}

fn short_upstream_timeouts(c: &mut Config) {
    c.upstream.connect_timeout = ConfigDuration(Duration::from_secs(2));
    c.upstream.command_timeout = ConfigDuration(Duration::from_secs(2));
    c.upstream.data_timeout = ConfigDuration(Duration::from_secs(2));
    c.server.max_sessions_per_ip = 200;
}

/// One scenario: moat (short upstream timeouts, then `configure`) in front of `sink`, with
/// `dns` as its resolver if given, under the load; after `settle` (for late deliveries) the
/// invariant is checked and the outcome printed.
async fn scenario(
    name: &str,
    sink: &Sink,
    dns: Option<SocketAddr>,
    vanish: bool,
    settle: Duration,
    configure: impl FnOnce(&mut Config),
) -> [usize; 7] {
    let mut builder = Moat::builder().upstream(sink).with(|c| {
        short_upstream_timeouts(c);
        configure(c);
    });
    if let Some(addr) = dns {
        builder = builder.dns(addr);
    }
    let moat = builder.start().await;
    let sent = load(moat.addr, vanish, async {}).await;
    tokio::time::sleep(settle).await;
    let c = verify(&sent, sink, false);
    report(name, c, sink);
    c
}

fn chaos_sink(chaos: Chaos) -> SinkOptions {
    SinkOptions {
        chaos: Some(chaos),
        ..Default::default()
    }
}

const NO_WAIT: Duration = Duration::ZERO;
/// Longer than a chaos stall: what the MTA accepted after moat gave up has landed.
const AFTER_STALLS: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_failing_at_random_stages() {
    let sink = Sink::with(chaos_sink(Chaos {
        seed: 1,
        mail_fail: 4,
        rcpt_fail: 4,
        data_fail: 6,
        die_mid_data: 3,
        stall: 1,
        stall_for: Duration::from_secs(3),
    }))
    .await;
    let c = scenario("upstream chaos", &sink, None, false, AFTER_STALLS, |_| {}).await;
    assert!(c[0] > per_sender() * 25 && c[1] > 0 && c[2] > 0, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_refusing_connections() {
    // A port nothing listens on: every connection to the MTA is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let sink = Sink::start().await;
    let c = scenario(
        "upstream refuses connections",
        &sink,
        None,
        false,
        NO_WAIT,
        |c| {
            c.upstream.address = closed.to_string();
        },
    )
    .await;
    assert_eq!(c[1], SENDERS * per_sender(), "all deferred: {c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_accepting_then_stalling() {
    // The MTA takes the connection and never greets within moat's connect timeout.
    let sink = Sink::with(SinkOptions {
        stall_greeting: Some(Duration::from_secs(4)),
        ..Default::default()
    })
    .await;
    let c = scenario(
        "upstream accepts then stalls",
        &sink,
        None,
        false,
        NO_WAIT,
        |_| {},
    )
    .await;
    assert_eq!(c[1], SENDERS * per_sender(), "all deferred: {c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_stalling_beyond_the_timeout() {
    let sink = Sink::with(chaos_sink(Chaos {
        seed: 2,
        stall: 5,
        stall_for: Duration::from_secs(3),
        ..Default::default()
    }))
    .await;
    let c = scenario(
        "upstream stalls past the timeout",
        &sink,
        None,
        false,
        AFTER_STALLS,
        |_| {},
    )
    .await;
    assert!(c[1] > 0 && c[0] > per_sender() * 25, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dns_failing_silent_and_slow() {
    let servfail = ServfailDns::start().await;
    let silent = SilentDns::start().await;
    let zones = TestDns::fixtures(Vec::new()).await;
    // Every answer 150 ms late: within the timeouts, so mail flows, only later.
    let slow = SlowDns::start(zones.addr, Duration::from_millis(150)).await;
    for (name, addr) in [
        ("DNS SERVFAIL", servfail.addr),
        ("DNS silent", silent.addr),
        ("DNS answers slowly", slow.addr),
    ] {
        let sink = Sink::start().await;
        let c = scenario(name, &sink, Some(addr), false, NO_WAIT, |c| {
            c.dns.timeout = ConfigDuration(Duration::from_millis(400));
            c.dns.list_timeout = ConfigDuration(Duration::from_millis(400));
        })
        .await;
        // Authentication that cannot finish defers or scores (the DNS failure policy);
        // nothing is lost either way.
        assert_eq!(c[0] + c[1] + c[2], SENDERS * per_sender(), "{c:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_vanishing_mid_data() {
    let sink = Sink::start().await;
    let c = scenario(
        "clients vanish mid-DATA",
        &sink,
        None,
        true,
        NO_WAIT,
        |_| {},
    )
    .await;
    assert_eq!(c[3], SENDERS * per_sender() / 5, "{c:?}");
    assert_eq!(c[0], SENDERS * per_sender() - c[3], "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rule_reloads_then_drain_under_load() {
    let (moat, sink) = Moat::builder()
        .with(short_upstream_timeouts)
        .start_with_sink()
        .await;
    let addr = moat.addr;
    let rules = moat.server().rules().clone();
    let counter = rules.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    // What SIGHUP does, every 20 ms while the senders run.
    let reloads = async move {
        let mut n = 0;
        while !s2.load(Ordering::Relaxed) && n < 500 {
            rules.request_reload();
            tokio::time::sleep(Duration::from_millis(20)).await;
            n += 1;
        }
    };
    let senders = load(addr, false, reloads);
    let stopper = async {
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (sent, ()) = tokio::join!(senders, stopper);
    stop.store(true, Ordering::Relaxed);
    let c = verify(&sent, &sink, false);
    report("rule reloads under load", c, &sink);
    println!(
        "  {} rule reloads completed during the load",
        counter.reloads_ok()
    );
    assert!(counter.reloads_ok() > 0);
    assert_eq!(c[0], SENDERS * per_sender(), "{c:?}");

    // What SIGTERM does, in the middle of a second load: transactions in flight finish,
    // idle sessions get 421, new connections are refused.
    let (moat, sink) = Moat::builder()
        .with(short_upstream_timeouts)
        .start_with_sink()
        .await;
    let addr = moat.addr;
    let drain = async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(moat.shutdown().await, "drained in time");
    };
    let sent = load(addr, false, drain).await;
    let c = verify(&sent, &sink, true);
    report("SIGTERM drain under load", c, &sink);
    assert!(c[0] > 0 && c[0] < SENDERS * per_sender(), "{c:?}");
}
