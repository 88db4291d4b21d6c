//! Symbols (the named, scored findings of checks) and the score card that collects them.

/// One finding of a check, e.g. `SPF_FAIL` with score 5.0.
#[derive(Debug, Clone, PartialEq)]
pub struct Symbol {
    /// UPPER_SNAKE name with an area prefix.
    pub name: String,
    /// Score contribution (positive = spammy).
    pub score: f64,
    /// Optional detail for logs and headers (e.g. the DNS answer).
    pub detail: Option<String>,
}

/// All symbols of a transaction so far.
#[derive(Debug, Clone, Default)]
pub struct ScoreCard {
    /// The symbols in the order they were added.
    pub symbols: Vec<Symbol>,
}

impl ScoreCard {
    /// Adds the symbols of one stage.
    pub fn extend(&mut self, symbols: impl IntoIterator<Item = Symbol>) {
        self.symbols.extend(symbols);
    }

    /// The sum of all scores.
    pub fn total(&self) -> f64 {
        // fold from +0.0: an empty card must print as 0, not -0 (f64's Sum starts at -0.0).
        self.symbols.iter().fold(0.0, |acc, s| acc + s.score)
    }

    /// Forgets everything (new transaction).
    pub fn clear(&mut self) {
        self.symbols.clear();
    }
}
