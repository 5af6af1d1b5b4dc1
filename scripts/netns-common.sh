# What the network-namespace tests share (sourced by netns-test.sh and netns-brokers.sh): their
# flags, the check that this machine can make namespaces, the programs to run, and the clean-up
# of their namespaces.
#
# `netns_setup "$@"` parses --debug, --skip-if-unavailable and --help (which prints the sourcing
# script's header), moves to the repository root, checks for root and `ip netns` (and, with
# NETNS_NEEDS_BRIDGE=1 set before, for a bridge inside a namespace), and sets `bin_dir` to the
# directory holding broker, client and worker: $NETNS_BIN_DIR, the debug build with --debug, or a
# release build made here. Without what it needs it exits 2, or with --skip-if-unavailable prints
# "skipped: ..." and "0 passed, 0 failed" and exits 0.

netns_script=$(basename "$0")

netns_setup() {
    bin_dir=
    if [ -n "${NETNS_BIN_DIR:-}" ]; then
        bin_dir=$(cd "$NETNS_BIN_DIR" && pwd)
    fi
    debug=
    skip_if_unavailable=
    while [ $# -gt 0 ]; do
        case "$1" in
            --debug) debug=1 ;;
            --skip-if-unavailable) skip_if_unavailable=1 ;;
            -h|--help) sed -n '2,/^[^#]/ { /^#/p }' "$0"; exit 0 ;;
            *) echo "$netns_script: unknown argument $1 (try --help)" >&2; exit 2 ;;
        esac
        shift
    done
    cd "$(dirname "$0")/.."

    [ "$(id -u)" = 0 ] || netns_unavailable "not running as root"
    command -v ip >/dev/null || netns_unavailable "no ip command: install iproute2"
    local probe=mdp-$$-probe probe_error
    if ! probe_error=$(ip netns add "$probe" 2>&1); then
        netns_unavailable "ip netns add failed: $probe_error"
    fi
    if [ -n "${NETNS_NEEDS_BRIDGE:-}" ] \
        && ! probe_error=$(ip -n "$probe" link add br0 type bridge 2>&1); then
        ip netns del "$probe"
        netns_unavailable "no bridge in a namespace: $probe_error"
    fi
    ip netns del "$probe"

    if [ -z "$bin_dir" ]; then
        if [ -n "$debug" ]; then
            bin_dir=${CARGO_TARGET_DIR:-target}/debug
        else
            cargo build --release -q -p broker -p client -p worker --bins
            bin_dir=${CARGO_TARGET_DIR:-target}/release
        fi
        bin_dir=$(cd "$bin_dir" && pwd)
    fi
    local program
    for program in broker client worker; do
        if [ ! -x "$bin_dir/$program" ]; then
            echo "$netns_script: $bin_dir/$program is missing (cargo build --workspace)" >&2
            exit 2
        fi
    done
}

netns_unavailable() {
    if [ -n "$skip_if_unavailable" ]; then
        echo "skipped: needs root and ip netns ($1)"
        echo "0 passed, 0 failed"
        exit 0
    fi
    echo "$netns_script: needs root and ip netns ($1)" >&2
    exit 2
}

# checks-common.sh's cleanup calls this. Whatever still runs in this run's namespaces (listed in
# `namespaces`) was started by it too (the workers' --exec children, a client cut off
# mid-request): a namespace's name does not end its processes. Deleting a namespace deletes the
# veth ends inside it, and so their peers.
cleanup_more() {
    local ns pid
    for ns in "${namespaces[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    done
    wait 2>/dev/null || true
    for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}
