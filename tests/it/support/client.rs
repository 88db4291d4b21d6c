//! A raw SMTP client for tests: sends exact bytes, reads replies, can do STARTTLS.

use moat::net::stream::Stream;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for a reply before it fails.
pub const REPLY_WAIT: Duration = Duration::from_secs(15);

/// One reply as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestReply {
    /// The reply code.
    pub code: u16,
    /// Every line as sent, without CRLF.
    pub lines: Vec<String>,
}

impl TestReply {
    /// True if any line contains `s`.
    pub fn contains(&self, s: &str) -> bool {
        self.lines.iter().any(|l| l.contains(s))
    }
    /// True when the reply matches `expected`: a code (`"250"`), a code and an enhanced code
    /// (`"451 4.4.1"`), and optionally text the reply must contain (`"550 5.7.1 spam"`).
    pub fn is(&self, expected: &str) -> bool {
        let mut parts = expected.splitn(3, ' ');
        let code = parts.next().and_then(|c| c.parse::<u16>().ok());
        let enhanced = parts.next();
        let text = parts.next();
        code == Some(self.code)
            && enhanced.is_none_or(|e| self.enhanced() == Some(e))
            && text.is_none_or(|t| self.contains(t))
    }

    /// The enhanced code of the first line (`x.y.z`), if any.
    pub fn enhanced(&self) -> Option<&str> {
        let t = self.lines.first()?.get(4..)?;
        let first = t.split(' ').next()?;
        (first.split('.').count() == 3 && first.chars().all(|c| c.is_ascii_digit() || c == '.'))
            .then_some(first)
    }
}

/// A test SMTP client.
pub struct Client {
    stream: Stream,
    buf: Vec<u8>,
    /// The greeting.
    pub greeting: TestReply,
    /// The local address of the connection.
    pub local: SocketAddr,
}

impl Client {
    /// Connects and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).await.expect("connect to moat");
        Self::greeted(tcp).await
    }

    /// Connects from a given loopback source address (e.g. 127.0.0.3) and reads the greeting.
    pub async fn connect_from(addr: SocketAddr, source: &str) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{source}:0").parse().expect("source"))
            .expect("bind source");
        let tcp = socket.connect(addr).await.expect("connect to moat");
        Self::greeted(tcp).await
    }

    /// Connects, sends `preface` (e.g. a PROXY protocol header) and reads the greeting.
    pub async fn connect_with_preface(addr: SocketAddr, preface: &[u8]) -> Client {
        let mut tcp = TcpStream::connect(addr).await.expect("connect to moat");
        tokio::io::AsyncWriteExt::write_all(&mut tcp, preface)
            .await
            .expect("send preface");
        Self::greeted(tcp).await
    }

    async fn greeted(tcp: TcpStream) -> Client {
        let local = tcp.local_addr().expect("local addr");
        let mut c = Client {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
            greeting: TestReply {
                code: 0,
                lines: vec![],
            },
            local,
        };
        c.greeting = c.read_reply().await;
        c
    }

    /// Sends bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
        self.stream.flush().await.expect("flush");
    }

    async fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(REPLY_WAIT, self.stream.read(&mut chunk))
            .await
            .expect("timed out waiting for a reply")
            .ok()?;
        if n == 0 {
            return None;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Some(())
    }

    /// Reads one reply, or `None` if the connection closed first.
    pub async fn try_read_reply(&mut self) -> Option<TestReply> {
        let mut lines = Vec::new();
        loop {
            while let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                let line = String::from_utf8_lossy(&line[..i]).into_owned();
                let last = line.as_bytes().get(3) != Some(&b'-');
                lines.push(line);
                if last {
                    let code = lines[0][..3].parse().expect("reply code");
                    return Some(TestReply { code, lines });
                }
            }
            self.fill().await?;
        }
    }

    /// Reads one reply; panics if the connection closed.
    pub async fn read_reply(&mut self) -> TestReply {
        self.try_read_reply()
            .await
            .expect("connection closed while waiting for a reply")
    }

    /// Sends a command line (CRLF added) and reads its reply.
    pub async fn cmd(&mut self, line: &str) -> TestReply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.read_reply().await
    }

    /// Sends `line` and asserts the reply is `expected` (see [`TestReply::is`]).
    #[track_caller]
    pub fn expect<'a>(
        &'a mut self,
        line: &'a str,
        expected: &'a str,
    ) -> impl std::future::Future<Output = TestReply> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let r = self.cmd(line).await;
            assert!(
                r.is(expected),
                "{line}: expected {expected}, got {r:?} ({caller})"
            );
            r
        }
    }

    /// Sends a whole message and asserts the final reply is `expected`.
    #[track_caller]
    pub fn expect_message<'a>(
        &'a mut self,
        from: &'a str,
        to: &'a [&'a str],
        body: &'a [u8],
        expected: &'a str,
    ) -> impl std::future::Future<Output = TestReply> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let r = self.send_message(from, to, body).await;
            assert!(
                r.is(expected),
                "message: expected {expected}, got {r:?} ({caller})"
            );
            r
        }
    }

    /// EHLO with a test name; asserts 250.
    pub async fn ehlo(&mut self) -> TestReply {
        let r = self.cmd("EHLO client.test").await;
        assert_eq!(r.code, 250, "{r:?}");
        r
    }

    /// A whole transaction with DATA; returns the final reply to the message.
    pub async fn send_message(&mut self, from: &str, to: &[&str], body: &[u8]) -> TestReply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        assert_eq!(r.code, 250, "MAIL: {r:?}");
        for rcpt in to {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            assert_eq!(r.code, 250, "RCPT: {r:?}");
        }
        let r = self.cmd("DATA").await;
        assert_eq!(r.code, 354, "DATA: {r:?}");
        self.send(&stuff(body)).await;
        self.send(b".\r\n").await;
        self.read_reply().await
    }

    /// True once the server has closed the connection (reads to EOF, ignoring data).
    pub async fn is_closed(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        loop {
            match tokio::time::timeout(REPLY_WAIT, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Upgrades the connection after a 220 to STARTTLS.
    pub async fn tls_handshake(&mut self, ca: &CertificateDer<'static>) -> &'static str {
        self.tls_handshake_as("moat.test", ca).await
    }

    /// The handshake asking for `name` (SNI) and verifying the certificate for it.
    pub async fn tls_handshake_as(
        &mut self,
        name: &str,
        ca: &CertificateDer<'static>,
    ) -> &'static str {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).expect("add CA");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = self.stream.take_plain().expect("plain stream");
        let tls = connector
            .connect(ServerName::try_from(name.to_string()).expect("name"), tcp)
            .await
            .expect("TLS handshake");
        self.stream = Stream::ClientTls(Box::new(tls));
        self.buf.clear();
        self.stream.tls_version().expect("tls version")
    }
}

/// Dot-stuffs a CRLF body for DATA.
pub fn stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut start = true;
    for &b in body {
        if start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        start = b == b'\n';
    }
    out
}
