//! Content heuristics that need code rather than a regex: the Date header against the time the
//! message was received, a From display name that carries another domain's address, and HTML
//! links whose visible text names a different domain than their target.

use crate::pipeline::{Context, Stage, StageCheck, Symbol};
use crate::rules::SymbolTable;
use regex::Regex;
use std::sync::{Arc, OnceLock};

/// Symbols this check emits.
pub const SYMBOLS: &[&str] = &[
    "HDR_DATE_PAST",
    "HDR_DATE_FUTURE",
    "HDR_DATE_MALFORMED",
    "HDR_FROM_NAME_SPOOF",
    "HDR_FROM_BRAND_MISMATCH",
    "HTML_LINK_MISMATCH",
];

/// Date older than the receiving hop by more than this is "in the past" (SpamAssassin uses
/// 3-6 days for its lowest band).
const PAST_SECS: i64 = 4 * 86_400;
/// Date later than the receiving hop by more than this is "in the future".
const FUTURE_SECS: i64 = 86_400;

/// Brands whose names phishers put in the From display name. A sender using the name from
/// a domain that does not contain it is impersonating (or a reseller: hence a modest score).
const BRANDS: &[&str] = &[
    "paypal",
    "ebay",
    "amazon",
    "apple",
    "icloud",
    "microsoft",
    "outlook",
    "office365",
    "netflix",
    "dhl",
    "fedex",
    "usps",
    "chase",
    "wellsfargo",
    "bankofamerica",
    "citibank",
    "hsbc",
    "barclays",
    "santander",
    "bradesco",
    "itau",
    "caixa",
    "sparkasse",
    "volksbank",
    "postbank",
    "metamask",
    "ledger",
    "coinbase",
    "binance",
    "docusign",
    "dropbox",
    "wetransfer",
    "adobe",
    "facebook",
    "instagram",
    "linkedin",
    "whatsapp",
    "google",
    "yahoo",
    "suntrust",
    "irs",
    "hmrc",
    "mcafee",
    "norton",
    "geeksquad",
    "walmart",
    "costco",
    "spotify",
];

/// The brand a display name claims when its address's domain does not carry it.
fn brand_mismatch(name: &str, domain: &str) -> Option<&'static str> {
    let squashed: String = name
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || c.is_whitespace())
        .collect();
    let words: Vec<&str> = squashed.split_whitespace().collect();
    let joined = words.concat();
    let domain = domain.to_ascii_lowercase().replace(['-', '.'], "");
    BRANDS.iter().copied().find(|b| {
        // Whole word, or a multi-word brand written with spaces ("Wells Fargo").
        let named =
            words.iter().any(|w| w == b) || (b.len() > 6 && joined.contains(b) && words.len() <= 4);
        named && !domain.contains(b)
    })
}

/// The content heuristics check.
pub struct Content {
    table: Arc<SymbolTable>,
}

impl Content {
    /// A check scoring from `table`.
    pub fn new(table: Arc<SymbolTable>) -> Self {
        Content { table }
    }
}

fn registrable(host: &str) -> Option<String> {
    let h = host.trim().trim_end_matches('.').to_ascii_lowercase();
    psl::domain_str(&h).map(str::to_string)
}

fn anchor_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r#"(?is)<a\s[^>]*?href\s*=\s*["']?\s*(?:https?://)([^/"'\s>:?#]+)[^>]*>(.*?)</a>"#,
        )
        .expect("anchor regex")
    })
}

fn text_domain_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?i)^\s*(?:https?://)?(?:www\.)?([a-z0-9\-]+(?:\.[a-z0-9\-]+)+)(?:[/:?#]\S*)?\s*$",
        )
        .expect("domain regex")
    })
}

fn tags_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"(?s)<[^>]*>").expect("tag regex"))
}

/// The first link whose visible text is a URL or domain of another registrable domain.
fn link_mismatch(html: &str) -> Option<String> {
    for c in anchor_regex().captures_iter(html) {
        let target = &c[1];
        let text = tags_regex().replace_all(&c[2], "");
        let Some(shown) = text_domain_regex().captures(&text) else {
            continue;
        };
        // Visible text must look like a host (with a known suffix), not like "v1.2" or "Mr.Smith".
        let shown_host = shown[1].to_ascii_lowercase();
        if psl::suffix_str(&shown_host)
            .is_none_or(|s| s == shown_host || !s.contains(|c: char| c.is_ascii_alphabetic()))
        {
            continue;
        }
        let (Some(a), Some(b)) = (registrable(target), registrable(&shown_host)) else {
            continue;
        };
        if a != b {
            return Some(format!("text {shown_host} links to {target}"));
        }
    }
    None
}

