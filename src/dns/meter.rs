//! DNS lookup metrics for the lookups mail-auth makes on moat's behalf (DKIM, DMARC, ARC,
//! reverse DNS).
//!
//! mail-auth owns those queries, so moat cannot time them at the resolver. Its cache hook sees
//! each one instead: `get` is called just before a query and `insert` right after an answer or a
//! cacheable negative answer. [`LookupMeter`] is a "cache" that never answers (so mail-auth
//! behaves exactly as without one; hickory's own cache still applies) and turns that pair of
//! calls into a count and a latency. A `get` with no `insert` by the time the check is done was
//! a failed lookup (timeout, SERVFAIL, or a negative answer without the SOA that RFC 2308
//! asks authoritative servers to send).
//!
//! The `zone` label is the check's name, never the name looked up: label values stay bounded.

use crate::dns::journal::{self, DnsAnswer, DnsResult, RType};
use crate::metrics::METRICS;
use hickory_resolver::proto::op::ResponseCode;
use mail_auth::{DnsCache, Mx, Negative, RecordSet, ResolverCache, TxtRecord};
use std::borrow::Borrow;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Instant;

/// How a lookup ended, as the `result` label says it.
trait LookupResult {
    /// `found` or `not_found`.
    fn result(&self) -> &'static str;
    /// The answer as a verdict record keeps it.
    fn answer(&self, name: &str, rtype: RType, ttl: u32) -> DnsAnswer;
}

/// A record of an answer in presentation form.
trait Present {
    fn present(&self) -> String;
}

impl Present for Ipv4Addr {
    fn present(&self) -> String {
        self.to_string()
    }
}

impl Present for Ipv6Addr {
    fn present(&self) -> String {
        self.to_string()
    }
}

impl Present for Box<str> {
    fn present(&self) -> String {
        self.trim_end_matches('.').to_string()
    }
}

impl Present for Mx {
    fn present(&self) -> String {
        // mail-auth groups exchanges by preference; the record keeps one line per exchange.
        self.exchanges
            .iter()
            .map(|e| format!("{} {}", self.preference, e.trim_end_matches('.')))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn negative(name: &str, rtype: RType, code: ResponseCode, ttl: u32) -> DnsAnswer {
    let result = if code == ResponseCode::NXDomain {
        DnsResult::Nxdomain
    } else {
        DnsResult::Nodata
    };
    DnsAnswer::without_records(name, rtype, result, ttl)
}

impl<T: Present> LookupResult for Result<RecordSet<T>, Negative> {
    fn result(&self) -> &'static str {
        if self.is_ok() {
            "found"
        } else {
            "not_found"
        }
    }

    fn answer(&self, name: &str, rtype: RType, ttl: u32) -> DnsAnswer {
        match self {
            Ok(set) => DnsAnswer::found(
                name,
                rtype,
                set.records
                    .iter()
                    .flat_map(|r| {
                        r.present()
                            .split('\n')
                            .map(str::to_string)
                            .collect::<Vec<_>>()
                    })
                    .collect(),
                ttl,
            ),
            Err(n) => negative(name, rtype, n.code, ttl),
        }
    }
}

impl LookupResult for TxtRecord {
    fn result(&self) -> &'static str {
        match self {
            // A negative answer; any other error means records came back but did not parse.
            TxtRecord::Error(mail_auth::Error::Dns(mail_auth::DnsError::RecordNotFound(_))) => {
                "not_found"
            }
            _ => "found",
        }
    }

    fn answer(&self, name: &str, rtype: RType, ttl: u32) -> DnsAnswer {
        match self {
            TxtRecord::Error(mail_auth::Error::Dns(mail_auth::DnsError::RecordNotFound(code))) => {
                negative(name, rtype, *code, ttl)
            }
            // Records came back, parsed or not; their text comes from the resolver's cache
            // when the record is written.
            _ => DnsAnswer {
                text_pending: true,
                ..DnsAnswer::found(name, rtype, Vec::new(), ttl)
            },
        }
    }
}

/// The name a cache key stands for.
trait KeyName {
    fn dns_name(&self) -> String;
}

impl KeyName for Box<str> {
    fn dns_name(&self) -> String {
        self.to_string()
    }
}

