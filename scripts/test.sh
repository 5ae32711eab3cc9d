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
# Build every binary once, here, and point the end-to-end tests at them: otherwise each of
# the ~40 test processes that starts a daemon asks cargo itself whether the binaries are up
# to date (see test-support/src/binary.rs). A caller's own NSQ_TEST_BIN_DIR (say, other
# builds of the daemons) wins; with extra cargo arguments (a profile, a target) the tests
# find or build their binaries themselves, as they always can.
if [ -z "${NSQ_TEST_BIN_DIR:-}" ] && [ $# -eq 0 ]; then
    echo "== building the binaries once"
    cargo build --workspace --bins
    target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    export NSQ_TEST_BIN_DIR="$target_dir/debug"
fi
exec cargo test --workspace "$@"
