# Shared by every script that checks things and ends with "N passed, N failed" (overload.sh,
# netns-test.sh, and through faults-common.sh worker-faults.sh, broker-restart.sh, soak.sh);
# sourced, not run. It makes a work directory, keeps every process a script starts in one list
# that is killed on exit (then calls the script's `cleanup_more`, if it defines one), counts the
# PASS/FAIL lines, and prints the summary even when the script stops early.
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

