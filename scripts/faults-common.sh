# Shared by the reliability scripts (worker-faults.sh, broker-restart.sh, soak.sh); sourced, not
# run. It builds the release programs, keeps every process it starts in one list that is killed
# on exit, starts brokers on a free loopback port (the broker binds tcp://127.0.0.1:* and logs
# the port it got), and counts the PASS/FAIL lines of a script's checks.
#
# A script sets `name` (for messages), sources this file, then calls `build`.

# Release programs, from $CARGO_TARGET_DIR or target/.
build() {
    cargo build --release -q -p broker -p client -p worker --bins
    bin="${CARGO_TARGET_DIR:-target}/release"
}

work=$(mktemp -d)
pids=()
passed=0
failed=0

# Stops everything this script started: SIGTERM, two seconds' grace, then SIGKILL. If the script
# stopped before `finish` (a set-up step failed), says so as a failed check. Children go first:
# when stdout is a closed pipe (`| head`), the messages after that fail, harmlessly.
finished=
cleanup() {
    local status=$? pid deadline
    trap '' PIPE
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    deadline=$(( SECONDS + 2 ))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ -n "${KEEP_LOGS:-}" ]; then
        mkdir -p "$KEEP_LOGS" && cp -r "$work"/. "$KEEP_LOGS"/
    fi
    rm -rf "$work"
    if [ -z "$finished" ]; then
        failed=$(( failed + 1 ))
        { echo "FAIL $name stopped early (exit status $status) before finishing its checks"
          echo "$passed passed, $failed failed"; } 2>/dev/null || true
    fi
}
trap cleanup EXIT
# A signal ends the script through `exit`, so that the EXIT trap runs; SIGPIPE too (output piped
# into `head`), which would otherwise end bash without it and leave the workers running.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE

say() { echo "$name: $*" >&2; }

# check CONDITION-STATUS DESCRIPTION: `check "$(( a == b ))" "a equals b"` prints PASS or FAIL.
check() {
    if [ "$1" = 1 ]; then
        echo "PASS $2"
        passed=$(( passed + 1 ))
    else
        echo "FAIL $2"
        failed=$(( failed + 1 ))
    fi
}

# The last line, and the exit status: non-zero if any check failed.
finish() {
    finished=1
    echo "$passed passed, $failed failed"
    [ "$failed" = 0 ]
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1 s; 1 if it never succeeds.
wait_for() {
    local limit=$1 what=$2
    shift 2
    local deadline=$(( SECONDS + limit ))
    until "$@"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "gave up after ${limit}s waiting until $what"
            return 1
        fi
        sleep 0.1
    done
}

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

# now_ms: milliseconds since the epoch.
now_ms() { date +%s%3N; }
