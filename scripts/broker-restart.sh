#!/usr/bin/env bash
# What it shows: what happens when the broker crashes under load and comes back. Three echo
# workers serve a release broker on a free loopback port while two loads run: synchronous
# clients one after the other (`client --count 200 -t 1000 -r 10`: one request at a time, each
# resent on a new socket after a second without reply, ten sends at most), and one asynchronous
# client with COUNT requests, 100 in flight, tagged (`client --window 100 --tag`, one send per
# request, timeout 2 s). After two seconds the broker is killed with SIGKILL (no DISCONNECT to
# anyone) and, after a pause of one second, started again on the same port. Nobody touches the
# workers or the clients. It prints the time from the restart to the first answered request (a
# probe that asks every 100 ms on a fresh socket): up to one heartbeat interval (2500 ms), since
# a worker finds out when its next HEARTBEAT reaches the new broker, which answers DISCONNECT,
# and then registers again after a 100 ms backoff. It checks:
#   * the workers register again by themselves: the new broker's `mmi.service` answers 200 for
#     the service, and its exit summary counts a registration for each of the three workers;
#   * every synchronous request succeeds, across the restart, thanks to its resends (the runs
#     that spanned the restart show retried=1 or more), and runs go on after it;
#   * the asynchronous client ends by itself with answered + failed = COUNT and reports what it
#     lost: the requests the dead broker held, and those that waited longer than their timeout
#     while it was away (failed > 0, each with a reason).
# Every check rests on exit statuses, the clients' `--stats` lines and failure reasons, and what
# the brokers answer; the count of registrations comes from the new broker's exit summary.
#
# Usage: scripts/broker-restart.sh [--count N] [--down SECONDS]
#   --count N       requests of the asynchronous client (default 100000; it must still be running
#                   when the broker is killed, 2 s in: 20000 is too few on a fast machine)
#   --down S        seconds between the kill and the restart (default 1)
# KEEP_LOGS=DIR keeps the logs. Ends with "N passed, N failed"; exit status 1 if any check failed.
set -euo pipefail
cd "$(dirname "$0")/.."
name=broker-restart.sh

count=100000
down=1
while [ $# -gt 0 ]; do
    case "$1" in
        --count) count=$2; shift ;;
        --down) down=$2; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "$name: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

source scripts/faults-common.sh
build

worker_count=3
first_log="$work/broker-first.log"
second_log="$work/broker-second.log"
start_broker "$first_log"
first_broker=$broker_pid
for slot in $(seq 0 $(( worker_count - 1 ))); do
    start_worker "$slot" "$work/worker-$slot.log"
done
wait_for 20 "a worker is registered for echo" echo_registered
echo "broker restart: broker at $broker_endpoint, $worker_count workers; sync clients in a loop" \
    "and an async client of $count requests; the broker is killed 2 s into the load, restarted ${down}s later"

# The loads.
repeat_until_stopped "$work/stop-sync" 0 "$work/sync.out" "$work/sync.err" \
    timeout 120 "$bin/client" -c "$broker_endpoint" --count 200 -t 1000 -r 10 --stats ping &
pids+=("$!")
sync_loop=$!
async_limit=$(( 120 + count / 500 ))
timeout "$async_limit" "$bin/client" -c "$broker_endpoint" --count "$count" --window 100 --tag \
    --stats -t 2000 --size 16 >"$work/async.out" 2>"$work/async.err" &
async_client=$!
pids+=("$async_client")

sleep 2
# (Braces: so that bash's "Killed" job notice goes nowhere.)
{ kill -KILL "$first_broker"; wait "$first_broker" || true; } 2>/dev/null
killed_at=$(now_ms)
sync_before=$(count_lines "requests=" "$work/sync.out")
async_running=0
kill -0 "$async_client" 2>/dev/null && async_running=1
sleep "$down"

# The restart, on the same port, and the probe: a fresh socket every 100 ms until one is answered.
restarted_at=$(now_ms)
BROKER_ENDPOINT=$broker_endpoint start_broker "$second_log"
probe_status=0
"$bin/client" -c "$broker_endpoint" -t 100 -r 300 probe >/dev/null 2>"$work/probe.err" || probe_status=$?
first_answer_ms=$(( $(now_ms) - restarted_at ))
mmi=$("$bin/client" -c "$broker_endpoint" -s mmi.service -t 1000 -r 3 echo 2>/dev/null || true)
echo "restart to first answered request: ${first_answer_ms} ms (broker down $(( restarted_at - killed_at )) ms)"

# Let the asynchronous client finish, and one more synchronous run after that.
async_status=0
wait "$async_client" || async_status=$?
sync_now=$(count_lines "requests=" "$work/sync.out")
sync_ran_on() { [ "$(count_lines "requests=" "$work/sync.out")" -gt "$sync_now" ]; }
wait_for 60 "one more synchronous run ends" sync_ran_on || true
touch "$work/stop-sync"
wait "$sync_loop" || true
stop_broker

check "$(( probe_status == 0 ))" \
    "a request was answered ${first_answer_ms} ms after the restart (probe exit status $probe_status)"
check "$(( ${mmi:-0} == 200 ))" "the restarted broker's mmi.service answers ${mmi:-nothing} for echo"
# Nothing but these workers talks to the new broker as a worker, and none of them was restarted.
registered=$(field workers_registered "$(served_summary "$second_log")")
check "$(( ${registered:-0} >= worker_count ))" \
    "the $worker_count workers registered again by themselves: the new broker's exit summary counts ${registered:-no} registrations"

sync_runs=$(count_lines "requests=" "$work/sync.out")
sync_failures=$(sum_field failed "$work/sync.out")
sync_retried=$(sum_field retried "$work/sync.out")
sync_requests=$(sum_field requests "$work/sync.out")
sync_bad_exits=$(count_lines "^exit=" "$work/sync.out")
echo "sync clients: $sync_runs runs, $sync_requests requests, $sync_retried retried, $sync_failures failed"
check "$(( sync_failures == 0 && sync_bad_exits == 0 ))" \
    "every synchronous request was answered ($sync_requests requests in $sync_runs runs, $sync_failures failed, $sync_bad_exits runs exited non-zero)"
check "$(( sync_retried > 0 ))" \
    "the synchronous client's resends carried it across the restart (retried=$sync_retried)"
check "$(( sync_runs > sync_before + 1 ))" \
    "synchronous runs went on after the restart ($sync_before ended before the kill, $sync_runs in all)"

stats=$(cat "$work/async.out")
answered=$(field replies "$stats")
lost=$(field failed "$stats")
echo "async client: ${stats:-no --stats line}"
[ -z "$lost" ] || [ "$lost" = 0 ] || grep "^client: request [0-9]* failed: " "$work/async.err" | head -1 | sed 's/^/    e.g. /'
check "$(( async_status == 0 || async_status == 1 ))" \
    "the asynchronous client ended by itself (exit status $async_status; killed at ${async_limit}s it would be 124)"
check "$(( async_running == 1 ))" \
    "the asynchronous client was still running when the broker died (if not, raise --count)"
if [ -n "$answered" ] && [ -n "$lost" ]; then
    check "$(( answered + lost == count ))" \
        "asynchronous client: answered + failed = $answered + $lost = $count requests"
    reasons=$(count_lines "^client: request [0-9]* failed: ." "$work/async.err")
    check "$(( lost > 0 && reasons >= (lost < 5 ? lost : 5) ))" \
        "the asynchronous client reports what it lost: $lost requests, with reasons ($reasons printed, the first 5 at most)"
else
    check 0 "the asynchronous client printed its --stats line"
fi
finish
