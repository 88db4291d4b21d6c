//! The DATA and BDAT reader, fed in random chunk splits: the outcome does not depend on how
//! the bytes were split, and the message ends only at CRLF.CRLF (DATA) or at the end of the
//! last chunk (BDAT).
#![no_main]
use libfuzzer_sys::fuzz_target;
use moat::smtp::data::{DataLimits, DataReader, Feed};

const LIMITS: DataLimits = DataLimits {
    max_size: 64 * 1024,
    max_line: 998,
};

/// Feeds `input` in pieces cut at `cuts`; returns where it ended and the message.
fn run(chunked: bool, input: &[u8], cuts: &[usize]) -> (Option<usize>, Result<Vec<u8>, String>) {
    let mut r = if chunked {
        DataReader::chunked(LIMITS)
    } else {
        DataReader::dot(LIMITS)
    };
    let mut at = 0;
    let mut end = None;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    for p in points {
        if p <= at || end.is_some() {
            continue;
        }
        match r.feed(&input[at..p]) {
            Feed::More => at = p,
            Feed::Done { consumed } => end = Some(at + consumed),
        }
    }
    (end, r.finish().map_err(|e| format!("{e:?}")))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let chunked = data[0] & 1 == 1;
    let cuts: Vec<usize> = data[1..4].iter().map(|&b| b as usize * 7).collect();
    let input = &data[4..];
    let whole = run(chunked, input, &[]);
    let split = run(chunked, input, &cuts);
    assert_eq!(whole.0, split.0, "end depends on the split");
    assert_eq!(whole.1, split.1, "message depends on the split");
    if !chunked {
        if let Some(end) = whole.0 {
            let taken = &input[..end];
            assert!(taken.ends_with(b".\r\n"), "ended without the terminator");
            let before = &taken[..taken.len() - 3];
            assert!(before.is_empty() || before.ends_with(b"\r\n"), "a dot not at a line start ended it");
        } else if let Ok(m) = &whole.1 {
            // Not terminated (the session would keep reading): finishing anyway gives at most
            // the input plus the CRLF that completes a last line.
            assert!(m.len() <= input.len() + 2);
        }
    }
});
