#!/usr/bin/env bash
# What it shows: CURVE works in the build of build/curve.toml (the system's libzmq, which Debian
# builds with libsodium), and under CURVE a request body never crosses the wire in clear, while
# under PLAIN and NULL the same capture finds it (so the check can fail). Needs root for apt-get
# (when libzmq3-dev or tshark is missing) and for the capture on the loopback interface.
#
#   1. apt-get update and install libzmq3-dev and tshark, when missing;
#   2. builds zsocket's tests and its curve_capture example with --config build/curve.toml, in a
#      target dir of their own (CURVE_TARGET_DIR, default target/curve: the config's own), and
#      runs zsocket's unit tests and tests/curve.rs with --include-ignored: the CURVE tests that
#      the default build lists as ignored must pass here (handshake with the right server key,
#      refusal of a wrong server key and of a client without CURVE, key files written and read);
#      then the broker's CURVE tests the same way (its unit tests, tests/auth.rs,
#      tests/mechanisms.rs: one broker with a PLAIN and a CURVE endpoint, a client through each,
#      unknown keys and the wrong mechanism refused; tests/binary_security.rs: `broker keygen`
#      and --curve-secret-file in the program), and the client's and worker's (tests/auth.rs:
#      a right key served, a wrong server key refused with a message naming CURVE);
#   3. captures the loopback traffic with tshark while curve_capture sends one request and its
#      reply under CURVE, PLAIN and NULL, each on a tcp port of its own, with a body that names
#      its run, and checks, port by port:
#        * each run's packets are in the capture (else every check below would be empty);
#        * CURVE: the greeting names CURVE, the request and the reply are there (two MESSAGE
#          commands, whose names are in clear), and the body is nowhere in the capture;
#        * PLAIN: the body and the password are there in clear (spec 24 encrypts nothing);
#        * NULL: the body is there in clear.
#
# Usage: scripts/curve-test.sh [--skip-if-unavailable]
#   --skip-if-unavailable    without root (for the install and the capture) print "skipped: ..."
#                            and exit 0 (else 2)
#   KEEP_CAPTURE=FILE        keep the capture (pcap) there
# Prints one PASS/FAIL line per check, the time of the build and of the tests, and ends with
# "N passed, N failed"; exits 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

skip_if_unavailable=false
for arg in "$@"; do
    case "$arg" in
    --skip-if-unavailable) skip_if_unavailable=true ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "curve-test.sh: unknown argument $arg (see --help)" >&2
        exit 2
        ;;
    esac
done

unavailable() {
    if $skip_if_unavailable; then
        echo "skipped: $1"
        exit 0
    fi
    echo "curve-test.sh: $1" >&2
    exit 2
}

[ "$(id -u)" -eq 0 ] || unavailable "needs root (apt-get, and tshark on the loopback interface)"

missing=()
dpkg -s libzmq3-dev >/dev/null 2>&1 || missing+=(libzmq3-dev)
command -v tshark >/dev/null 2>&1 || missing+=(tshark)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

export CARGO_TARGET_DIR="${CURVE_TARGET_DIR:-target/curve}"
config=(--config build/curve.toml)
broker_tests=(--lib --test auth --test mechanisms --test binary_security)

millis() { echo $(($(date +%s%N) / 1000000)); }
seconds_since() { # seconds_since START-MILLIS, with one decimal
    local elapsed=$(($(millis) - $1))
    printf '%d.%d' $((elapsed / 1000)) $((elapsed % 1000 / 100))
}

passed=0
failed=0
check() { # check NAME COMMAND...: PASS if COMMAND succeeds
    local name=$1
    shift
    if "$@"; then
        echo "PASS $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name"
        failed=$((failed + 1))
    fi
}

echo "== build (system libzmq, $CARGO_TARGET_DIR)"
start=$(millis)
cargo build -q -p zsocket --example curve_capture "${config[@]}"
cargo test -q -p zsocket --lib --tests "${config[@]}" --no-run
cargo test -q -p broker "${broker_tests[@]}" "${config[@]}" --no-run
cargo test -q -p client -p worker --test auth "${config[@]}" --no-run
build_seconds=$(seconds_since "$start")

