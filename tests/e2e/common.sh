# Sourced by the end-to-end scripts: ROOT (the checkout) and MOAT (the binary: the script's
# first argument, or a debug build made here).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
MOAT=${1:-}
if [[ -z $MOAT ]]; then
    (cd "$ROOT" && cargo build --ignore-rust-version --locked --bin moat --quiet)
    MOAT=$TARGET/debug/moat
fi
