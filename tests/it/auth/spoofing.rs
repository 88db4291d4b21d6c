//! Author spoofing: the 19 server-side cases of espoofer (Chen et al., "Composition Kills",
//! USENIX Security 2020, cases A1-A19), the RFC 6376 8.15 and `l=` DKIM cases, and a two-From
//! message over SMTP. The messages are built (and, where a case signs, DKIM-signed with
//! mail-auth's signer, not moat's code) by the tests themselves.
//!
//! The setting of every espoofer case: `legitimate.test` publishes SPF for another network and
//! DMARC p=reject; `attack.test` is the attacker's, with SPF for the client (127.0.0.1) and a
//! DKIM key the attacker signs with. No case may get `dmarc=pass` for legitimate.test, and
//! none may be accepted.

use crate::support::dns::{txt_record, TestDns};
use crate::support::Moat;
use base64::Engine as _;
use hickory_server::proto::rr::{Name, Record};
use mail_auth::crypto::{RsaKey, Sha256};
use mail_auth::dkim::DkimSigner;
use mail_auth::headers::HeaderWriter;
use moat::cli::check::{CheckArgs, Checker};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;

/// The attacker's private key (a fixture key; its public half is published below).
fn attacker_pem() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/dkim/keys/list.test.pem"
    ))
    .expect("key")
}

/// The PKCS#8 DER of a PEM private key.
fn der(pem: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .expect("pem")
}

/// A signer's key from a PEM file.
fn signing_key(pem: &str) -> RsaKey<Sha256> {
    let der = der(pem);
    RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        der.as_slice(),
    )))
    .expect("key")
}

/// `p=` for a private key: its RSAPublicKey, base64.
fn public_p(pem: &str) -> String {
    let der = der(pem);
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).expect("pkcs8");
    use aws_lc_rs::signature::KeyPair as _;
    base64::engine::general_purpose::STANDARD.encode(pair.public_key().as_ref())
}

fn name(text: &str) -> Name {
    Name::from_labels(text.split('.').map(str::as_bytes)).expect("name")
}

/// The zone of every espoofer case.
fn zone() -> Vec<Record> {
    let key = format!("v=DKIM1; k=rsa; p={}", public_p(&attacker_pem()));
    let spf_attacker = "v=spf1 ip4:127.0.0.0/8 -all";
    vec![
        txt_record(name("legitimate.test"), "v=spf1 ip4:192.0.2.1 -all"),
        txt_record(name("_dmarc.legitimate.test"), "v=DMARC1; p=reject"),
        txt_record(name("attack.test"), spf_attacker),
        txt_record(name("33.attack.test"), spf_attacker),
        txt_record(name("any.attack.test"), spf_attacker),
        txt_record(name("legitimate.test(a.attack.test"), spf_attacker),
        txt_record(name("selector._domainkey.attack.test"), &key),
        txt_record(
            name("selector._domainkey.legitimate.test'a.attack.test"),
            &key,
        ),
    ]
}

/// One espoofer case, in its own words (addresses moved to the test domains).
struct Case {
    id: &'static str,
    helo: &'static str,
    mail_from: &'static str,
    /// The From field(s) and anything else the case puts in the header, CRLF-terminated.
    header: &'static str,
    /// `d=` and `s=` of the attacker's DKIM signature, for the cases that sign.
    dkim: Option<(&'static str, &'static str)>,
}

