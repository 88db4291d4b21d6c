//! ValiMail's ARC validation suite (RFC 8617, 171 tests) through `moat check`.
//!
//! Each scenario publishes the sealers' DKIM keys (`txt-records`); each test gives a message
//! (LF line ends, sent as CRLF) and the chain validation result `cv` that RFC 8617 5.2
//! requires. An empty `cv` means fail, as OpenARC and Mail::DKIM read it.

use super::{args, checker, documents, suite};
use crate::support::dns::{txt_record, TestDns};
use hickory_server::proto::rr::Name;
use serde_yaml::Value;

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => panic!("not a string: {other:?}"),
    }
}

fn crlf(message: &str) -> Vec<u8> {
    message
        .replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn valimail_arc_validation_suite() {
    let Some(path) = suite("arc/arc-draft-validation-tests.yml") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut total = 0;
    let mut names = std::collections::HashSet::new();
    let mut wrong: Vec<String> = Vec::new();
    for doc in documents(&path) {
        let scenario = doc["description"]
            .as_str()
            .unwrap_or("?")
            .trim()
            .to_string();
        let mut records = Vec::new();
        if let Some(map) = doc["txt-records"].as_mapping() {
            for (owner, value) in map {
                let owner = Name::from_ascii(format!("{}.", text(owner).trim_end_matches('.')))
                    .expect("owner");
                records.push(txt_record(owner, &text(value)));
            }
        }
        let dns = TestDns::start_records(records, Vec::new()).await;
        let checker = checker(dns.addr, dir.path()).await;
        let tests = doc["tests"].as_mapping().expect("tests");
        for (case, t) in tests {
            let case = text(case);
            total += 1;
            names.insert(case.split('#').next().unwrap_or("").to_string());
            let message = crlf(&text(&t["message"]));
            let want = match text(&t["cv"]).trim().to_ascii_lowercase().as_str() {
                "" => "fail".to_string(),
                cv => cv.to_string(),
            };
            let a = args(dns.addr, &dir.path().join("moat.toml"));
            let got = match checker.check(&a, &message).await {
                Ok(report) => {
                    let json: serde_json::Value =
                        serde_json::from_str(&report.output).expect("json report");
                    format!(
                        "{} ({})",
                        json["arc"]["result"].as_str().unwrap_or(""),
                        json["arc"]["detail"].as_str().unwrap_or("-")
                    )
                }
                // `moat check` refuses input that is not a message at all (no header): there
                // is no chain to validate.
                Err(e) => format!("none ({e})"),
            };
            let got_cv = got.split(' ').next().unwrap_or("");
            if got_cv != want {
                wrong.push(format!("{scenario} / {case}: got {got}, expected {want}"));
            }
        }
    }
    eprintln!(
        "ValiMail ARC validation suite: {} of {total} right ({} test names, four of them \
         given twice)",
        total - wrong.len(),
        names.len()
    );
    assert_eq!(names.len(), 171, "the suite has 171 tests");
    assert!(
        wrong.is_empty(),
        "{} of {total} ARC tests wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
