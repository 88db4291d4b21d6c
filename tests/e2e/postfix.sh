#!/usr/bin/env bash
# End-to-end test of both documented deployments (deploy/postfix/) with a real Postfix:
#   setup 1: client -> moat -> Postfix smtpd (XCLIENT)
#   setup 2: client -> Postfix smtpd -> moat (smtpd_proxy_filter, XFORWARD) -> Postfix smtpd
# Everything listens on 127.0.0.1 ports picked at run time; the clients connect from 127.0.0.2
# so Postfix's log can only show that address if XCLIENT/XFORWARD carried it. DNS for moat and
# Postfix is a dnsmasq on 127.0.0.1 answering from fixture records (nothing leaves loopback).
#
# Needs root (Postfix), postfix, swaks, dnsmasq, curl and promtool: `.ci/run` installs them.
# Usage: tests/e2e/postfix.sh [path/to/moat]   (default: builds and uses target/debug/moat)
set -euo pipefail

source "$(dirname "$0")/common.sh"
WORK=$(mktemp -d /tmp/moat-e2e.XXXXXX)
chmod 755 "$WORK"
PF=$WORK/postfix            # configuration directory
PFQ=$WORK/postfix-queue     # queue_directory (outside the configuration directory, as usual)
MAILDIR=$WORK/mail/user
PIDS=()
FAILS=0

