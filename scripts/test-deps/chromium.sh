#!/usr/bin/env bash
# Headless Chromium and its WebDriver for nsqadmin's browser tests
# (tests/tests/admin_browser.rs). Debian's packages, installed with apt-get
# only when missing; the tests look for /usr/bin/chromium and
# /usr/bin/chromedriver. Fails loudly when they cannot be installed.
set -euo pipefail

have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

if have; then
    echo "chromium: $(command -v chromium), chromedriver: $(command -v chromedriver)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test-deps/chromium.sh: chromium/chromedriver missing and not root; run" \
        "'apt-get install chromium chromium-driver' as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium chromium-driver

if ! have; then
    echo "scripts/test-deps/chromium.sh: chromium or chromedriver still missing after apt-get" >&2
    exit 1
fi
echo "chromium: $(command -v chromium), chromedriver: $(command -v chromedriver)"
