//! The files admins edit under `rules/`: loading and validation. No I/O in the table itself;
//! loading reads `symbols.toml` from the configured directory or uses the built-in copy.

pub mod symbols;

pub use symbols::{SymbolDef, SymbolTable};

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
