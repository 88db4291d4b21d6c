//! Sender authentication facts, computed once per transaction with mail-auth on the shared
//! resolver: SPF at MAIL FROM, then DKIM, ARC and DMARC on the message. The checks in
//! `checks/{spf,dkim,arc,dmarc}.rs` turn these facts into symbols; `headers` turns the same
//! facts into Authentication-Results, so the header and the score can never disagree.
//!
//! mail-auth's outputs borrow the message; everything kept here is owned.

pub mod arc;
pub mod iprev;
pub mod signature;
pub mod spf;

pub use arc::{check_arc, ArcCheck};
pub use iprev::{check_iprev, IprevFacts};
pub use spf::{check_spf, SpfCheck, SpfFacts, SpfInput};

use crate::dns::Dns;
use crate::dns_meter::LookupMeter;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcOutput, DmarcResult, Parameters,
    SpfOutput, SpfResult,
};
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

    fn from_dkim(r: &DkimResult) -> (Outcome, Option<String>) {
        match r {
            DkimResult::Pass => (Outcome::Pass, None),
            DkimResult::Neutral(e) => (Outcome::Neutral, Some(e.to_string())),
            DkimResult::Fail(e) => (Outcome::Fail, Some(e.to_string())),
            DkimResult::PermError(e) => (Outcome::PermError, Some(e.to_string())),
            DkimResult::TempError(e) => (Outcome::TempError, Some(e.to_string())),
            DkimResult::None => (Outcome::None, None),
        }
    }

    fn from_dmarc(r: &DmarcResult) -> (Outcome, Option<String>) {
        match r {
            DmarcResult::Pass => (Outcome::Pass, None),
            DmarcResult::Fail(e) => (Outcome::Fail, Some(e.to_string())),
            DmarcResult::TempError(e) => (Outcome::TempError, Some(e.to_string())),
            DmarcResult::PermError(e) => (Outcome::PermError, Some(e.to_string())),
            DmarcResult::None => (Outcome::None, None),
        }
    }
}

/// One DKIM signature's result.
#[derive(Debug, Clone)]
pub struct DkimCheck {
    /// The result.
    pub outcome: Outcome,
    /// `d=` of the signature (empty if it could not be parsed).
    pub domain: String,
    /// `s=` of the signature.
    pub selector: String,
    /// Why it did not pass.
    pub detail: Option<String>,
}

/// The DMARC evaluation.
#[derive(Debug, Clone)]
pub struct DmarcCheck {
    /// The result.
    pub outcome: Outcome,
    /// The requested policy: `none`, `quarantine` or `reject`.
    pub policy: &'static str,
    /// The RFC 5322.From domain.
    pub domain: String,
    /// Why it did not pass.
    pub detail: Option<String>,
}

/// How the message's From header looks to DMARC (RFC 5322 3.6 asks for exactly one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromShape {
    /// One From header with one domain.
    Single,
    /// No From header.
    Missing,
    /// Several From headers, or addresses in different domains.
    Multiple,
}

/// Everything learned from the message itself.
#[derive(Debug, Clone)]
pub struct MessageAuth {
    /// One entry per DKIM signature (empty when unsigned).
    pub dkim: Vec<DkimCheck>,
    /// The ARC chain.
    pub arc: ArcCheck,
    /// DMARC.
    pub dmarc: DmarcCheck,
    /// The From header's shape.
    pub from: FromShape,
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
    pub fn temperror(authserv_id: &str, why: &str) -> MessageAuth {
        MessageAuth {
            // The signatures are unknown, but "unsigned" would be a lie: one temperror entry.
            dkim: vec![DkimCheck {
                outcome: Outcome::TempError,
                domain: String::new(),
                selector: String::new(),
                detail: Some(why.to_string()),
            }],
            arc: ArcCheck {
                outcome: Outcome::TempError,
                last_sealer: None,
                sets: 0,
                detail: Some(why.to_string()),
            },
            dmarc: DmarcCheck {
                outcome: Outcome::TempError,
                policy: "none",
                domain: String::new(),
                detail: Some(why.to_string()),
            },
            from: FromShape::Single,
            header: format!("Authentication-Results: {authserv_id};\r\n\tdmarc=temperror\r\n"),
        }
    }
}

