//! STARTTLS with an rcgen certificate, including the plaintext injection attempt
//! (CVE-2011-0411 class).

use crate::support::{certs, Moat, Sink};

#[tokio::test(flavor = "multi_thread")]
async fn starttls_then_a_transaction() {
    let certs = certs::make();
    let sink = Sink::start().await;
    let moat = Moat::builder()
        .upstream(&sink)
        .with(|c| {
            c.tls.cert = Some(certs.cert.clone());
            c.tls.key = Some(certs.key.clone());
        })
        .start()
        .await;
    let mut c = moat.client().await;
    let ehlo = c.ehlo().await;
    assert!(
        ehlo.contains("250-STARTTLS") || ehlo.contains("250 STARTTLS"),
        "{ehlo:?}"
    );
    let r = c.cmd("STARTTLS").await;
    assert_eq!((r.code, r.enhanced()), (220, Some("2.0.0")), "{r:?}");
    let version = c.tls_handshake(&certs.ca_der).await;
    assert!(version == "TLSv1_3" || version == "TLSv1_2", "{version}");
    // RFC 3207 4.2: back to the start: MAIL needs a new EHLO.
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").await.code, 503);
    let ehlo = c.ehlo().await;
    assert!(
        !ehlo.contains("STARTTLS"),
        "STARTTLS offered twice: {ehlo:?}"
    );
    assert_eq!(c.cmd("STARTTLS").await.code, 503);
    let r = c
        .send_message(
            "a@example.test",
            &["b@example.test"],
            b"Subject: tls\r\n\r\nsecret\r\n",
        )
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(sink.messages()[0].body, b"Subject: tls\r\n\r\nsecret\r\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_pipelined_after_starttls_is_discarded() {
    let certs = certs::make();
    let sink = Sink::start().await;
    let moat = Moat::builder()
        .upstream(&sink)
        .with(|c| {
            c.tls.cert = Some(certs.cert.clone());
            c.tls.key = Some(certs.key.clone());
        })
        .start()
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    // The injected commands ride in the same packet as STARTTLS, before the handshake.
    c.send(b"STARTTLS\r\nEHLO evil.test\r\nMAIL FROM:<injected@example.test>\r\nRCPT TO:<victim@example.test>\r\n").await;
    let r = c.read_reply().await;
    assert_eq!(r.code, 220);
    c.tls_handshake(&certs.ca_der).await;
    // Had the injected commands run, the next replies would be theirs. Instead the first reply
    // over TLS answers our NOOP, and the session is in the pre-EHLO state.
    let r = c.cmd("NOOP").await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.cmd("RCPT TO:<victim@example.test>").await.code, 503);
    assert!(
        !sink
            .commands()
            .iter()
            .any(|l| l.contains("injected") || l.contains("victim")),
        "{:?}",
        sink.commands()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_handshake_closes_only_that_session() {
    let certs = certs::make();
    let sink = Sink::start().await;
    let moat = Moat::builder()
        .upstream(&sink)
        .with(|c| {
            c.tls.cert = Some(certs.cert.clone());
            c.tls.key = Some(certs.key.clone());
        })
        .start()
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    assert_eq!(c.cmd("STARTTLS").await.code, 220);
    c.send(b"this is not a TLS ClientHello\r\n").await;
    assert!(c.is_closed().await);
    let mut d = moat.client().await;
    assert_eq!(d.cmd("NOOP").await.code, 250);
}
