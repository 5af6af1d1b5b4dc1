#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for Titanic's tests: Debian's postgresql package
# (installed when missing and run as root), a new cluster in a temporary directory, a database
# and a user "titanic". Takes a couple of seconds.
#
# Usage: scripts/titanic-pg.sh start DIR   prints the URL to put in TITANIC_PG_URL
#        scripts/titanic-pg.sh stop DIR    stops the server and deletes DIR
# DIR must not exist before start. As root the cluster is owned by the postgres user (PostgreSQL
# refuses to run as root), and DIR's parent is made passable for it (o+x) if it is not; otherwise
# the cluster is the caller's. The port is the first free one from 54320.
# fsync and synchronous_commit stay on: the tests and the benchmark are about durable commits.
set -euo pipefail
name=titanic-pg.sh

bin_dir() {
    local pg_config
    for pg_config in /usr/lib/postgresql/*/bin/pg_config; do
        if [ -x "$pg_config" ]; then
            dirname "$pg_config"
            return
        fi
    done
    return 1
}

as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    local port
    for port in $(seq 54320 54420); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    echo "$name: no free port in 54320-54420" >&2
    return 1
}

start() {
    local dir=$1
    if ! bin=$(bin_dir); then
        if [ "$(id -u)" != 0 ]; then
            echo "$name: PostgreSQL is not installed (apt-get install postgresql)" >&2
            exit 1
        fi
        echo "$name: apt-get install postgresql" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
        bin=$(bin_dir)
    fi
    mkdir "$dir"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$dir"
        # A parent made by mktemp -d is 0700: the postgres user must be able to pass through it.
        local parent
        parent=$(dirname "$dir")
        runuser -u postgres -- test -x "$parent" || chmod o+x "$parent"
    fi
    local password port
    password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    port=$(free_port)
    printf '%s\n' "$password" >"$dir/password"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir/password"
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        --no-sync -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200" start >&2 \
        || { cat "$dir/server.log" >&2; exit 1; }
    as_owner "$bin/psql" -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 >&2 <<EOF
CREATE USER titanic PASSWORD '$password';
CREATE DATABASE titanic OWNER titanic;
EOF
    echo "postgres://titanic:$password@127.0.0.1:$port/titanic"
}

stop() {
    local dir=$1 bin
    bin=$(bin_dir)
    if [ -d "$dir/data" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    fi
    rm -rf "$dir"
}

case "${1:-}" in
    start) start "${2:?usage: $name start DIR}" ;;
    stop) stop "${2:?usage: $name stop DIR}" ;;
    *) echo "usage: $name start DIR | stop DIR" >&2; exit 2 ;;
esac
