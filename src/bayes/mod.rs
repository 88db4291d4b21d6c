//! A statistical classifier trained on the site's own mail: Paul Graham's token counting with
//! Gary Robinson's per-token probabilities and Fisher's chi-square combining, as SpamAssassin
//! and Bogofilter do it (the choice and the constants are explained in `rules/README.md`).
//!
//! The model is two counters per token (spam, ham) and two totals, in the store:
//! `bayes:t:HASH:s`, `bayes:t:HASH:h`, `bayes:n:s`, `bayes:n:h`, where HASH is the FNV-1a hash
//! of the token, plus `bayes:m:HASH` per learned Message-ID (1 ham, 2 spam) so that learning
//! is idempotent and can move a message between classes. Token counters expire `token_ttl`
//! after they were last learned, so the model does not grow without bound.
//!
//! With Redis the counters are read per message (one MGET) and every instance sees what any
//! `moat learn` taught. The embedded store is one redb file, which only one process may open;
//! so the model gets its own file (`bayes.path`), `moat learn` writes it, and `serve` loads
//! it into memory and reloads it when it changes.

pub mod tokens;

use crate::config::{BayesConfig, Config, StoreBackend};
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Robinson's strength of the prior: how many messages' evidence the neutral guess `X` is
/// worth (SpamBayes' unknown_word_strength).
const S: f64 = 0.45;
/// Robinson's prior probability of a token seen rarely: neutral.
const X: f64 = 0.5;
/// Tokens closer than this to 0.5 are left out as noise (SpamBayes' minimum_prob_strength).
const MIN_STRENGTH: f64 = 0.1;
/// Most significant tokens combined per message. SpamBayes stops at 150; on the shared corpus
/// 500 caught 1.2 points more spam at the same ham error (rules/README.md has the runs).
const MAX_CLUES: usize = 500;
/// The totals and message marks do not expire with the tokens.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 86400);

const TOTAL_SPAM: &str = "bayes:n:s";
const TOTAL_HAM: &str = "bayes:n:h";
const TOKEN_PREFIX: &str = "bayes:t:";
const MESSAGE_PREFIX: &str = "bayes:m:";

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Wanted mail.
    Ham,
    /// Unwanted mail.
    Spam,
}

impl Class {
    /// The message mark's value.
    fn mark(self) -> i64 {
        match self {
            Class::Ham => 1,
            Class::Spam => 2,
        }
    }

    fn from_mark(n: i64) -> Option<Class> {
        match n {
            1 => Some(Class::Ham),
            2 => Some(Class::Spam),
            _ => None,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Class::Ham => "h",
            Class::Spam => "s",
        }
    }

    fn total(self) -> &'static str {
        match self {
            Class::Ham => TOTAL_HAM,
            Class::Spam => TOTAL_SPAM,
        }
    }
}

/// Why the model could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BayesError {
    /// The store failed.
    #[error("bayes model: {0}")]
    Store(#[from] StoreError),
}

/// 64-bit FNV-1a: stable across versions and machines (the model outlives the binary).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The hash a token is stored under.
pub fn token_hash(token: &str) -> u64 {
    fnv1a(token.as_bytes())
}

fn token_key(hash: u64, class: Class) -> String {
    format!("{TOKEN_PREFIX}{hash:016x}:{}", class.suffix())
}

/// The identity learning is idempotent by: the Message-ID, or for a message without one the
/// hash of its bytes.
pub fn message_key(parsed: &mail_parser::Message<'_>, raw: &[u8]) -> String {
    let id = match parsed.message_id() {
        Some(id) if !id.trim().is_empty() => fnv1a(id.trim().as_bytes()),
        _ => fnv1a(raw),
    };
    format!("{MESSAGE_PREFIX}{id:016x}")
}

