//! Test support: moat in-process on 127.0.0.1:0, a scriptable SMTP sink, a raw SMTP client and
//! test certificates. Everything talks over real loopback sockets.

pub mod certs;
pub mod client;
pub mod sink;

use moat::config::Config;
use moat::server::Server;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Once;

pub use client::Client;
pub use sink::{Sink, SinkOptions};

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        }
    });
}

/// Builds a moat for a test.
pub struct MoatBuilder {
    config: Config,
}

/// A moat running in this process.
pub struct Moat {
    /// The SMTP listener.
    pub addr: SocketAddr,
    server: Option<Server>,
}

impl Moat {
    /// A builder with test defaults: loopback, port 0, short timeouts.
    pub fn builder() -> MoatBuilder {
        init_logging();
        let mut config = Config::parse("", Path::new("test.toml")).expect("empty config parses");
        config.server.hostname = Some("moat.test".into());
        config.server.listen = vec!["127.0.0.1:0".into()];
        config.server.shutdown_grace = moat::config::ConfigDuration::secs(10);
        config.upstream.address = "127.0.0.1:9".into();
        config.upstream.connect_timeout = moat::config::ConfigDuration::secs(5);
        config.upstream.command_timeout = moat::config::ConfigDuration::secs(10);
        config.upstream.data_timeout = moat::config::ConfigDuration::secs(10);
        config.limits.command_timeout = moat::config::ConfigDuration::secs(20);
        config.limits.data_timeout = moat::config::ConfigDuration::secs(20);
        MoatBuilder { config }
    }

    /// Stops moat with a drain; true when every session finished in the grace period.
    pub async fn shutdown(mut self) -> bool {
        match self.server.take() {
            Some(s) => s.shutdown().await,
            None => true,
        }
    }

    /// A connected client that has read the greeting.
    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }
}

impl MoatBuilder {
    /// Relays to `sink`.
    pub fn upstream(mut self, sink: &Sink) -> Self {
        self.config.upstream.address = sink.addr.to_string();
        self
    }

    /// Offers STARTTLS with the test certificate.
    pub fn tls(self, certs: &certs::TestCerts) -> Self {
        let (cert, key) = (certs.cert.clone(), certs.key.clone());
        self.with(|c| {
            c.tls.cert = Some(cert);
            c.tls.key = Some(key);
        })
    }

    /// Adjusts the config.
    pub fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    /// Starts moat and waits until it listens.
    pub async fn start(self) -> Moat {
        self.config.validate().expect("test config is valid");
        let server = Server::start(&self.config).await.expect("moat starts");
        Moat {
            addr: server.local_addrs()[0],
            server: Some(server),
        }
    }
}

/// A message body with CRLF line ends.
pub fn crlf(text: &str) -> Vec<u8> {
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}
