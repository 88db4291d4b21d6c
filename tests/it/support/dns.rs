//! An in-process authoritative DNS server (hickory-server) on 127.0.0.1, UDP and TCP on one
//! port, serving fixture zones. It always serves a root zone too, so that tree walks (DMARC)
//! get NXDOMAIN rather than REFUSED for names outside the fixtures.
//!
//! Also two broken servers for failure tests: one that answers SERVFAIL to everything, one
//! that never answers.

use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::rr::rdata::SOA;
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::proto::serialize::txt::Parser;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use hickory_server::Server;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};

/// A running test DNS server; dropping it stops it.
pub struct TestDns {
    /// UDP and TCP address.
    pub addr: SocketAddr,
    _server: Server<Silencing>,
}

/// The catalog, except that questions about some names are never answered (a server that
/// times out), the way the conformance suites' `TIMEOUT` entries ask.
pub struct Silencing {
    catalog: Catalog,
    /// Names that never answer, with the types they still answer for.
    silent: Vec<(LowerName, HashSet<RecordType>)>,
}

#[async_trait::async_trait]
impl RequestHandler for Silencing {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        if let Ok(info) = request.request_info() {
            let name = info.query.name();
            let qtype = info.query.query_type();
            if self
                .silent
                .iter()
                .any(|(n, answered)| n == name && !answered.contains(&qtype))
            {
                // Longer than any resolver timeout the tests use; the task ends with the
                // server.
                tokio::time::sleep(Duration::from_secs(120)).await;
            }
        }
        self.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// One zone: its origin and its records in zone-file syntax (the SOA is added).
pub struct Zone {
    /// e.g. `example.test`.
    pub origin: String,
    /// Records, relative to the origin.
    pub records: String,
}

impl Zone {
    /// A zone from text.
    pub fn new(origin: &str, records: &str) -> Zone {
        Zone {
            origin: origin.trim_end_matches('.').to_string(),
            records: records.to_string(),
        }
    }
}

/// Every `*.zone` file in `dir`; the file name without `.zone` is the origin.
pub fn zones_in(dir: &Path) -> Vec<Zone> {
    let mut zones = Vec::new();
    for entry in std::fs::read_dir(dir).expect("zone dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "zone") {
            let origin = path.file_stem().unwrap().to_string_lossy().into_owned();
            zones.push(Zone::new(
                &origin,
                &std::fs::read_to_string(&path).expect("zone file"),
            ));
        }
    }
    zones
}

/// The fixture zones shipped with the tests.
pub fn fixture_zones() -> Vec<Zone> {
    zones_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zones"))
}

impl TestDns {
    /// Starts a server for `zones` (plus the root zone).
    pub async fn start(zones: Vec<Zone>) -> TestDns {
        let mut catalog = Catalog::new();
        let mut all = zones;
        if !all.iter().any(|z| z.origin.is_empty()) {
            all.push(Zone::new("", ""));
        }
        for zone in all {
            let origin_text = if zone.origin.is_empty() {
                ".".to_string()
            } else {
                format!("{}.", zone.origin)
            };
            let origin = Name::from_str(&origin_text).expect("origin");
            let suffix = if zone.origin.is_empty() {
                ""
            } else {
                origin_text.as_str()
            };
            let text = format!(
                "$ORIGIN {origin_text}\n$TTL 60\n@ IN SOA ns.{suffix} hostmaster.{suffix} 1 3600 600 86400 60\n{}\n",
                zone.records
            );
            let (name, records) = Parser::new(text, None, Some(origin))
                .parse()
                .unwrap_or_else(|e| panic!("zone {origin_text}: {e}"));
            let handler = InMemoryZoneHandler::<TokioRuntimeProvider>::new(
                name.clone(),
                records,
                ZoneType::Primary,
                AxfrPolicy::Deny,
            )
            .unwrap_or_else(|e| panic!("zone {origin_text}: {e}"));
            catalog.upsert(LowerName::from(name), vec![Arc::new(handler)]);
        }
        Self::serve(Silencing {
            catalog,
            silent: Vec::new(),
        })
        .await
    }