fn counter(v: Option<&Vec<u8>>) -> u32 {
    v.and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map_or(0, |n| u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

/// The model in memory: totals and the counts of every token (embedded store).
#[derive(Debug, Default)]
pub struct Snapshot {
    spam: u32,
    ham: u32,
    counts: HashMap<u64, (u32, u32)>,
}

impl Snapshot {
    /// Reads every counter of the model in `store`.
    pub async fn load(store: &Store) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::from_entries(store.scan("bayes:").await?))
    }

    fn from_entries(entries: Vec<(String, Vec<u8>)>) -> Snapshot {
        let mut snap = Snapshot::default();
        for (key, value) in entries {
            let n = counter(Some(&value));
            if key == TOTAL_SPAM {
                snap.spam = n;
            } else if key == TOTAL_HAM {
                snap.ham = n;
            } else if let Some(rest) = key.strip_prefix(TOKEN_PREFIX) {
                let Some((hex, class)) = rest.split_once(':') else {
                    continue;
                };
                let Ok(hash) = u64::from_str_radix(hex, 16) else {
                    continue;
                };
                let e = snap.counts.entry(hash).or_default();
                match class {
                    "s" => e.0 = n,
                    "h" => e.1 = n,
                    _ => {}
                }
            }
        }
        snap
    }

    /// How many tokens it knows.
    pub fn tokens(&self) -> usize {
        self.counts.len()
    }
}

/// Where the scoring side reads the model from.
#[derive(Clone, Debug)]
pub enum Model {
    /// Loaded from the embedded model file; swapped when the file changes.
    Memory(Arc<RwLock<Arc<Snapshot>>>),
    /// Read from Redis per message.
    Store(Store),
    /// Read from the embedded model file per message, opened read-only (`moat check`: no
    /// whole-model load, and any number of readers beside `moat serve` and `moat learn`).
    File(Arc<crate::store::ReadOnly>),
}

/// The counts a message's tokens have, with the totals.
#[derive(Debug)]
pub struct Counts {
    /// Spam messages learned.
    pub spam: u32,
    /// Ham messages learned.
    pub ham: u32,
    /// Per token (in the order asked): (spam, ham).
    pub tokens: Vec<(u32, u32)>,
}

impl Model {
    /// The model `[bayes]` and `[store]` describe, or `None` when the classifier is off. An
    /// embedded model file that does not exist yet is an empty model (the classifier stays
    /// silent until it has learned enough).
    pub async fn open(config: &Config) -> Result<Option<Model>, BayesError> {
        if !config.bayes.enabled {
            return Ok(None);
        }
        Ok(Some(match config.store.backend {
            StoreBackend::Redis => Model::Store(Store::open(&config.store).await?),
            StoreBackend::Embedded => {
                let snap = load_file(&config.bayes.path).await?;
                Model::Memory(Arc::new(RwLock::new(Arc::new(snap))))
            }
        }))
    }

    /// The model for one-off scoring (`moat check`): the embedded file read per message
    /// instead of loaded whole, or what [`Model::open`] gives for Redis.
    pub async fn open_for_check(config: &Config) -> Result<Option<Model>, BayesError> {
        if !config.bayes.enabled {
            return Ok(None);
        }
        match config.store.backend {
            StoreBackend::Embedded if config.bayes.path.exists() => Ok(Some(Model::File(
                Arc::new(crate::store::ReadOnly::open(&config.bayes.path)?),
            ))),
            _ => Model::open(config).await,
        }
    }

    /// The counts of `tokens`.
    pub async fn counts(&self, tokens: &[String]) -> Result<Counts, StoreError> {
        match self {
            Model::Memory(m) => {
                let snap = m.read().map(|s| s.clone()).unwrap_or_default();
                Ok(Counts {
                    spam: snap.spam,
                    ham: snap.ham,
                    tokens: tokens
                        .iter()
                        .map(|t| snap.counts.get(&token_hash(t)).copied().unwrap_or_default())
                        .collect(),
                })
            }
            Model::Store(_) | Model::File(_) => {
                let mut keys = Vec::with_capacity(tokens.len() * 2 + 2);
                keys.push(TOTAL_SPAM.to_string());
                keys.push(TOTAL_HAM.to_string());
                for t in tokens {
                    let h = token_hash(t);
                    keys.push(token_key(h, Class::Spam));
                    keys.push(token_key(h, Class::Ham));
                }
                let values = match self {
                    Model::File(file) => file.get_many(&keys)?,
                    Model::Store(store) => store.get_many(&keys).await?,
                    Model::Memory(_) => Vec::new(),
                };
                Ok(Counts {
                    spam: counter(values.first().and_then(Option::as_ref)),
                    ham: counter(values.get(1).and_then(Option::as_ref)),
                    tokens: values[2.min(values.len())..]
                        .chunks(2)
                        .map(|p| {
                            (
                                counter(p.first().and_then(Option::as_ref)),
                                counter(p.get(1).and_then(Option::as_ref)),
                            )
                        })
                        .collect(),
                })
            }
        }
    }

