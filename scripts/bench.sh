#!/usr/bin/env bash
# What it shows: how fast the Majordomo broker is, next to the ceiling (broker/examples/ceiling.rs,
# a forwarder with no bookkeeping that allows what MDP allows: one request per worker at a time),
# under the same load from our release `client` and `worker`.
#
# Each row starts a fresh broker (so its peak RSS is the row's own), starts the workers, runs the
# client(s), and reads the broker's CPU time and peak RSS from /proc. Columns:
#   req/s      replies per second seen by the client(s)
#   p50/p99    request latency in microseconds (with --window, time in flight including queueing);
#              in rows with several clients, the percentiles of all their requests together:
#              each client prints `--stats=json` with a latency histogram, `client --merge-stats`
#              adds the histograms up and reads p50/p99 from the sum (at most 0.78% above exact)
#   cpu_us     broker CPU (user+sys, all its threads) per request, in microseconds
#   usr_us     the user-space part of cpu_us (the rest is the kernel: TCP and thread wake-ups)
#   wrk_us     CPU of all the workers together, per request
#   cli_us     CPU of all the clients together, per request
#   rss_mb     broker peak RSS (VmHWM)
#   vs_ceiling req/s of this row divided by the ceiling's req/s for the same load
#
# Usage: scripts/bench.sh [--quick] [--count N] [--net tcp|ipc] [--slots-only]
#                         [--auth-only [--curve]] [--broker-endpoint ENDPOINT]
#   --quick                 fewer requests and rows (a smoke run, a minute or so)
#   --count N               requests per throughput row (default 100000)
#   --net tcp|ipc           only the rows of one transport (and not the scaling sweep)
#   --slots-only            only the worker-slots rows (issue 15): 4 worker programs at --slots
#                           1, 4 and 16 against our broker, window 1,000; the workers column
#                           reads 4x16 for 4 programs of 16 slots each; last, the ceiling with
#                           4x16 (no one-request-per-program limit). Then (tcp, 16 B):
#                           slow   4 x 4 slots, worker 0 sleeping 1 ms per request; `share`
#                                  says how many requests each worker served (worker 0 first)
#                           hol    4 x 16 slots --concurrency 1 (and, beside it, 16): one 10 s
#                                  request, then 1,000 short ones (window 100); p50/p99 are the
#                                  short ones', which the long one strands behind it
#   --auth-only             only the cost of authentication (issue 11): the tcp 16 B window row
#                           with 4 workers, our broker without --auth (kind `broker`), then with
#                           --auth and every client and worker logged in by PLAIN (`plain`); the
#                           auth file and the password are made up in a temp dir
#   --curve                 with --auth-only: all rows from the CURVE build (build/curve.toml,
#                           target/curve/release, the system's libzmq; needs libzmq3-dev), and a
#                           third row over a curve+ endpoint (`curve`, keys from broker keygen)
#   --broker-endpoint E     do not start our broker: measure the MDP/0.1 broker already listening
#                           at E (tcp) instead, side by side with the ceiling (no CPU/RSS for it)
# Figures, never assertions: nothing here fails because of a number.
set -euo pipefail
cd "$(dirname "$0")/.."

count=100000
quick=
external=
only_net=
slots_only=
auth_only=
curve=
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; count=20000 ;;
        --net) only_net=$2; shift ;;
        --count) count=$2; shift ;;
        --slots-only) slots_only=1 ;;
        --auth-only) auth_only=1 ;;
        --curve) curve=1 ;;
        --broker-endpoint) external=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "bench.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
latency_count=$(( count / 5 ))

if [ -n "$curve" ]; then
    [ -n "$auth_only" ] || { echo "bench.sh: --curve goes with --auth-only" >&2; exit 2; }
    # The CURVE build's own target dir (build/curve.toml says target/curve).
    cargo build --release -q -p broker -p client -p worker --bins --config build/curve.toml
    bin=${CARGO_TARGET_DIR:-target/curve}/release
else
    cargo build --release -q -p broker -p client -p worker --bins --examples
    bin=${CARGO_TARGET_DIR:-target}/release
fi
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

