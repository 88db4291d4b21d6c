//! ARC chain validation (RFC 8617 5.2), evaluated by moat over the shared resolver.
//!
//! Why not mail-auth's `verify_arc`: it reports malformed sets as `neutral` or `none` where
//! RFC 8617 5.2 says `fail`, passes SHA-1 seals, seals with duplicate tags and message
//! signatures whose `h=` covers ARC-Seal, and reads a missing `c=` as relaxed. A chain that
//! wrongly passes lets a trusted sealer's forgiveness of DMARC apply to a forgery, so every
//! deviation here errs towards `fail`. The ValiMail suite (`tests/it/auth/conformance/arc.rs`)
//! holds this module to the RFC.

use super::signature::{self, Algorithm, Canon, Field, KeyError, Tags};
use super::Outcome;
use crate::dns::Dns;

/// RFC 8617 4.2.1: at most 50 ARC sets.
const MAX_SETS: usize = 50;
/// The metrics label of ARC's lookups.
const ZONE: &str = "arc";

/// The ARC chain validation.
#[derive(Debug, Clone)]
pub struct ArcResult {
    /// The result: pass, fail, none, or temperror when a key could not be fetched.
    pub outcome: Outcome,
    /// `d=` of the newest ARC-Seal, the last hop that vouched for the message.
    pub last_sealer: Option<String>,
    /// The number of ARC sets.
    pub sets: usize,
    /// Why it did not pass.
    pub detail: Option<String>,
}

impl ArcResult {
    fn result(
        outcome: Outcome,
        sets: usize,
        sealer: Option<String>,
        detail: Option<String>,
    ) -> Self {
        ArcResult {
            outcome,
            last_sealer: sealer,
            sets,
            detail,
        }
    }
}

/// One ARC set: the three fields of one instance.
struct Set<'a> {
    seal: Field<'a>,
    seal_tags: Tags,
    signature: Field<'a>,
    signature_tags: Tags,
    results: Field<'a>,
}

/// Validates the ARC chain among `fields` (the message's header, see `signature::fields`)
/// over `body`.
pub async fn check_arc(dns: &Dns, fields: &[Field<'_>], body: &[u8]) -> ArcResult {
    let sets = match chain(fields) {
        Ok(None) => return ArcResult::result(Outcome::None, 0, None, None),
        Ok(Some(sets)) => sets,
        Err(why) => return ArcResult::result(Outcome::Fail, 0, None, Some(why)),
    };
    let n = sets.len();
    let sealer = sets
        .last()
        .and_then(|s| s.seal_tags.get("d"))
        .map(str::to_string);
    let fail = |why: String| ArcResult::result(Outcome::Fail, n, sealer.clone(), Some(why));
    let temp = |why: String| ArcResult::result(Outcome::TempError, n, sealer.clone(), Some(why));
    let Some(newest) = sets.last() else {
        return ArcResult::result(Outcome::None, 0, None, None);
    };
    // RFC 8617 5.2 step 3: only the newest message signature must verify.
    match verify_message_signature(dns, fields, body, newest).await {
        Ok(()) => {}
        Err(KeyError::Temporary(e)) => return temp(e),
        Err(KeyError::Permanent(e)) => return fail(format!("ARC-Message-Signature i={n}: {e}")),
    }
    // Step 5: every seal, newest first.
    for i in (0..n).rev() {
        match verify_seal(dns, &sets[..=i]).await {
            Ok(()) => {}
            Err(KeyError::Temporary(e)) => return temp(e),
            Err(KeyError::Permanent(e)) => return fail(format!("ARC-Seal i={}: {e}", i + 1)),
        }
    }
    ArcResult::result(Outcome::Pass, n, sealer, None)
}

/// The ARC sets in instance order; `None` when the message has no ARC field at all. Any
/// structural problem is an `Err` (the chain fails, RFC 8617 5.2 steps 1 and 2).
fn chain<'a>(fields: &[Field<'a>]) -> Result<Option<Vec<Set<'a>>>, String> {
    let named = |name: &str| -> Vec<Field<'a>> {
        fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .copied()
            .collect()
    };
    let (seals, signatures, results) = (
        named("ARC-Seal"),
        named("ARC-Message-Signature"),
        named("ARC-Authentication-Results"),
    );
    if seals.is_empty() && signatures.is_empty() && results.is_empty() {
        return Ok(None);
    }
    if seals.len() > MAX_SETS || signatures.len() > MAX_SETS || results.len() > MAX_SETS {
        return Err("more than 50 ARC sets".into());
    }
    let parse_tags = |f: &Field<'_>| -> Result<(u32, Tags), String> {
        let tags = signature::tag_list(f.value).map_err(|e| format!("{}: {e}", f.name))?;
        let i = instance(tags.require("i")?)?;
        Ok((i, tags))
    };
    let mut parsed_seals = Vec::new();
    for f in &seals {
        let (i, tags) = parse_tags(f)?;
        parsed_seals.push((i, *f, tags));
    }
    let mut parsed_sigs = Vec::new();
    for f in &signatures {
        let (i, tags) = parse_tags(f)?;
        parsed_sigs.push((i, *f, tags));
    }
    let mut parsed_results = Vec::new();
    for f in &results {
        parsed_results.push((results_instance(f.value)?, *f));
    }
    let n = parsed_seals.len();
    if parsed_sigs.len() != n || parsed_results.len() != n {
        return Err(format!(
            "{n} ARC-Seal, {} ARC-Message-Signature and {} ARC-Authentication-Results fields",
            parsed_sigs.len(),
            parsed_results.len()
        ));
    }
    let mut sets = Vec::with_capacity(n);
    for i in 1..=n as u32 {
        let one = |count: usize, what: &str| -> Result<(), String> {
            match count {
                1 => Ok(()),
                0 => Err(format!("no {what} with i={i}")),
                _ => Err(format!("more than one {what} with i={i}")),
            }
        };
        one(parsed_seals.iter().filter(|s| s.0 == i).count(), "ARC-Seal")?;
        one(
            parsed_sigs.iter().filter(|s| s.0 == i).count(),
            "ARC-Message-Signature",
        )?;
        one(
            parsed_results.iter().filter(|s| s.0 == i).count(),
            "ARC-Authentication-Results",
        )?;
        let (_, seal, seal_tags) = parsed_seals
            .iter()
            .find(|s| s.0 == i)
            .cloned()
            .ok_or("missing seal")?;
        let (_, sig, sig_tags) = parsed_sigs
            .iter()
            .find(|s| s.0 == i)
            .cloned()
            .ok_or("missing signature")?;
        let (_, res) = *parsed_results
            .iter()
            .find(|s| s.0 == i)
            .ok_or("missing results")?;
        check_seal_tags(&seal_tags, i, n as u32)?;
        check_signature_tags(&sig_tags)?;
        sets.push(Set {
            seal,
            seal_tags,
            signature: sig,
            signature_tags: sig_tags,
            results: res,
        });
    }
    Ok(Some(sets))
}