log() { printf '== %s\n' "$*"; }
pass() { printf 'ok   %s\n' "$*"; }
fail() {
    printf 'FAIL %s\n' "$*"
    FAILS=$((FAILS + 1))
}
check() { # check "description" command...
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

postfix_master_pid() { cat "$PFQ/pid/master.pid" 2>/dev/null | tr -d ' ' || true; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    pid=$(postfix_master_pid)
    if [[ -n $pid ]]; then
        kill "$pid" 2>/dev/null || true
    fi
    # Give them a moment, then make sure every process we started is gone.
    sleep 1
    for pid in "${PIDS[@]}" $(postfix_master_pid); do
        kill -9 "$pid" 2>/dev/null || true
    done
    if [[ $FAILS -gt 0 || -n ${KEEP:-} ]]; then
        echo "logs kept in $WORK"
        tail -n 40 "$WORK"/moat-*.log "$WORK/maillog" 2>/dev/null || true
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # wait_port PORT: until something listens on 127.0.0.1:PORT (10 s at most)
    local i
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

wait_closed() { # wait_closed PORT: until nothing listens on 127.0.0.1:PORT (10 s at most)
    local i
    for i in $(seq 1 100); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "127.0.0.1:$1 still listens" >&2
    return 1
}

# Drops one service (its line and its indented -o lines) from master.cf text on stdin.
without_service() {
    awk -v svc="$1" '$1 == svc { skip = 1; next } skip && /^[ \t]/ { next } { skip = 0; print }'
}

metric() { # metric 'series{labels}' -> value (0 when absent)
    curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" |
        awk -v s="$1" 'index($0, s) == 1 { v = $NF } END { print (v == "" ? 0 : v) }'
}

DNS_PORT=$(free_port)
PF_PORT=$(free_port)      # setup 1: Postfix behind moat; setup 2: the after-filter smtpd
FRONT_PORT=$(free_port)   # setup 2: the public-facing smtpd
MOAT_PORT=$(free_port)
METRICS_PORT=$(free_port)

# --- DNS: client.e2e.test is 127.0.0.2 both ways; e2e.test allows 127.0.0.2 in SPF ------
log "dnsmasq on 127.0.0.1:$DNS_PORT"
dnsmasq --keep-in-foreground --port="$DNS_PORT" --listen-address=127.0.0.1 --bind-interfaces \
    --no-resolv --no-hosts --no-poll --local='/#/' --pid-file="$WORK/dnsmasq.pid" \
    --ptr-record=2.0.0.127.in-addr.arpa,client.e2e.test \
    --host-record=client.e2e.test,127.0.0.2 \
    --txt-record=e2e.test,"v=spf1 ip4:127.0.0.2 -all" \
    --log-facility="$WORK/dnsmasq.log" &
PIDS+=($!)

# --- Postfix: its own instance, configuration and queue under $WORK ------------------------
mkdir -p "$PF" "$PFQ" "$WORK/postfix-data" "$WORK/mail"
chown postfix:postfix "$WORK/postfix-data" "$WORK/mail"
echo "user@e2e.test user/" >"$PF/vmailbox"
cat >"$PF/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $PFQ
data_directory = $WORK/postfix-data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.e2e.test
mydomain = e2e.test
myorigin = \$myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.1/32
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = e2e.test
virtual_mailbox_base = $WORK/mail
virtual_mailbox_maps = texthash:$PF/vmailbox
virtual_uid_maps = static:$(id -u postfix)
virtual_gid_maps = static:$(id -g postfix)
virtual_minimum_uid = 1
default_transport = error:the e2e test sends no mail out
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
maillog_file = $WORK/maillog
maillog_file_prefixes = $WORK
CF
cat "$ROOT/deploy/postfix/setup1/main.cf" >>"$PF/main.cf"

# The services a Postfix instance needs, without chroot (the test has no chroot jail).
base_master_cf() {
    cat <<'CF'
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
CF
}

# A documented master.cf snippet with the test's ports, and chroot off.
snippet() { # snippet FILE
    grep -v '^#' "$1" |
        sed -e "s/127\.0\.0\.1:10025 /127.0.0.1:$PF_PORT /" \
            -e "s/smtpd_proxy_filter=127\.0\.0\.1:10024/smtpd_proxy_filter=127.0.0.1:$MOAT_PORT/" \
            -e "s/^smtp      inet/127.0.0.1:$FRONT_PORT inet/" \
            -e 's/^\([^ ]* *inet *[n-] *[n-] *\)y /\1n /'
}

postfix_start() {
    # Postfix reports start-up errors only to its log; show them when it fails.
    if ! postfix -c "$PF" start >/dev/null 2>&1; then
        tail -n 20 "$WORK/maillog" >&2 || true
        return 1
    fi
    wait_port "$1"
}
postfix_stop() {
    postfix -c "$PF" stop >/dev/null 2>&1 || true
    local pid i
    pid=$(postfix_master_pid)
    for i in $(seq 1 50); do
        [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
}

# --- moat: the documented moat.toml with the test's addresses --------------------------------
moat_start() { # moat_start SETUP_DIR LOGNAME UPSTREAM_PORT
    sed -e "s|^listen = \[.*\]|listen = [\"127.0.0.1:$MOAT_PORT\"]|" \
        -e "s|^address = \"127.0.0.1:10025\"|address = \"127.0.0.1:$3\"|" \
        -e "s|^nameservers = .*|nameservers = [\"127.0.0.1:$DNS_PORT\"]|" \
        -e "s|^listen = \"127.0.0.1:9925\"|listen = \"127.0.0.1:$METRICS_PORT\"|" \
        -e "s|^dir = \"/etc/moat/rules\"|dir = \"$ROOT/rules\"|" \
        "$1/moat.toml" >"$WORK/moat-$2.toml"
    "$MOAT" lint --config "$WORK/moat-$2.toml" >/dev/null
    RUST_LOG=info "$MOAT" serve --config "$WORK/moat-$2.toml" >>"$WORK/moat-$2.log" 2>&1 &
    MOAT_PID=$!
    PIDS+=("$MOAT_PID")
    wait_port "$MOAT_PORT"
    wait_port "$METRICS_PORT"
}
moat_stop() {
    kill "$MOAT_PID" 2>/dev/null || true
    wait "$MOAT_PID" 2>/dev/null || true
}

GTUBE='XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X'

send() { # send PORT TO ID BODY -> swaks transcript in $WORK/swaks-ID.txt, exit status returned
    swaks --server "127.0.0.1:$1" --local-interface 127.0.0.2 --helo client.e2e.test \
        --from sender@e2e.test --to "$2" \
        --header "Message-Id: <$3@client.e2e.test>" --header "Subject: e2e $3" \
        --body "$4" --timeout 60 >"$WORK/swaks-$3.txt" 2>&1
}
said() { grep -q -- "$2" "$WORK/swaks-$1.txt"; }
mailbox() { grep -rl -- "$1" "$MAILDIR" 2>/dev/null | head -n 1; }
delivered() { [[ -n $(mailbox "Message-Id: <$1@") ]]; }
in_maillog() { grep -q -- "$1" "$WORK/maillog"; }

run_setup() { # run_setup N
    local n=$1 dir=$ROOT/deploy/postfix/setup$1 entry
    { base_master_cf; snippet "$dir/master.cf"; } >"$PF/master.cf"
    if [[ $n == 1 ]]; then
        entry=$MOAT_PORT
        postfix_start "$PF_PORT"
        moat_start "$dir" "$n" "$PF_PORT"
    else
        entry=$FRONT_PORT
        moat_start "$dir" "$n" "$PF_PORT"
        postfix_start "$FRONT_PORT"
    fi
    local before_accept before_reject before_rcpt
    before_accept=$(metric 'moat_transactions_total{action="accept",stage="data"}')
    before_reject=$(metric 'moat_transactions_total{action="reject",stage="data"}')

    log "setup $n: clean message"
    check "setup $n: clean message accepted (250)" send "$entry" user@e2e.test "clean$n" "Hello from the e2e test."
    postfix_flush_wait "clean$n"
    check "setup $n: clean message delivered" delivered "clean$n"
    local file
    file=$(mailbox "Message-Id: <clean$n@")
    check "setup $n: delivered copy has moat's X-Spam-Score" grep -q '^X-Spam-Score:' "${file:-/dev/null}"
    check "setup $n: moat's SPF verdict is for 127.0.0.2 (spf=pass)" grep -q 'spf=pass' "${file:-/dev/null}"
    # (hickory answers 127/8 PTR queries itself with "localhost", RFC 6761, so iprev is not
    # "pass" here; the point is which address it was about.)
    check "setup $n: moat's reverse DNS check was for 127.0.0.2" grep -q 'policy.iprev=127.0.0.2' "${file:-/dev/null}"
    check "setup $n: Postfix logged the real client 127.0.0.2" in_maillog "client=.*\[127\.0\.0\.2\]"
    local qid
    qid=$(grep -o 'queued as [0-9A-Za-z]*' "$WORK/swaks-clean$n.txt" | head -n 1 | awk '{print $3}')
    if [[ $n == 1 ]]; then
        check "setup 1: moat's log line carries Postfix's queue id $qid" grep -q "queue_id=\"$qid\"" "$WORK/moat-1.log"
    fi

    log "setup $n: GTUBE"
    if send "$entry" user@e2e.test "gtube$n" "$GTUBE"; then fail "setup $n: GTUBE was accepted"; fi
    check "setup $n: GTUBE refused with 550" said "gtube$n" '<\*\* *550'
    sleep 1
    check "setup $n: GTUBE never reached the mailbox" bash -c "! grep -rq 'gtube$n@' '$MAILDIR'"
    check "setup $n: GTUBE never reached Postfix's queue" bash -c "! grep -q 'gtube$n@' '$WORK/maillog'"

    log "setup $n: unknown recipient"
    if send "$entry" nobody@e2e.test "unknown$n" "To nobody."; then fail "setup $n: unknown recipient accepted"; fi
    check "setup $n: Postfix's 550 for the unknown recipient reaches the client at RCPT" \
        said "unknown$n" '<\*\* *550 5\.1\.1.*nobody@e2e.test'

    log "setup $n: metrics"
    local scrape=$WORK/metrics-$n.txt
    curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" >"$scrape"
    check "setup $n: promtool check metrics passes on a real scrape" promtool check metrics <"$scrape"
    local accept reject
    accept=$(metric 'moat_transactions_total{action="accept",stage="data"}')
    reject=$(metric 'moat_transactions_total{action="reject",stage="data"}')
    check "setup $n: accepted transactions counted ($before_accept -> $accept)" awk "BEGIN { exit !($accept > $before_accept) }"
    if [[ $n == 1 ]]; then
        check "setup 1: rejected transactions counted ($before_reject -> $reject)" awk "BEGIN { exit !($reject > $before_reject) }"
        check "setup 1: recipient refused by Postfix counted" \
            awk "BEGIN { exit !($(metric 'moat_recipients_total{action="reject",stage="rcpt"}') >= 1) }"
    fi
    check "setup $n: GTUBE rule hit counted" awk "BEGIN { exit !($(metric 'moat_rule_hits_total{rule="GTUBE"}') >= 1) }"
    check "setup $n: DNS lookups on loopback counted" grep -q '^moat_dns_lookups_total{.*zone="spf"' "$scrape"
    check "setup $n: /readyz says ready" curl -sf "http://127.0.0.1:$METRICS_PORT/readyz" -o /dev/null

    if [[ $n == 1 ]]; then
        log "setup 1: Postfix stopped"
        postfix_stop
        if send "$entry" user@e2e.test "down1" "While Postfix is down."; then fail "setup 1: accepted while Postfix was down"; fi
        check "setup 1: client gets 4xx while Postfix is down" said down1 '<\*\* *4[0-9][0-9]'
        check "setup 1: no 250 for the message while Postfix is down" bash -c "! grep -q '<- *250 .*queued' '$WORK/swaks-down1.txt'"
        postfix_start "$PF_PORT"
        check "setup 1: after restart the resent message is accepted" send "$entry" user@e2e.test "down1b" "Resent after restart."
        postfix_flush_wait "down1b"
        check "setup 1: and delivered" delivered "down1b"
        check "setup 1: moat counted the upstream failure" \
            awk "BEGIN { exit !($(metric 'moat_upstream_errors_total{kind="connect"}') >= 1) }"
    else
        log "setup 2: moat stopped"
        moat_stop
        if send "$entry" user@e2e.test "down2" "While moat is down."; then fail "setup 2: accepted while moat was down"; fi
        check "setup 2: client gets 4xx from Postfix while moat is down" said down2 '<\*\* *4[0-9][0-9]'
        sleep 1
        check "setup 2: nothing delivered while moat is down" bash -c "! grep -rq 'down2@' '$MAILDIR'"
        moat_start "$dir" "$n" "$PF_PORT"
        check "setup 2: after restart the resent message is accepted" send "$entry" user@e2e.test "down2b" "Resent after restart."
        postfix_flush_wait "down2b"
        check "setup 2: and delivered" delivered "down2b"

        log "setup 2: the after-filter smtpd removed"
        { base_master_cf; snippet "$dir/master.cf" | without_service "127.0.0.1:$PF_PORT"; } >"$PF/master.cf"
        postfix -c "$PF" reload >/dev/null 2>&1
        wait_closed "$PF_PORT"
        if send "$entry" user@e2e.test "down3" "While the after-filter smtpd is gone."; then fail "setup 2: accepted without the after-filter smtpd"; fi
        check "setup 2: client gets 4xx when moat cannot reach the after-filter smtpd" said down3 '<\*\* *4[0-9][0-9]'
        sleep 1
        check "setup 2: nothing delivered meanwhile" bash -c "! grep -rq 'down3@' '$MAILDIR'"
        check "setup 2: moat counted the upstream failure" \
            awk "BEGIN { exit !($(metric 'moat_upstream_errors_total{kind="connect"}') >= 1) }"
        { base_master_cf; snippet "$dir/master.cf"; } >"$PF/master.cf"
        postfix -c "$PF" reload >/dev/null 2>&1
        wait_port "$PF_PORT"
        check "setup 2: once it is back the message is accepted" send "$entry" user@e2e.test "down3b" "Resent when it is back."
        postfix_flush_wait "down3b"
        check "setup 2: and delivered" delivered "down3b"
    fi

    moat_stop
    postfix_stop
}

# Postfix delivers asynchronously after 250: wait for the message to reach the mailbox.
postfix_flush_wait() {
    local i
    for i in $(seq 1 100); do
        delivered "$1" && return 0
        sleep 0.1
    done
    return 0
}

run_setup 1
run_setup 2

if [[ $FAILS -gt 0 ]]; then
    echo "e2e: $FAILS check(s) failed"
    exit 1
fi
echo "e2e: all checks passed"
