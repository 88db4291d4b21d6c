//! The read-only facts a check may see at a stage.

use super::Stage;
use crate::auth::AuthFacts;
use crate::pipeline::envelope::Envelope;

/// The message at the data stage: raw bytes (dot-unstuffed) and the mail-parser parse of them.
#[derive(Clone, Copy)]
pub struct MessageInput<'a> {
    /// The message as received.
    pub raw: &'a [u8],
    /// The MIME parse, shared by every check.
    pub parsed: &'a mail_parser::Message<'a>,
}

impl std::fmt::Debug for MessageInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageInput")
            .field("len", &self.raw.len())
            .finish()
    }
}

/// What a check is given: the stage, the envelope so far, the authentication facts and, at
/// DATA, the message.
#[derive(Debug)]
pub struct Context<'a> {
    /// The stage being run.
    pub stage: Stage,
    /// Client, HELO, sender and recipients so far.
    pub envelope: &'a Envelope,
    /// The RCPT being checked, at the rcpt stage.
    pub recipient: Option<&'a str>,
    /// The message, at the data stage.
    pub message: Option<MessageInput<'a>>,
    /// SPF (from the mail stage on) and DKIM/ARC/DMARC (at the data stage).
    pub auth: &'a AuthFacts,
    /// The score so far: the symbols of the earlier stages (greylisting spares low scores).
    pub score: f64,
}
