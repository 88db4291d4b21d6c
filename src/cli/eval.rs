//! `moat eval`: scores folders of known ham and spam with the offline pipeline (content rules,
//! lists, MIME checks; no DNS) on all cores, and reports what a ruleset would do to them: the
//! actions per class, false rejects and flags, missed spam, and per rule its hits on ham and
//! spam. With `--baseline` it compares two rulesets on the same messages and says which rules
//! caused the change. Its exit code can gate a CI job for rule changes.

use crate::config::Config;
use crate::pipeline::driver::Driver;
use crate::pipeline::envelope::Envelope;
use crate::pipeline::{Action, MessageInput, Pipeline};
use anyhow::{bail, Context as _};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What `moat eval` was asked (also its command-line flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EvalArgs {
    /// Ham: files or folders, searched recursively (maildirs work). Repeatable.
    #[arg(long, value_name = "PATH", required = true)]
    pub ham: Vec<PathBuf>,
    /// Spam: files or folders, searched recursively. Repeatable.
    #[arg(long, value_name = "PATH", required = true)]
    pub spam: Vec<PathBuf>,
    /// Config file for the thresholds and rules.dir (default: the built-in defaults).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Rules directory to evaluate; replaces rules.dir.
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Rules directory to compare against; adds per-rule changes in false positives and false
    /// negatives.
    #[arg(long, value_name = "DIR")]
    pub baseline: Option<PathBuf>,
    /// Print one JSON object (schema in rules/README.md).
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when more ham than this is rejected (for CI jobs gating rule changes).
    #[arg(long, value_name = "N")]
    pub max_false_rejects: Option<usize>,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Only this part of the files, split by file-name hash (see --test-percent): evaluate
    /// the classifier on `test` after `moat learn --split train`.
    #[arg(long, value_enum)]
    pub split: Option<super::corpus::Split>,
    /// The share of files in the test part, in percent.
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub test_percent: u8,
}

/// What to print and the exit code (0 fine, 1 false rejects over the limit).
#[derive(Debug)]
pub struct EvalReport {
    /// The text to print on standard output.
    pub output: String,
    /// The process exit code.
    pub exit_code: u8,
}

/// The verdict of one ruleset on one message.
#[derive(Debug, Clone)]
struct Outcome {
    action: Action,
    symbols: BTreeSet<String>,
}

/// One message: spam or not, the verdict of the evaluated rules and of the baseline.
type Scored = (bool, Outcome, Option<Outcome>);

/// Counts per action for one class.
#[derive(Debug, Default, Clone, Copy)]
struct Actions {
    total: usize,
    reject: usize,
    tempfail: usize,
    add_header: usize,
    accept: usize,
}

impl Actions {
    fn add(&mut self, a: Action) {
        self.total += 1;
        match a {
            Action::Reject => self.reject += 1,
            Action::Tempfail => self.tempfail += 1,
            Action::AddHeader => self.add_header += 1,
            Action::Accept => self.accept += 1,
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "total": self.total, "reject": self.reject, "tempfail": self.tempfail,
            "add_header": self.add_header, "accept": self.accept,
        })
    }
}

/// Per rule (or check symbol): messages it fired on, and with a baseline the change in false
/// positives and false negatives it caused.
#[derive(Debug, Default, Clone, Copy)]
struct RuleStats {
    ham: usize,
    spam: usize,
    fp_delta: i64,
    fn_delta: i64,
}

/// One ruleset's pipeline and thresholds.
struct Scorer {
    pipeline: Arc<Pipeline>,
    verdict: Arc<crate::config::VerdictConfig>,
    label: String,
}

impl Scorer {
    fn new(
        config: &Config,
        rules: Option<&Path>,
        model: Option<&crate::bayes::Model>,
    ) -> anyhow::Result<Scorer> {
        let mut config = config.clone();
        if let Some(dir) = rules {
            if !dir.is_dir() {
                bail!("{}: not a directory", dir.display());
            }
            config.rules.dir = Some(dir.to_path_buf());
        }
        let pipeline = Arc::new(crate::app::build_offline_pipeline(&config, model)?);
        let label = match &config.rules.dir {
            Some(d) => format!("{} (ruleset {})", d.display(), pipeline.ruleset()),
            None => format!("built-in rules (ruleset {})", pipeline.ruleset()),
        };
        Ok(Scorer {
            pipeline,
            verdict: Arc::new(config.verdict),
            label,
        })
    }

