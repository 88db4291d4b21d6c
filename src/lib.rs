//! moat: an anti-spam filtering SMTP proxy in front of an MTA.
//!
//! One connection flows one way through these modules:
//! `listener` (accept, limits) -> `session` (the only orchestrator; `session::state` is the pure
//! sequencing machine, `session::conn` the client I/O) -> `smtp` (commands, replies, the message
//! reader; no I/O) -> `pipeline` (checks by stage, symbols) with `checks` plugged in ->
//! `upstream` (the MTA client) -> replies back to the client.
//! `config`, `tls`, `stream` and `shutdown` support them; `server` wires them together.

pub mod checks;
pub mod config;
pub mod envelope;
pub mod listener;
pub mod pipeline;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod smtp;
pub mod stream;
pub mod tls;
pub mod upstream;
