//! Verdicts over SMTP: sender authentication and scores decide what the client hears, nothing
//! refused ever reaches the upstream, and accepted mail carries moat's headers.

use crate::support::alone::{alone, Counts};
use crate::support::dns::{ServfailDns, SilentDns, TestDns};
use crate::support::{crlf, split_prepended, Moat, Sink};
use moat::config::ConfigDuration;
use std::path::Path;
use std::time::{Duration, Instant};

const MAIL_BUDGET: &str = "moat_stage_budget_exhausted_total{stage=\"mail\"}";
const DATA_BUDGET: &str = "moat_stage_budget_exhausted_total{stage=\"data\"}";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/messages")
            .join(name),
    )
    .unwrap()
}

const FORGED: &str = "From: CEO <ceo@dmarc-reject.test>\nTo: bob@rcpt.test\nSubject: Urgent wire transfer\nMessage-ID: <forged@dmarc-reject.test>\n\nPlease pay the attached invoice today.\n";

#[tokio::test(flavor = "multi_thread")]
async fn forged_dmarc_reject_sender_gets_550_and_nothing_is_forwarded() {
    let (moat, sink) = Moat::builder().start_with_sink().await;
    let mut c = moat.client().await;
    c.cmd("EHLO attacker.example").await;
    let r = c
        .send_message("ceo@dmarc-reject.test", &["bob@rcpt.test"], &crlf(FORGED))
        .await;
    assert_eq!((r.code, r.enhanced()), (550, Some("5.7.1")), "{r:?}");
    assert!(r.contains("DMARC policy of dmarc-reject.test"), "{r:?}");
    assert!(sink.messages().is_empty());
    // The upstream transaction was reset, and the session goes on.
    assert!(
        sink.commands().iter().any(|l| l == "RSET"),
        "{:?}",
        sink.commands()
    );
    assert_eq!(c.cmd("NOOP").await.code, 250);
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_message_arrives_with_authentication_results() {
    let (moat, sink) = Moat::builder().start_with_sink().await;
    let mut c = moat.client().await;
    c.cmd("EHLO mx.signed.test").await;
    let body = fixture("signed-pass.eml");
    c.expect_message("alice@signed.test", &["bob@rcpt.test"], &body, "250")
        .await;
    let msgs = sink.messages();
    let added = split_prepended(&msgs[0].body, &body);
    let ar = added.split("\r\nX-Spam-Flag").next().unwrap();
    assert!(ar.contains("Authentication-Results: moat.test;"), "{added}");
    for want in [
        "dkim=pass",
        "header.i=@signed.test",
        "header.s=sel",
        "spf=pass",
        "smtp.mailfrom=alice@signed.test",
        "dmarc=pass",
        "arc=none",
    ] {
        assert!(added.contains(want), "{want} missing in:\n{added}");
    }
    assert!(added.contains("X-Spam-Status: No, score="), "{added}");
    assert!(
        added.contains("DKIM_ALLOW") && added.contains("DMARC_PASS"),
        "{added}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_authentication_results_are_removed() {
    let (moat, sink) = Moat::builder().start_with_sink().await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let msg = crlf("Authentication-Results: moat.test; dkim=pass header.d=bank.example\nAuthentication-Results: other.example; spf=pass\nX-Spam-Status: No, score=-100\nFrom: a@example.test\nSubject: x\n\nbody\n");
    c.expect_message("a@example.test", &["b@rcpt.test"], &msg, "250")
        .await;
    let got = String::from_utf8(sink.messages()[0].body.clone()).unwrap();
    assert!(!got.contains("bank.example"), "forged A-R kept:\n{got}");
    assert!(
        !got.contains("score=-100"),
        "forged X-Spam-Status kept:\n{got}"
    );
    assert!(
        got.contains("Authentication-Results: other.example; spf=pass"),
        "{got}"
    );
    assert_eq!(
        got.matches("Authentication-Results: moat.test;").count(),
        1,
        "{got}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn early_refusal_at_mail_never_opens_the_upstream() {
    // SPF_FAIL (3.0) alone reaches this reject threshold at MAIL.
    let (moat, sink) = Moat::builder().thresholds(2.0, 2.5).start_with_sink().await;
    let connections = sink.connections();
    let mut c = moat.client().await;
    c.ehlo().await;
    let r = c.cmd("MAIL FROM:<x@fail.spf.test>").await;
    assert_eq!((r.code, r.enhanced()), (550, Some("5.7.1")), "{r:?}");
    assert!(r.contains("score 3.0"), "{r:?}");
    assert_eq!(sink.connections(), connections, "upstream was contacted");
    // The session is still usable, and a sender that passes SPF goes through.
    assert_eq!(c.cmd("MAIL FROM:<x@pass.spf.test>").await.code, 250);
}

#[tokio::test(flavor = "multi_thread")]
async fn dkim_reject_on_fail_uses_5_7_20() {
    let (moat, sink) = Moat::builder()
        .with(|c| c.auth.dkim_reject_on_fail = true)
        .start_with_sink()
        .await;
    let mut c = moat.client().await;
    c.cmd("EHLO mx.signed.test").await;
    // SPF and DMARC pass (aligned SPF), but the only signature is broken.
    let r = c
        .send_message(
            "alice@signed.test",
            &["bob@rcpt.test"],
            &fixture("signed-tampered.eml"),
        )
        .await;
    assert_eq!((r.code, r.enhanced()), (550, Some("5.7.20")), "{r:?}");
    c.expect_message(
        "alice@signed.test",
        &["bob@rcpt.test"],
        &fixture("signed-pass.eml"),
        "250",
    )
    .await;
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn spf_reject_on_fail_uses_5_7_23() {
    let (moat, sink) = Moat::builder()
        .with(|c| c.auth.spf_reject_on_fail = true)
        .start_with_sink()
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let r = c.cmd("MAIL FROM:<x@fail.spf.test>").await;
    assert_eq!((r.code, r.enhanced()), (550, Some("5.7.23")), "{r:?}");
    assert!(sink.count("MAIL") == 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_failure_at_mail_is_a_4_4_3_tempfail() {
    let servfail = ServfailDns::start().await;
    let (moat, _sink) = Moat::builder()
        .dns(servfail.addr)
        .with(|c| c.dns.timeout = ConfigDuration::secs(1))
        .start_with_sink()
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let r = c.cmd("MAIL FROM:<x@example.test>").await;
    assert_eq!((r.code, r.enhanced()), (451, Some("4.4.3")), "{r:?}");
}

/// The shipped config's DNS timing and failure policy.
fn shipped() -> moat::config::Config {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/moat.toml"));
    moat::config::Config::load(path).expect("shipped config")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "reads the metrics registry: run alone by app::metrics::tests_reading_metrics_run_alone"]
async fn alone_a_resolver_that_never_answers_costs_each_stage_one_budget() {
    if !alone() {
        return;
    }
    let counts = Counts::of(&[MAIL_BUDGET, DATA_BUDGET]);
    let silent = SilentDns::start().await;
    let shipped = shipped();
    let (timeout, attempts, budget) = shipped_timing();
    // The requirement (issue 16): with the shipped config, MAIL and end of data get their
    // answer within 10 s. This is a functional bound on the stage budget (8 s shipped), not a
    // speed measurement: one query alone would cost dns.timeout x (attempts + 1) = 15 s.
    assert!(shipped.verdict.stage_timeout.0 < Duration::from_secs(10));
    let sink = Sink::start().await;
    // The shipped DNS timing and stage budget, in front of a resolver that never answers.
    let start = |auth: moat::config::AuthConfig| {
        Moat::builder()
            .upstream(&sink)
            .dns(silent.addr)
            .shipped_dns_timing()
            .with(move |c| {
                c.dns.timeout = timeout;
                c.dns.attempts = attempts;
                c.verdict.stage_timeout = budget;
                c.auth = auth;
            })
            .start()
    };
    let moat = start(shipped.auth.clone()).await;
    let mut c = moat.client().await;
    c.cmd("EHLO mx.example.test").await;
    let started = Instant::now();
    let r = c.cmd("MAIL FROM:<x@example.test>").await;
    let mail_took = started.elapsed();
    assert_eq!((r.code, r.enhanced()), (451, Some("4.4.3")), "{r:?}");
    assert!(
        mail_took < Duration::from_secs(10),
        "MAIL took {mail_took:?}"
    );
    assert_eq!(
        counts.delta(MAIL_BUDGET),
        1.0,
        "one exhausted budget, counted once"
    );
    // End of data, with SPF scored instead of deferred so the message gets that far.
    let moat = start(moat::config::AuthConfig {
        dns_failure: moat::config::DnsFailure::Score,
        ..shipped.auth.clone()
    })
    .await;
    let mut c = moat.client().await;
    c.cmd("EHLO mx.example.test").await;
    assert_eq!(c.cmd("MAIL FROM:<x@example.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@rcpt.test>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    let started = Instant::now();
    let r = c
        .cmd("From: <x@example.test>\r\nSubject: s\r\n\r\nbody\r\n.")
        .await;
    let data_took = started.elapsed();
    assert!(
        r.code == 250 || r.code / 100 == 4 || r.code / 100 == 5,
        "{r:?}"
    );
    assert!(
        data_took < Duration::from_secs(10),
        "end of data took {data_took:?}"
    );
    assert_eq!(
        counts.delta(DATA_BUDGET),
        1.0,
        "one exhausted budget, counted once"
    );
    eprintln!(
        "with a silent resolver: MAIL answered in {mail_took:?}, end of data in {data_took:?}"
    );
}

fn shipped_timing() -> (
    moat::config::ConfigDuration,
    usize,
    moat::config::ConfigDuration,
) {
    let s = shipped();
    (s.dns.timeout, s.dns.attempts, s.verdict.stage_timeout)
}

#[tokio::test(flavor = "multi_thread")]
async fn score_thresholds_flag_and_defer() {
    // Flag: add_header at 3.0 turns SPF_FAIL into X-Spam-Flag: YES.
    let (moat, sink) = Moat::builder()
        .with(|c| c.verdict.add_header = 3.0)
        .start_with_sink()
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let msg = crlf("From: x@fail.spf.test\nSubject: s\n\nbody\n");
    c.expect_message("x@fail.spf.test", &["b@rcpt.test"], &msg, "250")
        .await;
    let got = String::from_utf8(sink.messages()[0].body.clone()).unwrap();
    assert!(
        got.contains("X-Spam-Flag: YES\r\n") && got.contains("X-Spam-Status: Yes,"),
        "{got}"
    );
    // Defer: a tempfail threshold below the score gives 451 4.7.1 at end of data.
    let (moat, sink) = Moat::builder()
        .with(|c| {
            c.verdict.add_header = 1.0;
            c.verdict.tempfail = Some(3.0);
        })
        .start_with_sink()
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let r = c
        .send_message("x@fail.spf.test", &["b@rcpt.test"], &msg)
        .await;
    assert_eq!((r.code, r.enhanced()), (451, Some("4.7.1")), "{r:?}");
    assert!(sink.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn shadow_mode_refuses_nothing_but_reports_everything() {
    let (moat, sink) = Moat::builder()
        .with(|c| {
            c.verdict.shadow = true;
            c.verdict.add_header = 2.0;
            c.verdict.reject = 2.5;
        })
        .start_with_sink()
        .await;
    let mut c = moat.client().await;
    c.cmd("EHLO attacker.example").await;
    c.expect_message(
        "ceo@dmarc-reject.test",
        &["bob@rcpt.test"],
        &crlf(FORGED),
        "250",
    )
    .await;
    let got = String::from_utf8(sink.messages()[0].body.clone()).unwrap();
    assert!(got.contains("X-Spam-Status: Yes,"), "{got}");
    assert!(
        got.contains("DMARC_POLICY_REJECT") && got.contains("SPF_FAIL"),
        "{got}"
    );
    assert!(got.contains("dmarc=fail"), "{got}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_for_the_session_comes_only_from_the_configured_server() {
    // A zone that only this server knows: SPF passes only if moat asked it.
    let dns = TestDns::start(vec![crate::support::dns::Zone::new(
        "only-here.test",
        "@ IN TXT \"v=spf1 ip4:127.0.0.1 -all\"",
    )])
    .await;
    let (moat, sink) = Moat::builder().dns(dns.addr).start_with_sink().await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let msg = crlf("From: a@only-here.test\nSubject: s\n\nbody\n");
    c.expect_message("a@only-here.test", &["b@rcpt.test"], &msg, "250")
        .await;
    let got = String::from_utf8(sink.messages()[0].body.clone()).unwrap();
    assert!(got.contains("spf=pass"), "{got}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reverse_dns_is_checked_at_connect_and_forwarded_as_the_client_name() {
    let (moat, sink) = Moat::builder().start_with_sink().await;
    // RFC 6761 6.3: the resolver names 127.0.0.1 "localhost", which resolves back; 127.0.0.3
    // is also "localhost", which does not resolve back to it.
    for (n, source, name, symbol) in [
        (0, "127.0.0.1", "NAME=localhost ", "RDNS_PASS"),
        (1, "127.0.0.3", "NAME=[UNAVAILABLE]", "RDNS_MISMATCH"),
    ] {
        let mut c = crate::support::Client::connect_from(moat.addr, source).await;
        assert_eq!(c.greeting.code, 220);
        c.ehlo().await;
        c.expect_message(
            "a@example.test",
            &["b@rcpt.test"],
            b"From: <a@example.test>\r\nSubject: x\r\n\r\ny\r\n",
            "250",
        )
        .await;
        let msg = &sink.messages()[n];
        let xclient = msg.xclient.as_deref().unwrap_or_default();
        assert!(
            xclient.contains(&format!("ADDR={source} PORT=")) && xclient.contains(name),
            "{xclient}"
        );
        let got = String::from_utf8_lossy(&msg.body);
        assert!(got.contains(symbol), "{got}");
        if n == 0 {
            assert!(got.contains("iprev=pass"), "{got}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn early_refusal_at_connect_is_554() {
    // RDNS_MISMATCH (1.0) reaches this reject threshold before the greeting.
    let (moat, sink) = Moat::builder().thresholds(0.5, 0.9).start_with_sink().await;
    let before = sink.connections();
    let mut c = crate::support::Client::connect_from(moat.addr, "127.0.0.3").await;
    assert_eq!(
        (c.greeting.code, c.greeting.enhanced()),
        (554, Some("5.7.1")),
        "{:?}",
        c.greeting
    );
    assert!(c.is_closed().await);
    assert_eq!(sink.connections(), before, "upstream was contacted");
    // A client with good reverse DNS is welcome.
    let ok = crate::support::Client::connect_from(moat.addr, "127.0.0.1").await;
    assert_eq!(ok.greeting.code, 220);
}

#[tokio::test(flavor = "multi_thread")]
async fn rdns_reject_refuses_a_ptr_that_does_not_resolve_back() {
    let (moat, _sink) = Moat::builder()
        .with(|c| c.auth.rdns_reject = true)
        .start_with_sink()
        .await;
    let c = crate::support::Client::connect_from(moat.addr, "127.0.0.2").await;
    assert_eq!(
        (c.greeting.code, c.greeting.enhanced()),
        (554, Some("5.7.25")),
        "{:?}",
        c.greeting
    );
    let c = crate::support::Client::connect_from(moat.addr, "127.0.0.1").await;
    assert_eq!(c.greeting.code, 220);
}
