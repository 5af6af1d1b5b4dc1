#!/usr/bin/env bash
# What it shows: that the broker's memory stays flat over a long run with steady load and worker
# churn, and that the churn costs no more requests than the killed workers held. A release broker
# on a free loopback port serves three echo workers; for DURATION:
#   * an asynchronous client runs again and again (`client --count 10000 --window 50 --tag`,
#     one send per request, timeout 4 s), two seconds apart;
#   * two synchronous clients run again and again (`client --count 200 -t 1000 -r 5`), one
#     second apart;
#   * every 10 s one worker is killed with SIGKILL and a new one started in its place;
#   * every 10 s the broker's RSS (VmRSS in /proc/PID/status) is printed with the elapsed time
#     (more often in runs under 100 s, so that the baseline below holds two samples or more).
# Then it checks:
#   * memory: no sample after the first minute exceeds the first minute's peak by more than 10%
#     or 1 MB, whichever is larger (for a DURATION under 2 minutes, the first 20% of the run
#     stands for the first minute);
#   * the broker is still running at the end, and every client run ended by itself;
#   * every asynchronous request was answered or failed, and no more failed than workers were
#     killed (each killed worker held at most one request); the broker's own count of requests
#     lost with a worker is no more than the kills either;
#   * no synchronous request failed: a lost one is resent after a second.
# The figures come from the clients' `--stats` lines and exit statuses, /proc, and (for the
# requests the broker lost with workers, which nothing else reports) the broker's exit summary.
#
# Usage: scripts/soak.sh [DURATION]    e.g. 10m (the default), 60s, 90 (seconds), 1h
# KEEP_LOGS=DIR keeps the logs. Ends with "N passed, N failed"; exit status 1 if any check failed.
set -euo pipefail
cd "$(dirname "$0")/.."
name=soak.sh

duration=${1:-10m}
case "$duration" in
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *[0-9]s|*[0-9]) seconds=${duration%s} ;;
    *[0-9]m) seconds=$(( ${duration%m} * 60 )) ;;
    *[0-9]h) seconds=$(( ${duration%h} * 3600 )) ;;
    *) echo "$name: DURATION is a number with s, m or h, not $duration (try --help)" >&2; exit 2 ;;
esac
case "$seconds" in
    ''|*[!0-9]*) echo "$name: DURATION is a number with s, m or h, not $duration" >&2; exit 2 ;;
esac
[ "$seconds" -ge 20 ] || { echo "$name: DURATION must be at least 20s" >&2; exit 2; }

source scripts/faults-common.sh
build

sample_every=10
churn_every=10
if [ "$seconds" -ge 120 ]; then
    baseline=60
    baseline_says="the first minute"
else
    baseline=$(( seconds / 5 ))
    baseline_says="the first 20% (${baseline}s; the run is under 2 minutes)"
fi
# At least two samples in the baseline: short runs are sampled more often.
[ "$baseline" -ge $(( 2 * sample_every )) ] || sample_every=$(( baseline / 2 > 0 ? baseline / 2 : 1 ))

worker_count=3
start_broker "$work/broker.log"
for slot in $(seq 0 $(( worker_count - 1 ))); do
    start_worker "$slot" "$work/worker-$slot.log"
done
wait_for 20 "a worker is registered for echo" echo_registered
echo "soak: ${seconds}s against the broker at $broker_endpoint (pid $broker_pid), $worker_count workers," \
    "one killed every ${churn_every}s; RSS every ${sample_every}s"

repeat_until_stopped "$work/stop" 2 "$work/async.out" "$work/async.err" \
    timeout 120 "$bin/client" -c "$broker_endpoint" --count 10000 --window 50 --tag --stats \
    -t 4000 --size 16 &
pids+=("$!")
loops=("$!")
for n in 1 2; do
    repeat_until_stopped "$work/stop" 1 "$work/sync-$n.out" "$work/sync-$n.err" \
        timeout 120 "$bin/client" -c "$broker_endpoint" --count 200 -t 1000 -r 5 --stats ping &
    pids+=("$!")
    loops+=("$!")
done

