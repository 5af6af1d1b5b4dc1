#!/usr/bin/env bash
# What it shows: two brokers over a real network cut, with workers and clients that know both
# (issue 12 item 4). (Needs root and iproute2.) Two brokers, two workers in all mode, one
# --failover worker and the clients run in six network namespaces, each joined by a veth pair to
# a bridge in a seventh (the switch), all on 10.99.0.0/24:
#
#     broker A   10.99.0.1  tcp://*:5555 --+
#     broker B   10.99.0.2  tcp://*:5555 --+
#     worker 1   10.99.0.11 -c A -c B -----+-- bridge (namespace mdp-<pid>-net)
#     worker 2   10.99.0.12 -c A -c B -----+
#     failover   10.99.0.13 --failover -c A -c B, the only worker for `only-f`
#     clients    10.99.0.21 -c A -c B -----+
#
# Workers 1 and 2 serve `echo` with `--exec 'date +%s%3N'`: each reply says when a worker ran
# the request, so a reply that a worker produced after A's link was cut can only have come
# through B (nothing reaches A any more). The failover worker starts on A, the first of its list;
# mmi.service for `only-f`, asked of each broker, says where it is registered. Heartbeats of
# 500 ms, liveness 3 (1.5 s), client timeout 1000 ms.
#
# Under load (an async client, window 8, spread over both brokers, and a sync client, -r 2, that
# keeps to A as long as A answers), A's link is cut (`ip link set eth0 down` in A's namespace:
# packets stop both ways, nothing is closed) and restored after twice interval x liveness. It
# prints the times and checks:
#   * before the cut, worker 1 and 2 are registered with both brokers (ss: established to both),
#     the failover worker with A only (mmi.service only-f: 200 at A, 404 at B), the async client
#     spreads over both (traffic on both brokers' links) and the sync client talks to A (ss);
#   * the sync client fails no request (it exits 0 with every reply printed), and the first
#     request a worker ran after the cut is answered at most one client timeout plus 100 ms
#     after the cut;
#   * the failover worker is registered with B (mmi.service only-f: 200 at B) within interval x
#     liveness plus its first backoff (100 ms) of the cut, plus 200 ms for the polling;
#   * workers 1 and 2 close their connections to A by themselves (ss), and keep serving B;
#   * after the restore, A's share of the traffic (bytes on its link against both links, in
#     250 ms windows) is back to at least half of what it was before the cut within a few heartbeat
#     intervals (5, 2.5 s), workers 1 and 2 are on A again on new connections (ss), and the
#     failover worker stays on B (no going back while B serves it);
#   * the async client fails no request (its --stats: failed=0) and got replies through both.
# Every check rests on the replies, mmi.service, `ss`, interface byte counters (/proc/PID/net/dev)
# and the clients' exit statuses and --stats; none on a log line.
#
# Usage: scripts/netns-brokers.sh [--debug] [--skip-if-unavailable]
#   --debug                  use the debug programs in ${CARGO_TARGET_DIR:-target}/debug, as
#                            `cargo test --workspace` leaves them, instead of building release ones
#   --skip-if-unavailable    without root or `ip netns`, print "skipped: ..." and exit 0 (else 2)
#   NETNS_BIN_DIR=DIR        use the broker, client and worker found in DIR
#   KEEP_LOGS=DIR            keep the logs (brokers, workers, clients) and the reply timings
# Prints one PASS/FAIL line per check and ends with "N passed, N failed"; exits 1 if any failed.
# Namespaces are named mdp-<pid>-*, so runs in parallel do not clash; all are deleted on exit.
set -euo pipefail

. "$(dirname "$0")/netns-common.sh"
NETNS_NEEDS_BRIDGE=1
netns_setup "$@"

