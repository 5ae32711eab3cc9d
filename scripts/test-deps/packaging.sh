#!/usr/bin/env bash
# For tests/tests/package.rs, which builds the .deb with scripts/deb.sh,
# installs it with dpkg -i and checks its systemd units: dpkg-deb (dpkg,
# always there on Debian), systemd-analyze (Debian's systemd package) and
# man (man-db, which systemd-analyze verify uses for Documentation=). apt-get
# only when missing; fails loudly when it cannot install.
set -euo pipefail

have() { command -v dpkg-deb >/dev/null && [ -x /usr/bin/systemd-analyze ] && command -v man >/dev/null; }
where() { echo "packaging: $(dpkg-deb --version | head -1); $(systemd-analyze --version | head -1)"; }

source "$(dirname "${BASH_SOURCE[0]}")/apt.bash"
apt_ensure packaging systemd man-db binutils
