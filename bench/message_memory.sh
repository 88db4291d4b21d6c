#!/usr/bin/env bash
# Memory per session in the worst case: a message at the size limit (25 MiB by default), built
# to make every check work hardest (a base64 text part that decodes to as many bytes as MIME
# allows, and an HTML part), through moat with all checks on. Reports moat's peak RSS growth
# (VmHWM) for 1 and then 4 such messages at once, per message and as a multiple of the
# message size.
#
#   bench/message_memory.sh [SIZE_MIB]     default 24 (under the 25 MiB limit)
#
# Needs: postfix (smtp-sink).
set -euo pipefail
source "$(dirname "$0")/common.sh"
in_netns "$@"
MIB=${1:-24}
build
mkdir -p "$WORK/big"
SINK=10046 MOATP=10045
start_sink $SINK
start_dns
cfg=$(config full "$DNS_ADDR")
start_moat "$cfg" $MOATP $SINK
python3 - "$WORK/big/1.eml" "$MIB" <<'PY'
import base64, sys
path, mib = sys.argv[1], int(sys.argv[2])
target = mib * 1024 * 1024
words = b"offer account verify click here http://evil-links.example/path?id=1 " * 8
head = (b"From: big@example.test\r\nTo: rcpt@example.test\r\nSubject: big\r\n"
        b"Message-ID: <big@example.test>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/alternative; boundary=BB\r\n\r\n")
# Two thirds base64 text (decodes to text the rules and the classifier read), one third HTML.
b64_raw = words * ((target * 2 // 3) * 3 // 4 // len(words))
b64 = base64.encodebytes(b64_raw).replace(b"\n", b"\r\n")
html_line = b"<p><a href=\"http://evil-links.example/\">" + words + b"</a></p>\r\n"
html = html_line * ((target - len(head) - len(b64)) // len(html_line) - 1)
msg = (head + b"--BB\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
       + b64 + b"--BB\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html + b"--BB--\r\n")
open(path, "wb").write(msg)
print("message: %.1f MiB" % (len(msg) / 1048576), file=sys.stderr)
PY
size_kb=$(( $(stat -c %s "$WORK/big/1.eml") / 1024 ))
hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$MOAT_PID/status"; }
"$LOAD" --target 127.0.0.1:$MOATP --sessions 2 --messages 100 >/dev/null
base=$(hwm)
"$LOAD" --target 127.0.0.1:$MOATP --sessions 1 --messages 1 --corpus "$WORK/big" | tail -n 1 >"$WORK/big1.json"
one=$(hwm)
"$LOAD" --target 127.0.0.1:$MOATP --sessions 4 --messages 4 --per-conn 1 --corpus "$WORK/big" | tail -n 1 >"$WORK/big4.json"
four=$(hwm)
python3 - "$size_kb" "$base" "$one" "$four" "$WORK/big1.json" "$WORK/big4.json" <<'PY'
import json, sys
size, base, one, four = (int(x) for x in sys.argv[1:5])
r1, r4 = (json.load(open(p)) for p in sys.argv[5:7])
print("| message | peak RSS before | after 1 message | growth per message | after 4 at once | growth per message | errors |")
print("|---:|---:|---:|---:|---:|---:|---:|")
g1, g4 = one - base, (four - base) / 4
print("| %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB (%.1fx) | %.1f MiB | %.1f MiB (%.1fx) | %d, %d |" % (
    size / 1024, base / 1024, one / 1024, g1 / 1024, g1 / size, four / 1024, g4 / 1024, g4 / size,
    r1.get("errors", -1), r4.get("errors", -1)))
PY