heartbeat_ms=500
liveness=3
expiry_ms=$(( heartbeat_ms * liveness ))
timeout_ms=1000
# The worker's first reconnect backoff (WorkerConfig::reconnect_initial): a failover waits it.
backoff_ms=100
a=tcp://10.99.0.1:5555
b=tcp://10.99.0.2:5555
ns_net=mdp-$$-net
ns_ba=mdp-$$-broker-a
ns_bb=mdp-$$-broker-b
ns_w1=mdp-$$-worker-1
ns_w2=mdp-$$-worker-2
ns_f=mdp-$$-failover
ns_client=mdp-$$-client
namespaces=()
name=netns-brokers.sh
source scripts/checks-common.sh
# Times are read off the answers: ask often.
poll_seconds=0.05

# --- the network ----------------------------------------------------------------------------
for ns in "$ns_net" "$ns_ba" "$ns_bb" "$ns_w1" "$ns_w2" "$ns_f" "$ns_client"; do
    ip netns add "$ns"
    namespaces+=("$ns")
    ip -n "$ns" link set lo up
done
ip -n "$ns_net" link add br0 type bridge
ip -n "$ns_net" link set br0 up
# plug NAMESPACE HOST: a veth pair from the bridge (port named pHOST) to NAMESPACE (eth0, address
# 10.99.0.HOST/24).
plug() {
    ip -n "$ns_net" link add "p$2" type veth peer name eth0 netns "$1"
    ip -n "$ns_net" link set "p$2" master br0 up
    ip -n "$1" addr add "10.99.0.$2/24" dev eth0
    ip -n "$1" link set eth0 up
}
plug "$ns_ba" 1
plug "$ns_bb" 2
plug "$ns_w1" 11
plug "$ns_w2" 12
plug "$ns_f" 13
plug "$ns_client" 21

# --- the programs ---------------------------------------------------------------------------
# Programs start as `ip netns exec NS PROGRAM ... &`, never through a shell function: `ip netns
# exec` execs the program, so $! is the program itself and killing it kills it.
ip netns exec "$ns_ba" "$bin_dir/broker" --bind 'tcp://*:5555' --heartbeat-ms "$heartbeat_ms" \
    --liveness "$liveness" 2>"$work/broker-a.log" &
pid_ba=$!
pids+=("$pid_ba")
ip netns exec "$ns_bb" "$bin_dir/broker" --bind 'tcp://*:5555' --heartbeat-ms "$heartbeat_ms" \
    --liveness "$liveness" 2>"$work/broker-b.log" &
pid_bb=$!
pids+=("$pid_bb")
# ask_mmi ENDPOINT SERVICE: what the broker at ENDPOINT says of SERVICE through mmi.service,
# asked from the clients' namespace: 200, 404, or nothing (no answer within 500 ms).
ask_mmi() {
    timeout 5 ip netns exec "$ns_client" "$bin_dir/client" -c "$1" -s mmi.service -t 500 -r 1 \
        "$2" 2>/dev/null || true
}
answers() { case "$(ask_mmi "$1" echo)" in 200 | 404) return 0 ;; *) return 1 ;; esac; }
wait_until 10 answers "$a" || abort "broker A did not start: $(tail -n 3 "$work/broker-a.log")"
wait_until 10 answers "$b" || abort "broker B did not start: $(tail -n 3 "$work/broker-b.log")"

