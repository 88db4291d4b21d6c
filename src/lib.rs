//! moat: an anti-spam filtering SMTP proxy in front of an MTA.
//!
//! One connection flows one way, top to bottom; a module uses only those below it:
//!
//! - [`app`]: start-up, building the pipeline and the stores, rule reloads.
//! - [`listener`]: accept, connection limits, the PROXY protocol, shutdown and drain.
//! - [`session`]: one client session, one file per command group; the only orchestrator.
//!   [`net`] carries its bytes (plain or TLS), [`smtp`] parses and formats them (no I/O).
//! - [`pipeline`]: the checks of each stage and the transaction driver every front end
//!   (`serve`, `moat check`, `--replay`) runs a transaction through.
//! - [`checks`]: one file per check. They read [`auth`] (SPF, DKIM, ARC, DMARC, iprev),
//!   [`rules`] (rule files, lists, blocklists), [`bayes`] (the classifier) and [`store`]
//!   (greylisting and rate counts), all resolving through [`dns`].
//! - [`verdict`]: the score card, the decision and the header fields moat adds.
//! - [`upstream`]: the MTA client the accepted message goes to.
//! - [`records`]: transaction records and the quarantine, written after the reply.
//!
//! [`config`] and [`metrics`] are read everywhere and import nothing above them; [`cli`] holds
//! the offline commands (`check`, `lint`, `learn`, `eval`, `quarantine`).

pub mod app;
pub mod auth;
pub mod bayes;
pub mod checks;
pub mod cli;
pub mod config;
pub mod dns;
pub mod listener;
pub mod metrics;
pub mod net;
pub mod pipeline;
pub mod records;
pub mod rules;
pub mod session;
pub mod smtp;
pub mod store;
pub mod upstream;
pub mod verdict;
