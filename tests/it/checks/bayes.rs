//! The classifier: its evaluation on the shared corpus (train on one part by file-name hash,
//! score the rest, with the targets of the issue), `moat learn` (idempotent, moves, forgets,
//! stats), and scoring over SMTP with both stores: the embedded model file reloaded by a
//! running moat after `moat learn`, and Redis shared between learning and scoring.

use crate::support::redis::RedisServer;
use crate::support::{crlf, Moat, Sink};
use moat::cli::corpus::Split;
use moat::cli::eval::EvalArgs;
use moat::cli::learn::LearnArgs;
use moat::config::Config;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn config_file(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("moat.toml");
    std::fs::write(
        &path,
        format!(
            "[bayes]\npath = {:?}\n[metrics]\nlisten = \"\"\n{extra}",
            dir.join("bayes.redb")
        ),
    )
    .expect("write config");
    path
}

/// Symbols the classifier gives when it says spam.
const SPAM_BANDS: &[&str] = &["BAYES_SPAM_LIKELY", "BAYES_SPAM", "BAYES_SPAM_HIGH"];

fn hits(report: &Value, names: &[&str], class: &str) -> u64 {
    report["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter(|r| names.contains(&r["name"].as_str().unwrap_or("")))
        .map(|r| r[class].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn classifier_meets_its_targets_on_the_held_back_corpus() {
    let Some(root) = crate::support::shared("corpus") else {
        return;
    };
    assert!(
        root.join("ham").is_dir(),
        "{} has no ham/: the evaluation needs shared/corpus",
        root.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config_file(dir.path(), "");
    let config = Config::load(&path).expect("config");
    let learned = moat::cli::learn::run_with(
        &config,
        &LearnArgs {
            config: path.clone(),
            ham: vec![root.join("ham")],
            spam: vec![root.join("spam")],
            split: Some(Split::Train),
            test_percent: 40,
            ..Default::default()
        },
    )
    .await
    .expect("learn");
    println!("{learned}");
    let report = tokio::task::spawn_blocking(move || {
        moat::cli::eval::run(&EvalArgs {
            ham: vec![root.join("ham")],
            spam: vec![root.join("spam")],
            config: Some(path),
            json: true,
            split: Some(Split::Test),
            test_percent: 40,
            ..Default::default()
        })
    })
    .await
    .expect("eval thread")
    .expect("eval");
    let v: Value = serde_json::from_str(&report.output).expect("json");
    let n = |class: &str, key: &str| v[class][key].as_u64().expect("count");
    let (ham, spam) = (n("ham", "total"), n("spam", "total"));
    assert!(ham > 1000 && spam > 500, "the test part is too small: {v}");

    // With the full ruleset: caught = flagged or refused.
    let caught = spam - n("spam", "accept");
    let flagged = ham - n("ham", "accept");
    let pct = |a: u64, b: u64| 100.0 * a as f64 / b as f64;
    println!(
        "with the rules: spam caught {caught}/{spam} ({:.2}%), ham flagged {flagged}/{ham} ({:.2}%), ham rejected {}",
        pct(caught, spam),
        pct(flagged, ham),
        n("ham", "reject")
    );
    // The classifier alone: a spam band symbol.
    let alone_spam = hits(&v, SPAM_BANDS, "spam_hits");
    let alone_ham = hits(&v, SPAM_BANDS, "ham_hits");
    println!(
        "classifier alone: spam caught {alone_spam}/{spam} ({:.2}%), ham flagged {alone_ham}/{ham} ({:.2}%)",
        pct(alone_spam, spam),
        pct(alone_ham, ham)
    );
    for band in [
        "BAYES_HAM",
        "BAYES_HAM_LIKELY",
        "BAYES_SPAM_LIKELY",
        "BAYES_SPAM",
        "BAYES_SPAM_HIGH",
    ] {
        println!(
            "  {band:<18} ham {:>5}  spam {:>5}",
            hits(&v, &[band], "ham_hits"),
            hits(&v, &[band], "spam_hits")
        );
    }
    assert_eq!(n("ham", "reject"), 0, "ham rejected: {v}");
    assert!(pct(caught, spam) >= 97.0, "with the rules: {caught}/{spam}");
    assert!(pct(flagged, ham) <= 0.5, "with the rules: {flagged}/{ham}");
    assert!(pct(alone_spam, spam) >= 97.0, "alone: {alone_spam}/{spam}");
    assert!(pct(alone_ham, ham) <= 0.5, "alone: {alone_ham}/{ham}");
}

/// A little corpus of its own: ham about meetings, spam about pills, enough of each.
fn small_corpus(root: &Path, n: usize) -> (PathBuf, PathBuf) {
    let (ham, spam) = (root.join("ham"), root.join("spam"));
    std::fs::create_dir_all(ham.join("cur")).expect("mkdir");
    std::fs::create_dir_all(&spam).expect("mkdir");
    for i in 0..n {
        std::fs::write(
            ham.join("cur").join(format!("{i}.eml")),
            format!("From: colleague{i}@work.example\nMessage-ID: <h{i}@work.example>\nSubject: agenda for the meeting {i}\n\nHi, the quarterly meeting agenda is attached; see you in room {i}.\nRegards\n"),
        )
        .expect("write");
        std::fs::write(
            spam.join(format!("{i}.eml")),
            format!("From: deals{i}@pills.example\nMessage-ID: <s{i}@pills.example>\nSubject: cheap pills {i}\n\nBuy cheap v1agra pills now, best pharmacy prices, order today {i}!\n"),
        )
        .expect("write");
    }
    (ham, spam)
}
/// `moat learn --ham HAM --spam SPAM` with `cfg`; asserts success and returns its output.
fn learn_corpus(cfg: &Path, ham: &Path, spam: &Path) -> String {
    let (code, out, err) = learn_cli(
        cfg,
        &[
            "--ham",
            ham.to_str().expect("utf-8 path"),
            "--spam",
            spam.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    out
}

fn learn_cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_moat"))
        .arg("learn")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run moat learn");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn learn_is_idempotent_moves_forgets_and_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_file(dir.path(), "");
    let (ham, spam) = small_corpus(dir.path(), 5);
    let (h, s) = (ham.to_str().unwrap(), spam.to_str().unwrap());
    let (code, out, err) = learn_cli(&cfg, &["--ham", h, "--spam", s]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("learned 10 messages") && out.contains("10 new"),
        "{out}"
    );
    assert!(out.contains(": 5 spam, 5 ham,"), "{out}");
    assert!(
        out.contains("(not active yet)"),
        "200 of each are needed: {out}"
    );
    // Again: nothing changes.
    let (_, out, _) = learn_cli(&cfg, &["--ham", h, "--spam", s]);
    assert!(
        out.contains("0 new") && out.contains("10 already known"),
        "{out}"
    );
    assert!(out.contains(": 5 spam, 5 ham,"), "{out}");
    // The spam folder learned as ham: moved.
    let (_, out, _) = learn_cli(&cfg, &["--ham", s]);
    assert!(out.contains("5 moved"), "{out}");
    assert!(out.contains(": 0 spam, 10 ham,"), "{out}");
    // Forgotten, and forgetting again knows nothing of them.
    let (_, out, _) = learn_cli(&cfg, &["--forget", "--ham", s]);
    assert!(out.contains("5 forgotten"), "{out}");
    let (_, out, _) = learn_cli(&cfg, &["--forget", "--ham", s]);
    assert!(out.contains("5 not known"), "{out}");
    let (code, out, _) = learn_cli(&cfg, &["--stats"]);
    assert_eq!(code, 0);
    assert!(out.contains(": 0 spam, 5 ham,"), "{out}");
    // Usage errors are clear and exit 2.
    let (code, _, err) = learn_cli(&cfg, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("nothing to do"), "{err}");
    let (code, _, err) = learn_cli(&cfg, &["--ham", "/no/such/folder"]);
    assert_eq!(code, 2);
    assert!(err.contains("no such file or folder"), "{err}");
}

/// The X-Spam-Status line the sink received for the last message.
fn spam_status(sink: &Sink) -> String {
    let m = sink.messages().pop().expect("a message reached the sink");
    let text = String::from_utf8_lossy(&m.body)
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ");
    text.split("\r\n")
        .find(|l| l.starts_with("X-Spam-Status:"))
        .unwrap_or("")
        .to_string()
}

async fn send(moat: &Moat, body: &str) -> u16 {
    let mut c = moat.client().await;
    c.ehlo().await;
    c.send_message("x@example.test", &["b@example.test"], &crlf(body))
        .await
        .code
}

const PILLS: &str = "From: deals@pills.example\nSubject: cheap pills\n\nBuy cheap v1agra pills now, best pharmacy prices, order today!\n";
const AGENDA: &str = "From: colleague@work.example\nSubject: agenda for the meeting\n\nHi, the quarterly meeting agenda is attached; see you in room 4.\nRegards\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_running_moat_reloads_the_embedded_model_after_learning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ham, spam) = small_corpus(dir.path(), 12);
    let model = dir.path().join("bayes.redb");
    let (moat, sink) = Moat::builder()
        .with(|c| {
            c.bayes.path = model.clone();
            c.bayes.min_ham = 10;
            c.bayes.min_spam = 10;
            c.bayes.reload_interval = moat::config::ConfigDuration(Duration::from_millis(100));
        })
        .start_with_sink()
        .await;
    // Nothing learned yet: the classifier is silent.
    assert_eq!(send(&moat, PILLS).await, 250);
    assert!(
        !spam_status(&sink).contains("BAYES"),
        "{}",
        spam_status(&sink)
    );

    let cfg = config_file(dir.path(), "[store]\nbackend = \"embedded\"\n");
    learn_corpus(&cfg, &ham, &spam);
    // The model file changed; moat picks it up within a few reload intervals.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(send(&moat, PILLS).await, 250);
        let status = spam_status(&sink);
        if status.contains("BAYES_SPAM") {
            break;
        }
        assert!(Instant::now() < deadline, "model not reloaded: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(send(&moat, AGENDA).await, 250);
    assert!(
        spam_status(&sink).contains("BAYES_HAM"),
        "{}",
        spam_status(&sink)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_model_is_shared_between_learning_and_scoring() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (ham, spam) = small_corpus(dir.path(), 12);
    let cfg = config_file(
        dir.path(),
        &format!(
            "[store]\nbackend = \"redis\"\nurl = \"{}\"\nprefix = \"moat-test:\"\n",
            redis.url
        ),
    );
    let out = learn_corpus(&cfg, &ham, &spam);
    assert!(out.contains(": 12 spam, 12 ham,"), "{out}");
    let (moat, sink) = Moat::builder()
        .with(|c| {
            c.store.backend = moat::config::StoreBackend::Redis;
            c.store.url = redis.url.clone();
            c.store.prefix = "moat-test:".into();
            c.bayes.min_ham = 10;
            c.bayes.min_spam = 10;
        })
        .start_with_sink()
        .await;
    assert_eq!(send(&moat, PILLS).await, 250);
    assert!(
        spam_status(&sink).contains("BAYES_SPAM"),
        "{}",
        spam_status(&sink)
    );
    // Learned as ham afterwards: Redis is read per message, so the next message sees it.
    let (code, out, _) = learn_cli(&cfg, &["--ham", spam.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("12 moved"), "{out}");
    assert_eq!(send(&moat, PILLS).await, 250);
    let status = spam_status(&sink);
    assert!(!status.contains("BAYES_SPAM"), "{status}");
    // Redis gone: the message still passes, scored without the classifier (STORE_FAIL).
    drop(redis);
    assert_eq!(send(&moat, PILLS).await, 250);
    assert!(
        spam_status(&sink).contains("STORE_FAIL"),
        "{}",
        spam_status(&sink)
    );
}

/// `moat check` reads an embedded model read-only, per message: checks run beside each other
/// and beside a `moat learn` that is writing the same model, none fails on the file's lock,
/// and the learner's work lands in the model when it finishes.
#[test]
fn checks_and_learning_share_an_embedded_model_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), "");
    let (ham, spam) = small_corpus(&dir.path().join("first"), 30);
    let moat = |args: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_moat"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("spawn")
    };
    let learn = |ham: &Path, spam: &Path| {
        moat(&[
            "learn".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--ham".as_ref(),
            ham.as_os_str(),
            "--spam".as_ref(),
            spam.as_os_str(),
        ])
    };
    let status = learn(&ham, &spam).wait().expect("learn");
    assert!(status.success(), "first learn");
    let message = dir.path().join("m.eml");
    std::fs::write(
        &message,
        crlf("From: a@example.test\nSubject: minutes\n\nThe minutes are attached.\n"),
    )
    .expect("message");
    // A second learner and two more (waiting for the first) beside eight checks.
    let (ham2, spam2) = small_corpus(&dir.path().join("second"), 200);
    let learners: Vec<_> = (0..3).map(|_| learn(&ham2, &spam2)).collect();
    let checks: Vec<_> = (0..8)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_moat"))
                .args(["check", "--json", "--config"])
                .arg(&config)
                .arg(&message)
                .output()
        })
        .collect();
    for out in checks {
        let out = out.expect("check runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(0) | Some(1)),
            "check failed: {err}"
        );
        assert!(!err.contains("lock"), "{err}");
    }
    for mut l in learners {
        assert!(
            l.wait().expect("learn").success(),
            "a concurrent learn failed"
        );
    }
    let stats = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["learn", "--stats", "--config"])
        .arg(&config)
        .output()
        .expect("stats");
    let text = String::from_utf8_lossy(&stats.stdout);
    // The second corpus repeats the first one's 30 messages (same Message-IDs): 200 of each.
    assert!(
        text.contains("200 spam, 200 ham"),
        "every learner's work landed: {text}"
    );
    assert!(
        !dir.path().join("bayes.redb.learning").exists(),
        "no copy left behind"
    );
}
