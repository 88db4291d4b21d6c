//! The scanner: a kind's regexes in small `RegexSet`s, so a message is scanned once per kind
//! and each rule's own regex runs only to show what matched.

use super::*;

/// A rule's regex waiting to be compiled into a set: rule index, pattern, case-insensitive.
pub(super) type Pending = (usize, String, bool);

/// The regexes of one kind (or one header name): small sets to find which match, and each
/// pattern's own regex to show what matched.
#[derive(Debug, Clone)]
pub(super) struct Scanner {
    /// Sets of at most `SET_CHUNK` patterns, each with the number of its first pattern.
    pub(super) sets: Vec<(usize, RegexSet)>,
    pub(super) regexes: Vec<Regex>,
    pub(super) rules: Vec<usize>,
}

impl Scanner {
    pub(super) fn build(entries: Vec<Pending>) -> Result<Option<Scanner>, String> {
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
    pub(super) fn scan(&self, text: &str, hits: &mut HashMap<usize, Option<String>>) {
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
pub(super) fn ascii_word_boundaries(re: &str) -> String {
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

pub(super) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
