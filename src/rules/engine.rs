//! The rule language: parsing `rules/*.toml` into rules, validating them, compiling their
//! regexes into small `RegexSet`s per kind (per header name for header rules), and evaluating a
//! message against them. No I/O: the loader hands in file texts with their names.
//!
//! A message is scanned once per kind by a few small RegexSets, not once per rule; the
//! individual regex runs only for the rules that hit, to show what matched
//! (`moat check --explain`).

use super::meta::{self, Expr};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
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

/// What a rule looks at.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A named header, decoded (RFC 2047), every occurrence; `ALL` is the whole header block.
    Header,
    /// The decoded text of the text parts, HTML turned into text.
    Body,
    /// The body as sent (transfer encodings not undone).
    Rawbody,
    /// Each URL found in the text parts.
    Uri,
    /// The whole raw message.
    Full,
    /// An envelope field: helo, sender, recipients, client_name.
    Envelope,
    /// File names of attachments, decoded.
    Attachment,
    /// A boolean or counting expression over other rules.
    Meta,
}

/// The envelope fields an `envelope` rule can look at.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum EnvField {
    /// The HELO/EHLO name.
    Helo,
    /// The envelope sender.
    Sender,
    /// Each recipient.
    Recipients,
    /// The client's verified reverse DNS name (empty when it has none).
    ClientName,
}

/// One rule as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    /// What it looks at.
    pub kind: Kind,
    /// For `header`: the header name, or `ALL`.
    pub header: Option<String>,
    /// For `header`: match when the header is present (`true`) or absent (`false`) instead of
    /// a regex.
    pub exists: Option<bool>,
    /// For `envelope`: the field.
    pub field: Option<EnvField>,
    /// The regex (Rust syntax).
    pub regex: Option<String>,
    /// Case-insensitive matching.
    #[serde(default)]
    pub nocase: bool,
    /// For `meta`: the expression.
    pub expr: Option<String>,
    /// The score; required unless the name starts with `__`.
    pub score: Option<f64>,
    /// One line for reports.
    #[serde(default)]
    pub description: String,
    /// Only on multipart (`true`) or single-part (`false`) messages.
    pub multipart: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rule: BTreeMap<String, RuleDef>,
    /// Score overrides for rules (and for the symbols in symbols.toml).
    #[serde(default)]
    score: BTreeMap<String, f64>,
    /// Rules switched off.
    #[serde(default)]
    disabled: Vec<String>,
}

/// A rule file's name and text, as the loader read it.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file name for messages, e.g. `rules/20-body.toml`.
    pub label: String,
    /// Its contents.
    pub text: String,
}

/// One problem in the rule files: `file:line:column: what`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The file.
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// What is wrong, naming the rule.
    pub message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.file, self.message),
            (l, 0) => write!(f, "{}:{l}: {}", self.file, self.message),
            (l, c) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// The line of `[rule.NAME]` in a file, for errors about a rule.
fn rule_line(text: &str, name: &str) -> usize {
    let needle = format!("[rule.{name}]");
    text.lines()
        .position(|l| l.trim_start().starts_with(&needle))
        .map(|i| i + 1)
        .unwrap_or(0)
}

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

/// A rule's regex waiting to be compiled into a set: rule index, pattern, case-insensitive.
type Pending = (usize, String, bool);

/// The regexes of one kind (or one header name): small sets to find which match, and each
/// pattern's own regex to show what matched.
#[derive(Debug, Clone)]
struct Scanner {
    /// Sets of at most `SET_CHUNK` patterns, each with the number of its first pattern.
    sets: Vec<(usize, RegexSet)>,
    regexes: Vec<Regex>,
    rules: Vec<usize>,
}

