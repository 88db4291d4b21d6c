//! The DNS answers a session's checks used, kept so that a verdict can be replayed exactly:
//! recorded while the session runs, written into its transaction records, and served back by
//! `replay::ReplayDns` when `moat check --replay` re-runs the pipeline.
//!
//! Recording is a task-local [`Journal`]: the session task runs inside [`Journal::scope`], and
//! the places where answers arrive note them: `Dns`'s own lookups (blocklists, SPF) and the
//! mail-auth cache hook in `meter` (DKIM, DMARC, ARC, reverse DNS). A session that
//! does not record runs outside any scope, and noting is then a no-op.
//!
//! What a record cannot hold: mail-auth hands the hook parsed TXT records, so their text is
//! read back from the resolver's cache when the record is written (`Dns::complete_texts`); and a lookup
//! that failed, or a negative answer without an SOA (which mail-auth does not cache), reaches
//! the hook without its name. Both replay as SERVFAIL: right for the failure, wrong for the
//! rare SOA-less negative answer.

use hickory_resolver::proto::rr::RecordType;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Answers kept per session at most: a client cycling through many senders must not grow a
/// session without bound.
const MAX_ANSWERS: usize = 1000;

/// The record types the checks ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RType {
    /// IPv4 address (blocklists, SPF a/mx, reverse DNS confirmation)
    A,
    /// IPv6 address
    AAAA,
    /// Mail exchanger (SPF mx)
    MX,
    /// Text (SPF, DKIM keys, DMARC policies)
    TXT,
    /// Reverse DNS
    PTR,
}

impl RType {
    /// The type's name, as the metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            RType::A => "A",
            RType::AAAA => "AAAA",
            RType::MX => "MX",
            RType::TXT => "TXT",
            RType::PTR => "PTR",
        }
    }

    pub(super) fn wire(self) -> RecordType {
        match self {
            RType::A => RecordType::A,
            RType::AAAA => RecordType::AAAA,
            RType::MX => RecordType::MX,
            RType::TXT => RecordType::TXT,
            RType::PTR => RecordType::PTR,
        }
    }
}

/// How a lookup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsResult {
    /// Records came back (in `data`).
    Found,
    /// The name does not exist.
    Nxdomain,
    /// The name exists without records of the type.
    Nodata,
    /// No usable answer (timeout, SERVFAIL, refused).
    Failed,
}

/// One DNS answer as a check used it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsAnswer {
    /// The name asked, lower case, without the trailing dot.
    pub name: String,
    /// The record type asked.
    #[serde(rename = "type")]
    pub rtype: RType,
    /// How it ended.
    pub result: DnsResult,
    /// The records, in presentation form: `192.0.2.1`, `10 mx.example`, the TXT text, a PTR
    /// target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<String>,
    /// Seconds the answer had left to live when it was used.
    pub ttl: u32,
    /// The error, for a failed lookup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// TXT text still to be read from the resolver's cache (see [`complete`]).
    #[serde(skip)]
    pub text_pending: bool,
}

/// A lower-case name without the trailing dot.
pub fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsAnswer {
    /// An answer with records.
    pub fn found(name: &str, rtype: RType, data: Vec<String>, ttl: u32) -> DnsAnswer {
        DnsAnswer {
            name: normalise(name),
            rtype,
            result: DnsResult::Found,
            data,
            ttl,
            error: None,
            text_pending: false,
        }
    }

    /// A negative or failed answer.
    pub fn without_records(name: &str, rtype: RType, result: DnsResult, ttl: u32) -> DnsAnswer {
        DnsAnswer {
            result,
            ..DnsAnswer::found(name, rtype, Vec::new(), ttl)
        }
    }
}

/// Seconds from now until `until` (0 when past).
pub fn ttl_until(until: Instant) -> u32 {
    u32::try_from(until.saturating_duration_since(Instant::now()).as_secs()).unwrap_or(u32::MAX)
}

tokio::task_local! {
    static JOURNAL: Journal;
}

/// The answers of one session, shared between the session and its lookups.
#[derive(Debug, Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<DnsAnswer>>>);

impl Journal {
    /// An empty journal.
    pub fn new() -> Journal {
        Journal::default()
    }

    /// Runs `f` with this journal receiving the answers of every lookup it makes.
    pub async fn scope<F: std::future::Future>(self, f: F) -> F::Output {
        JOURNAL.scope(self, f).await
    }

    /// The journal of the running task, if it records.
    pub fn current() -> Option<Journal> {
        JOURNAL.try_with(Journal::clone).ok()
    }

    /// A copy of the answers so far.
    pub fn snapshot(&self) -> Vec<DnsAnswer> {
        self.0.lock().map(|a| a.clone()).unwrap_or_default()
    }

    fn push(&self, answer: DnsAnswer) {
        let Ok(mut answers) = self.0.lock() else {
            return;
        };
        // The latest answer for a name is the one the latest transaction used.
        if let Some(old) = answers
            .iter_mut()
            .find(|a| a.name == answer.name && a.rtype == answer.rtype)
        {
            *old = answer;
        } else if answers.len() < MAX_ANSWERS {
            answers.push(answer);
        }
    }
}

/// Whether the running task records answers (so callers can skip building them).
pub fn recording() -> bool {
    JOURNAL.try_with(|_| ()).is_ok()
}

/// Notes an answer in the running task's journal, if it has one.
pub fn note(answer: DnsAnswer) {
    let _ = JOURNAL.try_with(|j| j.push(answer));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn journal_keeps_the_latest_answer_per_name_and_type() {
        let j = Journal::new();
        assert!(!recording());
        j.clone()
            .scope(async {
                assert!(recording());
                note(DnsAnswer::found(
                    "A.Example.",
                    RType::A,
                    vec!["192.0.2.1".into()],
                    60,
                ));
                note(DnsAnswer::found(
                    "a.example",
                    RType::TXT,
                    vec!["x".into()],
                    60,
                ));
                note(DnsAnswer::without_records(
                    "a.example",
                    RType::A,
                    DnsResult::Nxdomain,
                    30,
                ));
            })
            .await;
        note(DnsAnswer::found("outside.example", RType::A, vec![], 1));
        let s = j.snapshot();
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].name, "a.example");
        assert_eq!(s[0].result, DnsResult::Nxdomain);
    }
}
