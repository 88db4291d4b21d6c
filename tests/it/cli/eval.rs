//! `moat eval` on small folders of ham and spam: the counts per action, false rejects and
//! flags, per-rule hits, the JSON schema, the exit code that gates CI jobs, and the comparison
//! with a baseline ruleset.

use std::path::{Path, PathBuf};
use std::process::Command;

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join(name), text.replace('\n', "\r\n")).expect("write");
}

/// ham/ with three plain messages (one in a maildir-style subfolder), spam/ with GTUBE and
/// one plain message the rules miss.
fn corpus(root: &Path) -> (PathBuf, PathBuf) {
    let (ham, spam) = (root.join("ham"), root.join("spam"));
    for i in 0..2 {
        write(&ham, &format!("{i}.eml"), &format!("From: a@example.test\nSubject: minutes {i}\n\nSee you at the meeting on zebraword day.\n"));
    }
    write(
        &ham.join("cur"),
        "2.eml",
        "From: b@example.test\nSubject: lunch\n\nNoon?\n",
    );
    write(
        &spam,
        "gtube.eml",
        &format!("From: x@example.test\nSubject: t\n\n{GTUBE}\n"),
    );
    write(
        &spam,
        "plain.eml",
        "From: y@example.test\nSubject: hello\n\nhello there\n",
    );
    (ham, spam)
}

/// `moat eval --ham HAM --spam SPAM ARGS...`: exit code and standard output.
fn eval(ham: &Path, spam: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_moat"))
        .arg("eval")
        .arg("--ham")
        .arg(ham)
        .arg("--spam")
        .arg(spam)
        .args(args)
        .output()
        .expect("run moat eval");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn counts_actions_and_rules_as_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ham, spam) = corpus(dir.path());
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let (code, out) = eval(&ham, &spam, &["--rules", rules, "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["messages"], 5);
    assert!(v["seconds"].as_f64().is_some());
    assert_eq!(v["ham"]["total"], 3);
    assert_eq!(v["ham"]["accept"], 3);
    assert_eq!(v["ham"]["reject"], 0);
    assert_eq!(v["spam"]["total"], 2);
    assert_eq!(v["spam"]["reject"], 1, "GTUBE is refused");
    assert_eq!(v["spam"]["accept"], 1);
    assert_eq!(v["missed_spam"], 1);
    for key in ["tempfail", "add_header"] {
        assert!(v["ham"][key].is_u64() && v["spam"][key].is_u64(), "{key}");
    }
    let gtube = v["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["name"] == "GTUBE")
        .expect("GTUBE listed");
    assert_eq!(
        (gtube["ham_hits"].as_u64(), gtube["spam_hits"].as_u64()),
        (Some(0), Some(1))
    );
}

#[test]
fn false_rejects_over_the_limit_fail_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ham, spam) = corpus(dir.path());
    // A GTUBE message filed as ham is a false reject.
    write(
        &ham,
        "oops.eml",
        &format!("From: z@example.test\nSubject: t\n\n{GTUBE}\n"),
    );
    let (code, out) = eval(&ham, &spam, &["--max-false-rejects", "0"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("false rejects (ham refused): 1"), "{out}");
    assert!(out.contains("FAIL: 1 ham rejected"), "{out}");
    let (code, _) = eval(&ham, &spam, &["--max-false-rejects", "1"]);
    assert_eq!(code, 0);
    // A missing folder is a usage error.
    let (code, _) = eval(Path::new("/nonexistent/ham"), &spam, &[]);
    assert_eq!(code, 2);
}

#[test]
fn baseline_comparison_blames_the_new_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ham, spam) = corpus(dir.path());
    // The edited ruleset: the shipped one plus a rule that hits the ham's "zebraword".
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let edited = dir.path().join("edited");
    for f in moat::rules::files_under(&shipped) {
        let to = edited.join(f.strip_prefix(&shipped).expect("under"));
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&f, &to).expect("copy");
    }
    std::fs::write(
        edited.join("60-test.toml"),
        "[rule.ZEBRA_WORD]\nkind = \"body\"\nregex = '\\bzebraword\\b'\nscore = 7.0\ndescription = \"test\"\n",
    )
    .expect("write rule");
    let (code, out) = eval(
        &ham,
        &spam,
        &[
            "--rules",
            edited.to_str().unwrap(),
            "--baseline",
            shipped.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(
        v["ham"]["add_header"], 2,
        "the new rule flags two ham messages"
    );
    assert_eq!(v["baseline"]["ham"]["accept"], 3);
    let zebra = v["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["name"] == "ZEBRA_WORD")
        .expect("ZEBRA_WORD listed");
    assert_eq!(zebra["ham_hits"], 2);
    assert_eq!(
        zebra["fp_delta"], 2,
        "both new false positives are put down to it"
    );
    assert_eq!(zebra["fn_delta"], 0);
}
