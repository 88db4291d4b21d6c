//! The pure SMTP sequencing machine: which command is allowed when (RFC 5321 4.1.4, RFC 3030,
//! RFC 3207). No I/O; the session asks `check` before acting and reports outcomes back.

use crate::smtp::command::Command;
use crate::smtp::reply;

/// Where the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connected (or just after STARTTLS): no HELO/EHLO yet.
    Start,
    /// Greeted, no transaction open.
    Ready,
    /// MAIL accepted, no recipient accepted yet.
    Mail,
    /// At least one recipient accepted.
    Rcpt,
    /// BDAT chunks are being received (RFC 3030).
    Bdat,
}

/// What the session should do with a command that passed sequencing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead.
    Proceed,
    /// Refuse with this reply; for BDAT the chunk must still be read and discarded.
    Refuse(&'static reply::ReplyConst),
}

/// The sequencing state of one session.
#[derive(Debug, Clone)]
pub struct SessionState {
    phase: Phase,
    tls: bool,
}

impl Default for SessionState {
    fn default() -> Self {
        SessionState {
            phase: Phase::Start,
            tls: false,
        }
    }
}

impl SessionState {
    /// The current phase.
    #[cfg(test)]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// True while a transaction (MAIL .. end of data) is open.
    pub fn in_transaction(&self) -> bool {
        matches!(self.phase, Phase::Mail | Phase::Rcpt | Phase::Bdat)
    }

    /// True once the session is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Decides whether `cmd` may run now.
    pub fn check(&self, cmd: &Command) -> Admit {
        use Admit::*;
        use Phase::*;
        match (cmd, self.phase) {
            (Command::Mail(_), Start) => Refuse(&reply::NEED_HELO),
            (Command::Mail(_), Ready) => Proceed,
            (Command::Mail(_), _) => Refuse(&reply::NESTED_MAIL),
            (Command::Rcpt(_), Start | Ready) => Refuse(&reply::NEED_MAIL),
            (Command::Rcpt(_), Bdat) => Refuse(&reply::BDAT_IN_PROGRESS),
            (Command::Rcpt(_), Mail | Rcpt) => Proceed,
            (Command::Data, Start | Ready) => Refuse(&reply::NEED_MAIL),
            (Command::Data, Mail) => Refuse(&reply::NO_VALID_RECIPIENTS),
            (Command::Data, Rcpt) => Proceed,
            (Command::Data, Bdat) => Refuse(&reply::BDAT_IN_PROGRESS),
            (Command::Bdat { .. }, Start | Ready) => Refuse(&reply::NEED_MAIL),
            (Command::Bdat { .. }, Mail) => Refuse(&reply::NO_VALID_RECIPIENTS),
            (Command::Bdat { .. }, Rcpt | Bdat) => Proceed,
            (Command::StartTls, _) if self.tls => Refuse(&reply::TLS_ACTIVE),
            (Command::StartTls, Mail | Rcpt | Bdat) => Refuse(&reply::TLS_IN_TRANSACTION),
            (Command::Xforward(_), Mail | Rcpt | Bdat) => Refuse(&reply::XFORWARD_IN_TRANSACTION),
            _ => Proceed,
        }
    }

    /// HELO/EHLO: any open transaction ends.
    pub fn on_helo(&mut self) {
        self.phase = Phase::Ready;
    }

    /// The upstream accepted MAIL.
    pub fn on_mail(&mut self) {
        self.phase = Phase::Mail;
    }

    /// The upstream accepted a recipient.
    pub fn on_rcpt(&mut self) {
        if self.phase == Phase::Mail {
            self.phase = Phase::Rcpt;
        }
    }

    /// A non-final BDAT chunk was taken.
    pub fn on_bdat_chunk(&mut self) {
        self.phase = Phase::Bdat;
    }

    /// The transaction ended (end of data, RSET, refusal of the message).
    pub fn end_transaction(&mut self) {
        if self.phase != Phase::Start {
            self.phase = Phase::Ready;
        }
    }

    /// RFC 3207 4.2: after the handshake the session starts over, as if just connected.
    pub fn on_tls(&mut self) {
        self.phase = Phase::Start;
        self.tls = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail() -> Command {
        Command::parse(b"MAIL FROM:<a@b.example>").unwrap()
    }
    fn rcpt() -> Command {
        Command::parse(b"RCPT TO:<c@d.example>").unwrap()
    }

    #[test]
    fn sequencing() {
        let mut s = SessionState::default();
        assert_eq!(s.check(&mail()), Admit::Refuse(&reply::NEED_HELO));
        assert!(matches!(s.check(&rcpt()), Admit::Refuse(r) if r.code() == 503));
        s.on_helo();
        assert_eq!(s.check(&mail()), Admit::Proceed);
        s.on_mail();
        assert!(matches!(s.check(&mail()), Admit::Refuse(r) if r.code() == 503));
        assert!(matches!(s.check(&Command::Data), Admit::Refuse(r) if r.code() == 554));
        s.on_rcpt();
        assert_eq!(s.check(&Command::Data), Admit::Proceed);
        assert!(matches!(s.check(&Command::StartTls), Admit::Refuse(r) if r.code() == 503));
        s.on_bdat_chunk();
        assert!(matches!(s.check(&Command::Data), Admit::Refuse(r) if r.code() == 503));
        s.end_transaction();
        assert_eq!(s.phase(), Phase::Ready);
        s.on_tls();
        assert_eq!(s.phase(), Phase::Start);
        assert!(matches!(s.check(&Command::StartTls), Admit::Refuse(r) if r.code() == 503));
    }
}
