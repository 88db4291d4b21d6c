//! The SPF record language of RFC 7208 4.5, 4.6, 5, 6 and 7: selecting the `v=spf1` record,
//! parsing its terms and macro strings. No I/O: evaluation lives in `auth::spf`.
//!
//! RFC 7208 4.6: a syntax error anywhere in the record makes the whole evaluation a
//! permerror, even where a term before it would have matched, so the record is parsed whole
//! before anything is evaluated.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a record is not valid SPF (the evaluation is then a permerror).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(pub String);

fn err<T>(why: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError(why.into()))
}

/// What a matching mechanism yields (RFC 7208 4.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    /// `+` (the default)
    Pass,
    /// `-`
    Fail,
    /// `~`
    SoftFail,
    /// `?`
    Neutral,
}

/// One mechanism (RFC 7208 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    /// `all`
    All,
    /// `include:<domain-spec>`
    Include(MacroString),
    /// `a[:<domain-spec>][/<v4>][//<v6>]`
    A {
        /// The target; the current domain when absent.
        domain: Option<MacroString>,
        /// IPv4 prefix length.
        v4: u8,
        /// IPv6 prefix length.
        v6: u8,
    },
    /// `mx[:<domain-spec>][/<v4>][//<v6>]`
    Mx {
        /// The target; the current domain when absent.
        domain: Option<MacroString>,
        /// IPv4 prefix length.
        v4: u8,
        /// IPv6 prefix length.
        v6: u8,
    },
    /// `ptr[:<domain-spec>]`
    Ptr(Option<MacroString>),
    /// `ip4:<network>[/<len>]`
    Ip4(Ipv4Addr, u8),
    /// `ip6:<network>[/<len>]`
    Ip6(Ipv6Addr, u8),
    /// `exists:<domain-spec>`
    Exists(MacroString),
}

impl Mechanism {
    /// RFC 7208 4.6.4: the mechanisms that cost a DNS query and count towards the limit of 10.
    pub fn queries_dns(&self) -> bool {
        matches!(
            self,
            Mechanism::Include(_)
                | Mechanism::A { .. }
                | Mechanism::Mx { .. }
                | Mechanism::Ptr(_)
                | Mechanism::Exists(_)
        )
    }
}

/// A qualifier and a mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The result when the mechanism matches.
    pub qualifier: Qualifier,
    /// The mechanism.
    pub mechanism: Mechanism,
}

/// A parsed `v=spf1` record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// The directives, in order.
    pub directives: Vec<Directive>,
    /// `redirect=` (RFC 7208 6.1).
    pub redirect: Option<MacroString>,
    /// `exp=` (RFC 7208 6.2).
    pub exp: Option<MacroString>,
}

/// One part of a macro string (RFC 7208 7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MacroItem {
    /// Text taken as it is (`%%`, `%_` and `%-` are already turned into `%`, ` ` and `%20`).
    Literal(String),
    /// `%{<letter><digits>[r]<delimiters>}`
    Macro(Macro),
}

/// One `%{...}` expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Macro {
    /// The macro letter, lower case.
    pub letter: char,
    /// The letter was upper case: URL-escape the value.
    pub escape: bool,
    /// Keep this many right-hand parts (never 0).
    pub keep: Option<usize>,
    /// Reverse the parts first.
    pub reverse: bool,
    /// The characters the value is split on (`.` when none are given).
    pub delimiters: String,
}

/// A string with macros, as written in a domain-spec or an explanation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MacroString(pub Vec<MacroItem>);

/// Which macro letters a string may use: `c`, `r` and `t` only in explanations (RFC 7208 7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacroUse {
    /// A domain-spec or an unknown modifier's value.
    Domain,
    /// The text of an `exp=` TXT record.
    Explanation,
}

