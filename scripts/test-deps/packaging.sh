#!/usr/bin/env bash
# For tests/tests/package.rs, which builds the .deb with scripts/deb.sh,
# installs it with dpkg -i and checks its systemd units: dpkg-deb (dpkg,
# always there on Debian), systemd-analyze (Debian's systemd package) and
# man (man-db, which systemd-analyze verify uses for Documentation=). apt-get
# only when missing; fails loudly when it cannot install.
set -euo pipefail

have() { command -v dpkg-deb >/dev/null && [ -x /usr/bin/systemd-analyze ] && command -v man >/dev/null; }

if have; then
    echo "packaging: $(dpkg-deb --version | head -1); $(systemd-analyze --version | head -1)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test-deps/packaging.sh: systemd-analyze or man missing and not root; run" \
        "'apt-get install systemd man-db' as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends systemd man-db binutils

if ! have; then
    echo "scripts/test-deps/packaging.sh: still missing dpkg-deb, systemd-analyze or man" >&2
    exit 1
fi
echo "packaging: $(dpkg-deb --version | head -1); $(systemd-analyze --version | head -1)"
