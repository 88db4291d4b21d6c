//! DMARC (RFC 7489): the policy record of the author's domain (or of its organizational
//! domain), and identifier alignment of SPF and DKIM with that domain.
//!
//! moat evaluates DMARC itself because the author domain is its own finding (`auth::from`,
//! which reads From as a client shows it) and the DKIM results are its own (`auth::dkim`);
//! mail-auth's evaluation takes neither. The organizational domain comes from the Public
//! Suffix List (`psl`).

use super::dkim::DkimCheck;
use super::Outcome;
use crate::dns::{Answer, Dns};

/// The metrics label of DMARC's lookups.
const ZONE: &str = "dmarc";

/// The policy a domain asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// p=none (or no usable record)
    None,
    /// p=quarantine
    Quarantine,
    /// p=reject
    Reject,
}

impl Policy {
    /// The RFC name.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Quarantine => "quarantine",
            Policy::Reject => "reject",
        }
    }

    fn parse(v: &str) -> Option<Policy> {
        match v.trim().to_ascii_lowercase().as_str() {
            "none" => Some(Policy::None),
            "quarantine" => Some(Policy::Quarantine),
            "reject" => Some(Policy::Reject),
            _ => None,
        }
    }
}

/// The DMARC evaluation.
#[derive(Debug, Clone)]
pub struct DmarcCheck {
    /// pass, fail, none (no record), temperror, permerror.
    pub outcome: Outcome,
    /// The policy that applies to this message (`sp=` for a subdomain).
    pub policy: &'static str,
    /// The author domain.
    pub domain: String,
    /// Why it did not pass.
    pub detail: Option<String>,
}

impl DmarcCheck {
    fn of(outcome: Outcome, policy: Policy, domain: &str, detail: Option<String>) -> DmarcCheck {
        DmarcCheck {
            outcome,
            policy: policy.as_str(),
            domain: domain.to_string(),
            detail,
        }
    }
}

/// A parsed `v=DMARC1` record (RFC 7489 6.3).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    p: Policy,
    sp: Option<Policy>,
    strict_dkim: bool,
    strict_spf: bool,
}

/// RFC 7489 6.3, 6.6.3: `v=DMARC1` first; an invalid or missing p= makes the record unusable
/// unless rua= is given (then p=none).
fn parse(text: &str) -> Option<Record> {
    let mut parts = text.split(';').map(str::trim);
    let version = parts.next()?;
    let (v, value) = version.split_once('=')?;
    if v.trim() != "v" || value.trim() != "DMARC1" {
        return None;
    }
    let mut tags: Vec<(String, String)> = Vec::new();
    for part in parts.filter(|p| !p.is_empty()) {
        if let Some((k, v)) = part.split_once('=') {
            let k = k.trim().to_ascii_lowercase();
            if !tags.iter().any(|(n, _)| *n == k) {
                tags.push((k, v.trim().to_string()));
            }
        }
    }
    let get = |k: &str| tags.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let p = match get("p").and_then(Policy::parse) {
        Some(p) => p,
        None if get("rua").is_some() => Policy::None,
        None => return None,
    };
    Some(Record {
        p,
        sp: get("sp").and_then(Policy::parse),
        strict_dkim: get("adkim").is_some_and(|v| v.eq_ignore_ascii_case("s")),
        strict_spf: get("aspf").is_some_and(|v| v.eq_ignore_ascii_case("s")),
    })
}

/// The organizational domain (RFC 7489 3.2): the registrable domain by the Public Suffix List,
/// or the domain itself when the list knows none.
pub fn organizational(domain: &str) -> String {
    let lower = domain.trim_end_matches('.').to_ascii_lowercase();
    psl::domain_str(&lower).map(str::to_string).unwrap_or(lower)
}

fn aligned(a: &str, b: &str, strict: bool) -> bool {
    let (a, b) = (
        a.trim_end_matches('.').to_ascii_lowercase(),
        b.trim_end_matches('.').to_ascii_lowercase(),
    );
    if strict {
        a == b
    } else {
        organizational(&a) == organizational(&b)
    }
}

