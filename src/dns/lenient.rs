//! A second try for TXT answers that hickory refuses to decode.
//!
//! hickory-proto rejects a whole response when one record in it has an empty RDATA ("record
//! with length 0 in non-update message"). A domain that publishes an empty TXT record beside
//! its SPF record (RFC 1035 makes that malformed, but it is served) would then read as a DNS
//! failure, and SPF as temperror, for every message from it. The openspf suite's `null-text`
//! case is exactly that, and expects the SPF record to be found. This module asks the same
//! nameservers once more and reads the answer section itself, skipping empty records.
//!
//! Only used after hickory failed with that decoding error: the normal path, its cache and its
//! retries stay hickory's.

use hickory_resolver::proto::rr::Name;
use hickory_resolver::proto::serialize::binary::{BinDecodable, BinDecoder};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the second try found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxtAnswer {
    /// The TXT records (each one's strings joined); empty when the name had none.
    Records(Vec<Vec<u8>>),
    /// RCODE 3.
    NxDomain,
}

const TYPE_TXT: u16 = 16;

/// Asks `servers` in turn for the TXT records of `name`, reading the answer leniently.
pub async fn txt(servers: &[SocketAddr], name: &Name, timeout: Duration) -> Option<TxtAnswer> {
    let id: u16 = rand_id();
    let query = encode_query(id, name)?;
    for server in servers {
        let udp = tokio::time::timeout(timeout, ask_udp(*server, &query)).await;
        let Ok(Some(reply)) = udp else { continue };
        let reply = if reply.len() > 2 && reply[2] & 0x02 != 0 {
            // TC: the answer did not fit a datagram (RFC 1035 4.2.1); ask over TCP.
            match tokio::time::timeout(timeout, ask_tcp(*server, &query)).await {
                Ok(Some(r)) => r,
                _ => continue,
            }
        } else {
            reply
        };
        if let Some(answer) = decode(id, &reply) {
            return Some(answer);
        }
    }
    None
}

fn rand_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish() as u16
}

fn encode_query(id: u16, name: &Name) -> Option<Vec<u8>> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    // RD set; one question.
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.iter() {
        q.push(u8::try_from(label.len()).ok()?);
        q.extend_from_slice(label);
    }
    q.push(0);
    q.extend_from_slice(&TYPE_TXT.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    Some(q)
}

async fn ask_udp(server: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let sock = tokio::net::UdpSocket::bind(bind).await.ok()?;
    sock.connect(server).await.ok()?;
    sock.send(query).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = sock.recv(&mut buf).await.ok()?;
    buf.truncate(n);
    Some(buf)
}

async fn ask_tcp(server: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(server).await.ok()?;
    let len = u16::try_from(query.len()).ok()?;
    stream.write_all(&len.to_be_bytes()).await.ok()?;
    stream.write_all(query).await.ok()?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

/// Reads a response's TXT answers, skipping records hickory would refuse.
fn decode(id: u16, reply: &[u8]) -> Option<TxtAnswer> {
    if reply.len() < 12 || u16::from_be_bytes([reply[0], reply[1]]) != id {
        return None;
    }
    match reply[3] & 0x0f {
        0 => {}
        3 => return Some(TxtAnswer::NxDomain),
        _ => return None,
    }
    let count = |i: usize| usize::from(u16::from_be_bytes([reply[i], reply[i + 1]]));
    let (questions, answers) = (count(4), count(6));
    let mut d = BinDecoder::new(reply);
    d.read_slice(12).ok()?;
    for _ in 0..questions {
        Name::read(&mut d).ok()?;
        d.read_slice(4).ok()?;
    }
    let mut records = Vec::new();
    for _ in 0..answers {
        Name::read(&mut d).ok()?;
        let rtype = d.read_u16().ok()?.unverified();
        d.read_u16().ok()?;
        d.read_u32().ok()?;
        let len = usize::from(d.read_u16().ok()?.unverified());
        let rdata = d.read_slice(len).ok()?.unverified();
        if rtype != TYPE_TXT || rdata.is_empty() {
            continue;
        }
        let mut text = Vec::with_capacity(rdata.len());
        let mut rest = rdata;
        while let Some((&n, tail)) = rest.split_first() {
            let n = usize::from(n);
            if n > tail.len() {
                return None;
            }
            text.extend_from_slice(&tail[..n]);
            rest = &tail[n..];
        }
        records.push(text);
    }
    Some(TxtAnswer::Records(records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_an_empty_record() {
        let name = Name::from_ascii("null.example.com.").unwrap();
        let mut reply = encode_query(7, &name).unwrap();
        reply[2] = 0x81;
        reply[3] = 0x80;
        reply[7] = 2;
        for rdata in [&b"\x0bv=spf1 ip4:\x0e192.0.2.5 -all"[..], &b""[..]] {
            reply.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 60]);
            reply.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            reply.extend_from_slice(rdata);
        }
        assert_eq!(
            decode(7, &reply),
            Some(TxtAnswer::Records(vec![
                b"v=spf1 ip4:192.0.2.5 -all".to_vec()
            ]))
        );
        assert_eq!(decode(8, &reply), None);
    }
}
