//! SMTP replies: the `Reply` value and every reply moat sends itself, as named constants.
//!
//! This is the only place that maps a condition to a reply code. Client faults are 5xx, upstream
//! or resource trouble is 4xx (RFC 5321 4.2), and every reply carries an RFC 3463 enhanced code.

use std::borrow::Cow;
use std::fmt;

/// An enhanced status code (RFC 3463): class.subject.detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One SMTP reply: a code, an optional enhanced code and one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code; upstream replies may lack one.
    pub enhanced: Option<Enhanced>,
    /// The text lines, without the code prefix.
    pub lines: Vec<Cow<'static, str>>,
}

impl Reply {
    /// A single-line reply built from static parts (used by the constants below).
    pub const fn fixed(code: u16, enhanced: Enhanced, text: &'static str) -> ReplyConst {
        ReplyConst {
            code,
            enhanced,
            text,
        }
    }

    /// A reply with a dynamic text.
    pub fn new(code: u16, enhanced: Enhanced, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![Cow::Owned(text.into())],
        }
    }

    /// True for 2xx replies.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// True for 3xx replies (354 to DATA).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// True for 4xx replies.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The reply class digit (2, 3, 4 or 5).
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    /// The queue id an MTA names in its reply to end of data, so a log line can be joined
    /// with the MTA's: Postfix `queued as 4Xyz`, Exim `id=1abc-00`, Stalwart/others
    /// `queued with id 123`. None for other replies.
    pub fn queue_id(&self) -> Option<&str> {
        if self.class() != 2 {
            return None;
        }
        let text = self.lines.iter().map(|l| l.as_ref()).find(|l| {
            let lower = l.to_ascii_lowercase();
            lower.contains("queued as ") || lower.contains("id=") || lower.contains("with id ")
        })?;
        let lower = text.to_ascii_lowercase();
        let start = ["queued as ", "with id ", "id="]
            .iter()
            .find_map(|m| lower.find(m).map(|i| i + m.len()))?;
        let id = text[start..]
            .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | ')' | '>'))
            .next()
            .unwrap_or("")
            .trim_start_matches('<');
        (!id.is_empty()).then_some(id)
    }

    /// The first text line, for logs.
    pub fn first_line(&self) -> &str {
        self.lines.first().map(|l| l.as_ref()).unwrap_or("")
    }

    /// Serialises the reply to wire format, one CRLF-terminated line per text line.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let count = self.lines.len().max(1);
        for i in 0..count {
            let text = self.lines.get(i).map(|l| l.as_ref()).unwrap_or("");
            let sep = if i + 1 == count { ' ' } else { '-' };
            let line = match self.enhanced {
                Some(e) => format!("{}{}{} {}\r\n", self.code, sep, e, text),
                None => format!("{}{}{}\r\n", self.code, sep, text),
            };
            out.extend_from_slice(line.trim_end_matches([' ', '\r', '\n']).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The wire form as a string (for logs and tests).
    pub fn to_wire(&self) -> String {
        let mut out = Vec::new();
        self.write_to(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(e) => write!(f, "{} {} {}", self.code, e, self.lines.join(" / ")),
            None => write!(f, "{} {}", self.code, self.lines.join(" / ")),
        }
    }
}

/// A reply known at compile time; `.into()` gives a `Reply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyConst {
    code: u16,
    enhanced: Enhanced,
    text: &'static str,
}

impl ReplyConst {
    /// The reply code.
    pub const fn code(&self) -> u16 {
        self.code
    }
    /// The reply as a value.
    pub fn reply(&self) -> Reply {
        Reply {
            code: self.code,
            enhanced: Some(self.enhanced),
            lines: vec![Cow::Borrowed(self.text)],
        }
    }
    /// The reply with extra text appended (e.g. a syntax hint).
    pub fn with_detail(&self, detail: &str) -> Reply {
        Reply::new(
            self.code,
            self.enhanced,
            format!("{} {}", self.text, detail),
        )
    }
}

impl From<ReplyConst> for Reply {
    fn from(c: ReplyConst) -> Self {
        c.reply()
    }
}

const fn e(class: u8, subject: u16, detail: u16) -> Enhanced {
    Enhanced(class, subject, detail)
}

