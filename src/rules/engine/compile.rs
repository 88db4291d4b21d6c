//! Validation and compilation: rule files in, a [`CompiledRules`] out, every problem reported.

use super::scan::*;
use super::schema::*;
use super::*;

/// Parses, validates and compiles rule files (given in load order). `symbols` are the names
/// code emits, which `[score]` may override. Returns every problem found, not just the first.
pub fn compile(
    sources: &[Source],
    symbols: &HashSet<String>,
) -> Result<CompiledRules, Vec<RuleError>> {
    let mut errors = Vec::new();
    let mut defs: Vec<(String, RuleDef, usize)> = Vec::new(); // name, def, source index
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut overrides: Vec<(String, f64, usize)> = Vec::new();
    let mut disabled: Vec<(String, usize)> = Vec::new();
    for (si, src) in sources.iter().enumerate() {
        let file: RuleFile = match toml::from_str(&src.text) {
            Ok(f) => f,
            Err(e) => {
                let (line, column) = e
                    .span()
                    .map(|s| line_col(&src.text, s.start))
                    .unwrap_or((0, 0));
                errors.push(RuleError {
                    file: src.label.clone(),
                    line,
                    column,
                    message: e.message().trim().to_string(),
                });
                continue;
            }
        };
        for (name, def) in file.rule {
            let line = rule_line(&src.text, &name);
            let err = |message: String| RuleError {
                file: src.label.clone(),
                line,
                column: 0,
                message,
            };
            if let Some(prev) = seen.get(&name) {
                errors.push(err(format!(
                    "rule {name}: defined twice (also in {})",
                    sources[*prev].label
                )));
                continue;
            }
            seen.insert(name.clone(), si);
            if !valid_name(&name) {
                errors.push(err(format!(
                    "rule {name}: names are UPPER_SNAKE (A-Z, 0-9, _)"
                )));
            }
            let helper = name.starts_with("__");
            match (helper, def.score) {
                (false, None) => errors.push(err(format!(
                    "rule {name}: no score (every rule states its score)"
                ))),
                (true, Some(s)) if s != 0.0 => errors.push(err(format!(
                    "rule {name}: helper rules (__) carry no score"
                ))),
                (_, Some(s)) if !s.is_finite() => {
                    errors.push(err(format!("rule {name}: score is not a number")))
                }
                _ => {}
            }
            let need = |ok: bool, what: &str, errors: &mut Vec<RuleError>| {
                if !ok {
                    errors.push(err(format!("rule {name}: {what}")));
                }
            };
            match def.kind {
                Kind::Meta => {
                    need(def.expr.is_some(), "a meta rule needs expr", &mut errors);
                    need(def.regex.is_none(), "a meta rule has no regex", &mut errors);
                }
                Kind::Header => {
                    need(
                        def.header.is_some(),
                        "a header rule needs header",
                        &mut errors,
                    );
                    need(
                        def.regex.is_some() != def.exists.is_some(),
                        "a header rule needs either regex or exists",
                        &mut errors,
                    );
                }
                Kind::Envelope => {
                    need(
                        def.field.is_some(),
                        "an envelope rule needs field",
                        &mut errors,
                    );
                    need(
                        def.regex.is_some(),
                        "an envelope rule needs regex",
                        &mut errors,
                    );
                }
                _ => need(def.regex.is_some(), "needs regex", &mut errors),
            }
            if let Some(re) = &def.regex {
                if let Err(e) = RegexBuilder::new(re).size_limit(REGEX_SIZE_LIMIT).build() {
                    let first = e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    errors.push(err(format!("rule {name}: bad regex: {first}")));
                }
            }
            defs.push((name, def, si));
        }
        for (name, score) in file.score {
            overrides.push((name, score, si));
        }
        for name in file.disabled {
            disabled.push((name, si));
        }
    }
    // Overrides and disabling, in load order (local.toml last wins).
    let mut symbol_scores = BTreeMap::new();
    let mut scores: HashMap<String, f64> = HashMap::new();
    for (name, score, si) in overrides {
        let err = |m: String| RuleError {
            file: sources[si].label.clone(),
            line: 0,
            column: 0,
            message: m,
        };
        if !score.is_finite() {
            errors.push(err(format!("score.{name}: not a number")));
        } else if seen.contains_key(&name) {
            scores.insert(name, score);
        } else if symbols.contains(&name) {
            symbol_scores.insert(name, score);
        } else {
            errors.push(err(format!("score.{name}: no rule or symbol of that name")));
        }
    }
    let mut off: HashSet<String> = HashSet::new();
    for (name, si) in disabled {
        if seen.contains_key(&name) {
            off.insert(name);
        } else {
            errors.push(RuleError {
                file: sources[si].label.clone(),
                line: 0,
                column: 0,
                message: format!("disabled: no rule named {name}"),
            });
        }
    }
    defs.retain(|(n, _, _)| !off.contains(n));

    let index: HashMap<String, usize> = defs
        .iter()
        .enumerate()
        .map(|(i, (n, _, _))| (n.clone(), i))
        .collect();
    let mut rules = Vec::with_capacity(defs.len());
    let mut metas: Vec<(usize, Expr)> = Vec::new();
    let mut by_header: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
    let mut all_headers = Vec::new();
    let mut exists = Vec::new();
    let mut by_kind: BTreeMap<u8, (Kind, Vec<Pending>)> = BTreeMap::new();
    let mut by_field: BTreeMap<u8, (EnvField, Vec<Pending>)> = BTreeMap::new();
    for (i, (name, def, si)) in defs.iter().enumerate() {
        rules.push(Rule {
            name: name.clone(),
            score: scores.get(name).copied().or(def.score).unwrap_or(0.0),
            description: def.description.clone(),
            kind: def.kind,
            multipart: def.multipart,
        });
        let regex = def.regex.clone().unwrap_or_default();
        match def.kind {
            Kind::Meta => match def.expr.as_deref().map(meta::parse) {
                Some(Ok(e)) => {
                    let mut names = Vec::new();
                    e.names(&mut names);
                    for n in names {
                        if !index.contains_key(&n) && !off.contains(&n) {
                            errors.push(RuleError {
                                file: sources[*si].label.clone(),
                                line: rule_line(&sources[*si].text, name),
                                column: 0,
                                message: format!("rule {name}: expr names unknown rule {n}"),
                            });
                        }
                    }
                    metas.push((i, e));
                }
                Some(Err(why)) => errors.push(RuleError {
                    file: sources[*si].label.clone(),
                    line: rule_line(&sources[*si].text, name),
                    column: 0,
                    message: format!("rule {name}: bad expr: {why}"),
                }),
                None => {}
            },
            Kind::Header => {
                let h = def.header.clone().unwrap_or_default().to_ascii_lowercase();
                match def.exists {
                    Some(want) => exists.push((h, want, i)),
                    None if h == "all" => all_headers.push((i, regex, def.nocase)),
                    None => by_header.entry(h).or_default().push((i, regex, def.nocase)),
                }
            }
            Kind::Envelope => {
                let f = def.field.unwrap_or(EnvField::Helo);
                by_field
                    .entry(f as u8)
                    .or_insert((f, Vec::new()))
                    .1
                    .push((i, regex, def.nocase));
            }
            k => by_kind
                .entry(k as u8)
                .or_insert((k, Vec::new()))
                .1
                .push((i, regex, def.nocase)),
        }
    }
    // Meta rules may use meta rules: order them so each comes after what it names, and refuse
    // cycles (they would never settle).
    let metas = match order_metas(metas, &rules) {
        Ok(m) => m,
        Err(cycle) => {
            errors.push(RuleError {
                file: "rules".into(),
                line: 0,
                column: 0,
                message: format!("meta rules form a cycle: {}", cycle.join(" -> ")),
            });
            Vec::new()
        }
    };
    if !errors.is_empty() {
        errors.sort_by(|a, b| (a.file.as_str(), a.line).cmp(&(b.file.as_str(), b.line)));
        return Err(errors);
    }
    let compile_err = |e: String| {
        vec![RuleError {
            file: "rules".into(),
            line: 0,
            column: 0,
            message: format!("cannot compile the rule regexes together: {e}"),
        }]
    };
    let mut headers = Vec::new();
    for (h, entries) in by_header {
        if let Some(s) = Scanner::build(entries).map_err(compile_err)? {
            headers.push((h, s));
        }
    }
    let mut kinds = Vec::new();
    for (_, (k, entries)) in by_kind {
        if let Some(s) = Scanner::build(entries).map_err(compile_err)? {
            kinds.push((k, s));
        }
    }
    let mut envelope = Vec::new();
    for (_, (f, entries)) in by_field {
        if let Some(s) = Scanner::build(entries).map_err(compile_err)? {
            envelope.push((f, s));
        }
    }
    Ok(CompiledRules {
        rules,
        headers,
        all_headers: Scanner::build(all_headers).map_err(compile_err)?,
        exists,
        kinds,
        envelope,
        metas,
        symbol_scores,
    })
}

