//! Sender authentication (SPF, DKIM, DMARC, ARC) through the real pipeline, against the
//! fixture zones served by the in-process DNS server. The DKIM and ARC signatures were made by
//! dkimpy (tests/fixtures/dkim/make_fixtures.py); the RFC 8463 message comes from
//! ../shared/corpus.

use crate::support::dns::{ServfailDns, SilentDns, TestDns};
use moat::cli::check::{run, CheckArgs};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/messages")
        .join(name)
}

fn args(dns: SocketAddr, file: PathBuf) -> CheckArgs {
    CheckArgs {
        config: None,
        dns: Some(dns),
        client_ip: None,
        helo: None,
        mail_from: None,
        rcpt: Vec::new(),
        file: Some(file),
        json: true,
        explain: false,
        ..Default::default()
    }
}

fn envelope(mut a: CheckArgs, helo: &str, from: &str) -> CheckArgs {
    a.client_ip = Some("127.0.0.1".parse().unwrap());
    a.helo = Some(helo.into());
    a.mail_from = Some(from.into());
    a
}

/// Runs `moat check --json` in-process and returns the parsed JSON and the exit code.
async fn check(a: &CheckArgs) -> (Value, u8) {
    let report = run(a).await.expect("check runs");
    let json: Value = serde_json::from_str(&report.output).expect("valid JSON");
    (json, report.exit_code)
}

