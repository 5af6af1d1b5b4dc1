#!/usr/bin/env bash
# What it shows: that a request Titanic answered 200 is never lost, whatever crashes. Release
# programs on loopback: a broker, three echo workers (titanic/examples/drill.rs `worker`, which
# log each run), and `titanic` on an SQLite database. Clients submit COUNT requests through
# titanic.request, each body [nonce, random payload, checksum], and note each id as its 200
# arrives; meanwhile titanic is killed with SIGKILL at random moments (KILLS times in all, every
# 0.2 to 1.2 s) and started again at once, a worker is killed and replaced every few titanic
# kills, and the broker is killed and restarted on the same port a few times. The kills go on
# while a first pass collects every reply, and stop before a second pass collects them again.
# Checks:
#   * the clients ended by themselves, and every submission got a 200 in the end;
#   * every acknowledged id is answered by titanic.reply, none is unknown (lost) or still pending;
#   * no reply is corrupted (checksum) or another request's (the nonce is the request's own);
#   * no id is answered two ways: both passes saw the same reply for each id;
#   * titanic was killed at least KILLS times.
# And it reports: how many requests a worker ran more than once (a try out when titanic died is
# sent again; a resubmission stored twice runs twice too), and how many titanic.* requests the
# clients resent after a timeout (for titanic.request, a lost 200: spec 9 has no idempotency
# key, so a resent submission that had been stored is stored and run twice).
#
# With --pg, the store is PostgreSQL (a fresh schema in that database) and --processes titanic
# processes share it, killed in turn; a killed process's tries are taken over when their leases
# (--lease 2s here) run out.
#
# With --power-cut (SQLite, one process), the database sits on scripts/cutfs.py, a FUSE layer that
# keeps writes in memory until they are synced, and every kill of titanic is a power cut: titanic
# and the layer are killed, so every write not yet synced is lost, and the layer is mounted again
# on what was synced. (Slow: the layer is Python; use a smaller --count.)
#
# Usage: scripts/titanic-crash.sh [--count N] [--kills N] [--pg URL|auto] [--processes N]
#                                 [--power-cut]
#   --count N       requests (default 3000)
#   --kills N       SIGKILLs of titanic, all processes together (default 50)
#   --pg URL        PostgreSQL instead of SQLite; "auto" starts a throwaway server
#                   (scripts/titanic-pg.sh) for the run
#   --processes N   titanic processes (default 1; with --pg, 2 or more make sense)
# KEEP_LOGS=DIR keeps the logs and the database. Ends with "N passed, N failed"; exit status 1 if
# any check failed.
set -euo pipefail
cd "$(dirname "$0")/.."
name=titanic-crash.sh

count=3000
kills=50
pg=
processes=1
power_cut=
while [ $# -gt 0 ]; do
    case "$1" in
        --count) count=$2; shift ;;
        --kills) kills=$2; shift ;;
        --pg) pg=$2; shift ;;
        --processes) processes=$2; shift ;;
        --power-cut) power_cut=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "$name: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

source scripts/checks-common.sh
cargo build --release -q -p broker -p client -p titanic --bins --example drill
bin="${CARGO_TARGET_DIR:-target}/release"
drill="$bin/examples/drill"

heartbeat_ms=250
hb=(--heartbeat-ms "$heartbeat_ms")
start_mdp_broker "$bin/broker" "$bin/client" "$work/broker.log" "${hb[@]}" || abort "the broker started"
BROKER_ENDPOINT=$broker_endpoint
export BROKER_ENDPOINT

