//! Transaction records and exact replay: transactions over SMTP use DNSBL, RHSBL, URIBL,
//! SPF, DKIM, DMARC and reverse DNS lookups (accepted, refused at end of data, at connect, at
//! MAIL); their records hold every answer; with the DNS server stopped, `moat check --replay` reproduces both verdicts from the records alone, an
//! edited ruleset shows its difference, and a record stripped of its answers does not
//! reproduce (so the answers really came from the record).

use crate::support::dns::TestDns;
use crate::support::{crlf, Client, Moat, Sink};
use moat::cli::check::{run, CheckArgs};
use moat::config::Config;
use moat::dns::journal::{DnsResult, RType};
use moat::records::{Record, RecordDir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The records once `n` are there (moat writes them off the session's task).
async fn wait_for(dir: &RecordDir, n: usize) -> Vec<Record> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = dir.list().expect("list");
        if list.len() >= n || Instant::now() > deadline {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The config file a replay runs with: the same rules, thresholds and host name as the moat.
fn replay_config(dir: &Path, rules: &Path) -> PathBuf {
    let path = dir.join("replay.toml");
    std::fs::write(
        &path,
        format!("[server]\nhostname = \"moat.test\"\n[rules]\ndir = {rules:?}\n"),
    )
    .expect("write config");
    path
}

async fn replay(record: &Path, config: &Path, rules: Option<&Path>) -> (Value, u8) {
    let args = CheckArgs {
        config: Some(config.to_path_buf()),
        replay: Some(record.to_path_buf()),
        rules: rules.map(Path::to_path_buf),
        json: true,
        ..Default::default()
    };
    let report = run(&args).await.expect("replay runs");
    let v: Value = serde_json::from_str(&report.output).expect("json");
    (v, report.exit_code)
}

/// A moat on the fixture DNS that records every transaction (accepted ones too) under
/// `records_dir`, scoring with `rules`; with its DNS server, sink and config.
async fn recording_moat(rules: &Path, records_dir: &Path) -> (Moat, TestDns, Sink, Config) {
    let dns = TestDns::fixtures(Vec::new()).await;
    let sink = Sink::start().await;
    let mut config: Option<Config> = None;
    let moat = Moat::builder()
        .upstream(&sink)
        .dns(dns.addr)
        .with(|c| {
            c.rules.dir = Some(rules.to_path_buf());
            c.records.enabled = true;
            c.records.dir = records_dir.to_path_buf();
            c.records.accepted_sample = 1.0;
            config = Some(c.clone());
        })
        .start()
        .await;
    (moat, dns, sink, config.expect("config"))
}

fn has(record: &Record, name: &str) -> bool {
    record.symbols.iter().any(|s| s.name == name)
}

#[tokio::test(flavor = "multi_thread")]
async fn recorded_transactions_replay_exactly_without_the_dns_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records_dir = dir.path().join("records");
    let rules = fixtures().join("rules-dnsbl");
    let (moat, dns, _sink, config) = recording_moat(&rules, &records_dir).await;

    // 127.0.0.2 is on ip.bl.test (RBL_TEST_XBL, 5 points).
    let mut c = Client::connect_from(moat.addr, "127.0.0.2").await;
    assert_eq!(c.cmd("EHLO mx.signed.test").await.code, 250);
    // One: signed.test's own signed message (SPF, DKIM and DMARC pass): accepted.
    let signed = std::fs::read(fixtures().join("messages/signed-pass.eml")).expect("fixture");
    c.expect_message("alice@signed.test", &["bob@rcpt.test"], &signed, "250")
        .await;
    // Two: a listed sender domain and listed links: refused.
    let spam =
        crlf("From: x@spammer.example\nSubject: deal\n\nSee http://evil-links.example/offer now\n");
    c.expect_message("x@spammer.example", &["bob@rcpt.test"], &spam, "550")
        .await;
    c.cmd("QUIT").await;
    // Three: 127.0.0.1 is on the list with 20 points: refused at connect.
    let c = Client::connect_from(moat.addr, "127.0.0.1").await;
    assert_eq!(c.greeting.code, 554, "{:?}", c.greeting);
    // Four: a listed HELO and sender from a listed client (5 + 6 + 6): refused at MAIL.
    let mut c = Client::connect_from(moat.addr, "127.0.0.2").await;
    assert_eq!(c.cmd("EHLO spammer.example").await.code, 250);
    let r = c.cmd("MAIL FROM:<x@spammer.example>").await;
    assert_eq!(r.code, 550, "{r:?}");

    let store = RecordDir::records(&config.records);
    let records = wait_for(&store, 4).await;
    assert_eq!(records.len(), 4, "{records:?}");
    let find = |stage: &str, action: &str| {
        records
            .iter()
            .find(|r| r.stage == stage && r.action == action)
            .unwrap_or_else(|| panic!("no {stage} {action} record: {records:#?}"))
    };
    let (accepted, refused) = (find("data", "accept"), find("data", "reject"));
    let (at_connect, at_mail) = (find("connect", "reject"), find("mail", "reject"));
    assert!(has(at_connect, "RBL_TEST_SBL"), "{at_connect:?}");
    assert!(has(at_mail, "DBL_TEST"), "{at_mail:?}");
    assert_eq!(refused.action, "reject");
    assert!(refused.reply.starts_with("550"), "{}", refused.reply);
    for s in ["SPF_PASS", "DKIM_ALLOW", "DMARC_PASS", "RBL_TEST_XBL"] {
        assert!(has(accepted, s), "{s}: {:?}", accepted.symbols);
    }
    for s in ["RBL_TEST_XBL", "DBL_TEST", "URIBL_TEST_BLACK"] {
        assert!(has(refused, s), "{s}: {:?}", refused.symbols);
    }
    // The answers the checks used are in the record, TXT texts included.
    let answer = |name: &str, t: RType| {
        accepted
            .dns
            .iter()
            .find(|a| a.name == name && a.rtype == t)
            .unwrap_or_else(|| panic!("{name} {t:?} not recorded: {:#?}", accepted.dns))
    };
    assert_eq!(answer("2.0.0.127.ip.bl.test", RType::A).data, ["127.0.0.4"]);
    assert_eq!(
        answer("signed.test", RType::TXT).data,
        ["v=spf1 ip4:127.0.0.0/8 -all"]
    );
    assert!(answer("sel._domainkey.signed.test", RType::TXT).data[0].starts_with("v=DKIM1"));
    assert_eq!(
        answer("_dmarc.signed.test", RType::TXT).data,
        ["v=DMARC1; p=reject"]
    );
    // hickory answers loopback PTR queries itself ("localhost"); the record keeps that too.
    assert_eq!(
        answer("2.0.0.127.in-addr.arpa", RType::PTR).result,
        DnsResult::Found
    );
    assert!(dir
        .path()
        .join("records")
        .join(format!("{}.eml", accepted.id))
        .exists());

    // The DNS server goes away: a replay may only use the record.
    drop(moat);
    drop(dns);
    let cfg = replay_config(dir.path(), &rules);
    for rec in [accepted, refused, at_connect, at_mail] {
        let path = records_dir.join(format!("{}.json", rec.id));
        let (v, code) = replay(&path, &cfg, None).await;
        assert_eq!(code, 0, "{v:#}");
        assert_eq!(v["identical"], true, "{v:#}");
        assert_eq!(v["replayed"]["action"], rec.action.as_str(), "{v:#}");
        assert_eq!(v["ruleset"]["recorded"], v["ruleset"]["replayed"]);
    }

    // An edited ruleset: URIBL_TEST_BLACK from 5 to -10 (25.3 -> 10.3) turns the rejection
    // into a flag.
    let edited = dir.path().join("edited-rules");
    std::fs::create_dir(&edited).expect("mkdir");
    let list = std::fs::read_to_string(rules.join("dnsbl.toml")).expect("read");
    let list = list.replace(
        "\"2\" = { symbol = \"URIBL_TEST_BLACK\", score = 5.0",
        "\"2\" = { symbol = \"URIBL_TEST_BLACK\", score = -10.0",
    );
    std::fs::write(edited.join("dnsbl.toml"), list).expect("write");
    let path = records_dir.join(format!("{}.json", refused.id));
    let (v, code) = replay(&path, &cfg, Some(&edited)).await;
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["identical"], false);
    assert_ne!(v["ruleset"]["recorded"], v["ruleset"]["replayed"]);
    assert_eq!(v["replayed"]["action"], "add_header", "{v:#}");
    let changes = v["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 1, "{v:#}");
    assert_eq!(changes[0]["name"], "URIBL_TEST_BLACK");
    assert_eq!(changes[0]["recorded"], 5.0);
    assert_eq!(changes[0]["replayed"], -10.0);
    // The report for people says the same.
    let text = run(&CheckArgs {
        config: Some(cfg.clone()),
        replay: Some(path.clone()),
        rules: Some(edited.clone()),
        ..Default::default()
    })
    .await
    .expect("replay runs");
    assert!(
        text.output.contains("~ URIBL_TEST_BLACK") && text.output.contains("the verdict differs"),
        "{}",
        text.output
    );

    // A classifier symbol depends on the model as it was, which a record does not hold: left
    // out of the comparison, and the rest still matches.
    let with_model_dir = dir.path().join("with-model");
    std::fs::create_dir(&with_model_dir).expect("mkdir");
    let mut with_model = accepted.clone();
    with_model.symbols.push(moat::records::RecordSymbol {
        name: "BAYES_SPAM_HIGH".into(),
        score: 6.0,
    });
    with_model.score += 6.0;
    with_model.action = "add_header".into();
    let with_model_path = with_model_dir.join(format!("{}.json", with_model.id));
    std::fs::write(
        &with_model_path,
        serde_json::to_vec(&with_model).expect("json"),
    )
    .expect("write");
    std::fs::copy(
        records_dir.join(format!("{}.eml", accepted.id)),
        with_model_path.with_extension("eml"),
    )
    .expect("copy");
    let (v, code) = replay(&with_model_path, &cfg, None).await;
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["not_replayed"][0], "BAYES_SPAM_HIGH", "{v:#}");

    // The same record without its answers: every lookup gets SERVFAIL, and the verdict
    // differs (no blocklist hits, SPF and DKIM temperror).
    let stripped_dir = dir.path().join("stripped");
    std::fs::create_dir(&stripped_dir).expect("mkdir");
    let mut stripped = accepted.clone();
    stripped.dns.clear();
    let stripped_path = stripped_dir.join(format!("{}.json", stripped.id));
    std::fs::write(&stripped_path, serde_json::to_vec(&stripped).expect("json")).expect("write");
    std::fs::copy(
        records_dir.join(format!("{}.eml", accepted.id)),
        stripped_path.with_extension("eml"),
    )
    .expect("copy");
    let (v, code) = replay(&stripped_path, &cfg, None).await;
    assert_eq!(code, 1, "{v:#}");
    let gone: Vec<&str> = v["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| c["replayed"].is_null())
        .filter_map(|c| c["name"].as_str())
        .collect();
    for s in ["RBL_TEST_XBL", "SPF_PASS", "DKIM_ALLOW"] {
        assert!(gone.contains(&s), "{s} should be gone: {v:#}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_refused_transactions_are_recorded_by_default_and_replay_needs_the_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = Sink::start().await;
    let mut config: Option<Config> = None;
    let moat = Moat::builder()
        .upstream(&sink)
        .with(|c| {
            c.records.enabled = true;
            c.records.dir = dir.path().join("r");
            c.records.message = false;
            config = Some(c.clone());
        })
        .start()
        .await;
    let config = config.expect("config");
    let gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
    let mut c = moat.client().await;
    c.ehlo().await;
    let ok = crlf("From: a@example.test\nSubject: hello\n\nhi\n");
    assert_eq!(
        c.send_message("a@example.test", &["b@example.test"], &ok)
            .await
            .code,
        250
    );
    let spam = crlf(&format!("From: a@example.test\nSubject: x\n\n{gtube}\n"));
    assert_eq!(
        c.send_message("a@example.test", &["b@example.test"], &spam)
            .await
            .code,
        550
    );
    let store = RecordDir::records(&config.records);
    let records = wait_for(&store, 1).await;
    // Give a wrongly kept accepted record the time to show up too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let records_now = store.list().expect("list");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records_now.len(), 1, "the accepted message got a record");
    assert_eq!(records[0].action, "reject");
    assert!(has(&records[0], "GTUBE"), "{:?}", records[0].symbols);
    // records.message = false: no .eml, and a replay says why it cannot run.
    let path = dir.path().join("r").join(format!("{}.json", records[0].id));
    assert!(!path.with_extension("eml").exists());
    let args = CheckArgs {
        replay: Some(path),
        ..Default::default()
    };
    let err = run(&args).await.expect_err("no message");
    assert!(err.to_string().contains("no message next to it"), "{err:#}");
}

/// The allow-list short-circuit is the transaction driver's, so `serve` and `--replay` agree:
/// an allow-listed client's later checks are skipped live, and skipped in the replay too.
#[tokio::test(flavor = "multi_thread")]
async fn an_allow_listed_client_gets_the_same_score_card_live_and_in_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records_dir = dir.path().join("records");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(rules.join("lists")).expect("mkdir");
    std::fs::copy(
        fixtures().join("rules-dnsbl/dnsbl.toml"),
        rules.join("dnsbl.toml"),
    )
    .expect("copy");
    std::fs::write(rules.join("lists/allow_ip.txt"), "127.0.0.3\n").expect("write list");
    let (moat, dns, _sink, config) = recording_moat(&rules, &records_dir).await;

    // A listed sender domain and listed links: refused from any other client (see above).
    let mut c = Client::connect_from(moat.addr, "127.0.0.3").await;
    assert_eq!(c.cmd("EHLO spammer.example").await.code, 250);
    let spam =
        crlf("From: x@spammer.example\nSubject: deal\n\nSee http://evil-links.example/offer now\n");
    c.expect_message("x@spammer.example", &["bob@rcpt.test"], &spam, "250")
        .await;
    c.cmd("QUIT").await;

    let records = wait_for(&RecordDir::records(&config.records), 1).await;
    let [live] = records.as_slice() else {
        panic!("one record expected: {records:#?}")
    };
    assert_eq!(live.action, "accept", "{live:?}");
    assert!(has(live, "ALLOWLIST_IP"), "{live:?}");
    for skipped in ["DBL_TEST", "URIBL_TEST_BLACK"] {
        assert!(
            !has(live, skipped),
            "{skipped} ran after the allow entry: {live:?}"
        );
    }

    drop(moat);
    drop(dns);
    let path = records_dir.join(format!("{}.json", live.id));
    let (v, code) = replay(&path, &replay_config(dir.path(), &rules), None).await;
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["identical"], true, "{v:#}");
    assert_eq!(v["changes"], serde_json::json!([]), "{v:#}");
    assert_eq!(v["replayed"]["action"], "accept", "{v:#}");
    assert_eq!(v["replayed"]["score"], live.score, "{v:#}");
}