# One tick a second: a sample every 10 s, a kill every 10 s (5 s after each sample).
samples=()
kills=0
slot=0
started=$SECONDS
elapsed=0
next_sample=$sample_every
next_kill=$(( churn_every / 2 ))
while [ "$elapsed" -lt "$seconds" ]; do
    sleep 1
    elapsed=$(( SECONDS - started ))
    if ! kill -0 "$broker_pid" 2>/dev/null; then
        echo "the broker died at t=${elapsed}s"
        break
    fi
    if [ "$elapsed" -ge "$next_sample" ]; then
        next_sample=$(( next_sample + sample_every ))
        rss=$(rss_kb "$broker_pid")
        samples+=("$elapsed:$rss")
        printf 't=%5ss broker_rss_kb=%s kills=%s\n' "$elapsed" "$rss" "$kills"
    fi
    if [ "$elapsed" -ge "$next_kill" ] && [ "$elapsed" -lt "$seconds" ]; then
        next_kill=$(( next_kill + churn_every ))
        kill_worker "$slot"
        kills=$(( kills + 1 ))
        start_worker "$slot" "$work/worker-$slot.log"
        slot=$(( (slot + 1) % worker_count ))
    fi
done
broker_alive=0
kill -0 "$broker_pid" 2>/dev/null && broker_alive=1

# Let the client runs in progress end (each is bounded by `timeout`), then stop the broker.
touch "$work/stop"
for loop in "${loops[@]}"; do wait "$loop" || true; done
stop_broker
served=$(served_summary "$work/broker.log")

# Memory.
peak=0 after_max=0 after_count=0 final=0
for sample in "${samples[@]}"; do
    at=${sample%%:*} kb=${sample#*:}
    final=$kb
    if [ "$at" -le "$baseline" ]; then
        [ "$kb" -le "$peak" ] || peak=$kb
    else
        after_count=$(( after_count + 1 ))
        [ "$kb" -le "$after_max" ] || after_max=$kb
    fi
done
tolerance=$(( peak / 10 > 1024 ? peak / 10 : 1024 ))
echo "broker RSS: peak in $baseline_says ${peak} kB; max after ${after_max} kB ($after_count samples);" \
    "final ${final} kB; tolerance ${tolerance} kB (10% or 1 MB, whichever is larger)"
check "$(( after_count > 0 && peak > 0 && after_max <= peak + tolerance ))" \
    "broker RSS after $baseline_says stayed within its peak + tolerance: ${after_max} <= ${peak} + ${tolerance} kB"
check "$broker_alive" "the broker was still running after ${elapsed}s"

# Requests.
async_runs=$(count_lines "requests=" "$work/async.out")
async_requests=$(sum_field requests "$work/async.out")
async_answered=$(sum_field replies "$work/async.out")
async_failed=$(sum_field failed "$work/async.out")
sync_runs=$(( $(count_lines "requests=" "$work/sync-1.out") + $(count_lines "requests=" "$work/sync-2.out") ))
sync_requests=$(( $(sum_field requests "$work/sync-1.out") + $(sum_field requests "$work/sync-2.out") ))
sync_failed=$(( $(sum_field failed "$work/sync-1.out") + $(sum_field failed "$work/sync-2.out") ))
sync_retried=$(( $(sum_field retried "$work/sync-1.out") + $(sum_field retried "$work/sync-2.out") ))
timed_out=$(cat "$work"/async.out "$work"/sync-*.out | grep -c "^exit=124" || true)
lost=$(field lost_with_worker "$served")
echo "async client: $async_runs runs, $async_requests requests, $async_answered answered, $async_failed failed;" \
    "sync clients: $sync_runs runs, $sync_requests requests, $sync_retried retried, $sync_failed failed; kills: $kills"
echo "broker: ${served:-no served: line}"
[ "$async_failed" = 0 ] || grep "^client: request [0-9]* failed: " "$work/async.err" | head -1 | sed 's/^/    e.g. /'
check "$(( async_runs > 0 && sync_runs > 0 && timed_out == 0 ))" \
    "every client run ended by itself ($async_runs async runs, $sync_runs sync runs, $timed_out killed by timeout)"
check "$(( async_answered + async_failed == async_requests ))" \
    "asynchronous requests: answered + failed = $async_answered + $async_failed = $async_requests"
check "$(( async_failed <= kills ))" \
    "asynchronous requests lost ($async_failed) <= workers killed ($kills)"
check "$(( sync_failed == 0 ))" \
    "no synchronous request failed ($sync_failed of $sync_requests; $sync_retried answered on a resend)"
check "$(( ${lost:-0} <= kills ))" "the broker lost ${lost:-?} requests with workers, <= kills ($kills)"
finish