port=$(( 20000 + RANDOM % 20000 ))
next_endpoint() { # transport -> a fresh endpoint
    port=$(( port + 1 ))
    case "$1" in
        tcp) echo "tcp://127.0.0.1:$port" ;;
        ipc) echo "ipc://$work/b$port.ipc" ;;
    esac
}
cpu_ticks() { # pid... -> user+sys clock ticks, summed
    local pid total=0
    for pid in "$@"; do total=$(( total + $(awk '{print $14 + $15}' "/proc/$pid/stat") )); done
    echo "$total"
}
user_ticks() { awk '{print $14}' "/proc/$1/stat"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
ticks_per_s=$(getconf CLK_TCK)

# With --auth-only: the broker's flags, and the flags of every client and worker, of the row.
broker_args=()
peer_args=()
start_broker() { # kind endpoint -> sets broker_pid
    case "$1" in
        broker|plain) "$bin/broker" --bind "$2" --max-queue 1000000 "${broker_args[@]}" 2>>"$work/broker.log" & ;;
        curve) "$bin/broker" --bind "curve+$2" --max-queue 1000000 "${broker_args[@]}" 2>>"$work/broker.log" & ;;
        ceiling) "$bin/examples/ceiling" "$2" 2>>"$work/broker.log" & ;;
    esac
    broker_pid=$!
    pids+=("$broker_pid")
}
start_workers() { # endpoint n service-prefix(optional: distinct services)
    local n
    for n in $(seq 0 $(( $2 - 1 ))); do
        local service=echo
        [ -n "${3:-}" ] && service="$3$n"
        local extra=()
        [ "$n" = 0 ] && extra+=("${first_worker_args[@]}")
        "$bin/worker" -c "$1" -s "$service" --slots "$worker_slots" "${worker_args[@]}" "${peer_args[@]}" \
            "${extra[@]}" 2>"$work/worker$n.log" &
        pids+=("$!")
        worker_pids+=("$!")
    done
}
wait_ready() { # endpoint service: until a request to the service is answered
    local tries=0
    until "$bin/client" -c "$1" -s "$2" -t 500 -r 1 "${peer_args[@]}" ping >/dev/null 2>&1; do
        tries=$(( tries + 1 ))
        [ $tries -lt 40 ] || { echo "bench.sh: no worker for $2 at $1" >&2; return 1; }
    done
}
stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
    worker_pids=()
}
worker_pids=()
# Sockets (MDP workers) per worker program; the slots rows change it.
worker_slots=1
# More flags for every worker, and for worker 0 alone (the slow worker of the slow row).
worker_args=()
first_worker_args=()
# How many requests each worker served, from its stop line: "12 3400 3300 3290".
shares() {
    local log out=
    for log in "$work"/worker[0-9]*.log; do
        out="$out $(sed -n 's/.*stopping after \([0-9]*\) requests.*/\1/p' "$log" | tail -1)"
    done
    echo "${out# }"
}
# Clients run under bash's `time`, which reports the CPU a finished child used.
TIMEFORMAT='%U %S'
timed_client() { # output-file args... : runs the client, its --stats line to the file, CPU to file.cpu
    local out=$1
    shift
    local status=0
    { time "$bin/client" "$@" "${peer_args[@]}" >"$out" 2>>"$work/client.log"; } 2>"$out.cpu" || status=$?
    # A client that fails (exit 1) still prints its --stats: say so, and go on with the row.
    if [ "$status" != 0 ]; then
        echo "bench.sh: client $* exited $status; its last words:" >&2
        tail -3 "$work/client.log" >&2
    fi
    return 0
}

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }

declare -A ceiling_rate
printf '%-8s %-9s %-4s %-6s %-7s %-3s %9s %9s %9s %7s %7s %7s %7s %7s %10s\n' \
    broker mode net body workers cli "req/s" p50_us p99_us cpu_us usr_us wrk_us cli_us rss_mb vs_ceiling
