# bench_scaling.sh: the --scaling mode of scripts/bench.sh, which sources it
# (start_nsqd, run_tool, nsqd_ticks, rss_kb, create_channels, wait_fanned_out,
# tag and the settings are bench.sh's). See bench.sh's usage for the knobs.
# shellcheck shell=bash

# Messages a point publishes: SCALE_MSGS deliveries in all, and at most
# SCALE_BYTES of bodies.
scale_msgs() {
    local c=$1 size=$2 msgs
    msgs=$((SCALE_MSGS / c))
    ((SCALE_BYTES / size < msgs)) && msgs=$((SCALE_BYTES / size))
    ((msgs < 1)) && msgs=1
    echo "$msgs"
}

# One point on the running nsqd: C channels of sub_bench created first, N
# publishing connections writing the point's messages of SIZE bytes, the
# fan-out to every channel awaited, then N consuming connections (at least
# one per channel) draining every channel. Leaves the tools' lines and one
# "scale" line in results.
scale_point() {
    local server=$1 round=$2 c=$3 n=$4 size=$5 msgs batch names=() i t0 t1 t2 rss0 rss1 w r
    msgs=$(scale_msgs "$c" "$size")
    # MPUBs stay under 4 MiB, inside both servers' default --max-body-size (5 MiB).
    batch=$((4194304 / size))
    ((batch > 200)) && batch=200
    ((batch < 1)) && batch=1
    if [ "$c" = 1 ]; then
        names=(ch)
    else
        for ((i = 0; i < c; i++)); do names+=("ch$i"); done
    fi
    create_channels "${names[@]}"
    rss0=$(rss_kb)
    t0=$(nsqd_ticks)
    w=$(run_tool "$BIN/bench_writer" --tcp-address="$NSQD_TCP" --connections="$n" \
        --size="$size" --batch-size="$batch" --count="$msgs" --runfor="$((TOOL_TIMEOUT - 10))s")
    [ "$(json_field msgs "$w")" = "$msgs" ] || { log "$server: the writer published $(json_field msgs "$w") of $msgs"; exit 1; }
    wait_fanned_out $((msgs * c))
    t1=$(nsqd_ticks)
    rss1=$(rss_kb)
    r=$(run_tool "$BIN/bench_reader" --tcp-address="$NSQD_TCP" --channels="$c" --connections="$n" \
        --size="$size" --count=$((msgs * c)) --runfor="$((TOOL_TIMEOUT - 10))s")
    t2=$(nsqd_ticks)
    [ "$(json_field msgs "$r")" -ge $((msgs * c)) ] || { log "$server: the reader finished $(json_field msgs "$r") of $((msgs * c))"; exit 1; }
    results+=("$(tag "$server" "$round" <<<"$w")" "$(tag "$server" "$round" <<<"$r")")
    results+=("$(echo "$t0 $t1 $t2" | awk -v c="$c" -v n="$n" -v size="$size" -v msgs="$msgs" \
        -v pub="$(json_field msgs_per_sec "$w")" -v subr="$(json_field msgs_per_sec "$r")" \
        -v rss0="$rss0" -v rss1="$rss1" '{
        pubcpu = ($3 + $4 - $1 - $2) / 100; subcpu = ($5 + $6 - $3 - $4) / 100
        printf "{\"tool\":\"scale\",\"channels\":%d,\"connections\":%d,\"size\":%d,\"msgs\":%d,\"deliveries\":%d,\"pub_msgs_per_sec\":%.1f,\"sub_msgs_per_sec\":%.1f,\"pub_cpu_seconds\":%.2f,\"sub_cpu_seconds\":%.2f,\"cpu_seconds\":%.2f,\"rss_before_kb\":%d,\"rss_queued_kb\":%d}\n", c, n, size, msgs, msgs * c, pub, subr, pubcpu, subcpu, pubcpu + subcpu, rss0, rss1
    }' | tag "$server" "$round")")
}

# Every point on every server, interleaved: for each round, each point runs
# on ours then theirs, each on a fresh nsqd and data path.
run_scaling() {
    local round point c n size server nsqd
    for round in $(seq 1 "$ROUNDS"); do
        for point in $SCALE_POINTS; do
            IFS=: read -r c n size <<<"$point"
            for server in "${servers[@]}"; do
                if [ "$server" = ours ]; then nsqd=$BIN/nsqd; else nsqd=$AGAINST/nsqd; fi
                log "round $round of $ROUNDS, $c channel(s), $n connection(s), $size-byte messages: $server"
                NSQD_BIN=$nsqd start_nsqd "$server-scale-$round-$c-$n-$size"
                scale_point "$server" "$round" "$c" "$n" "$size"
                stop_nsqd
            done
        done
    done
}

