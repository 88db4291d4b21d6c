//! Upstream trouble at every stage ends in a 4xx (or the upstream's own refusal) and never in a
//! 2xx for a message the upstream did not accept.

use crate::support::{Moat, Sink, SinkOptions};
use moat::config::ConfigDuration;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_gives_451() {
    // Bind and drop to get a port with nothing listening.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let moat = Moat::builder()
        .with(|c| c.upstream.address = dead.to_string())
        .start()
        .await;
    let mut c = moat.client().await;
    let ehlo = c.ehlo().await;
    // Without a known upstream, only what needs no upstream support is offered.
    assert!(
        !ehlo.contains("DSN") && !ehlo.contains("SMTPUTF8"),
        "{ehlo:?}"
    );
    let r = c.cmd("MAIL FROM:<a@example.test>").await;
    assert_eq!((r.code, r.enhanced()), (451, Some("4.4.1")), "{r:?}");
    assert_eq!(c.cmd("RCPT TO:<b@example.test>").await.code, 503);
    assert_eq!(c.cmd("NOOP").await.code, 250);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_dies_mid_data_client_gets_4xx() {
    let sink = Sink::with(SinkOptions {
        die_mid_data: Some(100),
        ..Default::default()
    })
    .await;
    let moat = Moat::builder().upstream(&sink).start().await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let body = "z".repeat(70) + "\r\n";
    let r = c
        .send_message(
            "a@example.test",
            &["b@example.test"],
            body.repeat(100).as_bytes(),
        )
        .await;
    assert_eq!((r.code, r.enhanced()), (451, Some("4.4.1")), "{r:?}");
    assert!(sink.messages().is_empty());
    // The session survives; the next transaction opens a new upstream session (and fails the
    // same way here, never with a 2xx).
    let r = c
        .send_message(
            "a@example.test",
            &["b@example.test"],
            body.repeat(100).as_bytes(),
        )
        .await;
    assert_eq!(r.code, 451, "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_refuses_the_message() {
    for reply in [
        "554 5.7.1 Rejected by policy",
        "452 4.3.1 Insufficient system storage",
    ] {
        let sink = Sink::with(SinkOptions {
            data_reply: reply.into(),
            ..Default::default()
        })
        .await;
        let moat = Moat::builder().upstream(&sink).start().await;
        let mut c = moat.client().await;
        c.ehlo().await;
        let r = c
            .send_message("a@example.test", &["b@example.test"], b"x\r\n")
            .await;
        assert_eq!(r.lines, vec![reply.to_string()]);
        assert!(sink.messages().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_421_is_relayed_as_451_and_the_session_goes_on() {
    let sink = Sink::with(SinkOptions {
        data_reply: "421 4.3.0 Service shutting down".into(),
        ..Default::default()
    })
    .await;
    let moat = Moat::builder().upstream(&sink).start().await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let r = c
        .send_message("a@example.test", &["b@example.test"], b"x\r\n")
        .await;
    assert_eq!((r.code, r.enhanced()), (451, Some("4.3.0")), "{r:?}");
    assert_eq!(c.cmd("NOOP").await.code, 250);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_stalls_beyond_the_timeout() {
    let sink = Sink::with(SinkOptions {
        stall_after_data: Some(Duration::from_secs(30)),
        ..Default::default()
    })
    .await;
    let moat = Moat::builder()
        .upstream(&sink)
        .with(|c| c.upstream.data_timeout = ConfigDuration::secs(1))
        .start()
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let r = c
        .send_message("a@example.test", &["b@example.test"], b"x\r\n")
        .await;
    assert_eq!((r.code, r.enhanced()), (451, Some("4.4.1")), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_stalls_at_greeting() {
    let sink = Sink::with(SinkOptions {
        stall_greeting: Some(Duration::from_secs(30)),
        ..Default::default()
    })
    .await;
    let moat = Moat::builder()
        .upstream(&sink)
        .with(|c| c.upstream.command_timeout = ConfigDuration::secs(1))
        .start()
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let r = c.cmd("MAIL FROM:<a@example.test>").await;
    assert_eq!((r.code, r.enhanced()), (451, Some("4.4.1")), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_at_connect_opens_upstream_before_mail() {
    let sink = Sink::start().await;
    let moat = Moat::builder()
        .upstream(&sink)
        .with(|c| c.upstream.connect_at = moat::config::ConnectAt::Connect)
        .start()
        .await;
    let before = sink.connections();
    let mut c = moat.client().await;
    for _ in 0..100 {
        if sink.connections() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        sink.connections() > before,
        "no upstream session at connect"
    );
    c.ehlo().await;
    let r = c
        .send_message("a@example.test", &["b@example.test"], b"x\r\n")
        .await;
    assert_eq!(r.code, 250);
}