    /// Starts a server authoritative for the whole tree (one root zone) with `records`, which
    /// may have any octets in their names. Questions about a name in `silent` are never
    /// answered, except for the types `records` holds for that name.
    pub async fn start_records(records: Vec<Record>, silent: Vec<Name>) -> TestDns {
        let root = Name::root();
        let soa = Record::from_rdata(
            root.clone(),
            60,
            RData::SOA(SOA::new(
                Name::from_ascii("ns.test.").expect("ns"),
                Name::from_ascii("hostmaster.test.").expect("rname"),
                1,
                3600,
                600,
                86400,
                60,
            )),
        );
        let mut sets: BTreeMap<RrKey, RecordSet> = BTreeMap::new();
        for record in std::iter::once(soa).chain(records) {
            let key = RrKey::new(LowerName::from(&record.name), record.record_type());
            sets.entry(key)
                .or_insert_with(|| RecordSet::new(record.name.clone(), record.record_type(), 1))
                .insert(record, 1);
        }
        let silent = silent
            .into_iter()
            .map(|name| {
                let lower = LowerName::from(&name);
                let answered = sets
                    .keys()
                    .filter(|k| k.name == lower)
                    .map(|k| k.record_type)
                    .collect();
                (lower, answered)
            })
            .collect();
        let handler = InMemoryZoneHandler::<TokioRuntimeProvider>::new(
            root.clone(),
            sets,
            ZoneType::Primary,
            AxfrPolicy::Deny,
        )
        .expect("root zone");
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::from(root), vec![Arc::new(handler)]);
        Self::serve(Silencing { catalog, silent }).await
    }

    async fn serve(handler: Silencing) -> TestDns {
        let mut server = Server::new(handler);
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().expect("udp addr");
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 65535);
        TestDns {
            addr,
            _server: server,
        }
    }

    /// Starts a server with the fixture zones plus `extra`.
    pub async fn fixtures(extra: Vec<Zone>) -> TestDns {
        let mut zones = fixture_zones();
        zones.extend(extra);
        Self::start(zones).await
    }
}

/// A TXT record whose text is cut into strings of at most 255 octets (RFC 1035 3.3.14), as a
/// long DKIM key must be.
pub fn txt_record(owner: Name, text: &str) -> Record {
    let chunks: Vec<String> = text
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    Record::from_rdata(
        owner,
        60,
        RData::TXT(hickory_server::proto::rr::rdata::TXT::new(chunks)),
    )
}

/// UDP and TCP sockets on the same loopback port.
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
            return (udp, tcp);
        }
    }
    panic!("no free port pair for the test DNS server");
}

/// A DNS server that answers every query with SERVFAIL (RFC 1035 RCODE 2).
pub struct ServfailDns {
    /// UDP address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ServfailDns {
    /// Starts it.
    pub async fn start() -> ServfailDns {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = sock.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                if n < 12 {
                    continue;
                }
                let mut reply = buf[..n].to_vec();
                // QR=1, keep opcode and RD; RA=1, RCODE=2 (SERVFAIL).
                reply[2] |= 0x80;
                reply[3] = 0x80 | 0x02;
                let _ = sock.send_to(&reply, peer).await;
            }
        });
        ServfailDns { addr, task }
    }
}

impl Drop for ServfailDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A DNS "server" that takes queries and never answers (a dead or firewalled resolver).
pub struct SilentDns {
    /// UDP address.
    pub addr: SocketAddr,
    _sock: UdpSocket,
}

impl SilentDns {
    /// Starts it.
    pub async fn start() -> SilentDns {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        SilentDns {
            addr: sock.local_addr().expect("addr"),
            _sock: sock,
        }
    }
}

/// A slow resolver: relays each UDP query to `upstream` and holds the answer back for
/// `delay` (a resolver under load, or far away).
pub struct SlowDns {
    /// UDP address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl SlowDns {
    /// Starts it in front of `upstream`.
    pub async fn start(upstream: SocketAddr, delay: Duration) -> SlowDns {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let addr = sock.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                let query = buf[..n].to_vec();
                let sock = sock.clone();
                tokio::spawn(async move {
                    let Ok(out) = UdpSocket::bind("127.0.0.1:0").await else {
                        return;
                    };
                    if out.send_to(&query, upstream).await.is_err() {
                        return;
                    }
                    let mut answer = [0u8; 4096];
                    let Ok(Ok(m)) =
                        tokio::time::timeout(Duration::from_secs(5), out.recv(&mut answer)).await
                    else {
                        return;
                    };
                    tokio::time::sleep(delay).await;
                    let _ = sock.send_to(&answer[..m], peer).await;
                });
            }
        });
        SlowDns { addr, task }
    }
}

impl Drop for SlowDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}
