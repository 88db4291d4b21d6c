#!/usr/bin/env bash
# 4. Added latency at end of data: the time from the client's final "." to moat's reply, minus
# the same time measured straight against smtp-sink, p50 and p99, at 1, 10 and 50 concurrent
# sessions; with checks off (5 KB messages) and with every check on (the corpus; DNS answers
# cached by a warm-up pass, so the figure excludes DNS time).
#
#   bench/latency.sh [MESSAGES]      default 5000 per measurement
#
# The 1/10/50-session rows send as fast as replies come back, so at 50 sessions both cores
# are saturated and the p99 is mostly queueing for a core. The "50 @ R/s" rows offer a fixed
# load instead (LAT_RATE, default 1000 messages per second over 50 sessions, open loop), which
# is how a latency target is usually read: added latency at a load the machine carries.
#
# Needs: postfix (smtp-sink). Last line: added p99 at 50 sessions, full checks.
set -euo pipefail
source "$(dirname "$0")/common.sh"
in_netns "$@"
M=${1:-5000}
RATE=${LAT_RATE:-1000}
build
mkdir -p "$WORK"
SINK=10026 MOATP=10025
start_dns
start_sink $SINK
corpus=$(corpus_dir)
n=$(ls "$corpus" | wc -l)
echo "| checks | sessions | direct p50 / p99 ms | moat p50 / p99 ms | added p50 / p99 ms | moat msgs/s |"
echo "|---|---:|---:|---:|---:|---:|"
saturated="" paced=""
for mode in nochecks full; do
    start_moat "$(config $mode "$DNS_ADDR")" $MOATP $SINK
    body=(--size 5120)
    if [[ $mode == full ]]; then
        body=(--corpus "$corpus")
        "$LOAD" --target 127.0.0.1:$MOATP --sessions 10 --messages "$n" "${body[@]}" >/dev/null
    fi
    for s in 1 10 50 "50@$RATE"; do
        sessions=${s%@*} pace=() label=$s
        if [[ $s == *@* ]]; then pace=(--rate "${s#*@}") label="$sessions @ ${s#*@}/s"; fi
        d=$("$LOAD" --target 127.0.0.1:$SINK --sessions "$sessions" --per-conn 0 --messages "$M" "${pace[@]}" "${body[@]}" | tail -n 1)
        m=$("$LOAD" --target 127.0.0.1:$MOATP --sessions "$sessions" --per-conn 0 --messages "$M" "${pace[@]}" "${body[@]}" | tail -n 1)
        line=$(python3 - "$mode" "$label" "$d" "$m" <<'PY'
import json, sys
mode, s, d, m = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
print("| %s | %s | %.2f / %.2f | %.2f / %.2f | %.2f / %.2f | %.0f |" % (
    "off" if mode == "nochecks" else "all", s, d["eod_ms_p50"], d["eod_ms_p99"], m["eod_ms_p50"], m["eod_ms_p99"],
    m["eod_ms_p50"] - d["eod_ms_p50"], m["eod_ms_p99"] - d["eod_ms_p99"], m["rate"]))
PY
)
        echo "$line"
        [[ $mode == full && $s == 50 ]] && saturated=$line
        [[ $mode == full && $s == *@* ]] && paced=$line
    done
    stop_pid "$MOAT_PID"
done
added() { awk -F'|' '{ print $6 }' <<<"$1" | xargs; }
echo "latency: added p50 / p99 ms, all checks: 50 sessions saturated $(added "$saturated"); 50 sessions at $RATE msgs/s $(added "$paced")"
