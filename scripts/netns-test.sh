#!/usr/bin/env bash
# What it shows: the broker's heartbeats over a real network cut. (Needs root and iproute2.) The
# broker, two workers and a client run in four network namespaces, each host joined to the
# broker's namespace by its own veth pair on its own /30 subnet:
#
#     worker A  10.99.1.2 ---- 10.99.1.1 \
#     worker B  10.99.2.2 ---- 10.99.2.1  +- broker, tcp://*:5555
#     client    10.99.3.2 ---- 10.99.3.1 /
#
# Both workers serve `echo` with `--exec 'echo worker-A'` (and B), so each reply says who
# answered. Next to worker A, on the same link, a plain worker serves `behind-a`, a service no one
# else serves, so that the broker's mmi.service tells whether it still counts a worker behind A's
# link as registered. With heartbeats of 500 ms and liveness 3, traffic flows, then worker A's
# link is cut (`ip link set eth0 down` on A's side: packets stop both ways and nothing is closed)
# and later restored. It prints the time from the cut to the purge and from the restore to A's
# first answer, and checks:
#   * before the cut, both workers answer;
#   * a request sent right at the cut is answered by B (if the broker gave it to A, the client's
#     resend on a new socket reaches B);
#   * the broker purges the workers behind A's link by heartbeat, interval x liveness after the
#     last it heard from them (1.0 to 1.5 s after the cut, with some slack for scheduling):
#     mmi.service turns from 200 to 404 for `behind-a`;
#   * while A is cut off, every request is answered by B;
#   * A notices the broker's silence by itself: it closes its connection (`ss` in A's namespace
#     shows none established for its process); the link stays down until 2 x interval x liveness
#     after the cut, so A has given up and is trying to reconnect into an unreachable network;
#   * once the link is back, A registers again by itself, on a new connection (another local
#     port), and answers requests again;
#   * the broker purged the two workers behind A's link and never B (its exit summary).
# Every check rests on the replies, mmi.service, `ss` and the broker's exit summary; none on a
# log line.
#
# Usage: scripts/netns-test.sh [--debug] [--skip-if-unavailable]
#   --debug                  use the debug programs in ${CARGO_TARGET_DIR:-target}/debug, as
#                            `cargo test --workspace` leaves them, instead of building release ones
#   --skip-if-unavailable    without root or `ip netns`, print "skipped: ..." and exit 0 (else 2)
#   NETNS_BIN_DIR=DIR        use the broker, client and worker found in DIR
#   KEEP_LOGS=DIR            keep the logs (broker, workers, client)
# Prints one PASS/FAIL line per check and ends with "N passed, N failed"; exits 1 if any failed.
# Namespaces are named mdp-<pid>-*, so runs in parallel do not clash; all are deleted on exit.
set -euo pipefail

. "$(dirname "$0")/netns-common.sh"
netns_setup "$@"

heartbeat_ms=500
liveness=3
expiry_ms=$(( heartbeat_ms * liveness ))
ns_broker=mdp-$$-broker
ns_a=mdp-$$-worker-a
ns_b=mdp-$$-worker-b
ns_client=mdp-$$-client
namespaces=()
name=netns-test.sh
source scripts/checks-common.sh
# Times are read off the answers: ask often.
poll_seconds=0.05

# --- the network ----------------------------------------------------------------------------
for ns in "$ns_broker" "$ns_a" "$ns_b" "$ns_client"; do
    ip netns add "$ns"
    namespaces+=("$ns")
    ip -n "$ns" link set lo up
done
# link NAMESPACE SUBNET: a veth pair from the broker's namespace (end named after the subnet) to
# NAMESPACE (end named eth0), broker 10.99.SUBNET.1/30, host 10.99.SUBNET.2/30.
link() {
    ip -n "$ns_broker" link add "host$2" type veth peer name eth0 netns "$1"
    ip -n "$ns_broker" addr add "10.99.$2.1/30" dev "host$2"
    ip -n "$1" addr add "10.99.$2.2/30" dev eth0
    ip -n "$ns_broker" link set "host$2" up
    ip -n "$1" link set eth0 up
}
link "$ns_a" 1
link "$ns_b" 2
link "$ns_client" 3

