//! The bytes of a connection: a plain or TLS stream, and the TLS set-up for both sides.

pub mod stream;
pub mod tls;
