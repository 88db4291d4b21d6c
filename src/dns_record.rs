//! The DNS answers a session's checks used, kept so that a verdict can be replayed exactly:
//! recorded while the session runs, written into its transaction records, and served back by
//! [`ReplayDns`] when `moat check --replay` re-runs the pipeline.
//!
//! Recording is a task-local [`Journal`]: the session task runs inside [`Journal::scope`], and
//! the places where answers arrive note them: `Dns`'s own lookups (blocklists, SPF) and the
//! mail-auth cache hook in `dns_meter` (DKIM, DMARC, ARC, reverse DNS). A session that
//! does not record runs outside any scope, and noting is then a no-op.
//!
//! What a record cannot hold: mail-auth hands the hook parsed TXT records, so their text is
//! read back from the resolver's cache when the record is written ([`complete`]); and a lookup
//! that failed, or a negative answer without an SOA (which mail-auth does not cache), reaches
//! the hook without its name. Both replay as SERVFAIL: right for the failure, wrong for the
//! rare SOA-less negative answer.

use crate::dns::Dns;
use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX, PTR, SOA, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

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

    fn wire(self) -> RecordType {
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

/// Fills in the text of TXT answers that the hook saw parsed, from the resolver's cache (the
/// lookup was just made, so this asks no server unless the TTL ran out meanwhile).
pub async fn complete(answers: &mut [DnsAnswer], dns: &Dns) {
    for a in answers.iter_mut().filter(|a| a.text_pending) {
        a.text_pending = false;
        let fqdn = format!("{}.", a.name);
        match dns.authenticator().resolver().txt_lookup(fqdn).await {
            Ok(lookup) => {
                a.data = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(t) => Some(
                            t.txt_data
                                .iter()
                                .map(|c| String::from_utf8_lossy(c))
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect();
            }
            Err(e) => {
                a.result = DnsResult::Failed;
                a.error = Some(format!("text not recoverable: {e}"));
            }
        }
    }
}

/// An authoritative-looking DNS server on 127.0.0.1 that answers only from recorded answers:
/// the recorded records, NXDOMAIN or NODATA (with an SOA, so resolvers treat them as
/// negative answers), SERVFAIL for failed lookups and for anything not recorded.
pub struct ReplayDns {
    /// UDP and TCP address.
    pub addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for ReplayDns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl ReplayDns {
    /// Starts a server for `answers` on a free loopback port (UDP and TCP).
    pub async fn start(answers: Vec<DnsAnswer>) -> std::io::Result<ReplayDns> {
        let answers = Arc::new(answers);
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        let a = answers.clone();
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
                if let Some(reply) = respond(&buf[..n], &a) {
                    let _ = udp.send_to(&reply, peer).await;
                }
            }
        });
        let tcp_task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let a = answers.clone();
                tokio::spawn(async move {
                    loop {
                        let mut len = [0u8; 2];
                        if stream.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                        if stream.read_exact(&mut query).await.is_err() {
                            return;
                        }
                        let Some(reply) = respond(&query, &a) else {
                            return;
                        };
                        let Ok(n) = u16::try_from(reply.len()) else {
                            return;
                        };
                        let mut framed = n.to_be_bytes().to_vec();
                        framed.extend_from_slice(&reply);
                        if stream.write_all(&framed).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(ReplayDns {
            addr,
            tasks: vec![udp_task, tcp_task],
        })
    }
}

async fn bind_pair() -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        match TcpListener::bind(("127.0.0.1", udp.local_addr()?.port())).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}

/// The reply to one query, or `None` for something that is not a query.
fn respond(query: &[u8], answers: &[DnsAnswer]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    if let Some(edns) = &request.edns {
        let mut e = edns.clone();
        e.set_max_payload(4096);
        reply.set_edns(e);
    }
    let Some(q) = request.queries.first().cloned() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply.to_vec().ok();
    };
    reply.add_query(q.clone());
    let wanted = normalise(&q.name.to_ascii());
    let found = answers
        .iter()
        .find(|a| a.name == wanted && a.rtype.wire() == q.query_type);
    match found {
        Some(a) if a.result == DnsResult::Found => {
            for d in &a.data {
                if let Some(rdata) = rdata(a.rtype, d) {
                    reply.add_answer(Record::from_rdata(q.name.clone(), a.ttl, rdata));
                }
            }
        }
        Some(a) if matches!(a.result, DnsResult::Nxdomain | DnsResult::Nodata) => {
            if a.result == DnsResult::Nxdomain {
                reply.metadata.response_code = ResponseCode::NXDomain;
            }
            // RFC 2308: the SOA's minimum is the negative TTL the resolver caches for.
            let soa = SOA::new(
                Name::from_str("replay.invalid.").ok()?,
                Name::from_str("hostmaster.replay.invalid.").ok()?,
                1,
                3600,
                600,
                86400,
                a.ttl,
            );
            reply.add_authority(Record::from_rdata(q.name.clone(), a.ttl, RData::SOA(soa)));
        }
        _ => {
            tracing::debug!(name = %wanted, rtype = %q.query_type, "replay: not in the record, SERVFAIL");
            reply.metadata.response_code = ResponseCode::ServFail;
        }
    }
    reply.to_vec().ok()
}

/// A recorded record in presentation form back as record data.
fn rdata(rtype: RType, text: &str) -> Option<RData> {
    Some(match rtype {
        RType::A => RData::A(A(text.parse().ok()?)),
        RType::AAAA => RData::AAAA(AAAA(text.parse().ok()?)),
        RType::MX => {
            let (pref, host) = text.split_once(' ')?;
            RData::MX(MX::new(pref.parse().ok()?, fqdn(host)?))
        }
        RType::PTR => RData::PTR(PTR(fqdn(text)?)),
        RType::TXT => {
            // One character-string holds at most 255 octets; longer texts (DKIM keys) were
            // split the same way on the wire and joined by the reader.
            let bytes = text.as_bytes();
            let chunks = bytes
                .chunks(255)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>();
            RData::TXT(TXT::new(if chunks.is_empty() {
                vec![String::new()]
            } else {
                chunks
            }))
        }
    })
}

fn fqdn(name: &str) -> Option<Name> {
    Name::from_str(&format!("{}.", name.trim_end_matches('.'))).ok()
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

    #[test]
    fn long_txt_survives_the_wire() {
        let key = format!("v=DKIM1; k=rsa; p={}", "A".repeat(600));
        let data = rdata(RType::TXT, &key).expect("rdata");
        let RData::TXT(t) = data else { panic!() };
        let joined: String = t
            .txt_data
            .iter()
            .map(|c| String::from_utf8_lossy(c))
            .collect();
        assert_eq!(joined, key);
        assert!(rdata(RType::MX, "10 mx.example").is_some());
        assert!(rdata(RType::A, "not an address").is_none());
    }
}
