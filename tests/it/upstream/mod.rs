//! The MTA side: every way the upstream can fail, and what the client hears.

mod failures;
