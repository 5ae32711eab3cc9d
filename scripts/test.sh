#!/usr/bin/env bash
# The README's test command. Tests that drive real third-party peers (the
# Python client, a headless browser) need more than cargo: each
# scripts/test-deps/*.sh installs one such dependency, does nothing when it is
# already there, and prints where it put it. Then every test runs.
set -euo pipefail
cd "$(dirname "$0")/.."
for dep in scripts/test-deps/*.sh; do
    [ -e "$dep" ] || continue
    echo "== test dependency: $dep"
    bash "$dep"
done
exec cargo test --workspace "$@"
