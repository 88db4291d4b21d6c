//! Symbols (the named, scored findings of checks), the actions a check may force, and the score
//! card that collects them.

use crate::rules::SymbolTable;
use crate::smtp::reply::Reply;
use std::sync::Arc;

/// The SMTP stages at which checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The client connected (before the greeting).
    Connect,
    /// HELO/EHLO was given.
    Helo,
    /// MAIL FROM was given.
    Mail,
    /// One RCPT TO was given.
    Rcpt,
    /// The whole message was read.
    Data,
}

impl Stage {
    /// The lower-case name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
        }
    }
}

/// What to do with a transaction, from mildest to strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Pass it on unchanged (apart from the informational headers).
    Accept,
    /// Pass it on flagged as spam (`X-Spam-Flag: YES`).
    AddHeader,
    /// Defer with a 4xx; the sender retries.
    Tempfail,
    /// Refuse with a 5xx.
    Reject,
}

impl Action {
    /// The lower-case name used in logs, headers and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::AddHeader => "add_header",
            Action::Tempfail => "tempfail",
            Action::Reject => "reject",
        }
    }
}

/// An action a check imposes whatever the score (e.g. a DMARC p=reject), with its reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Forced {
    /// The action.
    pub action: Action,
    /// The reply for tempfail/reject (RFC 7372 codes where they apply).
    pub reply: Option<Reply>,
    /// An admin's allow or deny list entry: decides alone, over scores and other checks.
    pub absolute: bool,
}

/// One finding of a check, e.g. `SPF_FAIL` with score 3.0.
#[derive(Debug, Clone, PartialEq)]
pub struct Symbol {
    /// UPPER_SNAKE name with an area prefix.
    pub name: String,
    /// Score contribution (positive = spammy), from `rules/symbols.toml`.
    pub score: f64,
    /// The one-line description from `rules/symbols.toml`.
    pub description: Arc<str>,
    /// The stage that produced it.
    pub stage: Stage,
    /// Optional detail for logs and reports (e.g. the domain or the DNS answer).
    pub detail: Option<String>,
    /// An action forced regardless of the score.
    pub forced: Option<Forced>,
}

impl Symbol {
    /// A symbol scored from the table.
    pub fn new(table: &SymbolTable, name: &str, stage: Stage, detail: Option<String>) -> Symbol {
        let def = table.get(name);
        Symbol {
            name: name.to_string(),
            score: def.map(|d| d.score).unwrap_or(0.0),
            description: def
                .map(|d| d.description.clone())
                .unwrap_or_else(|| Arc::from("")),
            stage,
            detail,
            forced: None,
        }
    }

    /// The same symbol forcing an action.
    pub fn forcing(mut self, action: Action, reply: Option<Reply>) -> Symbol {
        self.forced = Some(Forced {
            action,
            reply,
            absolute: false,
        });
        self
    }

    /// The same symbol deciding the transaction alone (allow and deny lists).
    pub fn absolute(mut self, action: Action, reply: Option<Reply>) -> Symbol {
        self.forced = Some(Forced {
            action,
            reply,
            absolute: true,
        });
        self
    }
}

/// True when `symbols` hold an allow-list entry and no deny-list entry.
pub fn allowed(symbols: &[Symbol]) -> bool {
    let absolute = |a: Action| {
        symbols.iter().any(|s| {
            s.forced
                .as_ref()
                .is_some_and(|f| f.absolute && f.action == a)
        })
    };
    absolute(Action::Accept) && !absolute(Action::Reject)
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

    /// True when an allow-list entry accepted the transaction (and no deny entry refused it).
    pub fn allowed(&self) -> bool {
        allowed(&self.symbols)
    }

    /// The names, for logs and X-Spam-Status.
    pub fn names(&self) -> Vec<&str> {
        self.symbols.iter().map(|s| s.name.as_str()).collect()
    }
}
