//! openspf.org's RFC 7208 test suite (release 2014.04, 203 tests) through `moat check`.
//!
//! Driver conventions (the suite's header and its reference driver): every `SPF` entry is
//! served as TXT unless the name has TXT data of its own (`TXT: NONE` stops that); records
//! listed before `TIMEOUT` still answer for their own type; an empty `mailfrom` is checked as
//! `postmaster@<helo>`; `unknown` means permerror and `error` temperror. The explanation is
//! compared too where a test gives one (case-insensitively: the suite writes `%{ir}` nibbles
//! of IPv6 in upper case, RFC 7208 7.4's example in lower case).

use super::{args, checker, documents, suite};
use crate::support::dns::TestDns;
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, TXT};
use hickory_server::proto::rr::{Name, RData, Record};
use serde_yaml::Value;
use std::collections::HashSet;
use std::net::IpAddr;

/// A name in the suite, which may hold any octets (`foo:bar/baz`, spaces, `%`).
fn name(text: &str) -> Name {
    let trimmed = text.trim_end_matches('.');
    if trimmed.is_empty() {
        return Name::root();
    }
    Name::from_labels(trimmed.split('.').map(str::as_bytes)).expect("suite name")
}

/// A YAML string as the octets a zone would hold: `\xEF` escapes are code points U+00EF,
/// served as their UTF-8 (non-ASCII either way, which is what those tests are about).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a string: {other:?}"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items.iter().map(text).collect(),
        other => vec![text(other)],
    }
}

/// The scenario's zone: records and the names that never answer.
fn zone(zonedata: &Value) -> (Vec<Record>, Vec<Name>) {
    let mut records = Vec::new();
    let mut silent = Vec::new();
    let Some(map) = zonedata.as_mapping() else {
        return (records, silent);
    };
    for (owner, entries) in map {
        let owner_text = text(owner);
        let owner = name(&owner_text);
        let entries = entries.as_sequence().cloned().unwrap_or_default();
        let has_txt = entries
            .iter()
            .any(|e| e.as_mapping().is_some_and(|m| m.contains_key("TXT")));
        let mut add = |data: RData| records.push(Record::from_rdata(owner.clone(), 60, data));
        for entry in &entries {
            if entry.as_str() == Some("TIMEOUT") {
                silent.push(owner.clone());
                continue;
            }
            let Some(m) = entry.as_mapping() else {
                panic!("{owner_text}: unexpected entry {entry:?}");
            };
            for (kind, value) in m {
                match kind.as_str().expect("record type") {
                    "A" => add(RData::A(A(text(value).parse().expect("A")))),
                    "AAAA" => add(RData::AAAA(AAAA(text(value).parse().expect("AAAA")))),
                    "MX" => {
                        let pair = value.as_sequence().expect("MX pair");
                        let pref = pair[0].as_u64().expect("MX preference") as u16;
                        add(RData::MX(MX::new(pref, name(&text(&pair[1])))));
                    }
                    "PTR" => add(RData::PTR(PTR(name(&text(value))))),
                    "CNAME" => add(RData::CNAME(CNAME(name(&text(value))))),
                    "TXT" if value.as_str() == Some("NONE") => {}
                    "TXT" => add(RData::TXT(TXT::new(strings(value)))),
                    // RFC 7208 3.1: type 99 is gone; the suite's SPF records are served as TXT.
                    "SPF" if !has_txt => add(RData::TXT(TXT::new(strings(value)))),
                    "SPF" => {}
                    other => panic!("{owner_text}: unknown record type {other}"),
                }
            }
        }
    }
    (records, silent)
}

fn expected(v: &Value) -> Vec<String> {
    strings(v)
        .into_iter()
        .map(|r| match r.as_str() {
            "unknown" => "permerror".to_string(),
            "error" => "temperror".to_string(),
            _ => r,
        })
        .collect()
}

/// A message to carry the envelope through `moat check`'s data stage; its From domain is
/// in none of the suite's zones.
const MESSAGE: &[u8] =
    b"From: <conformance@spf-suite.invalid>\r\nSubject: SPF conformance\r\n\r\nbody\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn openspf_rfc7208_suite() {
    let Some(path) = suite("spf/rfc7208-tests.yml") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut total = 0;
    let mut wrong: Vec<String> = Vec::new();
    for doc in documents(&path) {
        let scenario = doc["description"].as_str().unwrap_or("?").to_string();
        let (records, silent) = zone(&doc["zonedata"]);
        let dns = TestDns::start_records(records, silent).await;
        let checker = checker(dns.addr, dir.path()).await;
        let tests = doc["tests"].as_mapping().expect("tests");
        let mut seen = HashSet::new();
        for (case, t) in tests {
            let case = text(case);
            assert!(seen.insert(case.clone()), "duplicate case {case}");
            total += 1;
            let ip: IpAddr = text(&t["host"]).parse().expect("host");
            let mut a = args(dns.addr, &dir.path().join("moat.toml"));
            a.client_ip = Some(ip);
            a.helo = Some(text(&t["helo"]));
            a.mail_from = Some(text(&t["mailfrom"]));
            let report = checker.check(&a, MESSAGE).await.expect("check");
            let json: serde_json::Value =
                serde_json::from_str(&report.output).expect("json report");
            let got = json["spf"]["result"].as_str().unwrap_or("").to_string();
            let want = expected(&t["result"]);
            if !want.contains(&got) {
                wrong.push(format!(
                    "{scenario} / {case}: got {got} ({}), expected {}",
                    json["spf"]["detail"].as_str().unwrap_or("-"),
                    want.join(" or ")
                ));
                continue;
            }
            if let Some(exp) = t.get("explanation").map(text) {
                let got_exp = json["spf"]["explanation"].as_str();
                // DEFAULT: the domain gave no usable explanation; moat then has none.
                let right = match (exp.as_str(), got_exp) {
                    ("DEFAULT", None) => true,
                    (e, Some(g)) => e.eq_ignore_ascii_case(g),
                    _ => false,
                };
                if !right {
                    wrong.push(format!(
                        "{scenario} / {case}: explanation {got_exp:?}, expected {exp:?}"
                    ));
                }
            }
        }
    }
    eprintln!(
        "openspf RFC 7208 suite: {} of {total} right",
        total - wrong.len()
    );
    assert_eq!(total, 203, "the suite has 203 tests");
    assert!(
        wrong.is_empty(),
        "{} of {total} SPF tests wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