/// RFC 8617 4.2.1: `i=` is 1 to 50, digits only.
fn instance(text: &str) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 2 {
        return Err(format!("i={text:?} is not an instance"));
    }
    match text.parse::<u32>() {
        Ok(i) if (1..=MAX_SETS as u32).contains(&i) => Ok(i),
        _ => Err(format!("i={text} is out of range")),
    }
}

/// RFC 8617 4.1.1: ARC-Authentication-Results starts with `i=<n>;`.
fn results_instance(value: &[u8]) -> Result<u32, String> {
    let text = std::str::from_utf8(value).map_err(|_| "ARC-Authentication-Results is not UTF-8")?;
    let text = text.trim_start_matches([' ', '\t', '\r', '\n']);
    let Some(rest) = text.strip_prefix("i=") else {
        return Err("ARC-Authentication-Results does not start with i=".into());
    };
    let Some((number, _)) = rest.split_once(';') else {
        return Err("ARC-Authentication-Results has no ';' after i=".into());
    };
    instance(number.trim_end_matches([' ', '\t', '\r', '\n']))
}

/// RFC 8617 4.1.3: an ARC-Seal has a, b, cv, d, i, s (t optional) and no h=; the first
/// instance says cv=none, the later ones cv=pass; a cv=fail anywhere ends the chain.
fn check_seal_tags(tags: &Tags, i: u32, n: u32) -> Result<(), String> {
    for t in ["a", "b", "cv", "d", "s"] {
        if tags.get(t).is_none_or(str::is_empty) {
            return Err(format!("ARC-Seal i={i}: no {t}= value"));
        }
    }
    if tags.get("h").is_some() {
        return Err(format!("ARC-Seal i={i}: h= is not allowed in a seal"));
    }
    Algorithm::parse(tags.require("a")?).map_err(|e| format!("ARC-Seal i={i}: {e}"))?;
    signature::base64(tags.require("b")?).map_err(|e| format!("ARC-Seal i={i}: b= {e}"))?;
    let cv = tags.require("cv")?;
    match (i, cv) {
        (_, "fail") => Err(format!("ARC-Seal i={i} says cv=fail")),
        (1, "none") => Ok(()),
        (1, other) => Err(format!("ARC-Seal i=1 says cv={other}, not none")),
        (_, "pass") => Ok(()),
        (_, other) => Err(format!("ARC-Seal i={i} of {n} says cv={other}, not pass")),
    }
}

