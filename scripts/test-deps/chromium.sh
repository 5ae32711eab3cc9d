#!/usr/bin/env bash
# Headless Chromium and its WebDriver for nsqadmin's browser tests
# (tests/tests/admin_browser.rs). Debian's packages, installed with apt-get
# only when missing; the tests look for /usr/bin/chromium and
# /usr/bin/chromedriver. Fails loudly when they cannot be installed.
set -euo pipefail

have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }
where() { echo "chromium: $(command -v chromium), chromedriver: $(command -v chromedriver)"; }

source "$(dirname "${BASH_SOURCE[0]}")/apt.bash"
apt_ensure chromium chromium chromium-driver