// Positive replies.
/// 250 to a MAIL that moat takes itself because every RCPT will be refused (delay_reject).
pub const MAIL_OK_LOCAL: ReplyConst = Reply::fixed(250, e(2, 1, 0), "OK");
/// 250 to RSET, NOOP and the like.
pub const OK: ReplyConst = Reply::fixed(250, e(2, 0, 0), "OK");
/// 221 to QUIT.
pub const BYE: ReplyConst = Reply::fixed(221, e(2, 0, 0), "Bye");
/// 252 to VRFY: RFC 5321 3.5.3, moat cannot verify but the MTA will try delivery.
pub const VRFY_CANNOT: ReplyConst = Reply::fixed(
    252,
    e(2, 5, 0),
    "Cannot VRFY user, but will accept message and attempt delivery",
);
/// 214 to HELP.
pub const HELP: ReplyConst = Reply::fixed(
    214,
    e(2, 0, 0),
    "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS",
);
/// 354 to DATA.
pub const START_DATA: ReplyConst =
    Reply::fixed(354, e(2, 0, 0), "Start mail input; end with <CRLF>.<CRLF>");
/// 220 to STARTTLS.
pub const READY_TLS: ReplyConst = Reply::fixed(220, e(2, 0, 0), "Ready to start TLS");

// Client faults: syntax and sequence.
/// 500 for an unknown command.
pub const UNKNOWN_COMMAND: ReplyConst =
    Reply::fixed(500, e(5, 5, 1), "Error: command not recognized");
/// 500 for XCLIENT/XFORWARD from a client: only moat may send them upstream.
pub const FORWARDING_COMMAND_REFUSED: ReplyConst =
    Reply::fixed(500, e(5, 5, 1), "Error: command not recognized");
/// 500 for a command line over the limit.
pub const LINE_TOO_LONG: ReplyConst = Reply::fixed(500, e(5, 5, 2), "Error: line too long");
/// 500 for a bare CR or LF in a command line (SMTP smuggling defence).
pub const BARE_NEWLINE_COMMAND: ReplyConst = Reply::fixed(
    500,
    e(5, 5, 2),
    "Error: bare <CR> or <LF> received; command lines must end with <CRLF>",
);
/// 250 for an XFORWARD taken from a trusted host.
pub const XFORWARD_OK: ReplyConst = Reply::fixed(250, e(2, 0, 0), "Ok");
/// 501 for a malformed XFORWARD attribute (Postfix XFORWARD_README).
pub const XFORWARD_BAD: ReplyConst = Reply::fixed(
    501,
    e(5, 5, 4),
    "Syntax: XFORWARD attribute=value... (NAME ADDR PORT PROTO HELO IDENT SOURCE DOMAIN)",
);
/// 503: XFORWARD inside a transaction (Postfix XFORWARD_README: not between MAIL and DOT).
pub const XFORWARD_IN_TRANSACTION: ReplyConst =
    Reply::fixed(503, e(5, 5, 1), "Error: MAIL transaction in progress");
/// 501 for bad syntax in arguments.
pub const SYNTAX_ERROR: ReplyConst = Reply::fixed(501, e(5, 5, 4), "Syntax:");
/// 501 for a malformed sender address.
pub const BAD_SENDER: ReplyConst = Reply::fixed(501, e(5, 1, 7), "Bad sender address syntax");
/// 501 for a malformed recipient address.
pub const BAD_RECIPIENT: ReplyConst = Reply::fixed(501, e(5, 1, 3), "Bad recipient address syntax");
/// 555 for a MAIL/RCPT parameter that is not recognised or not offered.
pub const BAD_PARAMETER: ReplyConst =
    Reply::fixed(555, e(5, 5, 4), "Unsupported or invalid parameter:");
/// 503: MAIL before HELO/EHLO.
pub const NEED_HELO: ReplyConst = Reply::fixed(503, e(5, 5, 1), "Error: send HELO/EHLO first");
/// 503: MAIL inside a transaction.
pub const NESTED_MAIL: ReplyConst = Reply::fixed(503, e(5, 5, 1), "Error: nested MAIL command");
/// 503: RCPT, DATA or BDAT without MAIL.
pub const NEED_MAIL: ReplyConst = Reply::fixed(503, e(5, 5, 1), "Error: need MAIL command");
/// 503: DATA or RCPT while BDAT chunks are being received (RFC 3030).
pub const BDAT_IN_PROGRESS: ReplyConst = Reply::fixed(
    503,
    e(5, 5, 1),
    "Error: BDAT transfer in progress; send BDAT or RSET",
);
/// 503: STARTTLS on an encrypted session.
pub const TLS_ACTIVE: ReplyConst = Reply::fixed(503, e(5, 5, 1), "Error: TLS already active");
/// 503: STARTTLS inside a transaction.
pub const TLS_IN_TRANSACTION: ReplyConst = Reply::fixed(
    503,
    e(5, 5, 1),
    "Error: STARTTLS not allowed inside a transaction",
);
/// 554 to DATA/BDAT when no recipient was accepted.
pub const NO_VALID_RECIPIENTS: ReplyConst =
    Reply::fixed(554, e(5, 5, 1), "Error: no valid recipients");