# The chaos runs in a subshell, whose additions to `pids` the exit trap never sees: every program
# started goes into this file too, and cleanup_more kills what is still running.
cleanup_more() {
    local pid
    for pid in $(cat "$work/started" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    if declare -F stop_pg >/dev/null; then stop_pg; fi
    if [ -n "$power_cut" ]; then fusermount -u -z "$work/cut/m" 2>/dev/null || true; fi
}
echo "$broker_pid" >>"$work/started"
declare -a workers
start_worker() {
    "$drill" -c "$broker_endpoint" "${hb[@]}" worker --runs "$work/runs.log" 2>>"$work/worker.log" &
    workers[$1]=$!
    pids+=("$!")
    echo "$!" >>"$work/started"
}
db=$work/titanic.db
store="SQLite"
if [ -n "$pg" ]; then
    if [ "$pg" = auto ]; then
        pg=$(scripts/titanic-pg.sh start "$work/pg" 2>>"$work/pg.log") || abort "a PostgreSQL server started"
        stop_pg() { scripts/titanic-pg.sh stop "$work/pg" 2>/dev/null || true; }
    else
        stop_pg() {
            [ -n "${KEEP_LOGS:-}" ] || psql -q "$pg" -c "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1 || true
        }
    fi
    schema="crash_$$_$RANDOM"
    psql -q "$pg" -c "CREATE SCHEMA $schema" >/dev/null || abort "a schema created in the PostgreSQL database"
    case "$pg" in *\?*) separator='&' ;; *) separator='?' ;; esac
    db="$pg${separator}options=-csearch_path%3D$schema"
    store="PostgreSQL (schema $schema)"
fi
if [ -n "$power_cut" ]; then
    [ -z "$pg" ] && [ "$processes" = 1 ] || abort "--power-cut is for SQLite with one process"
    mkdir -p "$work/cut/b" "$work/cut/m"
    start_cutfs() {
        /usr/bin/python3 scripts/cutfs.py "$work/cut/b" "$work/cut/m" 2>>"$work/cutfs.log" &
        cutfs_pid=$!
        echo "$cutfs_pid" >>"$work/started"
        wait_until 10 mountpoint -q "$work/cut/m"
    }
    # The power cut: the layer dies with every unsynced write, and comes back on what was synced.
    cut_power() {
        kill -KILL "$cutfs_pid" 2>/dev/null || true
        wait "$cutfs_pid" 2>/dev/null || true
        fusermount -u -z "$work/cut/m" 2>/dev/null || true
        start_cutfs || abort "the cutfs layer mounted again"
    }
    start_cutfs || abort "the cutfs layer mounted (scripts/cutfs.py, Debian's python3-fusepy)"
    db=$work/cut/m/titanic.db
    store="SQLite on cutfs (power cuts)"
fi
declare -a titanic_pids
start_titanic() {
    "$bin/titanic" -c "$broker_endpoint" --db "$db" "${hb[@]}" \
        --try-timeout 2s --backoff-max 1s --lease 2s 2>>"$work/titanic-$1.log" &
    titanic_pids[$1]=$!
    pids+=("$!")
    echo "$!" >>"$work/started"
}
for slot in 0 1 2; do start_worker "$slot"; done
for number in $(seq 0 $(( processes - 1 ))); do start_titanic "$number"; done

# The chaos, until STOPFILE exists and at least $kills titanic kills are done.
titanic_kills=0 worker_kills=0 broker_kills=0
chaos() {
    local stop=$1 slot=0
    while [ ! -e "$stop" ] || [ "$titanic_kills" -lt "$kills" ]; do
        sleep "0.$(( 2 + RANDOM % 10 ))"
        local number=$(( titanic_kills % processes ))
        kill -KILL "${titanic_pids[$number]}" 2>/dev/null || true
        wait "${titanic_pids[$number]}" 2>/dev/null || true
        titanic_kills=$(( titanic_kills + 1 ))
        if [ -n "$power_cut" ]; then cut_power; fi
        start_titanic "$number"
        if [ $(( titanic_kills % 7 )) = 0 ]; then
            kill -KILL "${workers[$slot]}" 2>/dev/null || true
            wait "${workers[$slot]}" 2>/dev/null || true
            worker_kills=$(( worker_kills + 1 ))
            start_worker "$slot"
            slot=$(( (slot + 1) % 3 ))
        fi
        if [ $(( titanic_kills % 17 )) = 0 ]; then
            kill -KILL "$broker_pid" 2>/dev/null || true
            wait "$broker_pid" 2>/dev/null || true
            broker_kills=$(( broker_kills + 1 ))
            start_mdp_broker "$bin/broker" "$bin/client" "$work/broker.log" "${hb[@]}" ||
                abort "the broker restarted on $broker_endpoint"
            echo "$broker_pid" >>"$work/started"
        fi
    done
    echo "titanic_kills=$titanic_kills worker_kills=$worker_kills broker_kills=$broker_kills" >"$work/kills"
}

