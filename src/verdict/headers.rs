//! The header fields moat adds to a message it passes on (Received, Authentication-Results,
//! X-Spam-*) and the removal of forged ones. Pure: the time is passed in.
//!
//! RFC 8601 5: an Authentication-Results field claiming our authserv-id that arrives from
//! outside is a forgery and is removed before ours is added; the same goes for X-Spam-* fields,
//! which downstream filters and mail clients trust.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the Received field says about the hop.
#[derive(Debug, Clone)]
pub struct Hop<'a> {
    /// The client's HELO name.
    pub helo: &'a str,
    /// The client's address.
    pub client: IpAddr,
    /// moat's host name.
    pub by: &'a str,
    /// RFC 3848 protocol: SMTP, ESMTP, ESMTPS.
    pub protocol: &'a str,
    /// An id for this transaction (for joining logs).
    pub id: &'a str,
    /// The TLS version and cipher, if encrypted.
    pub tls: Option<(&'a str, &'a str)>,
    /// When the message was received.
    pub time: SystemTime,
}

/// The score part of the headers.
#[derive(Debug, Clone)]
pub struct SpamInfo<'a> {
    /// The total score.
    pub score: f64,
    /// The score at which a message is flagged as spam.
    pub required: f64,
    /// True when the message is flagged (add_header or stronger).
    pub flagged: bool,
    /// The symbol names.
    pub tests: &'a [&'a str],
}

