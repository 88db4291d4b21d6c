//! `rules/symbols.toml`: the scores and descriptions of the symbols moat's code emits. Scores
//! live here, never in Rust literals, so admins tune them like any rule.

use super::RulesError;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// The built-in table, the same file as the shipped `rules/symbols.toml`.
const BUILTIN: &str = include_str!("../../rules/symbols.toml");

/// One symbol's definition.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SymbolDef {
    /// Score added when the symbol fires.
    pub score: f64,
    /// One line for reports.
    pub description: std::sync::Arc<str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    symbol: HashMap<String, SymbolDef>,
}

/// Symbol name -> definition.
#[derive(Debug, Clone, Default)]
pub struct SymbolTable {
    defs: HashMap<String, SymbolDef>,
    /// Where the table came from (for messages).
    pub source: String,
}

impl SymbolTable {
    /// Loads `DIR/symbols.toml`, or the built-in table when `dir` is `None` or has no
    /// symbols.toml (scores can still be overridden in the rule files' `[score]` tables).
    pub fn load(dir: Option<&Path>) -> Result<SymbolTable, RulesError> {
        match dir.filter(|d| d.join("symbols.toml").is_file()) {
            Some(dir) => {
                let path = dir.join("symbols.toml");
                let label = path.display().to_string();
                let text = std::fs::read_to_string(&path).map_err(|source| RulesError::Read {
                    path: label.clone(),
                    source,
                })?;
                Self::parse(&text, &label)
            }
            None => Self::parse(BUILTIN, "built-in rules/symbols.toml"),
        }
    }

    /// Parses the TOML text; `label` names it in errors.
    pub fn parse(text: &str, label: &str) -> Result<SymbolTable, RulesError> {
        let file: File = toml::from_str(text).map_err(|e| RulesError::Parse {
            path: label.to_string(),
            message: crate::config::describe_toml_error(&e, text),
        })?;
        for (name, def) in &file.symbol {
            if !def.score.is_finite() {
                return Err(RulesError::Parse {
                    path: label.to_string(),
                    message: format!("symbol.{name}.score: not a finite number"),
                });
            }
        }
        Ok(SymbolTable {
            defs: file.symbol,
            source: label.to_string(),
        })
    }

    /// Checks that every name in `emitted` is defined.
    pub fn require(&self, emitted: &[&str]) -> Result<(), RulesError> {
        let mut missing: Vec<String> = emitted
            .iter()
            .filter(|n| !self.defs.contains_key(**n))
            .map(|n| n.to_string())
            .collect();
        missing.sort();
        missing.dedup();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(RulesError::Missing {
                path: self.source.clone(),
                missing,
            })
        }
    }

    /// Every defined name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.defs.keys().map(String::as_str)
    }

    /// Applies `[score]` overrides from the rule files (local.toml).
    pub fn apply_overrides(&mut self, scores: &std::collections::BTreeMap<String, f64>) {
        for (name, score) in scores {
            if let Some(def) = self.defs.get_mut(name) {
                def.score = *score;
            }
        }
    }

    /// The definition of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&SymbolDef> {
        self.defs.get(name)
    }

    /// The score of `name`; an undefined name scores 0 (`require` prevents that at start-up).
    pub fn score(&self, name: &str) -> f64 {
        self.defs.get(name).map(|d| d.score).unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_parses_and_errors_name_the_line() {
        let t = SymbolTable::load(None).unwrap();
        assert_eq!(t.score("SPF_PASS"), -0.5);
        let err = SymbolTable::parse("[symbol.X]\nscore = 1\n", "s.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml: line 1"), "{err}");
        let err = t
            .require(&["SPF_PASS", "NOPE_SYM"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("NOPE_SYM") && !err.contains("SPF_PASS"),
            "{err}"
        );
    }
}
