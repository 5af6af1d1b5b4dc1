# Shared by every script that checks things and ends with "N passed, N failed" (overload.sh,
# netns-test.sh, and through faults-common.sh worker-faults.sh, broker-restart.sh, soak.sh);
# sourced, not run. It makes a work directory, keeps every process a script starts in one list
# that is killed on exit (then calls the script's `cleanup_more`, if it defines one), counts the
# PASS/FAIL lines, and prints the summary even when the script stops early. It also holds the
# ways the scripts ask the programs what they want to know (below, "Asking the programs").
#
# The scripts decide from exit statuses, `client --stats` figures and what the programs answer
# (the broker's mmi.service, replies), never by waiting for a log line, so that a change of log
# wording or level breaks none of them. The one log line read is the broker's exit summary
# (`served: requests=N ...`, see `served_summary`), for counts that nothing else reports.
#
# A script sets `name` (for messages) and sources this file once its arguments are checked.

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
    if declare -F cleanup_more >/dev/null; then cleanup_more; fi
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

pass() { echo "PASS $*"; passed=$(( passed + 1 )); }
fail() { echo "FAIL $*"; failed=$(( failed + 1 )); }

# check CONDITION-STATUS DESCRIPTION: `check "$(( a == b ))" "a equals b"` prints PASS or FAIL.
check() {
    if [ "$1" = 1 ]; then pass "$2"; else fail "$2"; fi
}

# The last line, and the exit status: non-zero if any check failed.
finish() {
    finished=1
    echo "$passed passed, $failed failed"
    [ "$failed" = 0 ]
}

# abort WHAT: a set-up step failed and nothing after it can run: one FAIL line, the summary, exit 1.
abort() {
    fail "$*"
    finish || true
    exit 1
}

# now_ms: milliseconds since the epoch.
now_ms() { date +%s%3N; }

# wait_until SECONDS COMMAND...: polls COMMAND every $poll_seconds (default 0.1 s); false if it
# never succeeds in time.
wait_until() {
    local deadline=$(( $(now_ms) + $1 * 1000 ))
    shift
    until "$@"; do
        [ "$(now_ms)" -lt "$deadline" ] || return 1
        sleep "${poll_seconds:-0.1}"
    done
}

# wait_for SECONDS DESCRIPTION COMMAND...: wait_until, and a line on stderr if it gives up.
wait_for() {
    local limit=$1 what=$2
    shift 2
    wait_until "$limit" "$@" || { say "gave up after ${limit}s waiting until $what"; return 1; }
}


# --- Asking the programs ----------------------------------------------------------------------

# field NAME TEXT: the value of NAME in TEXT, a `client --stats` line (`name=value`), a
# `client --stats=json` object (`"name":value`) or the broker's `served:` summary; empty if absent.
field() {
    sed -n -e "s/.*[ :{]$1=\([0-9.]*\).*/\1/p" -e "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<" $2" | head -1
}

# mmi CLIENT ENDPOINT SERVICE: what the broker at ENDPOINT answers through mmi.service about
# SERVICE: 200 (a worker is registered for it) or 404 (none); nothing if no broker answered
# within half a second. CLIENT is the `client` program.
mmi() { timeout 5 "$1" -c "$2" -s mmi.service -t 500 -r 1 "$3" 2>/dev/null || true; }

# broker_answers CLIENT ENDPOINT: a broker is serving at ENDPOINT (its mmi.service answers).
broker_answers() {
    case "$(mmi "$1" "$2" echo)" in 200 | 404) return 0 ;; *) return 1 ;; esac
}

# registered CLIENT ENDPOINT SERVICE: the broker has a worker registered for SERVICE.
registered() { [ "$(mmi "$@")" = 200 ]; }

# free_port: a loopback TCP port that nothing listens on now (a connection to it is refused),
# below Linux's ephemeral range (32768 up) so that no outgoing connection holds it either.
free_port() {
    local port tries
    for tries in $(seq 1 100); do
        port=$(( 20000 + RANDOM % 12000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# start_mdp_broker BROKER CLIENT LOG [BROKER-FLAGS...]: starts the BROKER program on a free
# loopback port (or on $BROKER_ENDPOINT, to restart on the same port), its stderr appended to
# LOG, and waits until its mmi.service answers. Sets broker_pid and broker_endpoint. A broker that
# exits at once could not bind (the port was taken since free_port looked): another port is tried.
start_mdp_broker() {
    local broker=$1 client=$2 log=$3 attempt deadline
    shift 3
    for attempt in 1 2 3 4 5; do
        broker_endpoint=${BROKER_ENDPOINT:-tcp://127.0.0.1:$(free_port)}
        "$broker" --bind "$broker_endpoint" "$@" 2>>"$log" &
        broker_pid=$!
        pids+=("$broker_pid")
        deadline=$(( $(now_ms) + 10000 ))
        until broker_answers "$client" "$broker_endpoint"; do
            kill -0 "$broker_pid" 2>/dev/null && [ "$(now_ms)" -lt "$deadline" ] || break
            sleep 0.05
        done
        # Alive after it answered: the answer was this broker's, not another's on the same port.
        if kill -0 "$broker_pid" 2>/dev/null && broker_answers "$client" "$broker_endpoint"; then
            return 0
        fi
        kill -KILL "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
        [ -z "${BROKER_ENDPOINT:-}" ] || break
    done
    say "the broker did not start at $broker_endpoint: $(tail -n 3 "$log")"
    return 1
}

# stop_broker: SIGINT to $broker_pid, so that it ends cleanly and logs its exit summary; SIGKILL
# after 5 s.
stop_broker() {
    kill -INT "$broker_pid" 2>/dev/null || true
    local deadline=$(( SECONDS + 5 ))
    while kill -0 "$broker_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    kill -KILL "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
}

# served_summary LOG: the broker's exit summary, the counters it logs when it stops (`served:
# requests=N dispatched=N replies=N mmi=N refused_queue_full=N expired=N lost_with_worker=N
# redelivered=N workers_registered=N workers_purged=N workers_disconnected=N malformed=N`), or
# empty. The only log line the scripts read, and only for counts no program reports otherwise
# (what the broker refused, expired, lost, purged); read it with `field`.
served_summary() { grep -o "served: .*" "$1" 2>/dev/null | tail -1 || true; }
