//! DNS blocklists: DNSBL on the client IP (connect), RHSBL on the HELO name (helo), the sender
//! domain (mail) and the From domain (data), URIBL on the registrable domains of URLs in the
//! body (data). One check per kind, built from `rules/dnsbl.toml`.
//!
//! Lookups of a stage go out concurrently through the shared resolver (its cache and timeout).
//! A failed lookup and a list's error code (127.255.255.x) score nothing: a blocklist outage
//! must never refuse mail.

use crate::dns::{Dns, Lookup};
use crate::pipeline::{Check, CheckFuture, Context, Stage, Symbol};
use crate::rules::dnsbl::{ip_query, Answer, DnsList, ListKind};
use crate::rules::message;
use std::collections::BTreeMap;

/// URL domains looked up per message at most (a message with thousands of links must not
/// become thousands of queries).
const MAX_URI_DOMAINS: usize = 20;

/// The blocklist check for one kind of lookup.
pub struct Dnsbl {
    kind: ListKind,
    lists: Vec<DnsList>,
    dns: Dns,
    timeout: std::time::Duration,
}

impl Dnsbl {
    /// A check for the lists of `kind` (none: no check is built).
    pub fn new(
        kind: ListKind,
        all: &[DnsList],
        dns: Dns,
        timeout: std::time::Duration,
    ) -> Option<Self> {
        let lists: Vec<DnsList> = all
            .iter()
            .filter(|l| l.kinds.contains(&kind))
            .cloned()
            .collect();
        (!lists.is_empty()).then_some(Dnsbl {
            kind,
            lists,
            dns,
            timeout,
        })
    }

    /// One blocklist query, bounded by the list timeout.
    async fn lookup(&self, name: &str, zone: &str) -> Lookup {
        let started = std::time::Instant::now();
        let answer = match tokio::time::timeout(self.timeout, self.dns.a_records(name)).await {
            Ok(answer) => answer,
            Err(_) => Lookup::Failed(format!("no answer within {:?}", self.timeout)),
        };
        let result = match answer {
            Lookup::Found(_) => "found",
            Lookup::NotFound => "not_found",
            Lookup::Failed(_) => "failed",
        };
        crate::dns::meter::record(zone, "A", result, started);
        answer
    }

    /// The names to look up for this kind in this context.
    fn subjects(&self, ctx: &Context<'_>) -> Vec<String> {
        let env = ctx.envelope;
        match self.kind {
            ListKind::Ip => Vec::new(),
            ListKind::Helo => env
                .helo
                .as_deref()
                .and_then(domain_name)
                .into_iter()
                .collect(),
            ListKind::Sender => env
                .sender
                .as_deref()
                .and_then(|s| s.rsplit_once('@'))
                .and_then(|(_, d)| domain_name(d))
                .into_iter()
                .collect(),
            ListKind::From => ctx
                .message
                .and_then(|m| {
                    m.parsed
                        .from()
                        .and_then(|a| a.first())
                        .and_then(|a| a.address().map(str::to_string))
                })
                .as_deref()
                .and_then(|a| a.rsplit_once('@'))
                .and_then(|(_, d)| domain_name(d))
                .into_iter()
                .collect(),
            ListKind::Uri => ctx
                .message
                .map(|m| message::url_domains(m.parsed, MAX_URI_DOMAINS))
                .unwrap_or_default(),
        }
    }
}

/// The registrable domain (public suffix list) of a name, as domain lists list them; `None`
/// for address literals and junk.
fn domain_name(s: &str) -> Option<String> {
    let d = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.contains('.')
        && !d.starts_with('[')
        && d.parse::<std::net::IpAddr>().is_err()
        && d.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !ok {
        return None;
    }
    psl::domain_str(&d).map(str::to_string)
}

impl Check for Dnsbl {
    fn name(&self) -> &'static str {
        match self.kind {
            ListKind::Ip => "dnsbl",
            ListKind::Helo => "rhsbl_helo",
            ListKind::Sender => "rhsbl_sender",
            ListKind::From => "rhsbl_from",
            ListKind::Uri => "uribl",
        }
    }

    fn stage(&self) -> Stage {
        match self.kind {
            ListKind::Ip => Stage::Connect,
            ListKind::Helo => Stage::Helo,
            ListKind::Sender => Stage::Mail,
            ListKind::From | ListKind::Uri => Stage::Data,
        }
    }

    fn run<'a>(&'a self, ctx: &'a Context<'a>) -> CheckFuture<'a> {
        Box::pin(async move {
            let stage = self.stage();
            // (list, subject, query name)
            let mut queries: Vec<(&DnsList, String, String)> = Vec::new();
            if self.kind == ListKind::Ip {
                let ip = ctx.envelope.client.ip();
                if ip.is_unspecified() {
                    return Vec::new();
                }
                for l in &self.lists {
                    queries.push((l, ip.to_string(), ip_query(ip, &l.zone)));
                }
            } else {
                for subject in self.subjects(ctx) {
                    for l in &self.lists {
                        queries.push((l, subject.clone(), format!("{subject}.{}", l.zone)));
                    }
                }
            }
            let answers = futures_util::future::join_all(
                queries.iter().map(|(l, _, q)| self.lookup(q, &l.zone)),
            )
            .await;
            // Symbol name -> (score, description, subjects), so a URL domain listed twice scores once.
            let mut hits: BTreeMap<String, (f64, String, Vec<String>)> = BTreeMap::new();
            for ((list, subject, query), answer) in queries.iter().zip(answers) {
                match answer {
                    Lookup::NotFound => {
                        crate::metrics::METRICS
                            .dnsbl_lookups
                            .with_label_values(&[&list.name, "not_listed"])
                            .inc();
                    }
                    Lookup::Failed(why) => {
                        crate::metrics::METRICS
                            .dnsbl_lookups
                            .with_label_values(&[&list.name, "failed"])
                            .inc();
                        tracing::info!(list = %list.name, query = %query, error = %why, "blocklist lookup failed; no score");
                    }
                    Lookup::Found(addrs) => {
                        crate::metrics::METRICS
                            .dnsbl_lookups
                            .with_label_values(&[&list.name, "answered"])
                            .inc();
                        for a in list.interpret(&addrs) {
                            match a {
                                Answer::Listed(m) => {
                                    let e = hits.entry(m.symbol.clone()).or_insert((
                                        m.score,
                                        m.description.clone(),
                                        Vec::new(),
                                    ));
                                    if !e.2.contains(subject) {
                                        e.2.push(subject.clone());
                                    }
                                }
                                Answer::ListError(code) => {
                                    crate::metrics::METRICS
                                        .dnsbl_blocked
                                        .with_label_values(&[&list.name])
                                        .inc();
                                    tracing::warn!(list = %list.name, %code, "blocklist refused the query (127.255.255.x); use a local resolver; no score");
                                }
                                Answer::Unknown(code) => {
                                    tracing::info!(list = %list.name, %code, subject = %subject, "blocklist answered an undocumented code; no score");
                                }
                            }
                        }
                    }
                }
            }
            hits.into_iter()
                .map(|(name, (score, description, subjects))| Symbol {
                    name,
                    score,
                    description: description.into(),
                    stage,
                    detail: Some(subjects.join(", ")),
                    forced: None,
                })
                .collect()
        })
    }
}
