//! The author of a message as a mail client shows it: the RFC 5322 From field, its one
//! mailbox, and the domain DMARC must be evaluated for (RFC 7489 3.1, the Author Domain).
//!
//! Spoofing works through the gap between what a filter parses and what a client displays
//! (Chen et al., "Composition Kills", USENIX Security 2020): a second From, a From with two
//! mailboxes, an address hidden in an RFC 2047 encoded word, a route, text after the angle
//! address, a field name folded or padded so one parser sees it and another does not. So this
//! module reads From the way a client would, and anything that is not exactly one clear
//! mailbox comes out as a shape other than `Single`, which the DMARC check refuses.

use super::signature::Field;
use base64::Engine as _;

/// How the message's From looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromShape {
    /// One From field with one mailbox.
    Single,
    /// No From field.
    Missing,
    /// More than one From field (counting names padded or folded before the colon).
    Multiple,
    /// One From field with more than one mailbox (or a group).
    Mailboxes,
    /// A From field that does not parse to an address, or parses differently depending on
    /// how it is read (text after the address, a folded or padded field name).
    Malformed,
}

impl FromShape {
    /// The name used in config (`auth.from_reject`) and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FromShape::Single => "single",
            FromShape::Missing => "missing",
            FromShape::Multiple => "multiple",
            FromShape::Mailboxes => "mailboxes",
            FromShape::Malformed => "malformed",
        }
    }
}

/// The author identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// The shape; only `Single` has an address.
    pub shape: FromShape,
    /// The address a client shows (lower-cased domain), for `Single`.
    pub address: Option<String>,
    /// Its domain: the domain DMARC is evaluated for.
    pub domain: Option<String>,
    /// The address in the field itself, when a display name shows another one.
    pub hidden_address: Option<String>,
    /// Why the shape is not `Single`.
    pub detail: Option<String>,
}

impl Author {
    fn not_single(shape: FromShape, why: impl Into<String>) -> Author {
        Author {
            shape,
            address: None,
            domain: None,
            hidden_address: None,
            detail: Some(why.into()),
        }
    }
}

/// Reads the author from the message's header fields.
pub fn author(fields: &[Field<'_>]) -> Author {
    let from: Vec<&Field<'_>> = fields
        .iter()
        .filter(|f| f.name.trim().eq_ignore_ascii_case("from"))
        .collect();
    let field = match from.as_slice() {
        [] => return Author::not_single(FromShape::Missing, "the message has no From field"),
        [one] => *one,
        more => {
            return Author::not_single(
                FromShape::Multiple,
                format!("the message has {} From fields", more.len()),
            )
        }
    };
    // RFC 5322 3.6.8: the name is followed directly by the colon. "From :" and a name folded
    // onto the next line are obsolete or invalid, and parsers disagree on them.
    if !field
        .raw
        .get(..5)
        .is_some_and(|n| n.eq_ignore_ascii_case(b"from:"))
    {
        return Author::not_single(
            FromShape::Malformed,
            "the From field name is padded or folded",
        );
    }
    let value = String::from_utf8_lossy(field.value).replace(['\r', '\n'], "");
    match mailboxes(&value, 0) {
        Err(why) if why == GROUP => Author::not_single(FromShape::Mailboxes, why),
        Err(why) => Author::not_single(FromShape::Malformed, why),
        Ok(list) if list.is_empty() => {
            Author::not_single(FromShape::Malformed, "From holds no address")
        }
        Ok(list) if list.len() > 1 => Author::not_single(
            FromShape::Mailboxes,
            format!("From holds {} mailboxes", list.len()),
        ),
        Ok(mut list) => {
            let Some(mb) = list.pop() else {
                return Author::not_single(FromShape::Malformed, "From holds no address");
            };
            let (shown, hidden) = match address_in(&mb.display) {
                Some(a) if !a.eq_ignore_ascii_case(&mb.address) => (a, Some(mb.address)),
                _ => (mb.address, None),
            };
            let domain = shown
                .rsplit_once('@')
                .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase());
            Author {
                shape: FromShape::Single,
                address: Some(shown),
                domain,
                hidden_address: hidden,
                detail: None,
            }
        }
    }
}

/// The error text of a group, which counts as several mailboxes rather than a malformed field.
const GROUP: &str = "From is a group of mailboxes";

/// One mailbox as a client shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mailbox {
    display: String,
    address: String,
}

/// Parses an address list, decoding encoded words the way clients do. `depth` bounds the
/// re-parse of decoded text.
fn mailboxes(value: &str, depth: u8) -> Result<Vec<Mailbox>, String> {
    let mut out = Vec::new();
    for item in split_top_level(value)? {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        // RFC 5322 3.4 group: `name: a, b;` is a list, never one author.
        if let Some((_, members)) = group(item) {
            if members.trim().trim_end_matches(';').trim().is_empty() {
                return Err("From is an empty group".into());
            }
            return Err(GROUP.into());
        }
        out.extend(mailbox(item, depth)?);
    }
    Ok(out)
}

