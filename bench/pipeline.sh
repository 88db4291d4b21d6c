#!/usr/bin/env bash
# 2. Full pipeline over SMTP: load generator -> moat (every check on: SPF, DKIM, ARC, DMARC,
# the DNS lists of rules/dnsbl.toml, the shipped rules) -> smtp-sink, with every message of
# ../shared/corpus (ham and spam, CRLF), DNS answered by dnsmasq on loopback; interleaved with
# the same load sent straight to smtp-sink. DNS: the test suite's authoritative server (fixture
# zones; NXDOMAIN with SOA for everything else, so the resolver caches like a real one).
#
#   bench/pipeline.sh [RUNS] [SESSIONS_LIST] [PER_CONN_LIST]     defaults: 3 "10 50" "1 0"
#
# PER_CONN 1 = one message per connection, 0 = all of a session's messages on one connection.
# Needs: postfix (smtp-sink). Last line: msgs/s at 10 sessions, 1 msg/conn.
set -euo pipefail
source "$(dirname "$0")/common.sh"
in_netns "$@"
RUNS=${1:-3}
SESSIONS=${2:-10 50}
PERCONN=${3:-1 0}
build
mkdir -p "$WORK"
SINK=10026 MOATP=10025
start_dns
start_sink $SINK
start_moat "$(config full "$DNS_ADDR")" $MOATP $SINK
corpus=$(corpus_dir)
n=$(ls "$corpus" | wc -l)
# Warm-up: one pass (DNS answers cached, regex DFA states built, upstream pool filled).
"$LOAD" --target 127.0.0.1:$MOATP --sessions 10 --messages "$n" --corpus "$corpus" >/dev/null
printf '| sessions | msgs/conn | run | direct msgs/s | moat msgs/s | ratio | moat CPU us/msg | accepted | refused | eod p50 direct/moat ms | eod p99 direct/moat ms |\n'
printf '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
headline=()
for s in $SESSIONS; do
    for k in $PERCONN; do
        for run in $(seq 1 "$RUNS"); do
            d=$("$LOAD" --target 127.0.0.1:$SINK --sessions "$s" --per-conn "$k" --messages "$n" --corpus "$corpus" | tail -n 1)
            t0=$(cpu_ticks "$MOAT_PID")
            m=$("$LOAD" --target 127.0.0.1:$MOATP --sessions "$s" --per-conn "$k" --messages "$n" --corpus "$corpus" | tail -n 1)
            t1=$(cpu_ticks "$MOAT_PID")
            python3 - "$s" "$k" "$run" "$d" "$m" "$((t1 - t0))" <<'PY'
import json, sys
s, k, run, d, m, ticks = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), json.loads(sys.argv[5]), int(sys.argv[6])
done = m["ok"] + m["tempfail"] + m["reject"]
print("| %s | %s | %s | %.0f | %.0f | %.3f | %.0f | %d | %d | %.2f / %.2f | %.2f / %.2f |" % (
    s, "all" if k == "0" else k, run, d["rate"], m["rate"], m["rate"] / d["rate"], ticks * 1e4 / max(done, 1),
    m["ok"], m["tempfail"] + m["reject"] + m["errors"], d["eod_ms_p50"], m["eod_ms_p50"], d["eod_ms_p99"], m["eod_ms_p99"]))
PY
            if [[ $s == 10 && $k == 1 ]]; then headline+=("$(json rate <<<"$m")"); fi
        done
    done
done
if [[ ${#headline[@]} -gt 0 ]]; then
    python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print("pipeline: full checks over SMTP, corpus, 10 sessions, 1 msg/conn: %.0f msgs/s (median of %d)" % (statistics.median(v), len(v)))' "${headline[@]}"
fi
