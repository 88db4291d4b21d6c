//! The pre-greet test: with `limits.pregreet_wait`, a client that sends before the 220 is an
//! early talker (spamware that does not wait, as postscreen checks): 554 5.5.1 and close by
//! default, silent close or only a log line as configured. A client that waits is greeted.
//! The same for commands pipelined before PIPELINING was offered.

use crate::support::alone::{alone, Counts};
use crate::support::client::Client;
use crate::support::{Moat, Sink};
use moat::config::{ConfigDuration, EarlyTalkerAction};
use std::time::Duration;
use tokio::io::AsyncReadExt;

const PREGREET: &str = "moat_sessions_total{result=\"pregreet\"}";
const PIPELINING: &str = "moat_sessions_total{result=\"pipelining\"}";

async fn moat_waiting(sink: &Sink, action: EarlyTalkerAction) -> Moat {
    Moat::builder()
        .upstream(sink)
        .with(move |c| {
            c.limits.pregreet_wait = ConfigDuration(Duration::from_millis(300));
            c.limits.pregreet_action = action;
        })
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "reads the metrics registry: run alone by app::metrics::tests_reading_metrics_run_alone"]
async fn alone_early_talkers_are_refused_and_patient_clients_greeted() {
    if !alone() {
        return;
    }
    let counts = Counts::of(&[PREGREET]);
    let sink = Sink::start().await;
    let moat = moat_waiting(&sink, EarlyTalkerAction::Reject).await;
    let mut early = Client::connect_with_preface(moat.addr, b"EHLO hasty.example\r\n").await;
    assert_eq!(early.greeting.code, 554, "{:?}", early.greeting);
    assert!(
        early.greeting.lines[0].contains("5.5.1"),
        "{:?}",
        early.greeting
    );
    assert!(early.is_closed().await);
    let mut patient = moat.client().await;
    assert_eq!(patient.greeting.code, 220);
    patient.ehlo().await;
    assert_eq!(counts.delta(PREGREET), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_closes_silently_and_ignore_only_logs() {
    let sink = Sink::start().await;
    let moat = moat_waiting(&sink, EarlyTalkerAction::Drop).await;
    let mut tcp = tokio::net::TcpStream::connect(moat.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"EHLO hasty.example\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
    assert!(
        matches!(n, Ok(Ok(0)) | Ok(Err(_))),
        "closed without a reply: {n:?}"
    );

    let moat = moat_waiting(&sink, EarlyTalkerAction::Ignore).await;
    let mut c = Client::connect_with_preface(moat.addr, b"EHLO hasty.example\r\n").await;
    assert_eq!(c.greeting.code, 220, "greeted anyway");
    // The early EHLO was kept and is answered.
    let r = c.read_reply().await;
    assert_eq!(r.code, 250, "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "reads the metrics registry: run alone by app::metrics::tests_reading_metrics_run_alone"]
async fn alone_pipelining_before_the_offer_is_refused() {
    if !alone() {
        return;
    }
    let counts = Counts::of(&[PIPELINING]);
    let (moat, sink) = Moat::builder().start_with_sink().await;
    // EHLO and MAIL in one packet: MAIL came before the EHLO reply offered PIPELINING.
    let mut c = moat.client().await;
    c.send(b"EHLO hasty.example\r\nMAIL FROM:<a@example.test>\r\n")
        .await;
    let r = c.read_reply().await;
    assert_eq!((r.code, r.enhanced()), (554, Some("5.5.1")), "{r:?}");
    assert!(c.is_closed().await);
    // After HELO nothing is offered: pipelining is refused as well.
    let mut c = moat.client().await;
    assert_eq!(c.cmd("HELO old.example").await.code, 250);
    c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n")
        .await;
    assert_eq!(c.read_reply().await.code, 554);
    // After EHLO it is allowed (RFC 2920).
    let mut c = moat.client().await;
    c.ehlo().await;
    c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n")
        .await;
    assert_eq!(c.read_reply().await.code, 250);
    assert_eq!(c.read_reply().await.code, 250);
    // The two sessions refused above, not the one that was allowed to pipeline.
    assert_eq!(counts.delta(PIPELINING), 2.0);
    // With "ignore" the early commands are answered.
    let moat = Moat::builder()
        .upstream(&sink)
        .with(|c| c.limits.pipelining_action = EarlyTalkerAction::Ignore)
        .start()
        .await;
    let mut c = moat.client().await;
    c.send(b"EHLO hasty.example\r\nNOOP\r\n").await;
    assert_eq!(c.read_reply().await.code, 250);
    assert_eq!(c.read_reply().await.code, 250);
}