# start_worker NAME NAMESPACE FLAGS...: a worker of both brokers; sets pid_NAME.
start_worker() {
    local name=$1 ns=$2
    shift 2
    ip netns exec "$ns" "$bin_dir/worker" -c "$a" -c "$b" --heartbeat-ms "$heartbeat_ms" \
        --liveness "$liveness" "$@" 2>"$work/worker-$name.log" &
    pids+=("$!")
    printf -v "pid_$name" '%s' "$!"
}
start_worker 1 "$ns_w1" -s echo --exec 'date +%s%3N'
start_worker 2 "$ns_w2" -s echo --exec 'date +%s%3N'
start_worker f "$ns_f" --failover -s only-f
# connections NAMESPACE PID ADDRESS: the local address:port of each TCP connection that PID has
# established to ADDRESS:5555, as `ss` sees them in NAMESPACE, one a line.
connections() {
    ip netns exec "$1" ss -Htnp state established dst "$3:5555" 2>/dev/null |
        awk -v pid="pid=$2," 'index($0, pid) { print $3 }'
}
# on_both NAMESPACE PID: PID has a connection established to each broker.
on_both() { [ -n "$(connections "$1" "$2" 10.99.0.1)" ] && [ -n "$(connections "$1" "$2" 10.99.0.2)" ]; }
registered_at() { [ "$(ask_mmi "$1" "$2")" = 200 ]; }
wait_until 10 on_both "$ns_w1" "$pid_1" || abort "worker 1 did not connect to both brokers within 10 s"
wait_until 10 on_both "$ns_w2" "$pid_2" || abort "worker 2 did not connect to both brokers within 10 s"
wait_until 10 registered_at "$a" echo || abort "no worker for echo registered with A within 10 s"
wait_until 10 registered_at "$b" echo || abort "no worker for echo registered with B within 10 s"
wait_until 10 registered_at "$a" only-f || abort "the failover worker did not register with A within 10 s"
w1_a_before=$(connections "$ns_w1" "$pid_1" 10.99.0.1)
w2_a_before=$(connections "$ns_w2" "$pid_2" 10.99.0.1)
f_at_b=$(ask_mmi "$b" only-f)
if [ "$f_at_b" = 404 ]; then
    pass "workers 1 and 2 are connected to both brokers (ss), the failover worker is registered with A only (mmi.service only-f: 200 at A, $f_at_b at B)"
else
    fail "the failover worker should be on A only, but B says '${f_at_b:-nothing}' for only-f"
fi

# link_bytes PID: bytes in and out of eth0 in the namespace of PID (a broker), from /proc.
link_bytes() { awk '$1 == "eth0:" { print $2 + $10 }' "/proc/$1/net/dev"; }
# share_of_a SECONDS: A's share of the bytes on both brokers' links over SECONDS, in percent.
share_of_a() {
    local a0 b0 a1 b1
    a0=$(link_bytes "$pid_ba"); b0=$(link_bytes "$pid_bb")
    sleep "$1"
    a1=$(link_bytes "$pid_ba"); b1=$(link_bytes "$pid_bb")
    awk -v a=$(( a1 - a0 )) -v b=$(( b1 - b0 )) 'BEGIN { printf "%d", (a + b > 0) ? 100 * a / (a + b) : 0 }'
}

# --- the load ---------------------------------------------------------------------------------
# The async client runs until told to stop (SIGINT: it prints its --stats and exits 130).
ip netns exec "$ns_client" "$bin_dir/client" -c "$a" -c "$b" -w 8 -n 100000000 -t "$timeout_ms" \
    -r 3 --stats >"$work/async.stats" 2>"$work/async.log" &
pid_async=$!
pids+=("$pid_async")
# Its share before anything else runs (the sync client will add to A's).
sleep 0.5
share_before=$(share_of_a 1)
if [ "$share_before" -ge 25 ] && [ "$share_before" -le 75 ]; then
    pass "the async client spreads its requests over both brokers: ${share_before}% of the traffic on A's link"
else
    fail "the async client should spread over both brokers, but A's link carries ${share_before}% of the traffic"
fi

# The sync client's rate decides how many requests it sends: about 3 s of work, a third of it
# before the cut, so that it is still busy at the cut and done before the restore.
rate=$(ip netns exec "$ns_client" "$bin_dir/client" -c "$a" -c "$b" -n 50 -t "$timeout_ms" -r 2 \
    --stats 2>/dev/null | sed -n 's/.*req_per_s=\([0-9]*\).*/\1/p')
[ -n "$rate" ] || abort "the sync client could not measure its rate"
sync_count=$(( rate * 3 ))
[ "$sync_count" -ge 30 ] || sync_count=30
# Each reply line is the time the worker ran it; this prefixes the time it reached the client.
stamp() { local line; while IFS= read -r line; do printf '%s %s\n' "${EPOCHREALTIME/./}" "$line"; done; }
ip netns exec "$ns_client" "$bin_dir/client" -c "$a" -c "$b" -n "$sync_count" -t "$timeout_ms" \
    -r 2 > >(stamp >"$work/sync.replies") 2>"$work/sync.log" &