# --- the programs ---------------------------------------------------------------------------
broker_log=$work/broker.log
# Programs start as `ip netns exec NS PROGRAM ... &`, never through a shell function: `ip netns
# exec` execs the program, so $! is the program itself and killing it kills it.
ip netns exec "$ns_broker" "$bin_dir/broker" --bind 'tcp://*:5555' --heartbeat-ms "$heartbeat_ms" \
    --liveness "$liveness" 2>"$broker_log" &
broker_pid=$!
pids+=("$broker_pid")
# ask_mmi SERVICE: what the broker's mmi.service says of SERVICE, asked from the client's
# namespace: 200 (a worker is registered), 404 (none), or nothing (no answer within 500 ms).
ask_mmi() {
    timeout 5 ip netns exec "$ns_client" "$bin_dir/client" -c tcp://10.99.3.1:5555 \
        -s mmi.service -t 500 -r 1 "$1" 2>/dev/null || true
}
broker_answers() { case "$(ask_mmi echo)" in 200 | 404) return 0 ;; *) return 1 ;; esac; }
wait_until 10 broker_answers || abort "the broker did not start: $(tail -n 3 "$broker_log")"

# ask [TIMEOUT_MS RETRIES]: one request from the client's namespace; prints the reply.
ask() {
    timeout 20 ip netns exec "$ns_client" "$bin_dir/client" -c tcp://10.99.3.1:5555 \
        -t "${1:-1000}" -r "${2:-3}" hello 2>>"$work/client.log"
}
# answered_by NAME: a request is answered by worker NAME (the broker passes idle workers their
# requests in turn, so a registered worker gets one within a few).
answered_by() { [ "$(ask 1000 1)" = "worker-$1" ]; }
# start_worker NAME NAMESPACE SUBNET: an echo worker whose replies say NAME; waits until it
# answers a request, and sets pid_NAME.
start_worker() {
    ip netns exec "$2" "$bin_dir/worker" -c "tcp://10.99.$3.1:5555" -s echo --heartbeat-ms "$heartbeat_ms" \
        --liveness "$liveness" --exec "echo worker-$1" 2>"$work/worker-$1.log" &
    pids+=("$!")
    printf -v "pid_$1" '%s' "$!"
    wait_until 10 answered_by "$1" || abort "worker $1 did not answer within 10 s"
}
start_worker A "$ns_a" 1
start_worker B "$ns_b" 2
# The neighbour on A's link: the only worker for behind-a.
ip netns exec "$ns_a" "$bin_dir/worker" -c tcp://10.99.1.1:5555 -s behind-a --heartbeat-ms "$heartbeat_ms" \
    --liveness "$liveness" 2>"$work/worker-behind-a.log" &
pids+=("$!")
behind_a_registered() { [ "$(ask_mmi behind-a)" = 200 ]; }
wait_until 10 behind_a_registered || abort "the worker for behind-a did not register within 10 s"
# a_connection: the local address:port of worker A's established TCP connection to the broker, as
# `ss` sees it in A's namespace; empty when it has none.
a_connection() {
    ip netns exec "$ns_a" ss -Htnp state established 2>/dev/null |
        awk -v pid="pid=$pid_A," 'index($0, pid) { print $3; exit }'
}
a_port_before=$(a_connection)
[ -n "$a_port_before" ] || abort "ss shows no established connection for worker A (pid $pid_A)"
# ask_times N: N requests one after the other; prints how many each worker answered.
ask_times() {
    local n reply a=0 b=0 other=0
    for n in $(seq 1 "$1"); do
        reply=$(ask) || true
        case "$reply" in
            worker-A) a=$(( a + 1 )) ;;
            worker-B) b=$(( b + 1 )) ;;
            *) other=$(( other + 1 )) ;;
        esac
    done
    echo "$a $b $other"
}

read -r a b other < <(ask_times 4)
if [ "$a" -gt 0 ] && [ "$b" -gt 0 ] && [ "$other" = 0 ]; then
    pass "before the cut, both workers answer over tcp across namespaces (A: $a, B: $b of 4)"
else
    fail "before the cut, expected answers from both workers (A: $a, B: $b, none or other: $other of 4)"
fi

