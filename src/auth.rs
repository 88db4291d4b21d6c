//! Sender authentication facts, computed once per transaction with mail-auth on the shared
//! resolver: SPF at MAIL FROM, then DKIM, ARC and DMARC on the message. The checks in
//! `checks/{spf,dkim,arc,dmarc}.rs` turn these facts into symbols; `headers` turns the same
//! facts into Authentication-Results, so the header and the score can never disagree.
//!
//! mail-auth's outputs borrow the message; everything kept here is owned.

use crate::dns::Dns;
use crate::dns_meter::LookupMeter;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcOutput, DmarcResult, IprevOutput,
    IprevResult, Parameters, SpfOutput, SpfResult,
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

    fn from_spf(r: SpfResult) -> Outcome {
        match r {
            SpfResult::Pass => Outcome::Pass,
            SpfResult::Fail => Outcome::Fail,
            SpfResult::SoftFail => Outcome::SoftFail,
            SpfResult::Neutral => Outcome::Neutral,
            SpfResult::TempError => Outcome::TempError,
            SpfResult::PermError => Outcome::PermError,
            SpfResult::None => Outcome::None,
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

/// The SMTP facts SPF needs.
#[derive(Debug, Clone)]
pub struct SpfInput<'a> {
    /// The client's IP address.
    pub ip: IpAddr,
    /// The HELO/EHLO name.
    pub helo: &'a str,
    /// The reverse-path (empty for `<>`).
    pub sender: &'a str,
    /// moat's own host name (for the `%{r}` macro).
    pub host: &'a str,
}

/// One SPF identity's result.
#[derive(Debug, Clone)]
pub struct SpfCheck {
    /// The result.
    pub outcome: Outcome,
    /// The domain checked.
    pub domain: String,
    /// The domain's explanation for a fail, if it gave one.
    pub explanation: Option<String>,
}

/// SPF for the transaction: the MAIL FROM identity (postmaster@HELO for `<>`) and HELO.
#[derive(Debug, Clone)]
pub struct SpfFacts {
    /// The envelope sender identity (RFC 7208 2.4).
    pub mail_from: SpfCheck,
    /// The HELO identity (RFC 7208 2.3).
    pub helo: SpfCheck,
    /// mail-auth's output for the sender, kept for DMARC and the header.
    output: SpfOutput,
    ip: IpAddr,
    helo_name: String,
    sender: String,
    host: String,
}

impl SpfFacts {
    /// The domain DMARC aligns SPF against.
    pub fn mail_from_domain(&self) -> &str {
        &self.mail_from.domain
    }
}

impl SpfFacts {
    /// Both identities as temperror (the check could not finish).
    pub fn temperror(input: &SpfInput<'_>, why: &str) -> SpfFacts {
        let domain = input
            .sender
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or(input.helo)
            .to_string();
        let check = |domain: &str| SpfCheck {
            outcome: Outcome::TempError,
            domain: domain.to_string(),
            explanation: Some(why.to_string()),
        };
        SpfFacts {
            mail_from: check(&domain),
            helo: check(input.helo),
            output: SpfOutput::new(domain.clone()).with_result(SpfResult::TempError),
            ip: input.ip,
            helo_name: input.helo.to_string(),
            sender: input.sender.to_string(),
            host: input.host.to_string(),
        }
    }
}

/// One `check_host()` with the void-lookup limit applied on top of mail-auth.
async fn check_host(dns: &Dns, params: SpfParameters<'_>) -> SpfOutput {
    // RFC 7208 4.6.4: more than two void lookups (NXDOMAIN or an empty answer) make the
    // evaluation a permerror; mail-auth 0.15 does not count them, the meter does.
    let meter = LookupMeter::new("spf");
    let output = dns
        .authenticator()
        .check_host(Parameters::new(params).with_cache(&meter))
        .await;
    let permanent =
        |domain: &str| SpfOutput::new(domain.to_string()).with_result(SpfResult::PermError);
    if meter.voids() > 2 && output.result() != SpfResult::TempError {
        return permanent(output.domain());
    }
    if matches!(
        output.result(),
        SpfResult::TempError | SpfResult::None | SpfResult::PermError
    ) {
        return output;
    }
    // mail-auth stops at the first matching term and takes the first of several records;
    // RFC 7208 4.5 and 4.6 make both a permerror, whatever would have matched.
    match strict_record_problem(dns, output.domain()).await {
        Some(why) => {
            tracing::debug!(domain = output.domain(), why, "SPF record is invalid");
            permanent(output.domain())
        }
        None => output,
    }
}

/// The SPF mechanisms of RFC 7208 5.
const MECHANISMS: &[&str] = &["all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"];

/// Checks the domain's SPF record set for what mail-auth tolerates: several `v=spf1` records
/// (RFC 7208 4.5) and unknown mechanisms (RFC 7208 4.6, 12: unknown modifiers are ignored,
/// unknown mechanisms are errors). The answer comes from the resolver's cache, since
/// mail-auth just asked the same question.
async fn strict_record_problem(dns: &Dns, domain: &str) -> Option<&'static str> {
    let name = format!("{}.", domain.trim_end_matches('.'));
    let lookup = dns.authenticator().resolver().txt_lookup(name).await.ok()?;
    let records: Vec<String> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            hickory_resolver::proto::rr::RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .filter(|t| {
            let lower = t.to_ascii_lowercase();
            lower == "v=spf1" || lower.starts_with("v=spf1 ")
        })
        .collect();
    match records.as_slice() {
        [] => None,
        [one] => one.split_ascii_whitespace().skip(1).find_map(|term| {
            let term = term.trim_start_matches(['+', '-', '~', '?']);
            let name_end = term.find([':', '/', '=']).unwrap_or(term.len());
            let is_modifier = term[name_end..].starts_with('=');
            let known = MECHANISMS.contains(&term[..name_end].to_ascii_lowercase().as_str());
            (!is_modifier && !known).then_some("unknown mechanism")
        }),
        _ => Some("more than one v=spf1 record"),
    }
}

