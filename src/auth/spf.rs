//! SPF (RFC 7208): `check_host()` for the MAIL FROM and HELO identities, evaluated here over
//! the shared resolver. The result feeds DMARC and Authentication-Results through mail-auth's
//! `SpfOutput`, so the header, the score and DMARC can never disagree.
//!
//! Why moat evaluates SPF itself rather than through mail-auth: mail-auth 0.15 accepts records
//! that RFC 7208 makes a permerror (bad prefix lengths, invalid domain-specs, unknown
//! modifiers' syntax, redirect errors), does not treat IPv4-mapped IPv6 clients as IPv4,
//! matches `ptr` and expands macros differently from the RFC, and does not count void
//! lookups. The openspf suite (`tests/it/auth/conformance/spf.rs`) holds this module to the RFC.

pub(crate) mod macros;
pub(crate) mod record;

use super::Outcome;
use crate::dns::{Answer, Dns};
use macros::MacroValues;
use mail_auth::{SpfOutput, SpfResult};
use record::{Directive, MacroString, Mechanism, Qualifier, Record};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

/// RFC 7208 4.6.4: at most 10 terms that query the DNS per evaluation.
const MAX_DNS_TERMS: usize = 10;
/// RFC 7208 4.6.4: more than 2 void lookups make the evaluation a permerror.
const MAX_VOID_LOOKUPS: usize = 2;
/// RFC 7208 4.6.4: an `mx` with more than 10 MX records is a permerror.
const MAX_MX: usize = 10;
/// RFC 7208 4.6.4: at most 10 PTR names are looked at.
const MAX_PTR: usize = 10;
/// The metrics label of SPF's lookups.
const ZONE: &str = "spf";

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
    /// Why the result is an error (the record's syntax error, the DNS failure).
    pub detail: Option<String>,
}

/// SPF for the transaction: the MAIL FROM identity (postmaster@HELO for `<>`) and HELO.
#[derive(Debug, Clone)]
pub struct SpfFacts {
    /// The envelope sender identity (RFC 7208 2.4).
    pub mail_from: SpfCheck,
    /// The HELO identity (RFC 7208 2.3).
    pub helo: SpfCheck,
    /// The result in mail-auth's form, for DMARC and the header.
    pub(super) output: SpfOutput,
    pub(super) ip: IpAddr,
    pub(super) helo_name: String,
    /// The reverse-path as received (empty for `<>`).
    pub(super) sender: String,
    pub(super) host: String,
}

