//! SMTP protocol code with no I/O: commands, replies, the message reader, paths, extensions,
//! dot-stuffing.
//! Nothing here touches a socket, a file or the clock; everything is unit-tested on bytes.

pub(crate) mod address;
pub mod command;
pub mod data;
pub(crate) mod dot_stuff;
pub(crate) mod extensions;
pub(crate) mod reply;
