#!/usr/bin/env bash
# nftables, for tests/tests/replication.rs: the partition test drops the
# traffic between two loopback addresses with an nft table it creates and
# removes itself. Needs root (as CI runs). Quick when already installed.
set -euo pipefail
if command -v nft >/dev/null 2>&1; then
    echo "nftables: $(nft --version) (already installed)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "nftables: not installed and no apt-get here; install the nft command" >&2
    exit 1
fi
apt-get install -y -q nftables >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q nftables >/dev/null; }
echo "nftables: installed $(nft --version)"
