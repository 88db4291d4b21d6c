//! The tokens the classifier learns and scores: words of the decoded text, normalised, and
//! features of the headers and the MIME structure, each prefixed by where it came from.
//!
//! Normalisation folds case and Latin accents ("Café" and "cafe" are one token), undoes the
//! usual obfuscations ("v1agra" and "v.i.a.g.r.a" also give "viagra", plus a token that says
//! the trick was used), and cuts long runs (base64 leftovers, hashes) to a short "sk:" token
//! so they neither bloat the model nor all count as distinct words. A message's tokens are a
//! set: the classifier asks whether a token is present, not how often.

use regex::Regex;
use std::collections::HashSet;
use std::sync::OnceLock;

/// Words shorter than this say little on their own.
const MIN_WORD: usize = 3;
/// Longer runs are cut to a `sk:` token of their first `SKIP_KEEP` characters.
const MAX_WORD: usize = 20;
const SKIP_KEEP: usize = 7;
/// Text read per message: enough for the evidence, bounded for the cost.
const MAX_TEXT: usize = 64 * 1024;
/// Tokens per message at most.
const MAX_TOKENS: usize = 3000;
/// Received fields read (the nearest hops say most about the path).
const MAX_RECEIVED: usize = 6;

fn tag_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"(?s)<[^>]{0,2000}>").expect("tag regex compiles"))
}

/// Folds a Latin letter with an accent to its base letter; other characters are kept.
fn fold_accent(c: char) -> char {
    match c {
        'à'..='å' | 'ā' | 'ă' | 'ą' => 'a',
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => 'c',
        'ď' | 'đ' => 'd',
        'è'..='ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => 'e',
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => 'g',
        'ĥ' | 'ħ' => 'h',
        'ì'..='ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => 'i',
        'ĵ' => 'j',
        'ķ' => 'k',
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => 'l',
        'ñ' | 'ń' | 'ņ' | 'ň' => 'n',
        'ò'..='ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => 'o',
        'ŕ' | 'ŗ' | 'ř' => 'r',
        'ś' | 'ŝ' | 'ş' | 'š' => 's',
        'ţ' | 'ť' | 'ŧ' => 't',
        'ù'..='ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => 'u',
        'ŵ' => 'w',
        'ý' | 'ÿ' | 'ŷ' => 'y',
        'ź' | 'ż' | 'ž' => 'z',
        'ß' => 's',
        _ => c,
    }
}

/// The letter a look-alike digit or symbol stands for in obfuscated words.
fn leet(c: char) -> Option<char> {
    Some(match c {
        '0' => 'o',
        '1' | '!' | '|' => 'i',
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' => 't',
        _ => return None,
    })
}

/// Characters a word may contain (the look-alikes included, so "v1@gra" stays one word).
fn in_word(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '\'' | '@' | '$' | '!' | '|' | '-')
}

/// Collects a message's tokens.
#[derive(Debug, Default)]
pub struct Tokens {
    set: HashSet<String>,
}

impl Tokens {
    fn add(&mut self, token: String) {
        if self.set.len() < MAX_TOKENS {
            self.set.insert(token);
        }
    }

    /// The tokens, sorted.
    pub fn into_vec(self) -> Vec<String> {
        let mut v: Vec<String> = self.set.into_iter().collect();
        v.sort_unstable();
        v
    }

    /// Adds the words of `text`, each with `prefix` ("" for the body).
    fn words(&mut self, text: &str, prefix: &str) {
        let mut prev: Option<String> = None;
        // Single letters in a row, one separator apart: "v.i.a.g.r.a", "f r e e".
        let mut spaced = String::new();
        for raw in text.split(|c: char| !in_word(c)) {
            let mut letters = raw.chars();
            match (letters.next(), letters.next()) {
                (Some(c), None) if c.is_alphabetic() => {
                    spaced.extend(c.to_lowercase().map(fold_accent));
                    continue;
                }
                _ => self.end_spaced(&mut spaced, prefix),
            }
            let word = raw.trim_matches(|c: char| !c.is_alphanumeric());
            let Some(lower) = self.word(word, prefix) else {
                continue;
            };
            // Pairs of neighbouring body words carry phrases ("click here", "dear friend").
            if prefix.is_empty() {
                if let Some(p) = &prev {
                    self.add(format!("b:{p} {lower}"));
                }
                prev = Some(lower);
            }
        }
        self.end_spaced(&mut spaced, prefix);
    }

    fn end_spaced(&mut self, spaced: &mut String, prefix: &str) {
        if spaced.chars().count() >= 4 {
            self.add(format!("{prefix}{spaced}"));
            self.add(format!("{prefix}x:spaced"));
        }
        spaced.clear();
    }

