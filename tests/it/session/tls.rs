//! STARTTLS with an rcgen certificate, including the plaintext injection attempt
//! (CVE-2011-0411 class).

use crate::support::alone::{alone, Counts};
use crate::support::{certs, Moat, Sink, SinkOptions};

const PROTOCOL_FAILURES: &str = "moat_tls_handshake_failures_total{reason=\"protocol\"}";

#[tokio::test(flavor = "multi_thread")]
async fn starttls_then_a_transaction() {
    let certs = certs::make();
    let (moat, sink) = Moat::builder().tls(&certs).start_with_sink().await;
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
    c.expect_message(
        "a@example.test",
        &["b@example.test"],
        b"From: <a@example.test>\r\nSubject: tls\r\n\r\nsecret\r\n",
        "250",
    )
    .await;
    let msgs = sink.messages();
    let added = crate::support::split_prepended(
        &msgs[0].body,
        b"From: <a@example.test>\r\nSubject: tls\r\n\r\nsecret\r\n",
    );
    assert!(
        added.contains("with ESMTPS") && added.contains("version=TLSv1_3"),
        "{added}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_pipelined_after_starttls_is_discarded() {
    let certs = certs::make();
    let (moat, sink) = Moat::builder().tls(&certs).start_with_sink().await;
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
#[ignore = "reads the metrics registry: run alone by app::metrics::tests_reading_metrics_run_alone"]
async fn alone_failed_handshake_closes_only_that_session() {
    if !alone() {
        return;
    }
    let counts = Counts::of(&[PROTOCOL_FAILURES]);
    let certs = certs::make();
    let (moat, _sink) = Moat::builder().tls(&certs).start_with_sink().await;
    let mut c = moat.client().await;
    c.ehlo().await;
    assert_eq!(c.cmd("STARTTLS").await.code, 220);
    c.send(b"this is not a TLS ClientHello\r\n").await;
    assert!(c.is_closed().await);
    let mut d = moat.client().await;
    assert_eq!(d.cmd("NOOP").await.code, 250);
    // Counted by reason: plain text where a ClientHello belongs is a protocol failure. The
    // failed handshake drops the socket before the session counts it, so wait for the count.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while counts.delta(PROTOCOL_FAILURES) < 1.0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(counts.delta(PROTOCOL_FAILURES), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn required_tls_refuses_mail_before_starttls() {
    let certs = certs::make();
    let (moat, _sink) = Moat::builder()
        .tls(&certs)
        .with(|c| c.tls.required_on = c.server.listen.clone())
        .start_with_sink()
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let r = c.cmd("MAIL FROM:<a@example.test>").await;
    assert_eq!((r.code, r.enhanced()), (530, Some("5.7.0")), "{r:?}");
    assert_eq!(c.cmd("STARTTLS").await.code, 220);
    c.tls_handshake(&certs.ca_der).await;
    c.ehlo().await;
    c.expect_message(
        "a@example.test",
        &["b@example.test"],
        b"From: <a@example.test>\r\nSubject: tls\r\n\r\nok\r\n",
        "250",
    )
    .await;
}

/// A sink that offers STARTTLS with `served`'s certificate, and a moat that requires STARTTLS
/// upstream and verifies it against `trusted`'s CA for the name moat.test.
async fn upstream_with_tls(served: &certs::TestCerts, trusted: &certs::TestCerts) -> (Moat, Sink) {
    let (server_tls, _) =
        moat::net::tls::server_config(&served.cert, &served.key, &[]).expect("server config");
    let sink = Sink::with(SinkOptions {
        tls: Some(server_tls),
        ..Default::default()
    })
    .await;
    let ca = trusted.ca.clone();
    let moat = Moat::builder()
        .upstream(&sink)
        .with(|c| {
            c.upstream.starttls = true;
            c.upstream.tls_ca = Some(ca);
            c.upstream.tls_server_name = Some("moat.test".into());
        })
        .start()
        .await;
    (moat, sink)
}

#[tokio::test(flavor = "multi_thread")]
async fn starttls_to_the_upstream_verified_against_a_ca() {
    let certs = certs::make();
    let (moat, sink) = upstream_with_tls(&certs, &certs).await;
    let mut c = moat.client().await;
    c.ehlo().await;
    c.expect_message(
        "a@example.test",
        &["b@example.test"],
        b"From: <a@example.test>\r\nSubject: hop\r\n\r\nx\r\n",
        "250",
    )
    .await;
    let msg = &sink.messages()[0];
    assert!(msg.tls.is_some(), "upstream hop not encrypted");
    assert!(msg.xclient.is_some(), "XCLIENT must follow STARTTLS");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_tls_failures_are_tempfails() {
    // Required STARTTLS but the upstream does not offer it.
    let certs = certs::make();
    let (moat, _sink) = Moat::builder()
        .with(|c| {
            c.upstream.starttls = true;
            c.upstream.tls_verify = false;
        })
        .start_with_sink()
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let r = c.cmd("MAIL FROM:<a@example.test>").await;
    assert_eq!((r.code, r.enhanced()), (451, Some("4.4.1")), "{r:?}");
    // A certificate that does not match the name to verify.
    let (moat, sink) = upstream_with_tls(&certs::make(), &certs).await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let r = c.cmd("MAIL FROM:<a@example.test>").await;
    assert_eq!((r.code, r.enhanced()), (451, Some("4.4.1")), "{r:?}");
    assert!(sink.count("MAIL") == 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_reload_serves_the_new_one_and_keeps_sessions() {
    let (a, b) = (certs::make(), certs::make());
    // moat reads its certificate from files the test replaces: first copies of A's.
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(&a.cert, &cert).expect("copy");
    std::fs::copy(&a.key, &key).expect("copy");
    let sink = Sink::start().await;
    let (c2, k2) = (cert.clone(), key.clone());
    let moat = Moat::builder()
        .upstream(&sink)
        .with(move |c| {
            c.tls.cert = Some(c2);
            c.tls.key = Some(k2);
        })
        .start()
        .await;
    let mut old = moat.client().await;
    old.ehlo().await;
    assert_eq!(old.cmd("STARTTLS").await.code, 220);
    old.tls_handshake(&a.ca_der).await;
    old.ehlo().await;

    std::fs::copy(&b.cert, &cert).expect("copy");
    std::fs::copy(&b.key, &key).expect("copy");
    let handle = moat.server().server_cert().expect("TLS configured").clone();
    handle.reload().expect("reload");
    let mut new = moat.client().await;
    new.ehlo().await;
    assert_eq!(new.cmd("STARTTLS").await.code, 220);
    new.tls_handshake(&b.ca_der).await; // panics unless B's CA verifies it
                                        // The session encrypted before the reload goes on.
    old.expect_message(
        "a@example.test",
        &["b@example.test"],
        b"From: <a@example.test>\r\nSubject: old\r\n\r\nstill here\r\n",
        "250",
    )
    .await;

    // A broken file: the reload fails with the file named, and B stays in service.
    std::fs::write(&cert, b"not a certificate").expect("write");
    let err = handle.reload().expect_err("broken file");
    assert!(err.to_string().contains("cert.pem"), "{err}");
    let mut again = moat.client().await;
    again.ehlo().await;
    assert_eq!(again.cmd("STARTTLS").await.code, 220);
    again.tls_handshake(&b.ca_der).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_chooses_the_certificate_for_the_name_asked() {
    let default = certs::make();
    let other = certs::make_for(&["mx2.other.test"]);
    let sink = Sink::start().await;
    let (cert, key) = (other.cert.clone(), other.key.clone());
    let moat = Moat::builder()
        .upstream(&sink)
        .tls(&default)
        .with(move |c| {
            c.tls.sni = vec![moat::config::SniCert {
                names: vec!["MX2.other.test".into()],
                cert,
                key,
            }]
        })
        .start()
        .await;
    // The listed name gets its own certificate (verified against its own CA)...
    let mut c = moat.client().await;
    c.ehlo().await;
    assert_eq!(c.cmd("STARTTLS").await.code, 220);
    c.tls_handshake_as("mx2.other.test", &other.ca_der).await;
    c.ehlo().await;
    // ...any other name the default one.
    let mut d = moat.client().await;
    d.ehlo().await;
    assert_eq!(d.cmd("STARTTLS").await.code, 220);
    d.tls_handshake_as("moat.test", &default.ca_der).await;
    d.ehlo().await;
}