pid_sync=$!
pids+=("$pid_sync")
sync_started() { [ "$(wc -l <"$work/sync.replies")" -ge $(( sync_count / 3 )) ]; }
wait_until 20 sync_started || abort "the sync client answered fewer than $(( sync_count / 3 )) requests in 20 s"
sync_on_a=$(connections "$ns_client" "$pid_sync" 10.99.0.1)
sync_on_b=$(connections "$ns_client" "$pid_sync" 10.99.0.2)
if [ -n "$sync_on_a" ] && [ -z "$sync_on_b" ]; then
    pass "the sync client talks to A, the first of its list ($(wc -l <"$work/sync.replies") of $sync_count answered; ss: $sync_on_a to A, none to B)"
else
    fail "the sync client should talk to A only (ss: to A '${sync_on_a}', to B '${sync_on_b}')"
fi

# --- the cut ----------------------------------------------------------------------------------
cut_at=$(now_ms)
ip -n "$ns_ba" link set eth0 down
cut_done=$(now_ms)

f_moved() { registered_at "$b" only-f; }
if wait_until 10 f_moved; then
    failover_worker_ms=$(( $(now_ms) - cut_at ))
    limit=$(( expiry_ms + backoff_ms + 200 ))
    if [ "$failover_worker_ms" -le "$limit" ]; then
        pass "the failover worker registered with B $failover_worker_ms ms after the cut (mmi.service only-f: 200 at B; at most interval ${heartbeat_ms} ms x liveness ${liveness} + backoff ${backoff_ms} ms + 200 ms polling = $limit ms)"
    else
        fail "the failover worker registered with B $failover_worker_ms ms after the cut, later than $limit ms"
    fi
else
    failover_worker_ms=-
    fail "the failover worker did not register with B within 10 s of the cut"
fi

gave_up() { [ -z "$(connections "$ns_w1" "$pid_1" 10.99.0.1)" ] && [ -z "$(connections "$ns_w2" "$pid_2" 10.99.0.1)" ]; }
on_b() { [ -n "$(connections "$1" "$2" 10.99.0.2)" ]; }
if wait_until 10 gave_up && on_b "$ns_w1" "$pid_1" && on_b "$ns_w2" "$pid_2"; then
    pass "workers 1 and 2 closed their connections to A by themselves $(( $(now_ms) - cut_at )) ms after the cut and kept those to B (ss)"
else
    fail "workers 1 and 2 should have closed their connections to A and kept B's (ss: 1 to A '$(connections "$ns_w1" "$pid_1" 10.99.0.1)', 2 to A '$(connections "$ns_w2" "$pid_2" 10.99.0.1)')"
fi

# The sync client ends by itself.
sync_status=0
deadline=$(( SECONDS + 30 ))
while kill -0 "$pid_sync" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
if kill -0 "$pid_sync" 2>/dev/null; then
    sync_status=timeout
    kill -INT "$pid_sync" 2>/dev/null || true
fi
wait "$pid_sync" || sync_status=$?
sleep 0.1 # the last lines through `stamp`
sync_replies=$(wc -l <"$work/sync.replies")
if [ "$sync_status" = 0 ] && [ "$sync_replies" = "$sync_count" ]; then
    pass "the sync client failed no request: exit status 0, $sync_replies replies of $sync_count"
else
    fail "the sync client should answer every request (exit status $sync_status, $sync_replies replies of $sync_count: $(tail -n 2 "$work/sync.log" | tr '\n' ' '))"
fi
# The first reply that a worker produced after the cut: through B.
first_after=$(awk -v cut="$cut_done" '$2 > cut { print substr($1, 1, length($1) - 3); exit }' \
    "$work/sync.replies")
