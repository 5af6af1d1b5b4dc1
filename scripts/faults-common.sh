# Shared by the reliability scripts (worker-faults.sh, broker-restart.sh, soak.sh); sourced, not
# run. On top of checks-common.sh (work directory, processes killed on exit, PASS/FAIL counts,
# asking the programs) it builds the release programs, starts brokers on a free loopback port
# (ready once their mmi.service answers), and starts and kills workers.
#
# A script sets `name` (for messages), sources this file, then calls `build`.

# Release programs, from $CARGO_TARGET_DIR or target/.
build() {
    cargo build --release -q -p broker -p client -p worker --bins
    bin="${CARGO_TARGET_DIR:-target}/release"
}

source scripts/checks-common.sh

# start_broker LOG [BROKER-FLAGS...]: a broker on a free loopback port (with BROKER_ENDPOINT set,
# on that endpoint: to restart on the same port), its stderr to LOG; returns once its
# mmi.service answers. Sets broker_pid and broker_endpoint. (Stop it with stop_broker.)
start_broker() {
    local log=$1
    shift
    start_mdp_broker "$bin/broker" "$bin/client" "$log" "$@"
}

# echo_registered: the broker has a worker for echo (its mmi.service answers 200). It cannot
# tell how many: a script that waits for it starts its load once one of its workers is there
# (the others follow within milliseconds, and no check depends on their being first).
echo_registered() { registered "$bin/client" "$broker_endpoint" echo; }

# start_worker SLOT LOG [WORKER-FLAGS...]: an echo worker; its pid goes to workers[SLOT].
declare -a workers
start_worker() {
    local slot=$1 log=$2
    shift 2
    "$bin/worker" -c "$broker_endpoint" "$@" 2>>"$log" &
    workers[slot]=$!
    pids+=("$!")
}

# kill_worker SLOT: SIGKILL, no DISCONNECT; the broker finds out by itself.
kill_worker() {
    kill -KILL "${workers[$1]}" 2>/dev/null || true
    wait "${workers[$1]}" 2>/dev/null || true
}

# count_lines PATTERN FILE: how many lines of FILE match (e.g. --stats lines); 0 if there is
# no FILE yet.
count_lines() {
    local n
    n=$(grep -c -- "$1" "$2" 2>/dev/null) || true
    echo "${n:-0}"
}

# rss_kb PID: resident memory of a process, from /proc.
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# repeat_until_stopped STOPFILE PAUSE OUT ERR CMD...: runs CMD again and again, PAUSE seconds
# apart, appending its stdout to OUT (and `exit=N` when it fails) and its stderr to ERR, until
# STOPFILE exists. Meant to run in the background; on SIGTERM it kills the CMD it waits for.
repeat_until_stopped() {
    local stop=$1 pause=$2 out=$3 err=$4
    shift 4
    local child=
    trap 'kill -TERM $child 2>/dev/null; exit 0' TERM
    while [ ! -e "$stop" ]; do
        "$@" >>"$out" 2>>"$err" &
        child=$!
        local status=0
        wait "$child" || status=$?
        [ "$status" = 0 ] || echo "exit=$status" >>"$out"
        [ "$pause" = 0 ] || [ -e "$stop" ] || sleep "$pause"
    done
}

# sum_field NAME FILE: the sum of NAME=value over the lines of FILE (--stats lines).
sum_field() {
    awk -v name="$1" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) n += kv[2] } }
        END { print n + 0 }' "$2" 2>/dev/null || echo 0
}
