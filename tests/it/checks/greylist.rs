//! Greylisting at RCPT over SMTP: a new triplet is deferred with 451 4.7.1 and passes after
//! the delay; a retry from another address of the same /24, or of the sender's SPF-authorized
//! range, counts as the same client; low scores are spared; a store failure skips or defers
//! as configured; and two instances sharing Redis share the greylist.

use crate::support::alone::{alone, Counts};
use crate::support::redis::RedisServer;
use crate::support::{crlf, Moat, Sink};
use moat::config::{Config, ConfigDuration, StoreBackend, StoreFailure};
use std::path::Path;
use std::time::Duration;

const DEFERRED: &str = "moat_greylist_total{result=\"deferred\"}";
const REDIS_ERRORS: &str = "moat_store_errors_total{backend=\"redis\"}";

/// Long enough that the "too early" retries of a loaded CI machine still come before it.
const DELAY: Duration = Duration::from_secs(2);

/// Greylisting on for every score, `DELAY`, the embedded store in `dir`.
fn greylist_on(c: &mut Config, dir: &Path) {
    c.greylist.enabled = true;
    c.greylist.delay = ConfigDuration(DELAY);
    c.greylist.min_score = -100.0;
    c.store.path = dir.join("state.redb");
}

/// The reply to one RCPT from `source`.
async fn rcpt_from(moat: &Moat, source: &str, from: &str, to: &str) -> (u16, String) {
    moat.rcpt_replies(source, from, &[to]).await.remove(0)
}

/// moat with greylisting on (the embedded store in `dir`), then `extra` config.
async fn greylisting(dir: &Path, sink: &Sink, extra: impl FnOnce(&mut Config)) -> Moat {
    Moat::builder()
        .upstream(sink)
        .with(|c| {
            greylist_on(c, dir);
            extra(c);
        })
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "reads the metrics registry: run alone by app::metrics::tests_reading_metrics_run_alone"]
async fn alone_new_triplet_is_deferred_then_passes_after_the_delay() {
    if !alone() {
        return;
    }
    let counts = Counts::of(&[DEFERRED]);
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start().await;
    let moat = greylisting(dir.path(), &sink, |_| {}).await;
    let (code, text) = rcpt_from(&moat, "127.0.0.5", "a@example.test", "b@example.test").await;
    assert_eq!(code, 451, "{text}");
    assert!(
        text.contains("4.7.1 Greylisted, please try again in 2s"),
        "{text}"
    );
    // Too early: still deferred, with the time left.
    let (code, _) = rcpt_from(&moat, "127.0.0.5", "a@example.test", "b@example.test").await;
    assert_eq!(code, 451);
    tokio::time::sleep(DELAY + Duration::from_millis(200)).await;
    // After the delay, from another address of the same /24: accepted and delivered.
    let mut c = crate::support::client::Client::connect_from(moat.addr, "127.0.0.9").await;
    c.ehlo().await;
    c.expect_message(
        "a@example.test",
        &["b@example.test"],
        &crlf("From: <a@example.test>\nSubject: retry\n\nhello\n"),
        "250",
    )
    .await;
    // A known triplet passes at once from then on; another recipient is a new triplet.
    let mut c = crate::support::client::Client::connect_from(moat.addr, "127.0.0.5").await;
    c.ehlo().await;
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<c@example.test>").await.code, 451);
    assert_eq!(c.cmd("RSET").await.code, 250);
    // Another /24 is another client.
    let (code, _) = rcpt_from(&moat, "127.1.2.3", "a@example.test", "b@example.test").await;
    assert_eq!(code, 451);
    // Only the accepted, delivered message reached the MTA; the deferred RCPTs never did.
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].rcpts, vec!["RCPT TO:<b@example.test>".to_string()]);
    // The four 451s above.
    assert_eq!(counts.delta(DEFERRED), 4.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn spf_authorized_pool_retries_from_another_network() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start().await;
    let moat = greylisting(dir.path(), &sink, |_| {}).await;
    // list.test authorizes 127.0.0.0/8 in SPF: its mail is keyed by the domain, not the /24.
    let (code, _) = rcpt_from(&moat, "127.0.0.5", "x@list.test", "b@example.test").await;
    assert_eq!(code, 451);
    tokio::time::sleep(DELAY + Duration::from_millis(200)).await;
    let (code, text) = rcpt_from(&moat, "127.1.2.3", "x@list.test", "b@example.test").await;
    assert_eq!(code, 250, "another /24 of the SPF-authorized pool: {text}");
    // The domain now has a good history: a new recipient passes at once.
    let (code, text) = rcpt_from(&moat, "127.0.0.5", "y@list.test", "new@example.test").await;
    assert_eq!(code, 250, "trusted SPF history: {text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_listed_clients_are_never_greylisted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules-lists");
    let sink = Sink::start().await;
    let moat = greylisting(dir.path(), &sink, |c| c.rules.dir = Some(rules)).await;
    // 127.0.0.3 is on lists/allow_ip.txt; its neighbour is not.
    let (code, text) = rcpt_from(&moat, "127.0.0.3", "a@example.test", "b@example.test").await;
    assert_eq!(code, 250, "{text}");
    let (code, _) = rcpt_from(&moat, "127.0.0.4", "a@example.test", "b@example.test").await;
    assert_eq!(code, 451);
}