fn symbols(v: &Value) -> Vec<String> {
    v["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// The Authentication-Results field of a `moat check --json` report.
fn authentication_results(v: &Value) -> String {
    v["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|h| h.starts_with("Authentication-Results:"))
        .unwrap_or_else(|| panic!("no Authentication-Results in {v}"))
        .to_string()
}

fn temp_message(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text.replace('\n', "\r\n")).unwrap();
    path
}

const PLAIN: &str = "From: someone@example.test\nTo: bob@rcpt.test\nSubject: hi\nMessage-ID: <p@example.test>\n\nhello\n";

#[tokio::test(flavor = "multi_thread")]
async fn spf_results_for_every_case() {
    let dns = TestDns::fixtures(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let msg = temp_message(&dir, "m.eml", PLAIN);
    let cases = [
        ("pass.spf.test", "pass"),
        ("fail.spf.test", "fail"),
        ("softfail.spf.test", "softfail"),
        ("neutral.spf.test", "neutral"),
        ("none.spf.test", "none"),
        ("nonexistent.spf.test", "none"),
        ("permerror.spf.test", "permerror"),
        ("tworecords.spf.test", "permerror"),
        ("include.spf.test", "pass"),
        ("redirect.spf.test", "pass"),
        ("include-missing.spf.test", "permerror"),
        ("macro.spf.test", "pass"),
        ("lookups.spf.test", "permerror"),
        ("void.spf.test", "permerror"),
    ];
    let mut wrong = Vec::new();
    for (domain, want) in cases {
        let a = envelope(
            args(dns.addr, msg.clone()),
            "helo.example.test",
            &format!("x@{domain}"),
        );
        let (v, _) = check(&a).await;
        let got = v["spf"]["result"].as_str().unwrap().to_string();
        if got != want || v["spf"]["domain"] != domain {
            wrong.push(format!("{domain}: want {want}, got {got} ({})", v["spf"]));
        }
        let sym = format!("SPF_{}", want.to_uppercase());
        if !symbols(&v).contains(&sym) {
            wrong.push(format!("{domain}: no {sym} in {:?}", symbols(&v)));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn spf_helo_identity_and_null_sender() {
    let dns = TestDns::fixtures(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let msg = temp_message(&dir, "m.eml", PLAIN);
    let (v, _) = check(&envelope(
        args(dns.addr, msg.clone()),
        "helo-pass.spf.test",
        "x@none.spf.test",
    ))
    .await;
    assert!(symbols(&v).contains(&"SPF_HELO_PASS".to_string()), "{v}");
    // RFC 7208 2.4: <> is checked as postmaster@HELO.
    let (v, _) = check(&envelope(args(dns.addr, msg), "helo-fail.spf.test", "")).await;
    assert_eq!(v["spf"]["result"], "fail", "{v}");
    assert_eq!(v["spf"]["domain"], "helo-fail.spf.test");
}

#[tokio::test(flavor = "multi_thread")]
async fn dkim_and_dmarc_pass_for_a_signed_message() {
    let dns = TestDns::fixtures(Vec::new()).await;
    let a = envelope(
        args(dns.addr, fixture("signed-pass.eml")),
        "mx.signed.test",
        "alice@signed.test",
    );
    let (v, code) = check(&a).await;
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["action"], "accept");
    assert_eq!(v["dkim"][0]["result"], "pass", "{v}");
    assert_eq!(v["dkim"][0]["domain"], "signed.test");
    assert_eq!(v["dkim"][0]["selector"], "sel");
    assert_eq!(v["spf"]["result"], "pass");
    assert_eq!(v["dmarc"]["result"], "pass");
    assert_eq!(v["dmarc"]["policy"], "reject");
    assert_eq!(v["dmarc"]["domain"], "signed.test");
    assert_eq!(v["arc"]["result"], "none");
    for s in ["DKIM_ALLOW", "SPF_PASS", "DMARC_PASS", "ARC_NONE"] {
        assert!(symbols(&v).contains(&s.to_string()), "{s}: {v}");
    }
    let ar = authentication_results(&v);
    let ar = ar.as_str();
    assert!(
        ar.contains("dkim=pass") && ar.contains("spf=pass") && ar.contains("dmarc=pass"),
        "{ar}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dmarc_alignment_relaxed_and_strict() {
    let dns = TestDns::fixtures(Vec::new()).await;
    // d=signed.test covers From: news.signed.test under relaxed alignment.
    let (v, code) = check(&args(dns.addr, fixture("signed-subdomain.eml"))).await;
    assert_eq!(
        (v["dmarc"]["result"].as_str(), code),
        (Some("pass"), 0),
        "{v}"
    );
    // adkim=s: d=strict.test does not cover sub.strict.test; p=reject is enforced.
    let (v, code) = check(&args(dns.addr, fixture("strict-subdomain.eml"))).await;
    assert_eq!(v["dkim"][0]["result"], "pass", "{v}");
    assert_eq!(v["dmarc"]["result"], "fail", "{v}");
    assert_eq!((v["action"].as_str(), code), (Some("reject"), 1));
    assert!(symbols(&v).contains(&"DMARC_POLICY_REJECT".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_body_fails_dkim_and_dmarc() {
    let dns = TestDns::fixtures(Vec::new()).await;
    let (v, code) = check(&args(dns.addr, fixture("signed-tampered.eml"))).await;
    assert_ne!(v["dkim"][0]["result"], "pass", "{v}");
    assert!(symbols(&v).contains(&"DKIM_REJECT".to_string()), "{v}");
    assert_eq!(v["dmarc"]["result"], "fail");
    assert_eq!(code, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn dmarc_policies_quarantine_and_none() {
    let dns = TestDns::fixtures(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    // The plain message, from `author` and with `author` as the envelope sender.
    let from = |author: &'static str| {
        let file = temp_message(
            &dir,
            &format!("{author}.eml"),
            &PLAIN.replace("someone@example.test", author),
        );
        let a = envelope(args(dns.addr, file), "h.example.test", author);
        async move { check(&a).await }
    };
    let (v, code) = from("x@dmarc-quarantine.test").await;
    assert_eq!((v["action"].as_str(), code), (Some("add_header"), 0), "{v}");
    assert_eq!(v["dmarc"]["policy"], "quarantine");
    assert!(
        v["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "X-Spam-Flag: YES"),
        "{v}"
    );
    let (v, _) = from("x@dmarc-none.test").await;
    assert_eq!(v["dmarc"]["result"], "fail");
    assert!(symbols(&v).contains(&"DMARC_FAIL".to_string()), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn multiple_from_headers_never_pass_dmarc() {
    let dns = TestDns::fixtures(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    // SPF passes for signed.test, which would align with the first From.
    let text = "From: alice@signed.test\nFrom: ceo@dmarc-reject.test\nTo: bob@rcpt.test\nSubject: x\n\nbody\n";
    let m = temp_message(&dir, "m.eml", text);
    let (v, _) = check(&envelope(
        args(dns.addr, m),
        "mx.signed.test",
        "alice@signed.test",
    ))
    .await;
    assert!(
        symbols(&v).contains(&"HDR_FROM_MULTIPLE".to_string()),
        "{v}"
    );
    assert_ne!(v["dmarc"]["result"], "pass");
    assert!(!symbols(&v).contains(&"DMARC_PASS".to_string()));
    let missing = temp_message(&dir, "n.eml", "To: bob@rcpt.test\nSubject: x\n\nbody\n");
    let (v, _) = check(&args(dns.addr, missing)).await;
    assert!(symbols(&v).contains(&"HDR_FROM_MISSING".to_string()), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn arc_chain_from_a_trusted_sealer_overrides_dmarc_reject() {
    let dns = TestDns::fixtures(Vec::new()).await;
    let (v, code) = check(&args(dns.addr, fixture("arc-list.eml"))).await;
    assert_eq!(v["arc"]["result"], "pass", "{v}");
    assert_eq!(
        (v["action"].as_str(), code),
        (Some("reject"), 1),
        "untrusted sealer must not help: {v}"
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("moat.toml");
    std::fs::write(&cfg, "[auth]\narc_trusted_sealers = [\"list.test\"]\n").unwrap();
    let mut a = args(dns.addr, fixture("arc-list.eml"));
    a.config = Some(cfg);
    let (v, code) = check(&a).await;
    assert_eq!(code, 0, "{v}");
    assert!(
        symbols(&v).contains(&"DMARC_ARC_OVERRIDE".to_string()),
        "{v}"
    );
    let ar = authentication_results(&v);
    assert!(ar.contains("arc=pass (i=1, sealed by list.test)"), "{ar}");
    // The same chain with the body changed after sealing: the chain fails, and a trusted
    // sealer's failing chain forgives nothing.
    let raw = std::fs::read_to_string(fixture("arc-list.eml")).unwrap();
    let tampered = raw
        .replace("\r\n", "\n")
        .replace("The board meets on Friday.", "The board meets on Monday.");
    assert_ne!(raw, tampered);
    let mut a = args(dns.addr, temp_message(&dir, "tampered.eml", &tampered));
    a.config = Some(dir.path().join("moat.toml"));
    let (v, code) = check(&a).await;
    assert_eq!(v["arc"]["result"], "fail", "{v}");
    assert!(
        v["arc"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("body hash")),
        "{v}"
    );
    assert!(
        !symbols(&v).contains(&"DMARC_ARC_OVERRIDE".to_string()),
        "{v}"
    );
    assert_eq!((v["action"].as_str(), code), (Some("reject"), 1), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rfc8463_message_from_the_corpus_verifies() {
    let Some(path) = crate::support::shared(
        "corpus/fixtures/dkimpy-testdata/dkim/tests/data/rfc6376.signed.msg",
    ) else {
        return;
    };
    let dns = TestDns::fixtures(Vec::new()).await;
    let (v, _) = check(&args(dns.addr, path)).await;
    let results: Vec<_> = v["dkim"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["selector"].as_str().unwrap().to_string(),
                d["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        results.contains(&("brisbane".into(), "pass".into())),
        "ed25519: {v}"
    );
    assert!(
        results.contains(&("test".into(), "pass".into())),
        "rsa: {v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_servfail_and_timeout_follow_the_failure_policy() {
    let servfail = ServfailDns::start().await;
    let silent = SilentDns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let msg = temp_message(&dir, "m.eml", PLAIN);
    let quick = dir.path().join("quick.toml");
    std::fs::write(&quick, "[dns]\ntimeout = \"300ms\"\nattempts = 1\n").unwrap();
    let score_only = dir.path().join("score.toml");
    std::fs::write(
        &score_only,
        "[dns]\ntimeout = \"300ms\"\nattempts = 1\n[auth]\ndns_failure = \"score\"\n",
    )
    .unwrap();
    for addr in [servfail.addr, silent.addr] {
        let mut a = envelope(args(addr, msg.clone()), "h.example.test", "x@example.test");
        a.config = Some(quick.clone());
        let (v, code) = check(&a).await;
        assert_eq!(v["spf"]["result"], "temperror", "{v}");
        // A temperror defers (451 4.4.3): never a silent pass, never a permanent reject.
        assert_eq!((v["action"].as_str(), code), (Some("tempfail"), 1), "{v}");
        a.config = Some(score_only.clone());
        let (v, code) = check(&a).await;
        assert_eq!((v["action"].as_str(), code), (Some("accept"), 0), "{v}");
        assert!(symbols(&v).contains(&"SPF_TEMPERROR".to_string()));
    }
    // At DATA: DKIM key and DMARC record lookups fail.
    let mut a = args(servfail.addr, fixture("signed-pass.eml"));
    a.config = Some(quick);
    let (v, code) = check(&a).await;
    assert_eq!(v["dkim"][0]["result"], "temperror", "{v}");
    assert_eq!(v["dmarc"]["result"], "temperror", "{v}");
    assert_eq!((v["action"].as_str(), code), (Some("tempfail"), 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn reverse_dns_results() {
    let dns = TestDns::fixtures(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let msg = temp_message(&dir, "m.eml", PLAIN);
    for (ip, symbol, detail) in [
        ("192.0.2.1", "RDNS_PASS", "client.rdns.test"),
        ("192.0.2.2", "RDNS_MISMATCH", "mismatch.rdns.test"),
        ("192.0.2.3", "RDNS_NONE", ""),
    ] {
        let mut a = args(dns.addr, msg.clone());
        a.client_ip = Some(ip.parse().unwrap());
        let (v, _) = check(&a).await;
        let sym = v["symbols"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == "connect")
            .expect("connect symbol");
        assert_eq!(sym["name"], symbol, "{ip}: {v}");
        assert!(
            sym["detail"].as_str().unwrap().contains(detail),
            "{ip}: {sym}"
        );
    }
}