impl MacroString {
    /// Parses a macro string. In `Explanation` use, spaces are literal text.
    pub fn parse(text: &str, usage: MacroUse) -> Result<MacroString, SyntaxError> {
        let mut items = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '%' => match chars.next() {
                    Some('%') => literal.push('%'),
                    Some('_') => literal.push(' '),
                    Some('-') => literal.push_str("%20"),
                    Some('{') => {
                        if !literal.is_empty() {
                            items.push(MacroItem::Literal(std::mem::take(&mut literal)));
                        }
                        let mut body = String::new();
                        loop {
                            match chars.next() {
                                Some('}') => break,
                                Some(b) => body.push(b),
                                None => return err("a macro is not closed with '}'"),
                            }
                        }
                        items.push(MacroItem::Macro(parse_macro(&body, usage)?));
                    }
                    Some(other) => return err(format!("'%' followed by {other:?}")),
                    None => return err("a lone '%' at the end"),
                },
                // RFC 7208 7.1: macro-literal = %x21-24 / %x26-7E; explain-string adds SP.
                ' ' if usage == MacroUse::Explanation => literal.push(' '),
                '\x21'..='\x7e' => literal.push(c),
                other => return err(format!("character {other:?} is not allowed")),
            }
        }
        if !literal.is_empty() {
            items.push(MacroItem::Literal(literal));
        }
        Ok(MacroString(items))
    }

    /// Parses a domain-spec: a macro string that ends in a macro or in `.toplabel[.]`
    /// (RFC 7208 7.1 `domain-end`).
    pub fn parse_domain(text: &str) -> Result<MacroString, SyntaxError> {
        if text.is_empty() {
            return err("an empty domain-spec");
        }
        let spec = MacroString::parse(text, MacroUse::Domain)?;
        // `%%`, `%_` and `%-` are macro-expands in the ABNF too, so a spec whose raw text ends
        // in one of them ends in a macro.
        let ends_in_escape = {
            let raw = text.as_bytes();
            let n = raw.len();
            n >= 2 && raw[n - 2] == b'%' && matches!(raw[n - 1], b'%' | b'_' | b'-') && {
                // Count the '%' run: an odd run means the last one starts an escape.
                let run = raw[..n - 1]
                    .iter()
                    .rev()
                    .take_while(|&&b| b == b'%')
                    .count();
                run % 2 == 1
            }
        };
        match spec.0.last() {
            Some(MacroItem::Macro(_)) => Ok(spec),
            _ if ends_in_escape => Ok(spec),
            Some(MacroItem::Literal(tail)) => {
                let tail = tail.strip_suffix('.').unwrap_or(tail);
                match tail.rsplit_once('.') {
                    Some((_, top)) if is_toplabel(top) => Ok(spec),
                    _ => err(format!("{text:?} does not end in a valid top-level label")),
                }
            }
            None => err("an empty domain-spec"),
        }
    }

    /// True when the string has no macros (it expands to itself).
    #[cfg(test)]
    pub fn is_literal(&self) -> bool {
        self.0.iter().all(|i| matches!(i, MacroItem::Literal(_)))
    }
}

fn parse_macro(body: &str, usage: MacroUse) -> Result<Macro, SyntaxError> {
    let mut chars = body.chars();
    let Some(letter) = chars.next() else {
        return err("an empty macro '%{}'");
    };
    let lower = letter.to_ascii_lowercase();
    let allowed = match usage {
        MacroUse::Domain => "slodiphv",
        MacroUse::Explanation => "slodiphvcrt",
    };
    if !letter.is_ascii_alphabetic() || !allowed.contains(lower) {
        return err(format!("'{letter}' is not a macro letter here"));
    }
    let rest: &str = chars.as_str();
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let keep = match &rest[..digits_end] {
        "" => None,
        d => match d.parse::<usize>() {
            Ok(0) => return err("a macro keeps zero parts"),
            Ok(n) => Some(n),
            // More digits than fit: every part is kept.
            Err(_) => Some(usize::MAX),
        },
    };
    let mut rest = &rest[digits_end..];
    let reverse = match rest.strip_prefix(['r', 'R']) {
        Some(after) => {
            rest = after;
            true
        }
        None => false,
    };
    if let Some(bad) = rest.chars().find(|c| !".-+,/_=".contains(*c)) {
        return err(format!("{bad:?} is not a macro delimiter"));
    }
    Ok(Macro {
        letter: lower,
        escape: letter.is_ascii_uppercase(),
        keep,
        reverse,
        delimiters: rest.to_string(),
    })
}

/// RFC 7208 7.1: toplabel = ( *alphanum ALPHA *alphanum ) /
/// ( 1*alphanum "-" *( alphanum / "-" ) alphanum ).
fn is_toplabel(label: &str) -> bool {
    let b = label.as_bytes();
    if b.is_empty() || !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') {
        return false;
    }
    if b.contains(&b'-') {
        b[0].is_ascii_alphanumeric() && b[b.len() - 1].is_ascii_alphanumeric()
    } else {
        b.iter().any(u8::is_ascii_alphabetic)
    }
}

/// RFC 7208 4.5: a record is an SPF record when it starts with `v=spf1` followed by a space
/// or nothing (case-insensitively; TXT strings are already joined).
pub fn is_spf_record(text: &[u8]) -> bool {
    text.len() >= 6
        && text[..6].eq_ignore_ascii_case(b"v=spf1")
        && (text.len() == 6 || text[6] == b' ')
}

