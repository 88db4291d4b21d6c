//! The metrics and health endpoint, scraped over loopback after real traffic.

use crate::support::{crlf, Moat, Sink};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: moat\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tcp.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

fn value(body: &str, series: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_health_after_traffic() {
    let sink = Sink::start().await;
    let moat = Moat::builder()
        .upstream(&sink)
        .with(|c| c.metrics.listen = "127.0.0.1:0".into())
        .start()
        .await;
    let addr = moat.server().metrics_addr().expect("metrics on");
    let mut c = moat.client().await;
    c.ehlo().await;
    let r = c
        .send_message(
            "a@example.test",
            &["b@rcpt.test"],
            &crlf("From: a@example.test\nSubject: hi\n\nhello\n"),
        )
        .await;
    assert_eq!(r.code, 250);
    let gtube = crlf("From: a@example.test\nSubject: t\n\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n");
    assert_eq!(
        c.send_message("a@example.test", &["b@rcpt.test"], &gtube)
            .await
            .code,
        550
    );

    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for (series, at_least) in [
        ("moat_sessions_total{result=\"accepted\"}", 1.0),
        (
            "moat_transactions_total{action=\"accept\",stage=\"data\"}",
            1.0,
        ),
        (
            "moat_transactions_total{action=\"reject\",stage=\"data\"}",
            1.0,
        ),
        ("moat_upstream_replies_total{class=\"2xx\"}", 3.0),
        ("moat_messages_received_total", 2.0),
        ("moat_rule_hits_total{rule=\"GTUBE\"}", 1.0),
        ("moat_check_duration_seconds_count{check=\"rules\"}", 2.0),
        ("moat_message_score_count", 2.0),
    ] {
        assert!(
            value(&body, series) >= at_least,
            "{series} below {at_least} in:\n{body}"
        );
    }
    // Bounded labels: no addresses or domains among the label values.
    assert!(
        !body.contains("example.test") && !body.contains("127.0.0.1"),
        "{body}"
    );
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 200);
    assert_eq!(get(addr, "/nope").await.0, 404);
}
