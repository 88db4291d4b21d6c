//! Paths and parameters of MAIL and RCPT, split from the raw command line so that the parameters
//! can be checked against what moat offered and then relayed upstream unchanged.

/// One `KEY[=value]` parameter of MAIL or RCPT (RFC 5321 4.1.2 esmtp-param).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    /// The keyword, upper-cased.
    pub key: String,
    /// The raw text as the client sent it (`KEY=value`), relayed unchanged.
    pub raw: String,
}

/// Splits `MAIL FROM:<path> params` into the raw path (with brackets) and its parameters.
///
/// The path may hold a quoted local part with spaces or `>` in it, so the closing bracket is
/// found by a scan that honours quotes and backslash escapes (RFC 5321 4.1.2 Quoted-string).
pub fn split_path(line: &str) -> Option<(&str, Vec<Parameter>)> {
    let start = line.find('<')?;
    let bytes = line.as_bytes();
    let mut i = start + 1;
    let mut in_quote = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quote => i += 1,
            b'"' => in_quote = !in_quote,
            b'>' if !in_quote => break,
            _ => {}
        }
        i += 1;
    }
    if i >= bytes.len() {
        return None;
    }
    let path = &line[start..=i];
    let params = line[i + 1..]
        .split(' ')
        .filter(|p| !p.is_empty())
        .map(|raw| Parameter {
            key: raw.split('=').next().unwrap_or("").to_ascii_uppercase(),
            raw: raw.to_string(),
        })
        .collect();
    Some((path, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_params_and_honours_quotes() {
        let (path, params) =
            split_path("MAIL FROM:<\"a >b\"@x.example> SIZE=10 body=8BITMIME").unwrap();
        assert_eq!(path, "<\"a >b\"@x.example>");
        assert_eq!(params[0].key, "SIZE");
        assert_eq!(params[1].key, "BODY");
        assert_eq!(params[1].raw, "body=8BITMIME");
        assert!(split_path("MAIL FROM:<a@b").is_none());
    }
}