/// Parses a selected record (see [`is_spf_record`]).
pub fn parse(text: &[u8]) -> Result<Record, SyntaxError> {
    // RFC 7208 3.1: records are 7-bit ASCII; 4.6.1: terms are separated by spaces only, so a
    // control character inside a term is an error, not a separator.
    let Ok(text) = std::str::from_utf8(text) else {
        return err("the record is not 7-bit ASCII");
    };
    if let Some(bad) = text.chars().find(|c| !(' '..='~').contains(c)) {
        return err(format!("the record holds {bad:?}"));
    }
    if !is_spf_record(text.as_bytes()) {
        return err("the record does not start with v=spf1");
    }
    let mut record = Record::default();
    for term in text[6..].split(' ').filter(|t| !t.is_empty()) {
        if let Some((name, value)) = modifier(term) {
            match name.to_ascii_lowercase().as_str() {
                "redirect" => {
                    if record.redirect.is_some() {
                        return err("more than one redirect= modifier");
                    }
                    record.redirect = Some(MacroString::parse_domain(value)?);
                }
                "exp" => {
                    if record.exp.is_some() {
                        return err("more than one exp= modifier");
                    }
                    record.exp = Some(MacroString::parse_domain(value)?);
                }
                // RFC 7208 6: unknown modifiers are ignored, but must still be macro strings.
                _ => {
                    MacroString::parse(value, MacroUse::Domain)?;
                }
            }
        } else {
            record.directives.push(directive(term)?);
        }
    }
    Ok(record)
}

/// `name=value` when the term is a modifier: name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )
/// directly followed by `=` (RFC 7208 4.6.1).
fn modifier(term: &str) -> Option<(&str, &str)> {
    let b = term.as_bytes();
    if !b.first()?.is_ascii_alphabetic() {
        return None;
    }
    let end = b
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')))?;
    (b[end] == b'=').then(|| (&term[..end], &term[end + 1..]))
}

fn directive(term: &str) -> Result<Directive, SyntaxError> {
    let (qualifier, rest) = match term.as_bytes()[0] {
        b'+' => (Qualifier::Pass, &term[1..]),
        b'-' => (Qualifier::Fail, &term[1..]),
        b'~' => (Qualifier::SoftFail, &term[1..]),
        b'?' => (Qualifier::Neutral, &term[1..]),
        _ => (Qualifier::Pass, term),
    };
    let name_end = rest.find([':', '/']).unwrap_or(rest.len());
    let (name, args) = rest.split_at(name_end);
    let mechanism = match name.to_ascii_lowercase().as_str() {
        "all" if args.is_empty() => Mechanism::All,
        "all" => return err(format!("'all' takes no argument ({term:?})")),
        "include" => Mechanism::Include(required_domain(args, term)?),
        "exists" => Mechanism::Exists(required_domain(args, term)?),
        "a" | "mx" => {
            let (rest, v4, v6) = dual_cidr(args)?;
            let domain = optional_domain(rest, term)?;
            if name.eq_ignore_ascii_case("a") {
                Mechanism::A { domain, v4, v6 }
            } else {
                Mechanism::Mx { domain, v4, v6 }
            }
        }
        "ptr" => Mechanism::Ptr(optional_domain(args, term)?),
        "ip4" => {
            let Some(net) = args.strip_prefix(':') else {
                return err(format!("ip4 needs a network ({term:?})"));
            };
            let (addr, len) = match net.rsplit_once('/') {
                Some((a, l)) => (a, prefix_len(l, 32)?),
                None => (net, 32),
            };
            let Ok(addr) = addr.parse::<Ipv4Addr>() else {
                return err(format!("{addr:?} is not an IPv4 address"));
            };
            Mechanism::Ip4(addr, len)
        }
        "ip6" => {
            let Some(net) = args.strip_prefix(':') else {
                return err(format!("ip6 needs a network ({term:?})"));
            };
            let (addr, len) = match net.rsplit_once('/') {
                Some((a, l)) => (a, prefix_len(l, 128)?),
                None => (net, 128),
            };
            let Ok(addr) = addr.parse::<Ipv6Addr>() else {
                return err(format!("{addr:?} is not an IPv6 address"));
            };
            Mechanism::Ip6(addr, len)
        }
        _ => return err(format!("unknown mechanism {term:?}")),
    };
    Ok(Directive {
        qualifier,
        mechanism,
    })
}

fn required_domain(args: &str, term: &str) -> Result<MacroString, SyntaxError> {
    match args.strip_prefix(':') {
        Some(spec) => MacroString::parse_domain(spec),
        None => err(format!("{term:?} needs ':' and a domain")),
    }
}

fn optional_domain(args: &str, term: &str) -> Result<Option<MacroString>, SyntaxError> {
    match args {
        "" => Ok(None),
        _ => required_domain(args, term).map(Some),
    }
}

