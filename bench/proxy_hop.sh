#!/usr/bin/env bash
# 1. Proxy hop, checks off: smtp-source -> moat -> smtp-sink and smtp-source -> Postfix
# smtpd_proxy_filter -> smtp-sink, each interleaved with smtp-source -> smtp-sink direct
# (A B A B ...), through ../shared/bench-peers/02_postfix_hop.py (its own network namespace,
# cgroup CPU accounting, processes stopped by PID).
#
#   bench/proxy_hop.sh [--runs 3] [--count 10000] [--sizes 5120,51200] [--sessions 1,10,100] [--modes conn,keep]
#
# Needs: postfix (smtp-source, smtp-sink, the Postfix hop). Last line: moat's ratio to direct
# and to the Postfix hop at 5 KB, 10 sessions, one message per connection.
set -euo pipefail
source "$(dirname "$0")/common.sh"
need smtp-source postfix
need postfix postfix
build
mkdir -p "$WORK" "$RESULTS"
args=(--runs 3 --count 10000 --sizes 5120,51200 --sessions 1,10,100 --modes conn,keep)
[[ $# -gt 0 ]] && args=("$@")
conf=$(config nochecks)
export PEERS_WORK=$WORK/peers PEERS_RESULTS=$RESULTS
python3 "$SHARED/bench-peers/02_postfix_hop.py" --paths proxy \
    --proxy-cmd "$MOAT serve --config $conf --listen 127.0.0.1:10025 --upstream 127.0.0.1:10026" \
    "${args[@]}" | tee "$WORK/proxy_hop.out" | grep -v '^\(start\|stop\|  \)' || true
latest=$(ls -t "$RESULTS"/02_postfix_hop-*.json | head -n 1)
python3 - "$latest" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rows = {(r["path"], r["size"], r["sessions"], r["mode"]): r for r in d["results"]}
print()
print("| size | sessions | mode | direct msgs/s | Postfix hop msgs/s | ratio | moat msgs/s | ratio | moat/Postfix | moat CPU us/msg | Postfix CPU us/msg |")
print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for (path, size, s, mode), r in sorted(rows.items(), key=lambda kv: kv[0][1:]):
    if path != "cmd":
        continue
    p = rows.get(("proxy", size, s, mode))
    moat = r["via_rate"]["median"]
    pf = p["via_rate"]["median"] if p else float("nan")
    print("| %d | %d | %s | %.0f | %.0f | %.3f | %.0f | %.3f | %.2fx | %.0f | %.0f |" % (
        size, s, mode, r["direct_rate"]["median"], pf, p["ratio"]["median"] if p else float("nan"),
        moat, r["ratio"]["median"], moat / pf if p else float("nan"),
        r["postfix_us_per_msg"]["median"], p["postfix_us_per_msg"]["median"] if p else float("nan")))
k = rows.get(("cmd", 5120, 10, "conn"))
p = rows.get(("proxy", 5120, 10, "conn"))
if k and p:
    print("proxy_hop 5 KB, 10 sessions, 1 msg/conn: moat %.0f msgs/s = %.3fx direct, %.2fx the Postfix hop (%.0f msgs/s, %.3fx direct)" % (
        k["via_rate"]["median"], k["ratio"]["median"], k["via_rate"]["median"] / p["via_rate"]["median"],
        p["via_rate"]["median"], p["ratio"]["median"]))
PY
