//! Who the real client is, as XCLIENT or XFORWARD tells the MTA (Postfix XCLIENT_README,
//! XFORWARD_README): the attributes, xtext-encoded, in lines under the MTA's length limit.

use std::net::SocketAddr;

/// Facts about the real client, for XCLIENT/XFORWARD.
#[derive(Debug, Clone)]
pub struct ClientFacts {
    /// The client's address and port.
    pub addr: SocketAddr,
    /// The client's verified host name, if known.
    pub name: Option<String>,
    /// The HELO/EHLO name the client gave.
    pub helo: Option<String>,
    /// `ESMTP` after EHLO, `SMTP` after HELO.
    pub proto: &'static str,
}

pub(super) fn forwarding_attributes(
    client: &ClientFacts,
    xclient: bool,
) -> Vec<(&'static str, String)> {
    let addr = match client.addr.ip() {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("IPV6:{ip}"),
    };
    let unavailable = "[UNAVAILABLE]".to_string();
    let mut attrs = vec![
        ("ADDR", addr),
        ("PORT", client.addr.port().to_string()),
        (
            "NAME",
            client.name.clone().unwrap_or_else(|| unavailable.clone()),
        ),
        (
            "HELO",
            client
                .helo
                .clone()
                .map(|h| xtext(&h))
                .unwrap_or(unavailable),
        ),
        ("PROTO", client.proto.to_string()),
    ];
    if !xclient {
        attrs.push(("SOURCE", "REMOTE".to_string()));
    }
    attrs
}

/// The attribute commands, split so that no line exceeds RFC 5321's 512 octets (with CRLF).
pub(super) fn attribute_lines(
    verb: &str,
    attrs: &[(&'static str, String)],
    allowed: &[String],
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = verb.to_string();
    for (k, v) in attrs {
        if !allowed.iter().any(|a| a == k) {
            continue;
        }
        let attr = format!(" {k}={v}");
        if line.len() + attr.len() > 510 && line.len() > verb.len() {
            lines.push(std::mem::replace(&mut line, verb.to_string()));
        }
        line.push_str(&attr);
    }
    if line.len() > verb.len() {
        lines.push(line);
    }
    lines
}

/// RFC 3461 4: xtext, as XCLIENT and XFORWARD attribute values require.
fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_escapes() {
        assert_eq!(xtext("a b+c=d"), "a+20b+2Bc+3Dd");
    }

    #[test]
    fn only_listed_attributes_are_sent() {
        let facts = ClientFacts {
            addr: "[2001:db8::1]:4000".parse().unwrap(),
            name: None,
            helo: Some("h".into()),
            proto: "ESMTP",
        };
        let lines = attribute_lines(
            "XCLIENT",
            &forwarding_attributes(&facts, true),
            &["ADDR".into(), "HELO".into()],
        );
        assert_eq!(lines, vec!["XCLIENT ADDR=IPV6:2001:db8::1 HELO=h"]);
        let long = ClientFacts {
            helo: Some("h".repeat(255)),
            name: Some("n".repeat(255)),
            ..facts
        };
        let all: Vec<String> = ["ADDR", "PORT", "NAME", "HELO", "PROTO"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let lines = attribute_lines("XCLIENT", &forwarding_attributes(&long, true), &all);
        assert_eq!(lines.len(), 2);
        assert!(lines
            .iter()
            .all(|l| l.len() <= 510 && l.starts_with("XCLIENT ")));
    }
}
