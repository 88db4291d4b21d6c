//! One client command line -> a `Command`, with the raw MAIL/RCPT parameters kept for relaying.
//!
//! Framing (CRLF, length) is checked by the caller (`session::conn`); this module sees one
//! complete line without its CRLF. Parsing uses smtp-proto; a syntax error names the expected
//! syntax in the reply.

use super::address::{split_path, Parameter};
use super::reply::{self, Reply};
use smtp_proto::{Error as ProtoError, Request};

/// A parsed client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// EHLO with the client's name.
    Ehlo(String),
    /// HELO with the client's name.
    Helo(String),
    /// MAIL FROM with its reverse-path and parameters.
    Mail(PathCommand),
    /// RCPT TO with its forward-path and parameters.
    Rcpt(PathCommand),
    /// DATA.
    Data,
    /// BDAT with the chunk size and the LAST flag (RFC 3030).
    Bdat {
        /// Octets that follow the command line.
        size: usize,
        /// True for the final chunk.
        last: bool,
    },
    /// RSET.
    Rset,
    /// NOOP.
    Noop,
    /// QUIT.
    Quit,
    /// VRFY (answered with 252).
    Vrfy,
    /// HELP.
    Help,
    /// STARTTLS.
    StartTls,
    /// XFORWARD with its attributes (upper-case names, xtext-decoded values); only hosts in
    /// `server.xforward_hosts` may send it (Postfix's before-queue proxy does).
    Xforward(Vec<(String, String)>),
    /// A command moat recognises but does not offer (EXPN, ETRN, AUTH, ...).
    NotImplemented(&'static str),
}

/// MAIL or RCPT: the address and the raw parameters, as the client sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathCommand {
    /// The address between the angle brackets (empty for the null reverse-path).
    pub address: String,
    /// The path as the client sent it, with its angle brackets, relayed unchanged.
    pub path: String,
    /// The parameters after the path, relayed unchanged.
    pub params: Vec<Parameter>,
    /// The SIZE= value of MAIL, if any.
    pub size: Option<usize>,
}

impl Command {
    /// Parses one command line (without CRLF). The error is the reply to send.
    pub fn parse(line: &[u8]) -> Result<Command, Reply> {
        let verb_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
        let verb = line[..verb_end].to_ascii_uppercase();
        // XCLIENT only moat sends upstream; a client sending it is probing for a trust bypass
        // (Postfix XCLIENT_README), so it looks unknown. XFORWARD is parsed here and refused
        // the same way by the session unless the client is a trusted forwarder.
        if verb == b"XCLIENT" {
            return Err(reply::FORWARDING_COMMAND_REFUSED.reply());
        }
        if verb == b"XFORWARD" {
            return Self::xforward(&line[verb_end..]);
        }
        let mut framed = Vec::with_capacity(line.len() + 2);
        framed.extend_from_slice(line);
        framed.extend_from_slice(b"\r\n");
        let parsed = Request::parse(&mut framed.iter());
        match parsed {
            Ok(req) => Self::from_request(req, line),
            Err(err) => Err(Self::error_reply(err, &verb)),
        }
    }

    /// `XFORWARD name=value...`: every attribute known, at least one, values xtext-decoded.
    fn xforward(args: &[u8]) -> Result<Command, Reply> {
        const KNOWN: &[&str] = &[
            "NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE", "DOMAIN",
        ];
        let bad = || reply::XFORWARD_BAD.reply();
        let text = std::str::from_utf8(args).map_err(|_| bad())?;
        let mut attrs = Vec::new();
        for word in text.split_ascii_whitespace() {
            let (name, value) = word.split_once('=').ok_or_else(bad)?;
            let name = name.to_ascii_uppercase();
            if !KNOWN.contains(&name.as_str()) || value.is_empty() {
                return Err(bad());
            }
            attrs.push((name, xtext_decode(value).ok_or_else(bad)?));
        }
        if attrs.is_empty() {
            return Err(bad());
        }
        Ok(Command::Xforward(attrs))
    }

    fn from_request(
        req: Request<std::borrow::Cow<'_, str>>,
        line: &[u8],
    ) -> Result<Command, Reply> {
        Ok(match req {
            Request::Ehlo { host } => Command::Ehlo(host.into_owned()),
            Request::Helo { host } => Command::Helo(host.into_owned()),
            Request::Lhlo { .. } => return Err(reply::UNKNOWN_COMMAND.reply()),
            Request::Mail { from } => {
                let (path, params) = Self::raw_path(line, "MAIL FROM:<reverse-path> [parameters]")?;
                Command::Mail(PathCommand {
                    address: from.address.into_owned(),
                    path,
                    params,
                    size: (from.size > 0).then_some(from.size),
                })
            }
            Request::Rcpt { to } => {
                // RFC 5321 4.1.1.3: the forward-path is never null.
                if to.address.is_empty() {
                    return Err(reply::BAD_RECIPIENT.reply());
                }
                let (path, params) = Self::raw_path(line, "RCPT TO:<forward-path> [parameters]")?;
                Command::Rcpt(PathCommand {
                    address: to.address.into_owned(),
                    path,
                    params,
                    size: None,
                })
            }
            Request::Data => Command::Data,
            Request::Bdat {
                chunk_size,
                is_last,
            } => Command::Bdat {
                size: chunk_size,
                last: is_last,
            },
            Request::Rset => Command::Rset,
            Request::Noop { .. } => Command::Noop,
            Request::Quit => Command::Quit,
            Request::Vrfy { .. } => Command::Vrfy,
            Request::Help { .. } => Command::Help,
            Request::StartTls => Command::StartTls,
            Request::Expn { .. } => Command::NotImplemented("EXPN"),
            Request::Etrn { .. } => Command::NotImplemented("ETRN"),
            Request::Atrn { .. } => Command::NotImplemented("ATRN"),
            Request::Burl { .. } => Command::NotImplemented("BURL"),
            Request::Auth { .. } => Command::NotImplemented("AUTH"),
        })
    }

