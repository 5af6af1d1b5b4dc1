#!/usr/bin/env bash
# What it shows: the same load through one broker and through two brokers in front of the same
# workers (issue 12 item 5): what a second broker costs per request, and that no request is lost.
#
# Each row starts fresh brokers on loopback tcp, four release `worker` programs (echo), waits
# until each broker has them, runs the load, and reads every process's CPU time from /proc. The
# rows, for each load:
#   1 broker,  4 workers x 1 slot    the plain set-up: 4 MDP workers
#   1 broker,  4 workers x 2 slots   as many MDP workers (8) as the next row, on one broker
#   2 brokers, 4 workers, all mode   `worker -c A -c B`: each program is one MDP worker per broker
# The loads: one client with `--window 1000`, and four clients with `--window 250` each; with two
# brokers every client is given both (`client -c A -c B`) and spreads its requests over them.
# Columns:
#   req/s      replies per second, all clients together
#   p50/p99    request latency in microseconds (time in flight, queueing included), from the
#              clients' merged --stats=json histograms
#   cpu_us     CPU (user+sys) of all brokers together per request, in microseconds
#   per_broker each broker's CPU per request it carried (its CPU over the replies through it,
#              from the clients' per_broker counts), A/B
#   split      the replies through each broker, in percent, A/B
#   thread%    how busy each broker's busiest thread was (its CPU over the row's wall time, in
#              percent), A/B: the figure that says whether a broker is the limit, since a
#              thread cannot use more than one core. A broker has two busy threads, its loop
#              and libzmq's I/O thread (each broker its own); the I/O thread is the busier. On
#              this 2-core machine workers and clients share the same cores, so it stays far
#              under 100
#   wrk_us     CPU of all the workers together, per request
#   cli_us     CPU of all the clients together, per request
#   lost       requests without a reply (sent minus replies): must be 0. The clients wait 30 s
#              for each reply (-t 30000), so that a request counts as lost only when it never
#              comes back, not when the shared machine was slow for a moment
# Rows run in turn, --runs times over (default 2), so that drift on a shared machine shows as
# a difference between runs of the same row rather than between rows.
#
# Usage: scripts/bench-brokers.sh [--quick] [--count N] [--runs N]
#   --quick      20,000 requests a row, one run (a smoke run, under a minute)
#   --count N    requests per row (default 100000)
#   --runs N     how many times each row runs (default 2)
# Figures, never assertions: nothing here fails because of a number (a lost request is printed).
set -euo pipefail
cd "$(dirname "$0")/.."

count=100000
runs=2
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) count=20000; runs=1 ;;
        --count) count=$2; shift ;;
        --runs) runs=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "bench-brokers.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

cargo build --release -q -p broker -p client -p worker --bins
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

port=$(( 20000 + RANDOM % 20000 ))
# next_endpoint: sets endpoint to a fresh one (not in a subshell, which would lose the count).
next_endpoint() { port=$(( port + 1 )); endpoint="tcp://127.0.0.1:$port"; }
cpu_ticks() { # pid... -> user+sys clock ticks, summed
    local pid total=0
    for pid in "$@"; do total=$(( total + $(awk '{print $14 + $15}' "/proc/$pid/stat") )); done
    echo "$total"
}
# thread_ticks PID: "TID TICKS" for each thread of PID, user+sys clock ticks, one a line.
thread_ticks() {
    local task
    for task in /proc/"$1"/task/*; do echo "${task##*/} $(awk '{print $14 + $15}' "$task/stat")"; done
}
ticks_per_s=$(getconf CLK_TCK)
field() { sed -n "s/.*[ {]\"\{0,1\}$1\"\{0,1\}[=:]\([0-9.]*\).*/\1/p" <<<" $2" | head -1; }
# us_per TICKS REQUESTS: microseconds of CPU per request.
us_per() { awk -v t="$1" -v hz="$ticks_per_s" -v n="$2" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else printf "-" }'; }

# registered ENDPOINT N: the broker at ENDPOINT has at least N idle echo workers, seen as N
# requests in flight at once all answered at once (mmi.service cannot count them).
registered() { "$bin/client" -c "$1" -s mmi.service -t 500 -r 1 echo 2>/dev/null | grep -qx 200; }
wait_registered() { # endpoint
    local tries=0
    until registered "$1"; do
        tries=$(( tries + 1 ))
        [ $tries -lt 100 ] || { echo "bench-brokers.sh: no worker for echo at $1" >&2; return 1; }
        sleep 0.05
    done
}

printf '%-9s %-12s %-9s %9s %9s %9s %7s %-13s %-7s %-9s %7s %7s %5s\n' \
    brokers workers load "req/s" p50_us p99_us cpu_us per_broker split thread% wrk_us cli_us lost
