//! Where a transaction's time went, for its log line: the checks of each stage and the
//! upstream's answer to the message.

use crate::pipeline::Stage;
use std::fmt;
use std::time::Duration;

/// Accumulated time per stage of one transaction (RCPT adds up over recipients).
#[derive(Debug, Default, Clone)]
pub struct Timings {
    connect: Duration,
    helo: Duration,
    mail: Duration,
    rcpt: Duration,
    data: Duration,
    upstream: Duration,
}

impl Timings {
    /// Adds the time the checks of `stage` took.
    pub fn add(&mut self, stage: Stage, d: Duration) {
        match stage {
            Stage::Connect => self.connect += d,
            Stage::Helo => self.helo += d,
            Stage::Mail => self.mail += d,
            Stage::Rcpt => self.rcpt += d,
            Stage::Data => self.data += d,
        }
    }

    /// Adds the time the upstream took to answer the message.
    pub fn add_upstream(&mut self, d: Duration) {
        self.upstream += d;
    }

    /// Keeps the session's stages (connect, HELO) and clears the transaction's.
    pub fn reset_transaction(&mut self) {
        *self = Timings {
            connect: self.connect,
            helo: self.helo,
            ..Timings::default()
        };
    }
}

impl fmt::Display for Timings {
    /// `connect=0.4ms,helo=0.0ms,...`: milliseconds with one decimal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "connect={:.1}ms,helo={:.1}ms,mail={:.1}ms,rcpt={:.1}ms,data={:.1}ms,upstream={:.1}ms",
            ms(self.connect),
            ms(self.helo),
            ms(self.mail),
            ms(self.rcpt),
            ms(self.data),
            ms(self.upstream)
        )
    }
}
