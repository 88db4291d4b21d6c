//! Scores into actions and replies, and the fields moat adds.

mod decisions;
