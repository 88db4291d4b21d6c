//! moat's own replies: every command, syntax and sequence errors, each with an enhanced code.

use crate::support::{Moat, Sink};

#[tokio::test(flavor = "multi_thread")]
async fn own_replies_and_errors() {
    // Many errors in one session on purpose: no tarpit (tested below).
    let (moat, _sink) = Moat::builder()
        .with(|c| c.limits.tarpit_after_errors = 0)
        .start_with_sink()
        .await;
    let mut c = moat.client().await;
    let cases: &[(&str, u16, &str)] = &[
        ("MAIL FROM:<a@example.test>", 503, "5.5.1"),
        ("NOOP", 250, "2.0.0"),
        ("VRFY postmaster", 252, "2.5.0"),
        ("HELP", 214, "2.0.0"),
        ("FOO bar", 500, "5.5.1"),
        ("XCLIENT ADDR=10.0.0.1", 500, "5.5.1"),
        ("XFORWARD ADDR=10.0.0.1", 500, "5.5.1"),
        ("EXPN list", 502, "5.5.1"),
        ("EHLO", 501, "5.5.4"),
        ("STARTTLS", 454, "4.7.0"),
    ];
    for (line, code, enhanced) in cases {
        let r = c.cmd(line).await;
        assert_eq!(
            (r.code, r.enhanced()),
            (*code, Some(*enhanced)),
            "{line}: {r:?}"
        );
    }
    let r = c.cmd("EHLO client.test").await;
    assert_eq!(r.lines[0], "250-moat.test Hello client.test");
    let cases: &[(&str, u16, &str)] = &[
        ("RCPT TO:<b@example.test>", 503, "5.5.1"),
        ("DATA", 503, "5.5.1"),
        ("MAIL FROM:a@example.test", 501, "5.5.4"),
        ("MAIL FROM:<a@example.test> FROB=1", 555, "5.5.4"),
        ("MAIL FROM:<a@example.test>", 250, "2.1.0"),
        ("MAIL FROM:<a@example.test>", 503, "5.5.1"),
        ("RCPT TO:<>", 501, "5.1.3"),
        ("RCPT TO:b@example.test", 501, "5.5.4"),
        ("RSET", 250, "2.0.0"),
        ("RCPT TO:<b@example.test>", 503, "5.5.1"),
        ("HELO client.test", 250, ""),
    ];
    for (line, code, enhanced) in cases {
        let r = c.cmd(line).await;
        assert_eq!(r.code, *code, "{line}: {r:?}");
        if !enhanced.is_empty() {
            assert_eq!(r.enhanced(), Some(*enhanced), "{line}: {r:?}");
        }
    }
    assert_eq!(c.cmd("QUIT").await.code, 221);
    assert!(c.is_closed().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_errors_close_the_session() {
    let (moat, _sink) = Moat::builder()
        .with(|c| c.limits.max_errors = 3)
        .start_with_sink()
        .await;
    let mut c = moat.client().await;
    assert_eq!(c.cmd("BOGUS").await.code, 500);
    assert_eq!(c.cmd("BOGUS").await.code, 500);
    c.send(b"BOGUS\r\n").await;
    assert_eq!(c.read_reply().await.code, 500);
    let r = c.read_reply().await;
    assert_eq!((r.code, r.enhanced()), (421, Some("4.7.0")), "{r:?}");
    assert!(c.is_closed().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn tarpit_slows_replies_after_repeated_errors() {
    let sink = Sink::start().await;
    let delay = std::time::Duration::from_millis(300);
    let moat = Moat::builder()
        .upstream(&sink)
        .with(move |c| {
            c.limits.tarpit_after_errors = 2;
            c.limits.tarpit_delay = moat::config::ConfigDuration(delay);
        })
        .start()
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    assert_eq!(c.cmd("BOGUS").await.code, 500);
    // The second error reaches the limit: from its reply on, every reply waits the delay
    // (only a lower bound is asserted: a sleep is never shorter).
    let t = std::time::Instant::now();
    assert_eq!(c.cmd("BOGUS").await.code, 500);
    assert_eq!(c.cmd("NOOP").await.code, 250);
    assert!(t.elapsed() >= delay * 2, "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn new_sessions_per_ip_per_minute_are_limited() {
    let (moat, _sink) = Moat::builder()
        .with(|c| c.server.max_new_sessions_per_ip_per_minute = 3)
        .start_with_sink()
        .await;
    for _ in 0..3 {
        let mut c = crate::support::Client::connect_from(moat.addr, "127.0.0.7").await;
        assert_eq!(c.greeting.code, 220);
        c.cmd("QUIT").await;
    }
    let c = crate::support::Client::connect_from(moat.addr, "127.0.0.7").await;
    assert_eq!(
        (c.greeting.code, c.greeting.enhanced()),
        (421, Some("4.7.0")),
        "{:?}",
        c.greeting
    );
    // Another address has its own count.
    let c = crate::support::Client::connect_from(moat.addr, "127.0.0.8").await;
    assert_eq!(c.greeting.code, 220);
}

#[tokio::test(flavor = "multi_thread")]
async fn overlong_command_line_is_refused_and_skipped() {
    let (moat, _sink) = Moat::builder().start_with_sink().await;
    let mut c = moat.client().await;
    // 512 octets including CRLF is the limit (RFC 5321 4.5.3.1.4).
    let ok = format!("NOOP {}", "x".repeat(512 - 2 - 5));
    assert_eq!(c.cmd(&ok).await.code, 250);
    let long = format!("NOOP {}", "x".repeat(5000));
    let r = c.cmd(&long).await;
    assert_eq!((r.code, r.enhanced()), (500, Some("5.5.2")), "{r:?}");
    // The rest of the long line was skipped; the session goes on.
    assert_eq!(c.cmd("NOOP").await.code, 250);
}
