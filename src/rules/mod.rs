//! The files admins edit under `rules/`: loading and validation. No I/O in the table itself;
//! loading reads `symbols.toml` from the configured directory or uses the built-in copy.

pub mod dnsbl;
pub mod symbols;

pub use dnsbl::DnsList;
pub use symbols::{SymbolDef, SymbolTable};

use std::path::Path;
use std::sync::Arc;

/// The built-in copy of the shipped `rules/dnsbl.toml`.
const BUILTIN_DNSBL: &str = include_str!("../../rules/dnsbl.toml");

/// Everything loaded from the rules directory, validated together.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// Scores of the symbols moat's checks emit.
    pub symbols: Arc<SymbolTable>,
    /// The DNS lists.
    pub dnsbl: Vec<DnsList>,
}

impl RuleSet {
    /// Loads `DIR/symbols.toml` and `DIR/dnsbl.toml` (a missing dnsbl.toml means no lists), or
    /// the built-in copies when `dir` is `None`.
    pub fn load(dir: Option<&Path>) -> Result<RuleSet, RulesError> {
        let symbols = SymbolTable::load(dir)?;
        let dnsbl = match dir {
            Some(dir) => {
                let path = dir.join("dnsbl.toml");
                let label = path.display().to_string();
                match std::fs::read_to_string(&path) {
                    Ok(text) => dnsbl::parse(&text, &label)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(source) => {
                        return Err(RulesError::Read {
                            path: label,
                            source,
                        })
                    }
                }
            }
            None => dnsbl::parse(BUILTIN_DNSBL, "built-in rules/dnsbl.toml")?,
        };
        Ok(RuleSet {
            symbols: Arc::new(symbols),
            dnsbl,
        })
    }
}

/// Errors in rule files; each names the file and the entry.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// A file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not valid TOML or does not match the schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with the line.
        message: String,
    },
    /// Symbols the code emits are missing from the table.
    #[error("{path}: missing definitions for symbols emitted by moat's checks: {}", .missing.join(", "))]
    Missing {
        /// The file.
        path: String,
        /// The undefined symbol names.
        missing: Vec<String>,
    },
}
