//! The EHLO keywords moat offers, derived from its own limits and the upstream's capabilities.
//!
//! moat never advertises what the upstream lacks: a message accepted under an extension the MTA
//! does not support would have to be downgraded or bounced later, which is how mail gets lost.

use super::address::Parameter;
use super::reply::{self, Reply};

/// What the upstream MTA offered in its EHLO reply (the parts that matter to moat).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamCapabilities {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE and its limit; `Some(0)` means "no fixed limit" (RFC 1870).
    pub size: Option<usize>,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
    /// CHUNKING (RFC 3030).
    pub chunking: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// XCLIENT and the attribute names it accepts (Postfix XCLIENT_README).
    pub xclient: Option<Vec<String>>,
    /// XFORWARD and the attribute names it accepts (Postfix XFORWARD_README).
    pub xforward: Option<Vec<String>>,
}

impl UpstreamCapabilities {
    /// Parses the text lines of a 250 EHLO reply (the first line is the greeting name).
    pub fn from_ehlo_lines<S: AsRef<str>>(lines: &[S]) -> Self {
        let mut caps = UpstreamCapabilities::default();
        for line in lines.iter().skip(1) {
            let mut words = line.as_ref().split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let args = || {
                words
                    .clone()
                    .map(|w| w.to_ascii_uppercase())
                    .collect::<Vec<_>>()
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => {
                    caps.size = Some(
                        words
                            .clone()
                            .next()
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0),
                    )
                }
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "DSN" => caps.dsn = true,
                "CHUNKING" => caps.chunking = true,
                "STARTTLS" => caps.starttls = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "XCLIENT" => caps.xclient = Some(args()),
                "XFORWARD" => caps.xforward = Some(args()),
                _ => {}
            }
        }
        caps
    }
}

/// The extensions moat offers to one client session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The SIZE value advertised and enforced.
    pub max_size: usize,
    /// 8BITMIME (and so BODY=8BITMIME).
    pub eight_bit_mime: bool,
    /// SMTPUTF8.
    pub smtputf8: bool,
    /// DSN (RET, ENVID, NOTIFY, ORCPT).
    pub dsn: bool,
    /// STARTTLS (a certificate is configured and the session is not yet encrypted).
    pub starttls: bool,
    /// XFORWARD (the client is in `server.xforward_hosts`).
    pub xforward: bool,
}

impl Offer {
    /// Intersects moat's own limits with what the upstream offered. Without a known upstream
    /// (it has never answered), only what needs no upstream support is offered.
    pub fn new(
        own_max_size: usize,
        upstream: Option<&UpstreamCapabilities>,
        starttls: bool,
    ) -> Self {
        let up = upstream.cloned().unwrap_or_default();
        let max_size = match up.size {
            Some(n) if n > 0 => own_max_size.min(n),
            _ => own_max_size,
        };
        Offer {
            max_size,
            eight_bit_mime: up.eight_bit_mime,
            smtputf8: up.smtputf8,
            dsn: up.dsn,
            starttls,
            xforward: false,
        }
    }

    /// The EHLO reply: the greeting line and one line per keyword (RFC 5321 4.1.1.1).
    pub fn ehlo_reply(&self, hostname: &str, client_name: &str) -> Reply {
        let mut lines: Vec<std::borrow::Cow<'static, str>> =
            vec![format!("{hostname} Hello {client_name}").into()];
        lines.push("PIPELINING".into());
        lines.push(format!("SIZE {}", self.max_size).into());
        if self.eight_bit_mime {
            lines.push("8BITMIME".into());
        }
        lines.push("ENHANCEDSTATUSCODES".into());
        if self.smtputf8 {
            lines.push("SMTPUTF8".into());
        }
        lines.push("CHUNKING".into());
        if self.dsn {
            lines.push("DSN".into());
        }
        if self.starttls {
            lines.push("STARTTLS".into());
        }
        if self.xforward {
            lines.push("XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE DOMAIN".into());
        }
        // RFC 2034 section 3: no enhanced codes on the EHLO reply.
        Reply {
            code: 250,
            enhanced: None,
            lines,
        }
    }

    /// Checks MAIL parameters against what was offered; the error is the 555 to send.
    pub fn check_mail_params(&self, params: &[Parameter]) -> Result<(), Reply> {
        for p in params {
            let value = p.raw.split_once('=').map(|(_, v)| v.to_ascii_uppercase());
            let ok = match p.key.as_str() {
                "SIZE" => true,
                "BODY" => match value.as_deref() {
                    Some("7BIT") => true,
                    Some("8BITMIME") => self.eight_bit_mime,
                    _ => false,
                },
                "SMTPUTF8" => self.smtputf8,
                "RET" | "ENVID" => self.dsn,
                _ => false,
            };
            if !ok {
                return Err(reply::BAD_PARAMETER.with_detail(&p.key));
            }
        }
        Ok(())
    }

    /// Checks RCPT parameters against what was offered; the error is the 555 to send.
    pub fn check_rcpt_params(&self, params: &[Parameter]) -> Result<(), Reply> {
        for p in params {
            let ok = matches!(p.key.as_str(), "NOTIFY" | "ORCPT") && self.dsn;
            if !ok {
                return Err(reply::BAD_PARAMETER.with_detail(&p.key));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postfix_ehlo() {
        let lines = [
            "mx.example Hello",
            "PIPELINING",
            "SIZE 10240000",
            "ETRN",
            "STARTTLS",
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            "DSN",
            "SMTPUTF8",
            "CHUNKING",
            "XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT",
        ];
        let caps = UpstreamCapabilities::from_ehlo_lines(&lines);
        assert!(caps.pipelining && caps.dsn && caps.smtputf8 && caps.chunking);
        assert_eq!(caps.size, Some(10240000));
        assert!(caps.xclient.unwrap().contains(&"PORT".to_string()));
        assert!(caps.xforward.is_none());
    }

    #[test]
    fn offer_never_exceeds_upstream() {
        let up = UpstreamCapabilities {
            size: Some(1000),
            ..Default::default()
        };
        let offer = Offer::new(5000, Some(&up), false);
        assert_eq!(offer.max_size, 1000);
        assert!(!offer.dsn && !offer.smtputf8 && !offer.eight_bit_mime);
        let text = offer.ehlo_reply("moat.test", "client").to_wire();
        assert!(text.contains("250-SIZE 1000\r\n"));
        assert!(!text.contains("DSN"));
        assert!(!text.contains("STARTTLS"));
        let p = |raw: &str| Parameter {
            key: raw.split('=').next().unwrap().to_string(),
            raw: raw.into(),
        };
        assert!(offer
            .check_mail_params(&[p("BODY=7BIT"), p("SIZE=10")])
            .is_ok());
        assert_eq!(
            offer
                .check_mail_params(&[p("BODY=8BITMIME")])
                .unwrap_err()
                .code,
            555
        );
        assert_eq!(
            offer
                .check_rcpt_params(&[p("NOTIFY=NEVER")])
                .unwrap_err()
                .code,
            555
        );
    }
}