    /// Adds a word's tokens; returns its normal form when it is a word (not a number or a
    /// cut run), for pairing with the next.
    fn word(&mut self, word: &str, prefix: &str) -> Option<String> {
        let chars = word.chars().count();
        if chars < MIN_WORD {
            return None;
        }
        if word.chars().all(|c| c.is_ascii_digit()) {
            // Numbers differ in every message; their length is the signal.
            self.add(format!("{prefix}n:{}", chars.min(12)));
            return None;
        }
        let lower: String = word
            .chars()
            .flat_map(char::to_lowercase)
            .map(fold_accent)
            .collect();
        if chars > MAX_WORD {
            let head: String = lower.chars().take(SKIP_KEEP).collect();
            self.add(format!("{prefix}sk:{head}"));
            return None;
        }
        let letters = lower.chars().filter(|c| c.is_alphabetic()).count();
        let lookalikes = lower.chars().filter(|&c| leet(c).is_some()).count();
        if letters >= 2 && lookalikes > 0 && letters + lookalikes == chars {
            let plain: String = lower.chars().map(|c| leet(c).unwrap_or(c)).collect();
            if plain.len() >= 4 {
                self.add(format!("{prefix}{plain}"));
                self.add(format!("{prefix}x:lookalike"));
            }
        }
        self.add(format!("{prefix}{lower}"));
        Some(lower)
    }

    /// Adds `kind:value` with the value lowercased.
    fn feature(&mut self, kind: &str, value: &str) {
        let value = value.trim();
        if !value.is_empty() {
            let v: String = value
                .chars()
                .take(60)
                .flat_map(char::to_lowercase)
                .collect();
            self.add(format!("{kind}:{v}"));
        }
    }
}

fn html_tag_name() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"<([a-zA-Z][a-zA-Z0-9]{0,10})").expect("tag name regex"))
}

/// The shape of an identifier: digits as 9, letters as a/A, runs of one kind collapsed.
fn shape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().take(40) {
        let k = if c.is_ascii_digit() {
            '9'
        } else if c.is_ascii_lowercase() {
            'a'
        } else if c.is_ascii_uppercase() {
            'A'
        } else {
            c
        };
        if !out.ends_with(k) {
            out.push(k);
        }
    }
    out
}

/// Text of an HTML part: tags removed, the common entities decoded.
fn html_text(html: &str) -> String {
    let text = tag_regex().replace_all(html, " ");
    text.replace("&nbsp;", " ")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
}

/// The domain of an address, lowercased.
fn domain_of(addr: &str) -> Option<String> {
    addr.rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>').to_ascii_lowercase())
        .filter(|d| !d.is_empty())
}

