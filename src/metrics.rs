//! Every `moat_*` metric, and the HTTP endpoint that serves them with the health checks.
//!
//! One process-wide registry: metrics are facts about the process, and threading a handle
//! through every constructor would buy nothing. Label values are bounded sets (actions, stages,
//! reply classes, error kinds, rule names, list names): never addresses or domains.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;

/// All of moat's metrics.
pub struct Metrics {
    registry: Registry,
    /// Sessions by how they started: `accepted`, `refused_limit`, `refused_proxy`, and
    /// `pregreet` for clients that talked before the greeting, `pipelining` for clients that
    /// pipelined before PIPELINING was offered (counted when caught, not at the start).
    pub sessions: IntCounterVec,
    /// Sessions open now.
    pub sessions_active: IntGauge,
    /// Transactions by final `action` and the `stage` that decided it.
    pub transactions: IntCounterVec,
    /// Recipients by final `action`.
    pub recipients: IntCounterVec,
    /// Upstream replies to MAIL/RCPT/DATA by `class` (2xx, 4xx, 5xx).
    pub upstream_replies: IntCounterVec,
    /// Upstream failures by `kind` (connect, timeout, io, ...).
    pub upstream_errors: IntCounterVec,
    /// Messages read completely.
    pub messages_received: IntCounter,
    /// Octets of those messages.
    pub bytes_received: IntCounter,
    /// Symbols that fired, by `rule` (rule or symbol name).
    pub rule_hits: IntCounterVec,
    /// Refusals shadow mode let through, by `action`.
    pub shadow_would_refuse: IntCounterVec,
    /// Time per check, by `check`.
    pub check_duration: HistogramVec,
    /// Stages whose time budget ran out before every check finished, by `stage`.
    pub stage_budget_exhausted: IntCounterVec,
    /// Blocklist answers in 127.255.255.0/24 (the list refused the resolver), by `list`.
    pub dnsbl_blocked: IntCounterVec,
    /// Greylisting decisions by `result` (deferred, passed, known).
    pub greylist: IntCounterVec,
    /// Failed store operations by `backend` (embedded, redis).
    pub store_errors: IntCounterVec,
    /// Recipients deferred by a rate limit, by the limit's `name`.
    pub ratelimited: IntCounterVec,
    /// Blocklist lookups by `list` and `result` (listed, not_listed, failed).
    pub dnsbl_lookups: IntCounterVec,
    /// Final scores of messages.
    pub score: Histogram,
    /// The classifier's spam probability of each message it scored.
    pub bayes_probability: Histogram,
    /// Rule reloads by `result` (ok, failed).
    pub reloads: IntCounterVec,
    /// TLS handshakes with clients by `version`, and `failed`.
    pub tls_handshakes: IntCounterVec,
    /// Failed client TLS handshakes by `reason`.
    pub tls_failures: IntCounterVec,
    /// DNS lookups by `zone` (blocklist zone or check name), `type` and `result`.
    pub dns_lookups: IntCounterVec,
    /// DNS lookup latency by `zone` and `type`.
    pub dns_duration: HistogramVec,
    /// 1, labelled with the loaded ruleset's hash.
    pub ruleset_info: IntGaugeVec,
}

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition is valid");
    reg.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let sessions_active =
            IntGauge::new("moat_sessions_active", "Client sessions open now").expect("valid");
        r.register(Box::new(sessions_active.clone()))
            .expect("registered once");
        let messages_received = IntCounter::new(
            "moat_messages_received_total",
            "Messages read completely from clients",
        )
        .expect("valid");
        r.register(Box::new(messages_received.clone()))
            .expect("registered once");
        let bytes_received = IntCounter::new(
            "moat_received_bytes_total",
            "Octets of messages read from clients",
        )
        .expect("valid");
        r.register(Box::new(bytes_received.clone()))
            .expect("registered once");
        let check_duration = HistogramVec::new(
            HistogramOpts::new(
                "moat_check_duration_seconds",
                "Time one check took, by check",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["check"],
        )
        .expect("valid");
        r.register(Box::new(check_duration.clone()))
            .expect("registered once");
        let score = Histogram::with_opts(
            HistogramOpts::new(
                "moat_message_score",
                "Final score of messages at end of data",
            )
            .buckets(vec![-5.0, 0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0]),
        )
        .expect("valid");
        r.register(Box::new(score.clone()))
            .expect("registered once");
        let bayes_probability = Histogram::with_opts(
            HistogramOpts::new(
                "moat_bayes_probability",
                "Spam probability the classifier gave each message it scored",
            )
            .buckets(vec![0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99]),
        )
        .expect("valid");
        r.register(Box::new(bayes_probability.clone()))
            .expect("registered once");
        let dns_duration = HistogramVec::new(
            HistogramOpts::new(
                "moat_dns_lookup_duration_seconds",
                "Time one DNS lookup took, by zone and record type",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["zone", "type"],
        )
        .expect("valid");
        r.register(Box::new(dns_duration.clone()))
            .expect("registered once");
        let ruleset_info = IntGaugeVec::new(
            Opts::new("moat_ruleset_info", "The loaded ruleset (value 1)"),
            &["hash"],
        )
        .expect("valid");
        r.register(Box::new(ruleset_info.clone()))
            .expect("registered once");
        Metrics {
            sessions: counter(
                r,
                "moat_sessions_total",
                "Client sessions by result",
                &["result"],
            ),
            sessions_active,
            transactions: counter(
                r,
                "moat_transactions_total",
                "Transactions by final action and deciding stage",
                &["action", "stage"],
            ),
            recipients: counter(
                r,
                "moat_recipients_total",
                "Recipients by final action and deciding stage",
                &["action", "stage"],
            ),
            upstream_replies: counter(
                r,
                "moat_upstream_replies_total",
                "Upstream replies by class",
                &["class"],
            ),
            upstream_errors: counter(
                r,
                "moat_upstream_errors_total",
                "Upstream failures by kind",
                &["kind"],
            ),
            messages_received,
            bytes_received,
            rule_hits: counter(
                r,
                "moat_rule_hits_total",
                "Symbols that fired, by rule",
                &["rule"],
            ),
            shadow_would_refuse: counter(
                r,
                "moat_shadow_would_refuse_total",
                "Refusals shadow mode let through",
                &["action"],
            ),
            check_duration,
            stage_budget_exhausted: counter(
                r,
                "moat_stage_budget_exhausted_total",
                "Stages whose time budget (verdict.stage_timeout) ran out before every check and \
                 the authentication step finished, by stage",
                &["stage"],
            ),
            dnsbl_blocked: counter(
                r,
                "moat_dnsbl_blocked_total",
                "Blocklist answers saying the list refused our resolver",
                &["list"],
            ),
            greylist: counter(
                r,
                "moat_greylist_total",
                "Greylisting decisions (deferred, passed after the delay, known triplet)",
                &["result"],
            ),
            ratelimited: counter(
                r,
                "moat_ratelimited_total",
                "Recipients deferred because a rate limit was exceeded",
                &["name"],
            ),
            store_errors: counter(
                r,
                "moat_store_errors_total",
                "Store operations that failed or timed out; the check that needed them was skipped",
                &["backend"],
            ),
            dnsbl_lookups: counter(
                r,
                "moat_dnsbl_lookups_total",
                "Blocklist lookups by list and result",
                &["list", "result"],
            ),
            score,
            bayes_probability,
            reloads: counter(
                r,
                "moat_rule_reloads_total",
                "Rule reloads by result",
                &["result"],
            ),
            tls_handshakes: counter(
                r,
                "moat_tls_handshakes_total",
                "Client TLS handshakes by version",
                &["version"],
            ),
            tls_failures: counter(
                r,
                "moat_tls_handshake_failures_total",
                "Failed client TLS handshakes by reason",
                &["reason"],
            ),
            dns_lookups: counter(
                r,
                "moat_dns_lookups_total",
                "DNS lookups by zone (blocklist zone or check), record type and result",
                &["zone", "type", "result"],
            ),
            dns_duration,
            ruleset_info,
            registry,
        }
    }

    /// The registry's contents in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// What /readyz reports: listeners bound and rules loaded (set by the server), upstream
/// reachable at the last probe or transaction (set by the session and the probe).
#[derive(Debug, Default)]
pub struct Readiness {
    /// Listeners are bound.
    pub listening: AtomicBool,
    /// A ruleset is loaded.
    pub rules_loaded: AtomicBool,
    /// The upstream answered the last time moat tried.
    pub upstream_ok: AtomicBool,
}

impl Readiness {
    /// True when all three hold.
    pub fn ready(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
            && self.rules_loaded.load(Ordering::Relaxed)
            && self.upstream_ok.load(Ordering::Relaxed)
    }
}

/// The process's readiness flags.
pub static READINESS: LazyLock<Readiness> = LazyLock::new(Readiness::default);

/// Serves /metrics, /healthz and /readyz on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Response, StatusCode};
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let Ok((tcp, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let (status, ctype, body) = match req.uri().path() {
                        "/metrics" => (
                            StatusCode::OK,
                            "text/plain; version=0.0.4",
                            METRICS.render(),
                        ),
                        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
                        "/readyz" if READINESS.ready() => {
                            (StatusCode::OK, "text/plain", "ready\n".to_string())
                        }
                        "/readyz" => {
                            let r = &*READINESS;
                            let why = format!(
                                "not ready: listening={} rules_loaded={} upstream_ok={}\n",
                                r.listening.load(Ordering::Relaxed),
                                r.rules_loaded.load(Ordering::Relaxed),
                                r.upstream_ok.load(Ordering::Relaxed)
                            );
                            (StatusCode::SERVICE_UNAVAILABLE, "text/plain", why)
                        }
                        _ => (
                            StatusCode::NOT_FOUND,
                            "text/plain",
                            "not found\n".to_string(),
                        ),
                    };
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = status;
                    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
                        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                },
            );
            let io = hyper_util::rt::TokioIo::new(tcp);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}
