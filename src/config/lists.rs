//! Address and name lists, as the config (`server.xforward_hosts`, `tls.required_on`) and the
//! rule files under `rules/lists/` write them: one entry a line, `#` comments; an IP address or
//! CIDR block, or an address, a domain, or `.domain` for it and every subdomain.

use std::net::IpAddr;

/// A list entry that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ListError {
    /// The file or config key.
    pub path: String,
    /// What is wrong, with the line.
    pub message: String,
}

/// One allow or deny list.
#[derive(Debug, Clone, Default)]
pub struct NameList {
    nets: Vec<(IpAddr, u8)>,
    exact: Vec<String>,
    suffixes: Vec<String>,
}

impl NameList {
    /// True when the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.nets.len() + self.exact.len() + self.suffixes.len()
    }

    /// The entry matching an IP address, if any.
    pub fn match_ip(&self, ip: IpAddr) -> Option<String> {
        self.nets
            .iter()
            .find(|(net, len)| in_net(ip, *net, *len))
            .map(|(n, l)| format!("{n}/{l}"))
    }

    /// The entry matching a name or address (case-insensitive): the address itself, its
    /// domain, or a `.suffix` of either.
    pub fn match_name(&self, value: &str) -> Option<String> {
        let v = value.trim().trim_end_matches('.').to_ascii_lowercase();
        if v.is_empty() {
            return None;
        }
        let domain = v
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_else(|| v.clone());
        if let Some(e) = self.exact.iter().find(|e| **e == v || **e == domain) {
            return Some(e.clone());
        }
        self.suffixes
            .iter()
            .find(|s| domain.ends_with(s.as_str()) || domain == s[1..])
            .cloned()
    }
}

fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Parses one list file's text; `ip` selects address/CIDR syntax.
pub fn parse(text: &str, label: &str, ip: bool) -> Result<NameList, ListError> {
    let mut list = NameList::default();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| ListError {
            path: label.to_string(),
            message: format!("line {}: {line:?}: {why}", n + 1),
        };
        if ip {
            let (addr, len) = match line.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (line, None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| bad("not an IP address or CIDR block"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len = match len {
                Some(l) => l
                    .parse::<u8>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| bad("bad prefix length"))?,
                None => max,
            };
            list.nets.push((addr, len));
        } else {
            let v = line
                .to_ascii_lowercase()
                .trim_start_matches('@')
                .to_string();
            if v.contains(char::is_whitespace) || v.matches('@').count() > 1 {
                return Err(bad("not an address or domain"));
            }
            if v.starts_with('.') {
                list.suffixes.push(v);
            } else {
                list.exact.push(v);
            }
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_and_name_matching() {
        let ips = parse(
            "# office\n192.0.2.0/24\n2001:db8::/32 # v6\n198.51.100.7\n",
            "allow_ip.txt",
            true,
        )
        .unwrap();
        assert_eq!(
            ips.match_ip("192.0.2.200".parse().unwrap()).as_deref(),
            Some("192.0.2.0/24")
        );
        assert!(ips.match_ip("192.0.3.1".parse().unwrap()).is_none());
        assert!(ips.match_ip("2001:db8:1::5".parse().unwrap()).is_some());
        assert!(ips.match_ip("198.51.100.7".parse().unwrap()).is_some());
        let names = parse(
            "partner.example\n.trusted.example\nboss@corp.example\n",
            "allow_sender.txt",
            false,
        )
        .unwrap();
        assert!(names.match_name("anyone@partner.example").is_some());
        assert!(names.match_name("x@mail.trusted.example").is_some());
        assert!(names.match_name("x@trusted.example").is_some());
        assert!(names.match_name("BOSS@corp.example").is_some());
        assert!(names.match_name("other@corp.example").is_none());
        let err = parse("10.0.0.0/33\n", "deny_ip.txt", true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("deny_ip.txt: line 1: \"10.0.0.0/33\": bad prefix length"),
            "{err}"
        );
    }
}
