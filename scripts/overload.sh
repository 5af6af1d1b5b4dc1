#!/usr/bin/env bash
# What it shows: the broker under abuse keeps serving everyone else, its memory stays bounded, and
# each abuse leaves a log line saying what was refused. Four cases, each with a fresh broker on
# tcp://127.0.0.1 and a well-behaved echo worker next to the abuser:
#   herd       200 clients connect at once and ask a slow service (--max-queue 50): the requests
#              beyond the queue limit are refused ("refused N request(s): queue full"), every
#              other one is answered, and none is lost.
#   silent     a worker that takes a request and never replies, though it heartbeats
#              (broker/examples/misbehave.rs silent-worker): the requests waiting behind it expire
#              after --request-ttl-ms ("dropped N request(s): no worker took them").
#   deaf       a client that sends 2000 requests of 16 KiB and never reads its replies
#              (misbehave deaf-client): once its queue is full the broker drops what it cannot
#              send ("...: peer is not reading") instead of blocking or
#              growing without bound.
#   oversize   a request over --max-message-size (1 MiB): libzmq cuts the connection, and the
#              broker's connection monitor (broker/src/monitor.rs) logs it; a request just under
#              the limit is still answered.
# In every case a normal client asks the echo service while the abuse goes on and must be answered,
# and the broker's peak RSS (VmHWM) must stay under RSS_BOUND_MB (64 unless set).
#
# Prints one PASS/FAIL line per check and ends with "N passed, N failed"; exits 1 if any failed.
#
# Usage: scripts/overload.sh [--debug]
#   --debug      use the debug binaries in ${CARGO_TARGET_DIR:-target}/debug (as `cargo test
#                --workspace` leaves them) instead of building release ones
#   OVERLOAD_BIN_DIR=DIR   use the broker, client, worker and examples/misbehave found in DIR
#   RSS_BOUND_MB=N         the bound on the broker's peak RSS (default 64)
#   KEEP_LOGS=DIR          keep the logs (each case's broker log, the workers', the clients')
set -euo pipefail

bin_dir=
if [ -n "${OVERLOAD_BIN_DIR:-}" ]; then
    bin_dir=$(cd "$OVERLOAD_BIN_DIR" && pwd)
fi
debug=
while [ $# -gt 0 ]; do
    case "$1" in
        --debug) debug=1 ;;
        -h|--help) sed -n '2,/^[^#]/ { /^#/p }' "$0"; exit 0 ;;
        *) echo "overload.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
cd "$(dirname "$0")/.."

if [ -z "$bin_dir" ]; then
    if [ -n "$debug" ]; then
        bin_dir=${CARGO_TARGET_DIR:-target}/debug
    else
        cargo build --release -q -p broker -p client -p worker --bins --examples
        bin_dir=${CARGO_TARGET_DIR:-target}/release
    fi
fi
for program in broker client worker examples/misbehave; do
    if [ ! -x "$bin_dir/$program" ]; then
        echo "overload.sh: $bin_dir/$program is missing (cargo build --workspace --examples)" >&2
        exit 2
    fi
done

rss_bound_mb=${RSS_BOUND_MB:-64}
name=overload.sh
source scripts/checks-common.sh

# start PROGRAM ARGS...: runs it in the background, remembered for cleanup; sets $pid.
start() {
    "$@" &
    pid=$!
    pids+=("$pid")
}
log_has() { grep -qE "$2" "$1"; }

