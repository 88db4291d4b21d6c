//! The offline commands: the same pipeline and verdict as `serve`, without sockets to clients.

pub mod check;
pub mod corpus;
pub mod eval;
pub mod learn;
pub mod lint;
mod offline;
pub mod quarantine;
pub(crate) mod replay;