/// Checks both SPF identities concurrently.
pub async fn check_spf(dns: &Dns, input: &SpfInput<'_>) -> SpfFacts {
    // RFC 7208 2.4: a null reverse-path is checked as postmaster@HELO.
    let sender = if input.sender.is_empty() {
        format!("postmaster@{}", input.helo)
    } else {
        input.sender.to_string()
    };
    let (mail_from, helo) = tokio::join!(
        check_host(
            dns,
            SpfParameters::mail_from(input.ip, input.helo, input.host, &sender)
        ),
        check_host(dns, SpfParameters::helo(input.ip, input.helo, input.host)),
    );
    let check = |o: &SpfOutput| SpfCheck {
        outcome: Outcome::from_spf(o.result()),
        domain: o.domain().to_string(),
        explanation: o.explanation().map(str::to_string),
    };
    SpfFacts {
        mail_from: check(&mail_from),
        helo: check(&helo),
        output: mail_from,
        ip: input.ip,
        helo_name: input.helo.to_string(),
        sender,
        host: input.host.to_string(),
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

/// The ARC chain validation.
#[derive(Debug, Clone)]
pub struct ArcCheck {
    /// The result.
    pub outcome: Outcome,
    /// `d=` of the newest ARC-Seal, the last hop that vouched for the message.
    pub last_sealer: Option<String>,
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

/// Reverse DNS of the client (RFC 8601 3, "iprev"): a PTR name that resolves back to it.
#[derive(Debug, Clone)]
pub struct IprevFacts {
    /// pass, fail (PTR names do not resolve back), permerror (no PTR), temperror.
    pub outcome: Outcome,
    /// The verified name, on pass.
    pub name: Option<String>,
    /// The PTR names, when the PTR lookup succeeded.
    pub ptr: Vec<String>,
    /// Why it did not pass.
    pub detail: Option<String>,
    output: IprevOutput,
    ip: IpAddr,
}

/// Checks the client's reverse DNS (PTR, then A/AAAA back to the address).
pub async fn check_iprev(dns: &Dns, ip: IpAddr) -> IprevFacts {
    let meter = LookupMeter::new("iprev");
    let output = dns
        .authenticator()
        .verify_iprev(Parameters::new(ip).with_cache(&meter))
        .await;
    let ptr: Vec<String> = output
        .ptr
        .as_ref()
        .map(|names| {
            names
                .iter()
                .map(|n| n.trim_end_matches('.').to_string())
                .collect()
        })
        .unwrap_or_default();
    let (outcome, detail) = match &output.result {
        IprevResult::Pass => (Outcome::Pass, None),
        IprevResult::Fail(e) => (Outcome::Fail, Some(e.to_string())),
        IprevResult::TempError(e) => (Outcome::TempError, Some(e.to_string())),
        IprevResult::PermError(e) => (Outcome::PermError, Some(e.to_string())),
        IprevResult::None => (Outcome::None, None),
    };
    // mail-auth stops at the first name that resolves back; it is among the first two.
    let name = (outcome == Outcome::Pass)
        .then(|| ptr.first().cloned())
        .flatten();
    IprevFacts {
        outcome,
        name,
        ptr,
        detail,
        output,
        ip,
    }
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
    let (dkim_meter, arc_meter, dmarc_meter) = (
        LookupMeter::new("dkim"),
        LookupMeter::new("arc"),
        LookupMeter::new("dmarc"),
    );
    let (dkim_out, arc_out) = tokio::join!(
        auth.verify_dkim(Parameters::new(&message).with_cache(&dkim_meter)),
        auth.verify_arc(Parameters::new(&message).with_cache(&arc_meter))
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
    let (arc_outcome, arc_detail) = Outcome::from_dkim(arc_out.result());
    let arc = ArcCheck {
        outcome: arc_outcome,
        last_sealer: arc_out.chain().last().map(|l| l.seal.header.d.clone()),
        detail: arc_detail,
    };
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
    if let Some(ip) = client {
        results = results.with_arc_result(&arc_out, ip);
    }
    results = results.with_dmarc_result(&dmarc_out);
    let header = mail_auth::headers::HeaderWriter::to_header(&results);
    MessageAuth {
        dkim,
        arc,
        dmarc,
        from,
        header,
    }
}
