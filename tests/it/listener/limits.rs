//! Limits and smuggling: sizes, recipients, line lengths, bare CR/LF, session counts. In every
//! refusal nothing reaches the upstream.

use crate::support::{crlf, Moat};

#[tokio::test(flavor = "multi_thread")]
async fn declared_size_over_the_limit_is_refused_at_mail() {
    let (moat, sink) = Moat::builder()
        .with(|c| c.limits.max_message_size = 10_000)
        .start_with_sink()
        .await;
    let mut c = moat.client().await;
    let ehlo = c.ehlo().await;
    assert!(ehlo.contains("SIZE 10000"), "{ehlo:?}");
    let r = c.cmd("MAIL FROM:<a@example.test> SIZE=10001").await;
    assert_eq!((r.code, r.enhanced()), (552, Some("5.3.4")), "{r:?}");
    assert!(sink.count("MAIL") == 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn data_over_the_limit_is_read_refused_and_not_forwarded() {
    let (moat, sink) = Moat::builder()
        .with(|c| c.limits.max_message_size = 10_000)
        .start_with_sink()
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let line = format!("{}\r\n", "y".repeat(98));
    let big = line.repeat(200); // 20,000 octets
    let r = c
        .send_message("a@example.test", &["b@example.test"], big.as_bytes())
        .await;
    assert_eq!((r.code, r.enhanced()), (552, Some("5.3.4")), "{r:?}");
    assert!(sink.messages().is_empty());
    // The transaction is over on both sides; a new one works.
    assert!(
        sink.commands().contains(&"RSET".to_string()),
        "{:?}",
        sink.commands()
    );
    c.expect_message("a@example.test", &["b@example.test"], b"small\r\n", "250")
        .await;
    assert_eq!(sink.messages().len(), 1);
    // BDAT over the limit: refused at the chunk that crosses it.
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.test>").await.code, 250);
    let chunk = big.as_bytes();
    c.send(format!("BDAT {}\r\n", chunk.len()).as_bytes()).await;
    c.send(chunk).await;
    let r = c.read_reply().await;
    assert_eq!((r.code, r.enhanced()), (552, Some("5.3.4")), "{r:?}");
    c.send(b"BDAT 3 LAST\r\nend").await;
    assert_eq!(c.read_reply().await.code, 503);
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_recipients() {
    let (moat, sink) = Moat::builder()
        .with(|c| c.limits.max_recipients = 3)
        .start_with_sink()
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").await.code, 250);
    for i in 0..3 {
        assert_eq!(
            c.cmd(&format!("RCPT TO:<r{i}@example.test>")).await.code,
            250
        );
    }
    let r = c.cmd("RCPT TO:<r4@example.test>").await;
    assert_eq!((r.code, r.enhanced()), (452, Some("4.5.3")), "{r:?}");
    let r = c.cmd("DATA").await;
    assert_eq!(r.code, 354);
    c.send(b"x\r\n.\r\n").await;
    assert_eq!(c.read_reply().await.code, 250);
    assert_eq!(sink.messages()[0].rcpts.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn overlong_text_line_refuses_the_message() {
    let (moat, sink) = Moat::builder().start_with_sink().await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let mut body = crlf("Subject: long\n\n");
    body.extend(std::iter::repeat_n(b'z', 999));
    body.extend_from_slice(b"\r\n");
    let r = c
        .send_message("a@example.test", &["b@example.test"], &body)
        .await;
    assert_eq!((r.code, r.enhanced()), (550, Some("5.5.2")), "{r:?}");
    assert!(sink.messages().is_empty());
    assert_eq!(c.cmd("NOOP").await.code, 250);
}

/// SMTP smuggling (CVE-2023-51764 class): a bare-LF or bare-CR "end of data" followed by a
/// second transaction must never produce a second message upstream. moat refuses the whole
/// thing with 5xx and forwards nothing.
#[tokio::test(flavor = "multi_thread")]
async fn smuggling_with_bare_lf_or_cr_forwards_nothing() {
    let (moat, sink) = Moat::builder().start_with_sink().await;
    let endings: &[&[u8]] = &[b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r"];
    for ending in endings {
        let mut c = moat.client().await;
        c.ehlo().await;
        assert_eq!(c.cmd("MAIL FROM:<a@example.test>").await.code, 250);
        assert_eq!(c.cmd("RCPT TO:<b@example.test>").await.code, 250);
        assert_eq!(c.cmd("DATA").await.code, 354);
        let mut payload = b"Subject: innocent\r\n\r\nhello".to_vec();
        payload.extend_from_slice(ending);
        payload.extend_from_slice(
            b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n",
        );
        c.send(&payload).await;
        let r = c.read_reply().await;
        assert_eq!(
            (r.code, r.enhanced()),
            (550, Some("5.5.2")),
            "ending {ending:?}: {r:?}"
        );
        assert!(
            sink.messages().is_empty(),
            "ending {ending:?}: the sink got {:?}",
            sink.messages()
        );
        assert!(
            !sink.commands().iter().any(|l| l.contains("victim")),
            "ending {ending:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bare_lf_in_commands_is_refused() {
    let (moat, sink) = Moat::builder().start_with_sink().await;
    let mut c = moat.client().await;
    c.ehlo().await;
    c.send(b"MAIL FROM:<a@example.test>\nRCPT TO:<b@example.test>\r\n")
        .await;
    let r = c.read_reply().await;
    assert_eq!((r.code, r.enhanced()), (500, Some("5.5.2")), "{r:?}");
    // The second line is framed correctly and is judged on its own: no MAIL, so 503.
    assert_eq!(c.read_reply().await.code, 503);
    c.send(b"NOOP\rRSET\r\n").await;
    assert_eq!(c.read_reply().await.code, 500);
    assert!(sink.count("MAIL") == 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn session_limits_give_421() {
    let (moat, _sink) = Moat::builder()
        .with(|c| {
            c.server.max_sessions_per_ip = 2;
            c.server.max_sessions = 3;
        })
        .start_with_sink()
        .await;
    let a = moat.client().await;
    let b = moat.client().await;
    let mut third = moat.client().await;
    assert_eq!(third.greeting.code, 421, "{:?}", third.greeting);
    assert_eq!(third.greeting.enhanced(), Some("4.7.0"));
    assert!(third.is_closed().await);
    drop(a);
    drop(b);
    // Slots are freed when sessions end.
    let mut again = None;
    for _ in 0..100 {
        let c = moat.client().await;
        if c.greeting.code == 220 {
            again = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "slots were not released");
}

#[tokio::test(flavor = "multi_thread")]
async fn global_session_limit() {
    let (moat, _sink) = Moat::builder()
        .with(|c| {
            c.server.max_sessions_per_ip = 10;
            c.server.max_sessions = 2;
        })
        .start_with_sink()
        .await;
    let _a = moat.client().await;
    let _b = moat.client().await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let tcp = socket.connect(moat.addr).await.unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut { tcp }, &mut buf),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        buf[..n].starts_with(b"421 4.7.0"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_message_data_is_cut_off() {
    let sink = crate::support::Sink::start().await;
    let moat = crate::support::Moat::builder()
        .upstream(&sink)
        .with(|c| {
            c.limits.min_data_rate = 1000;
            c.limits.min_data_rate_grace =
                moat::config::ConfigDuration(std::time::Duration::from_secs(1));
        })
        .start()
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.test>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    // A slowloris: 10 octets every 200 ms is 50 octets per second, far under 1000.
    let mut reply = None;
    for _ in 0..40 {
        c.send(b"Subject: x\r\n").await;
        if let Ok(Some(r)) =
            tokio::time::timeout(std::time::Duration::from_millis(200), c.try_read_reply()).await
        {
            reply = Some(r);
            break;
        }
    }
    let r = reply.expect("moat answers before the slow client finishes");
    assert_eq!((r.code, r.enhanced()), (421, Some("4.4.2")), "{r:?}");
    assert!(c.is_closed().await);
    assert!(sink.messages().is_empty(), "nothing forwarded");
}