/// The record for `domain`, falling back to its organizational domain (RFC 7489 6.6.3).
/// `Ok(None)`: no record; `Err`: the DNS failed for now.
async fn discover(dns: &Dns, domain: &str) -> Result<Option<(Record, bool)>, String> {
    if let Some(r) = lookup(dns, domain).await? {
        return Ok(Some((r, true)));
    }
    let org = organizational(domain);
    if org != domain {
        if let Some(r) = lookup(dns, &org).await? {
            return Ok(Some((r, false)));
        }
    }
    Ok(None)
}

async fn lookup(dns: &Dns, domain: &str) -> Result<Option<Record>, String> {
    let name = format!("_dmarc.{domain}");
    match dns.txt(ZONE, &name).await {
        Answer::Records(texts) => {
            let records: Vec<Record> = texts
                .iter()
                .filter_map(|t| std::str::from_utf8(t).ok())
                .filter_map(parse)
                .collect();
            // RFC 7489 6.6.3: more than one record is as good as none.
            Ok(match records.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            })
        }
        Answer::NxDomain | Answer::NoData => Ok(None),
        Answer::Failed(e) => Err(format!("{name}: {e}")),
    }
}

/// Evaluates DMARC for `author_domain`. `spf` is the MAIL FROM result and its domain (absent
/// when the envelope is unknown).
pub async fn check_dmarc(
    dns: &Dns,
    author_domain: &str,
    spf: Option<(Outcome, &str)>,
    dkim: &[DkimCheck],
) -> DmarcCheck {
    let domain = author_domain.trim_end_matches('.').to_ascii_lowercase();
    let (record, exact) = match discover(dns, &domain).await {
        Ok(Some(found)) => found,
        Ok(None) => return DmarcCheck::of(Outcome::None, Policy::None, &domain, None),
        Err(e) => return DmarcCheck::of(Outcome::TempError, Policy::None, &domain, Some(e)),
    };
    // RFC 7489 6.3: sp= applies to subdomains of the domain that published the record.
    let policy = if exact {
        record.p
    } else {
        record.sp.unwrap_or(record.p)
    };
    let dkim_aligned = dkim
        .iter()
        .any(|d| d.outcome == Outcome::Pass && aligned(&d.domain, &domain, record.strict_dkim));
    let spf_aligned = spf.is_some_and(|(outcome, spf_domain)| {
        outcome == Outcome::Pass && aligned(spf_domain, &domain, record.strict_spf)
    });
    if dkim_aligned || spf_aligned {
        return DmarcCheck::of(Outcome::Pass, policy, &domain, None);
    }
    let why = match (
        dkim.iter().any(|d| d.outcome == Outcome::Pass),
        spf.is_some_and(|(o, _)| o == Outcome::Pass),
    ) {
        (false, false) => "neither SPF nor DKIM passed",
        _ => "no passing SPF or DKIM identity is aligned with the From domain",
    };
    DmarcCheck::of(Outcome::Fail, policy, &domain, Some(why.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records() {
        let r = parse("v=DMARC1; p=reject; sp=quarantine; adkim=s").unwrap();
        assert_eq!(r.p, Policy::Reject);
        assert_eq!(r.sp, Some(Policy::Quarantine));
        assert!(r.strict_dkim && !r.strict_spf);
        assert!(parse("v=DMARC1; p=bogus").is_none());
        assert_eq!(
            parse("v=DMARC1; p=bogus; rua=mailto:x@y").unwrap().p,
            Policy::None
        );
        assert!(parse("p=reject; v=DMARC1").is_none());
        assert!(parse("v=spf1 -all").is_none());
    }

    #[test]
    fn alignment() {
        assert!(aligned("mail.example.com", "example.com", false));
        assert!(!aligned("mail.example.com", "example.com", true));
        assert!(!aligned("example.com.attack.example", "example.com", false));
        assert_eq!(organizational("a.b.example.co.uk"), "example.co.uk");
    }
}
