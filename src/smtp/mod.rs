//! SMTP protocol code with no I/O: commands, replies, the message reader, paths, extensions,
//! dot-stuffing.
//! Nothing here touches a socket, a file or the clock; everything is unit-tested on bytes.

pub mod address;
pub mod command;
pub mod data;
pub mod dot_stuff;
pub mod extensions;
pub mod reply;
