//! Tests that read moat's process-wide metrics registry run alone: one child process of this
//! test binary runs them one at a time, so what a test counts is its own traffic and nothing
//! that another test did meanwhile.
//!
//! Such a test is named `alone_*`, is `#[ignore]`d in the normal run, and starts with
//! `if !alone() { return; }`; `app::metrics::tests_reading_metrics_run_alone` runs them.

use std::process::Command;

const CHILD: &str = "MOAT_TEST_ALONE";

/// True in the child process that runs the `alone_*` tests; elsewhere such a test returns at
/// once (it is run, and counted, by the child).
pub fn alone() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// Runs every `alone_*` test of this binary in a child process, one at a time; fails with the
/// child's output if any of them fails.
pub fn run_alone_tests() {
    if alone() {
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args(["alone_", "--ignored", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("run the test binary again");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "alone_* tests failed:\n{text}");
    assert!(
        !text.contains("running 0 tests"),
        "no alone_* test ran:\n{text}"
    );
    eprintln!("{text}");
}

/// The value of one series (`name{labels}` exactly as rendered) in the registry, 0 if absent.
pub fn metric(series: &str) -> f64 {
    value(&moat::metrics::METRICS.render(), series)
}

/// The value of one series in a Prometheus text exposition, 0 if absent.
pub fn value(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Counts of the given series now, to compare with later ([`Counts::delta`]).
pub struct Counts(Vec<(String, f64)>);

impl Counts {
    /// Reads `series` now.
    pub fn of(series: &[&str]) -> Counts {
        Counts(series.iter().map(|s| (s.to_string(), metric(s))).collect())
    }

    /// How much `series` (one of those read) grew since.
    pub fn delta(&self, series: &str) -> f64 {
        let before = self
            .0
            .iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{series} was not read before"));
        metric(series) - before
    }
}
