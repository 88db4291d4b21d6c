#!/usr/bin/env bash
# Every benchmark in sequence, output to bench/results/run-STAMP.md (about 25 minutes).
set -euo pipefail
dir=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir/results"
out=$dir/results/run-$(date +%Y%m%dT%H%M%S).md
{
    echo "# moat benchmark run $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -r); $(rustc --version)"
    for b in proxy_hop pipeline latency memory scanner; do
        echo
        echo "## $b"
        echo
        bash "$dir/$b.sh" 2>&1
    done
} | tee "$out"
echo "written: $out"