    /// Keeps an in-memory model up to date with its file: checks the file's modification
    /// time every `every` and reloads it when it changed (a `moat learn` finished). A file
    /// that `moat learn` holds open is tried again at the next check.
    pub fn watch(
        &self,
        path: PathBuf,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let Model::Memory(slot) = self else {
            return;
        };
        let slot = slot.clone();
        tokio::spawn(async move {
            let mut seen = modified(&path);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
                let now = modified(&path);
                if now == seen {
                    continue;
                }
                match load_file(&path).await {
                    Ok(snap) => {
                        tracing::info!(path = %path.display(), spam = snap.spam, ham = snap.ham,
                            tokens = snap.tokens(), "bayes: model reloaded");
                        if let Ok(mut s) = slot.write() {
                            *s = Arc::new(snap);
                        }
                        seen = now;
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "bayes: model not reloaded; trying again later");
                    }
                }
            }
        });
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Loads the embedded model file, read-only (no lock against other readers); a missing file
/// is an empty model.
async fn load_file(path: &Path) -> Result<Snapshot, StoreError> {
    if !path.exists() {
        return Ok(Snapshot::default());
    }
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = crate::store::ReadOnly::open(&path)?;
        Ok(Snapshot::from_entries(file.scan("bayes:")?))
    })
    .await
    .map_err(|e| StoreError::Embedded {
        path: String::new(),
        message: e.to_string(),
    })?
}

fn embedded_config(path: &Path, timeout: Duration) -> crate::config::StoreConfig {
    crate::config::StoreConfig {
        backend: StoreBackend::Embedded,
        path: path.to_path_buf(),
        timeout: crate::config::ConfigDuration(timeout),
        ..crate::config::StoreConfig::default()
    }
}

/// The store `moat learn` writes, and how its work is published.
///
/// With the embedded backend, learning writes a copy of the model (`<path>.learning`) and
/// renames it over the model when done: readers (`moat check`, `moat serve`) open the model
/// read-only and never meet a writer's lock, and a learner that fails leaves the model as it
/// was. Learners take turns through `<path>.lock`.
pub struct Learning {
    /// Where to learn into.
    pub store: Store,
    publish: Option<Publish>,
}

struct Publish {
    _lock: std::fs::File,
    copy: PathBuf,
    path: PathBuf,
}

