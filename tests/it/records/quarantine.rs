//! The quarantine: a message refused at end of data is kept with its record (an accepted or
//! tempfailed one is not); `moat quarantine list|show` read it; release sends it to the MTA
//! with the original envelope and client and a header saying so, then removes it.

use crate::support::{crlf, Moat, Sink};
use moat::config::Config;
use moat::records::RecordDir;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

fn quarantine_on(c: &mut Config, dir: &Path) {
    c.quarantine.enabled = true;
    c.quarantine.dir = dir.to_path_buf();
}

/// The records once `n` are there (moat writes them off the session's task).
async fn wait_for(q: &RecordDir, n: usize) -> Vec<moat::records::Record> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list = q.list().expect("list");
        if list.len() >= n || Instant::now() > deadline {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_message_is_kept_and_released_to_the_mta() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start().await;
    let mut config = None;
    let moat = Moat::builder()
        .upstream(&sink)
        .with(|c| {
            quarantine_on(c, dir.path());
            config = Some(c.clone());
        })
        .start()
        .await;
    let config = config.expect("config");
    let spam = crlf(&format!(
        "From: x@example.test\nSubject: offer\n\n{GTUBE}\n"
    ));
    let mut c = moat.client().await;
    c.ehlo().await;
    c.expect_message(
        "x@example.test",
        &["b@example.test", "c@example.test"],
        &spam,
        "550",
    )
    .await;
    // An accepted message is not kept.
    c.expect_message(
        "y@example.test",
        &["b@example.test"],
        &crlf("From: <a@example.test>\nSubject: hi\n\nhello\n"),
        "250",
    )
    .await;
    let q = RecordDir::quarantine(&config.quarantine);
    let list = wait_for(&q, 1).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let rec = &list[0];
    assert_eq!(rec.mail_from, "x@example.test");
    assert_eq!(rec.rcpts, ["b@example.test", "c@example.test"]);
    assert_eq!(rec.action, "reject");
    assert!(rec.reply.starts_with("550"), "{}", rec.reply);
    assert!(
        rec.symbols.iter().any(|s| s.name == "GTUBE"),
        "{:?}",
        rec.symbols
    );
    assert!(rec.client.starts_with("127.0.0.1:"));
    assert_eq!(rec.helo.as_deref(), Some("client.test"));
    let (_, kept) = q.get(&rec.id).expect("get");
    assert_eq!(kept, spam, "the message as received");
    assert_eq!(
        sink.messages().len(),
        1,
        "only the accepted message reached the MTA"
    );

    let reply = moat::cli::quarantine::release(&config, &rec.id)
        .await
        .expect("release");
    assert_eq!(reply.code, 250, "{reply}");
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 2);
    let released = &msgs[1];
    assert_eq!(
        released.rcpts,
        ["RCPT TO:<b@example.test>", "RCPT TO:<c@example.test>"]
    );
    let body = String::from_utf8_lossy(&released.body);
    assert!(body.starts_with("X-Moat-Released: "), "{body}");
    assert!(
        body.contains(&format!("from quarantine {} (was reject", rec.id)),
        "{body}"
    );
    assert!(
        body.ends_with(&String::from_utf8_lossy(&spam).to_string()),
        "{body}"
    );
    let xclient = released
        .xclient
        .clone()
        .expect("the original client announced");
    assert!(
        xclient.contains("ADDR=127.0.0.1") && xclient.contains("HELO=client.test"),
        "{xclient}"
    );
    assert!(
        q.list().expect("list").is_empty(),
        "released messages leave the quarantine"
    );
    let err = moat::cli::quarantine::release(&config, &rec.id)
        .await
        .expect_err("gone");
    assert!(err.to_string().contains("no quarantined message"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn list_and_show_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (moat, sink) = Moat::builder()
        .with(|c| quarantine_on(c, &dir.path().join("q")))
        .start_with_sink()
        .await;
    let mut c = moat.client().await;
    c.ehlo().await;
    let spam = crlf(&format!("From: <a@example.test>\nSubject: s\n\n{GTUBE}\n"));
    assert_eq!(
        c.send_message("", &["b@example.test"], &spam).await.code,
        550
    );
    let q = RecordDir::quarantine(&moat::config::QuarantineConfig {
        enabled: true,
        dir: dir.path().join("q"),
        ..Default::default()
    });
    let id = wait_for(&q, 1).await.first().expect("kept").id.clone();
    let config = dir.path().join("moat.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\naddress = \"{}\"\n[quarantine]\nenabled = true\ndir = \"{}\"\n",
            sink.addr,
            dir.path().join("q").display()
        ),
    )
    .expect("config");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_moat"))
            .args(["quarantine", "--config", config.to_str().expect("utf-8")])
            .args(args)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = run(&["list"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains(&id) && out.contains("<>") && out.contains("1 message(s)"),
        "{out}"
    );
    // --config is taken after the action too, where users type it.
    let after = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args([
            "quarantine",
            "list",
            "--config",
            config.to_str().expect("utf-8"),
        ])
        .output()
        .expect("run");
    assert_eq!(after.status.code(), Some(0), "{after:?}");
    assert_eq!(String::from_utf8_lossy(&after.stdout), out);
    let (code, out, _) = run(&["show", &id]);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"GTUBE\"") && out.contains(GTUBE), "{out}");
    let (code, _, err) = run(&["show", "no-such-id"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no quarantined message"), "{err}");
    let (code, out, _) = run(&["release", &id]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with(&format!("released {id}: 250")), "{out}");
}
