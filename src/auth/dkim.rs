//! DKIM signature verification (RFC 6376 6.1, RFC 8301, RFC 8463), evaluated by moat over the
//! shared resolver with the parts in `auth::signature`.
//!
//! Why not mail-auth's verifier: parsed strictly it ignores every signature with `l=` (so a
//! legitimate list-signed message fails DMARC), and it reports no `d=`/`s=` for signatures it
//! could not use. And it cannot see what RFC 6376 8.15 warns about: a field the signature
//! covers that appears once more, unsigned, above the signed instance is what a mail client
//! shows (a second Subject or From), so such a signature must not pass. moat also refuses
//! content beyond `l=`, which is how `l=` is abused.

use super::signature::{self, Algorithm, Field, KeyError, Tags};
use super::Outcome;
use crate::dns::Dns;

/// The metrics label of DKIM's lookups.
const ZONE: &str = "dkim";
/// Signatures verified per message; more are reported as permerror without a lookup.
const MAX_SIGNATURES: usize = 10;

/// Fields that hops add above a message in transit (RFC 5321 4.4, RFC 5322 3.6.6, RFC 8601,
/// RFC 8617): a signer that covered one of them cannot have meant the newer copies, so they
/// are not "unsigned duplicates" in the sense of RFC 6376 8.15.
const TRACE_FIELDS: &[&str] = &[
    "received",
    "return-path",
    "dkim-signature",
    "authentication-results",
    "arc-seal",
    "arc-message-signature",
    "arc-authentication-results",
    "delivered-to",
    "x-original-to",
];

/// One DKIM signature's result.
#[derive(Debug, Clone)]
pub struct DkimCheck {
    /// The result.
    pub outcome: Outcome,
    /// `d=` of the signature (empty only when the field has none).
    pub domain: String,
    /// `s=` of the signature.
    pub selector: String,
    /// The AUID: `i=`, or `@d=` when the signature has none.
    pub auid: String,
    /// The first eight characters of `b=` (RFC 6008 `header.b`).
    pub b_prefix: String,
    /// Why it did not pass.
    pub detail: Option<String>,
}

/// Verifies every DKIM-Signature among `fields` (the message's header, see
/// `signature::fields`) over `body`, in order.
pub async fn check_dkim(dns: &Dns, fields: &[Field<'_>], body: &[u8]) -> Vec<DkimCheck> {
    let mut out = Vec::new();
    let mut hashes = BodyHashes {
        body,
        done: Vec::new(),
    };
    let signatures = fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("DKIM-Signature"));
    for (n, field) in signatures.enumerate() {
        let tags = signature::tag_list(field.value).unwrap_or_default();
        let tag = |t: &str| tags.get(t).unwrap_or("").to_string();
        let domain = tag("d");
        let auid = match tags.get("i") {
            Some(i) => i.to_string(),
            None if !domain.is_empty() => format!("@{domain}"),
            None => String::new(),
        };
        let b_prefix: String = tag("b")
            .chars()
            .filter(|c| !c.is_whitespace())
            .take(8)
            .collect();
        let mut check = DkimCheck {
            outcome: Outcome::Pass,
            domain,
            selector: tag("s"),
            auid,
            b_prefix,
            detail: None,
        };
        let result = if n >= MAX_SIGNATURES {
            Err((
                Outcome::PermError,
                "more signatures than moat verifies".into(),
            ))
        } else {
            verify(dns, fields, &mut hashes, field).await
        };
        if let Err((outcome, why)) = result {
            check.outcome = outcome;
            check.detail = Some(why);
        }
        out.push(check);
    }
    out
}

type Verdict = Result<(), (Outcome, String)>;

fn perm(why: impl Into<String>) -> (Outcome, String) {
    (Outcome::PermError, why.into())
}

fn fail(why: impl Into<String>) -> (Outcome, String) {
    (Outcome::Fail, why.into())
}

/// RFC 6376 6.1: one signature, from its tags to the crypto.
/// The body hashes computed so far: signatures of one message often share canonicalization
/// and `l=`, and the body need not be canonicalized again for each.
struct BodyHashes<'a> {
    body: &'a [u8],
    done: Vec<(HashKey, (Vec<u8>, usize))>,
}

/// Body canonicalization and `l=`: what a body hash depends on.
type HashKey = (signature::Canon, Option<usize>);

impl BodyHashes<'_> {
    /// The hash and the canonical body's length for `canon` and `limit`.
    fn get(&mut self, canon: signature::Canon, limit: Option<usize>) -> (Vec<u8>, usize) {
        if let Some((_, h)) = self.done.iter().find(|(k, _)| *k == (canon, limit)) {
            return h.clone();
        }
        let h = signature::body_hash(self.body, canon, limit);
        self.done.push(((canon, limit), h.clone()));
        h
    }
}

