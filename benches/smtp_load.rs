//! SMTP load generator for the benchmark scripts in `bench/` (not a test, not criterion):
//! sends messages over N concurrent sessions and reports the rate, the replies and the
//! end-of-data latency; or opens N idle sessions to measure memory per session.
//!
//!   cargo bench --ignore-rust-version --bench smtp_load -- --target 127.0.0.1:2525 \
//!       --sessions 10 --messages 20000 [--per-conn 1] [--size 5120 | --corpus DIR ...]
//!   cargo bench --ignore-rust-version --bench smtp_load -- --target ... --idle 10000 --hold 10
//!
//! `--rate R` paces the sessions to R messages per second in total (open loop: message i starts
//! at i/R seconds), for latency at a fixed offered load rather than at saturation, where the
//! figure is mostly time spent queueing for a core.
//!
//! The last line printed is one JSON object with the figures. Only loopback targets are
//! accepted: the corpus holds live phishing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Args {
    target: SocketAddr,
    sessions: usize,
    messages: usize,
    per_conn: usize,
    size: usize,
    corpus: Vec<PathBuf>,
    idle: usize,
    hold: u64,
    rate: f64,
}

fn usage(why: &str) -> ! {
    eprintln!("smtp_load: {why}\nusage: smtp_load --target IP:PORT [--sessions N] [--messages N] [--per-conn N] [--rate MSGS_PER_S] [--size BYTES | --corpus DIR...] | --idle N [--hold SECS]");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        target: "127.0.0.1:2525".parse().expect("literal"),
        sessions: 10,
        messages: 10_000,
        per_conn: 1,
        size: 5120,
        corpus: Vec::new(),
        idle: 0,
        hold: 5,
        rate: 0.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let num = |v: String| -> usize {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("bad number {v}")))
        };
        match flag.as_str() {
            "--target" => a.target = val().parse().unwrap_or_else(|_| usage("bad --target")),
            "--sessions" => a.sessions = num(val()),
            "--messages" => a.messages = num(val()),
            "--per-conn" => a.per_conn = num(val()),
            "--size" => a.size = num(val()),
            "--corpus" => a.corpus.push(PathBuf::from(val())),
            "--idle" => a.idle = num(val()),
            "--hold" => a.hold = num(val()) as u64,
            "--rate" => a.rate = num(val()) as f64,
            // cargo bench passes --bench to harness=false targets.
            "--bench" => {}
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if !a.target.ip().is_loopback() {
        usage("only loopback targets are allowed");
    }
    a.sessions = a.sessions.max(1);
    a
}

/// A message body as it goes on the wire after DATA: CRLF lines, dot-stuffed, ending CRLF.CRLF.
fn wire(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 50 + 8);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in raw {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn generated(size: usize) -> Vec<u8> {
    let mut m = b"From: sender@bench.local\r\nTo: rcpt@example.net\r\nSubject: load test\r\nMessage-Id: <load@bench.local>\r\n\r\n".to_vec();
    let line =
        b"The quick brown fox jumps over the lazy dog and keeps running along the fence.\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    wire(&m)
}

fn load_corpus(dirs: &[PathBuf]) -> Vec<Vec<u8>> {
    dirs.iter()
        .flat_map(|d| moat::rules::files_under(d))
        .filter_map(|p| std::fs::read(p).ok())
        .map(|b| wire(&b))
        .collect()
}

struct Conn {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
    line: String,
}

impl Conn {
    async fn open(target: SocketAddr) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect(target).await?;
        tcp.set_nodelay(true)?;
        let (r, w) = tcp.into_split();
        let mut c = Conn {
            r: BufReader::new(r),
            w,
            line: String::new(),
        };
        let code = c.reply().await?;
        if code != 220 {
            return Err(std::io::Error::other(format!("greeting {code}")));
        }
        let code = c.cmd(b"EHLO load.bench.local\r\n").await?;
        if code != 250 {
            return Err(std::io::Error::other(format!("EHLO {code}")));
        }
        Ok(c)
    }

    /// Reads a (multi-line) reply and returns its code.
    async fn reply(&mut self) -> std::io::Result<u16> {
        loop {
            self.line.clear();
            if self.r.read_line(&mut self.line).await? == 0 {
                return Err(std::io::Error::other("connection closed"));
            }
            let b = self.line.as_bytes();
            if b.len() < 4 {
                return Err(std::io::Error::other(format!("bad reply {:?}", self.line)));
            }
            if b[3] != b'-' {
                return std::str::from_utf8(&b[..3])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| std::io::Error::other("bad code"));
            }
        }
    }

    async fn cmd(&mut self, line: &[u8]) -> std::io::Result<u16> {
        self.w.write_all(line).await?;
        self.reply().await
    }

    /// One transaction; returns the final reply code, the end-of-data latency and the RCPT
    /// latency.
    async fn send(&mut self, body: &[u8]) -> std::io::Result<(u16, Duration, Duration)> {
        let code = self.cmd(b"MAIL FROM:<sender@bench.local>\r\n").await?;
        if code != 250 {
            return Ok((code, Duration::ZERO, Duration::ZERO));
        }
        let t = Instant::now();
        let code = self.cmd(b"RCPT TO:<rcpt@example.net>\r\n").await?;
        let rcpt = t.elapsed();
        if code != 250 {
            self.cmd(b"RSET\r\n").await?;
            return Ok((code, Duration::ZERO, rcpt));
        }
        let code = self.cmd(b"DATA\r\n").await?;
        if code != 354 {
            return Ok((code, Duration::ZERO, rcpt));
        }
        self.w.write_all(body).await?;
        let t = Instant::now();
        let code = self.reply().await?;
        Ok((code, t.elapsed(), rcpt))
    }

    async fn quit(mut self) {
        let _ = self.cmd(b"QUIT\r\n").await;
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    temp: AtomicUsize,
    perm: AtomicUsize,
    errors: AtomicUsize,
}