TIMEFORMAT='%U %S'
row() { # brokers(1|2) slots clients window
    local brokers=$1 slots=$2 clients=$3 window=$4
    local endpoint endpoints=() broker_pids=() worker_pids=() connect=() n
    for n in $(seq 1 "$brokers"); do
        next_endpoint
        endpoints+=("$endpoint")
        "$bin/broker" --bind "${endpoints[-1]}" --max-queue 1000000 2>>"$work/broker.log" &
        broker_pids+=("$!")
        pids+=("$!")
        connect+=(-c "${endpoints[-1]}")
    done
    for n in 1 2 3 4; do
        "$bin/worker" "${connect[@]}" -s echo --slots "$slots" 2>>"$work/worker.log" &
        worker_pids+=("$!")
        pids+=("$!")
    done
    for n in "${endpoints[@]}"; do wait_registered "$n"; done
    # Every worker must be registered everywhere before the clock starts.
    sleep 0.5
    local broker_before=() workers_before start end
    for n in "${broker_pids[@]}"; do
        broker_before+=("$(cpu_ticks "$n")")
        thread_ticks "$n" >"$work/threads-$n"
    done
    workers_before=$(cpu_ticks "${worker_pids[@]}")
    local per_client=$(( count / clients )) requests client_pids=()
    requests=$(( per_client * clients ))
    rm -f "$work"/client*.out "$work"/client*.out.cpu
    start=$(date +%s.%N)
    for n in $(seq 1 "$clients"); do
        { time "$bin/client" "${connect[@]}" --count "$per_client" --window "$window" --size 16 \
            -t 30000 --stats=json >"$work/client$n.out" 2>>"$work/client.log"; } 2>"$work/client$n.out.cpu" &
        client_pids+=("$!")
    done
    wait "${client_pids[@]}" || true
    end=$(date +%s.%N)
    local stats
    stats=$("$bin/client" --merge-stats "$work"/client*.out) ||
        echo "bench-brokers.sh: could not merge the clients' --stats=json" >&2
    local replies rate cpu_total=0 per=() split=() busy=() shares
    replies=$(field replies "$stats")
    rate=$(awk -v n="$replies" -v s="$start" -v e="$end" 'BEGIN { printf "%d", n / (e - s) }')
    shares=$(sed -n 's/.*per_broker=\([0-9,]*\).*/\1/p' <<<"$stats")
    # Read on a one-broker row it is that broker's, all of them.
    [ -n "$shares" ] || shares=$replies
    IFS=, read -r -a through <<<"$shares"
    for n in "${!broker_pids[@]}"; do
        local ticks=$(( $(cpu_ticks "${broker_pids[$n]}") - broker_before[n] ))
        cpu_total=$(( cpu_total + ticks ))
        per+=("$(us_per "$ticks" "${through[$n]:-0}")")
        busy+=("$(thread_ticks "${broker_pids[$n]}" | awk -v hz="$ticks_per_s" -v s="$start" -v e="$end" '
            NR == FNR { before[$1] = $2; next }
            { d = $2 - before[$1]; if (d > most) most = d }
            END { printf "%d", 100 * most / hz / (e - s) }' "$work/threads-${broker_pids[$n]}" -)")
        split+=("$(awk -v a="${through[$n]:-0}" -v n="$replies" 'BEGIN { printf "%d", (n > 0) ? 100 * a / n : 0 }')")
    done
    local wrk_us cli_us lost
    wrk_us=$(us_per $(( $(cpu_ticks "${worker_pids[@]}") - workers_before )) "$requests")
    cli_us=$(cat "$work"/client*.out.cpu | awk -v n="$requests" '{ s += $1 + $2 } END { printf "%.1f", s * 1e6 / n }')
    lost=$(( requests - ${replies:-0} ))
    local shown_per shown_split shown_busy
    shown_per=$(IFS=/; echo "${per[*]}")
    shown_busy=$(IFS=/; echo "${busy[*]}")
    shown_split=$(IFS=/; echo "${split[*]}")
    printf '%-9s %-12s %-9s %9s %9s %9s %7s %-13s %-7s %-9s %7s %7s %5s\n' \
        "$brokers" "4x$slots$([ "$brokers" = 2 ] && echo ' all')" "${clients}x$window" "$rate" \
        "$(field p50_us "$stats")" "$(field p99_us "$stats")" "$(us_per "$cpu_total" "$replies")" \
        "$shown_per" "$shown_split" "$shown_busy" "$wrk_us" "$cli_us" "$lost"
    [ "$(field failed "$stats")" = 0 ] || echo "  ($(field failed "$stats") requests failed)"
    for n in "${pids[@]}"; do kill "$n" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
}

for run in $(seq 1 "$runs"); do
    for load in "1 1000" "4 250"; do
        read -r clients window <<<"$load"
        row 1 1 "$clients" "$window"
        row 1 2 "$clients" "$window"
        row 2 1 "$clients" "$window"
    done
done
