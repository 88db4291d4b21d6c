//! `moat check`: scores one message file with the same pipeline, verdict and headers as
//! `moat serve`, and prints a report or a stable JSON object.

use super::offline::{score, CheckReport, Inputs, Scored};
use crate::auth::{AuthFacts, Outcome};
use crate::config::Config;
use crate::pipeline::{Pipeline, ScoreCard, Stage};
use crate::verdict::{self, headers};
use anyhow::{bail, Context as _};
use serde_json::json;
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

/// What `moat check` was asked.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CheckArgs {
    /// Config file (default: the built-in defaults, so it works in any directory).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Nameserver IP:port (UDP and TCP); replaces dns.nameservers.
    #[arg(long, value_name = "HOST:PORT")]
    pub dns: Option<SocketAddr>,
    /// The SMTP client's IP address (needed for the connect, HELO and SPF checks).
    #[arg(long, value_name = "IP")]
    pub client_ip: Option<IpAddr>,
    /// The client's HELO name.
    #[arg(long, value_name = "NAME")]
    pub helo: Option<String>,
    /// The envelope sender; an empty string means <>.
    #[arg(long, value_name = "ADDR")]
    pub mail_from: Option<String>,
    /// An envelope recipient (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub rcpt: Vec<String>,
    /// Print a JSON object instead of the report (schema in the README).
    #[arg(long)]
    pub json: bool,
    /// Show why each symbol fired: the text a rule matched, the list that answered.
    #[arg(long)]
    pub explain: bool,
    /// Re-run a transaction record (`[records]`): its client, HELO, envelope and message, with
    /// DNS answered only from the record. Exit code 0 when the verdict is reproduced, 1 when
    /// it differs.
    #[arg(long, value_name = "RECORD.json", conflicts_with_all = ["dns", "client_ip", "helo", "mail_from", "rcpt", "file"])]
    pub replay: Option<PathBuf>,
    /// The rules directory to score with (default: the config's `rules.dir`). With --replay:
    /// shows what this ruleset decides for the recorded transaction.
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// The message file; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
}

/// Loads the config as `check` uses it: the file, or the defaults, with `--dns` applied.
pub fn load_config(args: &CheckArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            Config::parse(&text, path)?
        }
        None => Config::parse("", std::path::Path::new("(defaults)"))?,
    };
    if let Some(ns) = args.dns {
        config.dns.nameservers = vec![ns.to_string()];
    }
    if let Some(dir) = &args.rules {
        config.rules.dir = Some(dir.clone());
    }
    config.validate()?;
    Ok(config)
}

/// SMTP line ends: files from disk often have bare LF, which DKIM would hash differently.
pub fn to_crlf(raw: Vec<u8>) -> Vec<u8> {
    if !raw
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
    {
        return raw;
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn read_message(file: Option<&PathBuf>) -> anyhow::Result<Vec<u8>> {
    let raw = match file {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?
        }
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading the message from standard input")?;
            buf
        }
    };
    if raw.is_empty() {
        bail!("the message is empty");
    }
    Ok(to_crlf(raw))
}

/// Runs the check. Errors are usage or input errors (exit code 2).
pub async fn run(args: &CheckArgs) -> anyhow::Result<CheckReport> {
    if let Some(record) = &args.replay {
        return super::replay::run(load_config(args)?, record, args.json).await;
    }
    let checker = Checker::new(args).await?;
    let raw = read_message(args.file.as_ref())?;
    checker.check(args, &raw).await
}

/// The config and the pipeline `moat check` scores with, built once: a caller with many
/// messages (the conformance suites) checks them all through the same code as the command.
pub struct Checker {
    config: Config,
    pipeline: Arc<Pipeline>,
}

impl Checker {
    /// Loads the config (with `--config`, `--dns` and `--rules` applied) and builds the
    /// pipeline, as `moat serve` builds it.
    pub async fn new(args: &CheckArgs) -> anyhow::Result<Checker> {
        let config = load_config(args)?;
        let hostname = config.hostname();
        let state = crate::app::State {
            model: crate::bayes::Model::open_for_check(&config).await?,
            ..Default::default()
        };
        let pipeline = Arc::new(crate::app::build_pipeline(&config, &hostname, &state)?);
        Ok(Checker { config, pipeline })
    }

    /// Scores `raw` (CRLF line ends) with the SMTP facts of `args` (its file is not read).
    pub async fn check(&self, args: &CheckArgs, raw: &[u8]) -> anyhow::Result<CheckReport> {
        let config = &self.config;
        let inputs = Inputs {
            client_ip: args.client_ip,
            helo: args.helo.as_deref(),
            mail_from: args.mail_from.as_deref(),
            rcpt: &args.rcpt,
        };
        let Scored {
            decision,
            card,
            facts,
            skipped,
            refused_at,
        } = score(&self.pipeline, config, &inputs, Some(raw), Stage::Data).await?;
        let v = &decision.verdict;
        let serve = Notes {
            skipped: &skipped,
            refused_at,
            shadow: config.verdict.shadow && v.refuses(),
        };
        let names = card.names();
        let spam = headers::SpamInfo {
            score: v.score,
            required: config.verdict.add_header,
            flagged: v.is_spam(&config.verdict),
            tests: &names,
        };
        let auth_header = facts.message.as_ref().map(|m| m.header.as_str());
        let header_block =
            String::from_utf8_lossy(&headers::prepend(None, auth_header, &spam)).into_owned();
        let header_fields = unfold_fields(&header_block);
        // Shadow mode refuses nothing: serve accepts what the checks would refuse.
        let exit_code = if decision.refusal.is_some() { 1 } else { 0 };
        let output = if args.json {
            json_report(
                v,
                &card,
                &facts,
                config.verdict.add_header,
                &header_fields,
                &serve,
            )
        } else {
            text_report(
                v,
                &card,
                &facts,
                &header_block,
                &serve,
                config,
                args.explain,
            )
        };
        Ok(CheckReport { output, exit_code })
    }
}

