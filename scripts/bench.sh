#!/usr/bin/env bash
# bench.sh: publish, consume and latency figures for nsqd, its memory per
# queued message and its CPU per message; optionally side by side with
# another nsqd binary (upstream's), interleaved, with the same client tools;
# or (--scaling) how those figures grow with channels, connections and
# message size. Everything runs on loopback ports picked at run time, with
# temporary data directories, and is killed on exit.
#
# Usage: scripts/bench.sh [--against DIR] [--tools ours|upstream] [--scaling] [--table FILE]
#   --against DIR   also measure DIR/nsqd; rounds alternate ours, theirs,
#                   ours, theirs..., each run on a fresh nsqd and data path
#   --tools ours    our Rust bench_writer/bench_reader (default)
#   --tools upstream  DIR/bench_writer and DIR/bench_reader (upstream's Go
#                   tools and flags; needs --against). The Go writer runs for
#                   RUNFOR. The Go reader reads for all of its --runfor and
#                   divides by it, so its own figure is capped at what was
#                   queued / --runfor; bench.sh instead starts it on the full
#                   queue with a long --runfor and times it from its start to
#                   the moment the channel is empty (scripts/bench_drain.py
#                   polls nsqd's /stats every 10 ms), which is its true rate.
#                   bench_latency and the memory probe always use our tools
#                   (upstream has neither).
#   --scaling       instead of the figures above: PUB and SUB msgs/s, nsqd
#                   CPU-seconds and RSS at each point of SCALE_POINTS
#                   (channels per topic, connections, message size), with
#                   our tools only (upstream's have no such flags)
#   --table FILE    also write the markdown summary table to FILE, after a
#                   line with the command, the date, the machine and its load
#
# Output: the tools' human lines and the markdown summary (medians over
# rounds, ratio ours/theirs) on stderr; one JSON object per line on stdout,
# each tagged with "server" and "round", then one "summary" line per measure:
#   bench_writer   MPUB throughput
#   bench_reader   SUB/FIN throughput draining what the writer left
#   bench_latency  sequential PUB round trips, percentiles in µs
#   nsqd_cpu       CPU nsqd spent in each phase, and messages per CPU-second
#   nsqd_memory    RSS growth per message with MEM_MSGS messages queued
# Each line of a phase run on a disk-only nsqd (DISK_ARGS) has "disk":true.
#
# Environment:
#   NSQD_ARGS      extra nsqd flags, for both servers (default --mem-queue-size=10000000)
#   RUNFOR         time limit per throughput/latency run (default 10s)
#   WRITER_COUNT   most messages our writer publishes (default 10000000). A
#                  fast nsqd fills 10M in a second or two, so the writer stops
#                  at whichever comes first.
#   ROUNDS         rounds per server, each on a fresh nsqd (default 1)
#   MEM_MSGS       messages for the memory figure (default 1000000)
#   SIZE           message body bytes (default 200)
#   NO_BUILD       set: measure target/release as it is, without cargo build
#   PHASES         which of "throughput latency memory disk" to run (default all)
#   DISK_ARGS      nsqd flags for the disk phase, instead of NSQD_ARGS
#                  (default --mem-queue-size=0: every message goes to disk)
#   DISK_COUNT     most messages our writer publishes in the disk phase
#                  (default 1000000); upstream's writer runs DISK_RUNFOR (default 5s)
#
# --scaling: at each point, on a fresh nsqd with its channels created first,
# our writer publishes the point's messages over N connections, nsqd hands
# them to every channel, and our reader drains every channel over N
# connections (at least one per channel). Points are CHANNELS:CONNECTIONS:SIZE:
#   SCALE_POINTS   default "1:1:100 10:1:100 100:1:100 1:100:100 1:1000:100
#                  1:1:1024 1:1:65536" (a baseline, then one dimension at a time)
#   SCALE_MSGS     deliveries per point (default 2000000): a point publishes
#                  SCALE_MSGS / CHANNELS messages ...
#   SCALE_BYTES    ... and at most SCALE_BYTES / SIZE (default 268435456, so
#                  64 KiB messages queue 256 MiB)
#   ROUNDS         as above (default 3 with --scaling). The defaults take about
#                  ten minutes with --against on a 2-core machine; for steadier
#                  figures run longer, e.g. ROUNDS=5 SCALE_MSGS=10000000
#                  SCALE_BYTES=1073741824 (about an hour).
#
# --replicated: instead of the figures above, bench_writer and bench_latency
# against one nsqd, then against nsqd A of a replicated pair (A on 127.0.0.2,
# B on 127.0.0.3, each replicating to the other), in memory and --durable.
# One JSON line per run, with "mode" (single/pair), "durable" and "round"
# added; ROUNDS rounds (default 1), each single then pair, in memory then
# --durable; then a summary line per measure and, with --table, the markdown
# table (medians over rounds: single, pair, pair/single).
#   PAIR_COUNT     most messages the writer publishes per run (default
#                  2000000: a peer's copy is held in memory, at most 1 GiB)
set -euo pipefail
cd "$(dirname "$0")/.."