impl SpfFacts {
    /// The domain DMARC aligns SPF against.
    pub fn mail_from_domain(&self) -> &str {
        &self.mail_from.domain
    }

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
            explanation: None,
            detail: Some(why.to_string()),
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

/// Checks both SPF identities concurrently, each until `until`: an identity still unfinished
/// then is temperror, and one that finished keeps its result (a HELO name whose lookups hang
/// must not turn the envelope sender's result into a temperror). The flag says whether any
/// identity ran out of time.
pub async fn check_spf_until(
    dns: &Dns,
    input: &SpfInput<'_>,
    until: tokio::time::Instant,
) -> (SpfFacts, bool) {
    check_spf_within(dns, input, Some(until)).await
}

/// Checks both SPF identities concurrently.
pub async fn check_spf(dns: &Dns, input: &SpfInput<'_>) -> SpfFacts {
    check_spf_within(dns, input, None).await.0
}

/// One identity's check, cut off at `until` (temperror then; the flag says so).
async fn bounded(
    check: impl Future<Output = SpfCheck>,
    until: Option<tokio::time::Instant>,
    domain: String,
) -> (SpfCheck, bool) {
    let Some(until) = until else {
        return (check.await, false);
    };
    match tokio::time::timeout_at(until, check).await {
        Ok(c) => (c, false),
        Err(_) => (
            SpfCheck {
                outcome: Outcome::TempError,
                domain,
                explanation: None,
                detail: Some("stage deadline exceeded".into()),
            },
            true,
        ),
    }
}

async fn check_spf_within(
    dns: &Dns,
    input: &SpfInput<'_>,
    until: Option<tokio::time::Instant>,
) -> (SpfFacts, bool) {
    // RFC 7208 2.4: a null reverse-path is checked as postmaster@HELO.
    let sender = if input.sender.is_empty() {
        format!("postmaster@{}", input.helo)
    } else {
        input.sender.to_string()
    };
    let helo_identity = format!("postmaster@{}", input.helo);
    let domain_of = |s: &str| s.rsplit_once('@').map(|(_, d)| d).unwrap_or(s).to_string();
    let ((mail_from, late_mail), (helo, late_helo)) = tokio::join!(
        bounded(
            check_identity(dns, input.ip, &sender, input.helo, input.host),
            until,
            domain_of(&sender)
        ),
        bounded(
            check_identity(dns, input.ip, &helo_identity, input.helo, input.host),
            until,
            input.helo.to_string()
        ),
    );
    let mut output =
        SpfOutput::new(mail_from.domain.clone()).with_result(to_mail_auth(mail_from.outcome));
    if let Some(e) = &mail_from.explanation {
        output = output.with_explanation(e.clone());
    }
    let facts = SpfFacts {
        mail_from,
        helo,
        output,
        ip: input.ip,
        helo_name: input.helo.to_string(),
        sender: input.sender.to_string(),
        host: input.host.to_string(),
    };
    (facts, late_mail || late_helo)
}

fn to_mail_auth(outcome: Outcome) -> SpfResult {
    match outcome {
        Outcome::Pass => SpfResult::Pass,
        Outcome::Fail => SpfResult::Fail,
        Outcome::SoftFail => SpfResult::SoftFail,
        Outcome::Neutral => SpfResult::Neutral,
        Outcome::None => SpfResult::None,
        Outcome::TempError => SpfResult::TempError,
        Outcome::PermError => SpfResult::PermError,
    }
}

/// `check_host()` for one identity: `sender` is `local@domain` (local may be empty).
pub async fn check_identity(
    dns: &Dns,
    ip: IpAddr,
    sender: &str,
    helo: &str,
    receiver: &str,
) -> SpfCheck {
    // RFC 7208 4.3: a local part that is missing is taken as "postmaster".
    let (local, domain) = match sender.rsplit_once('@') {
        Some(("", d)) => ("postmaster", d),
        Some((l, d)) => (l, d),
        None => ("postmaster", sender),
    };
    let domain = domain.trim_end_matches('.');
    // RFC 7208 5.6 / 4.1: an IPv4-mapped IPv6 client is the IPv4 client it maps.
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    let mut eval = Evaluation {
        dns,
        ip,
        sender: format!("{local}@{domain}"),
        local: local.to_string(),
        sender_domain: domain.to_string(),
        helo: helo.to_string(),
        receiver: receiver.to_string(),
        now: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        dns_terms: 0,
        voids: 0,
    };
    let done = |outcome, explanation, detail: Option<String>| SpfCheck {
        outcome,
        domain: domain.to_string(),
        explanation,
        detail,
    };
    // RFC 7208 4.3: a malformed or single-label domain gives none before any lookup.
    if !is_checkable_domain(domain) {
        return done(
            Outcome::None,
            None,
            Some("not a fully qualified domain".into()),
        );
    }
    let evaluated = eval.check_host(domain.to_string()).await;
    done(evaluated.outcome, evaluated.explanation, evaluated.detail)
}

/// RFC 7208 4.3: a multi-label name whose labels are 1 to 63 octets, not a domain literal.
fn is_checkable_domain(domain: &str) -> bool {
    !domain.starts_with('[')
        && domain.contains('.')
        && domain.len() <= 253
        && domain.split('.').all(|l| !l.is_empty() && l.len() <= 63)
}

/// The end of one `check_host()`.
#[derive(Debug, Clone)]
struct Evaluated {
    outcome: Outcome,
    explanation: Option<String>,
    detail: Option<String>,
}

impl Evaluated {
    fn of(outcome: Outcome) -> Evaluated {
        Evaluated {
            outcome,
            explanation: None,
            detail: None,
        }
    }