impl Scanner {
    fn build(entries: Vec<Pending>) -> Result<Option<Scanner>, String> {
        if entries.is_empty() {
            return Ok(None);
        }
        let patterns: Vec<String> = entries
            .iter()
            .map(|(_, re, nocase)| {
                let re = ascii_word_boundaries(re);
                if *nocase {
                    format!("(?i:{re})")
                } else {
                    re
                }
            })
            .collect();
        let mut sets = Vec::new();
        for (n, chunk) in patterns.chunks(SET_CHUNK).enumerate() {
            let set = RegexSetBuilder::new(chunk)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(DFA_CACHE_LIMIT)
                .build()
                .map_err(|e| e.to_string())?;
            sets.push((n * SET_CHUNK, set));
        }
        let regexes = patterns
            .iter()
            .map(|p| {
                RegexBuilder::new(p)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Scanner {
            sets,
            regexes,
            rules: entries.into_iter().map(|(i, _, _)| i).collect(),
        }))
    }

    /// Marks the rules whose regex matches `text`, keeping the first match for reports.
    fn scan(&self, text: &str, hits: &mut HashMap<usize, Option<String>>) {
        let text = truncate(text, SCAN_LIMIT);
        let found = self
            .sets
            .iter()
            .flat_map(|(first, set)| set.matches(text).into_iter().map(move |i| first + i));
        for i in found {
            let rule = self.rules[i];
            if hits.contains_key(&rule) {
                continue;
            }
            let shown = self.regexes[i]
                .find(text)
                .map(|m| truncate(m.as_str(), MATCH_SHOWN).to_string());
            hits.insert(rule, shown);
        }
    }
}

/// `\b` and `\B` become ASCII word boundaries. A Unicode word boundary stops the lazy DFA at the
/// first non-ASCII byte of a message, and the fallback (PikeVM) made scanning 3x slower on the
/// corpus; spam words are ASCII, and a non-ASCII letter next to one now counts as a boundary.
fn ascii_word_boundaries(re: &str) -> String {
    let mut out = String::with_capacity(re.len() + 16);
    let mut chars = re.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('b') => out.push_str("(?-u:\\b)"),
            Some('B') => out.push_str("(?-u:\\B)"),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !n.starts_with(|c: char| c.is_ascii_digit())
}