# start_broker CASE ARGS...: a fresh broker on a free loopback port; sets $broker_pid, $endpoint,
# $log.
start_broker() {
    log=$work/$1-broker.log
    shift
    start "$bin_dir/broker" --bind 'tcp://127.0.0.1:*' --heartbeat-ms 500 "$@" 2>"$log"
    broker_pid=$pid
    wait_until 10 log_has "$log" 'is active at' ||
        abort "the broker did not start: $(tail -n 3 "$log")"
    endpoint=$(sed -n 's/.*is active at //p' "$log" | head -n 1)
}
start_echo_worker() {
    start "$bin_dir/worker" -c "$endpoint" -s echo --heartbeat-ms 500 2>>"$work/workers.log"
}
# served SERVICE: one request answered within 2 s (the service's workers are registered).
served() { timeout 5 "$bin_dir/client" -c "$endpoint" -s "$1" -t 2000 -r 1 ping >/dev/null 2>&1; }
# check_echo CASE [WHEN]: a normal client is answered (WHEN: "during the abuse" unless given).
check_echo() {
    local started reply elapsed when=${2:-during the abuse}
    started=$(now_ms)
    reply=$(timeout 10 "$bin_dir/client" -c "$endpoint" -t 3000 -r 1 "still serving" 2>&1) || true
    elapsed=$(( $(now_ms) - started ))
    if [ "$reply" = "still serving" ]; then
        pass "$1: a normal echo request was answered $when (${elapsed} ms)"
    else
        fail "$1: a normal echo request was not answered $when: ${reply:-no reply}"
    fi
}
# check_rss CASE: the broker's peak RSS is under the bound.
check_rss() {
    local hwm_kb rss_kb
    hwm_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$broker_pid/status")
    rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$broker_pid/status")
    if [ "$hwm_kb" -lt $(( rss_bound_mb * 1024 )) ]; then
        pass "$1: broker peak RSS $(( hwm_kb / 1024 )) MB, now $(( rss_kb / 1024 )) MB (bound ${rss_bound_mb} MB)"
    else
        fail "$1: broker peak RSS $(( hwm_kb / 1024 )) MB is over the bound of ${rss_bound_mb} MB"
    fi
}
# check_log CASE WHAT PATTERN: the broker logged a line matching PATTERN (waits up to 5 s, since
# some lines come with the next purge).
check_log() {
    local line
    if wait_until 5 log_has "$log" "$3"; then
        line=$(grep -E "$3" "$log" | tail -n 1 | sed 's/^\[[^]]*\] //')
        pass "$1: the broker logged $2: \"$line\""
    else
        fail "$1: the broker logged no line for $2 (pattern: $3)"
    fi
}
# end_case: stops every process of the case.
end_case() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
}

# --- herd: 200 clients at once against a queue of 50 ----------------------------------------
herd_clients=200
herd_queue=50
start_broker herd --max-queue "$herd_queue"
start_echo_worker
# About 30 ms a request (two processes started per request): far slower than 200 clients arrive.
start "$bin_dir/worker" -c "$endpoint" -s herd --heartbeat-ms 500 --exec 'sleep 0.02; cat' \
    2>>"$work/workers.log"
{ wait_until 10 served echo && wait_until 10 served herd; } ||
    abort "herd: the workers did not register"
herd_pids=()
herd_started=$(now_ms)
for n in $(seq 1 "$herd_clients"); do
    # A refused request is never answered: each client gives up after 8 s (one try).
    start timeout 30 "$bin_dir/client" -c "$endpoint" -s herd -t 8000 -r 1 "client $n" \
        >/dev/null 2>&1
    herd_pids+=("$pid")
done
check_echo herd
herd_answered=0
herd_failed=0
for pid in "${herd_pids[@]}"; do
    if wait "$pid"; then
        herd_answered=$(( herd_answered + 1 ))
    else
        herd_failed=$(( herd_failed + 1 ))
    fi
done
herd_ms=$(( $(now_ms) - herd_started ))
pass "herd: all $herd_clients clients finished within ${herd_ms} ms ($herd_answered answered, $herd_failed not)"
check_log herd "the requests over the queue limit" 'refused [0-9]+ request\(s\): queue full'
herd_refused=$(grep -oE 'refused [0-9]+ request\(s\)' "$log" | awk '{n += $2} END {print n + 0}')
if [ "$herd_refused" -gt 0 ] && [ $(( herd_answered + herd_refused )) -eq "$herd_clients" ]; then
    pass "herd: every request was answered ($herd_answered) or refused ($herd_refused), none lost"
else
    fail "herd: $herd_answered answered + $herd_refused refused != $herd_clients requests"
fi
check_rss herd
end_case

# --- silent: a worker that never replies ---------------------------------------------------
silent_requests=10
start_broker silent --request-ttl-ms 2000
start_echo_worker
start "$bin_dir/examples/misbehave" silent-worker "$endpoint" silent --heartbeat-ms 500 \
    >"$work/silent.out" 2>"$work/silent-worker.err"
wait_until 10 served echo || abort "silent: the echo worker did not register"
silent_registered() {
    [ "$(timeout 5 "$bin_dir/client" -c "$endpoint" -s mmi.service -t 1000 -r 1 silent 2>/dev/null)" = 200 ]
}
wait_until 10 silent_registered || abort "silent: the silent worker did not register"
# All in flight at once, none resent; each waits up to 4 s for a reply that never comes.
start timeout 30 "$bin_dir/client" -c "$endpoint" -s silent --count "$silent_requests" \
    --window "$silent_requests" -t 4000 --stats >"$work/silent-client.out" 2>&1
silent_client=$pid
check_echo silent
check_log silent "the requests that waited behind it" \
    'dropped [0-9]+ request\(s\): no worker took them within 2s'
