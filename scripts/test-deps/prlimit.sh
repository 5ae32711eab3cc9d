#!/usr/bin/env bash
# prlimit (util-linux): tests/tests/hostile_limits.rs starts nsqd under a low
# open-file limit with it. Part of util-linux, so usually already there.
set -euo pipefail
if command -v prlimit >/dev/null; then
    echo "prlimit: $(command -v prlimit)"
    exit 0
fi
if command -v apt-get >/dev/null; then
    apt-get install -y util-linux >/dev/null
fi
command -v prlimit >/dev/null || { echo "prlimit: cannot install util-linux" >&2; exit 1; }
echo "prlimit: $(command -v prlimit)"
