//! The core relay: bodies arrive byte-identical, pipelining keeps order, the upstream's replies
//! and parameters pass through, XCLIENT carries the real client.

use crate::support::{crlf, split_prepended, Moat, Sink, SinkOptions};

#[tokio::test(flavor = "multi_thread")]
async fn body_arrives_byte_identical() {
    let (moat, sink) = Moat::builder().start_with_sink().await;
    let mut c = moat.client().await;
    assert_eq!(c.greeting.code, 220);
    assert_eq!(c.greeting.lines[0], "220 moat.test ESMTP moat");
    c.ehlo().await;
    // Lines that start with dots (stuffed on the wire), a 998-octet line, 8-bit octets, an
    // empty line and trailing whitespace.
    let mut body = crlf(
        "From: a@example.test\nTo: b@example.test\nSubject: test\n\n.\n..two dots\n.leading\n",
    );
    body.extend(std::iter::repeat_n(b'x', 998));
    body.extend_from_slice(b"\r\n");
    body.extend_from_slice(&[0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xFF, b'\r', b'\n']);
    body.extend_from_slice(b"trailing space   \r\n\r\nend\r\n");
    let r = c
        .expect_message("a@example.test", &["b@example.test"], &body, "250")
        .await;
    // The client hears the upstream's own final reply, queue id included.
    assert!(r.contains("queued as SINK1"), "{r:?}");
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    let added = split_prepended(&msgs[0].body, &body);
    assert!(
        added.contains("by moat.test (moat) with ESMTP id "),
        "{added}"
    );
    assert!(
        added.contains("Authentication-Results: moat.test;"),
        "{added}"
    );
    assert_eq!(msgs[0].mail, "MAIL FROM:<a@example.test>");
    assert_eq!(msgs[0].rcpts, vec!["RCPT TO:<b@example.test>"]);
    // A second transaction in the same session.
    c.expect_message(
        "",
        &["b@example.test"],
        b"From: <a@example.test>\r\nSubject: two\r\n\r\nsecond\r\n",
        "250",
    )
    .await;
    assert_eq!(sink.messages().len(), 2);
    assert_eq!(sink.messages()[1].mail, "MAIL FROM:<>");
    assert_eq!(c.cmd("QUIT").await.code, 221);
    assert!(c.is_closed().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_body_is_relayed() {
    let (moat, sink) = Moat::builder().start_with_sink().await;
    let mut c = moat.client().await;
    c.ehlo().await;
    c.expect_message("a@example.test", &["b@example.test"], b"", "250")
        .await;
    split_prepended(&sink.messages()[0].body, b"");
}

#[tokio::test(flavor = "multi_thread")]
async fn full_pipelining_gets_replies_in_order() {
    let (moat, sink) = Moat::builder().start_with_sink().await;
    let mut c = moat.client().await;
    c.ehlo().await;
    c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<reject@example.test>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n").await;
    let codes: Vec<u16> = [(); 5].iter().map(|_| 0).collect();
    let mut got = Vec::new();
    for _ in codes {
        got.push(c.read_reply().await);
    }
    let codes: Vec<u16> = got.iter().map(|r| r.code).collect();
    assert_eq!(codes, vec![250, 250, 550, 250, 354], "{got:?}");
    c.send(b"From: <a@example.test>\r\nSubject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        .await;
    let r = c.read_reply().await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.read_reply().await.code, 221);
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].rcpts.len(), 2);
    split_prepended(
        &msgs[0].body,
        b"From: <a@example.test>\r\nSubject: pipelined\r\n\r\nbody\r\n",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn per_recipient_refusals_are_relayed_exactly() {
    let (moat, sink) = Moat::builder().start_with_sink().await;
    let mut c = moat.client().await;
    c.ehlo().await;
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").await.code, 250);
    let r = c.cmd("RCPT TO:<reject@example.test>").await;
    assert_eq!(
        r.lines,
        vec!["550 5.1.1 <reject@example.test>: Recipient address rejected: User unknown"]
    );
    let r = c.cmd("RCPT TO:<defer@example.test>").await;
    assert_eq!(r.code, 450);
    assert_eq!(r.enhanced(), Some("4.2.0"));
    // An upstream reply without an enhanced code gets a generic one (RFC 2034).
    let r = c.cmd("RCPT TO:<noenhanced@example.test>").await;
    assert_eq!(r.lines, vec!["550 5.0.0 no such user here"]);
    // No recipient accepted: DATA is refused and nothing is read as mail.
    let r = c.cmd("DATA").await;
    assert_eq!((r.code, r.enhanced()), (554, Some("5.5.1")), "{r:?}");
    assert_eq!(c.cmd("RCPT TO:<ok@example.test>").await.code, 250);
    let r = c.cmd("DATA").await;
    assert_eq!(r.code, 354);
    c.send(b"x\r\n.\r\n").await;
    assert_eq!(c.read_reply().await.code, 250);
    assert_eq!(sink.messages()[0].rcpts, vec!["RCPT TO:<ok@example.test>"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_refusal_by_upstream_is_relayed() {
    let (moat, _sink) = Moat::builder().start_with_sink().await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let r = c.cmd("MAIL FROM:<mailfail@example.test>").await;
    assert_eq!((r.code, r.enhanced()), (451, Some("4.3.0")), "{r:?}");
    // The transaction did not open: RCPT is out of sequence.
    assert_eq!(c.cmd("RCPT TO:<b@example.test>").await.code, 503);
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").await.code, 250);
}

#[tokio::test(flavor = "multi_thread")]
async fn parameters_pass_through_unchanged() {
    // Without the pool, the client's QUIT ends the upstream session too.
    let (moat, sink) = Moat::builder()
        .with(|c| c.upstream.pool_size = 0)
        .start_with_sink()
        .await;
    let mut c = moat.client().await;
    let ehlo = c.ehlo().await;
    for kw in [
        "PIPELINING",
        "SIZE ",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "CHUNKING",
        "DSN",
    ] {
        assert!(ehlo.contains(kw), "{kw} missing: {ehlo:?}");
    }
    assert!(
        !ehlo.contains("STARTTLS"),
        "no certificate, no STARTTLS: {ehlo:?}"
    );
    assert!(!ehlo.contains("XCLIENT"));
    let r = c
        .cmd("MAIL FROM:<a@example.test> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=QQ314159 SMTPUTF8")
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let r = c
        .cmd("RCPT TO:<b@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.test")
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let cmds = sink.commands();
    assert!(
        cmds.contains(
            &"MAIL FROM:<a@example.test> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=QQ314159 SMTPUTF8"
                .to_string()
        ),
        "{cmds:?}"
    );
    assert!(
        cmds.contains(
            &"RCPT TO:<b@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.test"
                .to_string()
        ),
        "{cmds:?}"
    );
    // RSET goes upstream too.
    assert_eq!(c.cmd("RSET").await.code, 250);
    assert_eq!(sink.commands().last().map(String::as_str), Some("RSET"));
    assert_eq!(c.cmd("QUIT").await.code, 221);
    assert!(c.is_closed().await);
    // QUIT is propagated when the client leaves.
    for _ in 0..50 {
        if sink.commands().last().map(String::as_str) == Some("QUIT") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("upstream never saw QUIT: {:?}", sink.commands());
}

#[tokio::test(flavor = "multi_thread")]
async fn offer_follows_the_upstream() {
    let (moat, sink) = Moat::builder()
        .start_with(SinkOptions {
            dsn: false,
            smtputf8: false,
            eight_bit: false,
            size: Some(100_000),
            ..Default::default()
        })
        .await;
    let mut c = moat.client().await;
    let ehlo = c.ehlo().await;
    assert!(ehlo.contains("250-SIZE 100000"), "{ehlo:?}");
    for kw in ["DSN", "SMTPUTF8", "8BITMIME"] {
        assert!(
            !ehlo.contains(kw),
            "{kw} offered although the upstream lacks it: {ehlo:?}"
        );
    }
    // Parameters of extensions not offered are refused, not relayed.
    let r = c.cmd("MAIL FROM:<a@example.test> RET=HDRS").await;
    assert_eq!((r.code, r.enhanced()), (555, Some("5.5.4")), "{r:?}");
    let r = c.cmd("MAIL FROM:<a@example.test> BODY=8BITMIME").await;
    assert_eq!(r.code, 555, "{r:?}");
    let r = c.cmd("MAIL FROM:<a@example.test> SMTPUTF8").await;
    assert_eq!(r.code, 555, "{r:?}");
    // SIZE is the upstream's smaller limit.
    let r = c.cmd("MAIL FROM:<a@example.test> SIZE=100001").await;
    assert_eq!((r.code, r.enhanced()), (552, Some("5.3.4")), "{r:?}");
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.test> BODY=7BIT").await.code,
        250
    );
    let r = c.cmd("RCPT TO:<b@example.test> NOTIFY=NEVER").await;
    assert_eq!(r.code, 555, "{r:?}");
    assert!(!sink
        .commands()
        .iter()
        .any(|l| l.contains("RET=") || l.contains("NOTIFY")));
}

/// Idle upstream sessions are reused by the next client, which is announced with its own
/// XCLIENT; a session the client left mid-transaction is never reused.
#[tokio::test(flavor = "multi_thread")]
async fn upstream_sessions_are_pooled_between_clients() {
    let (moat, sink) = Moat::builder().start_with_sink().await;
    let base = sink.connections();
    // The start-up probe's QUIT is already there.
    let quits = || sink.count("QUIT");
    let quits_before = quits();
    for (i, helo) in ["first.example", "second.example", "third.example"]
        .iter()
        .enumerate()
    {
        let mut c = moat.client().await;
        c.cmd(&format!("EHLO {helo}")).await;
        c.expect_message("a@example.test", &["b@example.test"], b"x\r\n", "250")
            .await;
        assert_eq!(c.cmd("QUIT").await.code, 221);
        assert!(c.is_closed().await);
        let xclient = sink.messages()[i].xclient.clone().expect("XCLIENT sent");
        assert!(xclient.contains(&format!("HELO={helo}")), "{xclient}");
        // Pooling happens after the client is closed; give it a moment.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(sink.connections() - base, 1, "{:?}", sink.commands());
    assert_eq!(quits(), quits_before);

    // A client that leaves after MAIL: that upstream session is closed, not pooled.
    let mut c = moat.client().await;
    c.ehlo().await;
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").await.code, 250);
    drop(c);
    for _ in 0..50 {
        if quits() > quits_before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(quits(), quits_before + 1);
    let mut c = moat.client().await;
    c.ehlo().await;
    c.expect_message("a@example.test", &["b@example.test"], b"y\r\n", "250")
        .await;
    assert_eq!(sink.connections() - base, 2);
}

/// An MTA with XFORWARD but no XCLIENT (the sink with `opts` otherwise), and moat set to
/// `forwarding = "xforward"` in front of it.
async fn xforward_upstream(opts: SinkOptions) -> (Sink, Moat) {
    let (moat, sink) = Moat::builder()
        .with(|c| c.upstream.forwarding = moat::config::Forwarding::Xforward)
        .start_with(SinkOptions {
            xclient: false,
            xforward: true,
            ..opts
        })
        .await;
    (sink, moat)
}

/// A client session that sends one message and quits, as a short-lived MX client does.
async fn one_message_session(moat: &Moat) {
    let mut c = moat.client().await;
    c.ehlo().await;
    c.expect_message("a@example.test", &["b@example.test"], b"x\r\n", "250")
        .await;
    assert_eq!(c.cmd("QUIT").await.code, 221);
    assert!(c.is_closed().await);
}

/// A pooled session the MTA closed while idle costs the next client nothing: moat notices at
/// the first command (XFORWARD here) and uses a new connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_pooled_session_closed_by_the_mta_is_replaced() {
    let (sink, moat) = xforward_upstream(SinkOptions {
        close_after_message: true,
        ..Default::default()
    })
    .await;
    for _ in 0..3 {
        one_message_session(&moat).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(sink.messages().len(), 3);
}

/// Postfix does not offer XCLIENT again after XCLIENT (the named client is not an authorized
/// host): those sessions are closed after use, and every client gets a session of its own.
#[tokio::test(flavor = "multi_thread")]
async fn no_pooling_when_the_mta_takes_xclient_once() {
    let (moat, sink) = Moat::builder()
        .start_with(SinkOptions {
            xclient_once: true,
            ..Default::default()
        })
        .await;
    let base = sink.connections();
    for i in 0..3 {
        one_message_session(&moat).await;
        assert!(sink.messages()[i].xclient.is_some());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(sink.connections() - base, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn xclient_carries_the_real_client() {
    let (moat, sink) = Moat::builder().start_with_sink().await;
    let mut c = moat.client().await;
    c.cmd("EHLO Client.Example").await;
    c.expect_message("a@example.test", &["b@example.test"], b"x\r\n", "250")
        .await;
    let xclient = sink.messages()[0].xclient.clone().expect("XCLIENT sent");
    let port = c.local.port();
    assert_eq!(
        xclient,
        format!(
            "XCLIENT ADDR=127.0.0.1 PORT={port} NAME=localhost HELO=Client.Example PROTO=ESMTP"
        )
    );
    // After XCLIENT the sink's new greeting is followed by a fresh EHLO with the client's own
    // HELO name, which is where Postfix takes the HELO name from.
    let cmds = sink.commands();
    let i = cmds.iter().position(|l| l.starts_with("XCLIENT")).unwrap();
    assert_eq!(cmds[i + 1], "EHLO Client.Example", "{cmds:?}");
    // A second EHLO with another name: same upstream session, announced again before MAIL.
    let connections = sink.connections();
    c.cmd("EHLO renamed.example").await;
    c.expect_message("a@example.test", &["b@example.test"], b"y\r\n", "250")
        .await;
    assert_eq!(
        sink.connections(),
        connections,
        "upstream session was not reused"
    );
    let second = sink.messages()[1].xclient.clone().unwrap();
    assert!(second.contains("HELO=renamed.example"), "{second}");
    // A third transaction with the same HELO sends no XCLIENT at all.
    let before = sink.count("XCLIENT");
    c.expect_message("a@example.test", &["b@example.test"], b"z\r\n", "250")
        .await;
    let after = sink.count("XCLIENT");
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_without_xclient_is_a_tempfail() {
    let (moat, sink) = Moat::builder()
        .start_with(SinkOptions {
            xclient: false,
            ..Default::default()
        })
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let r = c.cmd("MAIL FROM:<a@example.test>").await;
    assert_eq!((r.code, r.enhanced()), (451, Some("4.3.0")), "{r:?}");
    assert!(sink.count("MAIL") == 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn xforward_mode_for_mtas_without_xclient() {
    let (sink, moat) = xforward_upstream(SinkOptions::default()).await;
    let mut c = moat.client().await;
    c.cmd("HELO old.example").await;
    c.expect_message("a@example.test", &["b@example.test"], b"x\r\n", "250")
        .await;
    let xf = sink.messages()[0].xforward.clone().expect("XFORWARD sent");
    let want = format!(
        "XFORWARD ADDR=127.0.0.1 PORT={} NAME=localhost HELO=old.example PROTO=SMTP SOURCE=REMOTE",
        c.local.port()
    );
    assert_eq!(xf, want);
    // Postfix forgets XFORWARD after each transaction, so every MAIL is preceded by one.
    c.expect_message("a@example.test", &["b@example.test"], b"x\r\n", "250")
        .await;
    let xforwards = sink
        .commands()
        .iter()
        .filter(|l| l.starts_with("XFORWARD"))
        .count();
    assert_eq!(xforwards, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn bdat_chunks_are_relayed() {
    let (moat, sink) = Moat::builder().start_with_sink().await;
    let mut c = moat.client().await;
    c.ehlo().await;
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.test>").await.code, 250);
    // Chunks are binary: a line with a lone dot is content, not an end.
    let part1 = b"From: <a@example.test>\r\nSubject: chunks\r\n\r\n.\r\n";
    let part2 = b"..two\r\nlast line\r\n";
    c.send(format!("BDAT {}\r\n", part1.len()).as_bytes()).await;
    c.send(part1).await;
    let r = c.read_reply().await;
    assert_eq!((r.code, r.enhanced()), (250, Some("2.0.0")), "{r:?}");
    // Pipelined: the last chunk and QUIT in one write.
    let mut packet = format!("BDAT {} LAST\r\n", part2.len()).into_bytes();
    packet.extend_from_slice(part2);
    packet.extend_from_slice(b"QUIT\r\n");
    c.send(&packet).await;
    let r = c.read_reply().await;
    assert_eq!(r.code, 250, "{r:?}");
    assert!(r.contains("queued as"), "{r:?}");
    assert_eq!(c.read_reply().await.code, 221);
    let mut want = part1.to_vec();
    want.extend_from_slice(part2);
    split_prepended(&sink.messages()[0].body, &want);
}

#[tokio::test(flavor = "multi_thread")]
async fn bdat_without_recipients_is_read_and_refused() {
    let (moat, sink) = Moat::builder().start_with_sink().await;
    let mut c = moat.client().await;
    c.ehlo().await;
    // Out of sequence: the chunk is still consumed, so the next command is understood.
    c.send(b"BDAT 5 LAST\r\nhello").await;
    assert_eq!(c.read_reply().await.code, 503);
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").await.code, 250);
    c.send(b"BDAT 5 LAST\r\nhello").await;
    let r = c.read_reply().await;
    assert_eq!((r.code, r.enhanced()), (554, Some("5.5.1")), "{r:?}");
    assert_eq!(c.cmd("NOOP").await.code, 250);
    assert!(sink.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_listener_works() {
    let (moat, sink) = Moat::builder()
        .with(|c| c.server.listen = vec!["[::1]:0".into()])
        .start_with_sink()
        .await;
    assert!(moat.addr.is_ipv6());
    let mut c = moat.client().await;
    c.ehlo().await;
    c.expect_message("a@example.test", &["b@example.test"], b"v6\r\n", "250")
        .await;
    let xclient = sink.messages()[0].xclient.clone().unwrap();
    assert!(xclient.contains("ADDR=IPV6:::1 "), "{xclient}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mta_refusing_the_real_client_is_relayed() {
    let (moat, sink) = Moat::builder()
        .start_with(SinkOptions {
            refuse_client_ehlo: Some(
                "554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied".into(),
            ),
            ..Default::default()
        })
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let r = c.cmd("MAIL FROM:<a@example.test>").await;
    assert_eq!(
        r.lines,
        vec!["554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied"]
    );
    assert!(sink.count("MAIL") == 0);
}
