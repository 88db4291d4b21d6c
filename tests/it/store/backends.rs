//! Both store backends through the same operations: the embedded one in a temporary
//! directory, Redis as a real redis-server on a loopback port; state shared by two clients
//! (two moat instances) and a Redis that goes away.

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

fn embedded_config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        backend: StoreBackend::Embedded,
        path: dir.join("state").join("state.redb"),
        timeout: ConfigDuration(Duration::from_secs(2)),
        ..StoreConfig::default()
    }
}

/// get/set/incr/expiry as every backend must do them.
async fn basic_operations(store: &Store) {
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
    assert_eq!(
        store
            .incr("short", 1, Duration::from_secs(60))
            .await
            .expect("incr"),
        1,
        "an expired value counts as absent"
    );
}

/// 200 increments from 8 tasks over two handles (two instances), then a sliding window.
async fn shared_counters(a: &Store, b: &Store) {
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
    assert!((3.0..=4.0).contains(&n), "b sees a's hits: {n}");
}

#[tokio::test]
async fn embedded_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&embedded_config(dir.path()))
        .await
        .expect("open");
    assert_eq!(store.backend(), "embedded");
    basic_operations(&store).await;
    shared_counters(&store, &store.clone()).await;
}

#[tokio::test]
async fn redis_backend() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = Store::open(&redis_config(&redis.url, "t1:"))
        .await
        .expect("open");
    assert_eq!(store.backend(), "redis");
    basic_operations(&store).await;
    // Two instances with the same prefix share counters; another prefix is another tenant.
    let twin = Store::open(&redis_config(&redis.url, "t1:"))
        .await
        .expect("open");
    shared_counters(&store, &twin).await;
    let other = Store::open(&redis_config(&redis.url, "t2:"))
        .await
        .expect("open");
    assert_eq!(other.get("a").await.expect("get"), None);
    assert_eq!(
        other
            .incr("c", 0, Duration::from_secs(60))
            .await
            .expect("read"),
        0
    );
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
