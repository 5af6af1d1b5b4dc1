#!/usr/bin/env bash
# What --http costs lbbroker's broker: its CPU seconds (utime + stime of the whole process, the
# dashboard's HTTP thread included) for 10 runs of 500 one-request clients (5,000 requests) to 8
# processors with no work, three ways: without --http, with it, and with it while a page's worth
# of polling (/status and /metrics every 250 ms) goes on. Figures only; nothing is asserted.
#
#   cargo build --release -p lbbroker && lbbroker/bench/dashboard_cost.sh [rounds]
set -u
LB=${LB:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/lbbroker}
ROUNDS=${1:-3}
for tool in curl bc; do command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }; done
run() {
  local mode=$1; local dir; dir=$(mktemp -d); cd "$dir"
  if [ "$mode" = off ]; then "$LB" broker 2>broker.err & else "$LB" broker --http 127.0.0.1:0 2>broker.err & fi
  local broker=$!
  sleep 0.5
  "$LB" processor --processors 8 --unit-ms 0 >/dev/null 2>&1 &
  local procs=$!
  local poller=
  if [ "$mode" = polled ]; then
    port=$(grep -o '127.0.0.1:[0-9]*' broker.err | head -1)
    ( while true; do curl -s "http://$port/status" >/dev/null; curl -s "http://$port/metrics" >/dev/null; sleep 0.25; done ) &
    poller=$!
  fi
  local start=$(date +%s.%N)
  for i in $(seq 10); do "$LB" client --clients 500 --first-id $((i*500)) >/dev/null; done
  local end=$(date +%s.%N)
  local ticks=$(awk '{print $14+$15}' /proc/$broker/stat)
  [ -n "$poller" ] && kill $poller
  kill -INT $broker; kill -INT $procs; wait $broker $procs 2>/dev/null
  echo "$mode: broker CPU $(echo "scale=2; $ticks/$(getconf CLK_TCK)" | bc) s, wall $(echo "$end-$start" | bc) s for 5000 requests"
  cd /; rm -rf "$dir"
}
for round in $(seq "$ROUNDS"); do for mode in off on polled; do run "$mode"; done; done
