#!/usr/bin/env bash
# Run every command of the README's ```sh blocks against a cluster this
# script starts (nsqlookupd and nsqd on free loopback ports, which replace
# the README's 4150/4151/4160/4161), so the README stays runnable as
# written. Usage: scripts/readme-commands.sh BIN_DIR (where nsqd,
# nsqlookupd and the tools are built).
#
# Exceptions: `scripts/cluster.sh` (runs until Ctrl-C) and `scripts/test.sh`
# (the test run itself) are not run, nor a block right after a line starting
# `<!-- not run by scripts/readme-commands.sh` (which says why). A command that runs until stopped
# (`nsq-job work`) is stopped after a few seconds; it passes if it was still
# running. `curl` fails on an HTTP error status, so an answer like
# TOPIC_NOT_FOUND fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
README=$PWD/README.md

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NSQD_TCP=$(free_port); NSQD_HTTP=$(free_port); LOOKUPD_TCP=$(free_port); LOOKUPD_HTTP=$(free_port)

WORK=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN/nsqlookupd" --tcp-address=127.0.0.1:$LOOKUPD_TCP --http-address=127.0.0.1:$LOOKUPD_HTTP \
    --broadcast-address=127.0.0.1 >"$WORK/lookupd.log" 2>&1 &
pids+=($!)
mkdir -p "$WORK/data"
"$BIN/nsqd" --tcp-address=127.0.0.1:$NSQD_TCP --http-address=127.0.0.1:$NSQD_HTTP \
    --broadcast-address=127.0.0.1 --data-path="$WORK/data" \
    --lookupd-tcp-address=127.0.0.1:$LOOKUPD_TCP >"$WORK/nsqd.log" 2>&1 &
pids+=($!)
for url in http://127.0.0.1:$LOOKUPD_HTTP/ping http://127.0.0.1:$NSQD_HTTP/ping; do
    for i in $(seq 1 200); do
        curl -sf "$url" >/dev/null 2>&1 && break
        [ "$i" = 200 ] && { echo "cluster did not start"; cat "$WORK"/*.log; exit 1; }
        sleep 0.05
    done
done

# The job example's worker command.
printf '#!/bin/sh\necho "rendered $NSQ_SHARD_ITEM"\n' >"$WORK/render.sh"
chmod +x "$WORK/render.sh"

# Commands, one per line, from every ```sh block.
awk '
    /^<!-- not run by scripts\/readme-commands\.sh/ {skip=1}
    /^```sh$/ {inside=1; next}
    /^```$/ {inside=0; skip=0}
    inside && !skip
' "$README" >"$WORK/commands"

ran=0
while IFS= read -r line; do
    case "$line" in
        ""|"#"*|scripts/cluster.sh*|scripts/test.sh*) continue ;;
    esac
    cmd=$(printf '%s' "$line" | sed \
        -e "s/127\.0\.0\.1:4150/127.0.0.1:$NSQD_TCP/g" -e "s/127\.0\.0\.1:4151/127.0.0.1:$NSQD_HTTP/g" \
        -e "s/127\.0\.0\.1:4160/127.0.0.1:$LOOKUPD_TCP/g" -e "s/127\.0\.0\.1:4161/127.0.0.1:$LOOKUPD_HTTP/g")
    echo "== $line"
    set +e
    (cd "$WORK" && PATH="$BIN:$PATH" timeout 5 bash -c "curl() { command curl -sS --fail-with-body \"\$@\"; echo; }; $cmd") </dev/null
    rc=$?
    set -e
    case "$rc:$line" in
        0:*) ;;
        124:nsq-job\ work*) echo "   (still running after 5s, stopped)" ;;
        *) echo "README command failed (exit $rc): $line"; cat "$WORK/nsqd.log" | tail -20; exit 1 ;;
    esac
    ran=$((ran + 1))
done <"$WORK/commands"
echo "ran $ran README commands"