fn group(item: &str) -> Option<(&str, &str)> {
    let mut quoted = false;
    let mut angle = false;
    for (i, c) in item.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ':' if !quoted && !angle => return Some((&item[..i], &item[i + 1..])),
            _ => {}
        }
    }
    None
}

/// Splits at commas outside quotes, comments and angle brackets.
fn split_top_level(value: &str) -> Result<Vec<String>, String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut comment, mut angle) = (false, 0u32, false);
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted || comment > 0 => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                continue;
            }
            '\\' => return Err("a backslash outside quotes in From".into()),
            '"' if comment == 0 => quoted = !quoted,
            '(' if !quoted => comment += 1,
            ')' if !quoted && comment > 0 => comment -= 1,
            '<' if !quoted && comment == 0 => {
                if angle {
                    return Err("nested '<' in From".into());
                }
                angle = true;
            }
            '>' if !quoted && comment == 0 => angle = false,
            ',' if !quoted && comment == 0 && !angle => {
                items.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if quoted || comment > 0 || angle {
        return Err("an unclosed quote, comment or '<' in From".into());
    }
    items.push(cur);
    Ok(items)
}

/// Removes comments, returning the text and the comments' text.
fn strip_comments(text: &str) -> (String, String) {
    let (mut out, mut comments) = (String::new(), String::new());
    let (mut depth, mut quoted) = (0u32, false);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted || depth > 0 => {
                let n = chars.next().unwrap_or(' ');
                if depth > 0 {
                    comments.push(n);
                } else {
                    out.push(c);
                    out.push(n);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => {
                depth += 1;
                if depth > 1 {
                    comments.push(c);
                }
            }
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                if depth > 0 {
                    comments.push(c);
                } else {
                    comments.push(' ');
                    out.push(' ');
                }
            }
            _ if depth > 0 => comments.push(c),
            _ => out.push(c),
        }
    }
    (out, comments)
}

fn mailbox(item: &str, depth: u8) -> Result<Vec<Mailbox>, String> {
    let (text, comments) = strip_comments(item);
    if let Some(open) = text.find('<') {
        let close = text[open..]
            .find('>')
            .map(|c| open + c)
            .ok_or("an unclosed '<' in From")?;
        let after = text[close + 1..].trim();
        if !after.is_empty() {
            // RFC 5322 3.4: nothing follows the angle address; clients disagree on which
            // address such a field names (espoofer A19).
            return Err(format!("text after the address in From: {after:?}"));
        }
        let phrase = text[..open].trim();
        let display = if phrase.is_empty() {
            decode_words(comments.trim())
        } else {
            decode_words(&unquote(phrase))
        };
        let inner = text[open + 1..close].trim();
        // RFC 5322 4.4 obs-route: `<@a,@b:local@domain>` names local@domain.
        let inner = match inner.rfind(':') {
            Some(i) if inner.starts_with('@') => &inner[i + 1..],
            _ => inner,
        };
        let address = if inner.contains("=?") {
            let decoded = decode_words(inner);
            if decoded.contains(['<', '>', ',']) {
                return Err("an encoded word inside <> holds more than an address".into());
            }
            decoded
        } else {
            inner.to_string()
        };
        return Ok(vec![Mailbox {
            display,
            address: checked_address(&address)?,
        }]);
    }
    let bare = text.trim();
    // An encoded word where an address belongs: clients decode it and show what it says
    // (espoofer A15), so that is parsed again.
    if bare.contains("=?") {
        let decoded = decode_words(bare);
        if depth > 0 {
            return Err("encoded words nested in From".into());
        }
        return mailboxes(&decoded, depth + 1);
    }
    if bare.is_empty() {
        return Err("a From mailbox without an address".into());
    }
    if bare.contains(char::is_whitespace) && !bare.starts_with('"') {
        return Err(format!("{bare:?} is not an address"));
    }
    Ok(vec![Mailbox {
        display: decode_words(comments.trim()),
        address: checked_address(bare)?,
    }])
}

fn unquote(phrase: &str) -> String {
    let mut out = String::with_capacity(phrase.len());
    let mut chars = phrase.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {}
            '\\' => out.extend(chars.next()),
            _ => out.push(c),
        }
    }
    out
}

