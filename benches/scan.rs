//! Offline scanner throughput: moat's data-stage pipeline (MIME parse, content checks, the
//! rules) over a directory of messages on all cores, with network checks off (no SPF/DKIM/
//! DMARC/ARC lookups, no DNS lists), as Rspamd and SpamAssassin run in bench/scanner.sh.
//!
//!   cargo bench --ignore-rust-version --bench scan -- DIR [--threads N] [--passes P] [--warmup DIR]
//!
//! The untimed warm-up pass reads `--warmup DIR` (default: DIR itself). Warming up on other
//! messages than the measured ones keeps the regex engines' lazy DFAs from having seen the
//! measured text already, as in a server where every message is new.
//!
//! Last line: one JSON object (messages, wall, msgs/s, CPU ms per message, rules loaded).

use moat::auth::AuthFacts;
use moat::config::Config;
use moat::pipeline::envelope::Envelope;
use moat::pipeline::{MessageInput, Stage, StageInput};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The process's CPU time (user + system) in seconds, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3; utime, stime are 14, 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A copy of the shipped rules without dnsbl.toml: content rules only, like the peers.
fn rules_without_lists() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let dst = std::env::temp_dir().join(format!("moat-scan-rules-{}", std::process::id()));
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("rules dir").flatten() {
            let p = e.path();
            let rel = p.strip_prefix(&src).expect("under src");
            if p.is_dir() {
                std::fs::create_dir_all(dst.join(rel)).expect("mkdir");
                stack.push(p);
            } else if rel != Path::new("dnsbl.toml") {
                std::fs::create_dir_all(dst.join(rel).parent().expect("parent")).expect("mkdir");
                std::fs::copy(&p, dst.join(rel)).expect("copy");
            }
        }
    }
    dst
}

fn main() {
    let mut dir = None;
    let mut warmup = None;
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut passes = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--threads N")
            }
            "--passes" => {
                passes = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--passes P")
            }
            "--warmup" => warmup = Some(PathBuf::from(args.next().expect("--warmup DIR"))),
            "--bench" => {}
            _ => dir = Some(PathBuf::from(a)),
        }
    }
    let dir = dir.expect("usage: scan DIR [--threads N] [--passes P]");
    let read_all = |dir: &Path| -> Vec<Vec<u8>> {
        let messages: Vec<Vec<u8>> = moat::rules::files_under(dir)
            .iter()
            .filter_map(|f| std::fs::read(f).ok())
            .map(moat::cli::check::to_crlf)
            .collect();
        assert!(!messages.is_empty(), "no messages in {}", dir.display());
        messages
    };
    let messages = read_all(&dir);
    let warmup = warmup.as_deref().map(read_all);

    let rules = rules_without_lists();
    let mut config = Config::parse("", Path::new("bench")).expect("config");
    config.rules.dir = Some(rules.clone());
    config.auth.enabled = false;
    // Nothing may query DNS; an address where nothing listens makes any attempt fail at once.
    config.dns.nameservers = vec!["127.0.0.1:9".into()];
    let built = moat::rules::RuleSet::load(Some(&rules)).expect("rules");
    let pipeline = Arc::new(
        moat::app::build_pipeline(&config, "bench.moat", &moat::app::State::default())
            .expect("pipeline"),
    );
    let _ = std::fs::remove_dir_all(&rules);

    let total = messages.len() * passes;
    let messages = Arc::new(messages);
    let warmup = warmup.map(Arc::new).unwrap_or_else(|| messages.clone());
    let symbols = Arc::new(AtomicUsize::new(0));
    // The same threads warm up and are then measured: the regex engines keep their lazy DFA
    // caches per thread (as a server's worker threads do), so fresh threads would start cold.
    let started = Arc::new(std::sync::Barrier::new(threads + 1));
    let finished = Arc::new(std::sync::Barrier::new(threads + 1));
    let (warm_next, next) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (messages, warmup, pipeline, symbols) = (
                messages.clone(),
                warmup.clone(),
                pipeline.clone(),
                symbols.clone(),
            );
            let (started, finished, warm_next, next) = (
                started.clone(),
                finished.clone(),
                warm_next.clone(),
                next.clone(),
            );
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let unspecified: SocketAddr = "0.0.0.0:0".parse().expect("addr");
                let envelope = Envelope::new(unspecified, unspecified);
                let scan = |raw: &[u8]| {
                    let parsed = mail_parser::MessageParser::default().parse(raw);
                    let input = StageInput {
                        stage: Stage::Data,
                        envelope: &envelope,
                        recipient: None,
                        message: parsed.as_ref().map(|p| MessageInput { raw, parsed: p }),
                        score: 0.0,
                    };
                    let mut facts = AuthFacts::default();
                    rt.block_on(pipeline.run(input, &mut facts)).symbols.len()
                };
                // One untimed pass: the regex engines build their lazy DFA states on first
                // use (the Rspamd and SpamAssassin runs warm up too).
                while let Some(raw) = warmup.get(warm_next.fetch_add(1, Ordering::Relaxed)) {
                    scan(raw);
                }
                started.wait();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let hit = scan(&messages[i % messages.len()]);
                    symbols.fetch_add(hit, Ordering::Relaxed);
                }
                finished.wait();
            })
        })
        .collect();
    started.wait();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    finished.wait();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    for w in workers {
        w.join().expect("worker");
    }
    let mean_size = messages.iter().map(Vec::len).sum::<usize>() / messages.len();
    println!(
        "moat scan: {total} messages ({} files x {passes}), {threads} threads: {:.0} msgs/s, {:.3} ms CPU/msg, {} rules, mean size {mean_size} B",
        messages.len(),
        total as f64 / wall,
        cpu * 1000.0 / total as f64,
        built.rules.len()
    );
    println!(
        "{}",
        serde_json::json!({
            "scanner": "moat",
            "messages": total,
            "files": messages.len(),
            "threads": threads,
            "wall_s": wall,
            "rate": total as f64 / wall,
            "cpu_ms_per_msg": cpu * 1000.0 / total as f64,
            "rules": built.rules.len(),
            "symbols_hit": symbols.load(Ordering::Relaxed),
            "mean_size": mean_size,
        })
    );
}