#[tokio::test(flavor = "multi_thread")]
async fn low_scores_are_not_greylisted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start().await;
    let moat = greylisting(dir.path(), &sink, |c| c.greylist.min_score = 5.0).await;
    let (code, text) = rcpt_from(&moat, "127.0.0.5", "a@example.test", "b@example.test").await;
    assert_eq!(code, 250, "score below min_score: {text}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "reads the metrics registry: run alone by app::metrics::tests_reading_metrics_run_alone"]
async fn alone_a_failing_store_skips_or_defers_as_configured() {
    if !alone() {
        return;
    }
    let counts = Counts::of(&[REDIS_ERRORS]);
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start().await;
    // Nothing listens on port 1: every Redis operation fails.
    let broken = |c: &mut Config, on_failure| {
        greylist_on(c, dir.path());
        c.store.backend = StoreBackend::Redis;
        c.store.url = "redis://127.0.0.1:1/0".into();
        c.store.timeout = ConfigDuration(Duration::from_millis(300));
        c.store.on_failure = on_failure;
    };
    let moat = Moat::builder()
        .upstream(&sink)
        .with(|c| broken(c, StoreFailure::Skip))
        .start()
        .await;
    let (code, text) = rcpt_from(&moat, "127.0.0.5", "a@example.test", "b@example.test").await;
    assert_eq!(code, 250, "skip: the mail goes on: {text}");
    // The one greylist lookup of that RCPT.
    assert_eq!(counts.delta(REDIS_ERRORS), 1.0);
    let moat = Moat::builder()
        .upstream(&sink)
        .with(|c| broken(c, StoreFailure::Tempfail))
        .start()
        .await;
    let (code, text) = rcpt_from(&moat, "127.0.0.5", "a@example.test", "b@example.test").await;
    assert_eq!(code, 451, "{text}");
    assert!(text.contains("4.3.0"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_the_greylist_through_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start().await;
    let shared = |c: &mut Config| {
        greylist_on(c, dir.path());
        c.store.backend = StoreBackend::Redis;
        c.store.url = redis.url.clone();
    };
    let a = Moat::builder().upstream(&sink).with(shared).start().await;
    let b = Moat::builder().upstream(&sink).with(shared).start().await;
    let (code, _) = rcpt_from(&a, "127.0.0.5", "a@example.test", "b@example.test").await;
    assert_eq!(code, 451, "A greylists the new triplet");
    let (code, _) = rcpt_from(&b, "127.0.0.5", "a@example.test", "b@example.test").await;
    assert_eq!(code, 451, "B knows it is new and too early");
    tokio::time::sleep(DELAY + Duration::from_millis(200)).await;
    let (code, text) = rcpt_from(&b, "127.0.0.5", "a@example.test", "b@example.test").await;
    assert_eq!(
        code, 250,
        "B lets the retry through after A's delay: {text}"
    );
}
