//! The read-only facts a check may see at a stage.

use super::Stage;
use crate::envelope::Envelope;

/// What a check is given: the stage, the envelope so far and, at DATA, the message.
#[derive(Debug)]
pub struct Context<'a> {
    /// The stage being run.
    pub stage: Stage,
    /// Client, HELO, sender and recipients so far.
    pub envelope: &'a Envelope,
    /// The RCPT being checked, at the rcpt stage.
    pub recipient: Option<&'a str>,
    /// The raw message (dot-unstuffed), at the data stage.
    pub message: Option<&'a [u8]>,
}
