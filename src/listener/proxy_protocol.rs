//! HAProxy's PROXY protocol (v1 text, v2 binary) on listeners behind a load balancer: the
//! header the balancer sends first names the real client, which then becomes the client of
//! every check, log line and XCLIENT. Parsing is the `ppp` crate's; this file reads exactly
//! the header's bytes off the socket (peeking first, so nothing of the SMTP session that
//! follows is consumed) and turns it into addresses.

use ppp::{v1, v2, HeaderResult, PartialResult};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest header accepted: a v1 line is at most 107 octets; v2 with TLVs may be longer,
/// but a balancer in front of SMTP sends a few hundred at most.
const MAX_HEADER: usize = 1024;

/// What the header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// A proxied connection: the real client and the address it connected to.
    Client {
        /// The client.
        source: SocketAddr,
        /// The balancer's address the client connected to.
        destination: SocketAddr,
    },
    /// The balancer's own connection (v2 LOCAL, v1 UNKNOWN): a health check; the socket's
    /// addresses stay.
    Local,
}

/// Why a connection's header was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Nothing complete arrived within the timeout.
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    /// The connection closed first.
    #[error("connection closed before a complete PROXY header")]
    Closed,
    /// Not a PROXY header, or a broken one.
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    /// A well-formed header for something other than TCP over IPv4/IPv6.
    #[error("unsupported PROXY header: {0}")]
    Unsupported(&'static str),
    /// Reading the socket failed.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the header from `tcp` within `timeout`.
pub async fn read_header(tcp: &mut TcpStream, timeout: Duration) -> Result<Proxied, ProxyError> {
    match tokio::time::timeout(timeout, read(tcp)).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::Timeout(timeout)),
    }
}

async fn read(tcp: &mut TcpStream) -> Result<Proxied, ProxyError> {
    let mut buf = vec![0u8; MAX_HEADER];
    let mut seen = 0;
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(ProxyError::Closed);
        }
        let (result, used) = parse(&buf[..n])?;
        if let Some(proxied) = result {
            // Consume exactly the header; what follows is the SMTP session's.
            let mut header = vec![0u8; used];
            tcp.read_exact(&mut header).await?;
            return Ok(proxied);
        }
        if n >= MAX_HEADER {
            return Err(ProxyError::Malformed(format!(
                "longer than {MAX_HEADER} octets"
            )));
        }
        if n == seen {
            // peek returns at once while old data is buffered: wait for more instead of
            // spinning.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen = n;
    }
}

/// The header in `input`: `Ok((None, _))` when more bytes are needed, else what it says and
/// how many octets it took.
pub fn parse(input: &[u8]) -> Result<(Option<Proxied>, usize), ProxyError> {
    let result = HeaderResult::parse(input);
    if result.is_incomplete() {
        return Ok((None, 0));
    }
    match result {
        HeaderResult::V1(Ok(h)) => {
            let used = h.header.len();
            let proxied = match h.addresses {
                v1::Addresses::Tcp4(a) => Proxied::Client {
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                v1::Addresses::Tcp6(a) => Proxied::Client {
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                v1::Addresses::Unknown => Proxied::Local,
            };
            Ok((Some(proxied), used))
        }
        HeaderResult::V2(Ok(h)) => {
            let used = h.header.len();
            if h.command == v2::Command::Local {
                return Ok((Some(Proxied::Local), used));
            }
            if h.protocol != v2::Protocol::Stream {
                return Err(ProxyError::Unsupported("not a TCP stream"));
            }
            let proxied = match h.addresses {
                v2::Addresses::IPv4(a) => Proxied::Client {
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                v2::Addresses::IPv6(a) => Proxied::Client {
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                v2::Addresses::Unspecified => Proxied::Local,
                v2::Addresses::Unix(_) => return Err(ProxyError::Unsupported("unix socket")),
            };
            Ok((Some(proxied), used))
        }
        HeaderResult::V1(Err(e)) => Err(ProxyError::Malformed(e.to_string())),
        HeaderResult::V2(Err(e)) => Err(ProxyError::Malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_headers() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 4711 25\r\nEHLO x\r\n";
        let (p, used) = parse(h).expect("valid");
        assert_eq!(
            p,
            Some(Proxied::Client {
                source: "192.0.2.1:4711".parse().unwrap(),
                destination: "198.51.100.2:25".parse().unwrap()
            })
        );
        assert_eq!(&h[used..], b"EHLO x\r\n", "only the header is consumed");
        let (p, _) = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 4711 25\r\n").expect("v6");
        assert!(matches!(p, Some(Proxied::Client { source, .. }) if source.is_ipv6()));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").expect("unknown").0,
            Some(Proxied::Local)
        );
        assert_eq!(parse(b"PROXY TCP4 192.0.2.1").expect("partial").0, None);
        assert!(parse(b"PROXY TCP4 999.0.2.1 198.51.100.2 1 2\r\n").is_err());
        assert!(parse(b"EHLO client.example\r\n").is_err());
    }

    #[test]
    fn v2_headers() {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 1, 198, 51, 100, 2, 0x12, 0x67, 0, 25,
        ]);
        let (p, used) = parse(&h).expect("valid");
        assert_eq!(used, 28);
        assert_eq!(
            p,
            Some(Proxied::Client {
                source: "192.0.2.1:4711".parse().unwrap(),
                destination: "198.51.100.2:25".parse().unwrap()
            })
        );
        assert_eq!(parse(&h[..20]).expect("partial").0, None);
        let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).expect("local").0, Some(Proxied::Local));
        let mut bad = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        bad.extend_from_slice(&[0x31, 0x11, 0, 12]);
        assert!(parse(&bad).is_err(), "version 3");
    }
}
