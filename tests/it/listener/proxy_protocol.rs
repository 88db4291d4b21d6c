//! PROXY protocol listeners: v1 and v2 headers from a trusted balancer name the client that
//! every check and XCLIENT then use; v2 LOCAL keeps the socket's addresses; a malformed header
//! or an untrusted source gets the connection closed before any greeting.

use crate::support::client::Client;
use crate::support::{crlf, Moat, Sink};
use std::time::Duration;
use tokio::io::AsyncReadExt;

const SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

async fn behind_balancer(sink: &Sink, trusted: &str) -> Moat {
    let trusted = trusted.to_string();
    Moat::builder()
        .upstream(sink)
        .with(move |c| {
            c.server.proxy_protocol = c.server.listen.clone();
            c.server.proxy_trusted = vec![trusted];
        })
        .start()
        .await
}

/// Sends one message over `c` and returns the XCLIENT line the sink saw for it.
async fn deliver(c: &mut Client, sink: &Sink, from: &str) -> (String, String) {
    c.ehlo().await;
    c.expect_message(
        from,
        &["b@example.test"],
        &crlf(&format!("From: {from}\nSubject: s\n\nhello\n")),
        "250",
    )
    .await;
    let m = sink.messages().pop().expect("delivered");
    (
        m.xclient.unwrap_or_default(),
        String::from_utf8_lossy(&m.body).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_header_names_the_client_for_checks_and_xclient() {
    let sink = Sink::start().await;
    let moat = behind_balancer(&sink, "127.0.0.0/8").await;
    let mut c =
        Client::connect_with_preface(moat.addr, b"PROXY TCP4 192.0.2.1 198.51.100.2 4711 25\r\n")
            .await;
    assert_eq!(c.greeting.code, 220, "{:?}", c.greeting);
    // fail.spf.test allows only 192.0.2.1: a pass shows SPF ran for the carried address.
    let (xclient, body) = deliver(&mut c, &sink, "a@fail.spf.test").await;
    assert!(xclient.contains("ADDR=192.0.2.1 PORT=4711"), "{xclient}");
    assert!(body.contains("spf=pass"), "{body}");
    assert!(
        body.contains("[192.0.2.1]"),
        "Received names the client: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_headers_tcp4_tcp6_and_local() {
    let sink = Sink::start().await;
    let moat = behind_balancer(&sink, "127.0.0.1").await;
    let mut v4 = SIG.to_vec();
    v4.extend_from_slice(&[
        0x21, 0x11, 0, 12, 192, 0, 2, 9, 198, 51, 100, 2, 0x12, 0x67, 0, 25,
    ]);
    let mut c = Client::connect_with_preface(moat.addr, &v4).await;
    assert_eq!(c.greeting.code, 220);
    let (xclient, _) = deliver(&mut c, &sink, "a@example.test").await;
    assert!(xclient.contains("ADDR=192.0.2.9 PORT=4711"), "{xclient}");

    let mut v6 = SIG.to_vec();
    v6.extend_from_slice(&[0x21, 0x21, 0, 36]);
    let src: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
    let dst: std::net::Ipv6Addr = "2001:db8::25".parse().unwrap();
    v6.extend_from_slice(&src.octets());
    v6.extend_from_slice(&dst.octets());
    v6.extend_from_slice(&[0x12, 0x67, 0, 25]);
    let mut c = Client::connect_with_preface(moat.addr, &v6).await;
    assert_eq!(c.greeting.code, 220);
    let (xclient, _) = deliver(&mut c, &sink, "a@example.test").await;
    assert!(xclient.contains("2001:db8::7"), "{xclient}");

    // LOCAL: the balancer's own health check; the socket's address stays the client.
    let mut local = SIG.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let mut c = Client::connect_with_preface(moat.addr, &local).await;
    assert_eq!(c.greeting.code, 220);
    let (xclient, _) = deliver(&mut c, &sink, "a@example.test").await;
    assert!(xclient.contains("ADDR=127.0.0.1"), "{xclient}");
}

/// True when moat closes the connection without a byte (no greeting).
async fn closed_silently(mut tcp: tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_headers_and_untrusted_sources_are_refused() {
    let sink = Sink::start().await;
    let moat = behind_balancer(&sink, "127.0.0.1").await;
    for bad in [
        &b"EHLO client.example\r\n"[..],
        b"PROXY TCP4 999.1.1.1 198.51.100.2 1 25\r\n",
        b"PROXY SCTP 192.0.2.1 198.51.100.2 1 25\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c",
    ] {
        let mut tcp = tokio::net::TcpStream::connect(moat.addr)
            .await
            .expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut tcp, bad)
            .await
            .expect("write");
        assert!(
            closed_silently(tcp).await,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // A source that is not a trusted balancer: closed at once, whatever it would send.
    let moat = behind_balancer(&sink, "192.0.2.0/24").await;
    let tcp = tokio::net::TcpStream::connect(moat.addr)
        .await
        .expect("connect");
    assert!(closed_silently(tcp).await);
    assert!(sink.messages().is_empty());
}
