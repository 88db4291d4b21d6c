//! The whole server: start-up and shutdown, metrics, faults under load, the source layout.

mod faults;
mod layout;
mod lifecycle;
mod metrics;