COMMAND_LINE="scripts/bench.sh $*"
NSQD_ARGS=${NSQD_ARGS:---mem-queue-size=10000000}
RUNFOR=${RUNFOR:-10s}
WRITER_COUNT=${WRITER_COUNT:-10000000}
MEM_MSGS=${MEM_MSGS:-1000000}
SIZE=${SIZE:-200}
PHASES=${PHASES:-throughput latency memory disk}
DISK_ARGS=${DISK_ARGS:---mem-queue-size=0}
DISK_COUNT=${DISK_COUNT:-1000000}
DISK_RUNFOR=${DISK_RUNFOR:-5s}
SCALE_POINTS=${SCALE_POINTS:-1:1:100 10:1:100 100:1:100 1:100:100 1:1000:100 1:1:1024 1:1:65536}
SCALE_MSGS=${SCALE_MSGS:-2000000}
SCALE_BYTES=${SCALE_BYTES:-268435456}
PAIR_COUNT=${PAIR_COUNT:-2000000}
MODE=single
# Hard bound on any single tool run, whatever RUNFOR says.
TOOL_TIMEOUT=${TOOL_TIMEOUT:-120}

AGAINST=
TOOLS=ours
TABLE=
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
    case $1 in
        --against) AGAINST=${2:?--against needs a directory}; shift 2 ;;
        --against=*) AGAINST=${1#*=}; shift ;;
        --tools) TOOLS=${2:?--tools needs ours or upstream}; shift 2 ;;
        --tools=*) TOOLS=${1#*=}; shift ;;
        --table) TABLE=${2:?--table needs a file}; shift 2 ;;
        --table=*) TABLE=${1#*=}; shift ;;
        --replicated) MODE=replicated; shift ;;
        --scaling) MODE=scaling; shift ;;
        -h|--help) usage 0 ;;
        *) echo "bench.sh: unknown argument $1" >&2; usage ;;
    esac
done
case $TOOLS in ours|upstream) ;; *) echo "bench.sh: --tools is ours or upstream" >&2; exit 2 ;; esac
if [ "$MODE" = scaling ]; then
    ROUNDS=${ROUNDS:-3}
    [ "$TOOLS" = ours ] || { echo "bench.sh: --scaling uses our tools (upstream's have no --channels or --connections)" >&2; exit 2; }
else
    ROUNDS=${ROUNDS:-1}
fi
for phase in $PHASES; do
    case $phase in throughput|latency|memory|disk) ;; *) echo "bench.sh: unknown phase $phase in PHASES" >&2; exit 2 ;; esac
done
if [ -n "$AGAINST" ]; then
    AGAINST=$(cd "$AGAINST" && pwd)
    [ -x "$AGAINST/nsqd" ] || { echo "bench.sh: no executable $AGAINST/nsqd" >&2; exit 2; }
fi
if [ "$TOOLS" = upstream ]; then
    [ -n "$AGAINST" ] || { echo "bench.sh: --tools upstream takes the tools from --against DIR" >&2; exit 2; }
    for t in bench_writer bench_reader; do
        [ -x "$AGAINST/$t" ] || { echo "bench.sh: no executable $AGAINST/$t" >&2; exit 2; }
    done
