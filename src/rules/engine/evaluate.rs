//! Evaluation: a message (and its envelope) against the compiled rules, meta rules last.

use super::*;

impl CompiledRules {
    /// Number of rules (helpers included).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Evaluates the rules on a message; returns the hits of scoring rules (not `__` helpers).
    pub fn evaluate(&self, v: &View<'_>) -> Vec<Hit> {
        let mut hits: HashMap<usize, Option<String>> = HashMap::new();
        let root = v.parsed.root_part();
        let mut header_text: HashMap<String, Vec<String>> = HashMap::new();
        let mut all = String::new();
        for h in root.headers() {
            let name = h.raw_name().to_ascii_lowercase();
            let value = h
                .parse_as(mail_parser::HeaderForm::Text)
                .value()
                .as_text()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(h.raw_value()).trim().to_string());
            all.push_str(h.raw_name());
            all.push_str(": ");
            all.push_str(&value);
            all.push('\n');
            header_text.entry(name).or_default().push(value);
        }
        for (name, scanner) in &self.headers {
            for value in header_text.get(name).map(Vec::as_slice).unwrap_or(&[]) {
                scanner.scan(value, &mut hits);
            }
        }
        if let Some(s) = &self.all_headers {
            s.scan(&all, &mut hits);
        }
        for (name, want, rule) in &self.exists {
            if header_text.contains_key(name) == *want {
                hits.insert(*rule, None);
            }
        }
        for (kind, scanner) in &self.kinds {
            match kind {
                Kind::Body => {
                    let body: String = v.parsed.text_bodies().collect::<Vec<_>>().join("\n");
                    scanner.scan(&body, &mut hits);
                }
                Kind::Rawbody => {
                    let start = (root.offset_body() as usize).min(v.raw.len());
                    scanner.scan(
                        &String::from_utf8_lossy(
                            &v.raw[start..v.raw.len().min(start + SCAN_LIMIT)],
                        ),
                        &mut hits,
                    );
                }
                Kind::Full => scanner.scan(
                    &String::from_utf8_lossy(&v.raw[..v.raw.len().min(SCAN_LIMIT)]),
                    &mut hits,
                ),
                Kind::Uri => {
                    for url in crate::rules::message::urls(v.parsed) {
                        scanner.scan(&url, &mut hits);
                    }
                }
                Kind::Attachment => {
                    for a in v.parsed.attachments() {
                        if let Some(name) = a.attachment_name() {
                            scanner.scan(name, &mut hits);
                        }
                    }
                }
                _ => {}
            }
        }
        for (field, scanner) in &self.envelope {
            match field {
                EnvField::Helo => scanner.scan(v.helo, &mut hits),
                EnvField::Sender => scanner.scan(v.sender, &mut hits),
                EnvField::ClientName => scanner.scan(v.client_name, &mut hits),
                EnvField::Recipients => {
                    for r in v.recipients {
                        scanner.scan(r, &mut hits);
                    }
                }
            }
        }
        let multipart = root.is_multipart();
        hits.retain(|i, _| self.rules[*i].multipart.is_none_or(|m| m == multipart));
        for (i, expr) in &self.metas {
            let names: HashSet<&str> = hits.keys().map(|k| self.rules[*k].name.as_str()).collect();
            if expr.eval(&|n| names.contains(n)) != 0
                && self.rules[*i].multipart.is_none_or(|m| m == multipart)
            {
                hits.insert(*i, None);
            }
        }
        let mut out: Vec<(usize, Hit)> = hits
            .into_iter()
            .filter(|(i, _)| !self.rules[*i].name.starts_with("__"))
            .map(|(i, matched)| {
                let r = &self.rules[i];
                (
                    i,
                    Hit {
                        name: r.name.clone(),
                        score: r.score,
                        description: r.description.clone(),
                        matched,
                    },
                )
            })
            .collect();
        out.sort_by_key(|(i, _)| *i);
        out.into_iter().map(|(_, h)| h).collect()
    }
}
