#!/usr/bin/env bash
# Run a local cluster on loopback: nsqlookupd, nsqd (data under ./data) and
# nsqadmin. Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-./data}
mkdir -p "$DATA/nsqd"
cargo build --release -p nsqd -p nsqlookupd -p nsqadmin

pids=()
cleanup() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

./target/release/nsqlookupd \
    --tcp-address=127.0.0.1:4160 --http-address=127.0.0.1:4161 \
    --broadcast-address=127.0.0.1 &
pids+=($!)
./target/release/nsqd \
    --tcp-address=127.0.0.1:4150 --http-address=127.0.0.1:4151 \
    --broadcast-address=127.0.0.1 --data-path="$DATA/nsqd" \
    --lookupd-tcp-address=127.0.0.1:4160 "$@" &
pids+=($!)
./target/release/nsqadmin \
    --http-address=127.0.0.1:4171 --lookupd-http-address=127.0.0.1:4161 &
pids+=($!)

for url in http://127.0.0.1:4161/ping http://127.0.0.1:4151/ping http://127.0.0.1:4171/ping; do
    for _ in $(seq 1 100); do
        curl -sf "$url" >/dev/null 2>&1 && break
        sleep 0.1
    done
done
cat <<MSG

  nsqlookupd  TCP 127.0.0.1:4160   HTTP http://127.0.0.1:4161
  nsqd        TCP 127.0.0.1:4150   HTTP http://127.0.0.1:4151   data $DATA/nsqd
  nsqadmin    http://127.0.0.1:4171/

  try: curl -d hello 'http://127.0.0.1:4151/pub?topic=test', then open nsqadmin
  Ctrl-C stops the cluster.
MSG
wait