# The scaling table (medians over rounds) on stderr and in TABLE, and one
# "scale_summary" JSON line per point.
summarise_scaling() {
    local line server
    [ -n "$TABLE" ] && table_preamble >"$TABLE"
    for line in "${results[@]}"; do
        [[ $line == *'"tool":"scale"'* ]] || continue
        server=$(sed -n 's/.*"server":"\([a-z]*\)".*/\1/p' <<<"$line")
        echo "$server $(json_field channels "$line"):$(json_field connections "$line"):$(json_field size "$line")" \
            "$(json_field msgs "$line") $(json_field pub_msgs_per_sec "$line") $(json_field sub_msgs_per_sec "$line")" \
            "$(json_field cpu_seconds "$line") $(json_field rss_queued_kb "$line")"
    done | awk -v rounds="$ROUNDS" -v points="$SCALE_POINTS" -v table="${TABLE:-/dev/null}" '
        {
            s = $1; p = $2; msgs[p] = $3; seen[s] = 1
            k = ++n[s, p]
            v[s, p, "pub", k] = $4; v[s, p, "sub", k] = $5; v[s, p, "cpu", k] = $6; v[s, p, "rss", k] = $7
        }
        function median(s, p, m,   k, i, j, a, t) {
            k = n[s, p]
            if (k == 0) return ""
            for (i = 1; i <= k; i++) a[i] = v[s, p, m, i]
            for (i = 2; i <= k; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
            return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
        }
        function count(x) { return (x >= 1e6) ? sprintf("%.2f M", x / 1e6) : (x >= 1e3) ? sprintf("%.0f k", x / 1e3) : sprintf("%d", x) }
        function fmt(m, x) {
            if (x == "") return "–"
            if (m == "cpu") return sprintf("%.2f s", x)
            if (m == "rss") return sprintf("%.0f MiB", x / 1024)
            return count(x)
        }
        function bytes(x) { return (x % 1024) ? x " B" : (x / 1024) " KiB" }
        function cell(p, m,   o, t) {
            o = median("ours", p, m)
            if (!both) return fmt(m, o)
            t = median("theirs", p, m)
            return fmt(m, o) " / " fmt(m, t) ((o != "" && t != "" && t > 0) ? sprintf(" (%.2f×)", o / t) : "")
        }
        END {
            both = ("theirs" in seen)
            hdr = "| channels | connections | size | published × channels | PUB msgs/s | SUB msgs/s (deliveries) | nsqd CPU-seconds, PUB + SUB | nsqd RSS, all queued |\n|---|---|---|---|---|---|---|---|"
            note = both ? "Each cell: ours / upstream (ours ÷ upstream), medians of " rounds " rounds; higher is better for msgs/s, lower for CPU-seconds and RSS." \
                        : "Medians of " rounds " rounds."
            print note "\n" > "/dev/stderr"; print note "\n" >> table
            print hdr > "/dev/stderr"; print hdr >> table
            np = split(points, pts, " ")
            for (i = 1; i <= np; i++) {
                p = pts[i]
                if (!(p in msgs)) continue
                split(p, d, ":")
                row = "| " d[1] " | " d[2] " | " bytes(d[3]) " | " count(msgs[p]) " × " d[1] " | " cell(p, "pub") " | " cell(p, "sub") " | " cell(p, "cpu") " | " cell(p, "rss") " |"
                print row > "/dev/stderr"; print row >> table
                printf "{\"tool\":\"scale_summary\",\"channels\":%d,\"connections\":%d,\"size\":%d,\"msgs\":%d,\"rounds\":%d", d[1], d[2], d[3], msgs[p], rounds
                split("pub sub cpu rss", ms, " ")
                for (j = 1; j <= 4; j++) {
                    o = median("ours", p, ms[j]); t = median("theirs", p, ms[j])
                    printf ",\"%s_ours\":%s,\"%s_theirs\":%s", ms[j], (o == "" ? "null" : o), ms[j], (t == "" ? "null" : t)
                }
                print "}"
            }
        }'
}