/// RFC 8617 4.1.2: an ARC-Message-Signature is a DKIM signature without v=: a, b, bh, d, h, i,
/// s; its h= must not cover ARC-Seal.
fn check_signature_tags(tags: &Tags) -> Result<(), String> {
    for t in ["a", "b", "bh", "d", "s"] {
        if tags.get(t).is_none_or(str::is_empty) {
            return Err(format!("ARC-Message-Signature: no {t}= value"));
        }
    }
    let h = tags.require("h")?;
    if header_list(h)
        .iter()
        .any(|n| n.eq_ignore_ascii_case("arc-seal"))
    {
        return Err("ARC-Message-Signature: h= covers ARC-Seal".into());
    }
    Algorithm::parse(tags.require("a")?).map_err(|e| format!("ARC-Message-Signature: {e}"))?;
    signature::base64(tags.require("b")?).map_err(|e| format!("ARC-Message-Signature: b= {e}"))?;
    signature::base64(tags.require("bh")?)
        .map_err(|e| format!("ARC-Message-Signature: bh= {e}"))?;
    signature::canonicalizations(tags.get("c"))
        .map_err(|e| format!("ARC-Message-Signature: {e}"))?;
    Ok(())
}

fn header_list(h: &str) -> Vec<String> {
    h.split(':')
        .map(|n| n.trim_matches([' ', '\t', '\r', '\n']).to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

fn permanent(e: String) -> KeyError {
    KeyError::Permanent(e)
}

/// RFC 8617 5.2 step 3 with RFC 6376 6.1.3: body hash, then the signature over the fields
/// its h= names and itself.
async fn verify_message_signature(
    dns: &Dns,
    fields: &[Field<'_>],
    body: &[u8],
    set: &Set<'_>,
) -> Result<(), KeyError> {
    let tags = &set.signature_tags;
    let (header_canon, body_canon) =
        signature::canonicalizations(tags.get("c")).map_err(permanent)?;
    let limit = match tags.get("l") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| permanent(format!("l={l} is not a length")))?,
        ),
        None => None,
    };
    let (hash, _) = signature::body_hash(body, body_canon, limit);
    let bh = signature::base64(tags.require("bh").map_err(permanent)?).map_err(permanent)?;
    if hash != bh {
        return Err(permanent("the body hash does not match".into()));
    }
    let h = header_list(tags.require("h").map_err(permanent)?);
    let signed = |canon: Canon| {
        let mut data = signature::signed_fields(fields, &h, canon);
        data.extend_from_slice(&signature::without_signature(&set.signature, canon));
        data
    };
    let first = check(dns, tags, &signed(header_canon)).await;
    // Without c=, RFC 6376 3.5 says simple/simple, but ARC sealers (dkimpy, OpenARC, the
    // ValiMail suite's ams_fields_c_na) sign the headers relaxed. A signature that verifies
    // either way was made with the domain's key over these headers, so both are taken.
    match (&first, tags.get("c")) {
        (Err(KeyError::Permanent(_)), None) => check(dns, tags, &signed(Canon::Relaxed)).await,
        _ => first,
    }
}

/// RFC 8617 5.1.1 / 5.2 step 5: a seal signs, in instance order, each set's
/// ARC-Authentication-Results, ARC-Message-Signature and ARC-Seal (its own without b=),
/// relaxed.
async fn verify_seal(dns: &Dns, sets: &[Set<'_>]) -> Result<(), KeyError> {
    let mut data = Vec::new();
    let Some((own, earlier)) = sets.split_last() else {
        return Err(permanent("no seal".into()));
    };
    for set in earlier {
        data.extend_from_slice(&signature::canonical_field(&set.results, Canon::Relaxed));
        data.extend_from_slice(&signature::canonical_field(&set.signature, Canon::Relaxed));
        data.extend_from_slice(&signature::canonical_field(&set.seal, Canon::Relaxed));
    }
    data.extend_from_slice(&signature::canonical_field(&own.results, Canon::Relaxed));
    data.extend_from_slice(&signature::canonical_field(&own.signature, Canon::Relaxed));
    data.extend_from_slice(&signature::without_signature(&own.seal, Canon::Relaxed));
    check(dns, &own.seal_tags, &data).await
}

/// Fetches the key the tags name and checks `b=` over `data`.
async fn check(dns: &Dns, tags: &Tags, data: &[u8]) -> Result<(), KeyError> {
    let a = Algorithm::parse(tags.require("a").map_err(permanent)?).map_err(permanent)?;
    let b = signature::base64(tags.require("b").map_err(permanent)?).map_err(permanent)?;
    let d = tags.require("d").map_err(permanent)?;
    let s = tags.require("s").map_err(permanent)?;
    let key = signature::fetch_key(dns, ZONE, s, d).await?;
    signature::verify(&key, a, data, &b).map_err(permanent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances() {
        assert_eq!(instance("1"), Ok(1));
        assert!(instance("0").is_err());
        assert!(instance("").is_err());
        assert!(instance("51").is_err());
        assert!(instance("a").is_err());
        assert_eq!(results_instance(b" i=2; mx.example; spf=pass"), Ok(2));
        assert!(results_instance(b" mx.example; i=2; spf=pass").is_err());
        assert!(results_instance(b" i=2 mx.example spf=pass").is_err());
    }
}
