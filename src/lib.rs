//! moat: an anti-spam filtering SMTP proxy in front of an MTA.
//!
//! One connection flows one way through these modules:
//! `listener` (accept, limits) -> `session` (the only orchestrator; `session::state` is the pure
//! sequencing machine, `session::conn` the client I/O) -> `smtp` (commands, replies, the message
//! reader; no I/O) -> `pipeline` (checks by stage, symbols) with `checks` plugged in ->
//! `verdict` (score -> action) -> `upstream` (the MTA client) -> replies back to the client.
//! `auth` computes SPF/DKIM/ARC/DMARC facts through `dns`; `headers` writes what moat adds.
//! `config`, `tls`, `stream` and `shutdown` support them; `server` wires them together.

pub mod auth;
pub mod bayes;
pub mod checks;
pub mod cli;
pub mod config;
pub mod dns;
pub mod dns_meter;
pub mod dns_record;
pub mod envelope;
pub mod headers;
pub mod listener;
pub mod message;
pub mod metrics;
pub mod pipeline;
pub mod proxy_protocol;
pub mod record;
pub mod reload;
pub mod rules;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod smtp;
pub mod store;
pub mod stream;
pub mod tls;
pub mod upstream;
pub mod verdict;