    fn error(outcome: Outcome, why: impl Into<String>) -> Evaluated {
        Evaluated {
            outcome,
            explanation: None,
            detail: Some(why.into()),
        }
    }
}

/// A mechanism either matched, did not, or ended the evaluation (temperror, permerror).
enum Matched {
    Yes,
    No,
    Abort(Evaluated),
}

/// One evaluation with its limits, shared by every include and redirect it follows.
struct Evaluation<'a> {
    dns: &'a Dns,
    ip: IpAddr,
    sender: String,
    local: String,
    sender_domain: String,
    helo: String,
    receiver: String,
    now: u64,
    dns_terms: usize,
    voids: usize,
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl<'a> Evaluation<'a> {
    /// RFC 7208 4: fetch the domain's record and evaluate it.
    fn check_host(&mut self, domain: String) -> Boxed<'_, Evaluated> {
        Box::pin(async move {
            let texts = match self.dns.txt(ZONE, &domain).await {
                Answer::Records(t) => t,
                Answer::NxDomain | Answer::NoData => return Evaluated::of(Outcome::None),
                Answer::Failed(e) => {
                    return Evaluated::error(Outcome::TempError, format!("{domain}: {e}"))
                }
            };
            let mut spf = texts.iter().filter(|t| record::is_spf_record(t));
            let (Some(text), None) = (spf.next(), spf.next()) else {
                return match texts.iter().filter(|t| record::is_spf_record(t)).count() {
                    0 => Evaluated::of(Outcome::None),
                    _ => Evaluated::error(
                        Outcome::PermError,
                        format!("{domain}: more than one v=spf1 record"),
                    ),
                };
            };
            match record::parse(text) {
                Ok(rec) => self.evaluate(&domain, &rec).await,
                Err(e) => Evaluated::error(Outcome::PermError, format!("{domain}: {e}")),
            }
        })
    }

    /// RFC 7208 4.6, 4.7, 6.1: the directives left to right, then redirect, then neutral.
    async fn evaluate(&mut self, domain: &str, rec: &Record) -> Evaluated {
        for Directive {
            qualifier,
            mechanism,
        } in &rec.directives
        {
            if mechanism.queries_dns() {
                self.dns_terms += 1;
                if self.dns_terms > MAX_DNS_TERMS {
                    return Evaluated::error(
                        Outcome::PermError,
                        "more than 10 DNS-querying terms (RFC 7208 4.6.4)",
                    );
                }
            }
            match self.matches(domain, mechanism).await {
                Matched::No => continue,
                Matched::Abort(e) => return e,
                Matched::Yes => {}
            }
            let outcome = match qualifier {
                Qualifier::Pass => Outcome::Pass,
                Qualifier::Fail => Outcome::Fail,
                Qualifier::SoftFail => Outcome::SoftFail,
                Qualifier::Neutral => Outcome::Neutral,
            };
            let explanation = match (&rec.exp, outcome) {
                (Some(exp), Outcome::Fail) => self.explain(domain, exp).await,
                _ => None,
            };
            return Evaluated {
                outcome,
                explanation,
                detail: None,
            };
        }
        let Some(redirect) = &rec.redirect else {
            return Evaluated::of(Outcome::Neutral);
        };
        self.dns_terms += 1;
        if self.dns_terms > MAX_DNS_TERMS {
            return Evaluated::error(
                Outcome::PermError,
                "more than 10 DNS-querying terms (RFC 7208 4.6.4)",
            );
        }
        let target = self.target(domain, redirect).await;
        // RFC 7208 6.1: a redirect to a malformed name or to a domain without a record is a
        // permerror.
        if !is_checkable_domain(&target) {
            return Evaluated::error(
                Outcome::PermError,
                format!("redirect={target} is not a valid domain"),
            );
        }
        let result = self.check_host(target.clone()).await;
        match result.outcome {
            Outcome::None => Evaluated::error(
                Outcome::PermError,
                format!("redirect={target} has no SPF record"),
            ),
            _ => result,
        }
    }

