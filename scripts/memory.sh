#!/usr/bin/env bash
# What it shows: the broker's memory is bounded and comes back. It starts a release broker,
# floods it with COUNT requests for services nobody serves (by default every request names a
# different service), and prints the broker's RSS before, right after the flood, and once the
# requests have expired (--request-ttl-ms) and their services were forgotten. With SERVICES=1 it
# then floods again, starts a worker, and prints the RSS once every request was served.
#
# Usage: scripts/memory.sh [COUNT] [SERVICES]     (defaults: 100000 requests, 100000 services)
#
# With --big it shows instead that one peer cannot drive the broker out of memory (issue 11):
# 1,500 requests of 1 MiB for a service nobody serves, sent over one connection and then over
# ten at once, each against a fresh broker at its default limits (--max-queued-bytes 256 MiB),
# and prints the broker's peak RSS and how many requests it refused. BROKER_BIN=PATH measures
# another build (an older commit's, for a before/after figure).
#
# Usage: scripts/memory.sh --big
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--big" ]; then
    cargo build --release -q -p broker --bins --examples
    bin=${BROKER_BIN:-target/release/broker}
    dir=$(mktemp -d)
    trap 'kill ${broker:-} 2>/dev/null || true; rm -rf "$dir"' EXIT
    for connections in 1 10; do
        endpoint="ipc://$dir/big-$connections.ipc"
        "$bin" --bind "$endpoint" 2>"$dir/broker-$connections.log" &
        broker=$!
        while [ ! -S "$dir/big-$connections.ipc" ]; do sleep 0.05; done
        before=$(awk '/^VmRSS/ {print $2}' "/proc/$broker/status")
        FLOOD_BODY_BYTES=1048576 FLOOD_CONNECTIONS=$connections \
            target/release/examples/flood "$endpoint" 1500 1
        peak=$(awk '/^VmHWM/ {print $2}' "/proc/$broker/status")
        now=$(awk '/^VmRSS/ {print $2}' "/proc/$broker/status")
        kill -INT "$broker"
        wait "$broker" 2>/dev/null || true
        refused=$(grep -o 'refused_[a-z_]*=[0-9]*' "$dir/broker-$connections.log" | awk -F= '{n += $2} END {print n + 0}')
        printf 'flood=1500x1MiB connections=%s rss_before_kb=%s rss_peak_kb=%s rss_queued_kb=%s refused=%s\n' \
            "$connections" "$before" "$peak" "$now" "$refused"
    done
    exit 0
fi

count=${1:-100000}
services=${2:-$count}
ttl_ms=3000

cargo build --release -q -p broker --bins --examples
dir=$(mktemp -d)
trap 'kill ${broker:-} ${worker:-} ${flood:-} 2>/dev/null || true; [ -n "${KEEP_LOG:-}" ] && cp "$dir/broker.log" "$KEEP_LOG"; rm -rf "$dir"' EXIT

# start_broker NAME [FLAGS...]: a broker on ipc://$dir/NAME.ipc with room for every request;
# sets $broker and $endpoint once its socket file exists.
start_broker() {
    endpoint="ipc://$dir/$1.ipc"
    target/release/broker --bind "$endpoint" --heartbeat-ms 500 \
        --max-queue "$count" --max-queued-total "$count" "${@:2}" 2>>"$dir/broker.log" &
    broker=$!
    while [ ! -S "$dir/$1.ipc" ]; do sleep 0.05; done
}
start_broker broker --request-ttl-ms "$ttl_ms"

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$broker/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$broker/status"; }

before=$(rss_kb)
target/release/examples/flood "$endpoint" "$count" "$services"
# flood returns once the broker has read every request (it waits for an MMI answer).
during=$(rss_kb)
peak=$(hwm_kb)
sleep $(( ttl_ms / 1000 + 2 ))
after=$(rss_kb)
expired=$(grep -o "dropped [0-9]* request(s): no worker" "$dir/broker.log" | awk "{n += \$2} END {print n + 0}")

printf 'requests=%s services=%s rss_before_kb=%s rss_queued_kb=%s rss_peak_kb=%s rss_after_expiry_kb=%s expired=%s\n' \
    "$count" "$services" "$before" "$during" "$peak" "$after" "$expired"

# Second half: the same flood for one service, served this time. A worker starts once the
# requests are queued, and the flood's client stays to receive every reply.
if [ "$services" = 1 ]; then
    # A fresh broker whose requests wait as long as serving them all takes.
    kill "$broker" 2>/dev/null || true
    wait "$broker" 2>/dev/null || true
    start_broker served
    target/release/examples/flood "$endpoint" "$count" 1 await >"$dir/flood.out" &
    flood=$!
    until grep -q queued "$dir/flood.out" 2>/dev/null; do
        kill -0 "$flood" 2>/dev/null || { echo "memory.sh: flood ended early" >&2; exit 1; }
        sleep 0.05
    done
    queued=$(rss_kb)
    target/release/worker -c "$endpoint" -s service-0 --heartbeat-ms 500 2>"$dir/worker.log" &
    worker=$!
    started=$(date +%s.%N)
    wait "$flood"
    served_s=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    grep -q served "$dir/flood.out" || { echo "memory.sh: not every request was served" >&2; exit 1; }
    # The broker hands freed memory back at its next timer pass (every heartbeat, 500 ms here).
    sleep 1
    printf 'requests=%s services=1 rss_queued_kb=%s rss_after_served_kb=%s served_in_s=%s\n' \
        "$count" "$queued" "$(rss_kb)" "$served_s"
    kill "$worker" 2>/dev/null || true
fi