/// Parses, validates and compiles rule files (given in load order). `symbols` are the names
/// code emits, which `[score]` may override. Returns every problem found, not just the first.
pub fn compile(
    sources: &[Source],
    symbols: &HashSet<String>,
) -> Result<CompiledRules, Vec<RuleError>> {
    let mut errors = Vec::new();
    let mut defs: Vec<(String, RuleDef, usize)> = Vec::new(); // name, def, source index
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut overrides: Vec<(String, f64, usize)> = Vec::new();
    let mut disabled: Vec<(String, usize)> = Vec::new();
    for (si, src) in sources.iter().enumerate() {
        let file: RuleFile = match toml::from_str(&src.text) {
            Ok(f) => f,
            Err(e) => {
                let (line, column) = e
                    .span()
                    .map(|s| line_col(&src.text, s.start))
                    .unwrap_or((0, 0));
                errors.push(RuleError {
                    file: src.label.clone(),
                    line,
                    column,
                    message: e.message().trim().to_string(),
                });
                continue;
            }
        };
        for (name, def) in file.rule {
            let line = rule_line(&src.text, &name);
            let err = |message: String| RuleError {
                file: src.label.clone(),
                line,
                column: 0,
                message,
            };
            if let Some(prev) = seen.get(&name) {
                errors.push(err(format!(
                    "rule {name}: defined twice (also in {})",
                    sources[*prev].label
                )));
                continue;
            }
            seen.insert(name.clone(), si);
            if !valid_name(&name) {
                errors.push(err(format!(
                    "rule {name}: names are UPPER_SNAKE (A-Z, 0-9, _)"
                )));
            }
            let helper = name.starts_with("__");
            match (helper, def.score) {
                (false, None) => errors.push(err(format!(
                    "rule {name}: no score (every rule states its score)"
                ))),
                (true, Some(s)) if s != 0.0 => errors.push(err(format!(
                    "rule {name}: helper rules (__) carry no score"
                ))),
                (_, Some(s)) if !s.is_finite() => {
                    errors.push(err(format!("rule {name}: score is not a number")))
                }
                _ => {}
            }
            let need = |ok: bool, what: &str, errors: &mut Vec<RuleError>| {
                if !ok {
                    errors.push(err(format!("rule {name}: {what}")));
                }
            };
            match def.kind {
                Kind::Meta => {
                    need(def.expr.is_some(), "a meta rule needs expr", &mut errors);
                    need(def.regex.is_none(), "a meta rule has no regex", &mut errors);
                }
                Kind::Header => {
                    need(
                        def.header.is_some(),
                        "a header rule needs header",
                        &mut errors,
                    );
                    need(
                        def.regex.is_some() != def.exists.is_some(),
                        "a header rule needs either regex or exists",
                        &mut errors,
                    );
                }
                Kind::Envelope => {
                    need(
                        def.field.is_some(),
                        "an envelope rule needs field",
                        &mut errors,
                    );
                    need(
                        def.regex.is_some(),
                        "an envelope rule needs regex",
                        &mut errors,
                    );
                }
                _ => need(def.regex.is_some(), "needs regex", &mut errors),
            }
            if let Some(re) = &def.regex {
                if let Err(e) = RegexBuilder::new(re).size_limit(REGEX_SIZE_LIMIT).build() {
                    let first = e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    errors.push(err(format!("rule {name}: bad regex: {first}")));
                }
            }
            defs.push((name, def, si));
        }
        for (name, score) in file.score {
            overrides.push((name, score, si));
        }
        for name in file.disabled {
            disabled.push((name, si));
        }
    }
    // Overrides and disabling, in load order (local.toml last wins).
    let mut symbol_scores = BTreeMap::new();
    let mut scores: HashMap<String, f64> = HashMap::new();
    for (name, score, si) in overrides {
        let err = |m: String| RuleError {
            file: sources[si].label.clone(),
            line: 0,
            column: 0,
            message: m,
        };
        if !score.is_finite() {
            errors.push(err(format!("score.{name}: not a number")));
        } else if seen.contains_key(&name) {
            scores.insert(name, score);
        } else if symbols.contains(&name) {
            symbol_scores.insert(name, score);
        } else {
            errors.push(err(format!("score.{name}: no rule or symbol of that name")));
        }
    }
    let mut off: HashSet<String> = HashSet::new();
    for (name, si) in disabled {
        if seen.contains_key(&name) {
            off.insert(name);
        } else {
            errors.push(RuleError {
                file: sources[si].label.clone(),
                line: 0,
                column: 0,
                message: format!("disabled: no rule named {name}"),
            });
        }
    }
    defs.retain(|(n, _, _)| !off.contains(n));

    let index: HashMap<String, usize> = defs
        .iter()
        .enumerate()
        .map(|(i, (n, _, _))| (n.clone(), i))
        .collect();
    let mut rules = Vec::with_capacity(defs.len());
    let mut metas: Vec<(usize, Expr)> = Vec::new();
    let mut by_header: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
    let mut all_headers = Vec::new();
    let mut exists = Vec::new();
    let mut by_kind: BTreeMap<u8, (Kind, Vec<Pending>)> = BTreeMap::new();
    let mut by_field: BTreeMap<u8, (EnvField, Vec<Pending>)> = BTreeMap::new();
    for (i, (name, def, si)) in defs.iter().enumerate() {
        rules.push(Rule {
            name: name.clone(),
            score: scores.get(name).copied().or(def.score).unwrap_or(0.0),
            description: def.description.clone(),
            kind: def.kind,
            multipart: def.multipart,
        });
        let regex = def.regex.clone().unwrap_or_default();
        match def.kind {
            Kind::Meta => match def.expr.as_deref().map(meta::parse) {
                Some(Ok(e)) => {
                    let mut names = Vec::new();
                    e.names(&mut names);
                    for n in names {
                        if !index.contains_key(&n) && !off.contains(&n) {
                            errors.push(RuleError {
                                file: sources[*si].label.clone(),
                                line: rule_line(&sources[*si].text, name),
                                column: 0,
                                message: format!("rule {name}: expr names unknown rule {n}"),
                            });
                        }
                    }
                    metas.push((i, e));
                }
                Some(Err(why)) => errors.push(RuleError {
                    file: sources[*si].label.clone(),
                    line: rule_line(&sources[*si].text, name),
                    column: 0,
                    message: format!("rule {name}: bad expr: {why}"),
                }),
                None => {}
            },
            Kind::Header => {
                let h = def.header.clone().unwrap_or_default().to_ascii_lowercase();
                match def.exists {
                    Some(want) => exists.push((h, want, i)),
                    None if h == "all" => all_headers.push((i, regex, def.nocase)),
                    None => by_header.entry(h).or_default().push((i, regex, def.nocase)),
                }
            }
            Kind::Envelope => {
                let f = def.field.unwrap_or(EnvField::Helo);
                by_field
                    .entry(f as u8)
                    .or_insert((f, Vec::new()))
                    .1
                    .push((i, regex, def.nocase));
            }
            k => by_kind
                .entry(k as u8)
                .or_insert((k, Vec::new()))
                .1
                .push((i, regex, def.nocase)),
        }
    }
    // Meta rules may use meta rules: order them so each comes after what it names, and refuse
    // cycles (they would never settle).
    let metas = match order_metas(metas, &rules) {
        Ok(m) => m,
        Err(cycle) => {
            errors.push(RuleError {
                file: "rules".into(),
                line: 0,
                column: 0,
                message: format!("meta rules form a cycle: {}", cycle.join(" -> ")),
            });
            Vec::new()
        }
    };
    if !errors.is_empty() {
        errors.sort_by(|a, b| (a.file.as_str(), a.line).cmp(&(b.file.as_str(), b.line)));
        return Err(errors);
    }
    let compile_err = |e: String| {
        vec![RuleError {
            file: "rules".into(),
            line: 0,
            column: 0,
            message: format!("cannot compile the rule regexes together: {e}"),
        }]
    };
    let mut headers = Vec::new();
    for (h, entries) in by_header {
        if let Some(s) = Scanner::build(entries).map_err(compile_err)? {
            headers.push((h, s));
        }
    }
    let mut kinds = Vec::new();
    for (_, (k, entries)) in by_kind {
        if let Some(s) = Scanner::build(entries).map_err(compile_err)? {
            kinds.push((k, s));
        }
    }
    let mut envelope = Vec::new();
    for (_, (f, entries)) in by_field {
        if let Some(s) = Scanner::build(entries).map_err(compile_err)? {
            envelope.push((f, s));
        }
    }
    Ok(CompiledRules {
        rules,
        headers,
        all_headers: Scanner::build(all_headers).map_err(compile_err)?,
        exists,
        kinds,
        envelope,
        metas,
        symbol_scores,
    })
}

