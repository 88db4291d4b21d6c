//! Meta rule expressions: `A && (B || !C)`, and counting such as `(A + B + C) >= 2`.
//! Parsed once per ruleset into a small tree; evaluated on each message against the hits of
//! the rules it names. No I/O.

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A rule name: 1 when it hit, else 0.
    Rule(String),
    /// An integer constant.
    Num(i64),
    /// Logical not.
    Not(Box<Expr>),
    /// Logical and.
    And(Box<Expr>, Box<Expr>),
    /// Logical or.
    Or(Box<Expr>, Box<Expr>),
    /// Sum (counting rules).
    Add(Box<Expr>, Box<Expr>),
    /// Comparison.
    Cmp(Box<Expr>, CmpOp, Box<Expr>),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(i64),
    And,
    Or,
    Not,
    Plus,
    LParen,
    RParen,
    Cmp(CmpOp),
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        let two = b.get(i..i + 2).unwrap_or(&[]);
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                out.push(Tok::LParen);
                i += 1
            }
            b')' => {
                out.push(Tok::RParen);
                i += 1
            }
            b'+' => {
                out.push(Tok::Plus);
                i += 1
            }
            _ if two == b"&&" => {
                out.push(Tok::And);
                i += 2
            }
            _ if two == b"||" => {
                out.push(Tok::Or);
                i += 2
            }
            _ if two == b">=" => {
                out.push(Tok::Cmp(CmpOp::Ge));
                i += 2
            }
            _ if two == b"<=" => {
                out.push(Tok::Cmp(CmpOp::Le));
                i += 2
            }
            _ if two == b"==" => {
                out.push(Tok::Cmp(CmpOp::Eq));
                i += 2
            }
            _ if two == b"!=" => {
                out.push(Tok::Cmp(CmpOp::Ne));
                i += 2
            }
            b'>' => {
                out.push(Tok::Cmp(CmpOp::Gt));
                i += 1
            }
            b'<' => {
                out.push(Tok::Cmp(CmpOp::Lt));
                i += 1
            }
            b'!' => {
                out.push(Tok::Not);
                i += 1
            }
            b'0'..=b'9' => {
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                out.push(Tok::Num(s[start..i].parse().map_err(|_| {
                    format!("number too large at column {}", start + 1)
                })?));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Tok::Ident(s[start..i].to_string()));
            }
            _ => return Err(format!("unexpected {:?} at column {}", c as char, i + 1)),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.next();
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.cmp()?;
        while self.peek() == Some(&Tok::And) {
            self.next();
            e = Expr::And(Box::new(e), Box::new(self.cmp()?));
        }
        Ok(e)
    }
    fn cmp(&mut self) -> Result<Expr, String> {
        let e = self.sum()?;
        if let Some(Tok::Cmp(op)) = self.peek().cloned() {
            self.next();
            return Ok(Expr::Cmp(Box::new(e), op, Box::new(self.sum()?)));
        }
        Ok(e)
    }
    fn sum(&mut self) -> Result<Expr, String> {
        let mut e = self.unary()?;
        while self.peek() == Some(&Tok::Plus) {
            self.next();
            e = Expr::Add(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }
    fn unary(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Not) => Ok(Expr::Not(Box::new(self.unary()?))),
            Some(Tok::Ident(n)) => Ok(Expr::Rule(n)),
            Some(Tok::Num(n)) => Ok(Expr::Num(n)),
            Some(Tok::LParen) => {
                let e = self.or()?;
                match self.next() {
                    Some(Tok::RParen) => Ok(e),
                    _ => Err("missing ')'".into()),
                }
            }
            Some(t) => Err(format!("unexpected {t:?}")),
            None => Err("expression ends too early".into()),
        }
    }
}

/// Parses an expression; the error says what is wrong.
pub fn parse(s: &str) -> Result<Expr, String> {
    let toks = lex(s)?;
    if toks.is_empty() {
        return Err("empty expression".into());
    }
    let mut p = Parser { toks, pos: 0 };
    let e = p.or()?;
    if p.pos < p.toks.len() {
        return Err(format!(
            "unexpected {:?} after a complete expression",
            p.toks[p.pos]
        ));
    }
    Ok(e)
}

impl Expr {
    /// Every rule name the expression uses.
    pub fn names(&self, out: &mut Vec<String>) {
        match self {
            Expr::Rule(n) => out.push(n.clone()),
            Expr::Num(_) => {}
            Expr::Not(e) => e.names(out),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Add(a, b) | Expr::Cmp(a, _, b) => {
                a.names(out);
                b.names(out);
            }
        }
    }

    /// The value given which rules hit (`hit(name)`); non-zero is true.
    pub fn eval(&self, hit: &dyn Fn(&str) -> bool) -> i64 {
        match self {
            Expr::Rule(n) => i64::from(hit(n)),
            Expr::Num(n) => *n,
            Expr::Not(e) => i64::from(e.eval(hit) == 0),
            Expr::And(a, b) => i64::from(a.eval(hit) != 0 && b.eval(hit) != 0),
            Expr::Or(a, b) => i64::from(a.eval(hit) != 0 || b.eval(hit) != 0),
            Expr::Add(a, b) => a.eval(hit).saturating_add(b.eval(hit)),
            Expr::Cmp(a, op, b) => {
                let (x, y) = (a.eval(hit), b.eval(hit));
                i64::from(match op {
                    CmpOp::Gt => x > y,
                    CmpOp::Ge => x >= y,
                    CmpOp::Lt => x < y,
                    CmpOp::Le => x <= y,
                    CmpOp::Eq => x == y,
                    CmpOp::Ne => x != y,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_counting() {
        let hits = ["A", "C"];
        let hit = |n: &str| hits.contains(&n);
        assert_eq!(parse("A && B || C").unwrap().eval(&hit), 1);
        assert_eq!(parse("A && (B || !C)").unwrap().eval(&hit), 0);
        assert_eq!(parse("(A + B + C) >= 2").unwrap().eval(&hit), 1);
        assert_eq!(parse("A + B + C > 2").unwrap().eval(&hit), 0);
        assert_eq!(parse("!B").unwrap().eval(&hit), 1);
        let mut names = Vec::new();
        parse("(A + __B) >= 1 && !C").unwrap().names(&mut names);
        assert_eq!(names, vec!["A", "__B", "C"]);
    }

    #[test]
    fn errors() {
        assert!(parse("A &&").is_err());
        assert!(parse("(A || B").unwrap_err().contains("')'"));
        assert!(parse("A & B").unwrap_err().contains("column 3"));
        assert!(parse("A B").is_err());
        assert!(parse("").is_err());
    }
}
