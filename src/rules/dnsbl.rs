//! `rules/dnsbl.toml`: the DNS lists moat queries, what each looks up, and what each answer
//! code means. Parsed and validated here (no I/O); `rules::load` reads the file.

use super::RulesError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// What a list is queried with, which also fixes the stage.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ListKind {
    /// The client IP (reversed octets or nibbles), at connect.
    Ip,
    /// The HELO name, at HELO.
    Helo,
    /// The envelope sender's domain, at MAIL.
    Sender,
    /// The From header's domain, at DATA.
    From,
    /// The registrable domains of URLs in the body, at DATA.
    Uri,
}

/// One answer code's meaning.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Meaning {
    /// The symbol to emit.
    pub symbol: String,
    /// Its score.
    pub score: f64,
    /// One line for reports.
    #[serde(default)]
    pub description: String,
}

/// One list, as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListDef {
    /// The DNS zone, e.g. `zen.spamhaus.org`.
    pub zone: String,
    /// What is looked up: one kind or several (`["sender", "from", "uri"]`).
    pub lookup: OneOrMany,
    /// Off: kept in the file but not queried.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Exact answers (`"127.0.0.2"`) to meanings.
    #[serde(default)]
    pub returns: BTreeMap<String, Meaning>,
    /// Bits of the last octet (`"2"`, `"4"`, ...) to meanings, for bitmask lists (SURBL, URIBL).
    #[serde(default)]
    pub bitmask: BTreeMap<String, Meaning>,
    /// Meaning of any other 127.0.0.0/8 answer (except the 127.255.255.0/24 error codes).
    #[serde(default)]
    pub other: Option<Meaning>,
}

fn yes() -> bool {
    true
}

/// `lookup = "ip"` or `lookup = ["sender", "uri"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One kind.
    One(ListKind),
    /// Several kinds.
    Many(Vec<ListKind>),
}

impl OneOrMany {
    fn kinds(&self) -> Vec<ListKind> {
        match self {
            OneOrMany::One(k) => vec![*k],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    list: BTreeMap<String, ListDef>,
}

/// A validated list.
#[derive(Debug, Clone)]
pub struct DnsList {
    /// Its name in the file (`[list.NAME]`).
    pub name: String,
    /// The zone, lower case, without a trailing dot.
    pub zone: String,
    /// What it looks up.
    pub kinds: Vec<ListKind>,
    exact: Vec<(Ipv4Addr, Meaning)>,
    bits: Vec<(u8, Meaning)>,
    other: Option<Meaning>,
}

/// What one answer address means for a list.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer<'a> {
    /// Listed, with this meaning.
    Listed(&'a Meaning),
    /// 127.255.255.x: the list refused or failed the query (e.g. asked through a public
    /// resolver); logged, never scored.
    ListError(Ipv4Addr),
    /// An answer outside the list's documented codes.
    Unknown(Ipv4Addr),
}

impl DnsList {
    /// The meanings of every address in an answer.
    pub fn interpret(&self, addrs: &[Ipv4Addr]) -> Vec<Answer<'_>> {
        let mut out = Vec::new();
        for &a in addrs {
            let o = a.octets();
            if o[0] == 127 && o[1] == 255 && o[2] == 255 {
                out.push(Answer::ListError(a));
                continue;
            }
            let mut hit = false;
            for (code, m) in &self.exact {
                if *code == a {
                    out.push(Answer::Listed(m));
                    hit = true;
                }
            }
            for (bit, m) in &self.bits {
                if o[0] == 127 && o[3] & bit != 0 {
                    out.push(Answer::Listed(m));
                    hit = true;
                }
            }
            if !hit {
                match (&self.other, o[0]) {
                    (Some(m), 127) => out.push(Answer::Listed(m)),
                    _ => out.push(Answer::Unknown(a)),
                }
            }
        }
        out
    }

    /// Every meaning the list can produce (for lint and symbol listings).
    pub fn meanings(&self) -> impl Iterator<Item = &Meaning> {
        self.exact
            .iter()
            .map(|(_, m)| m)
            .chain(self.bits.iter().map(|(_, m)| m))
            .chain(self.other.iter())
    }
}

/// Parses `dnsbl.toml`; `label` names the file in errors. Disabled lists are dropped.
pub fn parse(text: &str, label: &str) -> Result<Vec<DnsList>, RulesError> {
    let parse_err = |message: String| RulesError::Parse {
        path: label.to_string(),
        message,
    };
    let file: File = toml::from_str(text)
        .map_err(|e| parse_err(crate::config::describe_toml_error(&e, text)))?;
    let mut lists = Vec::new();
    for (name, def) in file.list {
        let key = format!("list.{name}");
        let zone = def.zone.trim_end_matches('.').to_ascii_lowercase();
        if zone.is_empty() || zone.contains(|c: char| c.is_whitespace()) {
            return Err(parse_err(format!(
                "{key}.zone: {:?} is not a DNS zone",
                def.zone
            )));
        }
        let mut exact = Vec::new();
        for (code, m) in def.returns {
            let addr: Ipv4Addr = code.parse().map_err(|_| {
                parse_err(format!("{key}.returns: {code:?} is not an IPv4 address"))
            })?;
            check_meaning(&key, &m).map_err(parse_err)?;
            exact.push((addr, m));
        }
        let mut bits = Vec::new();
        for (bit, m) in def.bitmask {
            let b: u8 = bit
                .parse()
                .ok()
                .filter(|b: &u8| b.is_power_of_two())
                .ok_or_else(|| {
                    parse_err(format!(
                        "{key}.bitmask: {bit:?} is not a single bit value (1, 2, 4, ... 128)"
                    ))
                })?;
            check_meaning(&key, &m).map_err(parse_err)?;
            bits.push((b, m));
        }
        if let Some(m) = &def.other {
            check_meaning(&key, m).map_err(parse_err)?;
        }
        if exact.is_empty() && bits.is_empty() && def.other.is_none() {
            return Err(parse_err(format!(
                "{key}: needs returns, bitmask or other to mean anything"
            )));
        }
        let kinds = def.lookup.kinds();
        if kinds.is_empty() {
            return Err(parse_err(format!(
                "{key}.lookup: name at least one of ip, helo, sender, from, uri"
            )));
        }
        if def.enabled {
            lists.push(DnsList {
                name,
                zone,
                kinds,
                exact,
                bits,
                other: def.other,
            });
        }
    }
    Ok(lists)
}

fn check_meaning(key: &str, m: &Meaning) -> Result<(), String> {
    let valid = !m.symbol.is_empty()
        && m.symbol
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(format!("{key}: symbol {:?} is not UPPER_SNAKE", m.symbol));
    }
    if !m.score.is_finite() {
        return Err(format!("{key}: {}: score is not a number", m.symbol));
    }
    Ok(())
}

