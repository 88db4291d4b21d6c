//! The rule files admins edit: the default ruleset over SMTP, hot reload with a transaction in
//! flight (good and broken files), and `moat lint` on broken files.

use crate::support::{crlf, Moat, Sink};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn gtube_is_rejected_by_the_default_rules() {
    let (moat, sink) = Moat::builder().start_with_sink().await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let msg = crlf("From: a@example.test\nSubject: test\n\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n");
    let r = c
        .send_message("a@example.test", &["b@rcpt.test"], &msg)
        .await;
    assert_eq!((r.code, r.enhanced()), (550, Some("5.7.1")), "{r:?}");
    assert!(sink.messages().is_empty());
    // An ordinary message passes with the rules' verdict in its headers.
    let msg = crlf("From: a@example.test\nTo: b@rcpt.test\nSubject: lunch\nDate: Mon, 30 Nov 2026 12:00:00 +0000\nMessage-ID: <l@example.test>\n\nSee you at noon.\n");
    c.expect_message("a@example.test", &["b@rcpt.test"], &msg, "250")
        .await;
    let got = String::from_utf8(sink.messages()[0].body.clone()).unwrap();
    assert!(got.contains("X-Spam-Status: No,"), "{got}");
}

const MAGIC_20: &str = "[rule.MAGIC]\nkind = \"body\"\nregex = 'magicword'\nscore = 20.0\ndescription = \"test rule\"\n";
const MAGIC_0: &str = "[rule.MAGIC]\nkind = \"body\"\nregex = 'magicword'\nscore = 0.0\ndescription = \"test rule, now harmless\"\n";

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_swaps_rules_for_new_sessions_and_keeps_them_on_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("60-test.toml");
    std::fs::write(&file, MAGIC_20).unwrap();
    let sink = Sink::start().await;
    let rules_dir = dir.path().to_path_buf();
    let moat = Moat::builder()
        .upstream(&sink)
        .with(move |c| {
            c.rules.dir = Some(rules_dir);
            c.rules.watch_interval = moat::config::ConfigDuration(Duration::from_millis(100));
        })
        .start()
        .await;
    let rules = moat.server().rules().clone();
    let body = crlf("From: a@example.test\nSubject: s\n\nthe magicword is here\n");

    // A transaction in flight while the rules change.
    let mut busy = moat.client().await;
    busy.ehlo().await;
    assert_eq!(busy.cmd("MAIL FROM:<a@example.test>").await.code, 250);
    assert_eq!(busy.cmd("RCPT TO:<b@rcpt.test>").await.code, 250);
    assert_eq!(busy.cmd("DATA").await.code, 354);
    busy.send(b"From: a@example.test\r\nSubject: s\r\n\r\n")
        .await;

    std::fs::write(&file, MAGIC_0).unwrap();
    wait_for("a reload", || rules.reloads_ok() == 1).await;

    // The session that started before the reload keeps its rules: MAGIC still scores 20.
    busy.send(b"the magicword is here\r\n.\r\n").await;
    let r = busy.read_reply().await;
    assert_eq!(
        r.code, 550,
        "old rules must apply to the session in flight: {r:?}"
    );
    // A new session gets the new rules.
    let mut fresh = moat.client().await;
    fresh.ehlo().await;
    fresh
        .expect_message("a@example.test", &["b@rcpt.test"], &body, "250")
        .await;

    // A broken file: the reload fails, the last good rules stay, the error names the file.
    std::fs::write(
        &file,
        "[rule.MAGIC]\nkind = \"body\"\nregex = '(oops'\nscore = 20.0\n",
    )
    .unwrap();
    wait_for("a failed reload", || rules.reloads_failed() == 1).await;
    let err = rules.last_error().unwrap();
    assert!(
        err.contains("60-test.toml:1: rule MAGIC: bad regex"),
        "{err}"
    );
    let mut after = moat.client().await;
    after.ehlo().await;
    let r = after
        .send_message("a@example.test", &["b@rcpt.test"], &body)
        .await;
    assert_eq!(r.code, 250, "the last good rules must stay in force: {r:?}");
    assert_eq!(rules.reloads_ok(), 1);
}

#[test]
fn lint_reports_every_problem_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let broken = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules-broken");
    let cfg = dir.path().join("moat.toml");
    std::fs::write(&cfg, format!("[rules]\ndir = {broken:?}\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_moat"))
        .arg("lint")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let b = broken.display().to_string();
    for want in [
        format!("{b}/10-broken.toml:2: rule BAD_REGEX: bad regex"),
        format!("{b}/10-broken.toml:7: rule NO_SCORE: no score"),
        format!("{b}/10-broken.toml:11: rule META_UNKNOWN: expr names unknown rule NOT_A_RULE"),
        format!("{b}/20-dup.toml:1: rule NO_SCORE: defined twice (also in {b}/10-broken.toml)"),
        format!("{b}/25-type.toml:4:9: invalid type"),
        "rules: meta rules form a cycle: CYCLE_A -> CYCLE_B -> CYCLE_A".to_string(),
        format!("{b}/30-syntax.toml:5:1: unknown field `colour`"),
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&want)),
            "missing {want:?} in:\n{text}"
        );
    }
    // The shipped config and rules are clean.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/moat.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_moat"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("lint")
        .arg("--config")
        .arg(&shipped)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn meta_cycles_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("10-c.toml"), "[rule.A]\nkind=\"meta\"\nexpr=\"B\"\nscore=1.0\n[rule.B]\nkind=\"meta\"\nexpr=\"A\"\nscore=1.0\n").unwrap();
    let out = lint_rules_dir(dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("meta rules form a cycle: A -> B -> A"));
}

