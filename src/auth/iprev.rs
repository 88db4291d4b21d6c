//! Reverse DNS of the client (RFC 8601 3, "iprev"): a PTR name that resolves back to the
//! client's address, checked through mail-auth on the shared resolver.

use super::Outcome;
use crate::dns::meter::LookupMeter;
use crate::dns::Dns;
use mail_auth::{IprevOutput, IprevResult, Parameters};
use std::net::IpAddr;

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
    pub(super) output: IprevOutput,
    pub(super) ip: IpAddr,
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
