//! The public sender-authentication suites in `../shared/conformance/` (openspf's RFC 7208
//! suite, ValiMail's RFC 8617 ARC validation suite), run through the code `moat check` uses:
//! each scenario's DNS data is served by the in-process hickory server, each case is checked
//! with `moat::cli::check::Checker` and its JSON report, and a test fails listing every wrong
//! case by name.
//!
//! `.ci/run` runs these with `MOAT_SHARED_REQUIRED=1` and they fail there when the suite files
//! are missing; elsewhere a missing suite prints why it was skipped.

mod arc;
mod spf;

use moat::cli::check::{CheckArgs, Checker};
use serde_yaml::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The suite file `rel` under `shared/conformance/` (see `support::shared`).
pub fn suite(rel: &str) -> Option<PathBuf> {
    crate::support::shared(&format!("conformance/{rel}"))
}

/// Every YAML document of a suite file. The ARC suite names a few tests twice in one
/// document (`as_fields_b_head_case`, ...); YAML mappings cannot hold that, so a repeated
/// test name gets `#2`, `#3` appended and both tests run.
pub fn documents(path: &Path) -> Vec<Value> {
    use serde::Deserialize as _;
    let raw = std::fs::read_to_string(path).expect("suite file");
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let mut text = String::with_capacity(raw.len());
    for line in raw.split_inclusive('\n') {
        if line.starts_with("---") {
            seen.clear();
        }
        let is_test_name = line.starts_with("  ")
            && !line.starts_with("   ")
            && line.trim_end().ends_with(':')
            && !line.trim().contains(' ');
        if is_test_name {
            let key = line.trim().trim_end_matches(':').to_string();
            let n = seen.entry(key.clone()).or_insert(0);
            *n += 1;
            if *n > 1 {
                text.push_str(&format!("  {key}#{n}:\n"));
                continue;
            }
        }
        text.push_str(line);
    }
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("suite YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// A checker on `dns`, with the shipped defaults except short DNS timeouts (the suites have
/// servers that never answer; one query then costs 2 x 500 ms instead of 15 s).
pub async fn checker(dns: SocketAddr, dir: &Path) -> Checker {
    let config = dir.join("moat.toml");
    std::fs::write(&config, "[dns]\ntimeout = \"500ms\"\nattempts = 1\n").expect("config");
    Checker::new(&args(dns, &config)).await.expect("checker")
}

/// The `moat check --json --dns ... --config ...` arguments.
pub fn args(dns: SocketAddr, config: &Path) -> CheckArgs {
    CheckArgs {
        config: Some(config.to_path_buf()),
        dns: Some(dns),
        json: true,
        ..CheckArgs::default()
    }
}