fi

# Workspace level, so the tools build wherever their crate lives.
[ -n "${NO_BUILD:-}" ] || cargo build --release --bins >&2
BIN=./target/release

# The load before anything of ours runs, for the --table line.
LOAD_START=$(sed 's/^\([^ ]* [^ ]* [^ ]*\).*/\1/' /proc/loadavg)
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

# Forget a process that has been reaped, so cleanup never signals a PID the
# system may have handed to someone else since.
forget_pid() {
    local keep=() pid
    for pid in "${pids[@]}"; do [ "$pid" = "$1" ] || keep+=("$pid"); done
    pids=("${keep[@]}")
}

# Start nsqd on port 0 (of IP $2, default 127.0.0.1; more flags after it)
# and read the bound addresses from its log, so no fixed port can collide
# with anything else on the machine. The binary is $NSQD_BIN (default ours).
# Each call gets its own data directory. Sets NSQD_PID, NSQD_TCP and NSQD_HTTP.
start_nsqd() {
    local name=$1 ip=${2:-127.0.0.1} nsqd=${NSQD_BIN:-$BIN/nsqd} dir
    dir=$(mktemp -d "$WORK/$1.XXXX")
    shift; [ $# -gt 0 ] && shift
    mkdir -p "$dir/data"
    # Made here: the background job opens it only when it gets to run.
    : >"$dir/nsqd.log"
    # shellcheck disable=SC2086 # NSQD_ARGS is a list of flags
    "$nsqd" --tcp-address="$ip:0" --http-address="$ip:0" \
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
    log "nsqd ($name, $nsqd) pid $NSQD_PID, TCP $NSQD_TCP, HTTP $NSQD_HTTP"
}

stop_nsqd() {
    kill -TERM "$NSQD_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$NSQD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$NSQD_PID" 2>/dev/null || true
    wait "$NSQD_PID" 2>/dev/null || true
    forget_pid "$NSQD_PID"
}

# nsqd's CPU ticks so far (user sys), USER_HZ = 100. Fields are counted after
# the command name's closing parenthesis.
nsqd_ticks() { sed 's/.*) //' "/proc/$NSQD_PID/stat" | awk '{print $12, $13}'; }

# The JSON line for the CPU nsqd used between two nsqd_ticks readings while
# MSGS messages went through it.
nsqd_cpu_json() {
    local phase=$1 before=$2 after=$3 msgs=${4:-0}
    echo "$before $after" | awk -v phase="$phase" -v msgs="$msgs" '{
        u = ($3 - $1) / 100; s = ($4 - $2) / 100
        per = (u + s > 0) ? msgs / (u + s) : 0
        printf "{\"tool\":\"nsqd_cpu\",\"phase\":\"%s\",\"user_seconds\":%.2f,\"sys_seconds\":%.2f,\"msgs\":%d,\"msgs_per_cpu_sec\":%.1f}\n", phase, u, s, msgs, per
    }'
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

# Run one of upstream's Go tools (TOOL, then its flags) and turn its summary
# line ("duration: 1.0016s - 14.053mb/s - 73680.040ops/s - 13.572us/op") into
# the JSON line our tools print.
run_go_tool() {
    local tool=$1 err
    shift
    if ! err=$(timeout "$TOOL_TIMEOUT" "$AGAINST/$tool" "$@" 2>&1 >/dev/null); then
        log "failed: $AGAINST/$tool $*"
        echo "$err" >&2
        exit 1
    fi
    echo "$err" >&2
    awk -v tool="$tool" '
        # Go duration text (1m2.5s, 950.1ms, 3s) in seconds.
        function go_seconds(d,   total, n, unit) {
            total = 0
            while (match(d, /^[0-9.]+(h|ms|µs|us|ns|m|s)/)) {
                n = substr(d, 1, RLENGTH)
                d = substr(d, RLENGTH + 1)
                unit = n; sub(/^[0-9.]+/, "", unit); sub(/[a-zµ]+$/, "", n)
                total += n * (unit == "h" ? 3600 : unit == "m" ? 60 : unit == "s" ? 1 : unit == "ms" ? 1e-3 : unit == "ns" ? 1e-9 : 1e-6)
            }
            return total
        }
        /duration: / {
            line = $0; sub(/.*duration: /, "", line)
            split(line, f, / - /)
            secs = go_seconds(f[1]); ops = f[3]; sub(/ops\/s/, "", ops)
            printf "{\"tool\":\"%s\",\"tools\":\"upstream\",\"msgs\":%d,\"seconds\":%.6f,\"msgs_per_sec\":%.3f}\n", tool, ops * secs + 0.5, secs, ops
            found = 1
        }
        END { if (!found) exit 1 }' <<<"$err" || { log "$tool printed no summary line"; exit 1; }
}

# The writer of the chosen tool set against NSQD_TCP: ours publishes at most
# COUNT messages (or for RUNFOR), upstream's for RUNFOR_GO (it has no
# count). Prints one JSON line with at least msgs and msgs_per_sec.
bench_writer() {
    local count=$1 runfor_go=$2
    if [ "$TOOLS" = upstream ]; then
        run_go_tool bench_writer --nsqd-tcp-address="$NSQD_TCP" --runfor="$runfor_go" --size="$SIZE"
    else
        run_tool "$BIN/bench_writer" --tcp-address="$NSQD_TCP" --runfor="$RUNFOR" \
            --count="$count" --size="$SIZE"
    fi
}

# The reader of the chosen tool set, draining the COUNT messages queued on
# sub_bench/ch. Ours stops at COUNT and times itself; upstream's is timed
# from its start to the empty channel by bench_drain.py (see the usage).
bench_reader() {
    local count=$1
    if [ "$TOOLS" = upstream ]; then
        local out
        if ! out=$(timeout $((TOOL_TIMEOUT + 10)) python3 scripts/bench_drain.py drain \
            "$NSQD_HTTP" sub_bench ch "$count" "$TOOL_TIMEOUT" -- \
            "$AGAINST/bench_reader" --nsqd-tcp-address="$NSQD_TCP" \
            --runfor="$((TOOL_TIMEOUT + 10))s" --size="$SIZE"); then
            log "failed: upstream bench_reader draining $count messages"
            exit 1
        fi
        log "upstream bench_reader, timed to the drain: $out"
        echo "$out"
    else
        run_tool "$BIN/bench_reader" --tcp-address="$NSQD_TCP" --runfor="$((TOOL_TIMEOUT - 10))s" \
            --count="$count" --size="$SIZE"
    fi
}

# Tag a JSON line with the server and round it belongs to.
tag() { sed "s/^{/{\"server\":\"$1\",\"round\":$2,/"; }

# Create topic sub_bench and the channels named after it on the running
# nsqd, before anything is published, as a production consumer would have.
create_channels() {
    local ch
    curl -sf -X POST "http://$NSQD_HTTP/topic/create?topic=sub_bench" >/dev/null \
        || { log "could not create topic sub_bench"; exit 1; }
    for ch in "$@"; do
        curl -sf -X POST "http://$NSQD_HTTP/channel/create?topic=sub_bench&channel=$ch" >/dev/null \
            || { log "could not create channel $ch"; exit 1; }
    done
}

# Wait until the channels of sub_bench hold TOTAL messages: the topic has
# handed every message on, so what is read next includes the fan-out.
wait_fanned_out() {
    timeout $((TOOL_TIMEOUT + 10)) python3 scripts/bench_drain.py wait "$NSQD_HTTP" sub_bench "$1" "$TOOL_TIMEOUT" \
        || { log "the channels never held all $1 messages"; exit 1; }
}

# --- throughput (and its disk-only variant) on the running nsqd -------------
# Channel ch exists first; the writer publishes; the CPU of the PUB phase is
# read once the channel holds every message; the reader drains them.
# DISK is "true" for the disk phase, which tags its lines.
phase_throughput() {
    local server=$1 round=$2 disk=$3 count=$4 runfor_go=$5 t0 t1 t2 w r written read_n d=""
    [ "$disk" = true ] && d='"disk":true,'
    create_channels ch
    t0=$(nsqd_ticks)
    w=$(bench_writer "$count" "$runfor_go")
    written=$(json_field msgs "$w")
    wait_fanned_out "$written"
    t1=$(nsqd_ticks)
    r=$(bench_reader "$written")
    t2=$(nsqd_ticks)
    read_n=$(json_field msgs "$r")
    results+=("$(sed "s/^{/{$d/" <<<"$w" | tag "$server" "$round")" "$(nsqd_cpu_json writer "$t0" "$t1" "$written" | sed "s/^{/{$d/" | tag "$server" "$round")")
    results+=("$(sed "s/^{/{$d/" <<<"$r" | tag "$server" "$round")" "$(nsqd_cpu_json reader "$t1" "$t2" "$read_n" | sed "s/^{/{$d/" | tag "$server" "$round")")
    [ "$read_n" -ge "$written" ] || log "$server round $round: reader finished $read_n of $written messages"
}

# --- latency on the running nsqd --------------------------------------------
phase_latency() {
    local server=$1 round=$2 t0 t1 l
    t0=$(nsqd_ticks)
    l=$(run_tool "$BIN/bench_latency" --tcp-address="$NSQD_TCP" --runfor="$RUNFOR" --size="$SIZE")
    t1=$(nsqd_ticks)
    results+=("$(tag "$server" "$round" <<<"$l")" "$(nsqd_cpu_json latency "$t0" "$t1" "$(json_field msgs "$l")" | tag "$server" "$round")")
}

# --- memory per queued message on the running nsqd --------------------------
# A consumer with RDY 0 creates the channel and keeps it, so the messages sit
# in the channel's queue as they would in production. Our tools either way:
# the writer must stop at exactly MEM_MSGS.
phase_memory() {
    local server=$1 round=$2 holder rss_before rss_after m queued
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
    [ "$queued" = "$MEM_MSGS" ] || { log "$server: memory run queued $queued of $MEM_MSGS messages"; exit 1; }
    results+=("$(awk -v n="$MEM_MSGS" -v size="$SIZE" -v b="$rss_before" -v a="$rss_after" 'BEGIN {
        per = (a - b) * 1024 / n
        printf "{\"tool\":\"nsqd_memory\",\"msgs\":%d,\"size\":%d,\"rss_before_kb\":%d,\"rss_after_kb\":%d,\"bytes_per_msg\":%.1f,\"overhead_per_msg\":%.1f}\n", n, size, b, a, per, per - size
    }' | tag "$server" "$round")")
    kill -TERM "$holder" 2>/dev/null || true
    wait "$holder" 2>/dev/null || true
    forget_pid "$holder"
}

has_phase() { [[ " $PHASES " == *" $1 "* ]]; }

# One round on one server: throughput then latency on one nsqd, memory and
# the disk phase each on a fresh nsqd and data path.
bench_server() {
    local server=$1 nsqd=$2 round=$3
    if has_phase throughput || has_phase latency; then
        NSQD_BIN=$nsqd start_nsqd "$server-throughput-$round"
        has_phase throughput && phase_throughput "$server" "$round" false "$WRITER_COUNT" "$RUNFOR"
        has_phase latency && phase_latency "$server" "$round"
        stop_nsqd
    fi
    if has_phase memory; then
        NSQD_BIN=$nsqd start_nsqd "$server-memory-$round"
        phase_memory "$server" "$round"
        stop_nsqd
    fi
    if has_phase disk; then
        NSQD_BIN=$nsqd NSQD_ARGS=$DISK_ARGS start_nsqd "$server-disk-$round"
        phase_throughput "$server" "$round" true "$DISK_COUNT" "$DISK_RUNFOR"
        stop_nsqd
    fi
}

# --- summary -----------------------------------------------------------------
# "server measure value" rows from the JSON lines, for the medians.
measures() {
    local line server tool phase d
    for line in "${results[@]}"; do
        server=$(sed -n 's/.*"server":"\([a-z]*\)".*/\1/p' <<<"$line")
        tool=$(sed -n 's/.*"tool":"\([a-z_]*\)".*/\1/p' <<<"$line")
        phase=$(sed -n 's/.*"phase":"\([a-z]*\)".*/\1/p' <<<"$line")
        d=
        [[ $line == *'"disk":true'* ]] && d=disk_
        case $tool/$phase in
            bench_writer/) echo "$server ${d}pub_msgs_per_sec $(json_field msgs_per_sec "$line")" ;;
            bench_reader/) echo "$server ${d}sub_msgs_per_sec $(json_field msgs_per_sec "$line")" ;;
            bench_latency/)
                echo "$server latency_p50_us $(json_field p50_us "$line")"
                echo "$server latency_p99_us $(json_field p99_us "$line")" ;;
            nsqd_cpu/writer) echo "$server ${d}pub_msgs_per_cpu_sec $(json_field msgs_per_cpu_sec "$line")" ;;
            nsqd_cpu/reader) echo "$server ${d}sub_msgs_per_cpu_sec $(json_field msgs_per_cpu_sec "$line")" ;;
            nsqd_memory/) echo "$server rss_bytes_per_msg $(json_field bytes_per_msg "$line")" ;;
        esac
    done
}

# The first line of a --table file: what ran, when, where, under what load.
table_preamble() {
    local cpu load
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
    load=$(sed 's/^\([^ ]* [^ ]* [^ ]*\).*/\1/' /proc/loadavg)
    echo "\`$(env_knobs)$COMMAND_LINE\`, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores (${cpu:-unknown CPU}), load average (1, 5, 15 min) at the start $LOAD_START, at the end $load."
    echo
}

# The environment knobs set for this run, as they would be typed.
env_knobs() {
    local v
    for v in NSQD_ARGS RUNFOR WRITER_COUNT ROUNDS MEM_MSGS SIZE PHASES DISK_ARGS DISK_COUNT DISK_RUNFOR \
        SCALE_POINTS SCALE_MSGS SCALE_BYTES PAIR_COUNT; do
        if [ -n "${!v+set}" ] && [ "${!v}" != "$(default_of "$v")" ]; then
            printf '%s=%q ' "$v" "${!v}"
        fi
    done
}
default_of() {
    case $1 in
        NSQD_ARGS) echo --mem-queue-size=10000000 ;; RUNFOR) echo 10s ;; WRITER_COUNT) echo 10000000 ;;
        ROUNDS) [ "$MODE" = scaling ] && echo 3 || echo 1 ;; MEM_MSGS) echo 1000000 ;; SIZE) echo 200 ;;
        PHASES) echo "throughput latency memory disk" ;; DISK_ARGS) echo --mem-queue-size=0 ;;
        DISK_COUNT) echo 1000000 ;; DISK_RUNFOR) echo 5s ;;
        SCALE_POINTS) echo "1:1:100 10:1:100 100:1:100 1:100:100 1:1000:100 1:1:1024 1:1:65536" ;;
        SCALE_MSGS) echo 2000000 ;; SCALE_BYTES) echo 268435456 ;; PAIR_COUNT) echo 2000000 ;;
    esac
}

