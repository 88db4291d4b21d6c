//! The offline commands.

mod eval;
