//! moat: an anti-spam filtering SMTP proxy in front of an MTA.
//!
//! One connection flows one way, top to bottom, and a module imports only those below it (a
//! test, `layout`, holds this):
//!
//! ```text
//! cli        offline front ends: check (and --replay), lint, learn, eval, quarantine
//! app        start-up: build the pipeline and stores, listeners, rule reloads, drain
//! listener   accept, connection limits, PROXY protocol, shutdown
//! session    one client: one file per command group, the end-of-transaction hook
//! checks     one file per check, built by app and plugged into the pipeline
//! pipeline   stages, the Check trait, the transaction driver, the live (reloadable) pipeline
//! records    transaction records and the quarantine, written after the reply
//! upstream   the MTA client: pool, XCLIENT/XFORWARD, forwarding, reply reading
//! auth       SPF, DKIM, ARC, DMARC, iprev: facts for the checks and Authentication-Results
//! bayes      the classifier: tokens, model, learning
//! verdict    the score card, the decision, the header fields moat adds
//! rules      rule files, lists, blocklist zones, symbol scores
//! store      greylisting and rate counts: embedded or Redis
//! dns        the one resolver: typed lookups, metering, the answer journal, replay server
//! net        plain or TLS streams and the TLS set-up
//! smtp       commands, replies, the message reader, dot-stuffing: no I/O
//! metrics    the Prometheus registry and its HTTP endpoint
//! config     the config file, its sections and validation
//! ```
//!
//! A message's path: `listener` -> `session` -> `pipeline::driver` (the `checks` of each stage,
//! through `auth`, `rules`, `bayes`, `dns`) -> `verdict` -> `upstream`, and the client's reply;
//! then `session::report` writes the log line, metrics and `records`.

pub mod app;
pub mod auth;
pub mod bayes;
mod checks;
pub mod cli;
pub mod config;
pub mod dns;
pub mod listener;
pub mod metrics;
pub mod net;
pub mod pipeline;
pub mod records;
pub mod rules;
mod session;
pub mod smtp;
pub mod store;
mod upstream;
pub mod verdict;
