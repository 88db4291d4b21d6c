#!/usr/bin/env bash
# Checks the deployment files under deploy/ with the tools that read them:
#   systemd-analyze verify   deploy/systemd/moat.service (where systemd-analyze exists)
#   promtool check config / check rules / test rules   deploy/prometheus/
#   the Grafana dashboard and the alerts use only metrics moat exports (src/metrics.rs)
# Usage: tests/e2e/deploy.sh [path/to/moat]
set -euo pipefail
source "$(dirname "$0")/common.sh"
WORK=$(mktemp -d /tmp/moat-deploy.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
FAILS=0
fail() {
    echo "FAIL $*"
    FAILS=$((FAILS + 1))
}

# systemd: verify needs the ExecStart binary to exist, so point it at the one just built.
if command -v systemd-analyze >/dev/null; then
    sed "s|/usr/local/bin/moat|$MOAT|g" "$ROOT/deploy/systemd/moat.service" >"$WORK/moat.service"
    # Unknown keys are only warnings (exit 0): any output at all counts as a failure.
    if out=$(systemd-analyze verify "$WORK/moat.service" 2>&1) && [[ -z $out ]]; then
        echo "ok   systemd-analyze verify moat.service"
    else
        fail "systemd-analyze verify moat.service: $out"
    fi
else
    echo "skip systemd-analyze verify (no systemd-analyze here)"
fi

# Prometheus: config, rules and the rule unit tests.
cd "$ROOT/deploy/prometheus"
for cmd in "check config prometheus.yml" "check rules moat-alerts.yml" "test rules moat-alerts.test.yml"; do
    # shellcheck disable=SC2086
    if out=$(promtool $cmd 2>&1); then echo "ok   promtool $cmd"; else fail "promtool $cmd: $out"; fi
done

# Every moat_* metric the dashboard and the alerts name must be one moat registers.
exported=$(grep -o '"moat_[a-z_]*"' "$ROOT/src/metrics.rs" | tr -d '"' | sort -u)
python3 -m json.tool "$ROOT/deploy/grafana/moat-dashboard.json" >/dev/null ||
    fail "moat-dashboard.json is not valid JSON"
used=$(grep -oh 'moat_[a-z_]*' "$ROOT/deploy/grafana/moat-dashboard.json" "$ROOT/deploy/prometheus/moat-alerts.yml" |
    sed -E 's/_(bucket|count|sum)$//' | sort -u)
for m in $used; do
    grep -qx "$m" <<<"$exported" || fail "deploy/ uses $m, which moat does not export"
done
echo "ok   $(wc -w <<<"$used") metric names in the dashboard and alerts are all exported"

# The deployment configs load (with the rules directory of this checkout).
for setup in 1 2; do
    sed "s|/etc/moat/rules|$ROOT/rules|" "$ROOT/deploy/postfix/setup$setup/moat.toml" >"$WORK/moat-$setup.toml"
    if out=$("$MOAT" lint --config "$WORK/moat-$setup.toml" 2>&1); then
        echo "ok   moat lint deploy/postfix/setup$setup/moat.toml"
    else
        fail "moat lint deploy/postfix/setup$setup/moat.toml: $out"
    fi
done

if [[ $FAILS -gt 0 ]]; then
    echo "deploy: $FAILS check(s) failed"
    exit 1
fi
echo "deploy: all checks passed"