/// What the report adds beyond the verdict: what was not run, and where `moat serve` would
/// have acted otherwise than the final verdict says.
struct Notes<'a> {
    /// Stages and recipients not run, and why.
    skipped: &'a [String],
    /// The first stage at which serve would have refused (check runs on to show everything).
    refused_at: Option<&'static str>,
    /// Shadow mode: serve logs the refusal and accepts.
    shadow: bool,
}

/// Splits a block of header fields into one string per field (folds kept).
fn unfold_fields(block: &str) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    for line in block.split("\r\n").filter(|l| !l.is_empty()) {
        match (line.starts_with([' ', '\t']), fields.last_mut()) {
            (true, Some(last)) => {
                last.push_str("\r\n");
                last.push_str(line);
            }
            _ => fields.push(line.to_string()),
        }
    }
    fields
}

fn json_report(
    v: &verdict::Verdict,
    card: &ScoreCard,
    facts: &AuthFacts,
    required: f64,
    header_fields: &[String],
    serve: &Notes<'_>,
) -> String {
    let symbols: Vec<_> = card
        .symbols
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "score": s.score,
                "stage": s.stage.as_str(),
                "detail": s.detail.clone().unwrap_or_default(),
            })
        })
        .collect();
    let spf = match &facts.spf {
        Some(s) => json!({
            "result": s.mail_from.outcome.as_str(),
            "domain": s.mail_from.domain,
            "explanation": s.mail_from.explanation,
            "detail": s.mail_from.detail,
            "helo": {"result": s.helo.outcome.as_str(), "domain": s.helo.domain},
        }),
        None => json!({"result": Outcome::None.as_str(), "domain": ""}),
    };
    let (dkim, dmarc, arc) = match &facts.message {
        Some(m) => (
            m.dkim
                .iter()
                .map(|d| json!({"result": d.outcome.as_str(), "domain": d.domain, "selector": d.selector}))
                .collect::<Vec<_>>(),
            json!({"result": m.dmarc.outcome.as_str(), "policy": m.dmarc.policy, "domain": m.dmarc.domain}),
            json!({"result": m.arc.outcome.as_str(), "detail": m.arc.detail}),
        ),
        None => (
            Vec::new(),
            json!({"result": "none", "policy": "none", "domain": ""}),
            json!({"result": "none"}),
        ),
    };
    let report = json!({
        "action": v.action.as_str(),
        "score": round1(v.score),
        "required": required,
        "symbols": symbols,
        "spf": spf,
        "dkim": dkim,
        "dmarc": dmarc,
        "arc": arc,
        "headers": header_fields,
        "skipped": serve.skipped,
        "refused_at": serve.refused_at,
        "shadow": serve.shadow,
    });
    let mut text = serde_json::to_string_pretty(&report).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn text_report(
    v: &verdict::Verdict,
    card: &ScoreCard,
    facts: &AuthFacts,
    header_block: &str,
    serve: &Notes<'_>,
    config: &Config,
    explain: bool,
) -> String {
    let required = config.verdict.add_header;
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "action: {}   score: {:.1}   (flag at {:.1}, reject at {:.1})",
        v.action.as_str(),
        v.score,
        required,
        config.verdict.reject
    );
    if let Some(r) = &v.reply {
        let _ = writeln!(out, "reply:  {r}");
    }
    if let Some(f) = &v.forced_by {
        let _ = writeln!(out, "forced by: {f}");
    }
    if let Some(stage) = serve.refused_at.filter(|s| *s != "data") {
        let _ = writeln!(
            out,
            "serve:  refuses at {stage} (the later stages are shown anyway)"
        );
    }
    if serve.shadow {
        let _ = writeln!(
            out,
            "serve:  shadow mode: logged as \"would refuse\", accepted"
        );
    }
    let _ = writeln!(out, "\nsymbols:");
    for s in &card.symbols {
        let _ = writeln!(
            out,
            "  {:>6.1}  {:<26} [{}] {}",
            s.score,
            s.name,
            s.stage.as_str(),
            s.description
        );
        if let (true, Some(d)) = (explain, &s.detail) {
            let _ = writeln!(out, "          {:<26} why: {d}", "");
        }
    }
    if card.symbols.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    if let Some(m) = &facts.message {
        let _ = writeln!(out, "\nauthentication:");
        if let Some(s) = &facts.spf {
            let _ = writeln!(
                out,
                "  spf    {} ({})",
                s.mail_from.outcome.as_str(),
                s.mail_from.domain
            );
        }
        for d in &m.dkim {
            let _ = writeln!(
                out,
                "  dkim   {} (d={} s={})",
                d.outcome.as_str(),
                d.domain,
                d.selector
            );
        }
        let _ = writeln!(out, "  arc    {}", m.arc.outcome.as_str());
        let _ = writeln!(
            out,
            "  dmarc  {} (domain {}, p={})",
            m.dmarc.outcome.as_str(),
            m.dmarc.domain,
            m.dmarc.policy
        );
    }
    if !serve.skipped.is_empty() {
        let _ = writeln!(out, "\nskipped: {}", serve.skipped.join("; "));
    }
    let _ = write!(
        out,
        "\nheaders moat would add:\n{}",
        header_block.replace("\r\n", "\n")
    );
    out
}