/// `local@domain` with a domain a client would show as a host name.
fn checked_address(address: &str) -> Result<String, String> {
    let address = address.trim();
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(format!("{address:?} has no '@'"));
    };
    if local.is_empty() {
        return Err(format!("{address:?} has no local part"));
    }
    let domain = domain.trim_end_matches('.');
    let valid = !domain.is_empty()
        && domain.contains('.')
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        return Err(format!("{domain:?} is not a domain a client would show"));
    }
    Ok(format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// An address inside a display name (`"admin@bank.example" <x@other.example>`): what a
/// client that shows only the name displays.
fn address_in(display: &str) -> Option<String> {
    display
        .split(|c: char| {
            c.is_whitespace() || matches!(c, '<' | '>' | '(' | ')' | '"' | ',' | ';' | '[' | ']')
        })
        .filter(|w| w.contains('@'))
        .find_map(|w| checked_address(w.trim_matches(['\'', '.', ':'])).ok())
}

/// Decodes RFC 2047 encoded words (B and Q; UTF-8, US-ASCII and ISO-8859-1, other charsets
/// as UTF-8 with replacements). Whitespace between adjacent encoded words goes (6.2).
pub fn decode_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let before = &rest[..start];
        if !(last_was_word && before.trim().is_empty()) {
            out.push_str(before);
        }
        let after = &rest[start + 2..];
        let decoded = after.split_once('?').and_then(|(charset, tail)| {
            let (enc, tail) = tail.split_once('?')?;
            let end = tail.find("?=")?;
            Some((charset, enc, &tail[..end], &tail[end + 2..]))
        });
        match decoded.and_then(|(charset, enc, payload, tail)| {
            decode_word(charset, enc, payload).map(|t| (t, tail))
        }) {
            Some((word, tail)) => {
                out.push_str(&word);
                rest = tail;
                last_was_word = true;
            }
            None => {
                out.push_str("=?");
                rest = after;
                last_was_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_word(charset: &str, enc: &str, payload: &str) -> Option<String> {
    let bytes = match enc {
        "B" | "b" => base64::engine::general_purpose::STANDARD
            .decode(payload.trim().as_bytes())
            .ok()?,
        "Q" | "q" => {
            let mut out = Vec::with_capacity(payload.len());
            let b = payload.as_bytes();
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'_' => out.push(b' '),
                    b'=' if i + 3 <= b.len() => {
                        let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
                        out.push(u8::from_str_radix(hex, 16).ok()?);
                        i += 2;
                    }
                    c => out.push(c),
                }
                i += 1;
            }
            out
        }
        _ => return None,
    };
    let charset = charset.split('*').next().unwrap_or("").to_ascii_lowercase();
    Some(match charset.as_str() {
        "iso-8859-1" | "latin1" | "windows-1252" => bytes.iter().map(|&b| char::from(b)).collect(),
        _ => String::from_utf8_lossy(&bytes).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::signature::fields;
    use super::*;

    fn of(header: &str) -> Author {
        let message = format!("{header}\r\nSubject: x\r\n\r\nbody\r\n");
        author(&fields(message.as_bytes()).0)
    }

    #[test]
    fn single_mailboxes() {
        for (h, want) in [
            ("From: alice@example.org", "alice@example.org"),
            ("From: Alice <alice@Example.ORG>", "alice@example.org"),
            ("From: \"Doe, Jane\" <jane@example.org>", "jane@example.org"),
            (
                "From: =?utf-8?q?Doe=2C_Jane?= <jane@example.org>",
                "jane@example.org",
            ),
            ("From: jane@example.org (Jane Doe)", "jane@example.org"),
            (
                "From: <@attack.example,@any.example:admin@bank.example>",
                "admin@bank.example",
            ),
            (
                "From: \"admin@bank.example\" <x@attack.example>",
                "admin@bank.example",
            ),
            ("From: \"a@b\"@example.org", "\"a@b\"@example.org"),
        ] {
            let a = of(h);
            assert_eq!(a.shape, FromShape::Single, "{h}: {a:?}");
            assert_eq!(a.address.as_deref(), Some(want), "{h}");
        }
    }

    #[test]
    fn everything_else_is_not_single() {
        for (h, want) in [
            ("To: x@example.org", FromShape::Missing),
            (
                "From: a@attack.example\r\nFrom: b@bank.example",
                FromShape::Multiple,
            ),
            (
                "From: <a@attack.example>, <b@bank.example>",
                FromShape::Mailboxes,
            ),
            (
                "From: b@bank.example,<a@attack.example>",
                FromShape::Mailboxes,
            ),
            (
                "From:=?utf-8?B?PGFkbWluQGxlZ2l0aW1hdGUuY29tPg==?=,<second@attack.com>",
                FromShape::Mailboxes,
            ),
            (
                "From: <a@attack.example>b@bank.example",
                FromShape::Malformed,
            ),
            (
                "From: <b@bank.example>\\,<a@attack.example>",
                FromShape::Malformed,
            ),
            ("From : <b@bank.example>", FromShape::Malformed),
            ("From\r\n : <a@attack.example>", FromShape::Malformed),
            ("From: undisclosed", FromShape::Malformed),
            (
                "From: team: a@x.example, b@x.example;",
                FromShape::Mailboxes,
            ),
            ("From: a@localhost", FromShape::Malformed),
        ] {
            let a = of(h);
            assert_eq!(a.shape, want, "{h}: {a:?}");
            assert!(a.domain.is_none());
        }
    }

    #[test]
    fn encoded_words() {
        assert_eq!(
            decode_words("=?utf-8?B?SGk=?= =?utf-8?Q?_there?="),
            "Hi there"
        );
        assert_eq!(decode_words("=?iso-8859-1?q?caf=E9?="), "café");
        assert_eq!(decode_words("plain =?bad"), "plain =?bad");
    }
}
