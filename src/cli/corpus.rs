//! What `moat eval` and `moat learn` share: the message files of the folders given, a fixed
//! split of them into a training and a test part, and a progress display.

use anyhow::bail;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Which part of a corpus to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// Files whose name hash falls outside the test part.
    Train,
    /// Files whose name hash falls in the test part.
    Test,
}

/// Whether `path` is in `split` when `test_percent` of the files are held back for testing.
/// The split is by the FNV-1a hash of the file name, so it is the same on every machine and
/// does not depend on the order of the files or their folder.
pub fn in_split(path: &Path, split: Split, test_percent: u8) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let test = crate::bayes::token_hash(&name) % 100 < u64::from(test_percent);
    test == (split == Split::Test)
}

/// Every file under the given files and folders, with its class (true = spam), sorted per
/// folder; with `split`, only that part.
pub fn message_files(
    ham: &[PathBuf],
    spam: &[PathBuf],
    split: Option<(Split, u8)>,
) -> anyhow::Result<Vec<(PathBuf, bool)>> {
    let mut out = Vec::new();
    for (paths, is_spam) in [(ham, false), (spam, true)] {
        for p in paths {
            if p.is_file() {
                out.push((p.clone(), is_spam));
            } else if p.is_dir() {
                let mut files = crate::rules::files_under(p);
                files.sort();
                out.extend(files.into_iter().map(|f| (f, is_spam)));
            } else {
                bail!("{}: no such file or folder", p.display());
            }
        }
    }
    if let Some((split, percent)) = split {
        out.retain(|(p, _)| in_split(p, split, percent));
    }
    Ok(out)
}

/// Shows progress: a bar on a terminal, a line per tenth otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    label: &'static str,
    total: usize,
    done: AtomicUsize,
}

impl Progress {
    /// Progress over `total` messages, labelled with the command's name.
    pub fn new(label: &'static str, total: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
                "{label} {{bar:40}} {{pos}}/{{len}} messages, {{per_sec}}, {{eta}} left"
            )) {
                bar.set_style(style);
            }
            bar
        });
        Progress {
            bar,
            label,
            total,
            done: AtomicUsize::new(0),
        }
    }

    /// One more message done.
    pub fn tick(&self) {
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        match &self.bar {
            Some(bar) => bar.inc(1),
            None => {
                let step = (self.total / 10).max(1);
                if n.is_multiple_of(step) || n == self.total {
                    eprintln!("{}: {n}/{} messages", self.label, self.total);
                }
            }
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_by_name_and_complementary() {
        let names: Vec<PathBuf> = (0..1000)
            .map(|i| PathBuf::from(format!("d/{i}.eml")))
            .collect();
        let test = names
            .iter()
            .filter(|p| in_split(p, Split::Test, 40))
            .count();
        let train = names
            .iter()
            .filter(|p| in_split(p, Split::Train, 40))
            .count();
        assert_eq!(test + train, 1000);
        assert!((330..470).contains(&test), "{test}");
        assert_eq!(
            in_split(Path::new("a/x.eml"), Split::Test, 40),
            in_split(Path::new("b/c/x.eml"), Split::Test, 40),
            "the folder does not matter"
        );
    }
}