    /// Whether one mechanism matches the client.
    async fn matches(&mut self, domain: &str, mechanism: &Mechanism) -> Matched {
        let yes = |b: bool| if b { Matched::Yes } else { Matched::No };
        match mechanism {
            Mechanism::All => Matched::Yes,
            Mechanism::Ip4(net, len) => yes(in_network(self.ip, IpAddr::V4(*net), *len)),
            Mechanism::Ip6(net, len) => yes(in_network(self.ip, IpAddr::V6(*net), *len)),
            Mechanism::Include(spec) => {
                let target = self.target(domain, spec).await;
                if !is_checkable_domain(&target) {
                    return Matched::Abort(Evaluated::error(
                        Outcome::PermError,
                        format!("include:{target} is not a valid domain"),
                    ));
                }
                // RFC 7208 5.2: pass matches; fail, softfail and neutral do not; none is a
                // permerror; errors propagate.
                let inner = self.check_host(target.clone()).await;
                match inner.outcome {
                    Outcome::Pass => Matched::Yes,
                    Outcome::Fail | Outcome::SoftFail | Outcome::Neutral => Matched::No,
                    Outcome::TempError | Outcome::PermError => Matched::Abort(Evaluated {
                        explanation: None,
                        ..inner
                    }),
                    Outcome::None => Matched::Abort(Evaluated::error(
                        Outcome::PermError,
                        format!("include:{target} has no SPF record"),
                    )),
                }
            }
            Mechanism::A {
                domain: spec,
                v4,
                v6,
            }
            | Mechanism::Mx {
                domain: spec,
                v4,
                v6,
            } => {
                let target = self.optional_target(domain, spec.as_ref()).await;
                if !queryable(&target) {
                    return Matched::No;
                }
                if matches!(mechanism, Mechanism::A { .. }) {
                    let answer = self.dns.addresses(ZONE, &target, self.ip).await;
                    return self.address_match(answer, *v4, *v6);
                }
                let exchanges = match self.dns.mx(ZONE, &target).await {
                    Answer::Records(r) => r,
                    answer => return self.void_or_error(&answer),
                };
                if exchanges.len() > MAX_MX {
                    return Matched::Abort(Evaluated::error(
                        Outcome::PermError,
                        format!("{target} has more than 10 MX records (RFC 7208 4.6.4)"),
                    ));
                }
                for (_, host) in exchanges {
                    // RFC 7505: a null MX (".") names no host.
                    if host.is_empty() {
                        continue;
                    }
                    let answer = self.dns.addresses(ZONE, &host, self.ip).await;
                    match answer {
                        Answer::Records(addrs) => {
                            if addrs.iter().any(|a| self.in_cidr(*a, *v4, *v6)) {
                                return Matched::Yes;
                            }
                        }
                        Answer::NxDomain | Answer::NoData => {}
                        Answer::Failed(e) => {
                            return Matched::Abort(Evaluated::error(
                                Outcome::TempError,
                                format!("{host}: {e}"),
                            ))
                        }
                    }
                }
                Matched::No
            }
            Mechanism::Ptr(spec) => {
                let target = self.optional_target(domain, spec.as_ref()).await;
                let target = target.trim_end_matches('.').to_ascii_lowercase();
                let names = match self.dns.ptr(ZONE, self.ip).await {
                    Answer::Records(names) => names,
                    // RFC 7208 5.5: a DNS error on the PTR lookup is just no match.
                    Answer::Failed(_) => return Matched::No,
                    void => return self.void_or_error(&void),
                };
                let within = |name: &str| {
                    let name = name.to_ascii_lowercase();
                    name == target || name.ends_with(&format!(".{target}"))
                };
                for name in names.iter().take(MAX_PTR).filter(|n| within(n)) {
                    if self.confirms(name).await {
                        return Matched::Yes;
                    }
                }
                Matched::No
            }
            Mechanism::Exists(spec) => {
                let target = self.target(domain, spec).await;
                if !queryable(&target) {
                    return Matched::No;
                }
                // RFC 7208 5.7: always an A query, whatever the client's family.
                match self.dns.ipv4(ZONE, &target).await {
                    Answer::Records(_) => Matched::Yes,
                    answer => self.void_or_error(&answer),
                }
            }
        }
    }

    /// An answer for an `a`/`mx` target's addresses.
    fn address_match(&mut self, answer: Answer<IpAddr>, v4: u8, v6: u8) -> Matched {
        match answer {
            Answer::Records(addrs) => {
                if addrs.iter().any(|a| self.in_cidr(*a, v4, v6)) {
                    Matched::Yes
                } else {
                    Matched::No
                }
            }
            other => self.void_or_error(&other),
        }
    }

    /// A lookup without records: a void lookup (counted), or an error that ends the
    /// evaluation.
    fn void_or_error<T>(&mut self, answer: &Answer<T>) -> Matched {
        match answer {
            Answer::Records(_) => Matched::No,
            Answer::NxDomain | Answer::NoData => {
                self.voids += 1;
                if self.voids > MAX_VOID_LOOKUPS {
                    Matched::Abort(Evaluated::error(
                        Outcome::PermError,
                        "more than 2 void lookups (RFC 7208 4.6.4)",
                    ))
                } else {
                    Matched::No
                }
            }
            Answer::Failed(e) => Matched::Abort(Evaluated::error(Outcome::TempError, e.clone())),
        }
    }

    fn in_cidr(&self, addr: IpAddr, v4: u8, v6: u8) -> bool {
        match addr {
            IpAddr::V4(_) => in_network(self.ip, addr, v4),
            IpAddr::V6(_) => in_network(self.ip, addr, v6),
        }
    }

