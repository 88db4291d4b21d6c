//! Sender authentication facts, computed once per transaction on the shared resolver: reverse
//! DNS at connect, SPF at MAIL FROM, then the author (From), DKIM, ARC and DMARC on the
//! message. One file per method (`iprev`, `spf`, `dkim`, `arc`, `dmarc`), `from` for the
//! author identity and `signature` for what DKIM and ARC share; this file holds the facts and
//! writes them into Authentication-Results. The checks in `checks/{rdns,spf,dkim,arc,dmarc}.rs`
//! turn the same facts into symbols, so the header and the score can never disagree.
//!
//! SPF, DKIM, ARC and DMARC are evaluated by moat (each file says why); reverse DNS and the
//! Authentication-Results entries for it and for SPF still come from mail-auth.

pub(crate) mod arc;
pub(crate) mod dkim;
pub(crate) mod dmarc;
pub(crate) mod from;
pub(crate) mod iprev;
pub(crate) mod signature;
pub(crate) mod spf;

pub use arc::{check_arc, ArcResult};
pub use dkim::{check_dkim, DkimCheck};
pub use dmarc::{check_dmarc, DmarcCheck};
pub use from::{Author, FromShape};
pub use iprev::{check_iprev, IprevFacts};
pub use spf::{check_spf, SpfCheck, SpfFacts, SpfInput};

use crate::dns::Dns;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::AuthenticationResults;
use std::fmt::Write as _;
use std::net::IpAddr;

/// An authentication result with the RFC 8601 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// pass
    Pass,
    /// fail
    Fail,
    /// softfail (SPF only)
    SoftFail,
    /// neutral
    Neutral,
    /// none: nothing to evaluate
    None,
    /// temperror: a transient (DNS) failure
    TempError,
    /// permerror: a permanent error in a record or key
    PermError,
}

impl Outcome {
    /// The lower-case RFC name (`pass`, `fail`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::SoftFail => "softfail",
            Outcome::Neutral => "neutral",
            Outcome::None => "none",
            Outcome::TempError => "temperror",
            Outcome::PermError => "permerror",
        }
    }
}

/// Everything learned from the message itself.
#[derive(Debug, Clone)]
pub struct MessageAuth {
    /// One entry per DKIM signature (empty when unsigned).
    pub dkim: Vec<DkimCheck>,
    /// The ARC chain.
    pub arc: ArcResult,
    /// DMARC (`none` when From is not one clear mailbox: the author check refuses those).
    pub dmarc: DmarcCheck,
    /// The author as a mail client shows it.
    pub author: Author,
    /// The Authentication-Results field, ready to prepend (with CRLF).
    pub header: String,
}

/// The facts of one transaction.
#[derive(Debug, Clone, Default)]
pub struct AuthFacts {
    /// Reverse DNS of the client, from the connect stage (kept for the whole session).
    pub iprev: Option<IprevFacts>,
    /// SPF, once MAIL FROM was checked.
    pub spf: Option<SpfFacts>,
    /// DKIM/ARC/DMARC, once the message was read.
    pub message: Option<MessageAuth>,
}

impl MessageAuth {
    /// Every result as temperror (the checks could not finish).
    pub fn temperror(authserv_id: &str, author: Author, why: &str) -> MessageAuth {
        MessageAuth {
            // The signatures are unknown, but "unsigned" would be a lie: one temperror entry.
            dkim: vec![DkimCheck {
                outcome: Outcome::TempError,
                domain: String::new(),
                selector: String::new(),
                auid: String::new(),
                b_prefix: String::new(),
                detail: Some(why.to_string()),
            }],
            arc: ArcResult {
                outcome: Outcome::TempError,
                last_sealer: None,
                sets: 0,
                detail: Some(why.to_string()),
            },
            dmarc: DmarcCheck {
                outcome: Outcome::TempError,
                policy: "none",
                domain: author.domain.clone().unwrap_or_default(),
                detail: Some(why.to_string()),
            },
            author,
            header: format!("Authentication-Results: {authserv_id};\r\n\tdmarc=temperror\r\n"),
        }
    }
}

/// The author of `raw` (cheap, no DNS): known even when the DNS checks run out of time.
pub fn author_of(raw: &[u8]) -> Author {
    from::author(&signature::fields(raw).0)
}