    fn raw_path(line: &[u8], syntax: &'static str) -> Result<(String, Vec<Parameter>), Reply> {
        let bad = || reply::SYNTAX_ERROR.with_detail(syntax);
        let text = std::str::from_utf8(line).map_err(|_| bad())?;
        let (path, params) = split_path(text).ok_or_else(bad)?;
        Ok((path.to_string(), params))
    }

    fn error_reply(err: ProtoError, verb: &[u8]) -> Reply {
        match err {
            ProtoError::UnknownCommand => reply::UNKNOWN_COMMAND.reply(),
            ProtoError::InvalidSenderAddress => reply::BAD_SENDER.reply(),
            ProtoError::InvalidRecipientAddress => reply::BAD_RECIPIENT.reply(),
            ProtoError::SyntaxError { syntax } => reply::SYNTAX_ERROR.with_detail(syntax),
            ProtoError::InvalidParameter { param } => reply::BAD_PARAMETER.with_detail(param),
            ProtoError::UnsupportedParameter { param } => reply::BAD_PARAMETER.with_detail(&param),
            // The line is complete, so "needs more data" means an argument is missing.
            ProtoError::NeedsMoreData { .. } => match verb {
                b"MAIL" => reply::SYNTAX_ERROR.with_detail("MAIL FROM:<reverse-path> [parameters]"),
                b"RCPT" => reply::SYNTAX_ERROR.with_detail("RCPT TO:<forward-path> [parameters]"),
                b"BDAT" => reply::SYNTAX_ERROR.with_detail("BDAT chunk-size [LAST]"),
                b"EHLO" => reply::SYNTAX_ERROR.with_detail("EHLO domain"),
                b"HELO" => reply::SYNTAX_ERROR.with_detail("HELO domain"),
                _ => reply::SYNTAX_ERROR.with_detail("see HELP"),
            },
            ProtoError::ResponseTooLong | ProtoError::InvalidResponse { .. } => {
                reply::UNKNOWN_COMMAND.reply()
            }
        }
    }
}

/// RFC 3461 4 xtext: `+XX` is the octet XX; the result must be printable text.
fn xtext_decode(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).ok()?;
    (!s.chars().any(char::is_control)).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(line: &str) -> u16 {
        Command::parse(line.as_bytes()).unwrap_err().code
    }

    #[test]
    fn parses_the_core_commands() {
        assert_eq!(
            Command::parse(b"EHLO client.example").unwrap(),
            Command::Ehlo("client.example".into())
        );
        assert_eq!(Command::parse(b"data").unwrap(), Command::Data);
        assert_eq!(
            Command::parse(b"BDAT 10 LAST").unwrap(),
            Command::Bdat {
                size: 10,
                last: true
            }
        );
        assert_eq!(
            Command::parse(b"BDAT 0").unwrap(),
            Command::Bdat {
                size: 0,
                last: false
            }
        );
        let Command::Mail(m) =
            Command::parse(b"MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME").unwrap()
        else {
            panic!("not MAIL")
        };
        assert_eq!(m.address, "a@b.example");
        assert_eq!(m.size, Some(100));
        assert_eq!(m.params.len(), 2);
        let Command::Mail(m) = Command::parse(b"MAIL FROM:<>").unwrap() else {
            panic!()
        };
        assert_eq!(m.address, "");
    }

    #[test]
    fn errors_carry_the_right_codes() {
        assert_eq!(code("FOO bar"), 500);
        assert_eq!(code("XCLIENT ADDR=1.2.3.4"), 500);
        assert_eq!(
            Command::parse(b"XFORWARD ADDR=1.2.3.4 NAME=[UNAVAILABLE] HELO=a+2Bb"),
            Ok(Command::Xforward(vec![
                ("ADDR".into(), "1.2.3.4".into()),
                ("NAME".into(), "[UNAVAILABLE]".into()),
                ("HELO".into(), "a+b".into()),
            ]))
        );
        assert_eq!(code("XFORWARD"), 501);
        assert_eq!(code("XFORWARD FOO=bar"), 501);
        assert_eq!(code("XFORWARD ADDR"), 501);
        assert_eq!(code("XFORWARD HELO=a+0Db"), 501);
        assert_eq!(code("EHLO"), 501);
        assert_eq!(code("MAIL FROM:a@b"), 501);
        assert_eq!(code("MAIL FROM:<a@b> FOO=bar"), 555);
        assert_eq!(code("MAIL FROM:<a@b> BODY=9BIT"), 555);
        assert_eq!(code("BDAT x"), 501);
        assert_eq!(code("RCPT TO:<>"), 501);
    }
}
