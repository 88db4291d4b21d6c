//! Start-up, config errors and graceful shutdown, in-process and through the real binary.

use crate::support::{Moat, Sink};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_completes_a_transaction_in_flight() {
    let (moat, sink) = Moat::builder().start_with_sink().await;
    let addr = moat.addr;
    let mut busy = moat.client().await;
    let mut idle = moat.client().await;
    idle.ehlo().await;
    busy.ehlo().await;
    assert_eq!(busy.cmd("MAIL FROM:<a@example.test>").await.code, 250);
    assert_eq!(busy.cmd("RCPT TO:<b@example.test>").await.code, 250);
    assert_eq!(busy.cmd("DATA").await.code, 354);
    busy.send(b"From: <a@example.test>\r\nSubject: in flight\r\n\r\nfirst half\r\n")
        .await;
    let drained = tokio::spawn(moat.shutdown());
    // The idle session is told to go away.
    let r = idle.read_reply().await;
    assert_eq!((r.code, r.enhanced()), (421, Some("4.3.2")), "{r:?}");
    // New connections are no longer accepted.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "listener still accepting after shutdown");
    // The transaction in flight completes and is delivered.
    busy.send(b"second half\r\n.\r\n").await;
    let r = busy.read_reply().await;
    assert_eq!(r.code, 250, "{r:?}");
    crate::support::split_prepended(
        &sink.messages()[0].body,
        b"From: <a@example.test>\r\nSubject: in flight\r\n\r\nfirst half\r\nsecond half\r\n",
    );
    // After it, the session is closed too, and the drain finishes.
    let r = busy.try_read_reply().await;
    assert!(
        r.is_none() || r.as_ref().is_some_and(|r| r.code == 421),
        "{r:?}"
    );
    assert!(
        drained.await.unwrap(),
        "drain did not finish in the grace period"
    );
}

fn moat_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_moat"))
}

#[test]
fn bad_config_exits_2_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moat.toml");
    // `moat serve --config FILE` with `text` in FILE: exit code 2, and what it said.
    let serve = |text: &str, config: &Path| {
        if !text.is_empty() {
            std::fs::write(&path, text).unwrap();
        }
        let out = moat_bin()
            .args(["serve", "--config"])
            .arg(config)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = serve("[server]\nlisten = [\"not-an-address\"]\n[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n", &path);
    let file = path.display().to_string();
    assert!(
        err.contains(&format!("{file}: server.listen[0]: \"not-an-address\"")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}: tls.cert: /nonexistent/cert.pem does not exist"
        )),
        "{err}"
    );
    let err = serve(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nunknown_key = 1\n",
        &path,
    );
    assert!(
        err.contains(&format!("{file}: line 3")) && err.contains("unknown_key"),
        "{err}"
    );
    let err = serve("", Path::new("/nonexistent/moat.toml"));
    assert!(err.contains("/nonexistent/moat.toml: cannot read"), "{err}");
}

#[test]
fn version_and_help() {
    let out = moat_bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("moat "));
    let out = moat_bin().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--listen") && help.contains("--upstream") && help.contains("--config"),
        "{help}"
    );
}

