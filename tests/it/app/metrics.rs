//! The metrics and health endpoint, scraped over loopback after real traffic.

use crate::support::alone::{alone, run_alone_tests, value};
use crate::support::{crlf, Moat};
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

/// Every test that reads the process-wide registry, in a process of their own and one at a
/// time (`support::alone`), so each counts exactly its own traffic.
#[test]
fn tests_reading_metrics_run_alone() {
    run_alone_tests();
}

/// The series the traffic below moves, and by how much.
const MOVED: &[(&str, f64)] = &[
    ("moat_sessions_total{result=\"accepted\"}", 1.0),
    (
        "moat_transactions_total{action=\"accept\",stage=\"data\"}",
        1.0,
    ),
    (
        "moat_transactions_total{action=\"reject\",stage=\"data\"}",
        1.0,
    ),
    // MAIL, RCPT and DATA of the first message; MAIL and RCPT of the refused one.
    ("moat_upstream_replies_total{class=\"2xx\"}", 5.0),
    ("moat_messages_received_total", 2.0),
    ("moat_rule_hits_total{rule=\"GTUBE\"}", 1.0),
    ("moat_check_duration_seconds_count{check=\"rules\"}", 2.0),
    ("moat_message_score_count", 2.0),
];

#[tokio::test(flavor = "multi_thread")]
#[ignore = "reads the metrics registry: run alone by app::metrics::tests_reading_metrics_run_alone"]
async fn alone_metrics_and_health_after_traffic() {
    if !alone() {
        return;
    }
    let (moat, _sink) = Moat::builder()
        .with(|c| c.metrics.listen = "127.0.0.1:0".into())
        .start_with_sink()
        .await;
    let addr = moat.server().metrics_addr().expect("metrics on");
    let (_, before) = get(addr, "/metrics").await;
    let mut c = moat.client().await;
    c.ehlo().await;
    c.expect_message(
        "a@example.test",
        &["b@rcpt.test"],
        &crlf("From: a@example.test\nSubject: hi\n\nhello\n"),
        "250",
    )
    .await;
    let gtube = crlf("From: a@example.test\nSubject: t\n\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n");
    assert_eq!(
        c.send_message("a@example.test", &["b@rcpt.test"], &gtube)
            .await
            .code,
        550
    );

    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for (series, moved) in MOVED {
        assert_eq!(
            value(&body, series) - value(&before, series),
            *moved,
            "{series} in:\n{body}"
        );
    }
    let has = |prefix: &str, parts: &[&str]| {
        body.lines()
            .any(|l| l.starts_with(prefix) && parts.iter().all(|p| l.contains(p)))
    };
    // mail-auth's lookups, metered through its cache hook: reverse DNS at connect, SPF at MAIL.
    assert!(
        has(
            "moat_dns_lookups_total{",
            &["zone=\"iprev\"", "type=\"PTR\""]
        ),
        "{body}"
    );
    assert!(
        has("moat_dns_lookups_total{", &["zone=\"spf\"", "type=\"TXT\""]),
        "{body}"
    );
    assert!(
        has("moat_dns_lookup_duration_seconds_count{", &["zone=\"spf\""]),
        "{body}"
    );
    assert!(has("moat_ruleset_info{hash=", &["} 1"]), "{body}");
    promtool_check(&body);
    // Bounded labels: no addresses or domains among the label values.
    assert!(
        !body.contains("example.test") && !body.contains("127.0.0.1"),
        "{body}"
    );
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 200);
    assert_eq!(get(addr, "/nope").await.0, 404);
}

/// `promtool check metrics` on a real scrape: the exposition format and the naming conventions
/// (units, `_total` counters). CI installs promtool (Debian's prometheus package); elsewhere the
/// check is skipped with a note, since the scrape itself was already checked above.
fn promtool_check(body: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("promtool not runnable ({e}); skipping `promtool check metrics`");
            return;
        }
        Err(e) => panic!("CI must have promtool (apt-get install prometheus): {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
