//! `moat learn`: trains the classifier from files or maildirs of ham and spam, forgets
//! messages, and shows the model's size. Learning is idempotent per Message-ID: a message
//! learned twice counts once, and learned as the other class it moves.

use super::corpus::{message_files, Progress, Split};
use crate::bayes::{self, Class, Learned, Sample};
use crate::config::{Config, StoreBackend};
use anyhow::{bail, Context as _};
use std::path::PathBuf;
use std::time::Instant;

/// Messages per store batch: large enough that a store round trip is paid rarely, small
/// enough that the progress moves and memory stays small.
const BATCH: usize = 500;

/// What `moat learn` was asked (also its command-line flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LearnArgs {
    /// Config file: `[bayes]` and `[store]` say where the model is.
    #[arg(long, short, default_value = "config/moat.toml")]
    pub config: PathBuf,
    /// Ham: files or folders, searched recursively (maildirs work). Repeatable.
    #[arg(long, value_name = "PATH")]
    pub ham: Vec<PathBuf>,
    /// Spam: files or folders, searched recursively. Repeatable.
    #[arg(long, value_name = "PATH")]
    pub spam: Vec<PathBuf>,
    /// Unlearn the given messages instead.
    #[arg(long)]
    pub forget: bool,
    /// Print the model's size (with or without messages to learn).
    #[arg(long)]
    pub stats: bool,
    /// Only this part of the files, split by file-name hash (see `moat eval --split`).
    #[arg(long, value_enum)]
    pub split: Option<Split>,
    /// The share of files in the test part, in percent.
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub test_percent: u8,
}

/// Runs `moat learn` and returns what to print.
pub async fn run(args: &LearnArgs) -> anyhow::Result<String> {
    let config = Config::load(&args.config)?;
    run_with(&config, args).await
}

/// Runs `moat learn` with an already loaded config.
pub async fn run_with(config: &Config, args: &LearnArgs) -> anyhow::Result<String> {
    if !config.bayes.enabled {
        bail!("{}: [bayes] is not enabled", config.source.display());
    }
    if args.ham.is_empty() && args.spam.is_empty() && !args.stats {
        bail!("nothing to do: give --ham and/or --spam files or folders, or --stats");
    }
    let where_ = match config.store.backend {
        StoreBackend::Embedded => config.bayes.path.display().to_string(),
        StoreBackend::Redis => format!("redis {}", config.store.url),
    };
    let learning = bayes::open_for_learning(config)
        .await
        .with_context(|| format!("opening the model ({where_})"))?;
    let store = &learning.store;
    let mut changed = false;
    let mut out = String::new();
    if !args.ham.is_empty() || !args.spam.is_empty() {
        let split = args.split.map(|s| (s, args.test_percent));
        let mut total = Learned::default();
        let started = Instant::now();
        let mut files = 0;
        let mut unreadable = 0;
        for (paths, class) in [(&args.ham, Class::Ham), (&args.spam, Class::Spam)] {
            if paths.is_empty() {
                continue;
            }
            let (ham, spam): (&[PathBuf], &[PathBuf]) = match class {
                Class::Ham => (paths, &[]),
                Class::Spam => (&[], paths),
            };
            let list = message_files(ham, spam, split)?;
            files += list.len();
            let progress = Progress::new("moat learn", list.len());
            for chunk in list.chunks(BATCH) {
                let (batch, bad) = samples(chunk, &progress);
                unreadable += bad;
                total += bayes::learn(store, &batch, class, args.forget, config.bayes.token_ttl.0)
                    .await
                    .with_context(|| format!("writing the model ({where_})"))?;
                changed = true;
            }
            progress.finish();
        }
        let secs = started.elapsed().as_secs_f64();
        out.push_str(&format!(
            "{} {files} messages in {secs:.1} s ({:.0} msgs/s): {} new, {} moved from the other class, {} already known, {} forgotten, {} not known, {unreadable} unreadable\n",
            if args.forget { "forgot" } else { "learned" },
            files as f64 / secs.max(1e-9),
            total.new,
            total.moved,
            total.unchanged,
            total.forgotten,
            total.unknown,
        ));
    }
    let s = bayes::stats(store)
        .await
        .with_context(|| format!("reading the model ({where_})"))?;
    learning
        .finish(changed)
        .await
        .with_context(|| format!("saving the model ({where_})"))?;
    out.push_str(&format!(
        "model {where_}: {} spam, {} ham, {} tokens; scoring needs {} spam and {} ham{}\n",
        s.spam,
        s.ham,
        s.tokens,
        config.bayes.min_spam,
        config.bayes.min_ham,
        if s.spam >= config.bayes.min_spam && s.ham >= config.bayes.min_ham {
            " (active)"
        } else {
            " (not active yet)"
        }
    ));
    Ok(out)
}

/// The samples of a chunk of files, parsed and tokenized on every core (tokenizing is most
/// of the work); the count of files that could not be read.
fn samples(chunk: &[(PathBuf, bool)], progress: &Progress) -> (Vec<Sample>, usize) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = chunk.len().div_ceil(threads).max(1);
    let parts: Vec<Vec<Option<Sample>>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunk
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(path, _)| {
                            let r = sample(path);
                            progress.tick();
                            r
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let all: Vec<Option<Sample>> = parts.into_iter().flatten().collect();
    let bad = all.iter().filter(|s| s.is_none()).count();
    (all.into_iter().flatten().collect(), bad)
}

/// A message file as the classifier learns it; `None` when it cannot be read or parsed.
pub fn sample(path: &std::path::Path) -> Option<Sample> {
    let raw = super::check::to_crlf(std::fs::read(path).ok()?);
    let parsed = mail_parser::MessageParser::default().parse(&raw[..])?;
    Some(Sample {
        key: bayes::message_key(&parsed, &raw),
        tokens: bayes::tokens::tokens(&parsed),
    })
}