/// Splits `[:domain][/v4][//v6]` from the right: a domain-spec may itself hold `/` and `:`.
fn dual_cidr(args: &str) -> Result<(&str, u8, u8), SyntaxError> {
    let mut rest = args;
    let mut v6 = 128;
    let mut v4 = 32;
    if let Some(i) = rest.rfind("//") {
        let digits = &rest[i + 2..];
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            v6 = prefix_len(digits, 128)?;
            rest = &rest[..i];
        }
    }
    if let Some(i) = rest.rfind('/') {
        let digits = &rest[i + 1..];
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            v4 = prefix_len(digits, 32)?;
            rest = &rest[..i];
        }
    }
    Ok((rest, v4, v6))
}

/// RFC 7208 5.6: a prefix length is "0" or a number without a leading zero, at most `max`.
fn prefix_len(digits: &str, max: u8) -> Result<u8, SyntaxError> {
    let valid = !digits.is_empty()
        && digits.len() <= 3
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    match digits.parse::<u8>() {
        Ok(n) if valid && n <= max => Ok(n),
        _ => err(format!("/{digits} is not a prefix length of 0 to {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Record {
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn bad(text: &str) {
        assert!(parse(text.as_bytes()).is_err(), "{text} should not parse");
    }

    #[test]
    fn mechanisms_and_prefixes() {
        let r = ok("v=spf1 a/24//64 mx:foo:bar/baz.example.com ip4:1.2.3.0/24 -all");
        assert_eq!(
            r.directives[0].mechanism,
            Mechanism::A {
                domain: None,
                v4: 24,
                v6: 64
            }
        );
        let Mechanism::Mx { domain, v4, .. } = &r.directives[1].mechanism else {
            panic!()
        };
        assert_eq!(v4, &32);
        assert!(domain.as_ref().is_some_and(MacroString::is_literal));
        assert_eq!(r.directives[3].qualifier, Qualifier::Fail);
        for text in [
            "v=spf1 a/33",
            "v=spf1 a//129",
            "v=spf1 a/24/64",
            "v=spf1 ip4:1.2.3.4/032",
            "v=spf1 ip4:1.2.3.4//32",
            "v=spf1 ip4:1.2.3",
            "v=spf1 ip6::CAFE::BABE",
            "v=spf1 ptr/0",
            "v=spf1 -all.",
            "v=spf1 -all:foo",
            "v=spf1 include",
            "v=spf1 exists:",
            "v=spf1 a:",
            "v=spf1 a:museum",
            "v=spf1 a:museum.",
            "v=spf1 a:abc.123",
            "v=spf1 a:example.-com",
            "v=spf1 a:example.com:8080",
            "v=spf1 include:ip5.example.com/24",
        ] {
            bad(text);
        }
        ok("v=spf1 a:foo.example.xn--zckzah a:mail.example...com -all");
    }

    #[test]
    fn modifiers() {
        ok("v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all");
        ok("v=spf1 default=+");
        for text in [
            "v=spf1 moo.cow/far_out=man:dog/cat",
            "v=spf1 1up=foo",
            "v=spf1 =all",
            "v=spf1 redirect:t2.example.com",
            "v=spf1 exp= -all",
            "v=spf1 exp=-all",
            "v=spf1 redirect=a.example.com redirect=a.example.com",
            "v=spf1 -all foo=%abc",
            "v=spf1 ip4:1.2.3.4 -all moo",
        ] {
            bad(text);
        }
    }

    #[test]
    fn macros() {
        let s = MacroString::parse("%{l2r+-}.user.%{D2}", MacroUse::Domain).unwrap();
        assert_eq!(
            s.0[0],
            MacroItem::Macro(Macro {
                letter: 'l',
                escape: false,
                keep: Some(2),
                reverse: true,
                delimiters: "+-".into()
            })
        );
        assert!(MacroString::parse("%(ir)", MacroUse::Domain).is_err());
        assert!(MacroString::parse("foo%", MacroUse::Domain).is_err());
        assert!(MacroString::parse("%{a}", MacroUse::Domain).is_err());
        assert!(MacroString::parse("%{c}", MacroUse::Domain).is_err());
        assert!(MacroString::parse("%{c} x", MacroUse::Explanation).is_ok());
        assert!(
            MacroString::parse_domain("macro%%percent%_%_space%-url-space.example.com").is_ok()
        );
        assert!(MacroString::parse_domain("%{d}").is_ok());
        assert!(MacroString::parse_domain("").is_err());
    }

    #[test]
    fn selection() {
        assert!(is_spf_record(b"v=spf1"));
        assert!(is_spf_record(b"V=sPf1 +all"));
        assert!(!is_spf_record(b"v=spf10"));
        assert!(!is_spf_record(b"v=spf1mx"));
        bad("v=spf1 a:ctrl.example.com\rptr -all");
        ok("v=spf1 a  -all ");
    }
}