fn order_metas(
    metas: Vec<(usize, Expr)>,
    rules: &[Rule],
) -> Result<Vec<(usize, Expr)>, Vec<String>> {
    let name_of: HashMap<&str, usize> = metas
        .iter()
        .map(|(i, _)| (rules[*i].name.as_str(), *i))
        .collect();
    let deps: HashMap<usize, Vec<usize>> = metas
        .iter()
        .map(|(i, e)| {
            let mut names = Vec::new();
            e.names(&mut names);
            (
                *i,
                names
                    .iter()
                    .filter_map(|n| name_of.get(n.as_str()).copied())
                    .collect(),
            )
        })
        .collect();
    let mut order = Vec::new();
    let mut state: HashMap<usize, u8> = HashMap::new(); // 1 visiting, 2 done
    fn visit(
        i: usize,
        deps: &HashMap<usize, Vec<usize>>,
        state: &mut HashMap<usize, u8>,
        order: &mut Vec<usize>,
        path: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        match state.get(&i) {
            Some(2) => return Ok(()),
            Some(1) => {
                let start = path.iter().position(|&p| p == i).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(i);
                return Err(cycle);
            }
            _ => {}
        }
        state.insert(i, 1);
        path.push(i);
        for &d in deps.get(&i).map(Vec::as_slice).unwrap_or(&[]) {
            visit(d, deps, state, order, path)?;
        }
        path.pop();
        state.insert(i, 2);
        order.push(i);
        Ok(())
    }
    let mut keys: Vec<usize> = deps.keys().copied().collect();
    keys.sort();
    for i in keys {
        visit(i, &deps, &mut state, &mut order, &mut Vec::new())
            .map_err(|c| c.iter().map(|&i| rules[i].name.clone()).collect::<Vec<_>>())?;
    }
    let mut by_idx: HashMap<usize, Expr> = metas.into_iter().collect();
    Ok(order
        .into_iter()
        .filter_map(|i| by_idx.remove(&i).map(|e| (i, e)))
        .collect())
}