fn order_metas(
    metas: Vec<(usize, Expr)>,
    rules: &[Rule],
) -> Result<Vec<(usize, Expr)>, Vec<String>> {
    let name_of: HashMap<&str, usize> = metas
        .iter()
        .map(|(i, _)| (rules[*i].name.as_str(), *i))
        .collect();
    let deps: HashMap<usize, Vec<usize>> = metas
        .iter()
        .map(|(i, e)| {
            let mut names = Vec::new();
            e.names(&mut names);
            (
                *i,
                names
                    .iter()
                    .filter_map(|n| name_of.get(n.as_str()).copied())
                    .collect(),
            )
        })
        .collect();
    let mut order = Vec::new();
    let mut state: HashMap<usize, u8> = HashMap::new(); // 1 visiting, 2 done
    fn visit(
        i: usize,
        deps: &HashMap<usize, Vec<usize>>,
        state: &mut HashMap<usize, u8>,
        order: &mut Vec<usize>,
        path: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        match state.get(&i) {
            Some(2) => return Ok(()),
            Some(1) => {
                let start = path.iter().position(|&p| p == i).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(i);
                return Err(cycle);
            }
            _ => {}
        }
        state.insert(i, 1);
        path.push(i);
        for &d in deps.get(&i).map(Vec::as_slice).unwrap_or(&[]) {
            visit(d, deps, state, order, path)?;
        }
        path.pop();
        state.insert(i, 2);
        order.push(i);
        Ok(())
    }
    let mut keys: Vec<usize> = deps.keys().copied().collect();
    keys.sort();
    for i in keys {
        visit(i, &deps, &mut state, &mut order, &mut Vec::new())
            .map_err(|c| c.iter().map(|&i| rules[i].name.clone()).collect::<Vec<_>>())?;
    }
    let mut by_idx: HashMap<usize, Expr> = metas.into_iter().collect();
    Ok(order
        .into_iter()
        .filter_map(|i| by_idx.remove(&i).map(|e| (i, e)))
        .collect())
}
