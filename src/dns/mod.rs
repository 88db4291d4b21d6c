//! The shared DNS resolver and the mail-auth authenticator built on it. Every check that needs
//! DNS goes through this one resolver, so its cache, timeout and attempts apply everywhere.
//! hickory's and mail-auth's generic types stop here.

pub mod journal;
pub(crate) mod meter;
pub(crate) mod replay;

mod lenient;

use crate::config::{parse_nameserver, DnsConfig};
use crate::dns::journal::{ttl_until, DnsAnswer, DnsResult, RType};
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use mail_auth::MessageAuthenticator;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

/// The outcome of a lookup: expected conditions are values, not errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The addresses in the answer.
    Found(Vec<Ipv4Addr>),
    /// NXDOMAIN or no records of the type.
    NotFound,
    /// Timeout, SERVFAIL, refused: the name's status is unknown.
    Failed(String),
}

/// The answer to one question, for the checks that evaluate records themselves (SPF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// The records of the type asked (never empty).
    Records(Vec<T>),
    /// RCODE 3: the name does not exist.
    NxDomain,
    /// The name exists without records of the type.
    NoData,
    /// Timeout, SERVFAIL, refused, or a name that cannot be put into a query.
    Failed(String),
}

impl<T> Answer<T> {
    /// True for NXDOMAIN and NODATA (RFC 7208 4.6.4 calls both a void lookup).
    pub fn is_void(&self) -> bool {
        matches!(self, Answer::NxDomain | Answer::NoData)
    }
}

/// How hickory reports a response it refused over one empty record (see `lenient`).
const EMPTY_RECORD: &str = "unexpected record with length 0";

/// A name as the DNS takes it: labels of 1 to 63 octets, at most 253 octets in all, any
/// octets allowed (SPF macros can expand to spaces and `%`). `None` when it cannot be queried.
pub fn query_name(name: &str) -> Option<Name> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return None;
    }
    let labels: Vec<&[u8]> = trimmed.split('.').map(str::as_bytes).collect();
    if labels.iter().any(|l| l.is_empty() || l.len() > 63) {
        return None;
    }
    Name::from_labels(labels).ok()
}

/// Why the resolver could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// /etc/resolv.conf could not be read and no nameservers are configured.
    #[error("dns: cannot read the system resolver configuration ({0}); set dns.nameservers")]
    SystemConf(String),
    /// A configured nameserver is not an address.
    #[error("dns.nameservers: {0:?} is not an IP address or IP:port")]
    BadNameserver(String),
    /// hickory refused the configuration.
    #[error("dns: cannot build the resolver: {0}")]
    Build(String),
}

/// The shared resolver, as the mail-auth authenticator that owns it.
#[derive(Clone)]
pub struct Dns {
    authenticator: MessageAuthenticator,
    /// The nameservers the resolver asks, for the lenient second try (see `lenient`).
    servers: Vec<SocketAddr>,
    timeout: std::time::Duration,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dns")
    }
}

