//! The rule language: parsing `rules/*.toml` into rules, validating them, compiling their
//! regexes into small `RegexSet`s per kind (per header name for header rules), and evaluating a
//! message against them. No I/O: the loader hands in file texts with their names.
//!
//! A message is scanned once per kind by a few small RegexSets, not once per rule; the
//! individual regex runs only for the rules that hit, to show what matched
//! (`moat check --explain`).

mod compile;
mod evaluate;
mod scan;
mod schema;

pub use compile::compile;
pub use schema::{EnvField, Kind, RuleDef, RuleError, Source};

use super::meta::{self, Expr};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use scan::Scanner;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// How much of a body or message the text kinds scan (SpamAssassin scans the first 50 KB of
/// each part; spam puts its payload early).
const SCAN_LIMIT: usize = 512 * 1024;
/// Longest matched text kept for reports.
const MATCH_SHOWN: usize = 80;
/// Compiled program size allowed per RegexSet (the default is too small for a large ruleset).
const REGEX_SIZE_LIMIT: usize = 64 << 20;

/// Patterns per RegexSet. One lazy DFA over all patterns of a kind has a state for every
/// combination of partial matches, so new mail keeps building states (determinisation was half
/// of the scanner's time and each thread builds its own); sets of 2-12 patterns scanned the
/// corpus 2.6x faster with 2 threads than one set of 60 (bench/scanner.sh).
const SET_CHUNK: usize = 8;

/// Lazy-DFA cache per RegexSet and thread: when it fills up too often the search falls back to
/// the slow PikeVM (the default 2 MiB did on the corpus); a set of `SET_CHUNK` patterns stays
/// far below this, which bounds the worst case.
const DFA_CACHE_LIMIT: usize = 32 << 20;

/// A rule after validation.
#[derive(Debug, Clone)]
pub struct Rule {
    /// UPPER_SNAKE name; `__` helpers emit no symbol.
    pub name: String,
    /// Score (0 for helpers).
    pub score: f64,
    /// Description.
    pub description: String,
    /// Kind.
    pub kind: Kind,
    multipart: Option<bool>,
}

/// A validated, compiled ruleset.
#[derive(Debug, Clone, Default)]
pub struct CompiledRules {
    /// Every enabled rule.
    pub rules: Vec<Rule>,
    headers: Vec<(String, Scanner)>,
    all_headers: Option<Scanner>,
    exists: Vec<(String, bool, usize)>,
    kinds: Vec<(Kind, Scanner)>,
    envelope: Vec<(EnvField, Scanner)>,
    metas: Vec<(usize, Expr)>,
    /// Score overrides for symbols emitted by code (from `[score]` tables).
    pub symbol_scores: BTreeMap<String, f64>,
}

/// What the rules see of a transaction.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// The parsed message.
    pub parsed: &'a mail_parser::Message<'a>,
    /// The raw message.
    pub raw: &'a [u8],
    /// The HELO name.
    pub helo: &'a str,
    /// The envelope sender.
    pub sender: &'a str,
    /// The recipients.
    pub recipients: &'a [String],
    /// The client's verified name, or "".
    pub client_name: &'a str,
}

/// One rule that hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The rule's name.
    pub name: String,
    /// Its score.
    pub score: f64,
    /// Its description.
    pub description: String,
    /// What matched (truncated), for regex rules.
    pub matched: Option<String>,
}

#[cfg(test)]
mod tests {

