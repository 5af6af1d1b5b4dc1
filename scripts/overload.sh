#!/usr/bin/env bash
# What it shows: the broker under abuse keeps serving everyone else, its memory stays bounded, and
# what it refused shows in what the abuser got and in the broker's exit summary. Four cases, each
# with a fresh broker on tcp://127.0.0.1 and a well-behaved echo worker next to the abuser:
#   herd       200 clients connect at once and ask a slow service (--max-queue 50): the requests
#              beyond the queue limit are refused (the summary's refused_queue_full), exactly
#              those clients go unanswered, every other one is answered, and none is lost.
#   silent     a worker that takes a request and never replies, though it heartbeats
#              (broker/examples/misbehave.rs silent-worker): it says it holds one request, the
#              requests waiting behind it expire after --request-ttl-ms (the summary's expired),
#              the client gets none answered, and the worker is never purged.
#   deaf       a client that sends 2000 requests of 16 KiB and never reads its replies
#              (misbehave deaf-client): the broker works through all of them (the summary's
#              replies) and drops what it cannot send instead of blocking or growing without
#              bound: others are still answered, during and after, and its RSS stays bounded.
#   oversize   a request over --max-message-size (1 MiB): libzmq cuts the connection before the
#              request is whole, so the client gets no reply and the broker never sees it (every
#              request in its summary was answered); a request just under the limit is answered.
# In every case a normal client asks the echo service while the abuse goes on and must be answered,
# and the broker's peak RSS (VmHWM) must stay under RSS_BOUND_MB (64 unless set).
# No check reads a log line but the broker's exit summary (its `served:` counters). How many
# replies for the deaf client were dropped only the log says: it is printed as a "note:" for the
# reader and passes or fails nothing. The connection libzmq cut for the oversize request shows
# only in the connection monitor's log (broker/src/monitor.rs), and is not checked.
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
file_has() { grep -qE "$2" "$1" 2>/dev/null; }

# start_broker CASE ARGS...: a fresh broker on a free loopback port, ready once its mmi.service
# answers; sets $broker_pid, $endpoint, $log.
start_broker() {
    log=$work/$1-broker.log
    shift
    start_mdp_broker "$bin_dir/broker" "$bin_dir/client" "$log" --heartbeat-ms 500 "$@" ||
        abort "the broker did not start: $(tail -n 3 "$log")"
    endpoint=$broker_endpoint
}
# note WHAT: a line for the reader, from the log; it passes or fails nothing.
note() { echo "note: $*"; }
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
check_rss herd
stop_broker
summary=$(served_summary "$log")
herd_refused=$(field refused_queue_full "$summary")
herd_refused=${herd_refused:-0}
if [ "$herd_refused" -gt 0 ] && [ "$herd_refused" -eq "$herd_failed" ] &&
    [ $(( herd_answered + herd_refused )) -eq "$herd_clients" ]; then
    pass "herd: the broker refused $herd_refused requests over the queue limit (its summary: refused_queue_full=$herd_refused), exactly the $herd_failed clients that got no reply; the other $herd_answered were answered, none lost"
else
    fail "herd: $herd_answered answered + $herd_refused refused != $herd_clients requests, or $herd_failed unanswered != refused (the broker's summary: ${summary:-none})"
fi
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
    --window "$silent_requests" -t 4000 --stats=json >"$work/silent-client.out" 2>"$work/silent-client.err"
silent_client=$pid
check_echo silent
wait "$silent_client" 2>/dev/null || true
silent_stats=$(cat "$work/silent-client.out")
# The silent worker says on stderr each request it took (and holds for good).
silent_held=$(grep -c 'holding request' "$work/silent-worker.err" || true)
silent_still_registered=0
silent_registered && silent_still_registered=1
check_rss silent
stop_broker
summary=$(served_summary "$log")
silent_expired=$(field expired "$summary")
silent_purged=$(field workers_purged "$summary")
if [ "${silent_expired:-0}" -eq $(( silent_requests - 1 )) ] && [ "$silent_held" -eq 1 ] &&
    [ "$(field replies "$silent_stats")" = 0 ] && [ "$(field failed "$silent_stats")" = "$silent_requests" ]; then
    pass "silent: of $silent_requests requests the worker holds 1 for good, $silent_expired expired after the TTL (the broker's summary: expired=$silent_expired), none answered (the client: replies=0 failed=$silent_requests)"