    async fn score(&self, raw: &[u8], parsed: Option<&mail_parser::Message<'_>>) -> Outcome {
        let unspecified: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 0));
        let envelope = Envelope::new(unspecified, unspecified);
        // The message alone, as `moat check FILE` scores it: no SMTP facts.
        let mut tx = Driver::new(self.pipeline.clone(), self.verdict.clone(), envelope, 0);
        let decision = tx
            .data(parsed.map(|p| MessageInput { raw, parsed: p }))
            .await;
        Outcome {
            action: decision.verdict.action,
            symbols: tx.card().names().into_iter().map(str::to_string).collect(),
        }
    }
}

/// Runs the evaluation.
pub fn run(args: &EvalArgs) -> anyhow::Result<EvalReport> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::parse("", Path::new("(defaults)"))?,
    };
    // The classifier's model, when `[bayes]` is on and has learned (`moat learn`).
    let model = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(crate::bayes::Model::open(&config))?;
    let current = Arc::new(Scorer::new(&config, args.rules.as_deref(), model.as_ref())?);
    let baseline = match &args.baseline {
        Some(dir) => Some(Arc::new(
            Scorer::new(&config, Some(dir), model.as_ref()).context("--baseline")?,
        )),
        None => None,
    };
    let files = Arc::new(super::corpus::message_files(
        &args.ham,
        &args.spam,
        args.split.map(|s| (s, args.test_percent)),
    )?);
    if files.is_empty() {
        bail!("no messages: give --ham and --spam folders or files");
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let progress = Arc::new(super::corpus::Progress::new("moat eval", files.len()));
    let next = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<Scored>>> = Arc::new(Mutex::new(Vec::with_capacity(files.len())));
    let unreadable = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (files, next, progress) = (files.clone(), next.clone(), progress.clone());
            let (current, baseline) = (current.clone(), baseline.clone());
            let (results, unreadable) = (results.clone(), unreadable.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                while let Some((path, spam)) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let raw = match std::fs::read(path) {
                        Ok(raw) => super::check::to_crlf(raw),
                        Err(e) => {
                            if let Ok(mut u) = unreadable.lock() {
                                u.push(format!("{}: {e}", path.display()));
                            }
                            progress.tick();
                            continue;
                        }
                    };
                    let parsed = mail_parser::MessageParser::default().parse(&raw[..]);
                    let new = rt.block_on(current.score(&raw, parsed.as_ref()));
                    let base = baseline
                        .as_ref()
                        .map(|b| rt.block_on(b.score(&raw, parsed.as_ref())));
                    if let Ok(mut r) = results.lock() {
                        r.push((*spam, new, base));
                    }
                    progress.tick();
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        match w.join() {
            Ok(r) => r?,
            Err(_) => bail!("an evaluation thread panicked"),
        }
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    let results = std::mem::take(&mut *results.lock().map_err(|_| anyhow::anyhow!("lock"))?);
    let unreadable = std::mem::take(&mut *unreadable.lock().map_err(|_| anyhow::anyhow!("lock"))?);
    Ok(report(
        args,
        &current,
        baseline.as_deref(),
        &results,
        &unreadable,
        seconds,
        threads,
    ))
}

/// Adds a changed outcome to the false-positive and false-negative deltas of `names`.
fn blame<'a>(
    rules: &mut BTreeMap<String, RuleStats>,
    names: impl Iterator<Item = &'a String>,
    fp: i64,
    fneg: i64,
) {
    for n in names {
        let r = rules.entry(n.clone()).or_default();
        r.fp_delta += fp;
        r.fn_delta += fneg;
    }
}

/// Spam counts as caught when flagged or refused; ham as a false positive when flagged or
/// refused (a tempfail delays ham but loses nothing, and counts as flagged here too).
fn caught(a: Action) -> bool {
    a != Action::Accept
}