# awk: rows "server measure value" sorted by value go into v[] and n[];
# median(server, measure) of them ("" when none).
AWK_MEDIAN='
        { v[$1, $2, ++n[$1, $2]] = $3 }
        function median(s, m,   k) {
            k = n[s, m]
            if (k == 0) return ""
            return (k % 2) ? v[s, m, (k + 1) / 2] : (v[s, m, k / 2] + v[s, m, k / 2 + 1]) / 2
        }'

# Medians per server and measure, as JSON lines and a markdown table.
summarise() {
    local tools_label=$1
    [ -n "$TABLE" ] && table_preamble >"$TABLE"
    measures | sort -k1,1 -k2,2 -k3,3g | awk -v tools="$tools_label" -v rounds="$ROUNDS" -v disk="$DISK_ARGS" -v table="${TABLE:-/dev/null}" "$AWK_MEDIAN"'
        { seen[$1] = 1 }
        function fmt(x, m) {
            if (x == "") return "–"
            if (m ~ /_us$/) return sprintf("%.0f µs", x)
            if (m ~ /bytes/) return sprintf("%.0f B", x)
            return (x >= 1e6) ? sprintf("%.2f M", x / 1e6) : sprintf("%.0f k", x / 1e3)
        }
        END {
            k = split("pub_msgs_per_sec sub_msgs_per_sec pub_msgs_per_cpu_sec sub_msgs_per_cpu_sec latency_p50_us latency_p99_us rss_bytes_per_msg disk_pub_msgs_per_sec disk_sub_msgs_per_sec disk_pub_msgs_per_cpu_sec disk_sub_msgs_per_cpu_sec", order)
            label["pub_msgs_per_sec"] = "PUB (MPUB) msgs/s, " tools " bench_writer"
            label["sub_msgs_per_sec"] = "SUB msgs/s, " tools " bench_reader"
            label["pub_msgs_per_cpu_sec"] = "PUB msgs per nsqd CPU-second"
            label["sub_msgs_per_cpu_sec"] = "SUB msgs per nsqd CPU-second"
            label["latency_p50_us"] = "single PUB round trip p50, our bench_latency"
            label["latency_p99_us"] = "single PUB round trip p99, our bench_latency"
            label["rss_bytes_per_msg"] = "RSS per queued message"
            label["disk_pub_msgs_per_sec"] = "`" disk "`: PUB msgs/s, " tools " bench_writer"
            label["disk_sub_msgs_per_sec"] = "`" disk "`: SUB msgs/s, " tools " bench_reader"
            label["disk_pub_msgs_per_cpu_sec"] = "`" disk "`: PUB msgs per nsqd CPU-second"
            label["disk_sub_msgs_per_cpu_sec"] = "`" disk "`: SUB msgs per nsqd CPU-second"
            both = ("theirs" in seen)
            hdr = both ? "| measure (median of " rounds ") | ours | theirs | ours/theirs |\n|---|---|---|---|" \
                       : "| measure (median of " rounds ") | ours |\n|---|---|"
            print hdr > "/dev/stderr"; print hdr >> table
            for (i = 1; i <= k; i++) {
                m = order[i]; o = median("ours", m); t = both ? median("theirs", m) : ""
                if (o == "" && t == "") continue
                ratio = (both && o != "" && t != "" && t > 0) ? sprintf("%.2f", o / t) : ""
                row = "| " label[m] " | " fmt(o, m)
                if (both) row = row " | " fmt(t, m) " | " (ratio == "" ? "–" : ratio "×")
                row = row " |"
                print row > "/dev/stderr"; print row >> table
                printf "{\"tool\":\"summary\",\"measure\":\"%s\",\"tools\":\"%s\",\"rounds\":%d,\"ours\":%s,\"theirs\":%s,\"ratio\":%s}\n", \
                    m, tools, rounds, (o == "" ? "null" : o), (t == "" ? "null" : t), (ratio == "" ? "null" : ratio)
            }
        }'
}

