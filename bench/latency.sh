#!/usr/bin/env bash
# 4. Added latency at end of data: the time from the client's final "." to moat's reply, minus
# the same time measured straight against smtp-sink, p50 and p99, at 1, 10 and 50 concurrent
# sessions; with checks off (5 KB messages) and with every check on (the corpus; DNS answers
# cached by a warm-up pass, so the figure excludes DNS time).
#
#   bench/latency.sh [MESSAGES]      default 5000 per measurement
#
# Needs: postfix (smtp-sink). Last line: added p99 at 50 sessions, full checks.
set -euo pipefail
source "$(dirname "$0")/common.sh"
in_netns "$@"
M=${1:-5000}
build
mkdir -p "$WORK"
SINK=10026 MOATP=10025
start_dns
start_sink $SINK
corpus=$(corpus_dir)
n=$(ls "$corpus" | wc -l)
echo "| checks | sessions | direct p50 / p99 ms | moat p50 / p99 ms | added p50 / p99 ms | moat msgs/s |"
echo "|---|---:|---:|---:|---:|---:|"
last=""
for mode in nochecks full; do
    start_moat "$(config $mode "$DNS_ADDR")" $MOATP $SINK
    body=(--size 5120)
    if [[ $mode == full ]]; then
        body=(--corpus "$corpus")
        "$LOAD" --target 127.0.0.1:$MOATP --sessions 10 --messages "$n" "${body[@]}" >/dev/null
    fi
    for s in 1 10 50; do
        d=$("$LOAD" --target 127.0.0.1:$SINK --sessions $s --per-conn 0 --messages "$M" "${body[@]}" | tail -n 1)
        m=$("$LOAD" --target 127.0.0.1:$MOATP --sessions $s --per-conn 0 --messages "$M" "${body[@]}" | tail -n 1)
        line=$(python3 - "$mode" "$s" "$d" "$m" <<'PY'
import json, sys
mode, s, d, m = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
print("| %s | %s | %.2f / %.2f | %.2f / %.2f | %.2f / %.2f | %.0f |" % (
    "off" if mode == "nochecks" else "all", s, d["eod_ms_p50"], d["eod_ms_p99"], m["eod_ms_p50"], m["eod_ms_p99"],
    m["eod_ms_p50"] - d["eod_ms_p50"], m["eod_ms_p99"] - d["eod_ms_p99"], m["rate"]))
PY
)
        echo "$line"
        last=$line
    done
    stop_pid "$MOAT_PID"
done
echo "latency: $last" | awk -F'|' '{ print "latency: added p50 / p99 at 50 sessions, all checks:" $6 "ms" }'
