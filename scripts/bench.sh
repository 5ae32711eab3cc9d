#!/usr/bin/env bash
# bench.sh: publish, consume and latency figures for nsqd, then its memory per
# queued message. Everything runs on loopback ports picked at run time, with
# temporary data directories, and is killed on exit.
#
# Output: the tools' human lines on stderr as they finish, and at the end one
# JSON object per line on stdout:
#   bench_writer   MPUB throughput (2 connections, 16 MPUBs in flight each)
#   bench_reader   SUB/FIN throughput draining what the writer left
#   bench_latency  sequential PUB round trips, percentiles in µs
#   nsqd_cpu       CPU nsqd spent in each phase (to see who was the bottleneck)
#   nsqd_memory    RSS growth per message with 1,000,000 messages queued
#
# Environment:
#   NSQD_ARGS      extra nsqd flags (default --mem-queue-size=10000000)
#   RUNFOR         time limit per throughput/latency run (default 10s)
#   WRITER_COUNT   most messages the writer publishes (default 10000000). nsqd
#                  keeps queues in memory only and answers E_MPUB_FAILED "queue
#                  full" past --mem-queue-size, and a fast nsqd fills 10M in a
#                  second or two, so the writer stops at whichever comes first.
#   ROUNDS         writer+reader rounds on the same nsqd (default 1); round 1
#                  is a cold server, later rounds publish into an existing channel
#   MEM_MSGS       messages for the memory figure (default 1000000)
#   SIZE           message body bytes (default 200)
#
# --replicated: instead of the figures above, bench_writer and bench_latency
# against one nsqd, then against nsqd A of a replicated pair (A on 127.0.0.2,
# B on 127.0.0.3, each replicating to the other), in memory and --durable.
# One JSON line per run, with "mode" (single/pair) and "durable" added.
#   PAIR_COUNT     most messages the writer publishes per run (default
#                  2000000: a peer's copy is held in memory, at most 1 GiB)
set -euo pipefail
cd "$(dirname "$0")/.."

NSQD_ARGS=${NSQD_ARGS:---mem-queue-size=10000000}
RUNFOR=${RUNFOR:-10s}
WRITER_COUNT=${WRITER_COUNT:-10000000}
ROUNDS=${ROUNDS:-1}
MEM_MSGS=${MEM_MSGS:-1000000}
SIZE=${SIZE:-200}
PAIR_COUNT=${PAIR_COUNT:-2000000}
MODE=single
[ "${1:-}" = "--replicated" ] && MODE=replicated
# Hard bound on any single tool run, whatever RUNFOR says.
TOOL_TIMEOUT=${TOOL_TIMEOUT:-120}

cargo build --release -p nsqd -p nsq-tools >&2
BIN=./target/release

WORK=$(mktemp -d -t nsq-bench.XXXXXX)
pids=()
results=()
cleanup() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    # nsqd gets a grace period to stop on its own; then it is killed, since
    # its data directory is thrown away anyway.
    for _ in $(seq 1 50); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup INT TERM EXIT

log() { echo "[bench.sh] $*" >&2; }

# Start nsqd on port 0 (of IP $2, default 127.0.0.1; more flags after it)
# and read the bound addresses from its log, so no fixed port can collide
# with anything else on the machine. Sets NSQD_PID, NSQD_TCP and NSQD_HTTP.
start_nsqd() {
    local name=$1 ip=${2:-127.0.0.1} dir="$WORK/$1"
    shift; [ $# -gt 0 ] && shift
    mkdir -p "$dir/data"
    # shellcheck disable=SC2086 # NSQD_ARGS is a list of flags
    "$BIN/nsqd" --tcp-address="$ip:0" --http-address="$ip:0" \
        --data-path="$dir/data" $NSQD_ARGS "$@" >"$dir/nsqd.log" 2>&1 &
    NSQD_PID=$!
    pids+=("$NSQD_PID")
    NSQD_TCP= NSQD_HTTP=
    for _ in $(seq 1 100); do
        NSQD_TCP=$(sed -n 's/.*TCP: listening on \([0-9.:]*\).*/\1/p' "$dir/nsqd.log" | head -n1)
        NSQD_HTTP=$(sed -n 's/.*HTTP: listening on \([0-9.:]*\).*/\1/p' "$dir/nsqd.log" | head -n1)
        [ -n "$NSQD_TCP" ] && [ -n "$NSQD_HTTP" ] && break
        kill -0 "$NSQD_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$NSQD_TCP" ] || [ -z "$NSQD_HTTP" ]; then
        log "nsqd ($name) did not report its addresses:"
        cat "$dir/nsqd.log" >&2
        exit 1
    fi
    for _ in $(seq 1 100); do
        curl -sf "http://$NSQD_HTTP/ping" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -sf "http://$NSQD_HTTP/ping" >/dev/null || { log "nsqd ($name) never answered /ping"; exit 1; }
    log "nsqd ($name) pid $NSQD_PID, TCP $NSQD_TCP, HTTP $NSQD_HTTP"
}

