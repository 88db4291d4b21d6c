//! SPF macro expansion (RFC 7208 7.3, 7.4). Pure: the values, including the validated name
//! of `%{p}` that needs DNS, are looked up by the caller and passed in.

use super::record::{Macro, MacroItem, MacroString};
use std::fmt::Write as _;
use std::net::IpAddr;

/// The values macros expand to.
#[derive(Debug, Clone)]
pub struct MacroValues<'a> {
    /// `s`: the sender, `local@domain`.
    pub sender: &'a str,
    /// `l`: its local part (`postmaster` when it had none).
    pub local: &'a str,
    /// `o`: its domain.
    pub sender_domain: &'a str,
    /// `d`: the domain being checked (changes with include and redirect).
    pub domain: &'a str,
    /// `i`, `c`, `v`: the client address.
    pub ip: IpAddr,
    /// `h`: the HELO/EHLO name.
    pub helo: &'a str,
    /// `p`: the validated name of the client, when the string needs it.
    pub validated: Option<&'a str>,
    /// `r`: the receiving host.
    pub receiver: &'a str,
    /// `t`: seconds since the epoch.
    pub now: u64,
}

impl MacroString {
    /// True when expanding needs the client's validated name (`%{p}`), which costs DNS.
    pub fn uses_validated_name(&self) -> bool {
        self.0
            .iter()
            .any(|i| matches!(i, MacroItem::Macro(m) if m.letter == 'p'))
    }

    /// The expanded text.
    pub fn expand(&self, values: &MacroValues<'_>) -> String {
        let mut out = String::new();
        for item in &self.0 {
            match item {
                MacroItem::Literal(text) => out.push_str(text),
                MacroItem::Macro(m) => out.push_str(&expand_one(m, values)),
            }
        }
        out
    }
}

fn expand_one(m: &Macro, v: &MacroValues<'_>) -> String {
    let raw: String = match m.letter {
        's' => v.sender.to_string(),
        'l' => v.local.to_string(),
        'o' => v.sender_domain.to_string(),
        'd' => v.domain.to_string(),
        'i' => dotted(v.ip),
        'p' => v.validated.unwrap_or("unknown").to_string(),
        'v' => match v.ip {
            IpAddr::V4(_) => "in-addr".to_string(),
            IpAddr::V6(_) => "ip6".to_string(),
        },
        'h' => v.helo.to_string(),
        'c' => v.ip.to_string(),
        'r' => match v.receiver {
            "" => "unknown".to_string(),
            r => r.to_string(),
        },
        't' => v.now.to_string(),
        _ => String::new(),
    };
    let delimiters = if m.delimiters.is_empty() {
        "."
    } else {
        m.delimiters.as_str()
    };
    let mut parts: Vec<&str> = raw.split(|c| delimiters.contains(c)).collect();
    if m.reverse {
        parts.reverse();
    }
    if let Some(keep) = m.keep {
        let skip = parts.len().saturating_sub(keep);
        parts.drain(..skip);
    }
    let joined = parts.join(".");
    if m.escape {
        url_escape(&joined)
    } else {
        joined
    }
}

/// `%{i}`: dotted quad for IPv4, dot-separated nibbles for IPv6 (RFC 7208 7.3).
fn dotted(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => {
            let mut out = String::with_capacity(63);
            for byte in a.octets() {
                for nibble in [byte >> 4, byte & 0xf] {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    let _ = write!(out, "{nibble:x}");
                }
            }
            out
        }
    }
}

/// RFC 7208 7.3: upper-case macros are URL-escaped: everything but RFC 3986 unreserved.
fn url_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::record::MacroUse;
    use super::*;

    fn values(ip: &str) -> MacroValues<'static> {
        MacroValues {
            sender: "strong-bad@email.example.com",
            local: "strong-bad",
            sender_domain: "email.example.com",
            domain: "email.example.com",
            ip: ip.parse().unwrap(),
            helo: "mx.example.org",
            validated: None,
            receiver: "",
            now: 0,
        }
    }

    fn expand(text: &str, ip: &str) -> String {
        MacroString::parse(text, MacroUse::Explanation)
            .unwrap()
            .expand(&values(ip))
    }

    #[test]
    fn rfc_7208_7_4_examples() {
        let v4 = "192.0.2.3";
        assert_eq!(expand("%{s}", v4), "strong-bad@email.example.com");
        assert_eq!(expand("%{o}", v4), "email.example.com");
        assert_eq!(expand("%{d2}", v4), "example.com");
        assert_eq!(expand("%{d4}", v4), "email.example.com");
        assert_eq!(expand("%{dr}", v4), "com.example.email");
        assert_eq!(expand("%{d2r}", v4), "example.email");
        assert_eq!(expand("%{l-}", v4), "strong.bad");
        assert_eq!(expand("%{lr-}", v4), "bad.strong");
        assert_eq!(expand("%{l1r-}", v4), "strong");
        assert_eq!(
            expand("%{ir}.%{v}._spf.%{d2}", v4),
            "3.2.0.192.in-addr._spf.example.com"
        );
        assert_eq!(
            expand("%{ir}.%{v}._spf.%{d2}", "2001:db8::cb01"),
            "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
        );
        assert_eq!(expand("%{p} from %{c}", v4), "unknown from 192.0.2.3");
        assert_eq!(expand("%{L}", v4), "strong-bad");
        assert_eq!(expand("%%%_%-", v4), "% %20");
    }
}