const CASES: &[Case] = &[
    Case { id: "A1 non-existent subdomain in MAIL FROM", helo: "helo.attack.test", mail_from: "any@mailfrom.notexist.legitimate.test", header: "From: <admin@legitimate.test>\r\n", dkim: None },
    Case { id: "A2 empty MAIL FROM address", helo: "attack.test", mail_from: "(any@legitimate.test", header: "From: <admin@legitimate.test>\r\n", dkim: None },
    Case { id: "A3 NUL ambiguity in s=", helo: "33.attack.test", mail_from: "any@33.attack.test", header: "From: <admin@legitimate.test>\r\n", dkim: Some(("legitimate.test", "selector._domainkey.attack.test.\0.any")) },
    Case { id: "A4 DKIM results injection with a quote", helo: "attack.test", mail_from: "any@attack.test", header: "From: <admin@legitimate.test>\r\n", dkim: Some(("legitimate.test'a.attack.test", "selector")) },
    Case { id: "A5 SPF results injection with a parenthesis", helo: "attack.test", mail_from: "any@legitimate.test(a.attack.test", header: "From: <admin@legitimate.test>\r\n", dkim: None },
    Case { id: "A6 SPF results injection with a quote", helo: "attack.test", mail_from: "any@legitimate.test'@any.attack.test", header: "From: <admin@legitimate.test>\r\n", dkim: None },
    Case { id: "A7 route in MAIL FROM", helo: "attack.test", mail_from: "@legitimate.test,@any.test:'any@attack.test", header: "From: <admin@legitimate.test>\r\n", dkim: None },
    Case { id: "A8 multiple From fields", helo: "attack.test", mail_from: "any@attack.test", header: "From: <first@attack.test>\r\nFrom: <admin@legitimate.test>\r\n", dkim: None },
    Case { id: "A9 multiple From fields, one with a space before", helo: "attack.test", mail_from: "any@attack.test", header: " From: <first@attack.test>\r\nFrom: <admin@legitimate.test>\r\n", dkim: None },
    Case { id: "A10 multiple From fields, one with a space after", helo: "attack.test", mail_from: "any@attack.test", header: "From: <first@attack.test>\r\nFrom : <admin@legitimate.test>\r\n", dkim: None },
    Case { id: "A11 multiple From fields, one folded", helo: "attack.test", mail_from: "any@attack.test", header: "From\r\n : <first@attack.test>\r\nFrom: <admin@legitimate.test>\r\n", dkim: None },
    Case { id: "A12 From and Sender ambiguity", helo: "attack.test", mail_from: "any@attack.test", header: "From\r\n : <first@attack.test>\r\nn\r\nSender: <admin@legitimate.test>\r\n", dkim: None },
    Case { id: "A13 From and Resent-From ambiguity", helo: "attack.test", mail_from: "any@attack.test", header: "From\r\n : <first@attack.test>\r\nn\r\nResent-From: <admin@legitimate.test>\r\n", dkim: None },
    Case { id: "A14 multiple addresses in From", helo: "attack.test", mail_from: "any@attack.test", header: "From: <first@attack.test>, <admin@legitimate.test>\r\nSender: <s@sender.legitimate.test>\r\n", dkim: None },
    Case { id: "A15 address in an encoded word", helo: "attack.test", mail_from: "any@attack.test", header: "From:=?utf-8?B?PGFkbWluQGxlZ2l0aW1hdGUudGVzdD4=?=,<second@attack.test>\r\nSender: <s@sender.legitimate.test>\r\n", dkim: None },
    Case { id: "A16 route portion", helo: "attack.test", mail_from: "any@attack.test", header: "From: <@attack.test,@any.test:admin@legitimate.test>\r\nSender: <s@sender.legitimate.test>\r\n", dkim: None },
    Case { id: "A17 quoted pair", helo: "attack.test", mail_from: "any@attack.test", header: "From: <admin@legitimate.test>\\,<second@attack.test>\r\nSender: <s@sender.legitimate.test>\r\n", dkim: None },
    Case { id: "A18 special characters precedence", helo: "attack.test", mail_from: "any@attack.test", header: "From: admin@legitimate.test,<second@attack.test>\r\nSender: <s@sender.legitimate.test>\r\n", dkim: None },
    Case { id: "A19 display name and real address", helo: "attack.test", mail_from: "any@attack.test", header: "From: <any@attack.test>admin@legitimate.test\r\nSender: <s@sender.legitimate.test>\r\n", dkim: None },
];

/// The message of a case, signed by the attacker where the case signs.
fn message(case: &Case) -> Vec<u8> {
    let mut m = case.header.as_bytes().to_vec();
    m.extend_from_slice(
        b"To: <victim@victim.test>\r\nSubject: espoofer\r\nDate: Thu, 3 Dec 2026 10:00:00 +0000\r\n\
          Message-ID: <espoofer@message-ids.attack.test>\r\nMIME-Version: 1.0\r\n\
          Content-Type: text/plain; charset=\"UTF-8\"\r\n\r\nHi, this is a test message! Best wishes.\r\n",
    );
    let Some((d, s)) = case.dkim else { return m };
    let signature = DkimSigner::from_key(signing_key(&attacker_pem()))
        .domain(d)
        .selector(s)
        .headers(["From", "To", "Subject", "Date", "Message-ID"])
        .sign(&m)
        .expect("sign");
    let mut signed = signature.to_header().into_bytes();
    signed.extend_from_slice(&m);
    signed
}

