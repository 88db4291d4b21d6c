//! Binds the listening sockets, accepts clients, enforces the session limits (421 beyond them)
//! and spawns one `Session` per connection.

pub mod proxy_protocol;
pub(crate) mod shutdown;

use crate::listener::shutdown::DrainGuard;
use crate::session::{Session, SessionShared};
use crate::smtp::reply::{self, ReplyConst};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// Session limits shared by all listeners.
#[derive(Debug)]
pub struct Limits {
    sessions: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
    /// New sessions per client address in the current minute (window start, count).
    rate: Mutex<HashMap<IpAddr, (Instant, usize)>>,
    max_rate_per_minute: usize,
}

/// The rate window of `max_new_sessions_per_ip_per_minute`.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Beyond this many tracked addresses, the ones whose window is over are forgotten.
const RATE_TRACKED: usize = 10_000;

/// Holds a session's place in the limits; released on drop.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Ok(mut map) = self.limits.per_ip.lock() {
            if let Some(n) = map.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.ip);
                }
            }
        }
    }
}

impl Limits {
    /// Limits of `max` sessions in all and `max_per_ip` per client address.
    pub fn new(max: usize, max_per_ip: usize) -> Arc<Self> {
        Self::with_rate(max, max_per_ip, 0)
    }

    /// The same, and at most `per_minute` new sessions per client address a minute (0: any).
    pub fn with_rate(max: usize, max_per_ip: usize, per_minute: usize) -> Arc<Self> {
        Arc::new(Limits {
            sessions: Arc::new(Semaphore::new(max)),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip,
            rate: Mutex::new(HashMap::new()),
            max_rate_per_minute: per_minute,
        })
    }

    /// Counts a new session of `ip`; false when it is over the rate.
    fn within_rate(&self, ip: IpAddr) -> bool {
        if self.max_rate_per_minute == 0 {
            return true;
        }
        let Ok(mut map) = self.rate.lock() else {
            return true;
        };
        let now = Instant::now();
        if map.len() > RATE_TRACKED {
            map.retain(|_, (start, _)| now.duration_since(*start) < RATE_WINDOW);
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= RATE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= self.max_rate_per_minute
    }

    /// Admits a client or names the limit it hit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, &'static ReplyConst> {
        if !self.within_rate(ip) {
            return Err(&reply::CONNECTION_RATE_FROM_IP);
        }
        let permit = self
            .sessions
            .clone()
            .try_acquire_owned()
            .map_err(|_| &reply::TOO_MANY_SESSIONS)?;
        let mut map = self.per_ip.lock().map_err(|_| &reply::TOO_MANY_SESSIONS)?;
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(&reply::TOO_MANY_SESSIONS_FROM_IP);
        }
        *n += 1;
        Ok(Admission {
            _permit: permit,
            limits: self.clone(),
            ip,
        })
    }
}

/// How long a load balancer may take to send the PROXY header.
const PROXY_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts connections on one socket until shutdown. With `proxy` (the trusted balancers), the
/// listener expects a PROXY protocol header first and refuses anyone else; with `require_tls`
/// its sessions refuse MAIL before STARTTLS.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<SessionShared>,
    limits: Arc<Limits>,
    mut shutdown: watch::Receiver<bool>,
    drain: DrainGuard,
    proxy: Option<Arc<crate::config::lists::NameList>>,
    require_tls: bool,
) {
    let local = listener.local_addr().ok();
    let starter = Starter {
        shared,
        limits,
        shutdown: shutdown.clone(),
        drain,
        require_tls,
    };
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let local = tcp.local_addr().ok().or(local).unwrap_or(peer);
        let Some(trusted) = &proxy else {
            starter.start(tcp, peer, local);
            continue;
        };
        if trusted.match_ip(peer.ip()).is_none() {
            crate::metrics::METRICS
                .sessions
                .with_label_values(&["refused_proxy"])
                .inc();
            tracing::warn!(peer = %peer, "PROXY listener: connection from an untrusted source closed");
            drop(tcp);
            continue;
        }
        let starter = starter.clone();
        tokio::spawn(async move {
            let mut tcp = tcp;
            match crate::listener::proxy_protocol::read_header(&mut tcp, PROXY_HEADER_TIMEOUT).await
            {
                Ok(crate::listener::proxy_protocol::Proxied::Client {
                    source,
                    destination,
                }) => {
                    tracing::debug!(balancer = %peer, client = %source, "PROXY header");
                    starter.start(tcp, source, destination);
                }
                Ok(crate::listener::proxy_protocol::Proxied::Local) => {
                    starter.start(tcp, peer, local)
                }
                Err(e) => {
                    crate::metrics::METRICS
                        .sessions
                        .with_label_values(&["refused_proxy"])
                        .inc();
                    tracing::warn!(peer = %peer, error = %e, "PROXY listener: connection closed");
                }
            }
        });
    }
    tracing::info!(listen = ?local, "listener stopped");
}

/// What every session a listener starts shares.
#[derive(Clone)]
struct Starter {
    shared: Arc<SessionShared>,
    limits: Arc<Limits>,
    shutdown: watch::Receiver<bool>,
    drain: DrainGuard,
    require_tls: bool,
}

impl Starter {
    /// Admits the client under the session limits and runs its session, or refuses it with
    /// 421.
    fn start(&self, tcp: TcpStream, client: SocketAddr, local: SocketAddr) {
        match self.limits.admit(client.ip()) {
            Ok(admission) => {
                let m = &crate::metrics::METRICS;
                m.sessions.with_label_values(&["accepted"]).inc();
                m.sessions_active.inc();
                let session = Session::new(
                    tcp,
                    client,
                    local,
                    self.shared.clone(),
                    self.shutdown.clone(),
                    self.require_tls,
                );
                let guard = self.drain.clone();
                let record_dns = self.shared.records.is_some();
                tokio::spawn(async move {
                    if record_dns {
                        crate::dns::journal::Journal::new()
                            .scope(session.run())
                            .await;
                    } else {
                        session.run().await;
                    }
                    crate::metrics::METRICS.sessions_active.dec();
                    drop(admission);
                    drop(guard);
                });
            }
            Err(r) => {
                crate::metrics::METRICS
                    .sessions
                    .with_label_values(&["refused_limit"])
                    .inc();
                tracing::info!(client = %client, reply = %r.reply(), "connection refused by limit");
                tokio::spawn(refuse(tcp, r));
            }
        }
    }
}

async fn refuse(mut tcp: TcpStream, r: &'static ReplyConst) {
    let wire = r.reply().to_wire();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let _ = tcp.write_all(wire.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

/// Binds every configured address (IPv6 sockets are v6-only, so `0.0.0.0:25` and `[::]:25`
/// can both be listed).
pub fn bind(addresses: &[SocketAddr]) -> std::io::Result<Vec<TcpListener>> {
    addresses
        .iter()
        .map(|addr| {
            let socket = match addr {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            socket.set_reuseaddr(true)?;
            if addr.is_ipv6() {
                set_v6only(&socket)?;
            }
            socket.bind(*addr).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
            })?;
            socket.listen(1024)
        })
        .collect()
}

fn set_v6only(socket: &tokio::net::TcpSocket) -> std::io::Result<()> {
    socket2::SockRef::from(socket).set_only_v6(true)
}