    /// RFC 7208 5.5: a PTR name is validated when one of its addresses is the client's.
    async fn confirms(&self, name: &str) -> bool {
        match self.dns.addresses(ZONE, name, self.ip).await {
            Answer::Records(addrs) => addrs.contains(&self.ip),
            _ => false,
        }
    }

    /// `%{p}` (RFC 7208 7.3): a validated PTR name, preferring `domain` itself, then one of
    /// its subdomains, then any; "unknown" when none validates.
    async fn validated_name(&self, domain: &str) -> Option<String> {
        let Answer::Records(names) = self.dns.ptr(ZONE, self.ip).await else {
            return None;
        };
        let domain = domain.to_ascii_lowercase();
        let mut names: Vec<String> = names.into_iter().take(MAX_PTR).collect();
        let rank = |n: &String| {
            let n = n.to_ascii_lowercase();
            if n == domain {
                0
            } else if n.ends_with(&format!(".{domain}")) {
                1
            } else {
                2
            }
        };
        names.sort_by_key(rank);
        for name in names {
            if self.confirms(&name).await {
                return Some(name);
            }
        }
        None
    }

    /// The values for macro expansion with `domain` as `%{d}`.
    async fn expand(&self, domain: &str, spec: &MacroString) -> String {
        let validated = if spec.uses_validated_name() {
            self.validated_name(domain).await
        } else {
            None
        };
        spec.expand(&MacroValues {
            sender: &self.sender,
            local: &self.local,
            sender_domain: &self.sender_domain,
            domain,
            ip: self.ip,
            helo: &self.helo,
            validated: validated.as_deref(),
            receiver: &self.receiver,
            now: self.now,
        })
    }

    /// A domain-spec expanded into a name to query (RFC 7208 7.3: longer than 253 octets,
    /// labels are dropped from the left until it fits).
    async fn target(&self, domain: &str, spec: &MacroString) -> String {
        let mut name = self.expand(domain, spec).await;
        if name.ends_with('.') {
            name.pop();
        }
        while name.len() > 253 {
            match name.split_once('.') {
                Some((_, rest)) => name = rest.to_string(),
                None => break,
            }
        }
        name
    }

    async fn optional_target(&self, domain: &str, spec: Option<&MacroString>) -> String {
        match spec {
            Some(s) => self.target(domain, s).await,
            None => domain.to_string(),
        }
    }

    /// RFC 7208 6.2: the explanation of a fail, or none when anything about it is wrong
    /// (the default explanation is then used; the result stays fail).
    async fn explain(&self, domain: &str, exp: &MacroString) -> Option<String> {
        let target = self.target(domain, exp).await;
        let Answer::Records(texts) = self.dns.txt(ZONE, &target).await else {
            return None;
        };
        let [text] = texts.as_slice() else {
            return None;
        };
        let text = std::str::from_utf8(text).ok()?;
        if !text.is_ascii() {
            return None;
        }
        let parsed = MacroString::parse(text, record::MacroUse::Explanation).ok()?;
        Some(self.expand(domain, &parsed).await)
    }
}

/// A target that macros (or a careless record) made into something no DNS query can carry,
/// an empty or over-long label: RFC 7208 4.3 and 4.8 treat such a name as nonexistent, so the
/// mechanism does not match.
fn queryable(name: &str) -> bool {
    crate::dns::query_name(name).is_some()
}

/// Whether `ip` is in `net/len` (never across address families).
fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            (u32::from(a) & mask) == (u32::from(n) & mask)
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            (u128::from(a) & mask) == (u128::from(n) & mask)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_network(ip("1.2.3.4"), ip("1.1.1.1"), 0));
        assert!(in_network(ip("1.2.3.4"), ip("1.2.3.0"), 24));
        assert!(!in_network(ip("1.2.4.4"), ip("1.2.3.0"), 24));
        assert!(in_network(ip("1.2.3.4"), ip("1.2.3.4"), 32));
        assert!(in_network(
            ip("cafe:babe:8000::"),
            ip("cafe:babe:8000::"),
            33
        ));
        assert!(!in_network(ip("1.2.3.4"), ip("::1.1.1.1"), 0));
    }

    #[test]
    fn checkable_domains() {
        assert!(is_checkable_domain("example.com"));
        assert!(!is_checkable_domain("A2345678"));
        assert!(!is_checkable_domain("[1.2.3.5]"));
        assert!(!is_checkable_domain("a...example.com"));
        assert!(!is_checkable_domain(&format!(
            "{}.example.com",
            "a".repeat(64)
        )));
    }
}
