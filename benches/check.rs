//! How long `moat check` takes on a 50 KB DKIM-signed message (tests/fixtures/messages/
//! signed-50k.eml): SPF, DKIM, ARC and DMARC against the fixture zones on an in-process DNS
//! server on 127.0.0.1. Prints the median and p90 of many runs, in-process (pipeline built per
//! run, as the CLI does) and as a whole `moat check` process.
//!
//!     cargo bench --ignore-rust-version --bench check
//!
//! It also times the content-rules scan alone on the same message, the MIME parse, and the
//! ruleset load and regex compile that every `moat check` process (and every reload) pays.
//!
//! A benchmark, not a test: the numbers depend on the machine and its load.

#[path = "../tests/it/support/dns.rs"]
#[allow(dead_code)]
mod dns;

use moat::cli::check::{run, CheckArgs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn stats(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() * 9 / 10])
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(dns::TestDns::fixtures(Vec::new()));
    let file = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/messages/signed-50k.eml"
    ));
    let size = std::fs::metadata(&file).expect("fixture").len();
    let args = CheckArgs {
        config: None,
        dns: Some(server.addr),
        client_ip: Some("127.0.0.1".parse().expect("ip")),
        helo: Some("mx.signed.test".into()),
        mail_from: Some("alice@signed.test".into()),
        rcpt: vec!["bob@rcpt.test".into()],
        file: Some(file.clone()),
        json: true,
        explain: false,
        ..Default::default()
    };
    // Warm up, and make sure the message really authenticates.
    let first = rt.block_on(run(&args)).expect("check runs");
    assert!(
        first.output.contains("\"result\": \"pass\""),
        "{}",
        first.output
    );

    let runs = 300;
    let samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let r = rt.block_on(run(&args)).expect("check runs");
            assert_eq!(r.exit_code, 0);
            t.elapsed()
        })
        .collect();
    let (median, p90) = stats(samples);

    let bin = env!("CARGO_BIN_EXE_moat");
    let dns_addr = server.addr.to_string();
    let proc_runs = 40;
    let proc_samples: Vec<Duration> = (0..proc_runs)
        .map(|_| {
            let t = Instant::now();
            let out = std::process::Command::new(bin)
                .args([
                    "check",
                    "--json",
                    "--dns",
                    &dns_addr,
                    "--client-ip",
                    "127.0.0.1",
                    "--helo",
                    "mx.signed.test",
                ])
                .args([
                    "--mail-from",
                    "alice@signed.test",
                    "--rcpt",
                    "bob@rcpt.test",
                ])
                .arg(&file)
                .output()
                .expect("moat check");
            assert_eq!(out.status.code(), Some(0));
            t.elapsed()
        })
        .collect();
    let (pmedian, pp90) = stats(proc_samples);

    // The content rules alone: one scan of the shipped ruleset over the same message.
    let rules = moat::rules::RuleSet::load(Some(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rules"
    ))))
    .expect("rules load");
    let raw = std::fs::read(&file).expect("fixture");
    let parsed = mail_parser::MessageParser::default()
        .parse(&raw[..])
        .expect("parses");
    let view = moat::rules::engine::View {
        parsed: &parsed,
        raw: &raw,
        helo: "mx.signed.test",
        sender: "alice@signed.test",
        recipients: &["bob@rcpt.test".to_string()],
        client_name: "",
    };
    let scan_runs = 300;
    let scans: Vec<Duration> = (0..scan_runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(rules.rules.evaluate(&view));
            t.elapsed()
        })
        .collect();
    let (smedian, sp90) = stats(scans);
    let parses: Vec<Duration> = (0..scan_runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(mail_parser::MessageParser::default().parse(&raw[..]));
            t.elapsed()
        })
        .collect();
    let (pmed, pp) = stats(parses);
    let loads: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(moat::rules::RuleSet::load(None).expect("rules"));
            t.elapsed()
        })
        .collect();
    let (lmed, lp) = stats(loads);

    println!("moat check on a {size}-octet DKIM-signed message (SPF+DKIM+ARC+DMARC, loopback DNS)");
    println!(
        "{:<34} {:>6} {:>12} {:>12}",
        "mode", "runs", "median", "p90"
    );
    println!(
        "{:<34} {:>6} {:>12.3?} {:>12.3?}",
        "in-process (pipeline per run)", runs, median, p90
    );
    println!(
        "{:<34} {:>6} {:>12.3?} {:>12.3?}",
        "whole process (moat check ...)", proc_runs, pmedian, pp90
    );
    println!(
        "{:<34} {:>6} {:>12.3?} {:>12.3?}",
        format!("rules scan only ({} rules)", rules.rules.len()),
        scan_runs,
        smedian,
        sp90
    );
    println!(
        "{:<34} {:>6} {:>12.3?} {:>12.3?}",
        "MIME parse only (mail-parser)", scan_runs, pmed, pp
    );
    println!(
        "{:<34} {:>6} {:>12.3?} {:>12.3?}",
        "ruleset load + compile", 20, lmed, lp
    );
}
