//! A TCP stream that may have been upgraded to TLS by STARTTLS, on either side of moat.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A plain or TLS-wrapped TCP connection.
#[derive(Debug)]
pub enum Stream {
    /// Not (yet) encrypted.
    Plain(TcpStream),
    /// A client connection after STARTTLS.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The upstream connection after STARTTLS.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// The stream was handed to a TLS handshake that failed; every operation errors.
    Gone,
}

impl Stream {
    /// The negotiated TLS version, e.g. `TLSv1.3`, or `None` for plain text.
    pub fn tls_version(&self) -> Option<&'static str> {
        let v = match self {
            Stream::ServerTls(s) => s.get_ref().1.protocol_version(),
            Stream::ClientTls(s) => s.get_ref().1.protocol_version(),
            _ => None,
        }?;
        v.as_str()
    }

    /// The TLS cipher suite name, if encrypted.
    pub fn tls_cipher(&self) -> Option<&'static str> {
        let s = match self {
            Stream::ServerTls(s) => s.get_ref().1.negotiated_cipher_suite(),
            Stream::ClientTls(s) => s.get_ref().1.negotiated_cipher_suite(),
            _ => None,
        }?;
        s.suite().as_str()
    }

    /// Takes the plain TCP stream out for a TLS handshake.
    pub fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, Stream::Gone) {
            Stream::Plain(tcp) => Some(tcp),
            other => {
                *self = other;
                None
            }
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "stream lost in a failed TLS handshake",
    )
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}