/// 502 for commands moat deliberately does not implement (EXPN, ETRN, AUTH, ...).
pub const NOT_IMPLEMENTED: ReplyConst =
    Reply::fixed(502, e(5, 5, 1), "Error: command not implemented");
/// 454 when STARTTLS is not available.
pub const TLS_NOT_AVAILABLE: ReplyConst = Reply::fixed(454, e(4, 7, 0), "TLS not available");
/// 421 after too many errors in one session.
pub const TOO_MANY_ERRORS: ReplyConst =
    Reply::fixed(421, e(4, 7, 0), "Too many errors, closing connection");

// Limits.
/// 452 for one recipient beyond the limit (RFC 5321 4.5.3.1.8).
pub const TOO_MANY_RECIPIENTS: ReplyConst =
    Reply::fixed(452, e(4, 5, 3), "Error: too many recipients");
/// 552 for a message or declared SIZE over the limit.
pub const MESSAGE_TOO_BIG: ReplyConst =
    Reply::fixed(552, e(5, 3, 4), "Error: message size exceeds fixed limit");
/// 550 for a text line over 998 octets in DATA.
pub const DATA_LINE_TOO_LONG: ReplyConst = Reply::fixed(
    550,
    e(5, 5, 2),
    "Error: message contains a line longer than 998 octets",
);
/// 550 for a bare CR or LF in DATA or BDAT (SMTP smuggling defence).
pub const BARE_NEWLINE_DATA: ReplyConst = Reply::fixed(
    550,
    e(5, 5, 2),
    "Error: message contains bare <CR> or <LF>; lines must end with <CRLF>",
);
/// 421 for a client sending message data slower than `limits.min_data_rate` (slowloris).
pub const DATA_TOO_SLOW: ReplyConst = Reply::fixed(
    421,
    e(4, 4, 2),
    "Message data arrives too slowly, closing connection",
);
/// 554 for commands pipelined before PIPELINING was offered (RFC 2920 3.1).
pub const UNOFFERED_PIPELINING: ReplyConst = Reply::fixed(
    554,
    e(5, 5, 1),
    "Protocol error: commands sent before the reply to the previous one",
);
/// 530 for MAIL before STARTTLS on a listener that requires TLS (RFC 3207 4).
pub const STARTTLS_REQUIRED: ReplyConst =
    Reply::fixed(530, e(5, 7, 0), "Must issue a STARTTLS command first");
/// 554 for a client that sent data before the greeting (RFC 5321 4.3.1: wait for it).
pub const PREGREET: ReplyConst = Reply::fixed(
    554,
    e(5, 5, 1),
    "Protocol error: data sent before the greeting",
);
/// 421 when one client address opens sessions faster than the configured rate.
pub const CONNECTION_RATE_FROM_IP: ReplyConst = Reply::fixed(
    421,
    e(4, 7, 0),
    "Too many connections from your address in a short time, try again later",
);
/// 421 when the server is at its session limit.
pub const TOO_MANY_SESSIONS: ReplyConst =
    Reply::fixed(421, e(4, 7, 0), "Too many connections, try again later");
/// 421 when one client address has too many sessions.
pub const TOO_MANY_SESSIONS_FROM_IP: ReplyConst = Reply::fixed(
    421,
    e(4, 7, 0),
    "Too many connections from your address, try again later",
);
/// 421 after the command or data timeout.
pub const TIMEOUT: ReplyConst =
    Reply::fixed(421, e(4, 4, 2), "Timeout exceeded, closing connection");
/// 421 when moat shuts down.
pub const SHUTTING_DOWN: ReplyConst =
    Reply::fixed(421, e(4, 3, 2), "Service shutting down, closing connection");

