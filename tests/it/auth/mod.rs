//! Sender authentication: SPF, DKIM, ARC, DMARC, the author, the public suites and spoofing cases.

mod conformance;
mod methods;
mod spoofing;