# --- the cut ----------------------------------------------------------------------------------
cut_at=$(now_ms)
ip -n "$ns_a" link set eth0 down
at_cut_ms=$(now_ms)
at_cut=$(ask 1000 3) || true
at_cut_ms=$(( $(now_ms) - at_cut_ms ))
if [ "$at_cut" = worker-B ]; then
    pass "a request sent right at the cut was answered by B in ${at_cut_ms} ms"
else
    fail "a request sent right at the cut got '${at_cut:-no reply}' instead of worker-B"
fi

behind_a_purged() { [ "$(ask_mmi behind-a)" = 404 ]; }
if wait_until 10 behind_a_purged; then
    purge_ms=$(( $(now_ms) - cut_at ))
    # The broker last heard from the workers behind A's link at most one interval before the cut
    # (a HEARTBEAT or a reply), so the purge is due between expiry - interval and expiry after it.
    if [ "$purge_ms" -ge $(( expiry_ms - heartbeat_ms )) ] && [ "$purge_ms" -le $(( expiry_ms + 1000 )) ]; then
        pass "the broker purged the workers behind A's link $purge_ms ms after the cut (mmi.service: 404 for behind-a; interval ${heartbeat_ms} ms x liveness ${liveness} = ${expiry_ms} ms after their last message)"
    else
        fail "the broker purged the workers behind A's link $purge_ms ms after the cut, outside $(( expiry_ms - heartbeat_ms ))..$(( expiry_ms + 1000 )) ms"
    fi
else
    purge_ms=-
    fail "the broker did not purge the workers behind A's link within 10 s of the cut (mmi.service still says $(ask_mmi behind-a) for behind-a)"
fi

read -r a b other < <(ask_times 3)
if [ "$b" = 3 ]; then
    pass "while A is cut off, B answered all 3 requests"
else
    fail "while A is cut off, expected B to answer 3 of 3 (A: $a, B: $b, none or other: $other)"
fi

# Keep the link down until A has given up on the broker too (it hears nothing for interval x
# liveness, closes its socket and tries again, and again, into a network that is unreachable).
a_gave_up() { [ -z "$(a_connection)" ]; }
if wait_until 10 a_gave_up; then
    pass "A noticed the broker's silence by itself $(( $(now_ms) - cut_at )) ms after the cut: it closed its connection (ss: none established for its process, was $a_port_before)"
else
    fail "A did not close its connection within 10 s of the cut (ss: still $(a_connection))"
fi
hold_until=$(( cut_at + 2 * expiry_ms ))
while [ "$(now_ms)" -lt "$hold_until" ]; do sleep 0.05; done

# --- the restore ------------------------------------------------------------------------------
restore_at=$(now_ms)
ip -n "$ns_a" link set eth0 up
if wait_until 15 answered_by A; then
    register_ms=$(( $(now_ms) - restore_at ))
    a_port_after=$(a_connection)
    if [ -n "$a_port_after" ] && [ "$a_port_after" != "$a_port_before" ]; then
        pass "A registered again and answered $register_ms ms after the link came back, on a new connection ($a_port_after, was $a_port_before): a new identity for the broker"
    else
        fail "A answered after the restore, but not on a new connection (ss: ${a_port_after:-none}, was $a_port_before)"
    fi
else
    register_ms=-
    fail "A did not answer again within 15 s of the restore"
fi
wait_until 10 behind_a_registered || say "the worker for behind-a did not register again within 10 s"

read -r a b other < <(ask_times 4)
if [ "$a" -gt 0 ] && [ "$b" -gt 0 ] && [ "$other" = 0 ]; then
    pass "after the restore, both workers answer again (A: $a, B: $b of 4)"
else
    fail "after the restore, expected answers from both workers (A: $a, B: $b, none or other: $other of 4)"
fi

ended_at=$(now_ms)
stop_broker
purged=$(field workers_purged "$(served_summary "$broker_log")")
if [ "${purged:-}" = 2 ]; then
    pass "the broker purged the two workers behind A's link and never B (its exit summary: workers_purged=2)"
else
    fail "the broker purged ${purged:-an unknown number of} workers, not the two behind A's link (its exit summary: $(served_summary "$broker_log"))"
fi

echo "timings: purge_ms=$purge_ms reregister_ms=$register_ms cut_to_end_ms=$(( ended_at - cut_at )) total_s=$SECONDS"
finish