/// `moat lint` with a config (kept outside it: its *.toml files are rule files) whose
/// `rules.dir` is `dir`.
fn lint_rules_dir(dir: &Path) -> std::process::Output {
    let etc = tempfile::tempdir().unwrap();
    let cfg = etc.path().join("moat.toml");
    std::fs::write(&cfg, format!("[rules]\ndir = {dir:?}\n")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_moat"))
        .arg("lint")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_and_deny_lists() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules-lists");
    let (moat, sink) = Moat::builder()
        .with(move |c| c.rules.dir = Some(dir))
        .start_with_sink()
        .await;
    // Denied client: 554 at connect.
    let c = crate::support::Client::connect_from(moat.addr, "127.0.0.2").await;
    assert_eq!(
        (c.greeting.code, c.greeting.enhanced()),
        (554, Some("5.7.1")),
        "{:?}",
        c.greeting
    );
    let mut c = moat.client().await;
    c.ehlo().await;
    // Denied senders (address and subdomain entry): 550 at MAIL, the upstream never hears.
    for s in ["spammer@example.test", "x@mail.blocked.example"] {
        let r = c.cmd(&format!("MAIL FROM:<{s}>")).await;
        assert_eq!((r.code, r.enhanced()), (550, Some("5.7.1")), "{s}: {r:?}");
    }
    // Denied recipient: only that RCPT is refused.
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<former-employee@rcpt.test>").await.code, 550);
    assert_eq!(c.cmd("RCPT TO:<b@rcpt.test>").await.code, 250);
    assert_eq!(c.cmd("RSET").await.code, 250);
    // Allowed sender, authenticated by SPF: GTUBE passes (the allow list decides alone).
    let gtube = crlf("From: a@partner.example\nSubject: t\n\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n");
    c.expect_message("a@partner.example", &["b@rcpt.test"], &gtube, "250")
        .await;
    // A forger using a listed sender that SPF does not vouch for: the entry does nothing, the
    // message is judged like any other (here GTUBE and bank.example's DMARC p=reject).
    let forged = crlf("From: ceo@bank.example\nSubject: t\n\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n");
    let r = c
        .send_message("ceo@bank.example", &["b@rcpt.test"], &forged)
        .await;
    assert_eq!((r.code, r.enhanced()), (550, Some("5.7.1")), "{r:?}");
    assert_eq!(
        sink.messages().len(),
        1,
        "the forged message never reaches the MTA"
    );
    // Allowed client: also passes, and its checks were skipped.
    let mut c = crate::support::Client::connect_from(moat.addr, "127.0.0.3").await;
    c.ehlo().await;
    c.expect_message("a@example.test", &["b@rcpt.test"], &gtube, "250")
        .await;
    let got = String::from_utf8(sink.messages()[1].body.clone()).unwrap();
    let first = String::from_utf8(sink.messages()[0].body.clone()).unwrap();
    assert!(
        first.contains("ALLOWLIST_SENDER"),
        "the partner was allowed after SPF passed: {first}"
    );
    let status = got
        .split("X-Spam-Status:")
        .nth(1)
        .unwrap()
        .split("\r\n\r\n")
        .next()
        .unwrap();
    assert!(
        status.contains("ALLOWLIST_IP") && !status.contains("GTUBE"),
        "{got}"
    );
}

#[test]
fn lint_warns_about_unauthenticated_sender_allow_entries() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lists")).unwrap();
    std::fs::write(
        dir.path().join("lists/allow_sender_unauthenticated.txt"),
        "legacy-partner.example\nold@vendor.example\n",
    )
    .unwrap();
    let out = lint_rules_dir(dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a warning, not an error: {text}"
    );
    assert!(
        text.contains("warning:")
            && text.contains("allow_sender_unauthenticated.txt: 2 entries")
            && text.contains("nobody authenticated"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_sender_allow_list_still_allows_at_mail() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lists")).unwrap();
    std::fs::write(
        dir.path().join("lists/allow_sender_unauthenticated.txt"),
        "legacy.example\n",
    )
    .unwrap();
    let rules = dir.path().to_path_buf();
    let (moat, sink) = Moat::builder()
        .with(move |c| c.rules.dir = Some(rules))
        .start_with_sink()
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let gtube = crlf("From: a@legacy.example\nSubject: t\n\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n");
    c.expect_message("a@legacy.example", &["b@rcpt.test"], &gtube, "250")
        .await;
    let got = String::from_utf8(sink.messages()[0].body.clone()).unwrap();
    assert!(got.contains("ALLOWLIST_SENDER_UNAUTHENTICATED"), "{got}");
}
