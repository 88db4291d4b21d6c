#!/usr/bin/env bash
# Runs fuzz targets for a while each: `fuzz/run.sh SECONDS [TARGET...]` (default: all).
# The working corpus is fuzz/corpus/TARGET (seeded from fuzz/seeds/TARGET); crashes go to
# fuzz/artifacts/TARGET/. Prints one summary line per target: executions, coverage (edges),
# features, corpus size, crashes. Exit code 1 when a target crashed.
set -uo pipefail
cd "$(dirname "$0")"
secs=${1:-60}; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(command data proxy config message session)
bin=target/x86_64-unknown-linux-gnu/release
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log=$(mktemp)
  # -rss_limit_mb: moat bounds what it buffers; a run that grows past 2 GiB is a finding.
  ASAN_OPTIONS="detect_odr_violation=0:detect_leaks=0" "$bin/$t" "corpus/$t" "seeds/$t" \
    -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="artifacts/$t/" >"$log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*')
  ft=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*')
  corp=$(echo "$last" | grep -o 'corp: [0-9]*' | grep -o '[0-9]*')
  crashes=$(find "artifacts/$t" -type f | wc -l)
  echo "$t: ${secs}s, ${execs:-?} executions, cov ${cov:-?} edges, ft ${ft:-?}, corpus ${corp:-?}, crashes ${crashes}, exit $rc"
  if [ "$rc" -ne 0 ]; then
    status=1
    grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5
  fi
  rm -f "$log"
done
exit $status
