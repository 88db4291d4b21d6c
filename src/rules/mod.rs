//! The files admins edit under `rules/`: loading and validation. No I/O in the table itself;
//! loading reads `symbols.toml` from the configured directory or uses the built-in copy.

pub mod dnsbl;
pub mod engine;
pub mod lists;
pub(crate) mod message;
pub mod meta;
pub mod symbols;

pub use dnsbl::DnsList;
pub use symbols::{SymbolDef, SymbolTable};

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The built-in copy of the shipped `rules/dnsbl.toml`.
const BUILTIN_DNSBL: &str = include_str!("../../rules/dnsbl.toml");

/// The built-in copies of the shipped rule files, in load order.
const BUILTIN_RULES: &[(&str, &str)] = &[
    ("10-header.toml", include_str!("../../rules/10-header.toml")),
    ("20-body.toml", include_str!("../../rules/20-body.toml")),
    ("30-uri.toml", include_str!("../../rules/30-uri.toml")),
    (
        "50-attachments.toml",
        include_str!("../../rules/50-attachments.toml"),
    ),
    ("90-meta.toml", include_str!("../../rules/90-meta.toml")),
];

/// Files in the rules directory that are not rule files.
const NOT_RULE_FILES: &[&str] = &["symbols.toml", "dnsbl.toml", "local.toml"];

/// The rule files of `dir` in load order: `NN-*.toml` by name, then `local.toml`.
pub fn rule_sources(dir: &Path) -> Result<Vec<engine::Source>, RulesError> {
    let read = |path: &Path| -> Result<engine::Source, RulesError> {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: label.clone(),
            source,
        })?;
        Ok(engine::Source { label, text })
    };
    let entries = std::fs::read_dir(dir).map_err(|source| RulesError::Read {
        path: dir.display().to_string(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml") && !NOT_RULE_FILES.contains(&n.as_str()))
        .collect();
    names.sort();
    let mut sources = names
        .iter()
        .map(|n| read(&dir.join(n)))
        .collect::<Result<Vec<_>, _>>()?;
    let local = dir.join("local.toml");
    if local.is_file() {
        sources.push(read(&local)?);
    }
    Ok(sources)
}

/// Everything loaded from the rules directory, validated together.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// Scores of the symbols moat's checks emit.
    pub symbols: Arc<SymbolTable>,
    /// The DNS lists.
    pub dnsbl: Vec<DnsList>,
    /// The content rules, compiled.
    pub rules: Arc<engine::CompiledRules>,
    /// The allow and deny lists.
    pub lists: Arc<lists::Lists>,
    /// What was loaded, as a short SHA-256 (see [`digest`]).
    pub digest: String,
}

impl RuleSet {
    /// Loads `DIR/symbols.toml` and `DIR/dnsbl.toml` (a missing dnsbl.toml means no lists), or
    /// the built-in copies when `dir` is `None`.
    pub fn load(dir: Option<&Path>) -> Result<RuleSet, RulesError> {
        let mut symbols = SymbolTable::load(dir)?;
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
        let sources = match dir {
            Some(dir) => rule_sources(dir)?,
            None => BUILTIN_RULES
                .iter()
                .map(|(name, text)| engine::Source {
                    label: format!("built-in rules/{name}"),
                    text: text.to_string(),
                })
                .collect(),
        };
        // Names code emits (symbols.toml) and list symbols may be rescored in rule files too.
        let known: std::collections::HashSet<String> =
            symbols.names().map(str::to_string).collect();
        let rules = engine::compile(&sources, &known).map_err(RulesError::Rules)?;
        symbols.apply_overrides(&rules.symbol_scores);
        let lists = match dir {
            Some(dir) => lists::load(dir)?,
            None => lists::Lists::default(),
        };
        Ok(RuleSet {
            symbols: Arc::new(symbols),
            dnsbl,
            rules: Arc::new(rules),
            lists: Arc::new(lists),
            digest: digest(dir),
        })
    }
}

/// Every file below `dir` (subdirectories included), sorted; unreadable entries are skipped.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A short SHA-256 over every file of the rules directory (relative path and contents, in
/// path order), or over the built-in rules: the ruleset's version in `moat_ruleset_info`,
/// the reload log line and `moat lint`, so an admin can tell which files a running moat uses.
pub fn digest(dir: Option<&Path>) -> String {
    use aws_lc_rs::digest::{Context, SHA256};
    let mut ctx = Context::new(&SHA256);
    match dir {
        Some(dir) => {
            for f in files_under(dir) {
                let rel = f.strip_prefix(dir).unwrap_or(&f);
                ctx.update(rel.to_string_lossy().as_bytes());
                ctx.update(&[0]);
                let body = std::fs::read(&f).unwrap_or_default();
                ctx.update(&(body.len() as u64).to_be_bytes());
                ctx.update(&body);
            }
        }
        None => {
            ctx.update(b"built-in\0");
            for (name, text) in BUILTIN_RULES {
                ctx.update(name.as_bytes());
                ctx.update(&[0]);
                ctx.update(text.as_bytes());
            }
        }
    }
    ctx.finish()
        .as_ref()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
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
    /// Problems in the rule files, one per line as `file:line:column: what`.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Rules(Vec<engine::RuleError>),
    /// Symbols the code emits are missing from the table.
    #[error("{path}: missing definitions for symbols emitted by moat's checks: {}", .missing.join(", "))]
    Missing {
        /// The file.
        path: String,
        /// The undefined symbol names.
        missing: Vec<String>,
    },
}
impl From<crate::config::lists::ListError> for RulesError {
    fn from(e: crate::config::lists::ListError) -> Self {
        RulesError::Parse {
            path: e.path,
            message: e.message,
        }
    }
}