impl Dns {
    /// Builds the resolver from `[dns]`; `override_ns` (from `--dns`) replaces the nameservers.
    pub fn new(config: &DnsConfig, override_ns: Option<SocketAddr>) -> Result<Dns, DnsError> {
        let servers: Vec<SocketAddr> = match override_ns {
            Some(addr) => vec![addr],
            None => config
                .nameservers
                .iter()
                .map(|s| parse_nameserver(s).ok_or_else(|| DnsError::BadNameserver(s.clone())))
                .collect::<Result<_, _>>()?,
        };
        let (resolver_config, mut opts) = if servers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| DnsError::SystemConf(e.to_string()))?
        } else {
            let name_servers = servers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            (
                ResolverConfig::from_name_servers(name_servers),
                ResolverOpts::default(),
            )
        };
        opts.timeout = config.timeout.0;
        opts.attempts = config.attempts;
        opts.cache_size = config.cache_size;
        // Mail checks want the DNS's answer for the name asked: no search-list expansion, and
        // no /etc/hosts (which names 127.0.0.1 "localhost" and would pass reverse DNS).
        opts.ndots = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        let servers = resolver_config
            .name_servers()
            .iter()
            .flat_map(|ns| {
                ns.connections
                    .iter()
                    .map(move |c| SocketAddr::new(ns.ip, c.port))
            })
            .fold(Vec::new(), |mut all, addr| {
                if !all.contains(&addr) {
                    all.push(addr);
                }
                all
            });
        let timeout = opts.timeout;
        let authenticator = MessageAuthenticator::new(resolver_config, opts)
            .map_err(|e| DnsError::Build(e.to_string()))?;
        Ok(Dns {
            authenticator,
            servers,
            timeout,
        })
    }

    /// The mail-auth authenticator (SPF, DKIM, DMARC, ARC) on the shared resolver.
    pub fn authenticator(&self) -> &MessageAuthenticator {
        &self.authenticator
    }

    /// The A records of `name` (a DNSBL query). NXDOMAIN and empty answers are `NotFound`.
    /// Not metered here: the blocklist check labels its lookups with the list's zone.
    pub async fn a_records(&self, name: &str) -> Lookup {
        let answer = self
            .answer(name, RType::A, |d| match d {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .await;
        match answer {
            Answer::Records(addrs) => Lookup::Found(addrs),
            Answer::NxDomain | Answer::NoData => Lookup::NotFound,
            Answer::Failed(e) => Lookup::Failed(e),
        }
    }

    /// TXT records of `name`, each record's strings joined (RFC 7208 3.3), as bytes.
    /// `zone` labels the lookup in the metrics (the check that asked).
    pub async fn txt(&self, zone: &'static str, name: &str) -> Answer<Vec<u8>> {
        let answer = self
            .typed(zone, name, RType::TXT, |d| match d {
                RData::TXT(t) => Some(t.txt_data.iter().flat_map(|c| c.iter().copied()).collect()),
                _ => None,
            })
            .await;
        match (&answer, query_name(name)) {
            (Answer::Failed(e), Some(qname)) if e.contains(EMPTY_RECORD) => {
                match lenient::txt(&self.servers, &qname, self.timeout).await {
                    Some(lenient::TxtAnswer::Records(r)) if r.is_empty() => Answer::NoData,
                    Some(lenient::TxtAnswer::Records(r)) => Answer::Records(r),
                    Some(lenient::TxtAnswer::NxDomain) => Answer::NxDomain,
                    None => answer,
                }
            }
            _ => answer,
        }
    }

    /// A records of `name`.
    pub async fn ipv4(&self, zone: &'static str, name: &str) -> Answer<Ipv4Addr> {
        self.typed(zone, name, RType::A, |d| match d {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .await
    }

    /// AAAA records of `name`.
    pub async fn ipv6(&self, zone: &'static str, name: &str) -> Answer<Ipv6Addr> {
        self.typed(zone, name, RType::AAAA, |d| match d {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .await
    }

    /// The addresses of `name` in the family of `like` (A for IPv4, AAAA for IPv6).
    pub async fn addresses(&self, zone: &'static str, name: &str, like: IpAddr) -> Answer<IpAddr> {
        match like {
            IpAddr::V4(_) => match self.ipv4(zone, name).await {
                Answer::Records(r) => Answer::Records(r.into_iter().map(IpAddr::V4).collect()),
                other => other.map_empty(),
            },
            IpAddr::V6(_) => match self.ipv6(zone, name).await {
                Answer::Records(r) => Answer::Records(r.into_iter().map(IpAddr::V6).collect()),
                other => other.map_empty(),
            },
        }
    }

    /// MX records of `name` as (preference, exchange without the trailing dot).
    pub async fn mx(&self, zone: &'static str, name: &str) -> Answer<(u16, String)> {
        self.typed(zone, name, RType::MX, |d| match d {
            RData::MX(m) => Some((m.preference, name_text(&m.exchange))),
            _ => None,
        })
        .await
    }

    /// PTR names of `ip` (without the trailing dot).
    pub async fn ptr(&self, zone: &'static str, ip: IpAddr) -> Answer<String> {
        let name = Name::from(ip).to_ascii();
        self.typed(zone, &name, RType::PTR, |d| match d {
            RData::PTR(p) => Some(name_text(&p.0)),
            _ => None,
        })
        .await
    }

    /// One lookup, metered under `zone` (see [`Dns::answer`]).
    async fn typed<T>(
        &self,
        zone: &'static str,
        name: &str,
        rtype: RType,
        pick: impl Fn(&RData) -> Option<T>,
    ) -> Answer<T> {
        let started = Instant::now();
        let out = self.answer(name, rtype, pick).await;
        let result = match &out {
            Answer::Records(_) => "found",
            Answer::NxDomain | Answer::NoData => "not_found",
            Answer::Failed(_) => "failed",
        };
        crate::dns::meter::record(zone, rtype.as_str(), result, started);
        out
    }

    /// One lookup, noted in the session's journal, expected conditions as values (unmetered).
    async fn answer<T>(
        &self,
        name: &str,
        rtype: RType,
        pick: impl Fn(&RData) -> Option<T>,
    ) -> Answer<T> {
        let Some(qname) = query_name(name) else {
            return Answer::Failed(format!("{name:?} is not a name the DNS can be asked for"));
        };
        // RFC 6761 6.4: names under .invalid never exist; resolver libraries answer them
        // negatively at once instead of asking (so a test sender there costs no lookup, even
        // on a machine without DNS).
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        if lower == "invalid" || lower.ends_with(".invalid") {
            return Answer::NxDomain;
        }
        let wire = match rtype {
            RType::A => RecordType::A,
            RType::AAAA => RecordType::AAAA,
            RType::MX => RecordType::MX,
            RType::TXT => RecordType::TXT,
            RType::PTR => RecordType::PTR,
        };
        let answer = self.authenticator.resolver().lookup(qname, wire).await;
        let (out, journal) = match answer {
            Ok(lookup) => {
                let records: Vec<T> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| pick(&r.data))
                    .collect();
                let ttl = ttl_until(lookup.valid_until());
                let text: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == wire)
                    .map(|r| present(&r.data))
                    .collect();
                if records.is_empty() {
                    (
                        Answer::NoData,
                        DnsAnswer::without_records(name, rtype, DnsResult::Nodata, ttl),
                    )
                } else {
                    (
                        Answer::Records(records),
                        DnsAnswer::found(name, rtype, text, ttl),
                    )
                }
            }
            Err(e) if e.is_nx_domain() => (
                Answer::NxDomain,
                DnsAnswer::without_records(name, rtype, DnsResult::Nxdomain, 0),
            ),
            Err(e) if e.is_no_records_found() => (
                Answer::NoData,
                DnsAnswer::without_records(name, rtype, DnsResult::Nodata, 0),
            ),
            Err(e) => (
                Answer::Failed(e.to_string()),
                DnsAnswer {
                    error: Some(e.to_string()),
                    ..DnsAnswer::without_records(name, rtype, DnsResult::Failed, 0)
                },
            ),
        };
        if crate::dns::journal::recording() {
            crate::dns::journal::note(journal);
        }
        out
    }

    /// Drops every cached answer (tests that change zone data; admins after a fix).
    pub fn clear_cache(&self) {
        self.authenticator.resolver().clear_cache();
    }
}

impl<T> Answer<T> {
    /// The same non-record answer for another record type.
    fn map_empty<U>(self) -> Answer<U> {
        match self {
            Answer::Records(_) | Answer::NoData => Answer::NoData,
            Answer::NxDomain => Answer::NxDomain,
            Answer::Failed(e) => Answer::Failed(e),
        }
    }
}

/// A name's labels as they are, joined by dots, without the trailing dot: no presentation
/// escapes, so that it can be asked for again through [`query_name`].
fn name_text(name: &Name) -> String {
    name.iter()
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(".")
}

/// A record's data in the presentation form a verdict record keeps (TXT as its joined text).
fn present(data: &RData) -> String {
    match data {
        RData::TXT(t) => t
            .txt_data
            .iter()
            .map(|c| String::from_utf8_lossy(c))
            .collect(),
        RData::MX(m) => format!(
            "{} {}",
            m.preference,
            m.exchange.to_ascii().trim_end_matches('.')
        ),
        RData::PTR(p) => p.0.to_ascii().trim_end_matches('.').to_string(),
        other => other.to_string(),
    }
}

impl Dns {
    /// Fills in the text of TXT answers that the hook saw parsed, from the resolver's cache (the
    /// lookup was just made, so this asks no server unless the TTL ran out meanwhile).
    pub async fn complete_texts(&self, answers: &mut [DnsAnswer]) {
        for a in answers.iter_mut().filter(|a| a.text_pending) {
            a.text_pending = false;
            let fqdn = format!("{}.", a.name);
            match self.authenticator().resolver().txt_lookup(fqdn).await {
                Ok(lookup) => {
                    a.data = lookup
                        .answers()
                        .iter()
                        .filter_map(|r| match &r.data {
                            RData::TXT(t) => Some(
                                t.txt_data
                                    .iter()
                                    .map(|c| String::from_utf8_lossy(c))
                                    .collect::<String>(),
                            ),
                            _ => None,
                        })
                        .collect();
                }
                Err(e) => {
                    a.result = DnsResult::Failed;
                    a.error = Some(format!("text not recoverable: {e}"));
                }
            }
        }
    }
}