impl StageCheck for Content {
    const NAME: &'static str = "content";
    const STAGE: Stage = Stage::Data;

    async fn check(&self, ctx: &Context<'_>) -> Vec<Symbol> {
        let Some(m) = ctx.message else {
            return Vec::new();
        };
        let p = m.parsed;
        let sym =
            |name: &str, detail: String| Symbol::new(&self.table, name, Stage::Data, Some(detail));
        let mut out = Vec::new();

        // Date against the newest Received hop (not the clock: old mail replayed later is
        // not suspicious, a Date far from its own delivery is).
        let date_present = p
            .root_part()
            .headers()
            .iter()
            .any(|h| h.name() == mail_parser::HeaderName::Date);
        match (p.date(), p.all_received().find_map(|r| r.date())) {
            (Some(date), Some(received)) => {
                let delta = received.to_timestamp() - date.to_timestamp();
                if delta > PAST_SECS {
                    out.push(sym(
                        "HDR_DATE_PAST",
                        format!("{} days before delivery", delta / 86_400),
                    ));
                } else if -delta > FUTURE_SECS {
                    out.push(sym(
                        "HDR_DATE_FUTURE",
                        format!("{} hours after delivery", -delta / 3600),
                    ));
                }
            }
            (None, _) if date_present => {
                out.push(sym("HDR_DATE_MALFORMED", "unparsable Date".into()))
            }
            _ => {}
        }

        // From: "support@bank.example" <x@elsewhere.example>
        if let Some(mb) = p.from().and_then(|a| a.first()) {
            if let (Some(name), Some(addr)) = (mb.name(), mb.address()) {
                let in_name = name
                    .split(|c: char| {
                        c.is_whitespace() || matches!(c, '<' | '>' | '(' | ')' | '"' | '\'' | ',')
                    })
                    .find(|w| w.contains('@'))
                    .and_then(|w| w.rsplit_once('@'))
                    .and_then(|(_, d)| registrable(d));
                let actual = addr.rsplit_once('@').and_then(|(_, d)| registrable(d));
                if let (Some(shown), Some(real)) = (in_name, actual) {
                    if shown != real {
                        out.push(sym(
                            "HDR_FROM_NAME_SPOOF",
                            format!("name shows {shown}, address is at {real}"),
                        ));
                    }
                }
            }
        }

        if let Some(mb) = p.from().and_then(|a| a.first()) {
            if let (Some(name), Some((_, domain))) =
                (mb.name(), mb.address().and_then(|a| a.rsplit_once('@')))
            {
                if let Some(brand) = brand_mismatch(name, domain) {
                    out.push(sym(
                        "HDR_FROM_BRAND_MISMATCH",
                        format!("name says {brand}, address is at {domain}"),
                    ));
                }
            }
        }

        for part in p.parts().filter(|x| x.is_text()) {
            let is_html = part
                .content_type()
                .is_some_and(|ct| ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("html")));
            if !is_html {
                continue;
            }
            if let Some(html) = part.text() {
                if let Some(d) = link_mismatch(&html) {
                    out.push(sym("HTML_LINK_MISMATCH", d));
                    break;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brands_in_display_names() {
        assert_eq!(
            brand_mismatch("PayPal Service", "mail.example.ru"),
            Some("paypal")
        );
        assert_eq!(brand_mismatch("PayPal", "paypal.com"), None);
        assert_eq!(
            brand_mismatch("Wells Fargo Online", "wf-secure.example"),
            Some("wellsfargo")
        );
        assert_eq!(brand_mismatch("Appleton Smith", "example.org"), None);
    }

    #[test]
    fn link_text_against_target() {
        assert!(
            link_mismatch(r#"<a href="http://evil.example.net/x">www.paypal.com</a>"#).is_some()
        );
        assert!(link_mismatch(
            r#"<a href="https://www.paypal.com/x"><b>https://paypal.com/login</b></a>"#
        )
        .is_none());
        assert!(link_mismatch(r#"<a href="http://t.example.org/c?u=1">Click here</a>"#).is_none());
        assert!(link_mismatch(r#"<a href="http://a.example.org/">version 1.2</a>"#).is_none());
    }
}
