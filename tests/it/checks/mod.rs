//! The checks: blocklists, greylisting, rate limits, rule files, the classifier.

mod bayes;
mod dnsbl;
mod greylist;
mod ratelimit;
mod rules;
