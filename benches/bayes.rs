//! The classifier's costs: training speed (`moat learn` on the training part of a corpus,
//! into an embedded model file) and scoring cost per message (tokenize, look up, combine; the
//! MIME parse is shared with every other check and left out), on one thread.
//!
//!   cargo bench --ignore-rust-version --bench bayes -- [CORPUS] [--test-percent N] [--passes P]
//!
//! CORPUS has `ham/` and `spam/` (default: ../shared/corpus). The split is the one `moat
//! learn --split` and `moat eval --split` use. Last line: one JSON object.

use moat::bayes::{self, Model};
use moat::cli::corpus::{message_files, Split};
use moat::cli::learn::LearnArgs;
use moat::config::Config;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() {
    let mut corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    let mut test_percent = 40u8;
    let mut passes = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--test-percent" => {
                test_percent = args.next().and_then(|v| v.parse().ok()).unwrap_or(40)
            }
            "--passes" => passes = args.next().and_then(|v| v.parse().ok()).unwrap_or(3).max(1),
            "--bench" => {}
            other => corpus = PathBuf::from(other),
        }
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("moat.toml");
    std::fs::write(
        &cfg_path,
        format!("[bayes]\npath = {:?}\n", dir.path().join("bayes.redb")),
    )
    .expect("config");
    let config = Config::load(&cfg_path).expect("config");

    // Training: what `moat learn --split train` does, timed end to end.
    let (ham, spam) = (vec![corpus.join("ham")], vec![corpus.join("spam")]);
    let train = message_files(&ham, &spam, Some((Split::Train, test_percent))).expect("files");
    let started = Instant::now();
    let out = rt
        .block_on(moat::cli::learn::run_with(
            &config,
            &LearnArgs {
                config: cfg_path.clone(),
                ham: ham.clone(),
                spam: spam.clone(),
                split: Some(Split::Train),
                test_percent,
                ..Default::default()
            },
        ))
        .expect("learn");
    let train_secs = started.elapsed().as_secs_f64();
    eprint!("{out}");

    // Scoring: per message, the median over the passes; then the median over messages.
    let model = rt
        .block_on(Model::open(&config))
        .expect("model")
        .expect("bayes on");
    let test = message_files(&ham, &spam, Some((Split::Test, test_percent))).expect("files");
    let mut per_message: Vec<f64> = Vec::with_capacity(test.len());
    let mut tokens_total = 0usize;
    for (path, _) in &test {
        let Some(raw) = read(path) else { continue };
        let Some(parsed) = mail_parser::MessageParser::default().parse(&raw[..]) else {
            continue;
        };
        let mut times = Vec::with_capacity(passes);
        for _ in 0..passes {
            let t = Instant::now();
            let tokens = bayes::tokens::tokens(&parsed);
            let counts = rt.block_on(model.counts(&tokens)).expect("counts");
            let v = bayes::classify(&counts, &tokens);
            std::hint::black_box(v.probability);
            times.push(t.elapsed().as_secs_f64());
            tokens_total += tokens.len();
        }
        times.sort_by(f64::total_cmp);
        per_message.push(times[times.len() / 2]);
    }
    per_message.sort_by(f64::total_cmp);
    let q = |f: f64| per_message[((per_message.len() as f64 - 1.0) * f) as usize] * 1e6;
    let mean = per_message.iter().sum::<f64>() / per_message.len() as f64 * 1e6;
    println!(
        "{{\"train_messages\": {}, \"train_seconds\": {:.2}, \"train_msgs_per_s\": {:.0}, \"scored\": {}, \"score_us_median\": {:.1}, \"score_us_p90\": {:.1}, \"score_us_mean\": {:.1}, \"tokens_per_message\": {:.0}}}",
        train.len(),
        train_secs,
        train.len() as f64 / train_secs,
        per_message.len(),
        q(0.5),
        q(0.9),
        mean,
        tokens_total as f64 / (per_message.len() * passes) as f64
    );
}

fn read(path: &Path) -> Option<Vec<u8>> {
    Some(moat::cli::check::to_crlf(std::fs::read(path).ok()?))
}
