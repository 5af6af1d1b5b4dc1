# Shared by the reliability scripts (worker-faults.sh, broker-restart.sh, soak.sh); sourced, not
# run. On top of checks-common.sh (work directory, processes killed on exit, PASS/FAIL counts)
# it builds the release programs, starts brokers on a free loopback port (the broker binds
# tcp://127.0.0.1:* and logs the port it got), and starts and kills workers.
#
# A script sets `name` (for messages), sources this file, then calls `build`.

# Release programs, from $CARGO_TARGET_DIR or target/.
build() {
    cargo build --release -q -p broker -p client -p worker --bins
    bin="${CARGO_TARGET_DIR:-target}/release"
}

source scripts/checks-common.sh

# start_broker LOG [BROKER-FLAGS...]: sets broker_pid; broker_endpoint is the port it got, or
# with BROKER_ENDPOINT set, that endpoint is bound instead (to restart on the same port).
start_broker() {
    local log=$1
    shift
    local bind=${BROKER_ENDPOINT:-tcp://127.0.0.1:*}
    local before
    before=$(count_lines "is active at" "$log")
    "$bin/broker" --bind "$bind" "$@" 2>>"$log" &
    broker_pid=$!
    pids+=("$broker_pid")
    broker_has_endpoint() { [ "$(count_lines "is active at" "$log")" -gt "$before" ]; }
    # The log line comes before the first poll, so this is quick unless the bind failed.
    wait_for 10 "the broker logs its endpoint" broker_has_endpoint || return 1
    broker_endpoint=$(sed -n 's/.* is active at //p' "$log" | tail -1)
}

# stop_broker: SIGINT, so it logs its `served:` counters; SIGKILL after 5 s.
stop_broker() {
    kill -INT "$broker_pid" 2>/dev/null || true
    local deadline=$(( SECONDS + 5 ))
    while kill -0 "$broker_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    kill -KILL "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
}

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

# count_lines PATTERN FILE: how many lines of FILE match; 0 if there is no FILE yet.
count_lines() {
    local n
    n=$(grep -c -- "$1" "$2" 2>/dev/null) || true
    echo "${n:-0}"
}

# registrations LOG: how many times a worker registered with the broker logging to LOG.
registrations() { count_lines "registered for service" "$1"; }

# field NAME LINE: the value of NAME=value in LINE (a --stats or served: line), or empty.
field() { sed -n "s/.*[ :]$1=\([0-9.]*\).*/\1/p" <<<" $2" | head -1; }

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
