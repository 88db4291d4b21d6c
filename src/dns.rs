//! The shared DNS resolver and the mail-auth authenticator built on it. Every check that needs
//! DNS goes through this one resolver, so its cache, timeout and attempts apply everywhere.
//! hickory's and mail-auth's generic types stop here.

use crate::config::{parse_nameserver, DnsConfig};
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::proto::rr::RData;
use mail_auth::MessageAuthenticator;
use std::net::{Ipv4Addr, SocketAddr};

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
        let authenticator = MessageAuthenticator::new(resolver_config, opts)
            .map_err(|e| DnsError::Build(e.to_string()))?;
        Ok(Dns { authenticator })
    }

    /// The mail-auth authenticator (SPF, DKIM, DMARC, ARC) on the shared resolver.
    pub fn authenticator(&self) -> &MessageAuthenticator {
        &self.authenticator
    }

    /// The A records of `name` (a DNSBL query). NXDOMAIN and empty answers are `NotFound`.
    pub async fn a_records(&self, name: &str) -> Lookup {
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        let answer = self
            .authenticator
            .resolver()
            .ipv4_lookup(fqdn.as_str())
            .await;
        if crate::dns_record::recording() {
            crate::dns_record::note(journal_entry(name, &answer));
        }
        match answer {
            Ok(lookup) => {
                let addrs: Vec<Ipv4Addr> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(a.0),
                        _ => None,
                    })
                    .collect();
                if addrs.is_empty() {
                    Lookup::NotFound
                } else {
                    Lookup::Found(addrs)
                }
            }
            Err(e) if e.is_no_records_found() => Lookup::NotFound,
            Err(e) => Lookup::Failed(e.to_string()),
        }
    }

    /// Drops every cached answer (tests that change zone data; admins after a fix).
    pub fn clear_cache(&self) {
        self.authenticator.resolver().clear_cache();
    }
}

/// A blocklist answer as a verdict record keeps it.
fn journal_entry(
    name: &str,
    answer: &Result<hickory_resolver::lookup::Lookup, hickory_resolver::net::NetError>,
) -> crate::dns_record::DnsAnswer {
    use crate::dns_record::{ttl_until, DnsAnswer, DnsResult, RType};
    match answer {
        Ok(lookup) => DnsAnswer::found(
            name,
            RType::A,
            lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0.to_string()),
                    _ => None,
                })
                .collect(),
            ttl_until(lookup.valid_until()),
        ),
        Err(e) if e.is_nx_domain() => {
            DnsAnswer::without_records(name, RType::A, DnsResult::Nxdomain, 0)
        }
        Err(e) if e.is_no_records_found() => {
            DnsAnswer::without_records(name, RType::A, DnsResult::Nodata, 0)
        }
        Err(e) => DnsAnswer {
            error: Some(e.to_string()),
            ..DnsAnswer::without_records(name, RType::A, DnsResult::Failed, 0)
        },
    }
}
