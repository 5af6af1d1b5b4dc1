#!/usr/bin/env bash
# demo.sh: the Majordomo walk-through (broker, two workers, a client), one command away.
#
# Opens a tmux session "mdp-demo" with four panes:
#   1. the broker, bound to ENDPOINT;
#   2. an echo worker (replies with the request frames);
#   3. a second worker for the same service, so you can watch the broker share the load;
#   4. a client that sends one request with frame dumps (-v), asks mmi.service about "echo" and
#      about a service nobody serves (200, then 404), then runs 2,000 pipelined requests with
#      --stats, and leaves you a shell with the binaries on PATH to try more.
# Kill a worker pane (Ctrl-C) and send again: the other worker answers. Ctrl-C the broker and
# start it again (Up, Enter): the workers register again by themselves.
#
# It builds the release programs first, then starts the broker alone and waits (up to 10 s) until
# it answers; if it does not (the port is taken, say), it prints what the broker said, closes the
# session and exits 1, rather than leave workers and a client waiting on a broker that is gone.
#
# With --print, or without tmux, it builds nothing and prints the commands to run in four
# terminals instead (the build command first).
#
# Usage: scripts/demo.sh [--print] [ENDPOINT]     (default ENDPOINT: tcp://127.0.0.1:5555)
# ENDPOINT is where the workers and the client connect; the broker binds the same, except that
# tcp://localhost:PORT is bound as tcp://127.0.0.1:PORT (a bind needs an address, not a name).
# MDP_DEMO_SESSION names the tmux session (default mdp-demo).
# Leave with `tmux kill-session -t mdp-demo`.
set -euo pipefail

# Commands as a shell would read them: each word quoted where it needs it (`tcp://*:5555` is a
# glob to zsh), so they can be pasted or typed into any shell.
quoted() {
    local words=() word
    for word in "$@"; do
        words+=("$(printf '%q' "$word")")
    done
    echo "${words[*]}"
}

# What the client pane runs, with the binaries on PATH.
client_commands() {
    client_cmds=(
        "$(quoted client -c "$1" -v hello world)"
        "$(quoted client -c "$1" -s mmi.service echo)"
        "$(quoted client -c "$1" -s mmi.service nosuch)"
        "$(quoted client -c "$1" --count 2000 --window 100 --stats --size 16)"
    )
}

# The client pane runs this script again in this mode: wait until the broker knows an echo worker
# (so the first request does not sit in the broker's queue), then run each command, shown first.
if [[ "${1:-}" == "--client-pane" ]]; then
    endpoint="$2"
    client_commands "$endpoint"
    tries=0
    until client -c "$endpoint" -t 300 -r 1 -s mmi.service echo 2>/dev/null | grep -q 200; do
        tries=$((tries + 1))
        if ((tries == 50)); then
            echo "no echo worker has registered with the broker at $endpoint: see the worker panes"
            exit 1
        fi
        sleep 0.2
    done
    for command in "${client_cmds[@]}"; do
        echo
        echo "\$ $command"
        eval "$command" || true
    done
    echo
    echo "Your turn, e.g.: client -c $endpoint your frames here"
    exit 0
fi

print_only=false
if [[ "${1:-}" == "--print" ]]; then
    print_only=true
    shift
fi
endpoint="${1:-tcp://127.0.0.1:5555}"
# The broker binds what the others connect to. A tcp bind needs an interface address or `*`, not
# a host name: localhost becomes 127.0.0.1.
bind="$endpoint"
if [[ "$endpoint" =~ ^tcp://localhost:(.*)$ ]]; then
    bind="tcp://127.0.0.1:${BASH_REMATCH[1]}"
fi
session="${MDP_DEMO_SESSION:-mdp-demo}"

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${CARGO_TARGET_DIR:-$root/target}/release"
if [[ "$bin" != /* ]]; then
    bin="$root/$bin"
fi

build_cmd="$(quoted cargo build --release -p broker -p worker -p client)"
broker_cmd="$(quoted "$bin/broker" --bind "$bind")"
worker_cmd="$(quoted "$bin/worker" -c "$endpoint" -s echo)"
client_commands "$endpoint"

if $print_only || ! command -v tmux >/dev/null 2>&1; then
    $print_only || echo "tmux is not installed; run these in four terminals instead:" >&2
    echo "# first, once, in $root: the release programs"
    echo "$build_cmd"
    echo "# terminal 1: the broker"
    echo "$broker_cmd"
    echo "# terminals 2 and 3: two workers for the echo service"
    echo "$worker_cmd"
    echo "$worker_cmd"
    echo "# terminal 4: a client"
    echo "export PATH=$(printf '%q' "$bin"):\$PATH"
    printf '%s\n' "${client_cmds[@]}"
    exit 0
fi

echo "building broker, worker and client (release)..." >&2
(cd "$root" && cargo build --release --quiet -p broker -p worker -p client)

# Panes first, then the commands typed into their shells: the layout does not reflow output
# that is already there, and each command is in its pane's history (Up, Enter restarts it).
tmux kill-session -t "$session" 2>/dev/null || true
tmux new-session -d -x 220 -y 60 -s "$session" -n majordomo
for _ in 1 2 3; do
    tmux split-window -t "$session"
    tmux select-layout -t "$session" tiled >/dev/null
done
tmux send-keys -t "$session:0.0" "$broker_cmd" Enter

# Any answer from mmi.service (200 or 404) means the broker is up. Status 2 is a usage error: the
# endpoint is not one the client can connect to, and waiting will not change that.
up=false
status=0
SECONDS=0
while ((SECONDS < 10)); do
    status=0
    "$bin/client" -c "$endpoint" -t 200 -r 1 -s mmi.service echo >/dev/null 2>&1 || status=$?
    if ((status == 0)); then
        up=true
        break
    elif ((status == 2)); then
        break
    fi
    sleep 0.1
done
if ! $up; then
    if ((status == 2)); then
        echo "demo.sh: $endpoint is not an endpoint the client can connect to:" >&2
        "$bin/client" -c "$endpoint" -t 200 -r 1 -s mmi.service echo 2>&1 >/dev/null | sed 's/^/  /' >&2 || true
    else
        echo "demo.sh: the broker at $bind did not answer within 10 s; its pane says:" >&2
        tmux capture-pane -p -t "$session:0.0" | sed '/^$/d; s/^/  /' >&2
    fi
    tmux kill-session -t "$session"
    exit 1
fi

tmux send-keys -t "$session:0.1" "$worker_cmd" Enter
tmux send-keys -t "$session:0.2" "$worker_cmd" Enter
client_pane="$(quoted "$root/scripts/demo.sh" --client-pane "$endpoint")"
tmux send-keys -t "$session:0.3" "export PATH=$(printf '%q' "$bin"):\$PATH; clear; $client_pane" Enter
tmux select-pane -t "$session:0.3"

if [[ -n "${TMUX:-}" ]]; then
    tmux switch-client -t "$session"
elif [[ -t 1 ]]; then
    tmux attach-session -t "$session"
else
    echo "tmux session '$session' started; attach with: tmux attach -t $session" >&2
fi