    #[test]
    fn rules_in_every_set_chunk_hit() {
        // More body rules than one set holds: the hits must map back to the right rules
        // across the chunk boundaries.
        let n = SET_CHUNK * 2 + 3;
        let text: String = (0..n)
            .map(|i| {
                format!(
                    "[rule.WORD_{i}]\nkind = \"body\"\nregex = '\\bword{i}x\\b'\nscore = 1.0\n\n"
                )
            })
            .collect();
        let rules = compile_ok(&text);
        let want = [0, SET_CHUNK - 1, SET_CHUNK, n - 1];
        let body: Vec<String> = want.iter().map(|i| format!("word{i}x")).collect();
        let msg = format!("Subject: s\n\n{}\n", body.join(" "));
        let mut got = eval(&rules, &msg);
        got.sort();
        let mut expected: Vec<String> = want.iter().map(|i| format!("WORD_{i}")).collect();
        expected.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn word_boundaries_are_ascii() {
        assert_eq!(ascii_word_boundaries(r"\bfoo\B"), r"(?-u:\b)foo(?-u:\B)");
        // An escaped backslash followed by b is a literal backslash and b, not a boundary.
        assert_eq!(ascii_word_boundaries(r"a\\b\d"), r"a\\b\d");
        let re = regex::Regex::new(&ascii_word_boundaries(r"(?i)\bviagra\b")).unwrap();
        assert!(re.is_match("buy VIAGRA now"));
        assert!(re.is_match("café viagra"));
        assert!(!re.is_match("xviagra"));
    }

    use super::scan::ascii_word_boundaries;
    use super::*;

    fn src(label: &str, text: &str) -> Source {
        Source {
            label: label.into(),
            text: text.into(),
        }
    }

    fn compile_ok(text: &str) -> CompiledRules {
        compile(&[src("r.toml", text)], &HashSet::new()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn eval(rules: &CompiledRules, msg: &str) -> Vec<String> {
        let raw = msg.replace('\n', "\r\n");
        let parsed = mail_parser::MessageParser::default()
            .parse(raw.as_bytes())
            .unwrap();
        let v = View {
            parsed: &parsed,
            raw: raw.as_bytes(),
            helo: "mail.example.test",
            sender: "x@example.test",
            recipients: &["a@rcpt.test".to_string()],
            client_name: "",
        };
        rules.evaluate(&v).into_iter().map(|h| h.name).collect()
    }

    const RULES: &str = r#"
[rule.SUBJ_CAPS]
kind = "header"
header = "Subject"
regex = '^[^a-z]{10,}$'
score = 1.5
description = "caps"

[rule.SUBJ_ENCODED_WIN]
kind = "header"
header = "subject"
regex = 'winner'
nocase = true
score = 1.0

[rule.NO_DATE]
kind = "header"
header = "Date"
exists = false
score = 0.5

[rule.__BODY_PILLS]
kind = "body"
regex = '(?i)\bp[i1]lls\b'

[rule.BODY_PILLS]
kind = "body"
regex = '(?i)\bp[i1]lls\b'
score = 2.0

[rule.URI_SHORT]
kind = "uri"
regex = '(?i)^https?://(bit\.ly|tinyurl\.com)/'
score = 1.0

[rule.ENV_HELO]
kind = "envelope"
field = "helo"
regex = '^mail\.'
score = 0.1

[rule.FULL_X]
kind = "full"
regex = 'X-Mailer: spamtool'
score = 3.0

[rule.META_TWO]
kind = "meta"
expr = "(SUBJ_CAPS + __BODY_PILLS + URI_SHORT) >= 2"
score = 2.5

[rule.META_OF_META]
kind = "meta"
expr = "META_TWO && !NO_DATE"
score = 0.5

[rule.MULTI_ONLY]
kind = "body"
regex = 'pills'
multipart = true
score = 9.0
"#;

    #[test]
    fn every_kind_hits() {
        let r = compile_ok(RULES);
        let got = eval(
            &r,
            "From: a@b.test\nSubject: =?utf-8?q?WINNER_WINNER_!!!?=\nX-Mailer: spamtool\n\nBuy p1lls now http://bit.ly/abc\n",
        );
        // Hits come in rule order: files in load order, rules by name within a file.
        assert_eq!(
            got,
            vec![
                "BODY_PILLS",
                "ENV_HELO",
                "FULL_X",
                "META_TWO",
                "NO_DATE",
                "SUBJ_CAPS",
                "SUBJ_ENCODED_WIN",
                "URI_SHORT"
            ]
        );
        let got = eval(
            &r,
            "From: a@b.test\nDate: Mon, 30 Nov 2026 00:00:00 +0000\nSubject: hello\n\nhi\n",
        );
        assert_eq!(got, vec!["ENV_HELO"]);
    }

    #[test]
    fn rawbody_and_attachment_kinds() {
        let rules = compile_ok(
            "[rule.RAW_B64]\nkind = \"rawbody\"\nregex = 'aGVsbG8g'\nscore = 1.0\n\
             [rule.ATT_EXE]\nkind = \"attachment\"\nregex = '(?i)\\.exe$'\nscore = 5.0\n\
             [rule.BODY_HELLO]\nkind = \"body\"\nregex = 'hello world'\nscore = 1.0\n",
        );
        let msg = "From: a@b.test\nSubject: x\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n--b\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\naGVsbG8gd29ybGQ=\n--b\nContent-Type: application/octet-stream; name=\"=?utf-8?q?invoice=2Epdf=2Eexe?=\"\nContent-Disposition: attachment; filename=\"=?utf-8?q?invoice=2Epdf=2Eexe?=\"\n\nTVqQ\n--b--\n";
        // The raw body keeps the base64; the body kind sees it decoded; the attachment name is
        // decoded from RFC 2047.
        assert_eq!(eval(&rules, msg), vec!["ATT_EXE", "BODY_HELLO", "RAW_B64"]);
    }

    #[test]
    fn overrides_and_disabling() {
        let local = "[score]\nSUBJ_CAPS = 4.0\nSPF_FAIL = 9.0\ndisabled = [\"FULL_X\"]\n";
        let symbols: HashSet<String> = ["SPF_FAIL".to_string()].into();
        // `disabled` must be a top-level key, so it goes before any table.
        let local = format!(
            "disabled = [\"FULL_X\"]\n{}",
            local.replace("disabled = [\"FULL_X\"]\n", "")
        );
        let r = compile(&[src("a.toml", RULES), src("local.toml", &local)], &symbols).unwrap();
        assert_eq!(
            r.rules
                .iter()
                .find(|x| x.name == "SUBJ_CAPS")
                .unwrap()
                .score,
            4.0
        );
        assert!(r.rules.iter().all(|x| x.name != "FULL_X"));
        assert_eq!(r.symbol_scores.get("SPF_FAIL"), Some(&9.0));
    }

    #[test]
    fn errors_name_file_line_and_rule() {
        let bad = r#"
[rule.BAD_RE]
kind = "body"
regex = '(unclosed'
score = 1.0

[rule.NO_SCORE]
kind = "body"
regex = 'x'

[rule.__HELPER]
kind = "body"
regex = 'x'
score = 2.0

[rule.META_UNKNOWN]
kind = "meta"
expr = "NOPE && BAD_RE"
score = 1.0

[rule.lower_case]
kind = "body"
regex = 'x'
score = 1.0
"#;
        let errs = compile(&[src("bad.toml", bad)], &HashSet::new()).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let want = [
            "bad.toml:2: rule BAD_RE: bad regex",
            "bad.toml:7: rule NO_SCORE: no score",
            "bad.toml:11: rule __HELPER: helper rules (__) carry no score",
            "bad.toml:16: rule META_UNKNOWN: expr names unknown rule NOPE",
            "bad.toml:21: rule lower_case: names are UPPER_SNAKE",
        ];
        for w in want {
            assert!(
                text.iter().any(|t| t.starts_with(w)),
                "{w} not in {text:#?}"
            );
        }
        let errs = compile(
            &[src(
                "t.toml",
                "[rule.X]\nkind = \"body\"\nregex = 'x'\nscore = 'high'\n",
            )],
            &HashSet::new(),
        )
        .unwrap_err();
        assert!(errs[0].to_string().starts_with("t.toml:4:9:"), "{errs:?}");
        let dup = compile(
            &[
                src("a.toml", "[rule.X]\nkind=\"body\"\nregex='x'\nscore=1.0\n"),
                src("b.toml", "[rule.X]\nkind=\"body\"\nregex='y'\nscore=1.0\n"),
            ],
            &HashSet::new(),
        )
        .unwrap_err();
        assert!(
            dup[0]
                .to_string()
                .contains("defined twice (also in a.toml)"),
            "{dup:?}"
        );
    }

    #[test]
    fn meta_cycles_are_refused() {
        let text = "[rule.A]\nkind=\"meta\"\nexpr=\"B\"\nscore=1.0\n[rule.B]\nkind=\"meta\"\nexpr=\"C || A\"\nscore=1.0\n[rule.C]\nkind=\"body\"\nregex='x'\nscore=1.0\n";
        let errs = compile(&[src("c.toml", text)], &HashSet::new()).unwrap_err();
        assert!(errs[0].message.contains("cycle: A -> B -> A"), "{errs:?}");
    }
}