echo "== zsocket tests with CURVE (--include-ignored)"
start=$(millis)
check "zsocket's tests, the CURVE ones included, pass against the system libzmq" \
    cargo test -q -p zsocket --lib --tests "${config[@]}" -- --include-ignored
check "the broker's CURVE tests (a PLAIN and a CURVE endpoint on one broker, keygen) pass" \
    cargo test -q -p broker "${broker_tests[@]}" "${config[@]}" -- --include-ignored
check "the client's and worker's CURVE logins (right key served, wrong server key refused naming CURVE) pass" \
    cargo test -q -p client -p worker --test auth "${config[@]}" -- --include-ignored
test_seconds=$(seconds_since "$start")

echo "== loopback capture (tshark)"
work=$(mktemp -d)
tshark_pid=
cleanup() {
    if [ -n "$tshark_pid" ]; then kill "$tshark_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
capture="$work/loopback.pcap"
tshark -q -i lo -f tcp -F pcap -w "$capture" 2>"$work/tshark.log" &
tshark_pid=$!
for _ in $(seq 100); do
    grep -q "Capturing on" "$work/tshark.log" && break
    kill -0 "$tshark_pid" 2>/dev/null || break
    sleep 0.1
done
grep -q "Capturing on" "$work/tshark.log" || {
    cat "$work/tshark.log" >&2
    unavailable "tshark cannot capture on lo"
}

# tshark says "Capturing on" a moment before its first packet; give it that moment.
sleep 1

declare -A port body
for mechanism in null plain curve; do
    body[$mechanism]="BODY-IN-CLEAR-$mechanism-$$-$RANDOM$RANDOM"
    line=$("$CARGO_TARGET_DIR/debug/examples/curve_capture" "$mechanism" "${body[$mechanism]}")
    port[$mechanism]=${line#port }
done
# Let the last packets reach the capture file, then stop tshark (SIGINT: it flushes and exits).
sleep 1
kill -INT "$tshark_pid"
wait "$tshark_pid" || true
tshark_pid=
[ -n "${KEEP_CAPTURE:-}" ] && cp "$capture" "$KEEP_CAPTURE"

packets() { # packets PORT [DISPLAY-FILTER]: how many captured packets with a payload match
    tshark -r "$capture" -Y "tcp.port == $1 && tcp.len > 0${2:+ && $2}" 2>/dev/null | wc -l
}
in_clear() { # in_clear PORT TEXT: how many packets of PORT carry TEXT as it is
    packets "$1" "frame contains \"$2\""
}

more_than_zero() { [ "$1" -gt 0 ]; }
not_in_capture() { ! grep -a -F -q "$1" "$capture"; }
for mechanism in curve plain null; do
    count=$(packets "${port[$mechanism]}")
    check "$mechanism: the capture holds its connection (port ${port[$mechanism]}, $count packets with a payload)" \
        more_than_zero "$count"
done
check "curve: the ZMTP greeting names CURVE" more_than_zero "$(in_clear "${port[curve]}" CURVE)"
# A CURVE MESSAGE command names itself in clear and carries the frame in a box: two of them (the
# request and its reply) say that the packets which carried the body are in the capture.
curve_messages=$(in_clear "${port[curve]}" MESSAGE)
check "curve: the request and the reply are in the capture ($curve_messages MESSAGE commands)" \
    more_than_zero $((curve_messages >= 2 ? 1 : 0))
check "curve: the body is nowhere in the capture" not_in_capture "${body[curve]}"
check "plain: the body crosses in clear (so the check above can fail)" \
    more_than_zero "$(in_clear "${port[plain]}" "${body[plain]}")"
check "plain: so does the password" \
    more_than_zero "$(in_clear "${port[plain]}" "PLAIN-PASSWORD-${body[plain]}")"
check "null: the body crosses in clear" more_than_zero "$(in_clear "${port[null]}" "${body[null]}")"

echo "build $build_seconds s, tests $test_seconds s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
