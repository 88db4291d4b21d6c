#!/usr/bin/env bash
# 3. Scanner throughput vs peers on the same messages in the same run: moat's offline pipeline
# (benches/scan.rs, all cores, network checks off) vs Rspamd (rspamc, network modules off) and
# SpamAssassin (spamc/spamd, local tests), through ../shared/bench-peers/03 and 04.
#
#   bench/scanner.sh [SAMPLE_EVERY]     default 8: every 8th corpus message (about 980)
#
# Needs: rspamd, spamassassin, spamc, spamd (sh ../shared/bench-peers/setup.sh installs them).
# The peers are skipped with a note when missing. Last line: moat's ratios to each peer.
set -euo pipefail
source "$(dirname "$0")/common.sh"
EVERY=${1:-8}
build
mkdir -p "$WORK" "$RESULTS"
all=$(corpus_dir)
sample=$WORK/peers/corpus
# moat warms up on other messages than it is measured on (every EVERYth, offset by half), so
# its lazy DFAs have not seen the measured text: in a server every message is new.
warm=$WORK/scan-warmup
rm -rf "$sample" "$warm"
mkdir -p "$sample" "$warm"
i=0
for f in "$all"/*.eml; do
    if ((i % EVERY == 0)); then cp "$f" "$sample/"; fi
    if ((i % EVERY == EVERY / 2)); then cp "$f" "$warm/"; fi
    i=$((i + 1))
done
n=$(ls "$sample" | wc -l)
echo "sample: $n messages (every ${EVERY}th of $(ls "$all" | wc -l)), mean $(($(du -sb "$sample" | cut -f1) / n)) bytes"
export PEERS_WORK=$WORK/peers PEERS_RESULTS=$RESULTS

moat_line=$("$SCAN" "$sample" --passes 1 --warmup "$warm" | tail -n 1)
echo "moat: $moat_line"
rspamd_line="" sa_line=""
if command -v rspamd >/dev/null && command -v rspamc >/dev/null; then
    rspamd_line=$(python3 "$SHARED/bench-peers/03_rspamd_scan.py" --conc 8,16 --runs 2 --passes 2 2>&1 | tee "$WORK/rspamd.out" | tail -n 1)
    echo "$rspamd_line"
else
    echo "rspamd not installed: skipped (sh ../shared/bench-peers/setup.sh)"
fi
if command -v spamd >/dev/null && command -v spamc >/dev/null; then
    sa_line=$(python3 "$SHARED/bench-peers/04_spamassassin_scan.py" --conc 4 --runs 1 --passes 1 2>&1 | tee "$WORK/sa.out" | tail -n 1)
    echo "$sa_line"
else
    echo "spamassassin not installed: skipped (sh ../shared/bench-peers/setup.sh)"
fi
# Rules each scanner ran: moat's rule files; SpamAssassin's scored rules; Rspamd's symbols.
sa_rules=$( (cat /usr/share/spamassassin/*.cf /var/lib/spamassassin/*/updates_spamassassin_org/*.cf 2>/dev/null || true) | grep -c '^score ' || true)
rspamd_symbols=$(grep -o 'symbols: [0-9]*' "$WORK/rspamd.out" 2>/dev/null | head -n 1 || true)
python3 - "$moat_line" "$rspamd_line" "$sa_line" "$sa_rules" <<'PY'
import json, re, sys
m = json.loads(sys.argv[1])
def parse(line):
    g = re.search(r"([0-9.]+) msgs/s, ([0-9.]+) ms CPU/msg", line or "")
    return (float(g.group(1)), float(g.group(2))) if g else None
r, s = parse(sys.argv[2]), parse(sys.argv[3])
print()
print("| scanner | rules | msgs/s | CPU ms/msg | moat speed-up (msgs/s) |")
print("|---|---:|---:|---:|---:|")
print("| moat (benches/scan.rs, %d threads) | %d rules + code checks | %.0f | %.3f | 1x |" % (m["threads"], m["rules"], m["rate"], m["cpu_ms_per_msg"]))
if r:
    print("| Rspamd (rspamc, network modules off) | stock Debian config | %.0f | %.2f | %.1fx |" % (r[0], r[1], m["rate"] / r[0]))
if s:
    print("| SpamAssassin (spamd -L, spamc) | %s scored rules | %.1f | %.1f | %.0fx |" % (sys.argv[4], s[0], s[1], m["rate"] / s[0]))
parts = ["moat %.0f msgs/s" % m["rate"]]
if r: parts.append("%.1fx Rspamd" % (m["rate"] / r[0]))
if s: parts.append("%.0fx SpamAssassin" % (m["rate"] / s[0]))
print("scanner: " + ", ".join(parts))
PY
