//! The pre-greet test: with `limits.pregreet_wait`, a client that sends before the 220 is an
//! early talker (spamware that does not wait, as postscreen checks): 554 5.5.1 and close by
//! default, silent close or only a log line as configured. A client that waits is greeted.

use crate::support::client::Client;
use crate::support::{Moat, Sink};
use moat::config::{ConfigDuration, PregreetAction};
use std::time::Duration;
use tokio::io::AsyncReadExt;

async fn moat_waiting(sink: &Sink, action: PregreetAction) -> Moat {
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
async fn early_talkers_are_refused_and_patient_clients_greeted() {
    let sink = Sink::start().await;
    let moat = moat_waiting(&sink, PregreetAction::Reject).await;
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
    let metrics = moat::metrics::METRICS.render();
    assert!(
        metrics.contains("moat_sessions_total{result=\"pregreet\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_closes_silently_and_ignore_only_logs() {
    let sink = Sink::start().await;
    let moat = moat_waiting(&sink, PregreetAction::Drop).await;
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

    let moat = moat_waiting(&sink, PregreetAction::Ignore).await;
    let mut c = Client::connect_with_preface(moat.addr, b"EHLO hasty.example\r\n").await;
    assert_eq!(c.greeting.code, 220, "greeted anyway");
    // The early EHLO was kept and is answered.
    let r = c.read_reply().await;
    assert_eq!(r.code, 250, "{r:?}");
}
