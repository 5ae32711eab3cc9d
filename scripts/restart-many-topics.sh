#!/usr/bin/env bash
# Time from starting nsqd on a data path whose nsqd.dat lists N topics (one
# channel each, no messages) to its first /ping answer. A measurement for
# the README, not a test.
#   scripts/restart-many-topics.sh [N] [path/to/nsqd]
# Defaults: N=10000, target/debug/nsqd (build it first: cargo build -p nsqd).
set -euo pipefail
n=${1:-10000}
bin=${2:-target/debug/nsqd}
dir=$(mktemp -d)
log=$(mktemp)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir" "$log"' EXIT
python3 - "$n" "$dir/nsqd.dat" <<'PY'
import json, sys
n, path = int(sys.argv[1]), sys.argv[2]
topics = [{"name": f"topic_{i:06d}", "paused": False, "channels": [{"name": "c", "paused": False}]} for i in range(n)]
json.dump({"topics": topics, "version": "1.3.0"}, open(path, "w"))
PY
start=$(date +%s.%N)
"$bin" --data-path="$dir" --tcp-address=127.0.0.1:0 --http-address=127.0.0.1:0 >"$log" 2>&1 &
pid=$!
addr=""
while [ -z "$addr" ]; do
    kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 1; }
    addr=$(grep -o 'HTTP: listening on [0-9.:]*' "$log" | awk '{print $4}' || true)
    [ -n "$addr" ] || sleep 0.01
done
until curl -sf "http://$addr/ping" >/dev/null; do sleep 0.01; done
end=$(date +%s.%N)
echo "$n topics: first /ping after $(python3 -c "print(round($end - $start, 2))") s ($bin)"
