//! The source tree keeps its shape: every `crate::` import between the top-level modules of
//! src/ points down the flow, so there are no import cycles and no module reaches up.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top-level modules, from the front ends down. A module may import only modules after it.
/// `checks` sits above `pipeline`: checks implement the pipeline's `Check` trait and `app`
/// hands them in, so the pipeline never imports them.
const ORDER: &[&str] = &[
    "cli", "app", "listener", "session", "checks", "pipeline", "records", "upstream", "auth",
    "bayes", "verdict", "rules", "store", "dns", "net", "smtp", "metrics", "config",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_between_top_level_modules_point_down_the_flow() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let import = regex::Regex::new(r"crate::([a-z_]+)").expect("regex");
    let mut upward = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("component");
        let top = first.as_os_str().to_string_lossy();
        let top = top.trim_end_matches(".rs");
        if top == "lib" || top == "main" {
            continue;
        }
        let Some(from) = ORDER.iter().position(|m| *m == top) else {
            unknown.insert(top.to_string());
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read");
        for m in import.captures_iter(&text) {
            let target = &m[1];
            if target == top {
                continue;
            }
            match ORDER.iter().position(|m| *m == target) {
                Some(to) if to > from => {}
                Some(_) => {
                    upward.insert(format!("{} imports {target}", rel.display()));
                }
                None => {
                    unknown.insert(target.to_string());
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules missing from ORDER: {unknown:?}"
    );
    assert!(
        upward.is_empty(),
        "imports up the flow:\n{}",
        upward.into_iter().collect::<Vec<_>>().join("\n")
    );
}
