//! `moat check --replay RECORD`: re-runs a recorded transaction (client, HELO, envelope,
//! message) through the pipeline with DNS answered only from the record, and compares the
//! verdict with the recorded one. With `--rules DIR` the comparison shows what that ruleset
//! would have decided for the same inputs.

use super::offline::{score, CheckReport, Inputs};
use crate::config::Config;
use crate::dns::replay::ReplayDns;
use crate::pipeline::{Pipeline, ScoreCard, Stage};
use crate::records::{Record, RecordDir};
use crate::verdict::Verdict;
use anyhow::{bail, Context as _};
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Symbols that come from state the record does not hold (the store's greylisting and rate
/// counts, the classifier's model as it was then): a replay runs without them and leaves
/// them out of the comparison.
const STATEFUL: &[&str] = &[
    "GREYLIST",
    "GREYLIST_PASS",
    "RATELIMIT",
    "STORE_FAIL",
    "BAYES_HAM",
    "BAYES_HAM_LIKELY",
    "BAYES_SPAM_LIKELY",
    "BAYES_SPAM",
    "BAYES_SPAM_HIGH",
];

/// Scores within this are the same (records keep scores as computed, sums may round).
const SCORE_EPSILON: f64 = 0.005;

/// Replays a record: the recorded SMTP facts and message through `pipeline`.
async fn score_record(
    pipeline: &Arc<Pipeline>,
    config: &Config,
    record: &crate::records::Record,
    raw: Option<&[u8]>,
) -> anyhow::Result<(Verdict, ScoreCard)> {
    let client: SocketAddr = record
        .client
        .parse()
        .with_context(|| format!("record: client {:?} is not an IP:port", record.client))?;
    let until = match record.stage.as_str() {
        "connect" => Stage::Connect,
        "mail" => Stage::Mail,
        "rcpt" => Stage::Rcpt,
        "data" => Stage::Data,
        other => bail!("record: unknown stage {other:?}"),
    };
    // A refused recipient was never added to the envelope; it is checked last, as it was.
    let mut rcpts = record.rcpts.clone();
    rcpts.extend(record.refused_rcpt.iter().cloned());
    let inputs = Inputs {
        client_ip: Some(client.ip()),
        helo: record.helo.as_deref(),
        mail_from: (until != Stage::Connect).then_some(record.mail_from.as_str()),
        rcpt: &rcpts,
    };
    let scored = score(pipeline, config, &inputs, raw, until).await?;
    Ok((scored.decision.verdict, scored.card))
}

/// One symbol whose presence or score differs.
#[derive(Debug, Clone, PartialEq)]
struct Change {
    name: String,
    recorded: Option<f64>,
    replayed: Option<f64>,
}

/// Replays `path`. Exit code 0 when the verdict is reproduced, 1 when it differs.
pub async fn run(mut config: Config, path: &Path, json: bool) -> anyhow::Result<CheckReport> {
    let (record, message) = RecordDir::read_file(path)?;
    if message.is_none() && record.stage == "data" {
        bail!(
            "{}: the record has no message next to it ({} is missing; records.message = false?)",
            path.display(),
            path.with_extension("eml").display()
        );
    }
    let server = ReplayDns::start(record.dns.clone())
        .await
        .context("starting the replay DNS server on 127.0.0.1")?;
    config.dns.nameservers = vec![server.addr.to_string()];
    // Unrecorded names get SERVFAIL at once; one attempt keeps a replay from retrying them.
    config.dns.attempts = 1;
    let hostname = config.hostname();
    // No store and no model: what they said depended on state the record does not hold.
    let pipeline = Arc::new(crate::app::build_pipeline(
        &config,
        &hostname,
        &crate::app::State::default(),
    )?);
    let (verdict, card) = score_record(&pipeline, &config, &record, message.as_deref()).await?;
    drop(server);

    let recorded: BTreeMap<&str, f64> = record
        .symbols
        .iter()
        .filter(|s| !STATEFUL.contains(&s.name.as_str()))
        .map(|s| (s.name.as_str(), s.score))
        .collect();
    let replayed: BTreeMap<&str, f64> = card
        .symbols
        .iter()
        .map(|s| (s.name.as_str(), s.score))
        .collect();
    let changes = diff(&recorded, &replayed);
    let stateful: Vec<&str> = record
        .symbols
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| STATEFUL.contains(n))
        .collect();
    let recorded_score = record.score
        - record
            .symbols
            .iter()
            .filter(|s| STATEFUL.contains(&s.name.as_str()))
            .map(|s| s.score)
            .sum::<f64>();
    let action = verdict.action.as_str();
    // With state-dependent symbols left out, the recorded action may rest on them: then the
    // symbols and the remaining score are what can be compared.
    let identical = changes.is_empty()
        && (action == record.action || !stateful.is_empty())
        && (verdict.score - recorded_score).abs() < SCORE_EPSILON;
    let same_ruleset = pipeline.ruleset() == record.ruleset;

    let output = if json {
        let changes: Vec<_> = changes
            .iter()
            .map(|c| json!({"name": c.name, "recorded": c.recorded, "replayed": c.replayed}))
            .collect();
        let mut text = serde_json::to_string_pretty(&json!({
            "record": record.id,
            "identical": identical,
            "ruleset": {"recorded": record.ruleset, "replayed": pipeline.ruleset()},
            "recorded": {"action": record.action, "score": record.score, "reply": record.reply},
            "replayed": {"action": action, "score": verdict.score, "reply": verdict.reply.as_ref().map(|r| r.to_string())},
            "changes": changes,
            "not_replayed": stateful,
            "dns_answers": record.dns.len(),
        }))?;
        text.push('\n');
        text
    } else {
        text_report(
            &record,
            &verdict,
            &changes,
            &stateful,
            identical,
            same_ruleset,
            pipeline.ruleset(),
        )
    };
    Ok(CheckReport {
        output,
        exit_code: if identical { 0 } else { 1 },
    })
}

