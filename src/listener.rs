//! Binds the listening sockets, accepts clients, enforces the session limits (421 beyond them)
//! and spawns one `Session` per connection.

use crate::session::{Session, SessionShared};
use crate::shutdown::DrainGuard;
use crate::smtp::reply::{self, ReplyConst};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// Session limits shared by all listeners.
#[derive(Debug)]
pub struct Limits {
    sessions: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
}

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
        Arc::new(Limits {
            sessions: Arc::new(Semaphore::new(max)),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip,
        })
    }

    /// Admits a client or names the limit it hit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, &'static ReplyConst> {
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

/// Accepts connections on one socket until shutdown.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<SessionShared>,
    limits: Arc<Limits>,
    mut shutdown: watch::Receiver<bool>,
    drain: DrainGuard,
) {
    let local = listener.local_addr().ok();
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
        match limits.admit(peer.ip()) {
            Ok(admission) => {
                let m = &crate::metrics::METRICS;
                m.sessions.with_label_values(&["accepted"]).inc();
                m.sessions_active.inc();
                let session = Session::new(tcp, peer, local, shared.clone(), shutdown.clone());
                let guard = drain.clone();
                tokio::spawn(async move {
                    session.run().await;
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
                tracing::info!(client = %peer, reply = %r.reply(), "connection refused by limit");
                tokio::spawn(refuse(tcp, r));
            }
        }
    }
    tracing::info!(listen = ?local, "listener stopped");
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
