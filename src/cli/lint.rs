//! `moat lint`: validates the config and every rule file, reporting all problems at once as
//! `file:line:column: what`. Exit 0 when clean, 1 when problems were found.

use crate::config::Config;
use crate::rules::RuleSet;
use std::path::Path;

/// The outcome: what to print and the exit code.
#[derive(Debug)]
pub struct LintReport {
    /// One line per problem, or a summary when clean.
    pub output: String,
    /// 0 clean, 1 problems.
    pub exit_code: u8,
}

/// Lints `config_path` and the rules directory it names.
pub fn run(config_path: &Path) -> LintReport {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            return LintReport {
                output: format!("{e}\n"),
                exit_code: 1,
            }
        }
    };
    match RuleSet::load(config.rules.dir.as_deref()).and_then(|r| {
        r.symbols.require(&crate::checks::emitted_symbols())?;
        Ok(r)
    }) {
        Ok(r) => LintReport {
            output: format!(
                "{}{}: ok; {} rules, {} DNS lists, {} symbols from rules/symbols.toml; ruleset {}\n",
                warnings(&config, &r),
                config_path.display(),
                r.rules.len(),
                r.dnsbl.len(),
                r.symbols.names().count(),
                r.digest
            ),
            exit_code: 0,
        },
        Err(e) => LintReport {
            output: format!("{e}\n"),
            exit_code: 1,
        },
    }
}

/// What is valid but unsafe, one line each (the exit code stays 0).
fn warnings(config: &Config, rules: &RuleSet) -> String {
    let mut out = String::new();
    let unauthenticated = rules
        .lists
        .get(crate::rules::lists::ListTarget::SenderUnauthenticated)
        .map_or(0, |(allow, _)| allow.len());
    if unauthenticated > 0 {
        let dir = config
            .rules
            .dir
            .as_deref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "rules".into());
        out.push_str(&format!(
            "warning: {dir}/lists/allow_sender_unauthenticated.txt: {unauthenticated} entries \
             allow a MAIL FROM nobody authenticated; anyone who forges one skips every check, \
             DMARC included. Prefer allow_sender.txt, which requires SPF or aligned DKIM.\n"
        ));
    }
    out
}
