#!/usr/bin/env bash
# demo.sh: the Majordomo three-terminal flow, one command away.
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
# Without tmux (or with --print) it prints the commands to run in separate terminals instead.
#
# Usage: scripts/demo.sh [--print] [ENDPOINT]     (default ENDPOINT: tcp://127.0.0.1:5555)
# Leave with `tmux kill-session -t mdp-demo`.
set -euo pipefail

print_only=false
if [[ "${1:-}" == "--print" ]]; then
    print_only=true
    shift
fi
endpoint="${1:-tcp://127.0.0.1:5555}"
# The broker binds what the others connect to; for tcp that is the same address here.
bind="$endpoint"
session="mdp-demo"

root="$(cd "$(dirname "$0")/.." && pwd)"
echo "building broker, worker and client (release)..." >&2
(cd "$root" && cargo build --release --quiet -p broker -p worker -p client)
bin="${CARGO_TARGET_DIR:-$root/target}/release"
if [[ "$bin" != /* ]]; then
    bin="$root/$bin"
fi

broker_cmd="$bin/broker --bind $bind"
worker1_cmd="$bin/worker -c $endpoint -s echo"
worker2_cmd="$bin/worker -c $endpoint -s echo"
client_cmds=(
    "$bin/client -c $endpoint -v hello world"
    "$bin/client -c $endpoint -s mmi.service echo"
    "$bin/client -c $endpoint -s mmi.service nosuch"
    "$bin/client -c $endpoint --count 2000 --window 100 --stats --size 16"
)

if $print_only || ! command -v tmux >/dev/null 2>&1; then
    $print_only || echo "tmux is not installed; run these in four terminals instead:" >&2
    echo "# terminal 1: the broker"
    echo "$broker_cmd"
    echo "# terminal 2 and 3: two workers for the echo service"
    echo "$worker1_cmd"
    echo "$worker2_cmd"
    echo "# terminal 4: a client"
    printf '%s\n' "${client_cmds[@]}"
    exit 0
fi

# Each client command is echoed before it runs, then the pane stays open as a shell.
# The client pane runs a small script: wait until the broker knows an echo worker (so the first
# request does not sit in the broker's queue), then each command, shown before it runs.
client_script="$(mktemp "${TMPDIR:-/tmp}/mdp-demo-client.XXXXXX")"
{
    echo "until client -c $endpoint -t 300 -r 1 -s mmi.service echo 2>/dev/null | grep -q 200; do sleep 0.2; done"
    for command in "${client_cmds[@]}"; do
        echo "echo; echo '\$ ${command#"$bin/"}'; ${command#"$bin/"}"
    done
    echo "echo; echo 'Your turn, e.g.: client -c $endpoint your frames here'"
} >"$client_script"

# Panes first, then the commands typed into their shells: the layout does not reflow output
# that is already there, and each command is in its pane's history (Up, Enter restarts it).
tmux kill-session -t "$session" 2>/dev/null || true
tmux new-session -d -x 220 -y 60 -s "$session" -n majordomo
for _ in 1 2 3; do
    tmux split-window -t "$session"
    tmux select-layout -t "$session" tiled >/dev/null
done
tmux send-keys -t "$session:0.0" "$broker_cmd" Enter
tmux send-keys -t "$session:0.1" "$worker1_cmd" Enter
tmux send-keys -t "$session:0.2" "$worker2_cmd" Enter
tmux send-keys -t "$session:0.3" "export PATH=\"$bin:\$PATH\"; clear; bash '$client_script'" Enter
tmux select-pane -t "$session:0.3"

if [[ -n "${TMUX:-}" ]]; then
    tmux switch-client -t "$session"
elif [[ -t 1 ]]; then
    tmux attach-session -t "$session"
else
    echo "tmux session '$session' started; attach with: tmux attach -t $session" >&2
fi
