//! The DNS server `moat check --replay` answers from: only what a transaction record holds.

use super::journal::{normalise, DnsAnswer, DnsResult, RType};
use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX, PTR, SOA, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

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
