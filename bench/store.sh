#!/usr/bin/env bash
# Added latency per RCPT of the stateful checks, per store backend: the RCPT reply time through
# moat with greylisting (a known triplet: one lookup) and two rate limits (two sliding-window
# counts) on, minus the same through moat with no checks; embedded (redb) and Redis.
#
#   bench/store.sh [MESSAGES]      default 5000 per measurement, 10 sessions, kept open
#
# Needs: postfix (smtp-sink); redis-server for the Redis row (skipped with a note when
# missing). Last line: added RCPT p50 for each backend.
set -euo pipefail
source "$(dirname "$0")/common.sh"
in_netns "$@"
M=${1:-5000}
build
mkdir -p "$WORK"
SINK=10026 MOATP=10025 REDISP=10079
start_sink $SINK
load() { "$LOAD" --target 127.0.0.1:$MOATP --sessions 10 --per-conn 0 --messages "$1" --size 2048 | tail -n 1; }
measure() { # measure CONFIG -> JSON of the measured run (after a warm-up that learns the triplet)
    start_moat "$1" $MOATP $SINK
    load 200 >/dev/null
    load "$M"
    stop_pid "$MOAT_PID"
}
echo "| store | RCPT p50 / p99 ms | added p50 / p99 ms | msgs/s |"
echo "|---|---:|---:|---:|"
base=$(measure "$(config nochecks)")
row() { # row NAME JSON
    python3 - "$1" "$base" "$2" <<'PY'
import json, sys
name, b, m = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
print("| %s | %.3f / %.3f | %.3f / %.3f | %.0f |" % (name, m["rcpt_ms_p50"], m["rcpt_ms_p99"],
    m["rcpt_ms_p50"] - b["rcpt_ms_p50"], m["rcpt_ms_p99"] - b["rcpt_ms_p99"], m["rate"]))
PY
}
row "none (checks off)" "$base"
summary=""
embedded=$(config stateful)
printf '\n[store]\nbackend = "embedded"\npath = "%s/state.redb"\n' "$WORK/store-embedded" >>"$embedded"
rm -rf "$WORK/store-embedded"
line=$(row "embedded (redb)" "$(measure "$embedded")")
echo "$line"
summary="embedded $(awk -F'|' '{ print $4 }' <<<"$line" | xargs)"
if command -v redis-server >/dev/null; then
    redis-server --bind 127.0.0.1 --port $REDISP --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
    PIDS+=($!)
    wait_port $REDISP
    redis=$WORK/stateful-redis.toml
    cp "$(config stateful)" "$redis"
    printf '\n[store]\nbackend = "redis"\nurl = "redis://127.0.0.1:%s/0"\n' $REDISP >>"$redis"
    line=$(row "redis (loopback)" "$(measure "$redis")")
    echo "$line"
    summary="$summary; redis $(awk -F'|' '{ print $4 }' <<<"$line" | xargs)"
else
    echo "redis-server not installed: Redis row skipped (apt-get install redis-server)"
fi
echo "store: added RCPT latency p50 / p99 ms: $summary"
