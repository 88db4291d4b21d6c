//! Criterion micro-benchmarks of the hot paths, so regressions show up in review:
//! the command parser, the DATA reader, MIME parse + rule scan of a 50 KB message, and DKIM
//! verification (key from the in-process DNS server, cached after the first lookup).
//!
//!   cargo bench --ignore-rust-version --bench micro

#[path = "../tests/it/support/dns.rs"]
#[allow(dead_code)]
mod dns;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use moat::smtp::command::Command;
use moat::smtp::data::{DataLimits, DataReader};
use std::hint::black_box;
use std::path::Path;

fn message() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/messages/signed-50k.eml"
    ))
    .expect("fixture")
}

fn command_parser(c: &mut Criterion) {
    let mut g = c.benchmark_group("command");
    for (name, line) in [
        ("ehlo", &b"EHLO mail.example.org"[..]),
        (
            "mail",
            &b"MAIL FROM:<alice@example.org> SIZE=51200 BODY=8BITMIME"[..],
        ),
        (
            "rcpt",
            &b"RCPT TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE"[..],
        ),
    ] {
        g.bench_function(name, |b| b.iter(|| Command::parse(black_box(line))));
    }
    g.finish();
}

fn data_reader(c: &mut Criterion) {
    let mut wire = moat::cli::check::to_crlf(message());
    wire.extend_from_slice(b".\r\n");
    let limits = DataLimits {
        max_size: 25 << 20,
        max_line: 998,
    };
    let mut g = c.benchmark_group("data");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("dot_reader_50k", |b| {
        b.iter(|| {
            let mut r = DataReader::dot(limits);
            // As it arrives from the network: 16 KiB reads.
            for chunk in wire.chunks(16 * 1024) {
                black_box(r.feed(chunk));
            }
            black_box(r.finish())
        })
    });
    g.finish();
}

fn parse_and_scan(c: &mut Criterion) {
    let raw = moat::cli::check::to_crlf(message());
    let rules = moat::rules::RuleSet::load(Some(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rules"
    ))))
    .expect("rules");
    let mut g = c.benchmark_group("content");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.bench_function("mime_parse_50k", |b| {
        b.iter(|| black_box(mail_parser::MessageParser::default().parse(black_box(&raw[..]))))
    });
    g.bench_function("parse_and_rule_scan_50k", |b| {
        b.iter(|| {
            let parsed = mail_parser::MessageParser::default()
                .parse(&raw[..])
                .expect("parses");
            let view = moat::rules::engine::View {
                parsed: &parsed,
                raw: &raw,
                helo: "mail.example.org",
                sender: "alice@signed.test",
                recipients: &[],
                client_name: "",
            };
            black_box(rules.rules.evaluate(&view))
        })
    });
    g.finish();
}

fn dkim(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(dns::TestDns::fixtures(Vec::new()));
    let mut config = moat::config::Config::parse("", Path::new("bench")).expect("config");
    config.dns.nameservers = vec![server.addr.to_string()];
    let resolver = moat::dns::Dns::new(&config.dns, None).expect("dns");
    let raw = moat::cli::check::to_crlf(message());
    let parsed = mail_parser::MessageParser::default()
        .parse(&raw[..])
        .expect("parses");
    let auth = resolver.authenticator();
    let verify = || async {
        let m = mail_auth::AuthenticatedMessage::from_parsed(&parsed, &raw, true);
        let out = auth.verify_dkim(&m).await;
        assert!(
            out.iter()
                .any(|o| o.result() == &mail_auth::DkimResult::Pass),
            "fixture must verify"
        );
    };
    rt.block_on(verify());
    let mut g = c.benchmark_group("auth");
    g.throughput(Throughput::Bytes(raw.len() as u64));
    g.bench_function("dkim_verify_50k", |b| b.iter(|| rt.block_on(verify())));
    g.finish();
}

criterion_group!(benches, command_parser, data_reader, parse_and_scan, dkim);
criterion_main!(benches);