impl Learning {
    /// Publishes what was learned (`changed`), or leaves the model untouched.
    pub async fn finish(self, changed: bool) -> Result<(), StoreError> {
        let Some(p) = self.publish else {
            return Ok(());
        };
        self.store.close(&p.copy).await?;
        let io = |e: std::io::Error| StoreError::Embedded {
            path: p.path.display().to_string(),
            message: e.to_string(),
        };
        if changed {
            std::fs::rename(&p.copy, &p.path).map_err(io)?;
        } else {
            std::fs::remove_file(&p.copy).map_err(io)?;
        }
        Ok(())
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Opens the store `moat learn` writes the model to: a copy of the model file (embedded) or
/// Redis.
pub async fn open_for_learning(config: &Config) -> Result<Learning, StoreError> {
    let timeout = Duration::from_secs(120);
    match config.store.backend {
        StoreBackend::Embedded => {
            let path = config.bayes.path.clone();
            let io = |e: std::io::Error| StoreError::Embedded {
                path: path.display().to_string(),
                message: e.to_string(),
            };
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let lock_path = sibling(&path, ".lock");
            let lock = tokio::task::spawn_blocking(move || {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)?;
                // Another `moat learn` on the same model: wait for it to finish.
                f.lock()?;
                Ok::<_, std::io::Error>(f)
            })
            .await
            .map_err(|e| io(std::io::Error::other(e.to_string())))?
            .map_err(io)?;
            let copy = sibling(&path, ".learning");
            if path.exists() {
                std::fs::copy(&path, &copy).map_err(io)?;
            } else if copy.exists() {
                std::fs::remove_file(&copy).map_err(io)?;
            }
            let store = Store::open(&embedded_config(&copy, timeout)).await?;
            Ok(Learning {
                store,
                publish: Some(Publish {
                    _lock: lock,
                    copy,
                    path,
                }),
            })
        }
        StoreBackend::Redis => {
            let mut c = config.store.clone();
            c.timeout = crate::config::ConfigDuration(timeout);
            Ok(Learning {
                store: Store::open(&c).await?,
                publish: None,
            })
        }
    }
}

/// What a learning run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    /// Messages learned for the first time.
    pub new: usize,
    /// Messages moved from the other class.
    pub moved: usize,
    /// Messages already learned as this class (nothing changed).
    pub unchanged: usize,
    /// Messages forgotten.
    pub forgotten: usize,
    /// Messages to forget that had not been learned.
    pub unknown: usize,
}

impl std::ops::AddAssign for Learned {
    fn add_assign(&mut self, o: Learned) {
        self.new += o.new;
        self.moved += o.moved;
        self.unchanged += o.unchanged;
        self.forgotten += o.forgotten;
        self.unknown += o.unknown;
    }
}

/// One message to learn: its identity key and its tokens.
#[derive(Debug, Clone)]
pub struct Sample {
    /// From [`message_key`].
    pub key: String,
    /// From [`tokens::tokens`].
    pub tokens: Vec<String>,
}

/// Learns (or with `forget`, unlearns) a batch of messages of one class in a few store
/// operations. Idempotent per message key; a message learned as the other class is moved.
pub async fn learn(
    store: &Store,
    batch: &[Sample],
    class: Class,
    forget: bool,
    token_ttl: Duration,
) -> Result<Learned, StoreError> {
    let keys: Vec<String> = batch.iter().map(|s| s.key.clone()).collect();
    let marks = store.get_many(&keys).await?;
    let mut state: HashMap<&str, Option<Class>> = HashMap::new();
    let mut tokens: HashMap<String, i64> = HashMap::new();
    let mut totals: HashMap<&'static str, i64> = HashMap::new();
    let mut mark_deltas: HashMap<&str, i64> = HashMap::new();
    let mut done = Learned::default();
    let mut apply = |sample: &Sample, class: Class, sign: i64| {
        for t in &sample.tokens {
            *tokens.entry(token_key(token_hash(t), class)).or_default() += sign;
        }
        *totals.entry(class.total()).or_default() += sign;
    };
    for (sample, mark) in batch.iter().zip(marks) {
        let was = *state.entry(sample.key.as_str()).or_insert_with(|| {
            mark.as_ref()
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|s| s.trim().parse().ok())
                .and_then(Class::from_mark)
        });
        let now = match (forget, was) {
            (true, None) => {
                done.unknown += 1;
                None
            }
            (true, Some(old)) => {
                apply(sample, old, -1);
                done.forgotten += 1;
                None
            }
            (false, Some(old)) if old == class => {
                done.unchanged += 1;
                Some(class)
            }
            (false, Some(old)) => {
                apply(sample, old, -1);
                apply(sample, class, 1);
                done.moved += 1;
                Some(class)
            }
            (false, None) => {
                apply(sample, class, 1);
                done.new += 1;
                Some(class)
            }
        };
        let delta = now.map_or(0, Class::mark) - was.map_or(0, Class::mark);
        if delta != 0 {
            *mark_deltas.entry(sample.key.as_str()).or_default() += delta;
        }
        state.insert(sample.key.as_str(), now);
    }
    let token_deltas: Vec<(String, i64)> = tokens.into_iter().filter(|(_, d)| *d != 0).collect();
    store.add_many(&token_deltas, token_ttl).await?;
    let totals: Vec<(String, i64)> = totals
        .into_iter()
        .filter(|(_, d)| *d != 0)
        .map(|(k, d)| (k.to_string(), d))
        .collect();
    store.add_many(&totals, FOREVER).await?;
    let marks: Vec<(String, i64)> = mark_deltas
        .into_iter()
        .map(|(k, d)| (k.to_string(), d))
        .collect();
    store.add_many(&marks, token_ttl).await?;
    Ok(done)
}