echo "titanic crash drill: $count requests, 8 clients, $processes titanic process(es) on $store," \
    "at least $kills SIGKILLs of titanic, workers and broker killed too"
started=$SECONDS
status=0
chaos "$work/stop" &
chaos_pid=$!
pids+=("$chaos_pid")
timeout 600 "$drill" -c "$broker_endpoint" submit --count "$count" --clients 8 \
    --acked "$work/acked" >"$work/submit.out" 2>"$work/submit.err" || status=$?
submit_line=$(tail -1 "$work/submit.out" 2>/dev/null || true)
echo "submit: $submit_line (exit status $status, $(( SECONDS - started ))s)"
check "$(( status == 0 ))" "the clients ended by themselves (exit status $status)"
check "$(( $(field failed "$submit_line" || echo 1) == 0 ))" "every submission got a 200 in the end"

# First pass while the kills go on; then stop the chaos and collect again.
"$drill" -c "$broker_endpoint" collect --acked "$work/acked" --out "$work/first" \
    >"$work/collect1.out" 2>"$work/collect1.err" || true
touch "$work/stop"
wait "$chaos_pid" || true
first=$(tail -1 "$work/collect1.out")
echo "first pass (under kills): $first"
"$drill" -c "$broker_endpoint" collect --acked "$work/acked" --out "$work/second" --patience 60 \
    >"$work/collect2.out" 2>"$work/collect2.err" || true
second=$(tail -1 "$work/collect2.out")
echo "second pass (calm): $second"
killed=$(cat "$work/kills" 2>/dev/null || echo "titanic_kills=0")
echo "kills: $killed"

acked=$(wc -l <"$work/acked")
check "$(( acked == count ))" "every request acknowledged once: $acked ids for $count requests"
for pass in "$first" "$second"; do
    check "$(( $(field answered "$pass") == acked && $(field unknown "$pass") == 0 && $(field pending "$pass") == 0 ))" \
        "every acknowledged id answered: answered=$(field answered "$pass") unknown=$(field unknown "$pass") pending=$(field pending "$pass") of $acked"
    check "$(( $(field corrupt "$pass") == 0 && $(field wrong "$pass") == 0 ))" \
        "no reply corrupted ($(field corrupt "$pass")) or another request's ($(field wrong "$pass"))"
done
differing=$(join <(sort "$work/first") <(sort "$work/second") | awk '$2 != $3' | wc -l)
compared=$(join <(sort "$work/first") <(sort "$work/second") | wc -l)
check "$(( differing == 0 && compared == acked ))" \
    "no id answered two ways: $compared ids compared across the passes, $differing differ"
check "$(( $(field titanic_kills "$killed") >= kills ))" \
    "titanic was killed $(field titanic_kills "$killed") times (at least $kills)"

runs=$(wc -l <"$work/runs.log")
twice=$(sort "$work/runs.log" | uniq -d | wc -l)
echo "counts: worker runs=$runs for $count requests; requests run more than once=$twice;" \
    "titanic.* requests resent by the clients after a timeout=$(field resends "$submit_line")" \
    "(of which a lost 200 of titanic.request is a possible duplicate)"
if [ -n "$pg" ]; then
    psql -q -At "$db" -c "select 'store: rows=' || count(*) || ' tries=' || coalesce(sum(attempts), 0) || ' leased_now=' || count(lease_owner) from titanic_requests" || true
fi
finish
