#!/usr/bin/env bash
# 5. Memory and connections: moat's RSS with N idle sessions open (after EHLO), the memory per
# session, whether all N stay open, and the connection rate moat sustains (one message per
# connection, 100 sessions, checks off).
#
#   bench/memory.sh [N]        default 10000
#
# Needs: postfix (smtp-sink). Raises the open-files limit for itself.
set -euo pipefail
source "$(dirname "$0")/common.sh"
in_netns "$@"
N=${1:-10000}
# Each side (moat, the generator) holds N sockets.
ulimit -n $((N + 1024)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
build
mkdir -p "$WORK"
SINK=10026 MOATP=10025
start_sink $SINK
start_moat "$(config nochecks)" $MOATP $SINK
# One transaction first, so the runtime, the pool and the allocator are past their start-up.
"$LOAD" --target 127.0.0.1:$MOATP --sessions 2 --messages 100 >/dev/null
base=$(rss_kb "$MOAT_PID")
"$LOAD" --target 127.0.0.1:$MOATP --idle "$N" --hold 8 >"$WORK/idle.out" &
gen=$!
for _ in $(seq 1 600); do
    grep -q '^idle:' "$WORK/idle.out" && break
    sleep 0.1
done
sleep 2
held=$(rss_kb "$MOAT_PID")
wait $gen
res=$(tail -n 1 "$WORK/idle.out")
after=$(rss_kb "$MOAT_PID")
rate=$("$LOAD" --target 127.0.0.1:$MOATP --sessions 100 --messages 20000 --per-conn 1 | tail -n 1)
python3 - "$N" "$base" "$held" "$after" "$res" "$rate" <<'PY'
import json, sys
n, base, held, after = (int(x) for x in sys.argv[1:5])
r, rate = json.loads(sys.argv[5]), json.loads(sys.argv[6])
print("| idle sessions | opened | failed | alive after hold | RSS before | RSS with sessions | per session | RSS after close | connections/s (idle open) | msgs/s, 1 msg/conn, 100 sessions |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
per = (held - base) * 1024 / max(r["opened"], 1)
print("| %d | %d | %d | %d | %.1f MiB | %.1f MiB | %.1f KiB | %.1f MiB | %.0f | %.0f (errors %d) |" % (
    n, r["opened"], r["failed"], r["alive_after_hold"], base / 1024, held / 1024, per / 1024,
    after / 1024, r["connections_per_s"], rate["rate"], rate["errors"]))
print("memory: %d idle sessions, %.1f KiB RSS per session, %d failed" % (r["opened"], per / 1024, r["failed"] + (r["opened"] - r["alive_after_hold"])))
PY