wait "$silent_client" 2>/dev/null || true
silent_dropped=$(grep -oE 'dropped [0-9]+ request\(s\)' "$log" | awk '{n += $2} END {print n + 0}')
silent_held=$(grep -c 'holding request' "$work/silent-worker.err" || true)
if [ "$silent_dropped" -eq $(( silent_requests - 1 )) ] && [ "$silent_held" -eq 1 ] &&
    grep -q 'replies=0 ' "$work/silent-client.out"; then
    pass "silent: of $silent_requests requests the worker holds 1 for good, $silent_dropped expired after the TTL, none answered"
else
    fail "silent: expected 1 held and $(( silent_requests - 1 )) expired, got $silent_held held, $silent_dropped expired ($(cat "$work/silent-client.out"))"
fi
if silent_registered && ! grep -q 'purging' "$log"; then
    pass "silent: the silent worker is still registered (it heartbeats; the broker cannot tell it from a slow one)"
else
    fail "silent: the silent worker was purged or lost"
fi
check_rss silent
end_case

# --- deaf: a client that never reads its replies ---------------------------------------------
deaf_requests=2000
deaf_size=16384
start_broker deaf
start_echo_worker
wait_until 10 served echo || abort "deaf: the echo worker did not register"
start "$bin_dir/examples/misbehave" deaf-client "$endpoint" echo "$deaf_requests" "$deaf_size" \
    >"$work/deaf.out" 2>&1
deaf_client=$pid
wait_until 20 log_has "$work/deaf.out" "^sent " ||
    abort "deaf: the deaf client did not get its requests out"
check_log deaf "the replies it would not take" ': peer is not reading'
check_echo deaf
# The broker has handled every request once the echo worker is idle again: wait for the drops to
# stop growing, then count them.
deaf_drops=-1
deaf_deadline=$(( $(now_ms) + 20000 ))
until [ "$deaf_drops" -eq "$(grep -c 'peer is not reading' "$log")" ] ||
    [ "$(now_ms)" -gt "$deaf_deadline" ]; do
    deaf_drops=$(grep -c 'peer is not reading' "$log")
    sleep 0.5
done
pass "deaf: $deaf_drops of $deaf_requests replies ($(( deaf_size / 1024 )) KiB each) dropped; the rest sit in the deaf client's queues"
check_rss deaf
kill "$deaf_client" 2>/dev/null || true
wait "$deaf_client" 2>/dev/null || true
check_echo deaf "after the deaf client left"
end_case

# --- oversize: a request over --max-message-size ----------------------------------------------
max_size=1048576
# The monitor's "accepted" lines (debug) tell when every earlier connection has been seen closed.
RUST_LOG=info,broker::monitor=debug start_broker oversize --max-message-size "$max_size"
start_echo_worker
wait_until 10 served echo || abort "oversize: the echo worker did not register"
under=$(( max_size - 48576 ))
under_bytes=$(timeout 20 "$bin_dir/client" -c "$endpoint" -t 5000 -r 1 --size "$under" 2>/dev/null | wc -c) || true
if [ "$under_bytes" -eq $(( under + 1 )) ]; then
    pass "oversize: a request of $under bytes, under the limit, was answered in full"
else
    fail "oversize: a request of $under bytes, under the limit, got $under_bytes bytes back"
fi
# Once only the worker's connection is open, only the oversize client connects or leaves until it
# gives up (after 3 s), so a connection closed meanwhile is the one libzmq cut.
count() { grep -c "$1" "$log" || true; }
only_the_worker_connected() { [ $(( $(count ' accepted$') - $(count ' closed') )) -eq 1 ]; }
wait_until 2 only_the_worker_connected || true
closed_before=$(count 'closed: the peer left, or it sent a frame larger than')
start timeout 20 "$bin_dir/client" -c "$endpoint" -t 3000 -r 1 --size $(( 2 * max_size )) \
    >/dev/null 2>"$work/oversize-client.err"
oversize_client=$pid
cut_seen() { [ "$(count 'closed: the peer left, or it sent a frame larger than')" -gt "$closed_before" ]; }
if wait_until 2 cut_seen && kill -0 "$oversize_client" 2>/dev/null; then
    line=$(grep 'closed: the peer left, or it sent a frame larger than' "$log" | tail -n 1 | sed 's/^\[[^]]*\] //')
    pass "oversize: the broker logged the connection libzmq cut while the client still waited: \"$line\""
else
    fail "oversize: no connection-closed line while the $(( 2 * max_size ))-byte request was refused (is broker::monitor wired into Server::bind?)"
fi
check_echo oversize
if wait "$oversize_client"; then
    fail "oversize: the $(( 2 * max_size ))-byte request was answered"
else
    pass "oversize: the $(( 2 * max_size ))-byte request got no reply (the client gave up after 3 s)"
fi
check_rss oversize
end_case

finish