/// `moat serve` as a process with `config` in front of `sink`, on a free loopback port, with
/// `RUST_LOG` set as given (None: the config's level); returns it and a client past the greeting.
async fn serve_binary(
    config: &std::path::Path,
    sink: &Sink,
    dns: std::net::SocketAddr,
    rust_log: Option<&str>,
) -> (Served, crate::support::Client) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = moat_bin();
    cmd.args(["serve", "--config"])
        .arg(config)
        .args([
            "--listen",
            &listen,
            "--upstream",
            &sink.addr.to_string(),
            "--dns",
            &dns.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match rust_log {
        Some(level) => cmd.env("RUST_LOG", level),
        None => cmd.env_remove("RUST_LOG"),
    };
    let mut child = cmd.spawn().unwrap();
    for _ in 0..200 {
        if let Ok(tcp) = tokio::net::TcpStream::connect(&listen).await {
            drop(tcp);
            return (
                Served(Some(child)),
                crate::support::Client::connect(listen.parse().unwrap()).await,
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("moat binary did not start listening");
}

/// A `moat serve` child process; killed when the test ends (or fails) before `stop_binary`,
/// so a failing test leaves no server behind.
struct Served(Option<std::process::Child>);

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGTERM, then the exit status and everything the process logged.
async fn stop_binary(mut served: Served) -> std::process::Output {
    let mut child = served.0.take().expect("a running child");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::task::spawn_blocking(move || {
        let _ = &mut child;
        child.wait_with_output()
    })
    .await
    .unwrap()
    .unwrap()
}

/// The shipped config as it is, written into `dir`, except the metrics endpoint on a free port
/// (a moat serve already running on this machine holds 127.0.0.1:9925) and the rules named by
/// their full path.
fn shipped_config(dir: &std::path::Path) -> std::path::PathBuf {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/moat.toml")).unwrap();
    let metrics_default = "# listen = \"127.0.0.1:9925\"";
    assert!(
        shipped.contains(metrics_default),
        "the shipped metrics line moved"
    );
    let config = dir.join("moat.toml");
    std::fs::write(
        &config,
        shipped
            .replace(metrics_default, "listen = \"127.0.0.1:0\"")
            .replace(
                "dir = \"rules\"",
                &format!("dir = {:?}", concat!(env!("CARGO_MANIFEST_DIR"), "/rules")),
            ),
    )
    .unwrap();
    config
}

/// The README's one-minute trial, as written (swaks' session and message from
/// alice@trial.invalid to bob@trial.invalid), with a resolver that answers and with one that
/// never does: both end in 250. RFC 6761 makes .invalid names nonexistent without a lookup,
/// so no check waits on them; the HELO name's SPF waits out the stage budget when DNS is dead.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_trial_works_with_and_without_dns() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = shipped_config(dir.path());
    let working = crate::support::dns::TestDns::fixtures(Vec::new()).await;
    let dead = crate::support::dns::SilentDns::start().await;
    for (what, dns) in [("working DNS", working.addr), ("no DNS", dead.addr)] {
        let (child, mut c) = serve_binary(&config, &sink, dns, None).await;
        assert_eq!(c.greeting.code, 220, "{what}");
        assert_eq!(
            c.cmd("EHLO trial-client.example.net").await.code,
            250,
            "{what}"
        );
        let r = c
            .send_message(
                "alice@trial.invalid",
                &["bob@trial.invalid"],
                b"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nTo: bob@trial.invalid\r\n\
                  From: alice@trial.invalid\r\nSubject: test Thu, 03 Dec 2026 10:00:00 +0000\r\n\
                  Message-Id: <20261203100000.1@trial-client.example.net>\r\n\
                  X-Mailer: swaks v20240103.0 jetmore.org/john/code/swaks/\r\n\r\n\
                  This is a test mailing\r\n\r\n",
            )
            .await;
        assert_eq!(r.code, 250, "{what}: {r:?}");
        let out = stop_binary(child).await;
        assert_eq!(out.status.code(), Some(0), "{what}");
    }
}

/// The shipped config, with the flags overriding listen and upstream, then SIGTERM: exit 0.
#[tokio::test(flavor = "multi_thread")]
async fn binary_serves_with_shipped_config_and_exits_0_on_sigterm() {
    let sink = Sink::start().await;
    let dns = crate::support::dns::TestDns::fixtures(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = shipped_config(dir.path());
    let (child, mut c) = serve_binary(&config, &sink, dns.addr, Some("info")).await;
    assert_eq!(c.greeting.code, 220);
    c.ehlo().await;
    c.expect_message(
        "a@example.test",
        &["b@example.test"],
        b"From: <a@example.test>\r\nSubject: bin\r\n\r\nhi\r\n",
        "250",
    )
    .await;
    assert_eq!(c.cmd("QUIT").await.code, 221);
    let out = stop_binary(child).await;
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    // One summary line per transaction, with the upstream's reply in it.
    assert!(
        log.contains("transaction") && log.contains("queued as SINK1"),
        "{log}"
    );
}

/// `moat check` as a binary: JSON schema, exit codes, input errors.
#[tokio::test(flavor = "multi_thread")]
async fn check_binary_json_and_exit_codes() {
    let dns = crate::support::dns::TestDns::fixtures(Vec::new()).await;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/messages/");
    let dns_addr = dns.addr.to_string();
    let run = move |args: Vec<String>| {
        let mut cmd = moat_bin();
        cmd.arg("check").arg("--dns").arg(&dns_addr).args(args);
        cmd.output().unwrap()
    };
    let pass = format!("{fixtures}signed-pass.eml");
    let args = vec![
        "--json".into(),
        "--client-ip".into(),
        "127.0.0.1".into(),
        "--helo".into(),
        "mx.signed.test".into(),
        "--mail-from".into(),
        "alice@signed.test".into(),
        "--rcpt".into(),
        "bob@rcpt.test".into(),
        pass.clone(),
    ];
    let out = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(args)
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "action", "score", "required", "symbols", "spf", "dkim", "dmarc", "arc", "headers",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
    assert_eq!(v["action"], "accept");
    assert_eq!(
        v["spf"],
        serde_json::json!({
            "result": "pass",
            "domain": "signed.test",
            "explanation": null,
            "detail": null,
            "helo": {"result": "none", "domain": "mx.signed.test"},
        })
    );
    assert_eq!(
        v["dmarc"],
        serde_json::json!({"result": "pass", "policy": "reject", "domain": "signed.test"})
    );
    let sym = &v["symbols"][0];
    for key in ["name", "score", "stage", "detail"] {
        assert!(sym.get(key).is_some(), "{key} missing in {sym}");
    }
    // A forged message: reject, exit 1, and the human report names the policy.
    let forged = format!("{fixtures}strict-subdomain.eml");
    let out = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(vec![forged])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("action: reject") && text.contains("DMARC_POLICY_REJECT"),
        "{text}"
    );
    assert!(
        text.contains("skipped:"),
        "the report must say which stages were skipped: {text}"
    );
    // Input errors: exit 2 with a message.
    let out = tokio::task::spawn_blocking(move || run(vec!["/nonexistent/message.eml".into()]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/message.eml: cannot read"));
}

/// `log.format = "json"`: the transaction summary is one JSON object per line, with every field
/// an admin joins on (session, client, envelope, verdict, timings, the MTA's queue id).
#[tokio::test(flavor = "multi_thread")]
async fn json_transaction_log_line() {
    let sink = Sink::start().await;
    let dns = crate::support::dns::TestDns::fixtures(Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("moat.toml");
    std::fs::write(
        &config,
        "[log]\nformat = \"json\"\n[metrics]\nlisten = \"\"\n[server]\nhostname = \"mx.moat.test\"\n",
    )
    .unwrap();
    let (child, mut c) = serve_binary(&config, &sink, dns.addr, None).await;
    c.cmd("EHLO client.example").await;
    c.expect_message(
        "a@example.test",
        &["b@example.test", "c@example.test"],
        b"From: a@example.test\r\nSubject: json\r\n\r\nhi\r\n",
        "250",
    )
    .await;
    assert_eq!(c.cmd("QUIT").await.code, 221);
    let out = stop_binary(child).await;
    let log = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let tx = lines
        .iter()
        .find(|v| v["fields"]["message"] == "transaction")
        .unwrap_or_else(|| panic!("no transaction line in {log}"));
    let f = &tx["fields"];
    assert!(f["session"].as_u64().is_some(), "{f}");
    assert_eq!(
        f["client"].as_str().unwrap().split(':').next(),
        Some("127.0.0.1")
    );
    assert_eq!(f["helo"], "client.example");
    assert_eq!(f["from"], "a@example.test");
    assert_eq!(f["rcpts"], "b@example.test,c@example.test");
    assert_eq!(f["action"], "accept");
    assert_eq!(f["stage"], "data");
    assert_eq!(f["queue_id"], "SINK1", "{f}");
    assert!(f["size"].as_u64().unwrap() > 10);
    assert!(f["score"].as_f64().is_some());
    assert!(f["tls"].is_string() && f["client_name"].is_string() && f["symbols"].is_string());
    let timings = f["timings"].as_str().unwrap();
    for stage in ["connect=", "helo=", "mail=", "rcpt=", "data=", "upstream="] {
        assert!(timings.contains(stage), "{timings}");
    }
}

/// `config/moat.toml` promises that a commented `# key = value` line shows the real default:
/// each one, uncommented on its own, must leave `Config::default()` unchanged. (Examples that
/// are not defaults are written as `## e.g.` lines, which this does not read.)
#[test]
fn commented_values_in_the_shipped_config_are_the_defaults() {
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/moat.toml"));
    let text = std::fs::read_to_string(path).unwrap();
    let label = std::path::Path::new("moat.toml");
    let defaults = format!("{:?}", moat::config::Config::parse("", label).unwrap());
    let mut section = String::new();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        let Some(setting) = line.strip_prefix("# ") else {
            continue;
        };
        let is_key_value = setting
            .split_once(" = ")
            .is_some_and(|(k, _)| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        if !is_key_value {
            continue;
        }
        checked += 1;
        let one = format!("{section}\n{setting}\n");
        match moat::config::Config::parse(&one, label) {
            Ok(c) if format!("{c:?}") == defaults => {}
            Ok(_) => wrong.push(format!(
                "line {}: {section} {setting}: not the default",
                n + 1
            )),
            Err(e) => wrong.push(format!("line {}: {section} {setting}: {e}", n + 1)),
        }
    }
    assert!(checked > 80, "only {checked} commented settings found");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