fn diff(recorded: &BTreeMap<&str, f64>, replayed: &BTreeMap<&str, f64>) -> Vec<Change> {
    let mut names: Vec<&str> = recorded.keys().chain(replayed.keys()).copied().collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let (a, b) = (recorded.get(name).copied(), replayed.get(name).copied());
            let same = matches!((a, b), (Some(x), Some(y)) if (x - y).abs() < SCORE_EPSILON);
            (!same).then(|| Change {
                name: name.to_string(),
                recorded: a,
                replayed: b,
            })
        })
        .collect()
}

fn text_report(
    record: &Record,
    verdict: &crate::verdict::Verdict,
    changes: &[Change],
    stateful: &[&str],
    identical: bool,
    same_ruleset: bool,
    ruleset: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "replay of {} (client {}, from <{}>, decided at {}, {} DNS answers recorded)",
        record.id,
        record.client,
        record.mail_from,
        record.stage,
        record.dns.len()
    );
    if same_ruleset {
        let _ = writeln!(out, "ruleset:  {} (as recorded)", short(ruleset));
    } else {
        let _ = writeln!(
            out,
            "ruleset:  {} (recorded with {})",
            short(ruleset),
            short(&record.ruleset)
        );
    }
    let recorded = format!(
        "recorded: {:<10} score {:>6.2}  {}",
        record.action, record.score, record.reply
    );
    let _ = writeln!(out, "{}", recorded.trim_end());
    let replayed = format!(
        "replayed: {:<10} score {:>6.2}  {}",
        verdict.action.as_str(),
        verdict.score,
        verdict
            .reply
            .as_ref()
            .map(|r| r.to_string())
            .unwrap_or_default()
    );
    let _ = writeln!(out, "{}", replayed.trim_end());
    for c in changes {
        let line = match (c.recorded, c.replayed) {
            (None, Some(b)) => format!("  + {:<28} {b:>6.2}   (new)", c.name),
            (Some(a), None) => format!("  - {:<28} {a:>6.2}   (gone)", c.name),
            (Some(a), Some(b)) => format!("  ~ {:<28} {a:>6.2} -> {b:.2}", c.name),
            (None, None) => continue,
        };
        let _ = writeln!(out, "{line}");
    }
    if !stateful.is_empty() {
        let _ = writeln!(
            out,
            "not replayed (they depend on the store or the classifier's model): {}",
            stateful.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "result:   {}",
        if identical {
            "identical verdict"
        } else {
            "the verdict differs"
        }
    );
    out
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_new_gone_and_changed_symbols() {
        let a: BTreeMap<&str, f64> = [("A", 1.0), ("B", 2.0), ("C", 3.0)].into();
        let b: BTreeMap<&str, f64> = [("A", 1.0), ("B", 2.5), ("D", 0.5)].into();
        let d = diff(&a, &b);
        let names: Vec<_> = d.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["B", "C", "D"]);
        assert_eq!(d[0].replayed, Some(2.5));
        assert_eq!(d[1].replayed, None);
        assert_eq!(d[2].recorded, None);
        assert!(diff(&a, &a).is_empty());
    }
}