fn report(
    args: &EvalArgs,
    current: &Scorer,
    baseline: Option<&Scorer>,
    results: &[Scored],
    unreadable: &[String],
    seconds: f64,
    threads: usize,
) -> EvalReport {
    let (mut ham, mut spam) = (Actions::default(), Actions::default());
    let (mut base_ham, mut base_spam) = (Actions::default(), Actions::default());
    let mut rules: BTreeMap<String, RuleStats> = BTreeMap::new();
    for (is_spam, new, base) in results {
        if *is_spam { &mut spam } else { &mut ham }.add(new.action);
        for s in &new.symbols {
            let r = rules.entry(s.clone()).or_default();
            if *is_spam {
                r.spam += 1;
            } else {
                r.ham += 1;
            }
        }
        let Some(base) = base else { continue };
        if *is_spam {
            &mut base_spam
        } else {
            &mut base_ham
        }
        .add(base.action);
        // A changed outcome is put down to the symbols that differ in the direction of the
        // change: a new false positive to the symbols only the new ruleset fired, and so on.
        let added = new.symbols.difference(&base.symbols);
        let removed = base.symbols.difference(&new.symbols);
        let (now, before) = (caught(new.action), caught(base.action));
        match (*is_spam, before, now) {
            (false, false, true) => blame(&mut rules, added, 1, 0),
            (false, true, false) => blame(&mut rules, removed, -1, 0),
            (true, true, false) => blame(&mut rules, removed, 0, 1),
            (true, false, true) => blame(&mut rules, added, 0, -1),
            _ => {}
        }
    }
    let false_rejects = ham.reject;
    let false_flags = ham.total - ham.accept;
    let missed = spam.accept;
    let rate = results.len() as f64 / seconds.max(1e-9);
    let so = |r: &RuleStats| {
        let h = r.ham as f64 / ham.total.max(1) as f64;
        let s = r.spam as f64 / spam.total.max(1) as f64;
        if h + s == 0.0 {
            0.0
        } else {
            s / (h + s)
        }
    };
    let mut order: Vec<(&String, &RuleStats)> = rules.iter().collect();
    order.sort_by(|a, b| {
        (b.1.spam + b.1.ham)
            .cmp(&(a.1.spam + a.1.ham))
            .then(a.0.cmp(b.0))
    });
    let exit_code = match args.max_false_rejects {
        Some(max) if false_rejects > max => 1,
        _ => 0,
    };
    let output = if args.json {
        let mut v = json!({
            "messages": results.len(),
            "seconds": seconds,
            "rate": rate,
            "threads": threads,
            "rules_dir": current.label,
            "ham": ham.json(),
            "spam": spam.json(),
            "false_rejects": false_rejects,
            "false_flags": false_flags,
            "missed_spam": missed,
            "unreadable": unreadable,
            "rules": order.iter().map(|(name, r)| {
                let mut o = json!({"name": name, "ham_hits": r.ham, "spam_hits": r.spam, "s_o": so(r)});
                if baseline.is_some() {
                    o["fp_delta"] = json!(r.fp_delta);
                    o["fn_delta"] = json!(r.fn_delta);
                }
                o
            }).collect::<Vec<_>>(),
        });
        if let Some(b) = baseline {
            v["baseline"] =
                json!({"rules_dir": b.label, "ham": base_ham.json(), "spam": base_spam.json()});
        }
        format!("{v}\n")
    } else {
        let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
        let mut o = String::new();
        o.push_str(&format!(
            "moat eval: {} messages ({} ham, {} spam) in {:.1} s, {:.0} msgs/s on {threads} threads\nrules: {}\n",
            results.len(), ham.total, spam.total, seconds, rate, current.label
        ));
        if let Some(b) = baseline {
            o.push_str(&format!("baseline: {}\n", b.label));
        }
        for u in unreadable {
            o.push_str(&format!("unreadable: {u}\n"));
        }
        o.push_str(&format!(
            "\n{:<10} {:>7} {:>7} {:>9} {:>11} {:>7}\n",
            "class", "total", "reject", "tempfail", "add_header", "accept"
        ));
        let mut row = |name: &str, a: &Actions| {
            o.push_str(&format!(
                "{:<10} {:>7} {:>7} {:>9} {:>11} {:>7}\n",
                name, a.total, a.reject, a.tempfail, a.add_header, a.accept
            ))
        };
        row("ham", &ham);
        row("spam", &spam);
        if baseline.is_some() {
            row("ham (base)", &base_ham);
            row("spam(base)", &base_spam);
        }
        o.push_str(&format!(
            "\nfalse rejects (ham refused): {false_rejects} ({:.2}%)\nfalse flags (ham not accepted): {false_flags} ({:.2}%)\nmissed spam (accepted): {missed} ({:.1}%)\n",
            pct(false_rejects, ham.total),
            pct(false_flags, ham.total),
            pct(missed, spam.total)
        ));
        o.push_str(&format!(
            "\n{:<32} {:>8} {:>9} {:>6}{}\n",
            "rule",
            "ham hits",
            "spam hits",
            "S/O",
            if baseline.is_some() {
                "   FP+/-   FN+/-"
            } else {
                ""
            }
        ));
        for (name, r) in &order {
            let delta = if baseline.is_some() {
                format!(" {:>7} {:>7}", r.fp_delta, r.fn_delta)
            } else {
                String::new()
            };
            o.push_str(&format!(
                "{:<32} {:>8} {:>9} {:>6.3}{delta}\n",
                name,
                r.ham,
                r.spam,
                so(r)
            ));
        }
        if exit_code != 0 {
            o.push_str(&format!(
                "\nFAIL: {false_rejects} ham rejected, more than --max-false-rejects {}\n",
                args.max_false_rejects.unwrap_or(0)
            ));
        }
        o
    };
    EvalReport { output, exit_code }
}
