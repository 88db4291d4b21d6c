//! Test support: moat in-process on 127.0.0.1:0, a scriptable SMTP sink, a raw SMTP client and
//! test certificates. Everything talks over real loopback sockets.

pub mod alone;
pub mod certs;
pub mod client;
pub mod dns;
pub mod redis;
pub mod sink;

use moat::app::Server;
use moat::config::Config;
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
    dns_set: bool,
    shipped_dns_timing: bool,
}

/// A moat running in this process.
pub struct Moat {
    /// The SMTP listener.
    pub addr: SocketAddr,
    server: Option<Server>,
    /// The fixture DNS server started for this moat when the test named none.
    pub _own_dns: Option<dns::TestDns>,
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
        // Many test moats share the process: no fixed metrics port.
        config.metrics.listen = String::new();
        // Never a model this machine may have learned: tests that want one set their own.
        config.bayes.path = "/nonexistent/moat-tests/bayes.redb".into();
        MoatBuilder {
            config,
            dns_set: false,
            shipped_dns_timing: false,
        }
    }

    /// Stops moat with a drain; true when every session finished in the grace period.
    pub async fn shutdown(mut self) -> bool {
        match self.server.take() {
            Some(s) => s.shutdown().await,
            None => true,
        }
    }

    /// The running server (reload counters and the like).
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    /// A connected client that has read the greeting.
    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// The codes and texts of the replies to RCPT TO for `rcpts` in one transaction from the
    /// loopback address `source` (e.g. 127.0.0.5), which then quits.
    pub async fn rcpt_replies(
        &self,
        source: &str,
        from: &str,
        rcpts: &[&str],
    ) -> Vec<(u16, String)> {
        let mut c = Client::connect_from(self.addr, source).await;
        c.ehlo().await;
        assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).await.code, 250);
        let mut out = Vec::new();
        for r in rcpts {
            let reply = c.cmd(&format!("RCPT TO:<{r}>")).await;
            out.push((reply.code, reply.lines.join(" ")));
        }
        c.cmd("QUIT").await;
        out
    }
}

impl MoatBuilder {
    /// Relays to `sink`.
    pub fn upstream(mut self, sink: &Sink) -> Self {
        self.config.upstream.address = sink.addr.to_string();
        self
    }

    /// Resolves through this nameserver (a test DNS server, or a broken one).
    pub fn dns(mut self, addr: SocketAddr) -> Self {
        self.config.dns.nameservers = vec![addr.to_string()];
        self.dns_set = true;
        self
    }

    /// Sets the flag and reject thresholds (tests that make one symbol decisive).
    pub fn thresholds(self, add_header: f64, reject: f64) -> Self {
        self.with(move |c| {
            c.verdict.add_header = add_header;
            c.verdict.reject = reject;
        })
    }

    /// Offers STARTTLS with the test certificate.
    pub fn tls(self, certs: &certs::TestCerts) -> Self {
        let (cert, key) = (certs.cert.clone(), certs.key.clone());
        self.with(|c| {
            c.tls.cert = Some(cert);
            c.tls.key = Some(key);
        })
    }

    /// Keeps the shipped DNS timeout, attempts and stage budget (the builder otherwise
    /// shortens them so that failure tests run fast).
    pub fn shipped_dns_timing(mut self) -> Self {
        self.shipped_dns_timing = true;
        self
    }

    /// Adjusts the config.
    pub fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    /// Starts a fresh sink and moat in front of it.
    pub async fn start_with_sink(self) -> (Moat, Sink) {
        self.start_with(SinkOptions::default()).await
    }

    /// Starts a sink with `options` and moat in front of it.
    pub async fn start_with(self, options: SinkOptions) -> (Moat, Sink) {
        let sink = Sink::with(options).await;
        let moat = self.upstream(&sink).start().await;
        (moat, sink)
    }

    /// Starts moat and waits until it listens. Without `dns`, a fixture DNS server is
    /// started for it, so no test ever asks a resolver outside the machine.
    pub async fn start(mut self) -> Moat {
        let own_dns = if self.dns_set {
            None
        } else {
            let d = dns::TestDns::fixtures(Vec::new()).await;
            self.config.dns.nameservers = vec![d.addr.to_string()];
            Some(d)
        };
        if !self.shipped_dns_timing {
            self.config.dns.timeout = moat::config::ConfigDuration::secs(2);
            self.config.dns.attempts = 1;
        }
        self.config.validate().expect("test config is valid");
        let server = Server::start(&self.config).await.expect("moat starts");
        Moat {
            addr: server.local_addrs()[0],
            server: Some(server),
            _own_dns: own_dns,
        }
    }
}

/// A message body with CRLF line ends.
pub fn crlf(text: &str) -> Vec<u8> {
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

/// Splits what the sink received into the fields moat prepended and the original message,
/// asserting that the original arrived byte for byte after them.
pub fn split_prepended<'a>(received: &'a [u8], original: &[u8]) -> &'a str {
    assert!(
        received.len() >= original.len() && received.ends_with(original),
        "the original message is not intact at the end of what the sink got:\n{}",
        String::from_utf8_lossy(received)
    );
    let prefix =
        std::str::from_utf8(&received[..received.len() - original.len()]).expect("prefix is text");
    assert!(prefix.starts_with("Received: from "), "{prefix}");
    assert!(prefix.contains("\r\nX-Spam-Status: "), "{prefix}");
    prefix
}

/// A file or folder under the workplace's `shared` folder (the corpus, the conformance suites),
/// or `None` with a note when this checkout has none: `cargo test` passes on a fresh clone with
/// nothing beside it. `MOAT_SHARED` names the folder (`.ci/run` sets it); otherwise it is
/// looked for beside the checkout. With `MOAT_SHARED_REQUIRED` set (as `.ci/run` does), a
/// missing one fails the test instead.
pub fn shared(rel: &str) -> Option<std::path::PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut roots = vec![here.join("../shared"), here.join("../../shared")];
    if let Some(dir) = std::env::var_os("MOAT_SHARED") {
        roots.insert(0, std::path::PathBuf::from(dir));
    }
    if let Some(found) = roots.iter().map(|r| r.join(rel)).find(|p| p.exists()) {
        return Some(found);
    }
    assert!(
        std::env::var_os("MOAT_SHARED_REQUIRED").is_none(),
        "shared/{rel} is missing: looked under {roots:?} (set MOAT_SHARED to the shared folder)"
    );
    eprintln!("shared/{rel} not found under {roots:?}: skipped here; .ci/run runs it");
    None
}