async fn verify(
    dns: &Dns,
    fields: &[Field<'_>],
    hashes: &mut BodyHashes<'_>,
    field: &Field<'_>,
) -> Verdict {
    let tags = signature::tag_list(field.value).map_err(perm)?;
    let parsed = Parsed::from_tags(&tags)?;
    // RFC 6376 8.15: a covered field with more instances than the signature signs has an
    // unsigned one above the signed ones, and that is the one a reader sees.
    for name in &parsed.h {
        let lower = name.to_ascii_lowercase();
        if TRACE_FIELDS.contains(&lower.as_str()) || lower.starts_with("resent-") {
            continue;
        }
        let signed = parsed
            .h
            .iter()
            .filter(|n| n.eq_ignore_ascii_case(name))
            .count();
        let present = fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .count();
        if present > signed {
            return Err(fail(format!(
                "an unsigned {name} field stands above the signed one (RFC 6376 8.15)"
            )));
        }
    }
    let (hash, canonical_len) = hashes.get(parsed.body_canon, parsed.l);
    if let Some(l) = parsed.l {
        if l > canonical_len {
            return Err(fail(format!(
                "l={l} is longer than the body ({canonical_len} octets)"
            )));
        }
    }
    if hash != parsed.bh {
        return Err(fail("the body hash does not match"));
    }
    let key = match signature::fetch_key(dns, ZONE, &parsed.s, &parsed.d).await {
        Ok(k) => k,
        Err(KeyError::Temporary(e)) => return Err((Outcome::TempError, e)),
        Err(KeyError::Permanent(e)) => return Err(perm(e)),
    };
    if key.strict_identity() {
        let auid_domain = parsed.i.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if !auid_domain.is_empty() && !auid_domain.eq_ignore_ascii_case(&parsed.d) {
            return Err(perm("the key (t=s) does not allow i= in a subdomain"));
        }
    }
    let mut data = signature::signed_fields(fields, &parsed.h, parsed.header_canon);
    data.extend_from_slice(&signature::without_signature(field, parsed.header_canon));
    signature::verify(&key, parsed.a, &data, &parsed.b).map_err(fail)?;
    if let Some(l) = parsed.l {
        if l < canonical_len {
            return Err(fail(format!(
                "{} octets of the body are not covered by l={l}",
                canonical_len - l
            )));
        }
    }
    Ok(())
}

/// The tags of a DKIM-Signature that verification needs, checked (RFC 6376 3.5).
struct Parsed {
    a: Algorithm,
    b: Vec<u8>,
    bh: Vec<u8>,
    d: String,
    s: String,
    i: String,
    h: Vec<String>,
    l: Option<usize>,
    header_canon: signature::Canon,
    body_canon: signature::Canon,
}

impl Parsed {
    fn from_tags(tags: &Tags) -> Result<Parsed, (Outcome, String)> {
        match tags.get("v") {
            Some("1") => {}
            Some(v) => return Err(perm(format!("v={v} is not 1"))),
            None => return Err(perm("no v= tag")),
        }
        let a = Algorithm::parse(tags.require("a").map_err(perm)?).map_err(perm)?;
        let b = signature::base64(tags.require("b").map_err(perm)?).map_err(perm)?;
        let bh = signature::base64(tags.require("bh").map_err(perm)?).map_err(perm)?;
        let d = tags.require("d").map_err(perm)?.to_ascii_lowercase();
        let s = tags.require("s").map_err(perm)?.to_string();
        if d.is_empty() || s.is_empty() {
            return Err(perm("empty d= or s="));
        }
        let h: Vec<String> = tags
            .require("h")
            .map_err(perm)?
            .split(':')
            .map(|n| n.trim_matches([' ', '\t', '\r', '\n']).to_string())
            .filter(|n| !n.is_empty())
            .collect();
        // RFC 6376 5.4: the From field MUST be signed.
        if !h.iter().any(|n| n.eq_ignore_ascii_case("from")) {
            return Err(perm("h= does not cover From"));
        }
        let i = match tags.get("i") {
            Some(i) => {
                // RFC 6376 3.5: the AUID's domain is d= or a subdomain of it.
                let dom = i.rsplit_once('@').map(|(_, x)| x).unwrap_or("");
                let dom = dom.to_ascii_lowercase();
                if dom != d && !dom.ends_with(&format!(".{d}")) {
                    return Err(perm(format!("i={i} is outside d={d}")));
                }
                i.to_string()
            }
            None => format!("@{d}"),
        };
        let l = match tags.get("l") {
            Some(l) => Some(
                l.parse::<usize>()
                    .map_err(|_| perm(format!("l={l} is not a length")))?,
            ),
            None => None,
        };
        let (header_canon, body_canon) =
            signature::canonicalizations(tags.get("c")).map_err(perm)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|x| x.as_secs())
            .unwrap_or(0);
        if let Some(x) = tags.get("x") {
            let x: u64 = x
                .parse()
                .map_err(|_| perm(format!("x={x} is not a time")))?;
            if let Some(t) = tags.get("t").and_then(|t| t.parse::<u64>().ok()) {
                if x < t {
                    return Err(perm("x= is before t="));
                }
            }
            if x < now {
                return Err(fail("the signature has expired (x=)"));
            }
        }
        Ok(Parsed {
            a,
            b,
            bh,
            d,
            s,
            i,
            h,
            l,
            header_canon,
            body_canon,
        })
    }
}
