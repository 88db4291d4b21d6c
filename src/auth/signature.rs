//! What DKIM-style signatures share (RFC 6376): the header fields of a message as they were
//! sent, tag-lists, header and body canonicalization, `_domainkey` key records and the
//! signature check itself. ARC's seals and message signatures use the same parts (RFC 8617
//! 4.1). Pure except [`fetch_key`], which asks the shared resolver.

use crate::dns::{Answer, Dns};
use aws_lc_rs::digest;
use aws_lc_rs::signature::{
    UnparsedPublicKey, ED25519, RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
};
use base64::Engine as _;

/// One header field as it was sent.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    /// The name as written (compare case-insensitively).
    pub name: &'a str,
    /// The whole field: name, colon, value, folds and the final CRLF.
    pub raw: &'a [u8],
    /// The value: everything after the colon, without the final CRLF.
    pub value: &'a [u8],
}

/// The header fields of `message` in order, and the offset of the body.
pub fn fields(message: &[u8]) -> (Vec<Field<'_>>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < message.len() {
        // The empty line ends the header.
        if message[pos..].starts_with(b"\r\n") {
            return (out, pos + 2);
        }
        let mut end = pos;
        loop {
            match message[end..].windows(2).position(|w| w == b"\r\n") {
                Some(i) => {
                    end += i + 2;
                    if !matches!(message.get(end), Some(b' ' | b'\t')) {
                        break;
                    }
                }
                None => {
                    end = message.len();
                    break;
                }
            }
        }
        let raw = &message[pos..end];
        if let Some(colon) = raw.iter().position(|&b| b == b':') {
            if let Ok(name) = std::str::from_utf8(&raw[..colon]) {
                let value = raw[colon + 1..]
                    .strip_suffix(b"\r\n")
                    .unwrap_or(&raw[colon + 1..]);
                out.push(Field {
                    name: name.trim_end(),
                    raw,
                    value,
                });
            }
        }
        pos = end;
    }
    (out, message.len())
}

/// A parsed tag-list (RFC 6376 3.2), tags in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(pub Vec<(String, String)>);

impl Tags {
    /// The value of `name` (tag names are case-sensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, or an error naming the missing tag.
    pub fn require(&self, name: &str) -> Result<&str, String> {
        self.get(name).ok_or_else(|| format!("no {name}= tag"))
    }
}

/// RFC 6376 3.2: `tag-spec *( ";" tag-spec ) [ ";" ]`, tag names `ALPHA *( ALPHA / DIGIT /
/// "_" )`, each tag at most once. An empty tag-spec between two semicolons is an error.
pub fn tag_list(value: &[u8]) -> Result<Tags, String> {
    let text = std::str::from_utf8(value).map_err(|_| "not UTF-8".to_string())?;
    let parts: Vec<&str> = text.split(';').collect();
    let mut tags = Tags::default();
    for (i, part) in parts.iter().enumerate() {
        let part = part.trim_matches(is_fws);
        if part.is_empty() {
            if i == parts.len() - 1 && i > 0 {
                break;
            }
            return Err("an empty tag".into());
        }
        let Some((name, val)) = part.split_once('=') else {
            return Err(format!("{part:?} is not tag=value"));
        };
        let name = name.trim_matches(is_fws);
        let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(format!("{name:?} is not a tag name"));
        }
        if tags.get(name).is_some() {
            return Err(format!("tag {name}= given twice"));
        }
        tags.0
            .push((name.to_string(), val.trim_matches(is_fws).to_string()));
    }
    Ok(tags)
}

fn is_fws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Base64 with folding whitespace removed (RFC 6376 3.5 `b=`, `bh=`, `p=`).
pub fn base64(value: &str) -> Result<Vec<u8>, String> {
    let compact: String = value.chars().filter(|c| !is_fws(*c)).collect();
    if compact.is_empty() {
        return Err("empty base64".into());
    }
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| format!("bad base64: {e}"))
}

/// Header or body canonicalization (RFC 6376 3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canon {
    /// `simple`
    Simple,
    /// `relaxed`
    Relaxed,
}