if [ -n "$first_after" ]; then
    sync_failover_ms=$(( first_after - cut_at ))
    limit=$(( timeout_ms + 100 ))
    if [ "$sync_failover_ms" -le "$limit" ]; then
        pass "the sync client's first request run after the cut was answered through B $sync_failover_ms ms after it (at most the timeout ${timeout_ms} ms + 100 ms)"
    else
        fail "the sync client's first request run after the cut was answered $sync_failover_ms ms after it, later than $limit ms"
    fi
else
    sync_failover_ms=-
    fail "the sync client got no reply that a worker ran after the cut"
fi

hold_until=$(( cut_at + 2 * expiry_ms ))
while [ "$(now_ms)" -lt "$hold_until" ]; do sleep 0.05; done
share_cut=$(share_of_a 0.5)

# --- the restore ------------------------------------------------------------------------------
restore_at=$(now_ms)
ip -n "$ns_ba" link set eth0 up
half=$(( share_before / 2 ))
share_back_ms=-
share_after=0
while [ $(( $(now_ms) - restore_at )) -lt 10000 ]; do
    share_after=$(share_of_a 0.25)
    if [ "$share_after" -ge "$half" ]; then
        share_back_ms=$(( $(now_ms) - restore_at ))
        break
    fi
done
limit=$(( 5 * heartbeat_ms ))
if [ "$share_back_ms" != - ] && [ "$share_back_ms" -le "$limit" ]; then
    pass "A's share of the traffic was back $share_back_ms ms after the link returned (${share_after}% in a 250 ms window, at least half of ${share_before}% before the cut; ${share_cut}% while cut; at most 5 heartbeat intervals, $limit ms)"
else
    fail "A's share of the traffic should be back to ${half}% within $limit ms of the restore (after ${share_back_ms} ms: ${share_after}%; ${share_cut}% while cut)"
fi

new_connection() { # NAMESPACE PID BEFORE: connected to A again, on another local port
    local now
    now=$(connections "$1" "$2" 10.99.0.1)
    [ -n "$now" ] && [ "$now" != "$3" ]
}
if wait_until 5 new_connection "$ns_w1" "$pid_1" "$w1_a_before" &&
    wait_until 5 new_connection "$ns_w2" "$pid_2" "$w2_a_before"; then
    pass "workers 1 and 2 are connected to A again, on new connections (ss: $(connections "$ns_w1" "$pid_1" 10.99.0.1), $(connections "$ns_w2" "$pid_2" 10.99.0.1); were $w1_a_before, $w2_a_before)"
else
    fail "workers 1 and 2 should be on A again on new connections (ss: '$(connections "$ns_w1" "$pid_1" 10.99.0.1)', '$(connections "$ns_w2" "$pid_2" 10.99.0.1)')"
fi
f_at_a=$(ask_mmi "$a" only-f)
f_at_b=$(ask_mmi "$b" only-f)
if [ "$f_at_a" = 404 ] && [ "$f_at_b" = 200 ]; then
    pass "the failover worker stays on B after A returned (mmi.service only-f: 404 at A, 200 at B)"
else
    fail "the failover worker should stay on B (mmi.service only-f: '${f_at_a}' at A, '${f_at_b}' at B)"
fi

kill -INT "$pid_async" 2>/dev/null || true
wait "$pid_async" || true
stats=$(cat "$work/async.stats")
per_broker=$(sed -n 's/.*per_broker=\([0-9,]*\).*/\1/p' <<<"$stats")
if [ "$(field failed "$stats")" = 0 ] && [ "${per_broker%%,*}" -gt 0 ] 2>/dev/null &&
    [ "${per_broker##*,}" -gt 0 ]; then
    pass "the async client failed no request: $(field replies "$stats") replies, $(field retried "$stats") of them resent, per broker $per_broker (--stats)"
else
    fail "the async client should fail nothing and use both brokers (--stats: ${stats:-none})"
fi

echo "timings: sync_failover_ms=$sync_failover_ms failover_worker_ms=$failover_worker_ms share_back_ms=$share_back_ms share_a_before=${share_before}% share_a_cut=${share_cut}% share_a_after=${share_after}% sync_requests=$sync_count total_s=$SECONDS"
finish