/// Every token of a message.
pub fn tokens(parsed: &mail_parser::Message<'_>) -> Vec<String> {
    use mail_parser::PartKind;
    let mut t = Tokens::default();

    // Body text: every text part, HTML without its tags.
    let mut budget = MAX_TEXT;
    for part in parsed.parts().filter(|p| p.is_text()) {
        let Some(text) = part.text() else { continue };
        let text = if matches!(part.kind(), PartKind::Html) {
            t.add("x:html".into());
            html_text(&text)
        } else {
            text.into_owned()
        };
        let end = text
            .char_indices()
            .map(|(i, _)| i)
            .take_while(|&i| i <= budget)
            .last()
            .unwrap_or(0);
        let text = if end < text.len() && text.len() > budget {
            &text[..end]
        } else {
            &text[..]
        };
        budget = budget.saturating_sub(text.len());
        t.words(text, "");
        if budget == 0 {
            break;
        }
    }
    for host in crate::rules::message::url_hosts(parsed)
        .into_iter()
        .take(50)
    {
        t.feature("u", &host);
        if let Some(d) = psl::domain_str(&host) {
            t.feature("ud", d);
        }
    }

    // Header fields that say who sent it and how.
    if let Some(s) = parsed.subject() {
        t.words(s, "s:");
    }
    if let Some(from) = parsed.from().and_then(|a| a.first()) {
        if let Some(d) = from.address().and_then(domain_of) {
            t.feature("fd", &d);
        }
        if let Some(name) = from.name() {
            t.words(name, "fn:");
        }
    }
    if let Some(d) = parsed
        .reply_to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .and_then(domain_of)
    {
        t.feature("rt", &d);
    }
    if let Some(d) = parsed.message_id().and_then(domain_of) {
        t.feature("mid", &d);
    }
    for (name, kind) in [("X-Mailer", "xm"), ("User-Agent", "xm")] {
        if let Some(h) = parsed.headers().get(name) {
            let v = String::from_utf8_lossy(h.raw_value());
            let first = v.split_whitespace().next().unwrap_or("");
            t.feature(kind, first.trim_end_matches(|c: char| !c.is_alphanumeric()));
        }
    }
    for received in parsed.all_received().take(MAX_RECEIVED) {
        if let Some(from) = received.from() {
            t.feature("rh", &from.to_string());
        }
        if let Some(ip) = received.from_ip() {
            match ip {
                std::net::IpAddr::V4(v4) => {
                    let o = v4.octets();
                    t.add(format!("ri:{}.{}.{}", o[0], o[1], o[2]));
                }
                std::net::IpAddr::V6(_) => t.add("ri:v6".into()),
            }
        }
        if let Some(by) = received.by() {
            t.feature("rb", &by.to_string());
        }
    }
    for header in parsed.headers().iter() {
        t.feature("hn", header.raw_name());
    }
    {
        for name in [
            "X-Priority",
            "X-MSMail-Priority",
            "Importance",
            "Content-Transfer-Encoding",
            "MIME-Version",
            "Precedence",
        ] {
            if let Some(h) = parsed.headers().get(name) {
                let v = String::from_utf8_lossy(h.raw_value());
                t.feature(
                    &format!("hv:{}", name.to_ascii_lowercase()),
                    v.split(|c: char| c.is_whitespace() || c == ';')
                        .find(|s| !s.is_empty())
                        .unwrap_or(""),
                );
            }
        }
        match parsed.headers().get("Date") {
            Some(h) => {
                let v = String::from_utf8_lossy(h.raw_value());
                if let Some(tz) = v
                    .split_whitespace()
                    .find(|w| (w.starts_with('+') || w.starts_with('-')) && w.len() == 5)
                {
                    t.feature("dz", tz);
                }
            }
            None => t.add("x:nodate".into()),
        }
        if let Some(id) = parsed.message_id() {
            let local = id.split('@').next().unwrap_or("");
            t.feature("ms", &shape(local));
        }
        if let Some(from) = parsed
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
        {
            t.feature("fl", &shape(from.split('@').next().unwrap_or("")));
        }
        if let Some(to) = parsed.to() {
            let n = to.mailboxes().count();
            t.add(format!("tn:{}", n.min(5)));
            for a in to.mailboxes().take(5) {
                if let Some(d) = a.address().and_then(domain_of) {
                    t.feature("td", &d);
                }
            }
        } else {
            t.add("x:noto".into());
        }
        for part in parsed
            .parts()
            .filter(|p| matches!(p.kind(), PartKind::Html))
            .take(3)
        {
            if let Some(html) = part.text() {
                for m in html_tag_name().captures_iter(&html).take(500) {
                    t.feature("h", &m[1]);
                }
            }
        }
    }

    // MIME structure.
    if let Some(ct) = parsed.content_type() {
        t.feature(
            "ct",
            &format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")),
        );
        if let Some(cs) = ct.attribute("charset") {
            t.feature("cs", cs);
        }
    }
    let parts = parsed.parts().count();
    t.add(format!("np:{}", parts.min(10)));
    for part in parsed.parts().skip(1).take(20) {
        if let Some(ct) = part.content_type() {
            t.feature(
                "mp",
                &format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")),
            );
            if let Some(cs) = ct.attribute("charset") {
                t.feature("cs", cs);
            }
        }
        if let Some(name) = part.attachment_name() {
            let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
            t.feature("att", if ext.len() <= 8 { ext } else { "long" });
        }
    }
    t.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(message: &str) -> Vec<String> {
        let raw = message.replace('\n', "\r\n");
        let parsed = mail_parser::MessageParser::default()
            .parse(raw.as_bytes())
            .expect("parses");
        tokens(&parsed)
    }

    #[test]
    fn words_are_folded_and_obfuscations_undone() {
        let t = of(
            "From: Ann <ann@Example.ORG>\nSubject: Café offer\n\nBuy V1AGRA and v.i.a.g.r.a now, \
             or cheap c1al1s. Order 123456. Visit http://Shop.Evil.example/x \
             aGVsbG8gd29ybGQgaGVsbG8gd29ybGQ\n",
        );
        for want in [
            "viagra",
            "v1agra",
            "x:lookalike",
            "x:spaced",
            "cialis",
            "buy",
            "now",
            "s:cafe",
            "s:offer",
            "fd:example.org",
            "fn:ann",
            "n:6",
            "u:shop.evil.example",
            "ud:evil.example",
            "sk:agvsbg8",
            "hn:subject",
            "np:1",
        ] {
            assert!(t.contains(&want.to_string()), "{want} missing from {t:?}");
        }
        assert!(!t.iter().any(|w| w == "or"), "short words are dropped");
    }

    #[test]
    fn html_tags_are_not_words_and_mime_is_described() {
        let t = of("From: a@b.example\nContent-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/html; charset=utf-8\n\n<p style=\"color:red\">Winner <b>announced</b></p>\n--x\nContent-Type: application/zip\nContent-Disposition: attachment; filename=\"invoice.zip\"\n\nUEsDBA==\n--x--\n");
        assert!(t.contains(&"winner".to_string()), "{t:?}");
        assert!(t.contains(&"announced".to_string()));
        assert!(!t.iter().any(|w| w == "style" || w == "color"), "{t:?}");
        for want in [
            "x:html",
            "ct:multipart/mixed",
            "mp:application/zip",
            "att:zip",
            "cs:utf-8",
        ] {
            assert!(t.contains(&want.to_string()), "{want} missing from {t:?}");
        }
    }
}