# --- replicated pairs (--replicated) ------------------------------------------
# A port free on IP $1 right now (the replication listener needs its port
# before the peer starts).
free_port() {
    python3 -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"
}

# Add "mode", "durable" and "round" to a tool's JSON line.
tag_mode() { sed "s/^{/{\"mode\":\"$1\",\"durable\":$2,\"round\":$round,/" <<<"$3"; }

# Medians per mode and measure of the --replicated runs, as JSON summary
# lines and a markdown table (single, pair, pair/single).
summarise_replicated() {
    [ -n "$TABLE" ] && table_preamble >"$TABLE"
    local line mode d tool
    for line in "${results[@]}"; do
        mode=$(sed -n 's/.*"mode":"\([a-z]*\)".*/\1/p' <<<"$line")
        d=mem
        [[ $line == *'"durable":true'* ]] && d=durable
        tool=$(sed -n 's/.*"tool":"\([a-z_]*\)".*/\1/p' <<<"$line")
        case $tool in
            bench_writer) echo "$mode ${d}_mpub_msgs_per_sec $(json_field msgs_per_sec "$line")" ;;
            bench_latency)
                echo "$mode ${d}_latency_p50_us $(json_field p50_us "$line")"
                echo "$mode ${d}_latency_p99_us $(json_field p99_us "$line")" ;;
        esac
    done | sort -k1,1 -k2,2 -k3,3g | awk -v rounds="$ROUNDS" -v table="${TABLE:-/dev/null}" "$AWK_MEDIAN"'
        function fmt(x, m) {
            if (x == "") return "–"
            if (m ~ /_us$/) return sprintf("%.0f µs", x)
            x = sprintf("%d", x)
            while (x ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", x)
            return x " msg/s"
        }
        END {
            k = split("mem_mpub_msgs_per_sec mem_latency_p50_us mem_latency_p99_us durable_mpub_msgs_per_sec durable_latency_p50_us durable_latency_p99_us", order)
            label["mem_mpub_msgs_per_sec"] = "MPUB throughput, memory"
            label["mem_latency_p50_us"] = "PUB round trip p50, memory"
            label["mem_latency_p99_us"] = "PUB round trip p99, memory"
            label["durable_mpub_msgs_per_sec"] = "MPUB throughput, `--durable`"
            label["durable_latency_p50_us"] = "PUB round trip p50, `--durable`"
            label["durable_latency_p99_us"] = "PUB round trip p99, `--durable`"
            hdr = "| measure (median of " rounds ") | single nsqd | pair | pair / single |\n|---|---|---|---|"
            print hdr > "/dev/stderr"; print hdr >> table
            for (i = 1; i <= k; i++) {
                m = order[i]; s = median("single", m); p = median("pair", m)
                if (s == "" && p == "") continue
                ratio = ""
                if (s != "" && p != "" && s > 0) ratio = (m ~ /_us$/) ? sprintf("%.2f×", p / s) : sprintf("%.0f%%", 100 * p / s)
                row = "| " label[m] " | " fmt(s, m) " | " fmt(p, m) " | " (ratio == "" ? "–" : ratio) " |"
                print row > "/dev/stderr"; print row >> table
                printf "{\"tool\":\"summary\",\"measure\":\"%s\",\"rounds\":%d,\"single\":%s,\"pair\":%s}\n", \
                    m, rounds, (s == "" ? "null" : sprintf("%.10g", s)), (p == "" ? "null" : sprintf("%.10g", p))
            }
        }'
}

