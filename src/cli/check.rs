//! `moat check`: scores one message file with the same pipeline, verdict and headers as
//! `moat serve`, and prints a report or a stable JSON object.

use crate::auth::{AuthFacts, Outcome};
use crate::config::Config;
use crate::pipeline::envelope::Envelope;
use crate::verdict::headers;
use crate::pipeline::{MessageInput, ScoreCard, Stage, StageInput};
use crate::verdict;
use anyhow::{bail, Context as _};
use serde_json::json;
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

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

/// The result: what to print and the exit code (0 accept/add_header, 1 tempfail/reject).
#[derive(Debug)]
pub struct CheckReport {
    /// The text to print.
    pub output: String,
    /// The process exit code.
    pub exit_code: u8,
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

/// The SMTP facts a check runs with: from the command line, or from a record.
struct Inputs<'a> {
    client_ip: Option<IpAddr>,
    helo: Option<&'a str>,
    mail_from: Option<&'a str>,
    rcpt: &'a [String],
}

/// What the pipeline decided, with what it was decided from.
struct Scored {
    verdict: verdict::Verdict,
    card: ScoreCard,
    facts: AuthFacts,
    skipped: Vec<&'static str>,
}

/// Runs the check. Errors are usage or input errors (exit code 2).
pub async fn run(args: &CheckArgs) -> anyhow::Result<CheckReport> {
    if let Some(record) = &args.replay {
        return super::replay::run(args, record).await;
    }
    let checker = Checker::new(args).await?;
    let raw = read_message(args.file.as_ref())?;
    checker.check(args, &raw).await
}

/// The config and the pipeline `moat check` scores with, built once: a caller with many
/// messages (the conformance suites) checks them all through the same code as the command.
pub struct Checker {
    config: Config,
    pipeline: crate::pipeline::Pipeline,
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
        let pipeline = crate::app::build_pipeline(&config, &hostname, &state)?;
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
            verdict: v,
            card,
            facts,
            skipped,
        } = score(&self.pipeline, config, &inputs, Some(raw), Stage::Data).await?;
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
        let exit_code = if v.refuses() { 1 } else { 0 };
        let output = if args.json {
            json_report(
                &v,
                &card,
                &facts,
                config.verdict.add_header,
                &header_fields,
                &skipped,
            )
        } else {
            text_report(
                &v,
                &card,
                &facts,
                &header_block,
                &skipped,
                config,
                args.explain,
            )
        };
        Ok(CheckReport { output, exit_code })
    }
}

/// Replays a record: the recorded SMTP facts and message through `pipeline`.
pub(crate) async fn score_record(
    pipeline: &crate::pipeline::Pipeline,
    config: &Config,
    record: &crate::records::Record,
    raw: Option<&[u8]>,
) -> anyhow::Result<(verdict::Verdict, ScoreCard)> {
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
    Ok((scored.verdict, scored.card))
}

/// Runs every stage the inputs allow, then the data stage, and decides.
async fn score(
    pipeline: &crate::pipeline::Pipeline,
    config: &Config,
    args: &Inputs<'_>,
    raw: Option<&[u8]>,
    until: Stage,
) -> anyhow::Result<Scored> {
    let unspecified = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0);
    let client = args
        .client_ip
        .map(|ip| SocketAddr::new(ip, 0))
        .unwrap_or(unspecified);
    let mut envelope = Envelope::new(client, unspecified);
    envelope.helo = args.helo.map(str::to_string);
    envelope.esmtp = true;
    let mut facts = AuthFacts::default();
    let mut card = ScoreCard::default();
    let mut skipped: Vec<&'static str> = Vec::new();
    let done = |card: ScoreCard, facts: AuthFacts, skipped: Vec<&'static str>, at: Stage| Scored {
        verdict: verdict::decide(&card, &config.verdict, at),
        card,
        facts,
        skipped,
    };

    if args.client_ip.is_some() {
        card.extend(
            pipeline
                .run(stage(Stage::Connect, &envelope, card.total()), &mut facts)
                .await
                .symbols,
        );
        if until == Stage::Connect {
            return Ok(done(card, facts, skipped, until));
        }
        if args.helo.is_some() {
            card.extend(
                pipeline
                    .run(stage(Stage::Helo, &envelope, card.total()), &mut facts)
                    .await
                    .symbols,
            );
        } else {
            skipped.push("helo stage (no --helo)");
        }
    } else {
        skipped.push("connect and helo stages (no --client-ip)");
    }
    match (args.mail_from, args.client_ip, args.helo) {
        (Some(from), Some(_), Some(_)) => {
            envelope.sender = Some(from.to_string());
            card.extend(
                pipeline
                    .run(stage(Stage::Mail, &envelope, card.total()), &mut facts)
                    .await
                    .symbols,
            );
        }
        _ => skipped.push("mail stage and SPF (needs --client-ip, --helo and --mail-from)"),
    }
    if until == Stage::Mail {
        return Ok(done(card, facts, skipped, until));
    }
    if args.rcpt.is_empty() {
        skipped.push("rcpt stage (no --rcpt)");
    }
    for r in args.rcpt {
        let input = StageInput {
            recipient: Some(r),
            ..stage(Stage::Rcpt, &envelope, card.total())
        };
        card.extend(pipeline.run(input, &mut facts).await.symbols);
        envelope.recipients.push(r.clone());
    }
    if until == Stage::Rcpt {
        return Ok(done(card, facts, skipped, until));
    }
    let Some(raw) = raw else {
        bail!("no message to run the data stage on");
    };
    let parsed = mail_parser::MessageParser::default().parse(raw);
    let Some(parsed) = parsed else {
        bail!("the input is not a message (no header could be parsed)");
    };
    let input = StageInput {
        message: Some(MessageInput {
            raw,
            parsed: &parsed,
        }),
        ..stage(Stage::Data, &envelope, card.total())
    };
    card.extend(pipeline.run(input, &mut facts).await.symbols);
    Ok(done(card, facts, skipped, Stage::Data))
}

fn stage(stage: Stage, envelope: &Envelope, score: f64) -> StageInput<'_> {
    StageInput {
        stage,
        envelope,
        recipient: None,
        message: None,
        score,
    }
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
    skipped: &[&str],
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
        "skipped": skipped,
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
    skipped: &[&str],
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
    if !skipped.is_empty() {
        let _ = writeln!(out, "\nskipped: {}", skipped.join("; "));
    }
    let _ = write!(
        out,
        "\nheaders moat would add:\n{}",
        header_block.replace("\r\n", "\n")
    );
    out
}
