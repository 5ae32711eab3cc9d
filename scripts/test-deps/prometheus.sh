#!/usr/bin/env bash
# A real Prometheus and promtool for tests/tests/prometheus.rs, which checks
# contrib/alerts.yml and that every metric contrib/'s dashboard and rules use
# is scraped from nsqd, nsqlookupd and nsqadmin. Debian's package, installed
# with apt-get only when missing (its service is not started: the test runs
# its own instance on a free port). Fails loudly when it cannot install.
set -euo pipefail

have() { [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; }

if have; then
    echo "prometheus: $(/usr/bin/prometheus --version 2>&1 | head -1)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test-deps/prometheus.sh: prometheus missing and not root; run" \
        "'apt-get install prometheus' as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends prometheus

if ! have; then
    echo "scripts/test-deps/prometheus.sh: prometheus or promtool still missing after apt-get" >&2
    exit 1
fi
echo "prometheus: $(/usr/bin/prometheus --version 2>&1 | head -1)"
