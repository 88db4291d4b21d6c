//! A whole session: random client bytes against moat's listener, with an SMTP sink behind it
//! that accepts every other message and defers the rest. Checked after each run:
//! - every message the sink received appears, as the client sent it, in the client's bytes
//!   followed by the CRLF.CRLF that ended it (nothing is forwarded that did not end properly,
//!   and nothing is smuggled past an end of data);
//! - every "queued as" reply the client got is one the sink gave in this run (moat never says
//!   2xx to end of data without the sink's 2xx).
//!
//! Everything is on 127.0.0.1; moat and the sink start once per fuzzing process.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

struct World {
    rt: tokio::runtime::Runtime,
    moat: SocketAddr,
    /// Messages the sink accepted, with their queue ids, since the start.
    accepted: Arc<Mutex<Vec<(String, Vec<u8>)>>>,
    _server: moat::app::Server,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (moat, server) = rt.block_on(async {
            let sink = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
            let sink_addr = sink.local_addr().expect("addr");
            let acc = accepted.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                let counter = Arc::new(Mutex::new(0u64));
                while let Ok((tcp, _)) = sink.accept().await {
                    n += 1;
                    tokio::spawn(sink_session(tcp, acc.clone(), counter.clone()));
                }
                let _ = n;
            });
            // A resolver that answers NXDOMAIN at once: blocklist lookups must not wait for a
            // timeout on every run.
            let dns = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind dns");
            let dns_addr = dns.local_addr().expect("addr");
            tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                while let Ok((n, peer)) = dns.recv_from(&mut buf).await {
                    if n < 12 {
                        continue;
                    }
                    let mut reply = buf[..n].to_vec();
                    reply[2] |= 0x80;
                    reply[3] = 0x80 | 0x03;
                    let _ = dns.send_to(&reply, peer).await;
                }
            });
            let mut config = moat::config::Config::parse(
                "[bayes]\nenabled = false\n[auth]\nenabled = false\n",
                std::path::Path::new("fuzz"),
            )
            .expect("config");
            config.server.listen = vec!["127.0.0.1:0".into()];
            config.server.hostname = Some("moat.fuzz".into());
            config.server.max_sessions_per_ip = 10_000;
            // The tarpit would slow every run that makes errors to a second per reply.
            config.limits.tarpit_after_errors = 0;
            config.upstream.address = sink_addr.to_string();
            config.metrics.listen = String::new();
            config.dns.nameservers = vec![dns_addr.to_string()];
            config.rules.dir =
                Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules"));
            let server = moat::app::Server::start(&config).await.expect("moat starts");
            (server.local_addrs()[0], server)
        });
        World {
            rt,
            moat,
            accepted,
            _server: server,
        }
    })
}

/// A minimal MTA: XCLIENT, EHLO, MAIL, RCPT, DATA; every other message is deferred.
async fn sink_session(tcp: TcpStream, accepted: Arc<Mutex<Vec<(String, Vec<u8>)>>>, counter: Arc<Mutex<u64>>) {
    let (r, mut w) = tcp.into_split();
    let mut r = BufReader::new(r);
    if w.write_all(b"220 sink ESMTP\r\n").await.is_err() {
        return;
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let upper = String::from_utf8_lossy(&line).to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-XCLIENT ADDR NAME HELO PROTO\r\n250 SIZE 10485760\r\n"
        } else if upper.starts_with("XCLIENT") {
            b"220 sink ESMTP\r\n"
        } else if upper.starts_with("DATA") {
            if w.write_all(b"354 go\r\n").await.is_err() {
                return;
            }
            let mut data = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line == b".\r\n" {
                    break;
                }
                data.extend_from_slice(&line);
            }
            let n = {
                let mut c = counter.lock().expect("lock");
                *c += 1;
                *c
            };
            if n % 2 == 0 {
                let _ = w.write_all(b"451 4.3.0 sink says later\r\n").await;
                continue;
            }
            let id = format!("SINK{n}X");
            accepted.lock().expect("lock").push((id.clone(), data));
            let _ = w.write_all(format!("250 2.0.0 Ok: queued as {id}\r\n").as_bytes()).await;
            continue;
        } else if upper.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"250 2.0.0 ok\r\n"
        };
        if w.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// The client's part of a forwarded message: what follows the fields moat prepended.
fn original(forwarded: &[u8]) -> Option<&[u8]> {
    let text = forwarded;
    let start = text.windows(14).position(|w| w == b"X-Spam-Status:")?;
    let mut i = start;
    loop {
        let nl = text[i..].iter().position(|&b| b == b'\n')? + i + 1;
        if nl >= text.len() || !matches!(text[nl], b' ' | b'\t') {
            return Some(&text[nl..]);
        }
        i = nl;
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|input: &[u8]| {
    let w = world();
    let before = w.accepted.lock().expect("lock").len();
    let replies = w.rt.block_on(async {
        let Ok(mut c) = TcpStream::connect(w.moat).await else {
            return Vec::new();
        };
        let _ = c.write_all(input).await;
        let _ = c.shutdown().await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut out)).await;
        out
    });
    let accepted: Vec<(String, Vec<u8>)> = w.accepted.lock().expect("lock")[before..].to_vec();
    let replies = String::from_utf8_lossy(&replies);
    for line in replies.lines().filter(|l| l.contains("queued as SINK")) {
        let id = line.rsplit(' ').next().unwrap_or("");
        assert!(
            accepted.iter().any(|(a, _)| a == id),
            "client told {line:?} but the sink accepted {:?}",
            accepted.iter().map(|a| &a.0).collect::<Vec<_>>()
        );
    }
    let forged = contains(&input.to_ascii_lowercase(), b"authentication-results");
    for (id, data) in &accepted {
        let Some(orig) = original(data) else {
            panic!("{id}: moat's fields missing");
        };
        if !forged {
            let mut ended = orig.to_vec();
            ended.extend_from_slice(b".\r\n");
            assert!(
                contains(input, &ended),
                "{id}: forwarded message not in the client's bytes as sent: {:?}",
                String::from_utf8_lossy(orig)
            );
        }
    }
});
