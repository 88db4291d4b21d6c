//! DNS blocklists against the in-process DNS server: DNSBL (IPv4, IPv6), RHSBL (HELO, sender,
//! From), URIBL (bitmask), the 127.255.255.x error codes, timeouts, and refusal over SMTP.

use crate::support::alone::{alone, Counts};
use crate::support::dns::{SilentDns, TestDns};
use crate::support::Moat;
use moat::cli::check::{run, CheckArgs};
use serde_json::Value;
use std::path::PathBuf;

const BLOCKED: &str = "moat_dnsbl_blocked_total{list=\"test_ip\"}";

fn rules_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rules-dnsbl"
    ))
}

fn config(dir: &tempfile::TempDir, extra: &str) -> PathBuf {
    let path = dir.path().join("moat.toml");
    let text = format!("[rules]\ndir = {:?}\n[dns]\ntimeout = \"500ms\"\nattempts = 1\n[auth]\ndns_failure = \"score\"\n{extra}", rules_dir());
    std::fs::write(&path, text).unwrap();
    path
}

async fn check(
    dns: std::net::SocketAddr,
    cfg: PathBuf,
    ip: &str,
    helo: &str,
    from: &str,
    message: &str,
) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.eml");
    std::fs::write(&file, message.replace('\n', "\r\n")).unwrap();
    let args = CheckArgs {
        config: Some(cfg),
        dns: Some(dns),
        client_ip: Some(ip.parse().unwrap()),
        helo: Some(helo.into()),
        mail_from: Some(from.into()),
        rcpt: vec!["bob@rcpt.test".into()],
        file: Some(file),
        json: true,
        explain: false,
        ..Default::default()
    };
    serde_json::from_str(&run(&args).await.expect("check").output).unwrap()
}

fn hits(v: &Value) -> Vec<(String, String, String)> {
    v["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            let n = s["name"].as_str().unwrap();
            n.starts_with("RBL_") || n.starts_with("DBL_") || n.starts_with("URIBL_")
        })
        .map(|s| {
            (
                s["name"].as_str().unwrap().into(),
                s["stage"].as_str().unwrap().into(),
                s["detail"].as_str().unwrap().into(),
            )
        })
        .collect()
}

const CLEAN: &str = "From: a@example.test\nSubject: hi\n\nhello\n";

#[tokio::test(flavor = "multi_thread")]
#[ignore = "reads the metrics registry: run alone by app::metrics::tests_reading_metrics_run_alone"]
async fn alone_dnsbl_ipv4_ipv6_and_error_codes() {
    if !alone() {
        return;
    }
    let counts = Counts::of(&[BLOCKED]);
    let dns = TestDns::fixtures(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, "");
    let check_ip = |ip: &'static str| {
        check(
            dns.addr,
            cfg.clone(),
            ip,
            "h.example.test",
            "a@example.test",
            CLEAN,
        )
    };
    let v = check_ip("127.0.0.1").await;
    assert_eq!(
        hits(&v),
        vec![("RBL_TEST_SBL".into(), "connect".into(), "127.0.0.1".into())],
        "{v}"
    );
    let v = check_ip("127.0.0.2").await;
    assert_eq!(hits(&v)[0].0, "RBL_TEST_XBL");
    // 127.255.255.254: the list refused the query; logged, counted, no score.
    let v = check_ip("127.0.0.3").await;
    assert!(hits(&v).is_empty(), "{v}");
    assert_eq!(counts.delta(BLOCKED), 1.0);
    let v = check_ip("::1").await;
    assert_eq!(
        hits(&v),
        vec![("RBL_TEST_SBL".into(), "connect".into(), "::1".into())],
        "{v}"
    );
    let v = check_ip("192.0.2.77").await;
    assert!(hits(&v).is_empty(), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rhsbl_and_uribl() {
    let dns = TestDns::fixtures(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, "");
    let msg = "From: Boss <boss@spammer.example>\nSubject: deal\nContent-Type: text/html\n\n<a href=\"https://www.evil-links.example/login\">x</a> http://click.spammer.example/y http://ok.example.test/\n";
    let v = check(
        dns.addr,
        cfg,
        "192.0.2.77",
        "mail.spammer.example",
        "x@spammer.example",
        msg,
    )
    .await;
    let got = hits(&v);
    let find = |name: &str, stage: &str| {
        got.iter()
            .find(|(n, s, _)| n == name && s == stage)
            .cloned()
    };
    // The registrable domains of the HELO name and the sender are looked up.
    assert!(
        find("DBL_TEST", "helo").is_some_and(|h| h.2 == "spammer.example"),
        "{got:?}"
    );
    assert!(find("DBL_TEST", "mail").is_some(), "{got:?}");
    let data = find("DBL_TEST", "data").expect("From/URI hit");
    assert!(data.2.contains("spammer.example"), "{data:?}");
    assert!(
        find("URIBL_TEST_BLACK", "data").is_some_and(|h| h.2 == "evil-links.example"),
        "{got:?}"
    );
    assert!(find("URIBL_TEST_GREY", "data").is_some(), "{got:?}");
    assert!(find("URIBL_TEST_RED", "data").is_none(), "{got:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_dns_server_scores_nothing_and_refuses_nothing() {
    let silent = SilentDns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, "");
    let v = check(
        silent.addr,
        cfg,
        "127.0.0.1",
        "mail.spammer.example",
        "x@spammer.example",
        CLEAN,
    )
    .await;
    assert!(hits(&v).is_empty(), "{v}");
    assert_eq!(v["action"], "accept", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn listed_client_is_refused_at_rcpt_and_the_upstream_never_hears_of_it() {
    let (moat, sink) = Moat::builder()
        .with(|c| {
            c.rules.dir = Some(rules_dir());
            c.verdict.delay_reject = true;
        })
        .start_with_sink()
        .await;
    let before = sink.connections();
    // 127.0.0.1 is on the test list with a score of 20 (reject at 15).
    let mut c = moat.client().await;
    assert_eq!(c.greeting.code, 220, "delay_reject greets first");
    c.ehlo().await;
    let r = c.cmd("MAIL FROM:<a@example.test>").await;
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.cmd("RCPT TO:<b@rcpt.test>").await;
    assert_eq!((r.code, r.enhanced()), (550, Some("5.7.1")), "{r:?}");
    let r = c.cmd("DATA").await;
    assert_eq!(r.code, 554, "{r:?}");
    assert_eq!(sink.connections(), before, "the upstream was contacted");
    assert!(sink.count("MAIL") == 0);
    // Without delay_reject the same client is refused at connect with 554.
    let (moat, _sink) = Moat::builder()
        .with(|c| c.rules.dir = Some(rules_dir()))
        .start_with_sink()
        .await;
    let c = moat.client().await;
    assert_eq!(
        (c.greeting.code, c.greeting.enhanced()),
        (554, Some("5.7.1")),
        "{:?}",
        c.greeting
    );
}
