#!/usr/bin/env bash
# What it shows: what a pipelined load loses when workers die, and what recovers it. With three
# echo workers behind a release broker, the asynchronous client sends COUNT requests, 100 in
# flight, each tagged so that its reply is matched exactly (`client --window 100 --tag`); every
# few seconds one worker is killed with SIGKILL (no DISCONNECT: the broker finds out when its next
# heartbeat to it bounces) and a new one is started in its place.
#
# It runs twice: with the broker's default (a request held by a dead worker is lost, the client's
# resend recovers it once its timeout passes), then with `broker --redeliver` (the broker gives that
# request to another worker, once). Each run reports how many requests were answered, retried
# (sent again by the client) and failed, with the broker's own count of requests lost with a
# worker and redelivered, and checks:
#   * the client ends by itself (under an overall `timeout`): nothing hangs;
#   * answered + failed = COUNT, and every failure is reported with a reason;
#   * no reply is counted twice: late and duplicate replies are dropped by the client library
#     (its `--stats=json` says how many), so answered = COUNT - failed and never more than the
#     broker forwarded;
#   * failed <= kills: a killed worker holds at most one request;
#   * requests lost or redelivered by the broker <= kills;
# and, comparing the runs: with --redeliver no more requests fail or need the client's resend.
# The client's figures come from its `--stats=json`, its failure reasons from its stderr, the
# broker's lost, redelivered and forwarded counts from its exit summary (nothing else reports
# them); no check waits for or counts other log lines.
#
# Usage: scripts/worker-faults.sh [--count N] [--kill-every SECONDS] [--retries R] [--timeout-ms MS]
#   --count N           requests per run (default 100000)
#   --kill-every S      seconds between two kills (default 3)
#   --retries R         sends per request in all, `client -r` (default 2: one resend; 1 shows
#                       the losses as failures instead)
#   --timeout-ms MS     the client's timeout per try (default 4000: longer than the broker needs
#                       to notice a dead worker, one heartbeat interval, 2500 ms)
# KEEP_LOGS=DIR keeps the logs. Ends with "N passed, N failed"; exit status 1 if any check failed.
set -euo pipefail
cd "$(dirname "$0")/.."
name=worker-faults.sh

count=100000
kill_every=3
retries=2
timeout_ms=4000
while [ $# -gt 0 ]; do
    case "$1" in
        --count) count=$2; shift ;;
        --kill-every) kill_every=$2; shift ;;
        --retries) retries=$2; shift ;;
        --timeout-ms) timeout_ms=$2; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "$name: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

source scripts/faults-common.sh
build

workers_per_run=3
# Generous: a few thousand requests a second on a shared machine, plus the tail of timeouts.
client_limit=$(( 60 + count / 500 + 4 * retries * timeout_ms / 1000 ))

# run LABEL [BROKER-FLAGS...]: one run; sets answered, retried, failures, kills of LABEL.
declare -A result
run() {
    local label=$1
    shift
    local dir="$work/$label"
    mkdir -p "$dir"
    start_broker "$dir/broker.log" "$@"
    local slot
    for slot in $(seq 0 $(( workers_per_run - 1 ))); do
        start_worker "$slot" "$dir/worker-$slot.log"
    done
    wait_for 20 "a worker is registered for echo" echo_registered

    local started=$SECONDS
    timeout "$client_limit" "$bin/client" -c "$broker_endpoint" --count "$count" \
        --window 100 --tag --stats=json -t "$timeout_ms" -r "$retries" --size 16 \
        >"$dir/client.out" 2>"$dir/client.err" &
    local client=$!
    pids+=("$client")

    # Kill a worker every KILL_EVERY seconds for as long as the client runs.
    local kills=0 next_kill=0 tenths=0
    slot=0
    while kill -0 "$client" 2>/dev/null; do
        sleep 0.1
        tenths=$(( tenths + 1 ))
        if [ "$tenths" -ge $(( next_kill + kill_every * 10 )) ] && kill -0 "$client" 2>/dev/null; then
            next_kill=$tenths
            kill_worker "$slot"
            kills=$(( kills + 1 ))
            start_worker "$slot" "$dir/worker-$slot.log"
            slot=$(( (slot + 1) % workers_per_run ))
        fi
    done
    local status=0
    wait "$client" || status=$?
    local seconds=$(( SECONDS - started ))
    stop_broker

    local stats served
    stats=$(cat "$dir/client.out")
    served=$(served_summary "$dir/broker.log")
    local answered failures retried requests lost redelivered forwarded dropped
    answered=$(field replies "$stats")
    failures=$(field failed "$stats")
    retried=$(field retried "$stats")
    requests=$(field requests "$stats")
    lost=$(field lost_with_worker "$served")
    redelivered=$(field redelivered "$served")
    forwarded=$(field replies "$served")
    dropped=$(field dropped_replies "$stats")
    echo "run $label: answered=${answered:-?} retried=${retried:-?} failed=${failures:-?} kills=$kills" \
        "seconds=$seconds (broker: lost_with_worker=${lost:-?} redelivered=${redelivered:-?}" \
        "replies_forwarded=${forwarded:-?}; client dropped ${dropped:-?} late or duplicate replies)"

    check "$(( status == 0 || status == 1 ))" \
        "[$label] the client ended by itself after ${seconds}s (exit status $status; killed at ${client_limit}s it would be 124)"
    if [ -z "$answered" ] || [ -z "$failures" ] || [ -z "$retried" ]; then
        check 0 "[$label] the client printed its --stats=json object (got: ${stats:-nothing})"
        answered=0 failures=$count retried=0
    else
        check "$(( answered + failures == count && requests == count ))" \
            "[$label] answered + failed = $answered + $failures = $count requests"
    fi
    # The client prints the first five reasons, then says the rest are only counted.
    local reasons shown
    reasons=$(grep -c "^client: request [0-9]* failed: ." "$dir/client.err" || true)
    shown=$(( failures < 5 ? failures : 5 ))
    if [ "$failures" -gt 5 ]; then
        grep -q "further failures are only counted" "$dir/client.err" || reasons=-1
    fi
    check "$(( reasons == shown ))" \
        "[$label] every failure is reported with a reason ($failures failed, $reasons reasons printed: the client prints the first 5)"
    [ "$failures" -eq 0 ] || grep "^client: request [0-9]* failed: " "$dir/client.err" | head -1 | sed 's/^/    e.g. /'
    check "$(( answered == count - failures && answered <= ${forwarded:-0} ))" \
        "[$label] no reply counted twice: answered ($answered) = requests - failed, <= replies the broker forwarded (${forwarded:-?}); ${dropped:-?} late or duplicate replies dropped"
    check "$(( failures <= kills ))" \
        "[$label] failed ($failures) <= kills ($kills): a killed worker held at most one request"
    check "$(( ${lost:-0} + ${redelivered:-0} <= kills ))" \
        "[$label] the broker lost ${lost:-?} and redelivered ${redelivered:-?} requests, <= kills ($kills)"
    result[$label.failed]=$failures
    result[$label.retried]=$retried
}

echo "worker faults: $count requests per run, window 100, tagged, 3 workers, one killed every ${kill_every}s;" \
    "client timeout ${timeout_ms} ms, $retries sends per request at most"
run default
run redeliver --redeliver
check "$(( result[redeliver.failed] <= result[default.failed] && result[redeliver.retried] <= result[default.retried] ))" \
    "with --redeliver no more requests failed (${result[redeliver.failed]} vs ${result[default.failed]}) or needed the client's resend (${result[redeliver.retried]} vs ${result[default.retried]})"
finish