row() { # kind mode(window|sync|services|clients) transport size workers
    local kind=$1 mode=$2 net=$3 size=$4 workers=$5
    local endpoint clients=1
    if [ "$kind" = external ]; then
        endpoint=$external
    else
        endpoint=$(next_endpoint "$net")
        start_broker "$kind" "$endpoint"
    fi
    case "$mode" in
        services) start_workers "$endpoint" "$workers" svc- ; wait_ready "$endpoint" "svc-$(( workers - 1 ))" ;;
        *) start_workers "$endpoint" "$workers"; wait_ready "$endpoint" echo ;;
    esac
    # Every worker must be registered before the clock starts: one more check per worker.
    sleep 0.3
    local before=0 user_before=0 workers_before
    [ "$kind" = external ] || before=$(cpu_ticks "$broker_pid")
    [ "$kind" = external ] || user_before=$(user_ticks "$broker_pid")
    workers_before=$(cpu_ticks "${worker_pids[@]}")
    local start end stats requests
    start=$(date +%s.%N)
    case "$mode" in
        window)
            requests=$count
            timed_client "$work/client0.out" -c "$endpoint" --count "$count" --window 1000 --size "$size" --stats
            stats=$(cat "$work/client0.out") ;;
        slow)
            requests=$count
            timed_client "$work/client0.out" -c "$endpoint" --count "$count" --window 1000 --size "$size" -t 30000 --stats
            stats=$(cat "$work/client0.out") ;;
        hol)
            # The long request first, synchronous (its body is read by --bench-sleep-bodies),
            # then the short ones once it is in a worker's hands.
            "$bin/client" -c "$endpoint" -t 30000 -r 1 sleep-ms=10000 >/dev/null 2>>"$work/client.log" &
            local long_pid=$!
            sleep 0.3
            requests=1000
            timed_client "$work/client0.out" -c "$endpoint" --count 1000 --window 100 --size "$size" -t 30000 --stats
            stats=$(cat "$work/client0.out")
            wait "$long_pid" || echo "bench.sh: the long request failed" >&2 ;;
        sync)
            requests=$latency_count
            timed_client "$work/client0.out" -c "$endpoint" --count "$latency_count" --size "$size" --stats
            stats=$(cat "$work/client0.out") ;;
        services|clients)
            clients=$([ "$mode" = services ] && echo "$workers" || echo 50)
            requests=$(( count / clients * clients ))
            local n client_pids=()
            for n in $(seq 0 $(( clients - 1 ))); do
                local service=echo
                [ "$mode" = services ] && service="svc-$n"
                timed_client "$work/client$n.out" -c "$endpoint" -s "$service" \
                    --count $(( count / clients )) --window 20 --size "$size" --stats=json &
                client_pids+=("$!")
            done
            wait "${client_pids[@]}" || true
            # Percentiles do not add up, histograms do: one --stats line for all the requests.
            stats=$("$bin/client" --merge-stats "$work"/client*.out) ||
                echo "bench.sh: could not merge the clients' --stats=json" >&2 ;;
    esac
    end=$(date +%s.%N)
    local workers_after wrk_us cli_us
    workers_after=$(cpu_ticks "${worker_pids[@]}")
    wrk_us=$(awk -v t=$(( workers_after - workers_before )) -v hz="$ticks_per_s" -v n="$requests" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    cli_us=$(cat "$work"/client*.out.cpu | awk -v n="$requests" '{ s += $1 + $2 } END { printf "%.1f", s * 1e6 / n }')
    rm -f "$work"/client*.out "$work"/client*.out.cpu
    local replies rate cpu_us="-" usr_us="-" rss_mb="-" ratio="-"
    replies=$(field replies "$stats")
    rate=$(awk -v n="$replies" -v s="$start" -v e="$end" 'BEGIN { printf "%d", n / (e - s) }')
    case "$mode" in window|sync|slow|hol) false ;; esac ||
        rate=$(awk -v r="$(field req_per_s "$stats")" 'BEGIN { printf "%d", r }')
    if [ "$kind" != external ]; then
        local after
        after=$(cpu_ticks "$broker_pid")
        cpu_us=$(awk -v t=$(( after - before )) -v hz="$ticks_per_s" -v n="$requests" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
        usr_us=$(awk -v t=$(( $(user_ticks "$broker_pid") - user_before )) -v hz="$ticks_per_s" -v n="$requests" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
        rss_mb=$(awk -v kb="$(hwm_kb "$broker_pid")" 'BEGIN { printf "%.1f", kb / 1024 }')
    fi
    local key="$mode/$net/$size/$workers"
    if [ "$kind" = ceiling ]; then
        ceiling_rate[$key]=$rate
    elif [ -n "${ceiling_rate[$key]:-}" ] && [ "${ceiling_rate[$key]}" -gt 0 ]; then
        ratio=$(awk -v a="$rate" -v b="${ceiling_rate[$key]}" 'BEGIN { printf "%.2f", a / b }')
    fi
    local shown_workers=$workers
    [ "$worker_slots" -gt 1 ] && shown_workers="${workers}x$worker_slots"
    printf '%-8s %-9s %-4s %-6s %-7s %-3s %9s %9s %9s %7s %7s %7s %7s %7s %10s\n' \
        "$kind" "$mode" "$net" "$size" "$shown_workers" "$clients" "$rate" \
        "$(field p50_us "$stats")" "$(field p99_us "$stats")" "$cpu_us" "$usr_us" "$wrk_us" "$cli_us" \
        "$rss_mb" "$ratio"
    [ "$(field failed "$stats")" = 0 ] || echo "  ($(field failed "$stats") requests failed)"
    stop_all
    case "$mode" in slow|hol) echo "  share (requests served by each worker, worker 0 first): $(shares);" \
        "flags ${worker_args[*]} / worker 0: ${first_worker_args[*]:-same}" ;; esac
    rm -f "$work"/worker[0-9]*.log
}