/// `c=`: header/body, either defaulting to simple.
pub fn canonicalizations(c: Option<&str>) -> Result<(Canon, Canon), String> {
    let one = |s: &str| match s {
        "simple" => Ok(Canon::Simple),
        "relaxed" => Ok(Canon::Relaxed),
        other => Err(format!("unknown canonicalization {other:?}")),
    };
    match c {
        None => Ok((Canon::Simple, Canon::Simple)),
        Some(c) => match c.split_once('/') {
            Some((h, b)) => Ok((one(h)?, one(b)?)),
            None => Ok((one(c)?, Canon::Simple)),
        },
    }
}

/// A header field in canonical form, with its CRLF.
pub fn canonical_field(field: &Field<'_>, canon: Canon) -> Vec<u8> {
    match canon {
        Canon::Simple => field.raw.to_vec(),
        Canon::Relaxed => relaxed_field(field.name, field.value),
    }
}

fn relaxed_field(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = name.trim().to_ascii_lowercase().into_bytes();
    out.push(b':');
    // WSP runs become one space; WSP before the first and after the last value octet goes.
    let mut pending_space = false;
    let mut started = false;
    for &b in value {
        match b {
            b'\r' | b'\n' => {}
            b' ' | b'\t' => pending_space = true,
            _ => {
                if pending_space && started {
                    out.push(b' ');
                }
                pending_space = false;
                started = true;
                out.push(b);
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The field as signed by its own signature: the `b=` value emptied and no final CRLF
/// (RFC 6376 3.7).
pub fn without_signature(field: &Field<'_>, canon: Canon) -> Vec<u8> {
    let raw = strip_b(field.raw);
    let colon = raw.iter().position(|&b| b == b':').unwrap_or(0);
    let value = raw[colon + 1..]
        .strip_suffix(b"\r\n")
        .unwrap_or(&raw[colon + 1..]);
    let mut out = match canon {
        Canon::Simple => raw.clone(),
        Canon::Relaxed => relaxed_field(field.name, value),
    };
    if out.ends_with(b"\r\n") {
        out.truncate(out.len() - 2);
    }
    out
}

/// Removes the value of the `b=` tag (not `bh=`), keeping `b=` itself.
fn strip_b(raw: &[u8]) -> Vec<u8> {
    let colon = raw.iter().position(|&b| b == b':').map_or(0, |c| c + 1);
    let mut out = raw[..colon].to_vec();
    let mut at_tag_start = true;
    let mut i = colon;
    while i < raw.len() {
        let b = raw[i];
        if at_tag_start && b == b'b' {
            // `b` followed by optional FWS and '=' is the b= tag.
            let mut j = i + 1;
            while j < raw.len() && matches!(raw[j], b' ' | b'\t' | b'\r' | b'\n') {
                j += 1;
            }
            if raw.get(j) == Some(&b'=') {
                out.extend_from_slice(&raw[i..=j]);
                i = j + 1;
                while i < raw.len() && raw[i] != b';' {
                    i += 1;
                }
                // Keep a final CRLF that closes the field.
                if i == raw.len() && raw.ends_with(b"\r\n") {
                    out.extend_from_slice(b"\r\n");
                }
                at_tag_start = false;
                continue;
            }
        }
        match b {
            b';' => at_tag_start = true,
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ => at_tag_start = false,
        }
        out.push(b);
        i += 1;
    }
    out
}

/// The header fields a signature's `h=` names, picked bottom-up as RFC 6376 5.4.2 says
/// (a name listed more often than it occurs signs nothing for the extra entries).
pub fn signed_fields(all: &[Field<'_>], h: &[String], canon: Canon) -> Vec<u8> {
    let mut used = vec![false; all.len()];
    let mut out = Vec::new();
    for name in h {
        let pick = (0..all.len())
            .rev()
            .find(|&i| !used[i] && all[i].name.eq_ignore_ascii_case(name));
        if let Some(i) = pick {
            used[i] = true;
            out.extend_from_slice(&canonical_field(&all[i], canon));
        }
    }
    out
}

/// The SHA-256 of the canonical body, cut to `limit` octets when `l=` gave one.
pub fn body_hash(body: &[u8], canon: Canon, limit: Option<usize>) -> (Vec<u8>, usize) {
    let canonical = canonical_body(body, canon);
    let len = canonical.len();
    let signed = match limit {
        Some(l) if l < len => &canonical[..l],
        _ => &canonical[..],
    };
    (
        digest::digest(&digest::SHA256, signed).as_ref().to_vec(),
        len,
    )
}

fn canonical_body(body: &[u8], canon: Canon) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = body
        .split_inclusive(|&b| b == b'\n')
        .map(|l| {
            let l = l.strip_suffix(b"\n").unwrap_or(l);
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            match canon {
                Canon::Simple => l.to_vec(),
                Canon::Relaxed => {
                    let mut out = Vec::with_capacity(l.len());
                    let mut space = false;
                    for &b in l {
                        if b == b' ' || b == b'\t' {
                            space = true;
                        } else {
                            if space {
                                out.push(b' ');
                            }
                            space = false;
                            out.push(b);
                        }
                    }
                    out
                }
            }
        })
        .collect();
    while lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    if lines.is_empty() {
        // RFC 6376 3.4.3 and 3.4.4: an empty body is CRLF under simple, nothing under relaxed.
        return match canon {
            Canon::Simple => b"\r\n".to_vec(),
            Canon::Relaxed => Vec::new(),
        };
    }
    let mut out = Vec::with_capacity(body.len());
    for l in lines {
        out.extend_from_slice(&l);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The signing algorithms moat verifies; `rsa-sha1` is refused (RFC 8301).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `rsa-sha256`
    RsaSha256,
    /// `ed25519-sha256` (RFC 8463)
    Ed25519Sha256,
}

impl Algorithm {
    /// Parses `a=`.
    pub fn parse(a: &str) -> Result<Algorithm, String> {
        match a {
            "rsa-sha256" => Ok(Algorithm::RsaSha256),
            "ed25519-sha256" => Ok(Algorithm::Ed25519Sha256),
            "rsa-sha1" => Err("rsa-sha1 is not accepted (RFC 8301)".into()),
            other => Err(format!("unknown algorithm {other:?}")),
        }
    }
}

/// A public key from a `_domainkey` record.
#[derive(Debug, Clone)]
pub struct PublicKey {
    kind: Algorithm,
    der: Vec<u8>,
    strict: bool,
}

impl PublicKey {
    /// `t=s` (RFC 6376 3.6.1): the AUID's domain must be d= itself, not a subdomain.
    pub fn strict_identity(&self) -> bool {
        self.strict
    }
}

/// Why no key could be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The lookup failed for now (temperror).
    Temporary(String),
    /// No record, or a record that is not a usable key (the signature fails).
    Permanent(String),
}

/// Fetches and parses the key at `<s>._domainkey.<d>` (RFC 6376 3.6.2).
pub async fn fetch_key(
    dns: &Dns,
    zone: &'static str,
    s: &str,
    d: &str,
) -> Result<PublicKey, KeyError> {
    let name = format!("{s}._domainkey.{d}");
    if crate::dns::query_name(&name).is_none() {
        return Err(KeyError::Permanent(format!(
            "{name:?} is not a domain name"
        )));
    }
    let texts = match dns.txt(zone, &name).await {
        Answer::Records(t) => t,
        Answer::NxDomain | Answer::NoData => {
            return Err(KeyError::Permanent(format!("no key at {name}")))
        }
        Answer::Failed(e) => return Err(KeyError::Temporary(format!("{name}: {e}"))),
    };
    let mut last = KeyError::Permanent(format!("no key at {name}"));
    for text in texts {
        match parse_key(&text) {
            Ok(k) => return Ok(k),
            Err(e) => last = KeyError::Permanent(format!("{name}: {e}")),
        }
    }
    Err(last)
}

fn parse_key(text: &[u8]) -> Result<PublicKey, String> {
    let tags = tag_list(text)?;
    if let Some(v) = tags.get("v") {
        if v != "DKIM1" {
            return Err(format!("v={v} is not DKIM1"));
        }
    }
    let kind = match tags.get("k").unwrap_or("rsa") {
        "rsa" => Algorithm::RsaSha256,
        "ed25519" => Algorithm::Ed25519Sha256,
        other => return Err(format!("unknown key type {other:?}")),
    };
    // RFC 6376 3.6.1: h= lists the hashes the key may be used with; s= its services.
    if let Some(h) = tags.get("h") {
        if !h.split(':').any(|x| x.trim() == "sha256") {
            return Err(format!("the key allows only h={h}"));
        }
    }
    if let Some(services) = tags.get("s") {
        if !services
            .split(':')
            .any(|x| matches!(x.trim(), "*" | "email"))
        {
            return Err(format!("the key is for s={services}, not email"));
        }
    }
    let strict = tags
        .get("t")
        .is_some_and(|t| t.split(':').any(|f| f.trim() == "s"));
    let p = tags.require("p")?;
    if p.trim().is_empty() {
        return Err("the key is revoked (empty p=)".into());
    }
    let der = base64(p)?;
    let der = match kind {
        Algorithm::RsaSha256 => strip_spki(&der).unwrap_or(&der).to_vec(),
        Algorithm::Ed25519Sha256 => der,
    };
    Ok(PublicKey { kind, der, strict })
}

/// RSA keys in DKIM records are SubjectPublicKeyInfo; aws-lc verifies with the RSAPublicKey
/// inside it.
fn strip_spki(der: &[u8]) -> Option<&[u8]> {
    fn len(b: &[u8]) -> Option<(usize, &[u8])> {
        let first = *b.first()?;
        if first & 0x80 == 0 {
            return Some((usize::from(first), &b[1..]));
        }
        let n = usize::from(first & 0x7f);
        let bytes = b.get(1..=n)?;
        let value = bytes
            .iter()
            .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        Some((value, &b[n + 1..]))
    }
    if *der.first()? != 0x30 {
        return None;
    }
    let (_, rest) = len(&der[1..])?;
    if *rest.first()? != 0x30 {
        return None;
    }
    let (alg_len, rest) = len(&rest[1..])?;
    let rest = rest.get(alg_len..)?;
    if *rest.first()? != 0x03 {
        return None;
    }
    let (_, rest) = len(&rest[1..])?;
    // The BIT STRING's first octet counts unused bits (0).
    rest.get(1..)
}

/// Verifies `signature` over `data` with `key` for algorithm `a`.
pub fn verify(key: &PublicKey, a: Algorithm, data: &[u8], signature: &[u8]) -> Result<(), String> {
    if key.kind != a {
        return Err("the key does not fit the algorithm".into());
    }
    let ok = match a {
        Algorithm::RsaSha256 => {
            UnparsedPublicKey::new(&RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY, &key.der)
                .verify(data, signature)
        }
        // RFC 8463 3: Ed25519 signs the SHA-256 hash of the data.
        Algorithm::Ed25519Sha256 => {
            let hash = digest::digest(&digest::SHA256, data);
            UnparsedPublicKey::new(&ED25519, &key.der).verify(hash.as_ref(), signature)
        }
    };
    ok.map_err(|_| "the signature does not verify".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_lists() {
        let t = tag_list(b" a=rsa-sha256; b=abc\r\n def; i=1;").unwrap();
        assert_eq!(t.get("b"), Some("abc\r\n def"));
        assert!(tag_list(b"a=1;; b=2").is_err());
        assert!(tag_list(b"a=1; a=2").is_err());
        assert!(tag_list(b"a=1; _=2").is_err());
        assert!(tag_list(b"").is_err());
        assert_eq!(tag_list(b"S=dummy").unwrap().get("s"), None);
    }

    #[test]
    fn canonical_forms() {
        let message = b"Subject:  Hi \r\n\tthere \r\nX: y\r\n\r\nA  b \r\n\r\n\r\n";
        let (f, body) = fields(message);
        assert_eq!(f.len(), 2);
        assert_eq!(
            canonical_field(&f[0], Canon::Relaxed),
            b"subject:Hi there\r\n"
        );
        let (h, _) = fields(b"X: h=from : to\r\n\r\n");
        assert_eq!(canonical_field(&h[0], Canon::Relaxed), b"x:h=from : to\r\n");
        assert_eq!(canonical_body(&message[body..], Canon::Relaxed), b"A b\r\n");
        assert_eq!(
            canonical_body(&message[body..], Canon::Simple),
            b"A  b \r\n"
        );
        assert_eq!(canonical_body(b"", Canon::Simple), b"\r\n");
        assert_eq!(canonical_body(b"\r\n", Canon::Relaxed), b"");
        let (f, _) = fields(b"DKIM-Signature: a=x; b=abc\r\n def; bh=xyz\r\n\r\n");
        assert_eq!(
            without_signature(&f[0], Canon::Relaxed),
            b"dkim-signature:a=x; b=; bh=xyz"
        );
        assert_eq!(
            without_signature(&f[0], Canon::Simple),
            b"DKIM-Signature: a=x; b=; bh=xyz"
        );
    }
}
