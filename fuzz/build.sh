#!/usr/bin/env bash
# Builds the fuzz targets as `cargo fuzz build -O` does (libFuzzer, AddressSanitizer, the same
# coverage flags), plus --ignore-rust-version: cargo-fuzz cannot pass it on, and mail-parser
# declares a newer Rust than the installed nightly (see ../shared/DESIGN.md, "Versions that
# matter"). Needs the nightly toolchain. Binaries: target/x86_64-unknown-linux-gnu/release/.
set -euo pipefail
cd "$(dirname "$0")"
# Always fuzz/target (run.sh looks there), whatever CARGO_TARGET_DIR the caller set: these
# builds use other flags than the project's and share nothing with its target directory.
export CARGO_TARGET_DIR="$PWD/target"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
 -Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Zsanitizer=address \
 -Cllvm-args=-sanitizer-coverage-stack-depth -Ccodegen-units=1"
export ASAN_OPTIONS="detect_odr_violation=0"
exec cargo +nightly build --manifest-path ./Cargo.toml --target x86_64-unknown-linux-gnu \
  --release --config 'profile.release.debug="line-tables-only"' \
  --config 'profile.release.debug-assertions=true' --config 'profile.release.overflow-checks=true' \
  --ignore-rust-version --bins "$@"
