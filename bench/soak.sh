#!/usr/bin/env bash
# Soak run of the fault-injection scenarios (tests/it/app/faults.rs) with more messages: 50
# senders x PER_SENDER messages per scenario (default 200: 10,000 per scenario), release
# build. Prints one line per scenario with what the clients were told and what the MTA holds;
# a broken invariant fails the run.
#   bash bench/soak.sh [PER_SENDER]
set -euo pipefail
cd "$(dirname "$0")/.."
per=${1:-200}
MOAT_FAULT_PER_SENDER=$per cargo test --release --ignore-rust-version --test it faults \
  -- --nocapture --test-threads=1 2>&1 | grep -E 'fault scenario|reloads completed|test result|panicked'