ours=broker
[ -n "$external" ] && ours=external
nets="tcp ipc"
sizes="16 4096"
worker_counts="1 2 4"
if [ -n "$quick" ]; then nets=tcp; sizes=16; worker_counts="1 4"; fi
[ -n "$only_net" ] && nets=$only_net
if [ -n "$auth_only" ]; then
    # One principal for the clients and the workers, by password and by key.
    printf 'bench-password\n' >"$work/password"
    chmod 600 "$work/password"
    hash=$("$bin/broker" hash-password <"$work/password")
    principal="name = \"bench\"\npassword_hash = \"$hash\"\nserve = [\"echo\"]\ncall = [\"echo\", \"mmi.*\"]"
    if [ -n "$curve" ]; then
        "$bin/broker" keygen --out "$work/broker.key" >/dev/null 2>&1
        client_key=$("$bin/broker" keygen --out "$work/bench.key" 2>/dev/null)
        principal="$principal\ncurve_public_key = \"$client_key\""
    fi
    printf '[[principal]]\n%b\n' "$principal" >"$work/auth.toml"
    row broker window tcp 16 4
    broker_args=(--auth "$work/auth.toml")
    peer_args=(--user bench --password-file "$work/password")
    row plain window tcp 16 4
    if [ -n "$curve" ]; then
        broker_args+=(--curve-secret-file "$work/broker.key")
        peer_args=(--curve-key-file "$work/bench.key" --curve-server-key "$work/broker.key.pub")
        row curve window tcp 16 4
    fi
    exit 0
fi
if [ -n "$slots_only" ]; then
    for net in $nets; do
        for size in $sizes; do
            row ceiling window "$net" "$size" 4
            for worker_slots in 1 4 16; do row "$ours" window "$net" "$size" 4; done
            # The forwarder with no per-program limit: 64 requests in flight to the workers.
            worker_slots=16
            row ceiling window "$net" "$size" 4
            worker_slots=1
        done
    done
    worker_slots=4 first_worker_args=(--bench-delay-ms 1 --concurrency 1)
    row "$ours" slow tcp 16 4
    first_worker_args=()
    worker_slots=16 worker_args=(--bench-sleep-bodies --concurrency 1)
    row "$ours" hol tcp 16 4
    worker_args=(--bench-sleep-bodies --concurrency 16)
    row "$ours" hol tcp 16 4
    exit 0
fi
for net in $nets; do
    [ -n "$external" ] && [ "$net" = ipc ] && continue
    for size in $sizes; do
        for workers in $worker_counts; do
            for kind in ceiling "$ours"; do row "$kind" window "$net" "$size" "$workers"; done
        done
        for kind in ceiling "$ours"; do row "$kind" sync "$net" "$size" 1; done
    done
done
[ -n "$only_net" ] && exit 0
for kind in ceiling "$ours"; do row "$kind" clients tcp 16 4; done
row "$ours" services tcp 16 100