// Verdicts (RFC 7372 codes for authentication failures).
/// 550 when SPF fails and `auth.spf_reject_on_fail` is on (RFC 7372 3.2: 5.7.23).
pub const SPF_REJECT: ReplyConst = Reply::fixed(
    550,
    e(5, 7, 23),
    "SPF validation failed: the domain does not allow this client to send for",
);
/// 550 when a DKIM signature fails, none passes, and `auth.dkim_reject_on_fail` is on
/// (RFC 7372 3.1: 5.7.20).
pub const DKIM_REJECT: ReplyConst = Reply::fixed(
    550,
    e(5, 7, 20),
    "DKIM validation failed: no valid signature; the message was altered or forged",
);
/// 550 when the From domain's DMARC policy is reject (RFC 7489 10.3).
pub const DMARC_REJECT: ReplyConst =
    Reply::fixed(550, e(5, 7, 1), "Message rejected by the DMARC policy of");
/// 550 at end of data for a From that is not one clear mailbox (RFC 5322 3.6, `auth.from_reject`);
/// the detail says which problem.
pub const FROM_REJECT: ReplyConst = Reply::fixed(
    550,
    e(5, 7, 1),
    "Message rejected: the From field must hold exactly one address:",
);
/// 554 at connect when the client has no valid reverse DNS and `auth.rdns_reject` is on
/// (RFC 7372 3.3: 5.7.25).
pub const RDNS_REJECT: ReplyConst = Reply::fixed(
    554,
    e(5, 7, 25),
    "Reverse DNS validation failed: your address has no PTR name that resolves back to it",
);
/// 554 at connect for a client on the deny list.
pub const DENIED_CONNECT: ReplyConst = Reply::fixed(554, e(5, 7, 1), "Access denied");
/// 550 for a HELO, sender or recipient on a deny list.
pub const DENIED: ReplyConst = Reply::fixed(550, e(5, 7, 1), "Access denied");
/// 451 when DNS failed during sender authentication (RFC 7208 8.6: 4.4.3).
pub const AUTH_DNS_TEMPFAIL: ReplyConst = Reply::fixed(
    451,
    e(4, 4, 3),
    "Temporary DNS failure while checking the sender's authentication; try again later",
);
/// Code and enhanced code of a score-based refusal at connect (text from config).
pub const SPAM_REJECT_CONNECT: (u16, Enhanced) = (554, e(5, 7, 1));
/// Code and enhanced code of a score-based refusal after connect (text from config).
pub const SPAM_REJECT: (u16, Enhanced) = (550, e(5, 7, 1));
/// Code and enhanced code of a score-based deferral (text from config).
pub const SPAM_TEMPFAIL: (u16, Enhanced) = (451, e(4, 7, 1));

// Upstream trouble: always transient, the client retries later.
/// 451 when the upstream cannot be reached or fails mid-transaction.
pub const UPSTREAM_UNAVAILABLE: ReplyConst = Reply::fixed(
    451,
    e(4, 4, 1),
    "Temporary failure: the mail server is not available, try again later",
);
/// 451 when the upstream lacks XCLIENT and plain forwarding is not allowed.
pub const UPSTREAM_NO_XCLIENT: ReplyConst = Reply::fixed(
    451,
    e(4, 3, 0),
    "Temporary failure: mail system configuration error",
);
/// 451 for a local fault that must not lose mail.
pub const LOCAL_ERROR: ReplyConst =
    Reply::fixed(451, e(4, 3, 0), "Temporary local problem, try again later");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids_of_common_mtas() {
        let r = |code, text: &'static str| Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        };
        assert_eq!(
            r(250, "Ok: queued as 4dFxYz1Kq2z9v").queue_id(),
            Some("4dFxYz1Kq2z9v")
        );
        assert_eq!(
            r(250, "OK id=1vA2bC-000Xyz-3d").queue_id(),
            Some("1vA2bC-000Xyz-3d")
        );
        assert_eq!(
            r(250, "Message queued with id 1a2b3c.").queue_id(),
            Some("1a2b3c.")
        );
        assert_eq!(r(250, "Ok").queue_id(), None);
        assert_eq!(r(550, "rejected, queued as nothing").queue_id(), None);
    }

    #[test]
    fn single_and_multi_line_wire_format() {
        assert_eq!(OK.reply().to_wire(), "250 2.0.0 OK\r\n");
        let r = Reply {
            code: 250,
            enhanced: None,
            lines: vec!["a".into(), "b".into()],
        };
        assert_eq!(r.to_wire(), "250-a\r\n250 b\r\n");
    }

    #[test]
    fn detail_is_appended() {
        let r = SYNTAX_ERROR.with_detail("EHLO domain");
        assert_eq!(r.to_wire(), "501 5.5.4 Syntax: EHLO domain\r\n");
    }
}