/// Builds the fields to prepend, in order: Received, Authentication-Results, X-Spam-*.
pub fn prepend(hop: Option<&Hop<'_>>, auth_results: Option<&str>, spam: &SpamInfo<'_>) -> Vec<u8> {
    let mut out = String::with_capacity(512);
    if let Some(h) = hop {
        let literal = match h.client {
            IpAddr::V4(ip) => format!("[{ip}]"),
            IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
        };
        out.push_str(&format!(
            "Received: from {} ({})\r\n\tby {} (moat) with {}",
            h.helo, literal, h.by, h.protocol
        ));
        if let Some((version, cipher)) = h.tls {
            out.push_str(&format!("\r\n\t(version={version} cipher={cipher})"));
        }
        out.push_str(&format!(" id {};\r\n\t{}\r\n", h.id, rfc5322_date(h.time)));
    }
    if let Some(ar) = auth_results {
        out.push_str(ar);
        if !ar.ends_with("\r\n") {
            out.push_str("\r\n");
        }
    }
    if spam.flagged {
        out.push_str("X-Spam-Flag: YES\r\n");
    }
    out.push_str(&format!("X-Spam-Score: {:.1}\r\n", spam.score));
    out.push_str(&format!(
        "X-Spam-Status: {}, score={:.1} required={:.1}",
        if spam.flagged { "Yes" } else { "No" },
        spam.score,
        spam.required
    ));
    out.push_str(" tests=");
    // Fold long test lists (RFC 5322 2.2.3: lines SHOULD stay within 78 characters).
    let mut line_len = out.len() - out.rfind('\n').map(|p| p + 1).unwrap_or(0);
    for (i, t) in spam.tests.iter().enumerate() {
        if i > 0 {
            out.push(',');
            line_len += 1;
            if line_len + t.len() > 78 {
                out.push_str("\r\n\t");
                line_len = 8;
            }
        }
        out.push_str(t);
        line_len += t.len();
    }
    if spam.tests.is_empty() {
        out.push_str("none");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Removes Authentication-Results fields that claim `authserv_id` and any X-Spam-Flag,
/// X-Spam-Score and X-Spam-Status fields from the header section. Returns `None` when there
/// is nothing to remove, so the common case copies nothing.
pub fn strip_forged(message: &[u8], authserv_id: &str) -> Option<Vec<u8>> {
    let header_end = find_header_end(message);
    let mut fields: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    let mut remove_any = false;
    // Split the header section into fields (a field ends before a line not starting with WSP).
    let mut i = 0;
    while i < header_end {
        let line_end = message[i..header_end]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| i + p + 2)
            .unwrap_or(header_end);
        let next_is_continuation =
            matches!(message.get(line_end), Some(b' ' | b'\t')) && line_end < header_end;
        if !next_is_continuation {
            let field = &message[start..line_end];
            if is_forged(field, authserv_id) {
                fields.push((start, line_end));
                remove_any = true;
            }
            start = line_end;
        }
        i = line_end;
    }
    if !remove_any {
        return None;
    }
    let mut out = Vec::with_capacity(message.len());
    let mut pos = 0;
    for (s, e) in fields {
        out.extend_from_slice(&message[pos..s]);
        pos = e;
    }
    out.extend_from_slice(&message[pos..]);
    Some(out)
}

fn find_header_end(message: &[u8]) -> usize {
    if message.starts_with(b"\r\n") {
        return 0;
    }
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(message.len())
}

fn is_forged(field: &[u8], authserv_id: &str) -> bool {
    let Some(colon) = field.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = String::from_utf8_lossy(&field[..colon])
        .trim()
        .to_ascii_lowercase();
    match name.as_str() {
        "x-spam-flag" | "x-spam-score" | "x-spam-status" => true,
        "authentication-results" => {
            let value = String::from_utf8_lossy(&field[colon + 1..]);
            // RFC 8601 2.2: the authserv-id is the first token, before an optional version
            // and the first ';'. Comments in parentheses may precede it.
            let value = strip_comments(&value);
            let id = value
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("");
            id.eq_ignore_ascii_case(authserv_id)
        }
        _ => false,
    }
}

fn strip_comments(s: &str) -> String {
    let mut depth = 0;
    s.chars()
        .filter(|&c| match c {
            '(' => {
                depth += 1;
                false
            }
            ')' => {
                depth = (depth - 1).max(0);
                false
            }
            _ => depth == 0,
        })
        .collect()
}

/// A UTC calendar date and time: year, month (1-12), day, hour, minute, second.
pub fn civil_utc(secs: u64) -> (i64, i64, i64, u64, u64, u64) {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// RFC 5322 3.3 date-time in UTC, e.g. `Mon, 30 Nov 2026 00:04:14 +0000`.
pub fn rfc5322_date(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86400) as i64;
    let (year, month, day, hour, minute, second) = civil_utc(secs);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        hour,
        minute,
        second
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_000_654);
        assert_eq!(rfc5322_date(t), "Mon, 30 Nov 2026 01:04:14 +0000");
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
    }

    #[test]
    fn strips_only_our_authserv_id_and_spam_headers() {
        let msg = b"Received: x\r\nAuthentication-Results: (forged) mx.moat.test;\r\n dkim=pass\r\nAuthentication-Results: other.example; spf=pass\r\nX-Spam-Status: No\r\nSubject: hi\r\n\r\nAuthentication-Results: mx.moat.test; body\r\n";
        let out = strip_forged(msg, "MX.moat.test").unwrap();
        assert_eq!(
            out,
            b"Received: x\r\nAuthentication-Results: other.example; spf=pass\r\nSubject: hi\r\n\r\nAuthentication-Results: mx.moat.test; body\r\n"
        );
        assert!(strip_forged(b"Subject: x\r\n\r\nbody\r\n", "mx.moat.test").is_none());
    }

    #[test]
    fn prepended_fields() {
        let hop = Hop {
            helo: "client.example",
            client: "192.0.2.1".parse().unwrap(),
            by: "mx.moat.test",
            protocol: "ESMTPS",
            id: "1.1",
            tls: Some(("TLSv1_3", "TLS13_AES_256_GCM_SHA384")),
            time: UNIX_EPOCH,
        };
        let spam = SpamInfo {
            score: 7.26,
            required: 6.0,
            flagged: true,
            tests: &["DKIM_NONE", "SPF_FAIL"],
        };
        let text = String::from_utf8(prepend(
            Some(&hop),
            Some("Authentication-Results: mx.moat.test; none\r\n"),
            &spam,
        ))
        .unwrap();
        assert!(text.starts_with("Received: from client.example ([192.0.2.1])\r\n\tby mx.moat.test (moat) with ESMTPS"), "{text}");
        assert!(
            text.contains("X-Spam-Flag: YES\r\nX-Spam-Score: 7.3"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "X-Spam-Status: Yes, score=7.3 required=6.0 tests=DKIM_NONE,SPF_FAIL\r\n"
            ),
            "{text}"
        );
    }
}