if [ "$MODE" = replicated ]; then
    for round in $(seq 1 "$ROUNDS"); do
        for durable in false true; do
            log "round $round of $ROUNDS: durable=$durable"
            dflag=()
            [ "$durable" = true ] && dflag=(--durable)
            start_nsqd "single-$durable" 127.0.0.1 ${dflag[@]+"${dflag[@]}"}
            w=$(run_tool "$BIN/bench_writer" --tcp-address="$NSQD_TCP" --runfor="$RUNFOR" \
                --count="$PAIR_COUNT" --size="$SIZE")
            l=$(run_tool "$BIN/bench_latency" --tcp-address="$NSQD_TCP" --runfor="$RUNFOR" --size="$SIZE")
            results+=("$(tag_mode single "$durable" "$w")" "$(tag_mode single "$durable" "$l")")
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
            results+=("$(tag_mode pair "$durable" "$w")" "$(tag_mode pair "$durable" "$l")")
            stop_nsqd
            NSQD_PID=$b_pid
            stop_nsqd
        done
    done
    printf '%s\n' "${results[@]}"
    summarise_replicated
    exit 0
fi

# --- main ----------------------------------------------------------------------
servers=(ours)
[ -n "$AGAINST" ] && servers+=(theirs)
if [ "$MODE" = scaling ]; then
    # shellcheck source=scripts/bench_scaling.sh
    . scripts/bench_scaling.sh
    run_scaling
    printf '%s\n' "${results[@]}"
    summarise_scaling
    exit 0
fi
for round in $(seq 1 "$ROUNDS"); do
    for server in "${servers[@]}"; do
        if [ "$server" = ours ]; then nsqd=$BIN/nsqd; else nsqd=$AGAINST/nsqd; fi
        log "round $round of $ROUNDS: $server"
        bench_server "$server" "$nsqd" "$round"
    done
done

printf '%s\n' "${results[@]}"
summarise "$TOOLS"