impl CompiledRules {
    /// Number of rules (helpers included).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Evaluates the rules on a message; returns the hits of scoring rules (not `__` helpers).
    pub fn evaluate(&self, v: &View<'_>) -> Vec<Hit> {
        let mut hits: HashMap<usize, Option<String>> = HashMap::new();
        let root = v.parsed.root_part();
        let mut header_text: HashMap<String, Vec<String>> = HashMap::new();
        let mut all = String::new();
        for h in root.headers() {
            let name = h.raw_name().to_ascii_lowercase();
            let value = h
                .parse_as(mail_parser::HeaderForm::Text)
                .value()
                .as_text()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(h.raw_value()).trim().to_string());
            all.push_str(h.raw_name());
            all.push_str(": ");
            all.push_str(&value);
            all.push('\n');
            header_text.entry(name).or_default().push(value);
        }
        for (name, scanner) in &self.headers {
            for value in header_text.get(name).map(Vec::as_slice).unwrap_or(&[]) {
                scanner.scan(value, &mut hits);
            }
        }
        if let Some(s) = &self.all_headers {
            s.scan(&all, &mut hits);
        }
        for (name, want, rule) in &self.exists {
            if header_text.contains_key(name) == *want {
                hits.insert(*rule, None);
            }
        }
        for (kind, scanner) in &self.kinds {
            match kind {
                Kind::Body => {
                    let body: String = v.parsed.text_bodies().collect::<Vec<_>>().join("\n");
                    scanner.scan(&body, &mut hits);
                }
                Kind::Rawbody => {
                    let start = (root.offset_body() as usize).min(v.raw.len());
                    scanner.scan(
                        &String::from_utf8_lossy(
                            &v.raw[start..v.raw.len().min(start + SCAN_LIMIT)],
                        ),
                        &mut hits,
                    );
                }
                Kind::Full => scanner.scan(
                    &String::from_utf8_lossy(&v.raw[..v.raw.len().min(SCAN_LIMIT)]),
                    &mut hits,
                ),
                Kind::Uri => {
                    for url in crate::rules::message::urls(v.parsed) {
                        scanner.scan(&url, &mut hits);
                    }
                }
                Kind::Attachment => {
                    for a in v.parsed.attachments() {
                        if let Some(name) = a.attachment_name() {
                            scanner.scan(name, &mut hits);
                        }
                    }
                }
                _ => {}
            }
        }
        for (field, scanner) in &self.envelope {
            match field {
                EnvField::Helo => scanner.scan(v.helo, &mut hits),
                EnvField::Sender => scanner.scan(v.sender, &mut hits),
                EnvField::ClientName => scanner.scan(v.client_name, &mut hits),
                EnvField::Recipients => {
                    for r in v.recipients {
                        scanner.scan(r, &mut hits);
                    }
                }
            }
        }
        let multipart = root.is_multipart();
        hits.retain(|i, _| self.rules[*i].multipart.is_none_or(|m| m == multipart));
        for (i, expr) in &self.metas {
            let names: HashSet<&str> = hits.keys().map(|k| self.rules[*k].name.as_str()).collect();
            if expr.eval(&|n| names.contains(n)) != 0
                && self.rules[*i].multipart.is_none_or(|m| m == multipart)
            {
                hits.insert(*i, None);
            }
        }
        let mut out: Vec<(usize, Hit)> = hits
            .into_iter()
            .filter(|(i, _)| !self.rules[*i].name.starts_with("__"))
            .map(|(i, matched)| {
                let r = &self.rules[i];
                (
                    i,
                    Hit {
                        name: r.name.clone(),
                        score: r.score,
                        description: r.description.clone(),
                        matched,
                    },
                )
            })
            .collect();
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, h)| h).collect()
    }
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