/// The model's size, for `moat learn --stats`.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Spam messages learned.
    pub spam: u32,
    /// Ham messages learned.
    pub ham: u32,
    /// Distinct tokens.
    pub tokens: usize,
}

/// Reads the model's size (reads every counter: not for the hot path).
pub async fn stats(store: &Store) -> Result<Stats, StoreError> {
    let snap = Snapshot::load(store).await?;
    Ok(Stats {
        spam: snap.spam,
        ham: snap.ham,
        tokens: snap.tokens(),
    })
}

/// The classifier's answer for one message.
#[derive(Debug, Clone)]
pub struct Classification {
    /// Probability that it is spam, 0 to 1.
    pub probability: f64,
    /// Tokens that counted.
    pub used: usize,
    /// The tokens that counted, most decisive first: (token, its spam probability).
    pub clues: Vec<(String, f64)>,
}

/// Robinson's probability of a token: the spam ratio of its counts, pulled towards `X` by
/// how little it has been seen.
fn token_probability(spam: u32, ham: u32, nspam: u32, nham: u32) -> Option<f64> {
    let n = f64::from(spam) + f64::from(ham);
    if n == 0.0 {
        return None;
    }
    let rs = f64::from(spam) / f64::from(nspam.max(1));
    let rh = f64::from(ham) / f64::from(nham.max(1));
    let p = rs / (rs + rh);
    Some((S * X + n * p) / (S + n))
}

/// The probability that a chi-square variable with `v` (even) degrees of freedom exceeds
/// `x2`, by the series for even degrees.
fn chi2q(x2: f64, v: usize) -> f64 {
    let m = x2 / 2.0;
    let mut term = (-m).exp();
    let mut sum = term;
    for i in 1..(v / 2) {
        term *= m / i as f64;
        sum += term;
    }
    sum.min(1.0)
}

/// Combines the tokens' counts into the message's spam probability (Fisher's method on the
/// most significant tokens, as SpamAssassin and SpamBayes do).
pub fn classify(counts: &Counts, tokens: &[String]) -> Classification {
    let mut clues: Vec<(String, f64)> = tokens
        .iter()
        .zip(&counts.tokens)
        .filter_map(|(t, &(s, h))| {
            token_probability(s, h, counts.spam, counts.ham).map(|p| (t.clone(), p))
        })
        .filter(|(_, p)| (p - 0.5).abs() >= MIN_STRENGTH)
        .collect();
    clues.sort_by(|a, b| {
        (b.1 - 0.5)
            .abs()
            .total_cmp(&(a.1 - 0.5).abs())
            .then_with(|| a.0.cmp(&b.0))
    });
    clues.truncate(MAX_CLUES);
    let n = clues.len();
    if n == 0 {
        return Classification {
            probability: 0.5,
            used: 0,
            clues,
        };
    }
    let ln_spam: f64 = clues.iter().map(|(_, p)| (1.0 - p).max(1e-200).ln()).sum();
    let ln_ham: f64 = clues.iter().map(|(_, p)| p.max(1e-200).ln()).sum();
    let s = 1.0 - chi2q(-2.0 * ln_spam, 2 * n);
    let h = 1.0 - chi2q(-2.0 * ln_ham, 2 * n);
    Classification {
        probability: ((1.0 + s - h) / 2.0).clamp(0.0, 1.0),
        used: n,
        clues,
    }
}

