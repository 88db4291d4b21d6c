//! One client session: commands, early talkers, XFORWARD, STARTTLS, and the lock-step relay.

mod commands;
mod pregreet;
mod proxy;
mod tls;
mod xforward;