impl KeyName for IpAddr {
    fn dns_name(&self) -> String {
        hickory_resolver::proto::rr::Name::from(*self).to_ascii()
    }
}

fn key_hash<Q: Hash + ?Sized>(q: &Q) -> u64 {
    // `Borrow` promises equal hashes for a key and its borrowed form, which is what lets
    // `insert(K)` find the `get(&Q)` that started the lookup.
    let mut h = DefaultHasher::new();
    q.hash(&mut h);
    h.finish()
}

/// The lookups of one record type (mail-auth's per-type cache slot).
pub struct TypeMeter {
    zone: &'static str,
    rtype: RType,
    pending: Mutex<Vec<(u64, Instant)>>,
}

impl TypeMeter {
    fn new(zone: &'static str, rtype: RType) -> Self {
        TypeMeter {
            zone,
            rtype,
            pending: Mutex::new(Vec::new()),
        }
    }

    fn record(&self, started: Instant, result: &'static str) {
        record(self.zone, self.rtype.as_str(), result, started);
    }

    fn started(&self, hash: u64) {
        if let Ok(mut p) = self.pending.lock() {
            p.push((hash, Instant::now()));
        }
    }

    fn answered(&self, hash: u64, result: &'static str) {
        let started = self.pending.lock().ok().and_then(|mut p| {
            let i = p.iter().position(|(h, _)| *h == hash)?;
            Some(p.swap_remove(i).1)
        });
        if let Some(t) = started {
            self.record(t, result);
        }
    }
}

impl Drop for TypeMeter {
    fn drop(&mut self) {
        let pending = std::mem::take(self.pending.get_mut().unwrap_or_else(|e| e.into_inner()));
        for (_, started) in pending {
            self.record(started, "failed");
        }
    }
}

impl<K: Hash + KeyName, V: LookupResult> ResolverCache<K, V> for TypeMeter {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.started(key_hash(name));
        None
    }

    fn remove<Q>(&self, _name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        if journal::recording() {
            let ttl = journal::ttl_until(valid_until);
            journal::note(value.answer(&key.dns_name(), self.rtype, ttl));
        }
        self.answered(key_hash(&key), value.result());
    }
}

/// Meters the lookups of one check run; pass it to mail-auth with `Parameters::with_cache`.
pub struct LookupMeter {
    txt: TypeMeter,
    mx: TypeMeter,
    a: TypeMeter,
    aaaa: TypeMeter,
    ptr: TypeMeter,
}

impl LookupMeter {
    /// A meter whose lookups are labelled `zone` (the check: spf, dkim, dmarc, arc, iprev).
    pub fn new(zone: &'static str) -> Self {
        LookupMeter {
            txt: TypeMeter::new(zone, RType::TXT),
            mx: TypeMeter::new(zone, RType::MX),
            a: TypeMeter::new(zone, RType::A),
            aaaa: TypeMeter::new(zone, RType::AAAA),
            ptr: TypeMeter::new(zone, RType::PTR),
        }
    }
}

impl DnsCache for LookupMeter {
    type Txt = TypeMeter;
    type Mx = TypeMeter;
    type Ipv4 = TypeMeter;
    type Ipv6 = TypeMeter;
    type Ptr = TypeMeter;

    fn txt(&self) -> Option<&Self::Txt> {
        Some(&self.txt)
    }
    fn mx(&self) -> Option<&Self::Mx> {
        Some(&self.mx)
    }
    fn ipv4(&self) -> Option<&Self::Ipv4> {
        Some(&self.a)
    }
    fn ipv6(&self) -> Option<&Self::Ipv6> {
        Some(&self.aaaa)
    }
    fn ptr(&self) -> Option<&Self::Ptr> {
        Some(&self.ptr)
    }
}

/// Records one lookup moat made itself (blocklists, SPF), labelled with the list's zone or the
/// check.
pub fn record(zone: &str, rtype: &str, result: &str, started: Instant) {
    METRICS
        .dns_lookups
        .with_label_values(&[zone, rtype, result])
        .inc();
    METRICS
        .dns_duration
        .with_label_values(&[zone, rtype])
        .observe(started.elapsed().as_secs_f64());
}
