//! What checks read from a parsed message beyond its headers: decoded text and the URLs in it.

use regex::Regex;
use std::sync::OnceLock;

fn url_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // Scheme URLs, and bare www. hosts as mail clients linkify them. The host stops at the first
    // character that cannot be part of it.
    RE.get_or_init(|| {
        Regex::new(
            r"(?i)(?:\b(?:https?|ftp)://(?:[^\s/@<>]*@)?|\bwww\.)([a-z0-9\-\.]+\.[a-z0-9\-]{2,63})",
        )
        .expect("URL regex compiles")
    })
}

/// The decoded content of every text part, HTML as HTML (so links keep their href), in
/// nested messages too.
pub fn texts(m: &mail_parser::Message<'_>) -> Vec<String> {
    m.parts()
        .filter(|p| p.is_text())
        .filter_map(|p| p.text().map(|t| t.into_owned()))
        .collect()
}

fn full_url_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r#"(?i)\b(?:(?:https?|ftp)://|www\.)[^\s<>"'`)\]]+"#)
            .expect("URL regex compiles")
    })
}

/// The URLs in the message's text parts (HTML included), in order of first appearance.
pub fn urls(m: &mail_parser::Message<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for text in texts(m) {
        for u in full_url_regex().find_iter(&text) {
            let u = u
                .as_str()
                .trim_end_matches(['.', ',', ';', ':', '!', '?'])
                .to_string();
            if !out.contains(&u) {
                out.push(u);
            }
        }
    }
    out
}

/// The host names of URLs in the message's text parts, in order of first appearance.
pub fn url_hosts(m: &mail_parser::Message<'_>) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for text in texts(m) {
        for c in url_regex().captures_iter(&text) {
            let mut host = c[1].trim_end_matches(['.', '-']).to_ascii_lowercase();
            if c[0].to_ascii_lowercase().starts_with("www.") {
                host = format!("www.{host}");
            }
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
    }
    hosts
}

/// The registrable domains (public suffix list) of the message's URLs, at most `max`.
/// IP-literal hosts are left out: URIBLs list names.
pub fn url_domains(m: &mail_parser::Message<'_>, max: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for host in url_hosts(m) {
        if host.parse::<std::net::Ipv4Addr>().is_ok() {
            continue;
        }
        if let Some(d) = psl::domain_str(&host) {
            let d = d.to_string();
            if !out.contains(&d) {
                out.push(d);
                if out.len() == max {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_url_domains_after_decoding() {
        let raw = b"From: a@b.example\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nPGEgaHJlZj0iaHR0cHM6Ly9sb2dpbi5zZWN1cmUtYmFuay5leGFtcGxlLmNvLnVrL3BhdGgiPmNsaWNrPC9hPiB3d3cuc2hvcC5leGFtcGxlLmNvbSBodHRwOi8vMTkyLjAuMi4xL3g=\r\n";
        let m = mail_parser::MessageParser::default()
            .parse(&raw[..])
            .unwrap();
        let hosts = url_hosts(&m);
        assert!(
            hosts.contains(&"login.secure-bank.example.co.uk".to_string()),
            "{hosts:?}"
        );
        assert!(
            hosts.contains(&"www.shop.example.com".to_string()),
            "{hosts:?}"
        );
        let domains = url_domains(&m, 10);
        assert_eq!(
            domains,
            vec!["example.co.uk".to_string(), "example.com".to_string()]
        );
    }
}
