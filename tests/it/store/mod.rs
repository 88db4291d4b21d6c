//! The state store's backends.

mod backends;
