//! XFORWARD from a trusted forwarder (Postfix's `smtpd_proxy_filter` sends it): the forwarded
//! client becomes the client of every check and of what moat announces upstream. From anyone
//! else XFORWARD is an unknown command.

use crate::support::Moat;

/// The whole (unfolded) header field starting with `name`.
fn header(body: &str, name: &str) -> String {
    let lines: Vec<&str> = body.split("\r\n").collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {body}"));
    let mut field = lines[start].to_string();
    for l in &lines[start + 1..] {
        if !l.starts_with([' ', '\t']) {
            break;
        }
        field.push_str(l);
    }
    field
}

#[tokio::test(flavor = "multi_thread")]
async fn trusted_forwarder_names_the_client() {
    let (moat, sink) = Moat::builder()
        .with(|c| c.server.xforward_hosts = vec!["127.0.0.0/8".into()])
        .start_with_sink()
        .await;
    let mut c = moat.client().await;
    let ehlo = c.cmd("EHLO postfix-front.example").await;
    assert!(
        ehlo.lines.iter().any(|l| l.contains("XFORWARD NAME ADDR")),
        "{ehlo:?}"
    );
    // Postfix splits attributes over several commands when they do not fit in one line.
    let r = c
        .cmd("XFORWARD NAME=client.rdns.test ADDR=192.0.2.1 PORT=4711 PROTO=ESMTP")
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let r = c
        .cmd("XFORWARD HELO=client.rdns.test IDENT=4dXyZ SOURCE=REMOTE DOMAIN=REMOTE")
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    // fail.spf.test allows only 192.0.2.1: a pass shows SPF ran for the forwarded address.
    c.expect_message(
        "a@fail.spf.test",
        &["b@example.test"],
        b"From: a@fail.spf.test\r\nSubject: via the front\r\n\r\nhello\r\n",
        "250",
    )
    .await;
    let m = &sink.messages()[0];
    let xclient = m.xclient.clone().expect("XCLIENT sent");
    assert_eq!(
        xclient,
        "XCLIENT ADDR=192.0.2.1 PORT=4711 NAME=client.rdns.test HELO=client.rdns.test PROTO=ESMTP"
    );
    let body = String::from_utf8_lossy(&m.body);
    let ar = header(&body, "Authentication-Results:");
    assert!(ar.contains("spf=pass") && ar.contains("iprev=pass"), "{ar}");
    assert!(header(&body, "Received:").contains("[192.0.2.1]"), "{body}");

    // Not inside a transaction.
    assert_eq!(c.cmd("MAIL FROM:<a@fail.spf.test>").await.code, 250);
    assert_eq!(c.cmd("XFORWARD ADDR=192.0.2.3").await.code, 503);
    assert_eq!(c.cmd("RSET").await.code, 250);
    // Malformed attributes are a syntax error.
    assert_eq!(c.cmd("XFORWARD ADDR=not-an-ip").await.code, 501);
    assert_eq!(c.cmd("XFORWARD COLOUR=red").await.code, 501);
}

#[tokio::test(flavor = "multi_thread")]
async fn xforward_from_anyone_else_is_unknown() {
    let (moat, sink) = Moat::builder()
        .with(|c| c.server.xforward_hosts = vec!["192.0.2.0/24".into()])
        .start_with_sink()
        .await;
    let mut c = moat.client().await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(!ehlo.lines.iter().any(|l| l.contains("XFORWARD")));
    assert_eq!(c.cmd("XFORWARD ADDR=192.0.2.1").await.code, 500);
    // And the session's client did not change: SPF for 192.0.2.1 only fails from 127.0.0.1.
    c.expect_message(
        "a@fail.spf.test",
        &["b@example.test"],
        b"From: a@fail.spf.test\r\nSubject: direct\r\n\r\nhello\r\n",
        "250",
    )
    .await;
    let body = String::from_utf8_lossy(&sink.messages()[0].body).into_owned();
    assert!(
        header(&body, "Authentication-Results:").contains("spf=fail"),
        "{body}"
    );
}

#[test]
fn bad_xforward_hosts_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moat.toml");
    std::fs::write(&path, "[server]\nxforward_hosts = [\"127.0.0.1/40\"]\n").unwrap();
    let err = moat::config::Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("server.xforward_hosts"), "{err}");
}
