#!/usr/bin/env bash
# A real Prometheus and promtool for tests/tests/prometheus.rs, which checks
# contrib/alerts.yml and that every metric contrib/'s dashboard and rules use
# is scraped from nsqd, nsqlookupd and nsqadmin. Debian's package, installed
# with apt-get only when missing (its service is not started: the test runs
# its own instance on a free port). Fails loudly when it cannot install.
set -euo pipefail

have() { [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; }
where() { echo "prometheus: $(/usr/bin/prometheus --version 2>&1 | head -1)"; }

source "$(dirname "${BASH_SOURCE[0]}")/apt.bash"
apt_ensure prometheus prometheus
