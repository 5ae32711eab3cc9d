#!/usr/bin/env bash
# Run a local cluster on loopback: nsqlookupd, nsqd (data under ./data) and
# nsqadmin. Ctrl-C stops everything this script started.
#
# --replicated: a replicated pair instead of one nsqd — nsqd A on 127.0.0.2
# and nsqd B on 127.0.0.3 (same ports, data under ./data/nsqd-a and -b),
# each holding a copy of the other's messages (see README "Replication"),
# proving to each other the secret in $DATA/pair.secret (made if missing).
# Other arguments go to every nsqd.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-./data}
replicated=0
args=()
for a in "$@"; do
    if [ "$a" = "--replicated" ]; then replicated=1; else args+=("$a"); fi
done
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
nodes=()
if [ "$replicated" = 1 ]; then
    secret="$DATA/pair.secret"
    [ -s "$secret" ] || (umask 077 && head -c 32 /dev/urandom | base64 >"$secret")
    for n in a:127.0.0.2:127.0.0.3 b:127.0.0.3:127.0.0.2; do
        IFS=: read -r name ip peer <<<"$n"
        mkdir -p "$DATA/nsqd-$name"
        ./target/release/nsqd \
            --tcp-address="$ip:4150" --http-address="$ip:4151" \
            --broadcast-address="$ip" --data-path="$DATA/nsqd-$name" \
            --lookupd-tcp-address=127.0.0.1:4160 \
            --replication-address="$ip:4153" --replica="$peer:4153" \
            --replication-secret-file="$secret" ${args[@]+"${args[@]}"} &
        pids+=($!)
        nodes+=("$ip")
    done
else
    ./target/release/nsqd \
        --tcp-address=127.0.0.1:4150 --http-address=127.0.0.1:4151 \
        --broadcast-address=127.0.0.1 --data-path="$DATA/nsqd" \
        --lookupd-tcp-address=127.0.0.1:4160 ${args[@]+"${args[@]}"} &
    pids+=($!)
    nodes+=(127.0.0.1)
fi
./target/release/nsqadmin \
    --http-address=127.0.0.1:4171 --lookupd-http-address=127.0.0.1:4161 &
pids+=($!)

urls=(http://127.0.0.1:4161/ping http://127.0.0.1:4171/ping)
for ip in "${nodes[@]}"; do urls+=("http://$ip:4151/ping"); done
for url in "${urls[@]}"; do
    for _ in $(seq 1 100); do
        curl -sf "$url" >/dev/null 2>&1 && break
        sleep 0.1
    done
done
echo
echo "  nsqlookupd  TCP 127.0.0.1:4160   HTTP http://127.0.0.1:4161"
if [ "$replicated" = 1 ]; then
    echo "  nsqd A      TCP 127.0.0.2:4150   HTTP http://127.0.0.2:4151   replication 127.0.0.2:4153   data $DATA/nsqd-a"
    echo "  nsqd B      TCP 127.0.0.3:4150   HTTP http://127.0.0.3:4151   replication 127.0.0.3:4153   data $DATA/nsqd-b"
else
    echo "  nsqd        TCP 127.0.0.1:4150   HTTP http://127.0.0.1:4151   data $DATA/nsqd"
fi
cat <<MSG
  nsqadmin    http://127.0.0.1:4171/

  try: curl -d hello 'http://${nodes[0]}:4151/pub?topic=test', then open nsqadmin
  Ctrl-C stops the cluster.
MSG
wait