/// Whether the model has learned enough to be trusted.
pub fn trained(counts: &Counts, config: &BayesConfig) -> bool {
    counts.spam >= config.min_spam && counts.ham >= config.min_ham
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_stable() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(token_hash(""), 0xcbf29ce484222325);
        assert_eq!(token_hash("a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn chi2q_matches_known_values() {
        // P(chi2 with 2 dof > x) = exp(-x/2).
        assert!((chi2q(2.0, 2) - (-1.0f64).exp()).abs() < 1e-12);
        // With 4 dof: exp(-x/2) (1 + x/2).
        assert!((chi2q(3.0, 4) - (-1.5f64).exp() * 2.5).abs() < 1e-12);
        assert!(chi2q(0.0, 10) <= 1.0);
    }

    fn counts(spam: u32, ham: u32, tokens: &[(u32, u32)]) -> Counts {
        Counts {
            spam,
            ham,
            tokens: tokens.to_vec(),
        }
    }

    #[test]
    fn clear_evidence_gives_clear_probabilities() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let spammy = classify(&counts(100, 100, &[(50, 0), (40, 1), (30, 0)]), &names);
        assert!(spammy.probability > 0.99, "{spammy:?}");
        assert_eq!(spammy.used, 3);
        let hammy = classify(&counts(100, 100, &[(0, 50), (1, 40), (0, 30)]), &names);
        assert!(hammy.probability < 0.01, "{hammy:?}");
        let unknown = classify(&counts(100, 100, &[(0, 0), (5, 5), (0, 0)]), &names);
        assert_eq!(unknown.probability, 0.5);
        assert_eq!(unknown.used, 0, "neutral and unseen tokens do not count");
    }

    #[tokio::test]
    async fn learning_is_idempotent_moves_and_forgets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&embedded_config(
            &dir.path().join("b.redb"),
            Duration::from_secs(10),
        ))
        .await
        .expect("open");
        let ttl = Duration::from_secs(3600);
        async fn cheap_pills(store: &Store) -> Counts {
            Model::Store(store.clone())
                .counts(&["cheap".into(), "pills".into()])
                .await
                .expect("counts")
        }
        let m = |k: &str, t: &[&str]| Sample {
            key: format!("bayes:m:{k}"),
            tokens: t.iter().map(|s| s.to_string()).collect(),
        };
        let batch = [m("1", &["cheap", "pills"]), m("2", &["cheap", "offer"])];
        let r = learn(&store, &batch, Class::Spam, false, ttl)
            .await
            .expect("learn");
        assert_eq!((r.new, r.unchanged), (2, 0));
        // Twice the same: nothing changes, also within one batch.
        let r = learn(
            &store,
            &[batch[0].clone(), batch[0].clone()],
            Class::Spam,
            false,
            ttl,
        )
        .await
        .expect("learn");
        assert_eq!((r.new, r.unchanged), (0, 2));
        let c = cheap_pills(&store).await;
        assert_eq!(
            (c.spam, c.ham, c.tokens.clone()),
            (2, 0, vec![(2, 0), (1, 0)])
        );
        // As ham: moved.
        let r = learn(&store, &batch[..1], Class::Ham, false, ttl)
            .await
            .expect("learn");
        assert_eq!(r.moved, 1);
        let c = cheap_pills(&store).await;
        assert_eq!(
            (c.spam, c.ham, c.tokens.clone()),
            (1, 1, vec![(1, 1), (0, 1)])
        );
        // Forgotten: gone, and forgetting again knows nothing of it.
        let r = learn(&store, &batch[..1], Class::Ham, true, ttl)
            .await
            .expect("forget");
        assert_eq!(r.forgotten, 1);
        let r = learn(&store, &batch[..1], Class::Ham, true, ttl)
            .await
            .expect("forget");
        assert_eq!(r.unknown, 1);
        let s = stats(&store).await.expect("stats");
        assert_eq!(
            (s.spam, s.ham, s.tokens),
            (1, 0, 2),
            "cheap and offer remain"
        );
    }
}
