//! Transaction records, exact replay, and the quarantine.

mod quarantine;
mod replay;
