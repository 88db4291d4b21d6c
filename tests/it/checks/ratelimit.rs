//! Rate limits at RCPT over SMTP: recipients counted per client IP, sender, sender domain or
//! recipient; past the limit 452 4.7.28 (or 451 4.7.1) for that recipient only; counts shared
//! by two instances through Redis.

use crate::support::alone::{alone, Counts};
use crate::support::redis::RedisServer;
use crate::support::{Moat, Sink};
use moat::config::{Config, ConfigDuration, RateKey, RateLimitConfig, RateReply, StoreBackend};
use std::path::Path;

const PER_IP: &str = "moat_ratelimited_total{name=\"per-ip\"}";

fn limit(name: &str, key: RateKey, n: u64, reply: RateReply) -> RateLimitConfig {
    RateLimitConfig {
        name: name.into(),
        key,
        limit: n,
        window: ConfigDuration::secs(3600),
        reply,
    }
}

fn with_limits(c: &mut Config, dir: &Path, limits: Vec<RateLimitConfig>) {
    c.ratelimit = limits;
    c.store.path = dir.join("state.redb");
}

/// RCPT codes for `rcpts` in one transaction from `source`.
async fn rcpts(moat: &Moat, source: &str, from: &str, rcpts: &[&str]) -> Vec<(u16, String)> {
    moat.rcpt_replies(source, from, rcpts).await
}

/// moat with `limits` on the embedded store in `dir`.
async fn limited(dir: &Path, sink: &Sink, limits: Vec<RateLimitConfig>) -> Moat {
    Moat::builder()
        .upstream(sink)
        .with(|c| with_limits(c, dir, limits))
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "reads the metrics registry: run alone by app::metrics::tests_reading_metrics_run_alone"]
async fn alone_per_ip_limit_defers_the_recipients_past_it() {
    if !alone() {
        return;
    }
    let counts = Counts::of(&[PER_IP]);
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start().await;
    let moat = limited(
        dir.path(),
        &sink,
        vec![limit("per-ip", RateKey::Ip, 2, RateReply::TooMany)],
    )
    .await;
    let got = rcpts(
        &moat,
        "127.0.0.5",
        "a@example.test",
        &["r1@example.test", "r2@example.test", "r3@example.test"],
    )
    .await;
    assert_eq!(got[0].0, 250);
    assert_eq!(got[1].0, 250);
    assert_eq!(got[2].0, 452, "{:?}", got[2]);
    assert!(got[2].1.contains("4.7.28"), "{:?}", got[2]);
    // The count is per address: another client is not affected, the same one still is.
    let other = rcpts(&moat, "127.0.0.6", "a@example.test", &["r1@example.test"]).await;
    assert_eq!(other[0].0, 250);
    let again = rcpts(&moat, "127.0.0.5", "b@example.test", &["r4@example.test"]).await;
    assert_eq!(again[0].0, 452);
    // r3 and r4.
    assert_eq!(counts.delta(PER_IP), 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sender_domain_and_recipient_limits_across_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start().await;
    let moat = limited(
        dir.path(),
        &sink,
        vec![
            limit("domain", RateKey::SenderDomain, 2, RateReply::Later),
            limit("rcpt", RateKey::Recipient, 3, RateReply::TooMany),
            limit("sender", RateKey::Sender, 1, RateReply::TooMany),
        ],
    )
    .await;
    // Two clients, one sender domain: the third recipient overall is deferred, with 451.
    assert_eq!(
        rcpts(&moat, "127.0.0.5", "a@bulk.test", &["x@example.test"]).await[0].0,
        250
    );
    assert_eq!(
        rcpts(&moat, "127.0.0.6", "b@BULK.test", &["y@example.test"]).await[0].0,
        250
    );
    let third = rcpts(&moat, "127.0.0.7", "c@bulk.test", &["z@example.test"]).await;
    assert_eq!(third[0].0, 451, "{:?}", third[0]);
    assert!(third[0].1.contains("4.7.1"), "{:?}", third[0]);
    // One recipient from three other senders: the fourth delivery attempt to it is deferred
    // (x@ already got one from bulk.test).
    for from in ["s1@one.test", "s2@two.test"] {
        assert_eq!(
            rcpts(&moat, "127.0.0.8", from, &["x@example.test"]).await[0].0,
            250
        );
    }
    assert_eq!(
        rcpts(&moat, "127.0.0.8", "s3@three.test", &["x@example.test"]).await[0].0,
        452
    );
    // One recipient per sender address: s1's second one is deferred, its domain is not over.
    let second = rcpts(&moat, "127.0.0.9", "S1@one.test", &["w@example.test"]).await;
    assert_eq!(second[0].0, 452, "{:?}", second[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_count_together_through_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start().await;
    let shared = |c: &mut Config| {
        with_limits(
            c,
            dir.path(),
            vec![limit("per-ip", RateKey::Ip, 3, RateReply::TooMany)],
        );
        c.store.backend = StoreBackend::Redis;
        c.store.url = redis.url.clone();
    };
    let a = Moat::builder().upstream(&sink).with(shared).start().await;
    let b = Moat::builder().upstream(&sink).with(shared).start().await;
    assert!(rcpts(
        &a,
        "127.0.0.5",
        "a@example.test",
        &["1@example.test", "2@example.test"]
    )
    .await
    .iter()
    .all(|r| r.0 == 250));
    let got = rcpts(
        &b,
        "127.0.0.5",
        "a@example.test",
        &["3@example.test", "4@example.test"],
    )
    .await;
    assert_eq!(got[0].0, 250, "third recipient overall");
    assert_eq!(
        got[1].0, 452,
        "fourth, counted across A and B: {:?}",
        got[1]
    );
}
