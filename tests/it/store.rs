//! The store's Redis backend against a real redis-server: the same operations as the embedded
//! backend's unit tests, state shared by two clients (two moat instances), and a Redis that
//! goes away.

use crate::support::redis::RedisServer;
use moat::config::{ConfigDuration, StoreBackend, StoreConfig};
use moat::store::{Store, StoreError};
use std::time::{Duration, Instant};

fn redis_config(url: &str, prefix: &str) -> StoreConfig {
    StoreConfig {
        backend: StoreBackend::Redis,
        url: url.to_string(),
        prefix: prefix.to_string(),
        timeout: ConfigDuration(Duration::from_millis(500)),
        ..StoreConfig::default()
    }
}

#[tokio::test]
async fn redis_get_set_incr_expire() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = Store::open(&redis_config(&redis.url, "t1:"))
        .await
        .expect("open");
    assert_eq!(store.backend(), "redis");
    assert_eq!(store.get("a").await.expect("get"), None);
    store
        .set("a", b"one", Duration::from_secs(60))
        .await
        .expect("set");
    assert_eq!(
        store.get("a").await.expect("get").as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(
        store
            .incr("n", 2, Duration::from_secs(60))
            .await
            .expect("incr"),
        2
    );
    assert_eq!(
        store
            .incr("n", 3, Duration::from_secs(60))
            .await
            .expect("incr"),
        5
    );
    assert!(matches!(
        store.incr("a", 1, Duration::from_secs(60)).await,
        Err(StoreError::NotACounter(_))
    ));
    store
        .set("short", b"x", Duration::from_millis(50))
        .await
        .expect("set");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.get("short").await.expect("get"), None, "expired");
    // The prefix separates tenants of one Redis.
    let other = Store::open(&redis_config(&redis.url, "t2:"))
        .await
        .expect("open");
    assert_eq!(other.get("a").await.expect("get"), None);
}

#[tokio::test]
async fn two_instances_share_counters_and_windows() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = Store::open(&redis_config(&redis.url, "moat:"))
        .await
        .expect("open a");
    let b = Store::open(&redis_config(&redis.url, "moat:"))
        .await
        .expect("open b");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                for _ in 0..25 {
                    s.incr("c", 1, Duration::from_secs(60)).await.expect("incr");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(
        a.incr("c", 0, Duration::from_secs(60)).await.expect("read"),
        200
    );
    let window = Duration::from_secs(3600);
    for _ in 0..3 {
        a.hit("rl:ip", window).await.expect("hit a");
    }
    let n = b.hit("rl:ip", window).await.expect("hit b");
    assert!((3.0..=4.0).contains(&n), "B sees A's hits: {n}");
}

#[tokio::test]
async fn redis_down_fails_fast_with_a_clear_error() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let store = Store::open(&redis_config(&redis.url, "moat:"))
        .await
        .expect("open");
    store
        .set("k", b"v", Duration::from_secs(60))
        .await
        .expect("set");
    redis.stop();
    let t = Instant::now();
    let err = store.get("k").await.expect_err("redis is down");
    assert!(
        matches!(err, StoreError::Redis(_) | StoreError::Timeout(_)),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "bounded by the timeout"
    );
    // Start-up does not need Redis: the connection is made on first use.
    let late = Store::open(&redis_config(&redis.url, "moat:")).await;
    assert!(late.is_ok());
}