async fn run_send(a: &Args, bodies: Arc<Vec<Vec<u8>>>) -> serde_json::Value {
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.sessions {
        let (next, tally, bodies) = (next.clone(), tally.clone(), bodies.clone());
        let (target, total, per_conn, rate) = (a.target, a.messages, a.per_conn, a.rate);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut rcpt_lat = Vec::new();
            let mut conn: Option<(Conn, usize)> = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                if rate > 0.0 {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let (mut c, used) = match conn.take() {
                    Some(x) => x,
                    None => match Conn::open(target).await {
                        Ok(c) => (c, 0),
                        Err(_) => {
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    },
                };
                match c.send(&bodies[i % bodies.len()]).await {
                    Ok((code, d, rcpt)) => {
                        rcpt_lat.push(rcpt);
                        let slot = match code / 100 {
                            2 => &tally.ok,
                            4 => &tally.temp,
                            _ => &tally.perm,
                        };
                        slot.fetch_add(1, Ordering::Relaxed);
                        if code / 100 == 2 {
                            lat.push(d);
                        }
                        if per_conn > 0 && used + 1 >= per_conn {
                            c.quit().await;
                        } else {
                            conn = Some((c, used + 1));
                        }
                    }
                    Err(_) => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if let Some((c, _)) = conn {
                c.quit().await;
            }
            (lat, rcpt_lat)
        }));
    }
    let (mut lat, mut rcpt_lat): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for t in tasks {
        if let Ok((l, r)) = t.await {
            lat.extend(l);
            rcpt_lat.extend(r);
        }
    }
    let wall = start.elapsed().as_secs_f64();
    lat.sort();
    rcpt_lat.sort();
    let pct_of = |lat: &[Duration], p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1000.0
    };
    let pct = |p: f64| pct_of(&lat, p);
    let done = tally.ok.load(Ordering::Relaxed)
        + tally.temp.load(Ordering::Relaxed)
        + tally.perm.load(Ordering::Relaxed);
    serde_json::json!({
        "mode": "send",
        "target": a.target.to_string(),
        "sessions": a.sessions,
        "per_conn": a.per_conn,
        "offered_rate": a.rate,
        "messages": a.messages,
        "bodies": bodies.len(),
        "mean_size": bodies.iter().map(Vec::len).sum::<usize>() / bodies.len().max(1),
        "ok": tally.ok.load(Ordering::Relaxed),
        "tempfail": tally.temp.load(Ordering::Relaxed),
        "reject": tally.perm.load(Ordering::Relaxed),
        "errors": tally.errors.load(Ordering::Relaxed),
        "wall_s": wall,
        "rate": done as f64 / wall,
        "eod_ms_p50": pct(0.50),
        "eod_ms_p90": pct(0.90),
        "eod_ms_p99": pct(0.99),
        "rcpt_ms_p50": pct_of(&rcpt_lat, 0.50),
        "rcpt_ms_p99": pct_of(&rcpt_lat, 0.99),
    })
}

async fn run_idle(a: &Args) -> serde_json::Value {
    let start = Instant::now();
    let mut open = Vec::with_capacity(a.idle);
    let mut failed = 0usize;
    // Open in waves so the listen backlog is not the thing being measured.
    for chunk in (0..a.idle).collect::<Vec<_>>().chunks(200) {
        let results =
            futures_util::future::join_all(chunk.iter().map(|_| Conn::open(a.target))).await;
        for r in results {
            match r {
                Ok(c) => open.push(c),
                Err(_) => failed += 1,
            }
        }
    }
    let opened_s = start.elapsed().as_secs_f64();
    println!(
        "idle: {} sessions open after EHLO, {failed} failed, in {opened_s:.2}s; holding {}s",
        open.len(),
        a.hold
    );
    tokio::time::sleep(Duration::from_secs(a.hold)).await;
    // Still alive? One NOOP on each.
    let mut alive = 0usize;
    for c in open.iter_mut() {
        if matches!(c.cmd(b"NOOP\r\n").await, Ok(250)) {
            alive += 1;
        }
    }
    let n = open.len();
    futures_util::future::join_all(open.into_iter().map(Conn::quit)).await;
    serde_json::json!({
        "mode": "idle",
        "target": a.target.to_string(),
        "requested": a.idle,
        "opened": n,
        "failed": failed,
        "alive_after_hold": alive,
        "open_s": opened_s,
        "connections_per_s": n as f64 / opened_s,
    })
}

fn main() {
    let a = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        if a.idle > 0 {
            run_idle(&a).await
        } else {
            let bodies = if a.corpus.is_empty() {
                vec![generated(a.size)]
            } else {
                load_corpus(&a.corpus)
            };
            if bodies.is_empty() {
                usage("no messages in --corpus");
            }
            run_send(&a, Arc::new(bodies)).await
        }
    });
    println!("{result}");
}