fn from_shape(parsed: &mail_parser::Message<'_>) -> FromShape {
    let mut headers = 0;
    let mut domains: Vec<String> = Vec::new();
    for h in parsed.root_part().headers() {
        if h.name() == mail_parser::HeaderName::From {
            headers += 1;
            if let Some(addr) = h.value().as_address() {
                for a in addr.mailboxes() {
                    if let Some(d) = a
                        .address()
                        .and_then(|x| x.rsplit_once('@'))
                        .map(|(_, d)| d.to_ascii_lowercase())
                    {
                        if !domains.contains(&d) {
                            domains.push(d);
                        }
                    }
                }
            }
        }
    }
    match (headers, domains.len()) {
        (0, _) => FromShape::Missing,
        (1, 0) => FromShape::Missing,
        (1, 1) => FromShape::Single,
        _ => FromShape::Multiple,
    }
}

/// Verifies DKIM and ARC and evaluates DMARC for a message.
///
/// `spf` is absent when the envelope is unknown (`moat check` without one): DMARC then has
/// only DKIM to align. `client` labels the ARC entry of the header.
pub async fn check_message(
    dns: &Dns,
    raw: &[u8],
    parsed: &mail_parser::Message<'_>,
    facts: &AuthFacts,
    client: Option<IpAddr>,
    authserv_id: &str,
) -> MessageAuth {
    let spf = facts.spf.as_ref();
    let auth = dns.authenticator();
    let message = AuthenticatedMessage::from_parsed(parsed, raw, true);
    let (dkim_meter, dmarc_meter) = (LookupMeter::new("dkim"), LookupMeter::new("dmarc"));
    let (dkim_out, arc) = tokio::join!(
        auth.verify_dkim(Parameters::new(&message).with_cache(&dkim_meter)),
        check_arc(dns, raw)
    );
    let from = from_shape(parsed);
    let none_spf = SpfOutput::new(String::new()).with_result(SpfResult::None);
    let spf_out = spf.map(|s| &s.output).unwrap_or(&none_spf);
    // Several From headers must never let DMARC pass (a known evasion), so DMARC is not even
    // evaluated then; the dmarc check scores the shape instead.
    let dmarc_out = if from == FromShape::Single {
        auth.verify_dmarc(
            Parameters::new(DmarcParameters {
                message: &message,
                dkim_output: &dkim_out,
                dkim2_output: None,
                mail_from_domain: spf.map(|s| s.mail_from_domain()).unwrap_or(""),
                spf_output: spf_out,
            })
            .with_cache(&dmarc_meter),
        )
        .await
    } else {
        DmarcOutput::default()
    };

    let dkim = dkim_out
        .iter()
        .map(|o| {
            let (outcome, detail) = Outcome::from_dkim(o.result());
            DkimCheck {
                outcome,
                domain: o.signature().map(|s| s.d.clone()).unwrap_or_default(),
                selector: o.signature().map(|s| s.s.clone()).unwrap_or_default(),
                detail,
            }
        })
        .collect();
    let (dmarc_outcome, dmarc_detail) = Outcome::from_dmarc(&dmarc_out.result());
    let policy = match dmarc_out.policy() {
        mail_auth::dmarc::Policy::Reject => "reject",
        mail_auth::dmarc::Policy::Quarantine => "quarantine",
        _ => "none",
    };
    let dmarc = DmarcCheck {
        outcome: dmarc_outcome,
        policy,
        domain: dmarc_out.domain().to_string(),
        detail: dmarc_detail,
    };

    let header_from = parsed
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or("");
    let mut results =
        AuthenticationResults::new(authserv_id).with_dkim_results(&dkim_out, header_from);
    if let Some(i) = &facts.iprev {
        results = results.with_iprev_result(&i.output, i.ip);
    }
    if let Some(s) = spf {
        let params = SpfParameters::mail_from(s.ip, &s.helo_name, &s.host, &s.sender);
        results = results.with_spf_result(&s.output, &params);
    }
    results = results.with_dmarc_result(&dmarc_out);
    let mut header = mail_auth::headers::HeaderWriter::to_header(&results);
    if header.ends_with("\r\n") {
        header.truncate(header.len() - 2);
    }
    // RFC 8617 10.1: the arc method; moat validates the chain itself, so it writes the entry.
    header.push_str(&format!(";\r\n\tarc={}", arc.outcome.as_str()));
    if arc.sets > 0 {
        header.push_str(&format!(" (i={}", arc.sets));
        if let Some(sealer) = &arc.last_sealer {
            header.push_str(&format!(", sealed by {sealer}"));
        }
        header.push(')');
    }
    if let Some(ip) = client {
        header.push_str(&format!(" smtp.remote-ip={ip}"));
    }
    header.push_str("\r\n");
    MessageAuth {
        dkim,
        arc,
        dmarc,
        from,
        header,
    }
}
