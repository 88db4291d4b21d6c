//! The facts of one client session and its current transaction: who connected, what they said
//! in HELO, MAIL and RCPT. Plain data, shared read-only with the checks.

use std::net::SocketAddr;

/// The client session and its open transaction.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The client's address and port.
    pub client: SocketAddr,
    /// moat's own address the client connected to.
    pub local: SocketAddr,
    /// The HELO/EHLO name, once given.
    pub helo: Option<String>,
    /// True after EHLO (ESMTP), false after HELO.
    pub esmtp: bool,
    /// The TLS version of the client connection, when encrypted.
    pub tls: Option<&'static str>,
    /// The reverse-path of the open transaction (empty string for `<>`).
    pub sender: Option<String>,
    /// Recipients the upstream accepted in this transaction.
    pub recipients: Vec<String>,
}

impl Envelope {
    /// A fresh envelope for a new connection.
    pub fn new(client: SocketAddr, local: SocketAddr) -> Self {
        Envelope {
            client,
            local,
            helo: None,
            esmtp: false,
            tls: None,
            sender: None,
            recipients: Vec::new(),
        }
    }

    /// Forgets the transaction (RSET, end of data, new EHLO).
    pub fn reset_transaction(&mut self) {
        self.sender = None;
        self.recipients.clear();
    }
}
