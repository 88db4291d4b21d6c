//! Upstream trouble at every stage ends in a 4xx (or the upstream's own refusal) and never in a
//! 2xx for a message the upstream did not accept; the client's session goes on.

use crate::support::{Moat, Sink, SinkOptions};
use moat::config::{Config, ConfigDuration};
use std::time::Duration;

/// What the client does when the fault strikes.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// MAIL FROM (the upstream session opens here).
    Mail,
    /// A whole message.
    Message,
}

/// One upstream fault: how the sink misbehaves, what moat is configured with, and what the
/// client must hear.
struct Fault {
    name: &'static str,
    sink: fn() -> SinkOptions,
    config: fn(&mut Config),
    step: Step,
    expect: &'static str,
    /// The upstream's own reply, relayed to the client as it is.
    relayed: bool,
}

fn sink_default() -> SinkOptions {
    SinkOptions::default()
}

/// A port with nothing listening: bound, then dropped.
fn dead_upstream(c: &mut Config) {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    c.upstream.address = dead.to_string();
}

fn keep(_: &mut Config) {}

const FAULTS: &[Fault] = &[
    Fault {
        name: "upstream down",
        sink: sink_default,
        config: dead_upstream,
        step: Step::Mail,
        expect: "451 4.4.1",
        relayed: false,
    },
    Fault {
        name: "upstream dies mid-data",
        sink: || SinkOptions {
            die_mid_data: Some(100),
            ..Default::default()
        },
        config: keep,
        step: Step::Message,
        expect: "451 4.4.1",
        relayed: false,
    },
    Fault {
        name: "upstream refuses the message",
        sink: || SinkOptions {
            data_reply: "554 5.7.1 Rejected by policy".into(),
            ..Default::default()
        },
        config: keep,
        step: Step::Message,
        expect: "554 5.7.1 Rejected by policy",
        relayed: true,
    },
    Fault {
        name: "upstream defers the message",
        sink: || SinkOptions {
            data_reply: "452 4.3.1 Insufficient system storage".into(),
            ..Default::default()
        },
        config: keep,
        step: Step::Message,
        expect: "452 4.3.1 Insufficient system storage",
        relayed: true,
    },
    Fault {
        name: "upstream 421 becomes 451",
        sink: || SinkOptions {
            data_reply: "421 4.3.0 Service shutting down".into(),
            ..Default::default()
        },
        config: keep,
        step: Step::Message,
        expect: "451 4.3.0",
        relayed: false,
    },
    Fault {
        name: "upstream stalls after the message",
        sink: || SinkOptions {
            stall_after_data: Some(Duration::from_secs(30)),
            ..Default::default()
        },
        config: |c| c.upstream.data_timeout = ConfigDuration::secs(1),
        step: Step::Message,
        expect: "451 4.4.1",
        relayed: false,
    },
    Fault {
        name: "upstream stalls at its greeting",
        sink: || SinkOptions {
            stall_greeting: Some(Duration::from_secs(30)),
            ..Default::default()
        },
        config: |c| c.upstream.command_timeout = ConfigDuration::secs(1),
        step: Step::Mail,
        expect: "451 4.4.1",
        relayed: false,
    },
];

#[tokio::test(flavor = "multi_thread")]
async fn every_upstream_fault_gives_the_client_the_right_reply_and_delivers_nothing() {
    for fault in FAULTS {
        let sink = Sink::with((fault.sink)()).await;
        let moat = Moat::builder()
            .upstream(&sink)
            .with(fault.config)
            .start()
            .await;
        let mut c = moat.client().await;
        c.ehlo().await;
        // Twice: a failed transaction leaves nothing behind that could complete a later one.
        for _ in 0..2 {
            let r = match fault.step {
                Step::Mail => c.cmd("MAIL FROM:<a@example.test>").await,
                Step::Message => {
                    c.send_message("a@example.test", &["b@example.test"], b"x\r\n")
                        .await
                }
            };
            assert!(r.is(fault.expect), "{}: {r:?}", fault.name);
            if fault.relayed {
                assert_eq!(r.lines, [fault.expect], "{}", fault.name);
            }
            if matches!(fault.step, Step::Mail) {
                c.expect("RCPT TO:<b@example.test>", "503").await;
            }
        }
        assert!(sink.messages().is_empty(), "{}", fault.name);
        c.expect("NOOP", "250").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_upstream_only_what_needs_none_is_offered() {
    let moat = Moat::builder().with(dead_upstream).start().await;
    let mut c = moat.client().await;
    let ehlo = c.ehlo().await;
    assert!(
        !ehlo.contains("DSN") && !ehlo.contains("SMTPUTF8"),
        "{ehlo:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_message_cut_off_mid_data_is_not_accepted() {
    let (moat, sink) = Moat::builder()
        .start_with(SinkOptions {
            die_mid_data: Some(100),
            ..Default::default()
        })
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let body = ("z".repeat(70) + "\r\n").repeat(100);
    c.expect_message(
        "a@example.test",
        &["b@example.test"],
        body.as_bytes(),
        "451 4.4.1",
    )
    .await;
    assert!(sink.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_at_connect_opens_upstream_before_mail() {
    let (moat, sink) = Moat::builder()
        .with(|c| c.upstream.connect_at = moat::config::ConnectAt::Connect)
        .start_with_sink()
        .await;
    let before = sink.connections();
    let mut c = moat.client().await;
    for _ in 0..100 {
        if sink.connections() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        sink.connections() > before,
        "no upstream session at connect"
    );
    c.ehlo().await;
    c.expect_message("a@example.test", &["b@example.test"], b"x\r\n", "250")
        .await;
}
