//! SMTP protocol code with no I/O: commands, replies, the message reader, paths, extensions.
//! Nothing here touches a socket, a file or the clock; everything is unit-tested on bytes.

pub mod address;
pub mod command;
pub mod data;
pub mod extensions;
pub mod reply;