fn check_args(dns: std::net::SocketAddr, case: &Case) -> CheckArgs {
    CheckArgs {
        dns: Some(dns),
        client_ip: Some("127.0.0.1".parse().expect("ip")),
        helo: Some(case.helo.into()),
        mail_from: Some(case.mail_from.into()),
        rcpt: vec!["victim@victim.test".into()],
        json: true,
        ..CheckArgs::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn espoofer_server_cases_never_pass_dmarc_for_the_spoofed_domain() {
    let dns = TestDns::start_records(zone(), Vec::new()).await;
    let checker = Checker::new(&check_args(dns.addr, &CASES[0]))
        .await
        .expect("checker");
    let mut wrong = Vec::new();
    for case in CASES {
        let report = checker
            .check(&check_args(dns.addr, case), &message(case))
            .await
            .expect("check");
        let v: Value = serde_json::from_str(&report.output).expect("json");
        let dmarc_pass_for_victim =
            v["dmarc"]["result"] == "pass" && v["dmarc"]["domain"] == "legitimate.test";
        if dmarc_pass_for_victim || v["action"] == "accept" || report.exit_code == 0 {
            wrong.push(format!(
                "{}: action {}, dmarc {} for {:?}",
                case.id, v["action"], v["dmarc"]["result"], v["dmarc"]["domain"]
            ));
        }
    }
    assert_eq!(CASES.len(), 19);
    assert!(
        wrong.is_empty(),
        "spoofs that got through:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn attacker_signatures_name_their_domain_and_cannot_inject_results() {
    let dns = TestDns::start_records(zone(), Vec::new()).await;
    let case = &CASES[3];
    let checker = Checker::new(&check_args(dns.addr, case))
        .await
        .expect("checker");
    let report = checker
        .check(&check_args(dns.addr, case), &message(case))
        .await
        .expect("check");
    let v: Value = serde_json::from_str(&report.output).expect("json");
    // The attacker's signature verifies, for the attacker's odd d=, which is not aligned.
    assert_eq!(v["dkim"][0]["result"], "pass", "{v}");
    assert_eq!(v["dkim"][0]["domain"], "legitimate.test'a.attack.test");
    assert_eq!(v["dmarc"]["result"], "fail");
    assert_eq!(v["action"], "reject");
    let ar = v["headers"][0].as_str().unwrap_or("");
    assert!(
        ar.contains("header.d=\"legitimate.test'a.attack.test\""),
        "the odd d= must be quoted: {ar}"
    );
    // A3: the NUL in s= names a key that does not exist; the signature is no pass.
    let case = &CASES[2];
    let report = checker
        .check(&check_args(dns.addr, case), &message(case))
        .await
        .expect("check");
    let v: Value = serde_json::from_str(&report.output).expect("json");
    assert_eq!(v["dkim"][0]["domain"], "legitimate.test");
    assert_ne!(v["dkim"][0]["result"], "pass", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_from_fields_are_refused_over_smtp_and_never_forwarded() {
    let dns = TestDns::start_records(zone(), Vec::new()).await;
    let (moat, sink) = Moat::builder().dns(dns.addr).start_with_sink().await;
    let mut c = moat.client().await;
    c.cmd("EHLO attack.test").await;
    let case = &CASES[7];
    let r = c
        .expect_message(
            case.mail_from,
            &["victim@victim.test"],
            &message(case),
            "550",
        )
        .await;
    assert!(r.contains("5.7.1"), "{r:?}");
    assert!(r.contains("2 From fields"), "the reply says why: {r:?}");
    assert!(sink.messages().is_empty(), "nothing reaches the MTA");
    // The same message with the From problems only scored (auth.from_reject = []).
    let moat = Moat::builder()
        .upstream(&sink)
        .dns(dns.addr)
        .with(|c| c.auth.from_reject.clear())
        .start()
        .await;
    let mut c = moat.client().await;
    c.cmd("EHLO attack.test").await;
    let r = c
        .send_message(case.mail_from, &["victim@victim.test"], &message(case))
        .await;
    assert_eq!(r.code, 250, "only scored now: {r:?}");
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    let body = String::from_utf8_lossy(&msgs[0].body);
    assert!(body.contains("HDR_FROM_MULTIPLE"), "{body}");
}

/// The key `signed.test` publishes at `sel._domainkey` in the fixture zones.
fn signed_test_pem() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/dkim/keys/signed.test.pem"
    ))
    .expect("key")
}

/// `body` under `header`, signed for signed.test over `signed` fields (with `l=` when asked).
fn signed_test_message(header: &str, body: &str, signed: &[&str], body_length: bool) -> Vec<u8> {
    let m = format!("{header}\r\n{body}").into_bytes();
    let signature = DkimSigner::from_key(signing_key(&signed_test_pem()))
        .domain("signed.test")
        .selector("sel")
        .headers(signed.iter().copied())
        .body_length(body_length)
        .sign(&m)
        .expect("sign");
    let mut out = signature.to_header().into_bytes();
    out.extend_from_slice(&m);
    out
}

async fn score(dns: &TestDns, message: &[u8]) -> Value {
    let args = CheckArgs {
        dns: Some(dns.addr),
        client_ip: Some("192.0.2.99".parse().expect("ip")),
        helo: Some("mx.elsewhere.test".into()),
        mail_from: Some("bounce@elsewhere.test".into()),
        json: true,
        ..CheckArgs::default()
    };
    let checker = Checker::new(&args).await.expect("checker");
    let report = checker.check(&args, message).await.expect("check");
    serde_json::from_str(&report.output).expect("json")
}

const HEADER: &str = "From: Alice <alice@signed.test>\r\nTo: bob@rcpt.test\r\nSubject: Quarterly figures\r\nDate: Thu, 3 Dec 2026 10:00:00 +0000\r\nMessage-ID: <q@signed.test>\r\n";
const FIELDS: &[&str] = &["From", "To", "Subject", "Date", "Message-ID"];

#[tokio::test(flavor = "multi_thread")]
async fn dkim_l_covering_the_whole_body_passes_and_content_beyond_it_does_not() {
    let dns = TestDns::fixtures(Vec::new()).await;
    // SPF cannot help here (the client is not signed.test's), so DMARC rests on DKIM.
    let whole = signed_test_message(HEADER, "The figures are attached.\r\n", FIELDS, true);
    assert!(
        String::from_utf8_lossy(&whole).contains(" l="),
        "the signature has l="
    );
    let v = score(&dns, &whole).await;
    assert_eq!(v["dkim"][0]["result"], "pass", "{v}");
    assert_eq!(v["dmarc"]["result"], "pass", "{v}");
    // Content appended after signing: the signed part still hashes right, but it is no pass.
    let mut appended = whole.clone();
    appended.extend_from_slice(b"\r\nP.S. Wire the money to the new account below.\r\n");
    let v = score(&dns, &appended).await;
    assert_eq!(v["dkim"][0]["result"], "fail", "{v}");
    assert_eq!(v["dkim"][0]["domain"], "signed.test");
    assert_eq!(v["dkim"][0]["selector"], "sel");
    assert_eq!(v["dmarc"]["result"], "fail", "{v}");
    assert_eq!(v["action"], "reject", "signed.test publishes p=reject: {v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsigned_subject_above_the_signed_one_fails_the_signature() {
    let dns = TestDns::fixtures(Vec::new()).await;
    let good = signed_test_message(HEADER, "See you on Friday.\r\n", FIELDS, false);
    let v = score(&dns, &good).await;
    assert_eq!(v["dkim"][0]["result"], "pass", "{v}");
    // RFC 6376 8.15: a second Subject on top, which is the one a mail client shows.
    let mut forged = b"Subject: Urgent: new bank details\r\n".to_vec();
    forged.extend_from_slice(&good);
    let v = score(&dns, &forged).await;
    assert_eq!(v["dkim"][0]["result"], "fail", "{v}");
    assert_eq!(
        v["dkim"][0]["domain"], "signed.test",
        "d= reported on failure"
    );
    assert_eq!(v["dkim"][0]["selector"], "sel", "s= reported on failure");
    assert_ne!(v["dmarc"]["result"], "pass");
    // Signing Subject twice (oversigning) protects it: the extra entry signs "no field".
    let oversigned = signed_test_message(
        HEADER,
        "See you on Friday.\r\n",
        &["From", "To", "Subject", "Subject", "Date", "Message-ID"],
        false,
    );
    let v = score(&dns, &oversigned).await;
    assert_eq!(v["dkim"][0]["result"], "pass", "{v}");
    let mut forged = b"Subject: Urgent: new bank details\r\n".to_vec();
    forged.extend_from_slice(&oversigned);
    let v = score(&dns, &forged).await;
    assert_ne!(v["dkim"][0]["result"], "pass", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_display_name_showing_an_address_is_the_domain_dmarc_checks() {
    let dns = TestDns::start_records(zone(), Vec::new()).await;
    let case = Case {
        id: "display name holding the victim's address",
        helo: "attack.test",
        mail_from: "any@attack.test",
        header: "From: \"admin@legitimate.test\" <any@attack.test>\r\n",
        dkim: Some(("attack.test", "selector")),
    };
    let checker = Checker::new(&check_args(dns.addr, &case))
        .await
        .expect("checker");
    let report = checker
        .check(&check_args(dns.addr, &case), &message(&case))
        .await
        .expect("check");
    let v: Value = serde_json::from_str(&report.output).expect("json");
    // SPF and DKIM pass for attack.test, the address in the field; a client that shows the
    // name shows legitimate.test, so that is the domain DMARC checks, and it fails.
    assert_eq!(v["spf"]["result"], "pass", "{v}");
    assert_eq!(v["dkim"][0]["result"], "pass", "{v}");
    assert_eq!(v["dmarc"]["domain"], "legitimate.test", "{v}");
    assert_eq!(v["dmarc"]["result"], "fail", "{v}");
    assert_eq!(v["action"], "reject", "{}: {v}", case.id);
    let names: Vec<&str> = v["symbols"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(names.contains(&"HDR_FROM_DISPLAY_ADDRESS"), "{v}");
}