stop_nsqd() {
    kill -TERM "$NSQD_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$NSQD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$NSQD_PID" 2>/dev/null || true
    wait "$NSQD_PID" 2>/dev/null || true
}

# nsqd's CPU ticks so far (user sys), USER_HZ = 100. Fields are counted after
# the command name's closing parenthesis.
nsqd_ticks() { sed 's/.*) //' "/proc/$NSQD_PID/stat" | awk '{print $12, $13}'; }

# The JSON line for the CPU nsqd used between two nsqd_ticks readings.
nsqd_cpu_json() {
    local phase=$1 before=$2 after=$3
    echo "$before $after" | awk -v phase="$phase" \
        '{printf "{\"tool\":\"nsqd_cpu\",\"phase\":\"%s\",\"user_seconds\":%.2f,\"sys_seconds\":%.2f}\n", phase, ($3-$1)/100, ($4-$2)/100}'
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$NSQD_PID/status"; }

json_field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$2"; }

# Run one tool with a hard time bound; its JSON line (stdout) is returned,
# its human line (stderr) goes to the terminal.
run_tool() {
    local out
    if ! out=$(timeout "$TOOL_TIMEOUT" "$@"); then
        log "failed: $*"
        exit 1
    fi
    echo "$out"
}

# A port free on IP $1 right now (the replication listener needs its port
# before the peer starts).
free_port() {
    python3 -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"
}

# Add "mode" and "durable" to a tool's JSON line.
tag() { sed "s/^{/{\"mode\":\"$1\",\"durable\":$2,/" <<<"$3"; }

if [ "$MODE" = replicated ]; then
    for durable in false true; do
        dflag=()
        [ "$durable" = true ] && dflag=(--durable)
        start_nsqd "single-$durable" 127.0.0.1 ${dflag[@]+"${dflag[@]}"}
        w=$(run_tool "$BIN/bench_writer" --tcp-address="$NSQD_TCP" --runfor="$RUNFOR" \
            --count="$PAIR_COUNT" --size="$SIZE")
        l=$(run_tool "$BIN/bench_latency" --tcp-address="$NSQD_TCP" --runfor="$RUNFOR" --size="$SIZE")
        results+=("$(tag single "$durable" "$w")" "$(tag single "$durable" "$l")")
        stop_nsqd
        pa=$(free_port 127.0.0.2)
        pb=$(free_port 127.0.0.3)
        start_nsqd "pair-b-$durable" 127.0.0.3 --replication-address="127.0.0.3:$pb" \
            --replica="127.0.0.2:$pa" ${dflag[@]+"${dflag[@]}"}
        b_pid=$NSQD_PID
        start_nsqd "pair-a-$durable" 127.0.0.2 --replication-address="127.0.0.2:$pa" \
            --replica="127.0.0.3:$pb" ${dflag[@]+"${dflag[@]}"}
        for _ in $(seq 1 100); do
            curl -sf "http://$NSQD_HTTP/stats?format=json" | grep -q '"state":"in_sync"' && break
            sleep 0.1
        done
        curl -sf "http://$NSQD_HTTP/stats?format=json" | grep -q '"state":"in_sync"' \
            || { log "the pair did not get in sync"; exit 1; }
        w=$(run_tool "$BIN/bench_writer" --tcp-address="$NSQD_TCP" --runfor="$RUNFOR" \
            --count="$PAIR_COUNT" --size="$SIZE")
        l=$(run_tool "$BIN/bench_latency" --tcp-address="$NSQD_TCP" --runfor="$RUNFOR" --size="$SIZE")
        results+=("$(tag pair "$durable" "$w")" "$(tag pair "$durable" "$l")")
        stop_nsqd
        NSQD_PID=$b_pid
        stop_nsqd
    done
    printf '%s\n' "${results[@]}"
    exit 0
fi

# --- throughput and latency -------------------------------------------------
start_nsqd throughput
for round in $(seq 1 "$ROUNDS"); do
    t0=$(nsqd_ticks)
    w=$(run_tool "$BIN/bench_writer" --tcp-address="$NSQD_TCP" --runfor="$RUNFOR" \
        --count="$WRITER_COUNT" --size="$SIZE")
    t1=$(nsqd_ticks)
    written=$(json_field msgs "$w")
    # The reader stops when it has drained what the writer left, so its rate
    # is measured over the drain, not padded with idle time.
    r=$(run_tool "$BIN/bench_reader" --tcp-address="$NSQD_TCP" --runfor="$RUNFOR" \
        --count="$written" --size="$SIZE")
    t2=$(nsqd_ticks)
    results+=("$w" "$(nsqd_cpu_json "writer_round_$round" "$t0" "$t1")")
    results+=("$r" "$(nsqd_cpu_json "reader_round_$round" "$t1" "$t2")")
    read_n=$(json_field msgs "$r")
    [ "$read_n" -ge "$written" ] || log "round $round: reader finished $read_n of $written messages in $RUNFOR"
done
t0=$(nsqd_ticks)
l=$(run_tool "$BIN/bench_latency" --tcp-address="$NSQD_TCP" --runfor="$RUNFOR" --size="$SIZE")
t1=$(nsqd_ticks)
results+=("$l" "$(nsqd_cpu_json latency "$t0" "$t1")")
stop_nsqd

# --- memory per queued message ----------------------------------------------
# A fresh nsqd; a consumer with RDY 0 creates the channel and keeps it, so the
# messages sit in the channel's queue as they would in production.
start_nsqd memory
"$BIN/bench_reader" --tcp-address="$NSQD_TCP" --topic=mem_bench --channel=ch \
    --rdy=0 --runfor=600s 2>"$WORK/holder.log" >/dev/null &
holder=$!
pids+=("$holder")
for _ in $(seq 1 100); do
    grep -q subscribed "$WORK/holder.log" && break
    kill -0 "$holder" 2>/dev/null || break
    sleep 0.1
done
grep -q subscribed "$WORK/holder.log" || { log "holding consumer failed:"; cat "$WORK/holder.log" >&2; exit 1; }
rss_before=$(rss_kb)
# Every message is acknowledged, so when the writer returns nsqd holds them all.
m=$(run_tool "$BIN/bench_writer" --tcp-address="$NSQD_TCP" --topic=mem_bench \
    --runfor=60s --count="$MEM_MSGS" --size="$SIZE")
rss_after=$(rss_kb)
queued=$(json_field msgs "$m")
[ "$queued" = "$MEM_MSGS" ] || { log "memory run queued $queued of $MEM_MSGS messages"; exit 1; }
results+=("$(awk -v n="$MEM_MSGS" -v size="$SIZE" -v b="$rss_before" -v a="$rss_after" 'BEGIN {
    per = (a - b) * 1024 / n
    printf "{\"tool\":\"nsqd_memory\",\"msgs\":%d,\"size\":%d,\"rss_before_kb\":%d,\"rss_after_kb\":%d,\"bytes_per_msg\":%.1f,\"overhead_per_msg\":%.1f}\n", n, size, b, a, per, per - size
}')")
kill -TERM "$holder" 2>/dev/null || true
stop_nsqd

printf '%s\n' "${results[@]}"