else
    fail "silent: expected 1 held and $(( silent_requests - 1 )) expired, none answered; got $silent_held held, ${silent_expired:-?} expired (summary: ${summary:-none}; client: ${silent_stats:-no --stats})"
fi
if [ "$silent_still_registered" = 1 ] && [ "${silent_purged:-1}" = 0 ]; then
    pass "silent: the silent worker is still registered and was never purged (it heartbeats; the broker cannot tell it from a slow one)"
else
    fail "silent: the silent worker was purged or lost (mmi.service 200 at the end: $silent_still_registered; workers_purged=${silent_purged:-?})"
fi
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
# The deaf client prints `sent N` once its requests are out.
wait_until 20 file_has "$work/deaf.out" "^sent " ||
    abort "deaf: the deaf client did not get its requests out"
check_echo deaf
# Its requests wait in the echo queue with the normal ones: the broker has worked through them
# once an echo request is answered at once again.
echo_at_once() { timeout 5 "$bin_dir/client" -c "$endpoint" -t 100 -r 1 quick >/dev/null 2>&1; }
wait_until 20 echo_at_once || say "deaf: echo requests still wait behind the deaf client's after 20 s"
check_rss deaf
kill "$deaf_client" 2>/dev/null || true
wait "$deaf_client" 2>/dev/null || true
check_echo deaf "after the deaf client left"
stop_broker
summary=$(served_summary "$log")
deaf_replies=$(field replies "$summary")
if [ "${deaf_replies:-0}" -ge "$deaf_requests" ]; then
    pass "deaf: the broker worked through all $deaf_requests requests of $(( deaf_size / 1024 )) KiB and passed on ${deaf_replies} replies (its summary) without blocking, though the deaf client read none"
else
    fail "deaf: the broker passed on ${deaf_replies:-no} replies for the deaf client's $deaf_requests requests (summary: ${summary:-none})"
fi
note "deaf: the broker's log counts $(grep -c 'not reading' "$log" || true) replies dropped because the peer was not reading; the rest sat in the deaf client's queues"
end_case

# --- oversize: a request over --max-message-size ----------------------------------------------
max_size=1048576
start_broker oversize --max-message-size "$max_size"
start_echo_worker
wait_until 10 served echo || abort "oversize: the echo worker did not register"
under=$(( max_size - 48576 ))
under_bytes=$(timeout 20 "$bin_dir/client" -c "$endpoint" -t 5000 -r 1 --size "$under" 2>/dev/null | wc -c) || true
if [ "$under_bytes" -eq $(( under + 1 )) ]; then
    pass "oversize: a request of $under bytes, under the limit, was answered in full"
else
    fail "oversize: a request of $under bytes, under the limit, got $under_bytes bytes back"
fi
start timeout 20 "$bin_dir/client" -c "$endpoint" -t 3000 -r 1 --size $(( 2 * max_size )) \
    >/dev/null 2>"$work/oversize-client.err"
oversize_client=$pid
check_echo oversize
if wait "$oversize_client"; then
    fail "oversize: the $(( 2 * max_size ))-byte request was answered"
else
    pass "oversize: the $(( 2 * max_size ))-byte request got no reply (the client gave up after 3 s)"
fi
check_rss oversize
stop_broker
summary=$(served_summary "$log")
received=$(field requests "$summary")
answered=$(( $(field replies "$summary") + $(field mmi "$summary") ))
if [ -n "$received" ] && [ "$received" -gt 0 ] && [ "$received" -eq "$answered" ]; then
    pass "oversize: the broker never received the $(( 2 * max_size ))-byte request: it answered every request it did receive (its summary: requests=$received, replies + mmi = $answered)"
else
    fail "oversize: the broker received ${received:-?} requests and answered $answered (summary: ${summary:-none})"
fi
end_case

finish
