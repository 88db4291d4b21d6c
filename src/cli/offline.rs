//! The offline walk through the stages that `moat check` and `moat check --replay` share: the
//! SMTP facts they have, run through the same [`Driver`] as `moat serve`.

use crate::auth::AuthFacts;
use crate::config::Config;
use crate::pipeline::driver::{Decision, Driver};
use crate::pipeline::envelope::Envelope;
use crate::pipeline::{MessageInput, Pipeline, ScoreCard, Stage};
use anyhow::bail;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The result: what to print and the exit code (0 accept/add_header, 1 tempfail/reject).
#[derive(Debug)]
pub struct CheckReport {
    /// The text to print.
    pub output: String,
    /// The process exit code.
    pub exit_code: u8,
}

/// The SMTP facts a check runs with: from the command line, or from a record.
pub(super) struct Inputs<'a> {
    pub(super) client_ip: Option<IpAddr>,
    pub(super) helo: Option<&'a str>,
    pub(super) mail_from: Option<&'a str>,
    pub(super) rcpt: &'a [String],
}

/// What the pipeline decided, with what it was decided from.
pub(super) struct Scored {
    /// The verdict at the last stage run, and the refusal serve would give.
    pub(super) decision: Decision,
    /// The symbols it was decided on.
    pub(super) card: ScoreCard,
    /// What authentication found.
    pub(super) facts: AuthFacts,
    /// Stages and recipients not run, and why.
    pub(super) skipped: Vec<String>,
    /// The first stage at which serve would have refused.
    pub(super) refused_at: Option<&'static str>,
}

/// Runs every stage the inputs allow, through the same driver as `moat serve`, and decides at
/// `until`. Unlike serve, a refusal at an earlier stage does not stop it: the report shows what
/// every stage found (and says where serve would have refused). A recipient the checks refuse
/// is left out of the card as serve leaves it out, unless it is the stage asked about.
pub(super) async fn score(
    pipeline: &Arc<Pipeline>,
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
    let mut tx = Driver::new(
        pipeline.clone(),
        Arc::new(config.verdict.clone()),
        envelope,
        0,
    );
    let mut skipped: Vec<String> = Vec::new();
    let mut refused_at: Option<&'static str> = None;
    let note = |refused_at: &mut Option<&'static str>, d: &Decision, stage: Stage| {
        if d.refusal.is_some() {
            refused_at.get_or_insert(stage.as_str());
        }
    };
    let done = |tx: Driver, decision: Decision, skipped, refused_at| Scored {
        decision,
        card: tx.card().clone(),
        facts: tx.facts().clone(),
        skipped,
        refused_at,
    };

    if args.client_ip.is_some() {
        let d = tx.connect().await;
        note(&mut refused_at, &d, Stage::Connect);
        if until == Stage::Connect {
            return Ok(done(tx, d, skipped, refused_at));
        }
        if args.helo.is_some() {
            tx.helo().await;
        } else {
            skipped.push("helo stage (no --helo)".into());
        }
    } else {
        skipped.push("connect and helo stages (no --client-ip)".into());
    }
    match (args.mail_from, args.client_ip, args.helo) {
        (Some(from), Some(_), Some(_)) => {
            let d = tx.mail(from.to_string()).await;
            note(&mut refused_at, &d, Stage::Mail);
        }
        _ => skipped.push("mail stage and SPF (needs --client-ip, --helo and --mail-from)".into()),
    }
    if until == Stage::Mail {
        let d = tx.decide(Stage::Mail);
        return Ok(done(tx, d, skipped, refused_at));
    }
    if args.rcpt.is_empty() {
        skipped.push("rcpt stage (no --rcpt)".into());
    }
    for (i, r) in args.rcpt.iter().enumerate() {
        let check = tx.rcpt(r).await;
        if until == Stage::Rcpt && i + 1 == args.rcpt.len() {
            // The recipient the record was refused for: decided on its tentative card.
            return Ok(Scored {
                decision: check.decision.clone(),
                card: check.card.clone(),
                facts: tx.facts().clone(),
                skipped,
                refused_at,
            });
        }
        if check.decision.refusal.is_some() {
            note(&mut refused_at, &check.decision, Stage::Rcpt);
            skipped.push(format!(
                "recipient {r} (refused at RCPT; its symbols are not counted)"
            ));
            continue;
        }
        tx.accept_rcpt(r.clone(), check);
    }
    if until == Stage::Rcpt {
        let d = tx.decide(Stage::Rcpt);
        return Ok(done(tx, d, skipped, refused_at));
    }
    let Some(raw) = raw else {
        bail!("no message to run the data stage on");
    };
    let parsed = mail_parser::MessageParser::default().parse(raw);
    let Some(parsed) = parsed else {
        bail!("the input is not a message (no header could be parsed)");
    };
    let d = tx
        .data(Some(MessageInput {
            raw,
            parsed: &parsed,
        }))
        .await;
    Ok(done(tx, d, skipped, refused_at))
}