/// Verifies DKIM and ARC and evaluates DMARC for a message (`raw`: the whole message, CRLF).
///
/// `facts.spf` is absent when the envelope is unknown (`moat check` without one): DMARC then
/// has only DKIM to align. `client` labels the ARC entry of the header.
pub async fn check_message(
    dns: &Dns,
    raw: &[u8],
    facts: &AuthFacts,
    client: Option<IpAddr>,
    authserv_id: &str,
) -> MessageAuth {
    // The header is split into fields once, for the author, DKIM and ARC alike.
    let (fields, body_start) = signature::fields(raw);
    let body = &raw[body_start.min(raw.len())..];
    let author = from::author(&fields);
    let (dkim, arc) = tokio::join!(
        check_dkim(dns, &fields, body),
        check_arc(dns, &fields, body)
    );
    let spf = facts
        .spf
        .as_ref()
        .map(|s| (s.mail_from.outcome, s.mail_from.domain.as_str()));
    let dmarc = match (author.shape, author.domain.as_deref()) {
        (FromShape::Single, Some(domain)) => check_dmarc(dns, domain, spf, &dkim).await,
        _ => DmarcCheck {
            outcome: Outcome::None,
            policy: "none",
            domain: String::new(),
            detail: author.detail.clone(),
        },
    };
    let header = results_header(authserv_id, facts, &dkim, &arc, &dmarc, client);
    MessageAuth {
        dkim,
        arc,
        dmarc,
        author,
        header,
    }
}

/// Authentication-Results (RFC 8601): iprev and spf written by mail-auth, then dkim, arc and
/// dmarc from moat's own results.
fn results_header(
    authserv_id: &str,
    facts: &AuthFacts,
    dkim: &[DkimCheck],
    arc: &ArcResult,
    dmarc: &DmarcCheck,
    client: Option<IpAddr>,
) -> String {
    let mut results = AuthenticationResults::new(authserv_id);
    if let Some(i) = &facts.iprev {
        results = results.with_iprev_result(&i.output, i.ip);
    }
    if let Some(s) = &facts.spf {
        let params = SpfParameters::mail_from(s.ip, &s.helo_name, &s.host, &s.sender);
        results = results.with_spf_result(&s.output, &params);
    }
    let mut header = mail_auth::headers::HeaderWriter::to_header(&results);
    if header.ends_with("\r\n") {
        header.truncate(header.len() - 2);
    }
    // mail-auth writes "none" when it had no entry; moat's entries follow.
    if let Some(stripped) = header.strip_suffix("; none") {
        header = stripped.to_string();
    }
    if dkim.is_empty() {
        header.push_str(";\r\n\tdkim=none");
    }
    for d in dkim {
        let _ = write!(header, ";\r\n\tdkim={}", d.outcome.as_str());
        if let Some(why) = &d.detail {
            let _ = write!(header, " ({})", comment(why));
        }
        for (property, value) in [
            ("header.d", &d.domain),
            ("header.i", &d.auid),
            ("header.s", &d.selector),
            ("header.b", &d.b_prefix),
        ] {
            if !value.is_empty() {
                let _ = write!(header, " {property}={}", pvalue(value));
            }
        }
    }
    // RFC 8617 10.1: the arc method.
    let _ = write!(header, ";\r\n\tarc={}", arc.outcome.as_str());
    if arc.sets > 0 {
        let _ = write!(header, " (i={}", arc.sets);
        if let Some(sealer) = &arc.last_sealer {
            let _ = write!(header, ", sealed by {}", comment(sealer));
        }
        header.push(')');
    }
    if let Some(ip) = client {
        let _ = write!(header, " smtp.remote-ip={ip}");
    }
    let _ = write!(header, ";\r\n\tdmarc={}", dmarc.outcome.as_str());
    match &dmarc.detail {
        Some(why) => {
            let _ = write!(header, " (p={}; {})", dmarc.policy, comment(why));
        }
        None if !dmarc.domain.is_empty() => {
            let _ = write!(header, " (p={})", dmarc.policy);
        }
        None => {}
    }
    if !dmarc.domain.is_empty() {
        let _ = write!(
            header,
            " header.from={} policy.dmarc={}",
            pvalue(&dmarc.domain),
            dmarc.policy
        );
    }
    header.push_str("\r\n");
    header
}

/// A property value (RFC 8601 2.2): a token, or a quoted string when it holds anything else,
/// so that a crafted d= or domain cannot inject results (espoofer A4-A7).
fn pvalue(value: &str) -> String {
    let token = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@.-_+=/!#$%&*^`{|}~".contains(&b));
    if token {
        return value.to_string();
    }
    let mut out = String::from("\"");
    for c in value.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Text for a comment: parentheses and backslashes escaped, controls dropped.
fn comment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().filter(|c| !c.is_control()) {
        if matches!(c, '(' | ')' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_values_cannot_inject() {
        assert_eq!(pvalue("example.org"), "example.org");
        assert_eq!(
            pvalue("legitimate.com'a.attack.com"),
            "\"legitimate.com'a.attack.com\""
        );
        assert_eq!(pvalue("a\"b;c"), "\"a\\\"b;c\"");
        assert_eq!(comment("x (y)"), "x \\(y\\)");
    }
}
