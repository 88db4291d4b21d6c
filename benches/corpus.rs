//! Runs the default ruleset over ../shared/corpus (ham and spam) with DNS lists unreachable
//! (content and authentication only: the DNS server is an empty in-process one) and prints the
//! detection figures and the hit rate of every rule and symbol.
//!
//!     cargo bench --ignore-rust-version --bench corpus [-- CORPUS_DIR]
//!
//! Targets (issue 4): 0 ham rejected, at most 1% of ham flagged, at least 55% of spam caught
//! (flagged or refused).

#[path = "../tests/it/support/dns.rs"]
#[allow(dead_code)]
mod dns;

use moat::auth::AuthFacts;
use moat::config::Config;
use moat::pipeline::envelope::Envelope;
use moat::pipeline::{Action, MessageInput, ScoreCard, Stage, StageInput};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[derive(Default)]
struct Tally {
    total: usize,
    flagged: usize,
    rejected: usize,
    tempfailed: usize,
}

fn main() {
    let corpus = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("MOAT_SHARED").map(|d| PathBuf::from(d).join("corpus")))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    if !corpus.join("ham").is_dir() {
        eprintln!(
            "{}: no corpus there; pass its path or set MOAT_SHARED",
            corpus.display()
        );
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(dns::TestDns::start(Vec::new()));
    let mut config = Config::parse("", Path::new("bench")).expect("config");
    config.rules.dir = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"));
    config.dns.nameservers = vec![server.addr.to_string()];
    config.auth.dns_failure = moat::config::DnsFailure::Score;
    let pipeline = moat::app::build_pipeline(&config, "bench.moat", &moat::app::State::default())
        .expect("pipeline");
    let unspecified: SocketAddr = "0.0.0.0:0".parse().expect("addr");
    let envelope = Envelope::new(unspecified, unspecified);

    let mut per_source: BTreeMap<String, (bool, Tally)> = BTreeMap::new();
    let mut rule_hits: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut hams, mut spams) = (0usize, 0usize);
    let mut scan_times: Vec<Duration> = Vec::new();
    let mut ham_flagged_examples: Vec<String> = Vec::new();
    for (class, is_spam) in [("ham", false), ("spam", true)] {
        let mut sources: Vec<PathBuf> = Vec::new();
        if let Ok(d) = std::fs::read_dir(corpus.join(class)) {
            sources = d
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            sources.sort();
        }
        for dir in sources {
            let name = format!("{class}/{}", dir.file_name().unwrap().to_string_lossy());
            let mut tally = Tally::default();
            for f in files(&dir) {
                let Ok(raw) = std::fs::read(&f) else { continue };
                let raw = moat::cli::check::to_crlf(raw);
                let Some(parsed) = mail_parser::MessageParser::default().parse(&raw[..]) else {
                    continue;
                };
                let input = StageInput {
                    stage: Stage::Data,
                    envelope: &envelope,
                    recipient: None,
                    message: Some(MessageInput {
                        raw: &raw,
                        parsed: &parsed,
                    }),
                    score: 0.0,
                };
                let mut facts = AuthFacts::default();
                let t = Instant::now();
                let outcome = rt.block_on(pipeline.run(input, &mut facts));
                scan_times.push(t.elapsed());
                let card = ScoreCard {
                    symbols: outcome.symbols,
                };
                let v = moat::verdict::decide(&card, &config.verdict, Stage::Data);
                tally.total += 1;
                let flagged = v.action >= Action::AddHeader && v.action != Action::Tempfail
                    || v.score >= config.verdict.add_header;
                if flagged {
                    tally.flagged += 1;
                }
                if v.action == Action::Reject {
                    tally.rejected += 1;
                }
                if v.action == Action::Tempfail {
                    tally.tempfailed += 1;
                }
                if is_spam && !flagged && std::env::args().any(|a| a == "--show-missed") {
                    let subject = parsed
                        .subject()
                        .unwrap_or("")
                        .chars()
                        .take(60)
                        .collect::<String>();
                    println!(
                        "missed {:.1} {} | {} | {}",
                        v.score,
                        f.display(),
                        subject,
                        card.names().join(",")
                    );
                }
                if !is_spam && flagged && ham_flagged_examples.len() < 40 {
                    ham_flagged_examples.push(format!(
                        "{:.1} {} {}",
                        v.score,
                        f.display(),
                        card.names().join(",")
                    ));
                }
                let mut seen = std::collections::HashSet::new();
                for s in &card.symbols {
                    if seen.insert(s.name.clone()) {
                        let e = rule_hits.entry(s.name.clone()).or_default();
                        if is_spam {
                            e.1 += 1;
                        } else {
                            e.0 += 1;
                        }
                    }
                }
            }
            if is_spam {
                spams += tally.total;
            } else {
                hams += tally.total;
            }
            per_source.insert(name, (is_spam, tally));
        }
    }
    let pct = |a: usize, b: usize| {
        if b == 0 {
            0.0
        } else {
            100.0 * a as f64 / b as f64
        }
    };
    println!(
        "corpus: {} ({} ham, {} spam); thresholds add_header {} reject {}",
        corpus.display(),
        hams,
        spams,
        config.verdict.add_header,
        config.verdict.reject
    );
    println!(
        "\n{:<28} {:>6} {:>9} {:>9} {:>9}",
        "source", "msgs", "flagged%", "reject%", "tempf%"
    );
    let (mut hf, mut hr, mut sc) = (0, 0, 0);
    for (name, (is_spam, t)) in &per_source {
        println!(
            "{:<28} {:>6} {:>8.1}% {:>8.1}% {:>8.1}%",
            name,
            t.total,
            pct(t.flagged, t.total),
            pct(t.rejected, t.total),
            pct(t.tempfailed, t.total)
        );
        if *is_spam {
            sc += t.flagged;
        } else {
            hf += t.flagged;
            hr += t.rejected;
        }
    }
    println!("\n{:<34} {:>8} {:>8}", "symbol", "ham%", "spam%");
    let mut rows: Vec<_> = rule_hits.iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .1));
    for (name, (h, s)) in rows {
        println!(
            "{:<34} {:>7.2}% {:>7.2}%",
            name,
            pct(*h, hams),
            pct(*s, spams)
        );
    }
    if std::env::args().any(|a| a == "--show-ham") {
        println!("\nflagged ham:");
        for e in &ham_flagged_examples {
            println!("  {e}");
        }
    }
    scan_times.sort();
    let median = scan_times
        .get(scan_times.len() / 2)
        .copied()
        .unwrap_or_default();
    println!(
        "\nper message (data stage incl. DKIM/DMARC lookups on loopback): median {median:.3?}"
    );
    println!(
        "\nham rejected {} ({:.2}%), ham flagged {} ({:.2}%), spam caught {} ({:.1}%)",
        hr,
        pct(hr, hams),
        hf,
        pct(hf, hams),
        sc,
        pct(sc, spams)
    );
}
