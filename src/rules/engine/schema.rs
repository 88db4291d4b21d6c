//! The rule-file schema as serde reads it, and the errors that point into a file.

use super::*;

/// What a rule looks at.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A named header, decoded (RFC 2047), every occurrence; `ALL` is the whole header block.
    Header,
    /// The decoded text of the text parts, HTML turned into text.
    Body,
    /// The body as sent (transfer encodings not undone).
    Rawbody,
    /// Each URL found in the text parts.
    Uri,
    /// The whole raw message.
    Full,
    /// An envelope field: helo, sender, recipients, client_name.
    Envelope,
    /// File names of attachments, decoded.
    Attachment,
    /// A boolean or counting expression over other rules.
    Meta,
}

/// The envelope fields an `envelope` rule can look at.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum EnvField {
    /// The HELO/EHLO name.
    Helo,
    /// The envelope sender.
    Sender,
    /// Each recipient.
    Recipients,
    /// The client's verified reverse DNS name (empty when it has none).
    ClientName,
}

/// One rule as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    /// What it looks at.
    pub kind: Kind,
    /// For `header`: the header name, or `ALL`.
    pub header: Option<String>,
    /// For `header`: match when the header is present (`true`) or absent (`false`) instead of
    /// a regex.
    pub exists: Option<bool>,
    /// For `envelope`: the field.
    pub field: Option<EnvField>,
    /// The regex (Rust syntax).
    pub regex: Option<String>,
    /// Case-insensitive matching.
    #[serde(default)]
    pub nocase: bool,
    /// For `meta`: the expression.
    pub expr: Option<String>,
    /// The score; required unless the name starts with `__`.
    pub score: Option<f64>,
    /// One line for reports.
    #[serde(default)]
    pub description: String,
    /// Only on multipart (`true`) or single-part (`false`) messages.
    pub multipart: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleFile {
    #[serde(default)]
    pub(super) rule: BTreeMap<String, RuleDef>,
    /// Score overrides for rules (and for the symbols in symbols.toml).
    #[serde(default)]
    pub(super) score: BTreeMap<String, f64>,
    /// Rules switched off.
    #[serde(default)]
    pub(super) disabled: Vec<String>,
}

/// A rule file's name and text, as the loader read it.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file name for messages, e.g. `rules/20-body.toml`.
    pub label: String,
    /// Its contents.
    pub text: String,
}

/// One problem in the rule files: `file:line:column: what`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The file.
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// What is wrong, naming the rule.
    pub message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.file, self.message),
            (l, 0) => write!(f, "{}:{l}: {}", self.file, self.message),
            (l, c) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
        }
    }
}

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// The line of `[rule.NAME]` in a file, for errors about a rule.
pub(super) fn rule_line(text: &str, name: &str) -> usize {
    let needle = format!("[rule.{name}]");
    text.lines()
        .position(|l| l.trim_start().starts_with(&needle))
        .map(|i| i + 1)
        .unwrap_or(0)
}

pub(super) fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !n.starts_with(|c: char| c.is_ascii_digit())
}