/// The query name for an IP: reversed octets (IPv4) or nibbles (IPv6) under the zone.
pub fn ip_query(ip: std::net::IpAddr, zone: &str) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{zone}", o[3], o[2], o[1], o[0])
        }
        std::net::IpAddr::V6(v6) => {
            let mut s = String::with_capacity(64 + zone.len());
            for byte in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", byte & 0x0f, byte >> 4));
            }
            s.push_str(zone);
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[list.zen]
zone = "zen.example"
lookup = "ip"
returns = { "127.0.0.2" = { symbol = "RBL_SBL", score = 4.0 }, "127.0.0.4" = { symbol = "RBL_XBL", score = 5.0 } }

[list.multi]
zone = "multi.example"
lookup = "uri"
bitmask = { "2" = { symbol = "URIBL_A", score = 2.0 }, "4" = { symbol = "URIBL_B", score = 3.0 } }
"#;

    #[test]
    fn parses_and_interprets() {
        let lists = parse(FILE, "dnsbl.toml").unwrap();
        let zen = lists.iter().find(|l| l.name == "zen").unwrap();
        let got = zen.interpret(&[
            "127.0.0.4".parse().unwrap(),
            "127.255.255.254".parse().unwrap(),
            "127.0.0.9".parse().unwrap(),
        ]);
        assert!(matches!(got[0], Answer::Listed(m) if m.symbol == "RBL_XBL"));
        assert!(matches!(got[1], Answer::ListError(_)));
        assert!(matches!(got[2], Answer::Unknown(_)));
        let multi = lists.iter().find(|l| l.name == "multi").unwrap();
        let got = multi.interpret(&["127.0.0.6".parse().unwrap()]);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn query_names() {
        assert_eq!(
            ip_query("192.0.2.1".parse().unwrap(), "zen.example"),
            "1.2.0.192.zen.example"
        );
        let v6 = ip_query("2001:db8::1".parse().unwrap(), "z");
        assert_eq!(
            v6,
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.z"
        );
    }

    #[test]
    fn errors_name_the_list() {
        let err = parse("[list.x]\nzone = \"z\"\nlookup = \"ip\"\nreturns = { \"nope\" = { symbol = \"A\", score = 1.0 } }\n", "d.toml").unwrap_err();
        assert!(
            err.to_string().contains("d.toml: list.x.returns: \"nope\""),
            "{err}"
        );
        let err = parse("[list.x]\nzone = \"z\"\nlookup = \"ipv9\"\n", "d.toml").unwrap_err();
        assert!(err.to_string().starts_with("d.toml: line 3"), "{err}");
    }
}
