//! Accepting clients: limits and smuggling, the PROXY protocol.

mod limits;
mod proxy_protocol;
