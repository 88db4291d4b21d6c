# Shared by the bench/ scripts (sourced). Everything runs on 127.0.0.1 inside a private network
# namespace the script creates (unshare -n): no packet can leave the machine, and DNS goes to
# the benchmark's own dnsmasq. Every process started is recorded and killed by PID on exit.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SHARED=${MOAT_SHARED:-$ROOT/../shared}
WORK=${MOAT_BENCH_WORK:-/tmp/moat-bench}
RESULTS=${MOAT_BENCH_RESULTS:-$ROOT/bench/results}
PIDS=()

need() { # need CMD PACKAGE: say what is missing instead of installing it
    if ! command -v "$1" >/dev/null; then
        echo "bench: needs $1 (Debian package $2: apt-get install $2)" >&2
        exit 2
    fi
}

in_netns() { # re-execute the calling script in a fresh network namespace with lo up
    if [[ -z ${MOAT_BENCH_NETNS:-} ]]; then
        need unshare util-linux
        exec unshare -n env MOAT_BENCH_NETNS=1 bash "$0" "$@"
    fi
    ip link set lo up 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

build() { # builds moat and the load tools in release mode; sets MOAT, LOAD, SCAN
    (cd "$ROOT" && cargo build --release --ignore-rust-version --locked --bin moat --quiet)
    MOAT=$TARGET/release/moat
    local out
    out=$(cd "$ROOT" && cargo bench --ignore-rust-version --locked --no-run --bench smtp_load --bench scan --bench dns_server 2>&1)
    LOAD=$(grep -o 'benches/smtp_load.rs ([^)]*)' <<<"$out" | sed 's/.*(\(.*\))/\1/')
    SCAN=$(grep -o 'benches/scan.rs ([^)]*)' <<<"$out" | sed 's/.*(\(.*\))/\1/')
    DNSD=$(grep -o 'benches/dns_server.rs ([^)]*)' <<<"$out" | sed 's/.*(\(.*\))/\1/')
    [[ -x $MOAT && -x $LOAD && -x $SCAN && -x $DNSD ]] || { echo "bench: build failed: $out" >&2; exit 1; }
}

wait_port() {
    local i
    for i in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "bench: nothing listens on 127.0.0.1:$1" >&2
    exit 1
}

start_sink() { # start_sink PORT
    need smtp-sink postfix
    smtp-sink -u nobody "127.0.0.1:$1" 1024 &
    PIDS+=($!)
    wait_port "$1"
}

start_dns() { # start_dns: the test suite's authoritative server (fixture zones + root); sets DNS_ADDR
    "$DNSD" >"$WORK/dns.out" 2>&1 &
    PIDS+=($!)
    local i
    for i in $(seq 1 100); do
        DNS_ADDR=$(sed -n 's/^dns: listening on //p' "$WORK/dns.out")
        [[ -n $DNS_ADDR ]] && return 0
        sleep 0.05
    done
    echo "bench: the DNS server did not start" >&2
    exit 1
}

config() { # config NAME [DNS_ADDR] -> path of bench/conf/NAME.toml with placeholders filled
    mkdir -p "$WORK"
    sed -e "s|@ROOT@|$ROOT|g" -e "s|@DNS@|${2:-127.0.0.1:9}|g" "$ROOT/bench/conf/$1.toml" >"$WORK/$1.toml"
    echo "$WORK/$1.toml"
}

start_moat() { # start_moat CONFIG LISTEN_PORT UPSTREAM_PORT; sets MOAT_PID
    "$MOAT" serve --config "$1" --listen "127.0.0.1:$2" --upstream "127.0.0.1:$3" \
        >>"$WORK/moat.log" 2>&1 &
    MOAT_PID=$!
    PIDS+=("$MOAT_PID")
    wait_port "$2"
}

stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

cpu_ticks() { # user+system clock ticks of PID (and its finished children)
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

json() { # json FIELD <<< '{...}' -> value
    python3 -c 'import json,sys; v=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(v[sys.argv[1]])' "$1"
}

corpus_dir() { # corpus_dir -> a directory with every corpus message, CRLF, one file each
    local dir=$WORK/corpus-crlf
    if [[ ! -d $dir ]]; then
        [[ -d $SHARED/corpus ]] || { echo "bench: needs ../shared/corpus" >&2; exit 2; }
        mkdir -p "$dir"
        python3 - "$SHARED/corpus" "$dir" <<'PY'
import os, sys
src, dst = sys.argv[1], sys.argv[2]
n = 0
for cls in ("ham", "spam"):
    for root, _, files in sorted(os.walk(os.path.join(src, cls))):
        for f in sorted(files):
            raw = open(os.path.join(root, f), "rb").read()
            raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            n += 1
            open(os.path.join(dst, "%05d.eml" % n), "wb").write(raw)
print("corpus: %d messages" % n, file=sys.stderr)
PY
    fi
    echo "$dir"
}
